/* The pool's side of the results journal: the segment's offer, the recovery of a dead
 * worker's results, and the claim before a kill (journal.h; the ordering of the shared
 * words is explained in shared/journal.c). */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "pool.h"
#include "../seg.h"
#include "../shared/atomics.h"

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
