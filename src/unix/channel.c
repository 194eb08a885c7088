#include "../channel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <uv.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif
#ifndef MSG_CMSG_CLOEXEC
#define PP__NO_CMSG_CLOEXEC 1
#define MSG_CMSG_CLOEXEC 0
#endif

/* Moves descriptor `to` onto a copy of `from` (retrying EINTR); from -1: the null
 * device, opened with flags. Returns 0 or an errno value. */
static int pp__chan_replace(int to, int from, int flags) {
  int fd = from, r;

  if (from == -1) {
    do
      fd = open("/dev/null", flags | O_CLOEXEC);
    while (fd == -1 && errno == EINTR);
    if (fd == -1)
      return errno;
  }
  do
    r = dup2(fd, to);
  while (r == -1 && errno == EINTR);
  if (from == -1 && fd != to)
    close(fd);
  return r == -1 ? errno : 0;
}

/* The channel is stdin and stdout (a worker behind a launcher). Nothing is flushed
 * first: what the program buffered for stdout before pp_main then goes to stderr, not
 * into the channel. */
static int pp__chan_open_stdio(pp__chan *chan) {
  int in, out, err;

  in = fcntl(0, F_DUPFD_CLOEXEC, 3);
  if (in == -1)
    return uv_translate_sys_error(errno);
  out = fcntl(1, F_DUPFD_CLOEXEC, 3);
  if (out == -1) {
    err = errno;
    close(in);
    return uv_translate_sys_error(err);
  }
  err = pp__chan_replace(0, -1, O_RDONLY);
  /* stdout where stderr goes; to the null device where there is no stderr. */
  if (err == 0)
    err = pp__chan_replace(1, fcntl(2, F_GETFD) != -1 ? 2 : -1, O_WRONLY);
  if (err != 0) {
    close(in);
    close(out);
    return uv_translate_sys_error(err);
  }
  chan->h = in;
  chan->out = out;
  return 0;
}

int pp__chan_open(const char *spec, pp__chan *chan) {
  char *end;
  long fd;
  int flags;

  memset(chan, 0, sizeof(*chan));
  if (strcmp(spec, PP__CHAN_STDIO) == 0)
    return pp__chan_open_stdio(chan);
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
  chan->out = (intptr_t) fd;
  return 0;
}

/* Keeps the descriptors a read brought, in the order they came. */
static void pp__chan_keep(pp__chan *chan, struct msghdr *msg) {
  struct cmsghdr *c;

  for (c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    size_t i, n;
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
#if defined(PP__NO_CMSG_CLOEXEC)
      fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
      if (chan->npending < PP__CHAN_MAX_PENDING)
        chan->pending[chan->npending++] = fd;
      else
        close(fd);
    }
  }
}

int pp__chan_read(pp__chan *chan, void *buf, size_t cap, size_t *got) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(PP__CHAN_MAX_PENDING * sizeof(int))];
  } ctl;
  struct msghdr msg;
  struct iovec iov;
  ssize_t n = -1;

  if (!chan->not_socket) {
    memset(&msg, 0, sizeof(msg));
    iov.iov_base = buf;
    iov.iov_len = cap;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    do
      n = recvmsg((int) chan->h, &msg, MSG_CMSG_CLOEXEC);
    while (n == -1 && errno == EINTR);
    if (n == -1 && errno == ENOTSOCK)
      chan->not_socket = 1;
    else if (n > 0)
      pp__chan_keep(chan, &msg);
    if (n > 0 && (msg.msg_flags & MSG_CTRUNC) != 0)
      chan->dropped++;
  }
  if (chan->not_socket) {
    do
      n = read((int) chan->h, buf, cap);
    while (n == -1 && errno == EINTR);
  }
  if (n == -1)
    return uv_translate_sys_error(errno);
  if (n == 0)
    return UV_EOF;
  *got = (size_t) n;
  return 0;
}

/* writev on a pipe whose reader is gone raises SIGPIPE, which by default ends the
 * worker. The signal is blocked for the call (in this thread only) and, when the write
 * raised it, taken back before it is unblocked, unless it was pending already: the
 * program's disposition stays as it was and the pool's end is EPIPE, as on a socket. */
static ssize_t pp__chan_writev_pipe(int fd, struct iovec *iov, int n) {
  sigset_t pipe_set, old, pending;
  int was_pending, e, sig;
  ssize_t r;

  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  sigpending(&pending);
  was_pending = sigismember(&pending, SIGPIPE);
  r = writev(fd, iov, n);
  e = errno;
  /* sigwait rather than sigtimedwait, which macOS lacks: it returns at once, since the
   * signal is pending. */
  if (r == -1 && e == EPIPE && !was_pending && sigpending(&pending) == 0 &&
      sigismember(&pending, SIGPIPE))
    sigwait(&pipe_set, &sig);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = e;
  return r;
}

/* The channel is a socket pair (libuv makes one for UV_CREATE_PIPE; a launcher's stdin
 * and stdout are one, or what the launcher made), so sendmsg with MSG_NOSIGNAL turns a
 * vanished pool into EPIPE without touching the program's SIGPIPE disposition. A plain
 * pipe (what ssh's server or srun may give a worker) falls back to writev. */
static ssize_t pp__chan_writev(int fd, struct iovec *iov, int n) {
  struct msghdr msg = { 0 };
  ssize_t r;

  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  r = sendmsg(fd, &msg, MSG_NOSIGNAL);
  if (r == -1 && errno == ENOTSOCK)
    r = pp__chan_writev_pipe(fd, iov, n);
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
      w = pp__chan_writev((int) chan->out, iov + i, (int) (n - i));
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
  while (chan->npending > 0)
    close(chan->pending[--chan->npending]);
  if (chan->out >= 0 && chan->out != chan->h)
    close((int) chan->out);
  if (chan->h >= 0)
    close((int) chan->h);
  chan->h = -1;
  chan->out = -1;
}

static atomic_int pp__chan_is_busy;
static atomic_int pp__chan_orphaned;

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
      /* The pool is gone, and with it whoever wanted what this worker does: busy, it
       * ends now; idle, the next task it would start from what it had read already
       * ends it (pp__chan_busy), else end-of-file does. Each side stores its flag, then
       * reads the other's, so at least one of them sees both. */
      atomic_store(&pp__chan_orphaned, 1);
      if (atomic_load(&pp__chan_is_busy))
        _exit(PP__EXIT_ORPHAN);
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
  if (busy && atomic_load(&pp__chan_orphaned))
    _exit(PP__EXIT_ORPHAN);
}
