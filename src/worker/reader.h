/* The worker's reader of the pool's frames: it batches small frames into few read calls.
 * It reads the worker's channel, or, for the fuzz target, any source through a read
 * callback. The buffer is allocated with malloc so it is suitably aligned; a payload that
 * does not start at an aligned offset is copied to `scratch`, one that does not fit is
 * read into its own block. */
#ifndef PP_WORKER_READER_H
#define PP_WORKER_READER_H

#include <stddef.h>
#include <stdint.h>

#include "../channel.h"
#include "../shared/protocol.h"

/* The alignment the header promises for a task's argument. */
#define PP__ALIGN 16

/* Reads up to cap bytes, at least one: pp__chan_read's contract. */
typedef int (*pp__reader_read_fn)(void *ctx, void *buf, size_t cap, size_t *got);

/* Zeroed, then: chan set to read the worker's channel, or read and read_ctx set to read
 * through the callback; buf a malloc'd block of PP__RX_CAP bytes. The owner frees buf,
 * scratch and big. */
typedef struct pp__reader {
  pp__chan *chan;
  uint8_t *buf;
  size_t off;
  size_t end;
  uint8_t *scratch;
  size_t scratch_cap;
  uint8_t *big;
  pp__reader_read_fn read;  /* NULL: pp__chan_read on chan */
  void *read_ctx;
} pp__reader;

/* Reads one frame of at most limit bytes. *payload stays valid until the next call.
 * Returns 0; the read's error (UV_EOF at the end); PP_EPROTO for a frame with flags or
 * over the limit; PP_ENOMEM; with *why saying what failed. */
int pp__reader_next(pp__reader *r, pp__hdr *h, const uint8_t **payload, size_t limit,
                    const char **why);

#endif
