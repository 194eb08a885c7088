/* The results journal's format (journal.c; the pool's side in pool/journal.h, the
 * worker's in worker/journal.h). A worker sends a batch's results over its channel in
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

#include "procpool.h"
#include "protocol.h"

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

#endif
