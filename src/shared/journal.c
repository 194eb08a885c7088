/* The results journal: its layout, the pool's reader and hooks, and the worker's writer
 * (journal.h says why it exists and how it is laid out). */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "../pool/dispatch.h"
#include "../pool/pool.h"
#include "atomics.h"
#include "../seg.h"

/* The header's count is the one word both sides use to agree on what is written: the
 * worker stores it after the results it counts (release), the pool loads it before it
 * reads them (acquire), so that whatever count a dead worker left covers only whole
 * results. Starting a run changes count, then (after a full fence) first and id, so that
 * no state the worker can die in pairs old results with a new first; and the pool checks,
 * after a full fence, that count, first and id did not change while it copied the
 * results out, in case something still writes. The state and done words take full
 * barriers both sides, so that a worker's done is seen before its state leaves the
 * task's number. The operations are in atomics.h. */

#define PP__JOURNAL_MAX ((size_t) 1 << 30)

int pp__journal_layout(size_t size, uint32_t *tcap, size_t *data_off) {
  size_t n;

  if (size < PP__JOURNAL_HDR + 16 || size > PP__JOURNAL_MAX)
    return PP_EINVAL;
  /* An entry and 8 bytes of result per item at the least; never more entries than a
   * batch has items. */
  n = (size - PP__JOURNAL_HDR) / 16;
  if (n > PP__BATCH_MAX)
    n = PP__BATCH_MAX;
  *tcap = (uint32_t) n;
  *data_off = PP__JOURNAL_HDR + n * 8;
  return 0;
}

int pp__journal_read(const uint8_t *journal, size_t size, uint64_t id, uint32_t from,
                     uint32_t nitems, uint8_t **out, pp__batch *b, const char **why) {
  uint32_t tcap, count, first, skip, nout, i;
  size_t data_off, dcap, total = 0, skipped = 0, len;
  uint8_t *p;

  *out = NULL;
  if (pp__journal_layout(size, &tcap, &data_off) != 0) {
    *why = "a journal of an impossible size";
    return PP_EPROTO;
  }
  dcap = size - data_off;
  /* Each word once, into a local: the worker may change it at any time, and what is
   * checked must be what is used. */
  count = pp__load_acquire(journal + PP__JOURNAL_COUNT);
  first = pp__load_acquire(journal + PP__JOURNAL_FIRST);
  if (count == 0)
    return 0;
  if (pp__load64(journal + PP__JOURNAL_ID) != id) {
    *why = "a journal of another batch";
    return PP_EPROTO;
  }
  if (count > tcap || first > nitems || count > nitems - first) {
    *why = "a journal whose counts are out of bounds";
    return PP_EPROTO;
  }
  /* Results between those filed and the journal's first were on the wire and are lost:
   * taking the later ones would file them under the wrong items. */
  if (first > from) {
    *why = "a journal that starts past the results filed";
    return PP_EPROTO;
  }
  if (count <= from - first)
    return 0;
  skip = from - first;
  nout = count - skip;
  /* The table is copied whole and checked in the copy; then the results it describes. */
  p = malloc(8 + (size_t) count * 8 + dcap);
  if (p == NULL) {
    *why = "no memory to read a journal";
    b->first = from;
    b->count = nout;
    return PP_ENOMEM;
  }
  memcpy(p + 8, journal + PP__JOURNAL_HDR, (size_t) count * 8);
  for (i = 0; i < count; i++) {
    uint32_t n = pp__get_u32(p + 8 + (size_t) i * 8 + 4);
    if (n > dcap - total) {
      free(p);
      *why = "a journal whose lengths overrun it";
      return PP_EPROTO;
    }
    total += n;
    if (i < skip)
      skipped += n;
  }
  memmove(p + 8, p + 8 + (size_t) skip * 8, (size_t) nout * 8);
  len = 8 + (size_t) nout * 8;
  memcpy(p + len, journal + data_off + skipped, total - skipped);
  len += total - skipped;
  pp__put_u32(p, from);
  pp__put_u32(p + 4, nout);
  if (pp__fence_load(journal + PP__JOURNAL_COUNT) != count ||
      pp__load_acquire(journal + PP__JOURNAL_FIRST) != first ||
      pp__load64(journal + PP__JOURNAL_ID) != id) {
    free(p);
    *why = "a journal that changed while it was read";
    return PP_EPROTO;
  }
  if (pp__batch_result_decode(p, len, b, why) != 0) {
    free(p);
    return PP_EPROTO;
  }
  *out = p;
  return 0;
}

