#include "../channel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <uv.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

int pp__chan_open(const char *spec, pp__chan *chan) {
  char *end;
  long fd;
  int flags;

  errno = 0;
  fd = strtol(spec, &end, 10);
  if (errno != 0 || end == spec || *end != '\0' || fd < 0 || fd > INT_MAX)
    return UV_EINVAL;
  flags = fcntl((int) fd, F_GETFD);
  if (flags == -1)
    return uv_translate_sys_error(errno);
  if (fcntl((int) fd, F_SETFD, flags | FD_CLOEXEC) == -1)
    return uv_translate_sys_error(errno);
  chan->h = (intptr_t) fd;
  return 0;
}

int pp__chan_read(pp__chan *chan, void *buf, size_t cap, size_t *got) {
  ssize_t n;

  do
    n = read((int) chan->h, buf, cap);
  while (n == -1 && errno == EINTR);
  if (n == -1)
    return uv_translate_sys_error(errno);
  if (n == 0)
    return UV_EOF;
  *got = (size_t) n;
  return 0;
}

/* The channel is a socket pair (libuv makes one for UV_CREATE_PIPE), so sendmsg with
 * MSG_NOSIGNAL turns a vanished pool into EPIPE without touching the program's SIGPIPE
 * disposition. A plain pipe (some other launcher) falls back to writev. */
static ssize_t pp__chan_writev(int fd, struct iovec *iov, int n) {
  struct msghdr msg = { 0 };
  ssize_t r;

  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  r = sendmsg(fd, &msg, MSG_NOSIGNAL);
  if (r == -1 && errno == ENOTSOCK)
    r = writev(fd, iov, n);
  return r;
}

int pp__chan_write(pp__chan *chan, const pp__iov *in, size_t n) {
  struct iovec iov[PP__CHAN_MAX_IOV];
  size_t i;

  if (n > PP__CHAN_MAX_IOV)
    return UV_EINVAL;
  for (i = 0; i < n; i++) {
    iov[i].iov_base = (void *) in[i].base;
    iov[i].iov_len = in[i].len;
  }
  i = 0;
  for (;;) {
    ssize_t w;

    while (i < n && iov[i].iov_len == 0)
      i++;
    if (i == n)
      return 0;
    do
      w = pp__chan_writev((int) chan->h, iov + i, (int) (n - i));
    while (w == -1 && errno == EINTR);
    if (w == -1)
      return uv_translate_sys_error(errno);
    /* A short write may end inside a buffer: advance through what was written. */
    for (; i < n && w > 0; i++) {
      if ((size_t) w < iov[i].iov_len) {
        iov[i].iov_base = (char *) iov[i].iov_base + w;
        iov[i].iov_len -= (size_t) w;
        break;
      }
      w -= (ssize_t) iov[i].iov_len;
      iov[i].iov_len = 0;
    }
  }
}

void pp__chan_close(pp__chan *chan) {
  if (chan->h >= 0)
    close((int) chan->h);
  chan->h = -1;
}

static atomic_int pp__chan_is_busy;

static void *pp__chan_watcher(void *arg) {
  struct pollfd p;
  sigset_t all;

  /* Signals are the main thread's business. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  p.fd = (int) (intptr_t) arg;
#if defined(POLLRDHUP)
  p.events = POLLRDHUP;
#else
  p.events = 0;
#endif
  for (;;) {
    p.revents = 0;
    if (poll(&p, 1, -1) == -1) {
      if (errno == EINTR)
        continue;
      return NULL;
    }
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL
#if defined(POLLRDHUP)
                     | POLLRDHUP
#endif
                     )) {
      if (atomic_load(&pp__chan_is_busy))
        _exit(PP__EXIT_ORPHAN);
      /* Idle: the serving loop reads end-of-file and ends the process itself. */
      return NULL;
    }
  }
}

int pp__chan_watch(pp__chan *chan) {
  pthread_attr_t attr;
  pthread_t t;
  int err;

  err = pthread_attr_init(&attr);
  if (err != 0)
    return uv_translate_sys_error(err);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* It only waits: the smallest stack will do, and keeps a worker's footprint small. */
  pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN > 65536 ? PTHREAD_STACK_MIN : 65536);
  err = pthread_create(&t, &attr, pp__chan_watcher, (void *) chan->h);
  pthread_attr_destroy(&attr);
  return err == 0 ? 0 : uv_translate_sys_error(err);
}

void pp__chan_busy(pp__chan *chan, int busy) {
  (void) chan;
  atomic_store(&pp__chan_is_busy, busy);
}
