/* The pool's segments on Unix (seg.h): memfd_create where there is one, sealed so that
 * no process holding the descriptor can shrink or grow the file; shm_open elsewhere
 * (macOS), with the name removed before the call returns, so that nothing can open it
 * and nothing outlives its processes, but with a size that a worker could change. A
 * segment reaches its worker as a descriptor attached (SCM_RIGHTS) to the first byte of
 * the frame that introduces it, written straight to the channel's socket. */
#include "../seg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "../methods.h"
#include "../shared/protocol.h"
#include "unix.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#if defined(MFD_ALLOW_SEALING) && defined(F_ADD_SEALS)
#define PP__SEG_MEMFD 1
#endif

/* A descriptor of a new, empty, anonymous file in shared memory, close-on-exec. */
static int pp__seg_open(void) {
#if defined(PP__SEG_MEMFD)
  return memfd_create("procpool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
#else
  char name[64];
  unsigned char rnd[8];
  int fd, i;

  for (i = 0; i < 8; i++) {
    if (uv_random(NULL, NULL, rnd, sizeof(rnd), 0, NULL) != 0)
      return -1;
    snprintf(name, sizeof(name), "/procpool-%lu-%02x%02x%02x%02x%02x%02x", (unsigned long)
             getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd != -1) {
      shm_unlink(name);
      return fd;
    }
    if (errno != EEXIST)
      return -1;
  }
  return -1;
#endif
}

int pp__unix_shm_allocate(int fd, off_t len) {
#if defined(__linux__)
  int err;

  do
    err = posix_fallocate(fd, 0, len);
  while (err == EINTR);
  return err == 0 ? 0 : uv_translate_sys_error(err);
#else
  return ftruncate(fd, len) == 0 ? 0 : uv_translate_sys_error(errno);
#endif
}

int pp__seg_create(pp__seg *s, size_t size) {
  off_t len = (off_t) size;
  void *data = MAP_FAILED;
  int fd, err;

  memset(s, 0, sizeof(*s));
  /* off_t is signed, and 32 bits wide on some systems. */
  if (len <= 0 || (uint64_t) len != (uint64_t) size)
    return PP_EINVAL;
  fd = pp__seg_open();
  if (fd == -1)
    return uv_translate_sys_error(errno);
  err = pp__unix_shm_allocate(fd, len);
#if defined(PP__SEG_MEMFD)
  if (err == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == -1)
    err = uv_translate_sys_error(errno);
#endif
  if (err == 0) {
    data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED)
      err = uv_translate_sys_error(errno);
  }
  if (err != 0) {
    close(fd);
    return err;
  }
  s->data = (uint8_t *) data;
  s->size = size;
  s->h = fd;
  s->held = 1;
  return 0;
}

void pp__seg_free(pp__seg *s) {
  if (s->data != NULL)
    munmap(s->data, s->size);
  if (s->held)
    close((int) s->h);
  memset(s, 0, sizeof(*s));
}

/* The rest of a frame whose first bytes, and the descriptor, went out in a sendmsg. */
typedef struct pp__seg_tail {
  uv_write_t req;
  uint8_t bytes[1];
} pp__seg_tail;

static void pp__seg_tail_written(uv_write_t *req, int status) {
  (void) status;  /* A failed write shows up as the worker's end, handled there. */
  free(req->data);
}

int pp__seg_give(struct pp__worker *w, pp__seg *s, uint8_t *frame, size_t len,
                 size_t token_off) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } ctl;
  struct msghdr msg;
  struct iovec iov;
  struct cmsghdr *c;
  uv_os_fd_t sock;
  pp__seg_tail *tail;
  uv_buf_t buf;
  ssize_t n;
  int fd = (int) s->h;

  if (!s->held)
    return PP_EINVAL;
  /* The frame goes ahead of whatever libuv still holds for the socket: only where that
   * is nothing is the stream at a frame's end (dispatch.c ends every write request at
   * one). */
  if (uv_stream_get_write_queue_size((uv_stream_t *) &w->pipe) != 0)
    return UV_EAGAIN;
  if (uv_fileno((const uv_handle_t *) &w->pipe, &sock) != 0)
    return UV_EBADF;
  /* Room for the rest of the frame, should the socket take only its start: once the
   * descriptor is out, nothing may fail. */
  tail = (pp__seg_tail *) malloc(sizeof(*tail) + len);
  if (tail == NULL)
    return UV_ENOMEM;
  pp__put_u64(frame + token_off, 0);
  memset(&msg, 0, sizeof(msg));
  memset(&ctl, 0, sizeof(ctl));
  iov.iov_base = frame;
  iov.iov_len = len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof(ctl.buf);
  c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  do
    n = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n == -1 && errno == EINTR);
  if (n == -1) {
    free(tail);
    return uv_translate_sys_error(errno == EWOULDBLOCK ? EAGAIN : errno);
  }
  if ((size_t) n < len) {
    /* The descriptor went with the first byte; the rest is queued first, since nothing
     * else is. A write that cannot even be queued leaves a frame cut short, which the
     * worker reads as the end of its channel. */
    memcpy(tail->bytes, frame + n, len - (size_t) n);
    tail->req.data = tail;
    buf = uv_buf_init((char *) tail->bytes, (unsigned int) (len - (size_t) n));
    if (uv_write(&tail->req, (uv_stream_t *) &w->pipe, &buf, 1, pp__seg_tail_written) != 0)
      free(tail);
  } else {
    free(tail);
  }
  close(fd);
  s->held = 0;
  return 0;
}

int pp__seg_take(pp__chan *chan, uint64_t token, size_t size, pp__seg *s) {
  struct stat st;
  void *data;
  int fd, err = 0;

  (void) token;
  memset(s, 0, sizeof(*s));
  if (chan->npending == 0 && chan->dropped > 0) {
    /* The kernel had to drop it: this process is out of descriptors. */
    chan->dropped--;
    return UV_EMFILE;
  }
  if (chan->npending == 0)
    return PP_EPROTO;
  fd = chan->pending[0];
  chan->npending--;
  memmove(chan->pending, chan->pending + 1, chan->npending * sizeof(chan->pending[0]));
  if (fstat(fd, &st) != 0)
    err = uv_translate_sys_error(errno);
  else if (size == 0 || st.st_size < 0 || (uint64_t) st.st_size < (uint64_t) size)
    err = PP_EPROTO;
  if (err == 0) {
    data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED)
      err = uv_translate_sys_error(errno);
    else
      s->data = (uint8_t *) data;
  }
  close(fd);
  if (err == 0)
    s->size = size;
  return err;
}