/* ---- The pool's side ------------------------------------------------------------------ */

void pp__journal_offer(pp__worker *w) {
  static int warned;
  uint8_t frame[PP__HDR_SIZE + PP__JOURNAL_FRAME];
  int err;

  err = pp__seg_create(&w->journal, PP__JOURNAL_SIZE);
  if (err == 0) {
    pp__hdr_encode(frame, PP__F_JOURNAL, 0, 0, PP__JOURNAL_FRAME);
    pp__put_u64(frame + PP__HDR_SIZE, PP__JOURNAL_SIZE);
    err = pp__seg_give(w, &w->journal, frame, sizeof(frame),
                       PP__HDR_SIZE + PP__JOURNAL_TOKEN);
    if (err != 0)
      pp__seg_free(&w->journal);
  }
  if (err != 0)
    /* Speed and precision are lost, not results: the worker writes each result before it
     * starts the next, and a kill cannot tell what it had started (journal.h). */
    pp__warn_once(&warned, "no shared memory for a worker's results journal (%s: %s): "
                  "pp_map's batches send each item's result on its own, which is slower, "
                  "and a task killed for a cancel or timeout may take the tasks sent ahead "
                  "to its worker with it (pipeline_depth 1 rules that out)",
                  pp_errname(err), pp_strerror(err));
}

void pp__journal_recover(pp__worker *w, pp__task *t) {
  const char *why;
  uint8_t *p = NULL;
  pp__batch b;
  int err;

  /* Only a batch whose frame reached this worker, and that it was running. */
  if (w->journal.data == NULL || t->nitems == 0 || t->state == PP__T_DONE ||
      t->sent_to != w->token || t->received >= t->nitems)
    return;
  err = pp__journal_read(w->journal.data, w->journal.size, t->id, t->received, t->nitems,
                         &p, &b, &why);
  if (err == 0 && p != NULL) {
    t->received += b.count;
    t->on_items(t, &b, w->pid);
  } else if (err == PP_ENOMEM) {
    /* The items the journal holds ran: without memory to read their results they fail,
     * one by one with a message of no size to allocate, rather than run again. */
    static const char msg[] = "its result, which only its dead worker's journal held, "
                              "could not be read: out of memory";
    uint8_t entry[8];
    uint32_t i, n = b.count;
    pp__put_u32(entry, PP__R_FAIL);
    pp__put_u32(entry + 4, (uint32_t) (sizeof(msg) - 1));
    for (i = 0; i < n && t->state != PP__T_DONE; i++) {
      b.first = t->received;
      b.count = 1;
      b.table = entry;
      b.size = 0;
      b.data = (const uint8_t *) msg;
      b.data_len = sizeof(msg) - 1;
      t->received++;
      t->on_items(t, &b, w->pid);
    }
  }
  free(p);
}

/* Reads the two control words, checked against what was sent: a worker can only have
 * started or finished a task it was sent, so any other value is a lie or corruption.
 * Returns 0 with *state and *done, or -1. */
static int pp__journal_words(const pp__worker *w, uint64_t *state, uint64_t *done) {
  *state = pp__load64(w->journal.data + PP__JOURNAL_STATE);
  *done = pp__load64(w->journal.data + PP__JOURNAL_DONE);
  if ((*state > w->seq_sent && *state != PP__CTL_DOOMED) || *done > w->seq_sent)
    return -1;
  return 0;
}

int pp__journal_claim(pp__worker *w, const pp__task *t) {
  uint64_t state, done;
  int i;

  /* A worker that could not map the segment obeys no state word. */
  if (w->journal.data == NULL || w->journal_failed)
    return PP__CLAIM_PLAIN;
  /* Bounded: an honest worker changes the state word twice a task, so a swap fails only
   * a few times in a row; one that keeps changing it is killed as one that obeys none. */
  for (i = 0; i < 64; i++) {
    if (pp__journal_words(w, &state, &done) != 0)
      return PP__CLAIM_PLAIN;
    if (state == PP__CTL_DOOMED)
      return PP__CLAIM_DOOMED;
    /* A later task has started, or t is done: t has finished. The caller still wants
     * its result within a grace period, since the words are the worker's to write. */
    if ((state != 0 && state > t->seq) || done >= t->seq)
      return PP__CLAIM_FINISHED;
    if (pp__cas64(w->journal.data + PP__JOURNAL_STATE, state, PP__CTL_DOOMED))
      return PP__CLAIM_DOOMED;
  }
  return PP__CLAIM_PLAIN;
}

