/* The pool's own shared memory with one worker (its results journal, its large messages'
 * segments): anonymous and of a size fixed for good. Anonymous, so that no other process
 * can open it and no death of anyone leaves a name behind (the OS frees it with the last
 * process that maps it); of a fixed size, so that a worker, whatever it does, cannot
 * shrink it under the pool's reads, which would then fault with SIGBUS. A segment reaches
 * its worker as a descriptor or handle with the frame that introduces it.
 *
 * Implemented in src/unix/seg.c (Linux and FreeBSD: memfd_create, sealed against
 * shrinking and growing; elsewhere shm_open with the name removed at once, whose size is
 * not sealed) and src/win/seg.c (an unnamed section, its handle duplicated into the
 * worker without the right to extend it).
 *
 * The application's pp_shm segments (shm.h) are another matter: named, so that the
 * application can hand them to any process (the header says what a worker can do to
 * them). */
#ifndef PP_SEG_H
#define PP_SEG_H

#include <stddef.h>
#include <stdint.h>

#include "channel.h"

struct pp__worker;

/* All zero: no segment. */
typedef struct pp__seg {
  uint8_t *data;           /* NULL: no segment */
  size_t size;
  intptr_t h;              /* while held: the creator's descriptor or handle */
  int held;                /* 1 until the segment is given */
} pp__seg;

/* ---- The pool's side ----------------------------------------------------------------- */

/* Makes an anonymous segment of size bytes, zero-filled, every page allocated now (a full
 * /dev/shm or page file fails here with UV_ENOSPC rather than at a first touch), and maps
 * it read-write. Returns 0, PP_EINVAL (a size of 0 or over what the OS can describe), or
 * the OS's error as a UV_E* code; on failure *s is empty and nothing is left behind. */
int pp__seg_create(pp__seg *s, size_t size);

/* Sends frame (len bytes, a JOURNAL or SHM_OFFER frame, whose 64-bit token field is at
 * token_off) to w with the segment attached, ahead of every frame w has not been written
 * yet. On Unix the frame is written at once with the descriptor, which needs w's channel
 * to be at a frame's end with nothing waiting to be written (UV_EAGAIN otherwise: the
 * caller goes without the segment); on Windows the section is duplicated into w's
 * process, the token is the handle's value there, and the frame joins w's batch. On
 * success the creator's descriptor or handle is closed (the mapping keeps the memory) and
 * the segment can be given no more. Returns 0 or an error, after which w got nothing. */
int pp__seg_give(struct pp__worker *w, pp__seg *s, uint8_t *frame, size_t len,
                 size_t token_off);

/* Unmaps s and closes what it still holds; harmless on an empty or freed one. */
void pp__seg_free(pp__seg *s);

/* ---- The worker's side --------------------------------------------------------------- */

/* Maps the segment of size bytes that the frame just read from chan introduced (token:
 * its token field): on Unix the descriptor that came with that frame, on Windows the
 * handle the pool duplicated in. Returns 0, PP_EPROTO (no descriptor came with the frame,
 * or the segment is smaller than said), or the OS's error; either way what came with the
 * frame is closed. */
int pp__seg_take(pp__chan *chan, uint64_t token, size_t size, pp__seg *s);

#endif
