/* The pool's side of the results journal (journal.c): hooks of lifecycle.c and
 * dispatch.c. The format and why it exists: shared/journal.h. */
#ifndef PP_POOL_JOURNAL_H
#define PP_POOL_JOURNAL_H

#include "../shared/journal.h"

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

#endif
