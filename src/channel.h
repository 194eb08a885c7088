/* The worker's end of its channel to the pool: plain blocking I/O, because a worker runs
 * no event loop (a forked worker must not touch the parent's libuv state at all).
 * Implemented in src/unix/channel.c (a file descriptor) and src/win/channel.c (a
 * HANDLE). */
#ifndef PP_CHANNEL_H
#define PP_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct pp__chan {
  intptr_t h;   /* a descriptor on Unix, a HANDLE on Windows */
} pp__chan;

typedef struct pp__iov {
  const void *base;
  size_t len;
} pp__iov;

/* Opens the channel that the worker's command-line mark names (the decimal number of
 * the inherited descriptor), and makes it non-inheritable so that processes a task starts
 * do not keep the pool's channel open. Returns 0 or a UV_E* error. */
int pp__chan_open(const char *spec, pp__chan *chan);

/* Reads up to cap bytes, at least one. Returns 0 with *got set, UV_EOF at the end, or a
 * UV_E* error. Interrupted calls are retried. */
int pp__chan_read(pp__chan *chan, void *buf, size_t cap, size_t *got);

#define PP__CHAN_MAX_IOV 8

/* Writes every byte of the n buffers (at most PP__CHAN_MAX_IOV), in order. Returns 0 or a UV_E* error; a pool that
 * went away is UV_EPIPE, never a signal. */
int pp__chan_write(pp__chan *chan, const pp__iov *iov, size_t n);

void pp__chan_close(pp__chan *chan);

#endif
