#include "../channel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
