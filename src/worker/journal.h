/* The worker's side of the results journal (journal.c): the writer serve.c fills. The
 * format and why it exists: shared/journal.h. */
#ifndef PP_WORKER_JOURNAL_H
#define PP_WORKER_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../channel.h"
#include "../seg.h"
#include "../shared/journal.h"

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

typedef struct pp__jw {
  pp__seg seg;
  uint8_t *base;           /* NULL: no journal: each result goes out on its own */
  uint8_t *table;
  uint8_t *data;
  uint32_t tcap;
  size_t dcap;
  uint32_t count;          /* results in the run (what the header's count says) */
  size_t used;             /* their bytes */
  int uniform;             /* every result in the run is a success of usize bytes: the run
                              can go out in the fixed form, without its table */
  uint32_t usize;
  uint8_t entry[8];        /* uniform: the table entry of each, (PP__R_OK, usize) */
  uint32_t same_left;      /* uniform: how many more such results fit the run, as far as
                              pp__jw_add_same last counted (0: count again) */
} pp__jw;

/* Maps the journal that the JOURNAL frame just read from chan introduced (size and
 * token: the frame's). Returns 0, or an error that leaves j without a journal (and the
 * worker serving without one). */
int pp__jw_open(pp__jw *j, pp__chan *chan, uint64_t size, uint64_t token);
void pp__jw_close(pp__jw *j);

/* Starts a new run of batch id, empty, whose first item is `first`. */
void pp__jw_begin(pp__jw *j, uint64_t id, uint32_t first);

/* Whether a result of n bytes can join the run: room in the journal, and a run's results
 * at most limit bytes together (one result alone may be larger). Inline: it is asked for
 * every item of a batch. */
static inline int pp__jw_fits(const pp__jw *j, size_t n, size_t limit) {
  return j->count < j->tcap && n <= j->dcap - j->used &&
         (j->count == 0 || j->used + n <= limit);
}

/* Records a result (pp__jw_fits said yes) and publishes it. */
void pp__jw_add(pp__jw *j, uint32_t kind, const void *data, size_t n);

/* memcpy, with the sizes of small fixed items known to the compiler: it then copies them
 * in a move or two, where a call would cost more than the copy. */
static inline void pp__copy_small(void *to, const void *from, size_t n) {
  switch (n) {
    case 4: memcpy(to, from, 4); break;
    case 8: memcpy(to, from, 8); break;
    case 16: memcpy(to, from, 16); break;
    default: memcpy(to, from, n); break;
  }
}

/* pp__jw_add of a success of the run's size while the run is uniform, with room for it
 * (as pp__jw_fits says): the path of every item of pp_map_array's batches, inline. Returns
 * 1 when it recorded the result, 0 when the caller must take the general path. */
uint32_t pp__jw_room_same(const pp__jw *j, size_t limit);

static inline int pp__jw_add_same(pp__jw *j, const void *data, size_t n, size_t limit) {
  uint8_t *e;

  if (n != j->usize || !j->uniform || j->count == 0)
    return 0;
  /* The room is counted once, not checked for every item. */
  if (j->same_left == 0 && (j->same_left = pp__jw_room_same(j, limit)) == 0)
    return 0;
  j->same_left--;
  e = j->table + (size_t) j->count * 8;
  memcpy(e, j->entry, 8);
  if (n > 0)
    pp__copy_small(j->data + j->used, data, n);
  j->used += n;
  j->count++;
  /* Published after what it counts, as pp__jw_add does. */
#if defined(_MSC_VER) && !defined(__clang__)
  _InterlockedExchange((volatile long *) (j->base + PP__JOURNAL_COUNT), (long) j->count);
#else
  __atomic_store_n((uint32_t *) (void *) (j->base + PP__JOURNAL_COUNT), j->count,
                   __ATOMIC_RELEASE);
#endif
  return 1;
}

/* Task number seq starts, and has finished (before its result goes out). 0, or -1 when the
 * pool has claimed the worker for a kill: then it must start and send nothing more. Both
 * 0 without a journal. */
int pp__jw_start(pp__jw *j, uint64_t seq);
int pp__jw_finish(pp__jw *j, uint64_t seq);

#endif
