/* The results journal (journal.c). A worker sends a batch's results over its channel in
 * runs of many items, yet a worker that dies in item k must leave the results of the
 * items before k to the pool, or they would run again. So before it starts an item, the
 * worker has copied every result not yet on the wire into a journal in shared memory (a
 * plain copy, no system call); when the pool sees the worker end by itself, it reads the
 * journal and files those results before it decides the batch's fate.
 *
 * Each worker gets a segment of its own (seg.h: anonymous, of a fixed size), made by the
 * pool as it starts the worker and handed over with a PP__F_JOURNAL frame, before its
 * first task; the pool unmaps it when it settles the worker. A worker without a journal
 * (none could be made or handed over, it could not map it, or it is behind a launcher)
 * writes each item's result before it starts the next, as the protocol's rule says.
 *
 * Layout (doc/protocol.md): a 64-byte header, a table of tcap (kind, length) pairs as in
 * a BATCH_RESULT, then the results end to end:
 *   0   u32  count: the results recorded, stored last (release)
 *   4   u32  first: the index in the batch of the first of them
 *   8   u64  id: the batch's id
 *   24  u64  state: 0 between tasks, the number of the task the worker runs, or
 *            PP__CTL_DOOMED once the pool claimed the worker for a kill
 *   32  u64  done: the number of the last task the worker finished
 * The header's words are in the machine's order, each written and read whole (atomics.h);
 * the table and results are little-endian, so that they go out over the channel as they
 * lie. The pool treats it all as untrusted input: it reads each word once, checks it
 * against what it sent, and lets no word cancel a deadline of its own.
 *
 * The same segment makes a kill precise. A pool that cancels (or times out) a worker's
 * running task kills the worker; but the worker may have just finished that task and
 * started the next one it was sent, which would then die unasked. So a worker numbers
 * the tasks it is sent (1, 2, ... as the pool does) and, once it has the segment, moves
 * state from 0 to a task's number before it runs it and back to 0 (after storing done)
 * before it sends the result, each with a compare-and-swap; the pool claims a kill by
 * swapping state from 0 or that task's number to PP__CTL_DOOMED. Whoever swaps first
 * wins: the pool either finds the task finished (done, or a later number: it kills
 * nothing, but wants the task's result within a grace period, or kills after all) or
 * dooms the worker, which then starts nothing more and sends nothing more (a swap that
 * fails makes it wait for its end). So nothing after the killed task has run, and all
 * of it runs elsewhere. The same words tell, once a worker has died, whether it had
 * started the first task it held (pp__journal_unstarted). */
#ifndef PP_JOURNAL_H
#define PP_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../channel.h"
#include "procpool.h"
#include "protocol.h"
#include "../seg.h"

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

/* A worker's journal: room for a full batch of small results in one run. */
#define PP__JOURNAL_SIZE (128 * 1024)
#define PP__JOURNAL_HDR 64
#define PP__JOURNAL_COUNT 0
#define PP__JOURNAL_FIRST 4
#define PP__JOURNAL_ID 8
#define PP__JOURNAL_STATE 24
#define PP__JOURNAL_DONE 32
#define PP__CTL_DOOMED UINT64_MAX

/* Where a journal of size bytes keeps its table (tcap entries, at PP__JOURNAL_HDR) and
 * its results (from *data_off to the end). Returns 0, or PP_EINVAL when size is too small
 * for a header, one entry and 8 bytes of results, or over 1 GiB. */
int pp__journal_layout(size_t size, uint32_t *tcap, size_t *data_off);

/* Reads, from a journal of size bytes that a worker wrote (which may have crashed half
 * way, or be corrupt, or still be writing), the results of batch id's items from `from`
 * on, in a batch of nitems. Everything is copied out before it is checked, so a writer
 * that goes on cannot change what was checked. Returns 0 with *out NULL when there is
 * nothing to take; 0 with *out a malloc'd BATCH_RESULT payload (first = from) that b
 * describes; PP_EPROTO with why when the journal is not consistent with the batch (a gap,
 * another batch, a count or length out of bounds); or PP_ENOMEM. Pure: no pool, no OS. */
int pp__journal_read(const uint8_t *journal, size_t size, uint64_t id, uint32_t from,
                     uint32_t nitems, uint8_t **out, pp__batch *b, const char **why);

/* ---- The pool's side: hooks of lifecycle.c and dispatch.c ---------------------------- */

struct pp__worker;
struct pp__task;

/* At w's start: makes its journal and hands it over (a PP__F_JOURNAL frame, ahead of
 * everything else). Without one (a warning says once what is lost), w serves without. */
void pp__journal_offer(struct pp__worker *w);

/* w ended by itself while it ran t: files the results of t's items that only its journal
 * holds (those from t->received on), through t->on_items; without memory to read them,
 * they fail, and are never run again. A journal not consistent with t gives nothing. */
void pp__journal_recover(struct pp__worker *w, struct pp__task *t);

/* w's process has ended: 1 when its journal shows that it never started t (t was sent
 * to it, but it died before it read it), so t may run elsewhere; 0 when it started t, or
 * cannot tell. A worker that lies here gets t run again, which the caller bounds. */
int pp__journal_unstarted(const struct pp__worker *w, const struct pp__task *t);

/* w is settled: unmaps its journal. */
void pp__journal_release(struct pp__worker *w);

/* The pool is about to kill w because of t, its running task (the first in flight; t
 * may be decided already). PP__CLAIM_FINISHED: w says t has finished (its result is on
 * its way) and goes on: nothing is killed now, but t's result must come within a grace
 * period. PP__CLAIM_DOOMED: w will start and send nothing more: kill it, and every task
 * it holds but t never started. PP__CLAIM_PLAIN: no journal, or its words are not
 * believable: kill it, and what it ran is as unknown as for any death. Bounded: it never
 * waits on the worker. */
enum { PP__CLAIM_PLAIN = 0, PP__CLAIM_DOOMED, PP__CLAIM_FINISHED };
int pp__journal_claim(struct pp__worker *w, const struct pp__task *t);

/* ---- The worker's side (serve.c) ---------------------------------------------------- */

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
