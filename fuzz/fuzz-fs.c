/* libFuzzer target for the forkserver's control messages, both directions: the input is
 * sent, in pieces each with up to five descriptors attached, down a socket pair like a
 * pool's connection to its server; pp__fs_recv reads it back message by message, and each
 * message is decoded as the server decodes a request (pp__fs_fork_decode, and the ADD and
 * KILL checks) and as a pool decodes a report (pp__fs_report_decode). The descriptors must
 * all be accounted for: every one received is closed, none is left open (a leak in a
 * long-lived server), and a FORK request's chosen ones are among those received.
 *
 * Input: pieces, each a byte (bits 0-2: descriptors to attach, 0 to 5), a byte (its
 * length, 1 to 64) and that many bytes. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "../src/unix/fs.h"
#include "procpool.h"

static int devnull = -1;

/* The lowest free descriptor number: a descriptor left open takes it, since every new
 * one gets the lowest free number. */
static int lowest_free(void) {
  int fd = dup(devnull);

  if (fd < 0)
    abort();
  close(fd);
  return fd;
}

static int send_piece(int fd, const uint8_t *p, size_t len, int npass) {
  int pass[PP__FS_SEND_MAX_FDS], i;

  for (i = 0; i < npass; i++)
    pass[i] = devnull;
  return pp__fs_send_bytes(fd, p, len, pass, npass);
}

static int received(const int *fds, int nfds, int fd) {
  int i;

  for (i = 0; i < nfds; i++)
    if (fds[i] == fd)
      return 1;
  return 0;
}

static void decode(const pp__fs_msg *m, int *fds, int nfds, int dropped) {
  pp__fs_fork f;
  pp__fs_report r;
  int e;

  if (nfds < 0 || nfds > PP__FS_MAX_FDS)
    abort();
  /* The server's side. */
  e = pp__fs_fork_decode(m, fds, nfds, dropped, &f);
  if (e == 0) {
    if (dropped || !received(fds, nfds, f.chan) ||
        (f.out != -1 && !received(fds, nfds, f.out)) ||
        (f.err != -1 && !received(fds, nfds, f.err)) ||
        (f.out != -1 && f.out == f.chan) || (f.err != -1 && (f.err == f.chan || f.err == f.out)))
      abort();
    if ((f.out != -1) != ((m->value & PP__FS_STDOUT) != 0) ||
        (f.err != -1) != ((m->value & PP__FS_STDERR) != 0))
      abort();
  } else if (e != EMFILE && e != EINVAL) {
    abort();
  }
  /* The pool's side. */
  pp__fs_report_decode(m, &r);
  if (r.type != 0 && r.type != PP__FS_FORKED && r.type != PP__FS_FAILED &&
      r.type != PP__FS_EXITED)
    abort();
  if (r.type == PP__FS_FAILED && r.err > 0)
    abort();
  if (r.type == PP__FS_EXITED &&
      (r.exit_status < 0 || r.exit_status > 255 || r.term_signal < 0 || r.term_signal > 127 ||
       (r.exit_status != 0 && r.term_signal != 0)))
    abort();
  if (r.type != 0 && r.type != m->type)
    abort();
  pp__fs_close_all(fds, &nfds);
  if (nfds != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2], before, err;
  size_t off = 0;

  if (devnull < 0) {
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
  }
  before = lowest_free();
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    abort();
  /* The kernel bounds what a socket holds, descriptors in flight included, and nothing
   * reads until all is sent: an input that sends more is cut there (the reader then sees
   * a message cut short) instead of blocking. */
  if (fcntl(sv[0], F_SETFL, O_NONBLOCK) != 0)
    abort();
  /* Far below a socket's buffer (-max_len in CI; a longer input is cut). */
  while (off + 2 <= size && off < 8192) {
    int npass = data[off] % (PP__FS_SEND_MAX_FDS + 1);
    size_t len = 1 + data[off + 1] % 64;
    off += 2;
    if (len > size - off)
      len = size - off;
    if (len == 0)
      break;
    if (send_piece(sv[0], data + off, len, npass) != 0)
      break;
    off += len;
  }
  shutdown(sv[0], SHUT_WR);
  for (;;) {
    pp__fs_msg m;
    int fds[PP__FS_MAX_FDS], nfds = -1, dropped = -1;
    err = pp__fs_recv(sv[1], &m, fds, &nfds, &dropped, 1);
    if (err != 0) {
      if (nfds != 0 || (err != UV_EOF && err != UV_EAGAIN))
        abort();
      break;
    }
    decode(&m, fds, nfds, dropped);
  }
  close(sv[0]);
  close(sv[1]);
  if (lowest_free() != before)
    abort();
  return 0;
}
