/* What the pool sends its workers (dispatch.c): tasks handed out to workers that can
 * take them, their frames gathered per worker and written once per loop turn. */
#ifndef PP_DISPATCH_H
#define PP_DISPATCH_H

#include "../methods.h"
#include "pool.h"

/* Hands out queued tasks to the workers that can take them. */
void pp__pump(pp_pool *pool);

/* The prepare callback that writes every dirty worker's batch, once per loop turn. */
void pp__on_flush(uv_prepare_t *h);

/* A batch's write ended. sent_to: the worker it reached whole, or NULL when it did not;
 * each task's frame then counts as never read. */
void pp__wbatch_done(pp__wbatch *b, pp__worker *sent_to);
void pp__wbatch_free(pp__wbatch *b);

/* Before w's channel closes: the tasks of a write that is complete but whose callback has
 * not run yet count as having reached w (t->sent_to), as they would a turn later. */
void pp__worker_writes_landed(pp__worker *w);

/* Appends a small frame of the pool's own, not a task's, to the batch w is filling. */
int pp__wbatch_put(pp__worker *w, const void *frame, size_t len);
/* pp__wbatch_send, the same and written on the loop's next turn, is in methods.h: the
 * platform code sends frames through it too. */

#endif