int pp__journal_unstarted(const pp__worker *w, const pp__task *t) {
  uint64_t state, done;

  if (w->journal.data == NULL || w->journal_failed ||
      pp__journal_words(w, &state, &done) != 0)
    return 0;
  return state == 0 && done < t->seq;
}

void pp__journal_release(pp__worker *w) { pp__seg_free(&w->journal); }

/* ---- The worker's side ---------------------------------------------------------------- */

int pp__jw_open(pp__jw *j, pp__chan *chan, uint64_t size, uint64_t token) {
  size_t data_off;
  uint32_t tcap;
  int err;

  pp__jw_close(j);
  if ((uint64_t) (size_t) size != size ||
      pp__journal_layout((size_t) size, &tcap, &data_off) != 0) {
    /* Taken, to be closed: what came with the frame is not to be kept. */
    pp__seg_take(chan, token, 0, &j->seg);
    return PP_EPROTO;
  }
  err = pp__seg_take(chan, token, (size_t) size, &j->seg);
  if (err != 0)
    return err;
  j->base = j->seg.data;
  j->table = j->base + PP__JOURNAL_HDR;
  j->data = j->base + data_off;
  j->tcap = tcap;
  j->dcap = (size_t) size - data_off;
  j->count = 0;
  j->used = 0;
  return 0;
}

void pp__jw_close(pp__jw *j) {
  pp__seg_free(&j->seg);
  memset(j, 0, sizeof(*j));
}

void pp__jw_begin(pp__jw *j, uint64_t id, uint32_t first) {
  /* The count first: the pool then never pairs old results with the new first and id. */
  pp__store_fence(j->base + PP__JOURNAL_COUNT, 0);
  pp__store_release(j->base + PP__JOURNAL_FIRST, first);
  pp__store64(j->base + PP__JOURNAL_ID, id);
  j->count = 0;
  j->used = 0;
  j->uniform = 1;
  j->same_left = 0;
}

uint32_t pp__jw_room_same(const pp__jw *j, size_t limit) {
  size_t room = j->tcap - j->count;

  /* As pp__jw_fits: room in the journal, and the run's results within limit. */
  if (j->usize > 0) {
    size_t by_data = (j->dcap - j->used) / j->usize;
    size_t by_limit = j->used < limit ? (limit - j->used) / j->usize : 0;
    if (by_data < room)
      room = by_data;
    if (by_limit < room)
      room = by_limit;
  }
  return (uint32_t) room;
}

/* pp__put_u32, here where it runs for every item of a batch: a call each would cost more
 * than the store. On a little-endian machine (the test folds away) the value is stored as
 * it lies, in one move; compilers do not always merge the bytes' stores into one. */
static void pp__jw_u32(uint8_t *p, uint32_t v) {
  const uint16_t probe = 1;

  if (*(const uint8_t *) &probe == 1) {
    memcpy(p, &v, sizeof(v));
    return;
  }
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
  p[2] = (uint8_t) (v >> 16);
  p[3] = (uint8_t) (v >> 24);
}

void pp__jw_add(pp__jw *j, uint32_t kind, const void *data, size_t n) {
  uint8_t *e = j->table + (size_t) j->count * 8;

  if (n > 0)
    memcpy(j->data + j->used, data, n);
  pp__jw_u32(e, kind);
  pp__jw_u32(e + 4, (uint32_t) n);
  if (j->count == 0) {
    j->usize = (uint32_t) n;
    memcpy(j->entry, e, 8);
  }
  if (kind != PP__R_OK || n != j->usize)
    j->uniform = 0;
  j->used += n;
  j->count++;
  pp__store_release(j->base + PP__JOURNAL_COUNT, j->count);
}

int pp__jw_start(pp__jw *j, uint64_t seq) {
  if (j->base == NULL)
    return 0;
  return pp__cas64(j->base + PP__JOURNAL_STATE, 0, seq) ? 0 : -1;
}

int pp__jw_finish(pp__jw *j, uint64_t seq) {
  if (j->base == NULL)
    return 0;
  pp__store64(j->base + PP__JOURNAL_DONE, seq);
  return pp__cas64(j->base + PP__JOURNAL_STATE, seq, 0) ? 0 : -1;
}
