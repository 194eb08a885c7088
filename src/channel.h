/* The worker's end of its channel to the pool: plain blocking I/O, because a worker runs
 * no event loop (a forked worker must not touch the parent's libuv state at all).
 * Implemented in src/unix/channel.c (a file descriptor) and src/win/channel.c (a
 * HANDLE). */
#ifndef PP_CHANNEL_H
#define PP_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

/* The most descriptors read and not yet taken. The pool sends one with each frame that
 * introduces a segment, and a read returns at most one such frame's descriptor (the
 * kernel ends a read after the bytes that carry descriptors), so one is the most a worker
 * holds between reading a frame and handling it; the rest is margin. */
#define PP__CHAN_MAX_PENDING 4

typedef struct pp__chan {
  intptr_t h;   /* read from: a descriptor on Unix, a HANDLE on Windows */
  intptr_t out; /* written to: the same as h but for a channel on stdin and stdout */
  /* Unix: the descriptors that came with the bytes read so far, oldest first, for
   * pp__seg_take (seg.h). Unused on Windows, where handles come by another way. */
  int pending[PP__CHAN_MAX_PENDING];
  unsigned npending;
  unsigned dropped;  /* Unix: descriptors the kernel dropped, this process having no
                        room for them (MSG_CTRUNC) */
  int not_socket;  /* Unix: h is a pipe (behind some launchers): plain reads */
} pp__chan;

typedef struct pp__iov {
  const void *base;
  size_t len;
} pp__iov;

/* Opens the channel that the worker's command-line mark names (the decimal number of
 * the inherited descriptor on Unix, of the inherited handle on Windows, checked before
 * use), and makes it non-inheritable so that processes a task starts
 * do not keep the pool's channel open. Returns 0 or a UV_E* error.
 *
 * PP__CHAN_STDIO instead (a worker behind a launcher, which forwards only stdio): the
 * channel is this process's stdin and stdout. They move at once to new non-inheritable
 * descriptors (handles); stdin becomes the null device and stdout a copy of stderr, for
 * the C runtime as for the OS, so that what a task prints cannot reach the channel. */
int pp__chan_open(const char *spec, pp__chan *chan);

#define PP__CHAN_STDIO "stdio"


/* Reads up to cap bytes, at least one. Returns 0 with *got set, UV_EOF at the end, or a
 * UV_E* error. Interrupted calls are retried. On Unix, descriptors that came with the
 * bytes join chan->pending (close-on-exec; any past its room are closed). */
int pp__chan_read(pp__chan *chan, void *buf, size_t cap, size_t *got);

#define PP__CHAN_MAX_IOV 8

/* Writes every byte of the n buffers (at most PP__CHAN_MAX_IOV), in order. Returns 0 or a UV_E* error; a pool that
 * went away is UV_EPIPE, never a signal. */
int pp__chan_write(pp__chan *chan, const pp__iov *iov, size_t n);

/* Closes the channel and every descriptor still pending. */
void pp__chan_close(pp__chan *chan);

/* Makes the process end, with exit status PP__EXIT_ORPHAN, when the pool's end of the
 * channel closes while the worker is busy, or as it would start a task after that (one
 * it had read before): a worker whose parent died must not run tasks for no one, nor
 * outlive it. An idle worker with nothing read sees end-of-file by itself and exits
 * normally. On Unix a small thread waits for the hang-up; on Windows procpool's
 * job object, which every worker joins before its first instruction, does the same. Returns 0 or a UV_E* error (the worker
 * then serves without it). */
int pp__chan_watch(pp__chan *chan);

/* Marks the worker busy (in a task or the initializer) or idle, for pp__chan_watch. */
void pp__chan_busy(pp__chan *chan, int busy);

#define PP__EXIT_ORPHAN 123

#endif
