/* A worker's life cycle: every change of a worker's state happens here, through
 * pp__worker_set_state, which asserts that the diagram in pool.h allows it. Three rules
 * live here and nowhere else:
 *   - a worker's tasks are decided once, when it stops being read (pp__worker_settle);
 *   - a replacement starts when a counted worker is settled, as long as the pool wants
 *     workers (pp__maintain);
 *   - each timer says what it is counting (w->timer_why), so its expiry is never a guess. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bigmsg.h"
#include "dispatch.h"
#include "journal.h"
#include "lifecycle.h"
#include "../os.h"
#include "results.h"
#include "../methods.h"

/* How long a worker that ended may keep its channel open (a grandchild that inherited
 * it) before the pool stops waiting for the last bytes; how long one that closed its
 * channel may take to exit; how long a retired worker may take to exit; and how long the
 * pool waits for the end of a killed worker (never, unless the OS's report was lost, say
 * with SIGCHLD blocked) before it stops waiting. */
#define PP__EXIT_GRACE_MS 1000
#define PP__HANGUP_GRACE_MS 1000
#define PP__RETIRE_GRACE_MS 5000
#define PP__REAP_GRACE_MS 5000
/* How long a worker that said it finished a task has to deliver its result, from the
 * kill it escaped, or from the last bytes it sent. */
#define PP__RESULT_GRACE_MS 5000

static void pp__on_timer(uv_timer_t *timer);

/* Each state's allowed successors, as bits (1 << state). */
#define PP__BIT(s) (1u << (s))
static const unsigned pp__next_states[] = {
  0,
  /* STARTING */ PP__BIT(PP__W_READY) | PP__BIT(PP__W_ENDING) | PP__BIT(PP__W_KILLED) |
                 PP__BIT(PP__W_GONE),
  /* READY */    PP__BIT(PP__W_ENDING) | PP__BIT(PP__W_RETIRING) | PP__BIT(PP__W_KILLED) |
                 PP__BIT(PP__W_GONE),
  /* ENDING */   PP__BIT(PP__W_KILLED) | PP__BIT(PP__W_GONE),
  /* RETIRING */ PP__BIT(PP__W_KILLED) | PP__BIT(PP__W_GONE),
  /* KILLED */   PP__BIT(PP__W_GONE),
  /* GONE */     0
};

static void pp__worker_set_state(pp__worker *w, pp__wstate to) {
  assert(w->state >= PP__W_STARTING && w->state <= PP__W_GONE);
  assert(pp__next_states[w->state] & PP__BIT(to));
  w->state = to;
}

int pp__worker_live(const pp__worker *w) {
  return w->state == PP__W_STARTING || w->state == PP__W_READY || w->state == PP__W_ENDING;
}

/* ---- Small helpers ------------------------------------------------------------------ */

static void pp__worker_arm(pp__worker *w, pp__wtimer why, uint64_t ms) {
  /* The loop's clock is read once per turn: an application that spent a while away from
   * the loop before this call would otherwise see the timer expire that much early. */
  uv_update_time(w->pool->loop);
  w->timer_why = why;
  uv_timer_start(&w->timer, pp__on_timer, ms, 0);
}

static void pp__worker_disarm(pp__worker *w) {
  w->timer_why = PP__WT_NONE;
  uv_timer_stop(&w->timer);
}

static void pp__worker_count(pp__worker *w, int counted) {
  if (w->counted == counted)
    return;
  w->counted = counted;
  if (counted) {
    w->pool->active++;
  } else {
    w->pool->active--;
    if (w->ready_counted)
      w->pool->ready--;
    w->ready_counted = 0;
  }
}

void pp__worker_set_idle(pp__worker *w, int idle) {
  pp__q_remove(&w->idle_node);
  if (idle) {
    assert(w->state == PP__W_READY && !w->unwritable && w->ninflight == 0);
    pp__q_insert_tail(&w->pool->idle, &w->idle_node);
  }
}

pp__task *pp__worker_head(pp__worker *w) {
  return pp__q_empty(&w->inflight) ? NULL
                                   : PP__CONTAINER_OF(pp__q_head(&w->inflight), pp__task, node);
}

void pp__worker_detach(pp__worker *w, pp__task *t) {
  assert(t->worker == w && w->ninflight > 0);
  pp__q_remove(&t->node);
  t->worker = NULL;
  w->ninflight--;
  pp__bigmsg_task_done(w, t);
}

void pp__worker_arm_task_timer(pp__worker *w) {
  if (w->state != PP__W_READY || w->pool->timeout_ms == 0)
    return;
  if (w->ninflight > 0)
    pp__worker_arm(w, PP__WT_TASK, w->pool->timeout_ms);
  else if (w->timer_why == PP__WT_TASK)
    pp__worker_disarm(w);
}

/* No more is written to the worker nor read from it. A write under way is canceled by the
 * close, and the batch being filled is dropped: its tasks are decided by the settle that
 * follows, and a decided task's argument may be freed by its owner at once. */
static void pp__worker_close_channel(pp__worker *w) {
  if (!uv_is_closing((uv_handle_t *) &w->pipe))
    pp__worker_writes_landed(w);
  pp__q_remove(&w->dirty_node);
  pp__wbatch_done(&w->wb[w->wb_fill], NULL);
  if (!uv_is_closing((uv_handle_t *) &w->pipe))
    uv_close((uv_handle_t *) &w->pipe, pp__worker_on_handle_closed);
}

/* GONE: closes every handle; the last close callback frees the worker. */
static void pp__worker_close_handles(pp__worker *w) {
  assert(w->state == PP__W_GONE);
  pp__worker_close_channel(w);
  pp__worker_disarm(w);
  if (!uv_is_closing((uv_handle_t *) &w->timer))
    uv_close((uv_handle_t *) &w->timer, pp__worker_on_handle_closed);
  w->pool->ops->close(w);
}

void pp__worker_on_handle_closed(uv_handle_t *handle) {
  pp__worker *w = (pp__worker *) handle->data;
  pp_pool *pool = w->pool;

  if (--w->open_handles > 0)
    return;
  assert(w->state == PP__W_GONE && w->settled && w->ninflight == 0);
  pp__q_remove(&w->node);
  pp__q_remove(&w->idle_node);
  pp__q_remove(&w->dirty_node);
  pp__bigmsg_worker_free(w);
  pp__rx_free(&w->rx);
  pp__wbatch_free(&w->wb[0]);
  pp__wbatch_free(&w->wb[1]);
  free(w);
  pp__maybe_shutdown(pool);
}

/* ---- Giving up on starting workers -------------------------------------------------- */

/* A failed start. After workers + 2 in a row the pool gives up: it keeps the workers it
 * has, and fails what is queued with the reason once none is left. */
static void pp__start_failed(pp_pool *pool, int err, char *msg) {
  pool->start_failures++;
  if (pool->start_failures <= pool->nworkers + 2 || pool->broken) {
    free(msg);
    return;
  }
  /* Under x.mu: pp_pool_error reads them from any thread. */
  uv_mutex_lock(&pool->x.mu);
  pool->broken = err;
  pool->broken_msg = msg ? msg : pp__strdupf("%s", pp_strerror(err));
  uv_mutex_unlock(&pool->x.mu);
}

static void pp__fail_queue_if_broken(pp_pool *pool) {
  if (!pool->broken || pool->active > 0)
    return;
  while (!pp__q_empty(&pool->queue)) {
    pp__task *t = PP__CONTAINER_OF(pp__q_head(&pool->queue), pp__task, node);
    pp__task_fail(t, pool->broken, "task '%s' (id %llu) could not run: %s", t->name,
                  (unsigned long long) t->id,
                  pool->broken_msg ? pool->broken_msg : pp_strerror(pool->broken));
  }
}

/* ---- The one decision ------------------------------------------------------------- */

/* Decides, once, the fate of every task w holds, now that nothing more is read from it.
 * `from` is the state it left. status != 0 fails its running task with status and msg.
 * status 0 is an end the worker came to by itself (natural) or a kill that blames no
 * task: the running task fails with PP_EWORKER if its frame had reached the worker whole,
 * or if it came back from such ends PP__MAX_REQUEUE times already; otherwise it was never
 * read and runs elsewhere. Tasks behind it never started (a worker runs tasks in order
 * and writes each result before it starts the next), so they go back to the front of the
 * queue, in order. Callbacks run last, when the worker's state is final. */
static void pp__worker_settle(pp__worker *w, pp__wstate from, int natural, int status,
                              char *msg, const char *how) {
  pp_pool *pool = w->pool;
  pp__task *head;

  assert(!w->settled);
  w->settled = 1;
  /* Lost: any end but the pool letting it go (retired, or still starting at a close). */
  if (w->state != PP__W_RETIRING && !w->lost_counted &&
      !(pool->closing && !pool->terminating && from == PP__W_STARTING && !natural &&
        status == 0))
    pool->st_lost++;
  pp__worker_set_idle(w, 0);
  pp__worker_count(w, 0);
  if (natural && !w->became_ready) {
    if (!w->got_hello && pool->launcher != NULL)
      /* The launcher is the process whose end is known here; what went wrong (no such
       * host, no such program there, a refused login) it wrote on its stderr. */
      pp__start_failed(pool, PP_ESPAWN,
                       pp__strdupf("the worker launcher '%s' (pid %ld) %s before its worker "
                                   "reached pp_main (see the launcher's stderr, which is "
                                   "this process's; is '%s' there, at that path, a program "
                                   "with the same tasks?)", pool->launcher[0], w->pid, how,
                                   pool->exe));
    else if (!w->got_hello)
      pp__start_failed(pool, PP_ESPAWN,
                       pp__strdupf("worker pid %ld %s before it reached pp_main (does main() "
                                   "call pp_main first? is '%s' a program with the same "
                                   "tasks?)", w->pid, how, pool->exe));
    else
      pp__start_failed(pool, PP_EINIT,
                       pp__strdupf("worker pid %ld %s while it ran the initializer '%s'",
                                   w->pid, how, pool->initializer ? pool->initializer
                                                                  : "(none)"));
  }
  head = pp__worker_head(w);
  /* A batch that has results had reached its worker, whatever the write's callback said. */
  if (head != NULL && head->received > 0)
    head->sent_to = w->token;
  /* A write to a dead worker's socket can succeed all the same: whether a worker whose
   * process has ended had started its first task is what its journal says, not the
   * write. */
  if (head != NULL && head->received == 0 && w->exited && pp__journal_unstarted(w, head))
    head->sent_to = 0;
  /* A worker that ended by itself in a batch may have left finished items' results in its
   * journal only: they are filed first, so that the batch's failure falls on the right
   * item. A kill's victim wrote what it wrote, but its end says nothing of it. */
  if (natural && status == 0 && head != NULL)
    pp__journal_recover(w, head);
  pp__journal_release(w);
  if (head != NULL)
    pp__worker_detach(w, head);
  while (!pp__q_empty(&w->inflight)) {
    pp__task *t = PP__CONTAINER_OF(w->inflight.prev, pp__task, node);
    pp__worker_detach(w, t);
    if (t->state == PP__T_DONE) {
      pp__task_free(t);
    } else {
      t->state = PP__T_QUEUED;
      pp__q_insert_head(&pool->queue, &t->node);
    }
  }
  if (head == NULL) {
    free(msg);
  } else if (head->state == PP__T_DONE) {
    free(msg);
    pp__task_free(head);
  } else if (head->nitems != 0 && head->received == head->nitems) {
    /* Its journal held the rest of its results: it died writing them out. */
    free(msg);
    pp__task_finish(head, 0, NULL, 0, NULL);
  } else if (status != 0) {
    pp__task_finish(head, status, NULL, 0, msg);
  } else if ((w->doomed && !w->journal_failed) || w->said_retire) {
    /* The pool claimed it for a kill (journal.h), or it said it would start nothing more
     * (over max_worker_memory): this task never started. Everything it sent has been
     * read, so had it failed to map the journal, the pool would know. */
    free(msg);
    head->state = PP__T_QUEUED;
    pp__q_insert_head(&pool->queue, &head->node);
  } else if (w->aborted_id != 0 && head->sent_to == w->token) {
    /* The pool killed the worker for the task before this one, which the worker had
     * finished as the kill came: this one may have started, so it is not run again. */
    static int blind_warned;
    free(msg);
    if (pool->launcher != NULL)
      pp__warn_once(&blind_warned, "a worker behind worker_launcher was killed for a cancel "
                    "or a timeout with tasks sent ahead to it, which fail with PP_EWORKER: "
                    "such workers have no shared memory to tell what they had started "
                    "(pipeline_depth 1 sends nothing ahead)");
    pp__task_fail(head, PP_EWORKER, "task '%s' (id %llu) failed: worker pid %ld was killed "
                  "to %s task id %llu, which it had just finished; it may have started "
                  "this task, which is therefore not run again (pipeline_depth 1 rules "
                  "this out)", head->name, (unsigned long long) head->id, w->pid,
                  w->aborted_status == PP_ETIMEDOUT ? "time out" : "cancel",
                  (unsigned long long) w->aborted_id);
  } else if (head->sent_to == w->token || head->requeued >= PP__MAX_REQUEUE) {
    free(msg);
    pp__task_fail(head, PP_EWORKER, "task '%s' (id %llu) failed: worker pid %ld %s while "
                  "it ran the task", head->name, (unsigned long long) head->id, w->pid, how);
  } else {
    free(msg);
    head->state = PP__T_QUEUED;
    head->requeued++;
    pp__q_insert_head(&pool->queue, &head->node);
  }
  /* A terminating pool runs nothing more: what went back to the queue ends here. */
  while (pool->terminating && !pp__q_empty(&pool->queue)) {
    pp__task *t = PP__CONTAINER_OF(pp__q_head(&pool->queue), pp__task, node);
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled: the pool was "
                  "terminated", t->name, (unsigned long long) t->id);
  }
}

/* After a worker left the pool's count: replace it and hand out what it gave back. */
static void pp__worker_after(pp_pool *pool) {
  pp__maintain(pool);
  pp__pump(pool);
  pp__maybe_shutdown(pool);
}

/* The worker came to its end by itself: its process ended and its channel is drained, or
 * one of the two happened and the grace period for the other ran out. */
static void pp__worker_end(pp__worker *w, const char *how_alive) {
  pp_pool *pool = w->pool;
  pp__wstate from = w->state;
  char how[192];

  if (w->exited)
    pp__os_describe_exit(w->exit_status, w->term_signal, how, sizeof(how));
  else
    snprintf(how, sizeof(how), "%s", how_alive);
  pp__worker_close_channel(w);
  if (w->exited) {
    pp__worker_set_state(w, PP__W_GONE);
    pp__worker_close_handles(w);
  } else {
    pp__worker_set_state(w, PP__W_KILLED);
    pp__worker_arm(w, PP__WT_REAP, PP__REAP_GRACE_MS);
    pool->ops->kill(w);
  }
  pp__worker_settle(w, from, 1, 0, NULL, how);
  pp__worker_after(pool);
}

/* ---- Transitions ------------------------------------------------------------------ */

void pp__worker_ready(pp__worker *w) {
  pp_pool *pool = w->pool;

  assert(w->state == PP__W_STARTING);
  pp__worker_disarm(w);
  pp__worker_set_state(w, PP__W_READY);
  w->became_ready = 1;
  if (w->counted) {
    w->ready_counted = 1;
    pool->ready++;
  }
  pool->start_failures = 0;
  pp__worker_set_idle(w, 1);
  pp__pump(pool);
  /* Started for a closing pool whose work got done meanwhile: let it go at once. */
  pp__maybe_shutdown(pool);
}

void pp__worker_start_failed(pp__worker *w, int err, char *msg) {
  assert(pp__worker_live(w) && !w->became_ready);
  pp__start_failed(w->pool, err, msg);
  pp__worker_kill(w, 0, NULL);
}

void pp__worker_kill(pp__worker *w, int status, char *msg) {
  pp_pool *pool = w->pool;
  pp__wstate from = w->state;

  if (from == PP__W_KILLED || from == PP__W_GONE) {
    free(msg);
    return;
  }
  if (from == PP__W_RETIRING) {
    free(msg);
    pp__worker_set_state(w, PP__W_KILLED);
    pp__worker_arm(w, PP__WT_REAP, PP__REAP_GRACE_MS);
    pool->ops->kill(w);
    return;
  }
  pp__worker_close_channel(w);
  if (w->exited) {
    pp__worker_set_state(w, PP__W_GONE);
    pp__worker_close_handles(w);
  } else {
    pp__worker_set_state(w, PP__W_KILLED);
    /* Armed before the kill: a method may report the end from within kill(). */
    pp__worker_arm(w, PP__WT_REAP, PP__REAP_GRACE_MS);
    pool->ops->kill(w);
  }
  pp__worker_settle(w, from, 0, status, msg, "was killed");
  pp__worker_after(pool);
}

void pp__worker_abort_head(pp__worker *w, int status, char *msg) {
  pp__task *t = pp__worker_head(w);
  int claim = PP__CLAIM_PLAIN;

  if (w->state == PP__W_READY && t != NULL)
    claim = pp__journal_claim(w, t);
  if (claim == PP__CLAIM_FINISHED) {
    /* It says it finished t as the kill was decided: t's result, when it comes, is
     * dropped, and the worker goes on with what is behind it. But the word is the
     * worker's: if the result does not come within a grace period, it is killed all the
     * same. */
    if (t->state != PP__T_DONE)
      pp__task_finish(t, status, NULL, 0, msg);
    else
      free(msg);
    w->grace_seq = t->seq;
    pp__worker_arm(w, PP__WT_GRACE, PP__RESULT_GRACE_MS);
    return;
  }
  if (claim == PP__CLAIM_DOOMED)
    w->doomed = 1;
  if (w->state == PP__W_READY) {
    /* The worker may have finished t already and gone on to the tasks behind it, whose
     * results may be on their way: it is killed, but read to its end like one that ended
     * by itself, and the settle then decides the task it was running at the kill. t
     * stays listed, decided, until then. */
    pp__worker_set_state(w, PP__W_ENDING);
    pp__worker_set_idle(w, 0);
    pp__worker_arm(w, PP__WT_HANGUP, PP__REAP_GRACE_MS);
    w->abort_kill = 1;
    w->aborted_id = t != NULL ? t->id : 0;
    w->aborted_status = status;
    /* Lost from now on, for the counters, though it is settled later. */
    w->lost_counted = 1;
    w->pool->st_lost++;
  }
  /* A head decided already (canceled while it waited behind another) that ran too long is
   * only stopped. */
  if (t != NULL && t->state != PP__T_DONE)
    pp__task_finish(t, status, NULL, 0, msg);
  else
    free(msg);
  /* Killed after the callback, which may have ended the worker in its own way. */
  if (w->abort_kill && w->state == PP__W_ENDING && !w->exited) {
    w->abort_kill = 0;
    w->pool->ops->kill(w);
  }
}

void pp__worker_retire(pp__worker *w) {
  pp_pool *pool = w->pool;

  assert(w->state == PP__W_READY);
  pp__worker_close_channel(w);
  pp__worker_set_state(w, PP__W_RETIRING);
  pp__worker_arm(w, PP__WT_RETIRE, PP__RETIRE_GRACE_MS);
  pp__worker_settle(w, PP__W_READY, 0, 0, NULL, "was retired");
  pp__worker_after(pool);
}

/* One of a worker's two ends came: its process's (exit) or its channel's (eof). With
 * both, it has ended. Otherwise, a worker still read waits in ENDING for the other, for
 * a grace period: after an exit, for the last bytes it wrote; after an end of channel,
 * for its exit, so that the message can say how it ended (then it is killed). */
static void pp__worker_one_end(pp__worker *w, pp__wtimer why, uint64_t grace_ms) {
  switch (w->state) {
    case PP__W_STARTING:
    case PP__W_READY:
      pp__worker_set_state(w, PP__W_ENDING);
      pp__worker_set_idle(w, 0);
      /* fall through */
    case PP__W_ENDING:
      if (w->exited && w->eof)
        pp__worker_end(w, NULL);
      else
        pp__worker_arm(w, why, grace_ms);
      break;
    case PP__W_RETIRING:
    case PP__W_KILLED:
      /* Not read any more: only its process's end matters. */
      if (w->exited) {
        pp__worker_set_state(w, PP__W_GONE);
        pp__worker_close_handles(w);
      }
      break;
    case PP__W_GONE:
      break;
  }
}

void pp__worker_on_exit(pp__worker *w, int64_t exit_status, int term_signal) {
  if (w->exited)
    return;
  w->exited = 1;
  w->exit_status = exit_status;
  w->term_signal = term_signal;
  pp__worker_one_end(w, PP__WT_DRAIN, PP__EXIT_GRACE_MS);
}

void pp__worker_on_eof(pp__worker *w) {
  if (w->eof)
    return;
  w->eof = 1;
  uv_read_stop((uv_stream_t *) &w->pipe);
  pp__worker_one_end(w, PP__WT_HANGUP, PP__HANGUP_GRACE_MS);
}

void pp__worker_on_start_failed(pp__worker *w, const char *why) {
  pp_pool *pool = w->pool;

  if (w->state != PP__W_STARTING) {
    /* Not starting any more: all that is left to learn is that it is gone. */
    pp__worker_on_exit(w, -1, 0);
    return;
  }
  w->exited = 1;
  if (pool->first_err == 0)
    pool->first_err = PP_ESPAWN;
  pp__start_failed(pool, PP_ESPAWN, pp__strdupf("%s", why));
  pp__worker_set_state(w, PP__W_GONE);
  pp__worker_close_handles(w);
  pp__worker_settle(w, PP__W_STARTING, 0, 0, NULL, "could not start");
  pp__worker_after(pool);
}

static void pp__worker_task_timer(pp__worker *w) {
  pp_pool *pool = w->pool;
  pp__task *t = pp__worker_head(w);
  uint64_t elapsed;

  assert(w->state == PP__W_READY);
  if (t == NULL)
    return;
  /* The timer may run early (a clock read before the task started): check real time. */
  elapsed = (uv_hrtime() - w->head_since) / 1000000;
  if (elapsed < pool->timeout_ms) {
    pp__worker_arm(w, PP__WT_TASK, pool->timeout_ms - elapsed);
    return;
  }
  pp__worker_abort_head(w, PP_ETIMEDOUT,
                        pp__strdupf("task '%s' (id %llu) ran longer than task_timeout_ms "
                                    "(%llu ms); worker pid %ld was killed", t->name,
                                    (unsigned long long) t->id,
                                    (unsigned long long) pool->timeout_ms, w->pid));
}

/* The grace period of a task that the worker said it had finished, as a kill for it was
 * claimed, is over. Its result came meanwhile if a later task runs now; if not, the
 * worker is killed as it would have been, and with no believable word of what it ran
 * (the journal may be what lied). */
static void pp__worker_grace_over(pp__worker *w) {
  pp__task *t = pp__worker_head(w);

  if (w->state != PP__W_READY || t == NULL || t->seq != w->grace_seq) {
    pp__worker_arm_task_timer(w);
    return;
  }
  w->journal_failed = 1;
  pp__worker_abort_head(w, PP_ETIMEDOUT,
                        pp__strdupf("worker pid %ld said it had finished task '%s' (id "
                                    "%llu) but sent no result within %d ms; it was killed",
                                    w->pid, t->name, (unsigned long long) t->id,
                                    PP__RESULT_GRACE_MS));
}

void pp__worker_progress(pp__worker *w) {
  if (w->timer_why == PP__WT_GRACE)
    pp__worker_arm(w, PP__WT_GRACE, PP__RESULT_GRACE_MS);
}

static void pp__on_timer(uv_timer_t *timer) {
  pp__worker *w = (pp__worker *) timer->data;
  pp_pool *pool = w->pool;
  pp__wtimer why = w->timer_why;
  static int reap_warned;

  w->timer_why = PP__WT_NONE;
  switch (why) {
    case PP__WT_START:
      assert(w->state == PP__W_STARTING);
      pp__worker_start_failed(
          w, PP_ESPAWN,
          pp__strdupf("worker pid %ld was not ready within %llu ms (stuck before pp_main, "
                      "or in the initializer?); it was killed", w->pid,
                      (unsigned long long) pool->start_timeout_ms));
      break;
    case PP__WT_TASK:
      pp__worker_task_timer(w);
      break;
    case PP__WT_DRAIN:
      assert(w->state == PP__W_ENDING && w->exited);
      pp__worker_end(w, NULL);
      break;
    case PP__WT_HANGUP:
      assert(w->state == PP__W_ENDING && !w->exited);
      pp__worker_end(w, "closed its channel but did not exit (it was killed)");
      break;
    case PP__WT_RETIRE:
      assert(w->state == PP__W_RETIRING);
      pp__worker_kill(w, 0, NULL);
      break;
    case PP__WT_GRACE:
      pp__worker_grace_over(w);
      break;
    case PP__WT_REAP:
      assert(w->state == PP__W_KILLED);
      pp__warn_once(&reap_warned, "worker pid %ld was killed but its end was never "
                    "reported (is SIGCHLD blocked, or its status reaped elsewhere?); the "
                    "pool stopped waiting for it", w->pid);
      pp__worker_set_state(w, PP__W_GONE);
      pp__worker_close_handles(w);
      break;
    case PP__WT_NONE:
      break;
  }
  pp__pump(pool);
}

/* ---- Starting workers --------------------------------------------------------------- */

static void pp__on_init_written(uv_write_t *req, int status) {
  pp__worker *w = (pp__worker *) req->data;

  (void) status;  /* A failed write shows up as the worker's end, handled there. */
  free(w->init_buf);
  w->init_buf = NULL;
}

void pp__worker_start(pp_pool *pool) {
  pp__worker *w;
  char why[512] = "";
  pp__init init;
  uint8_t *p;
  size_t size;
  uv_buf_t buf;
  int err;

  w = calloc(1, sizeof(*w));
  if (w == NULL || pp__rx_init(&w->rx, pool->max_message) != 0) {
    free(w);
    pp__start_failed(pool, PP_ESPAWN, pp__strdupf("cannot start a worker: out of memory"));
    return;
  }
  w->pool = pool;
  w->token = ++pool->next_token;
  w->m_fd = -1;
  w->state = PP__W_STARTING;
  pp__q_init(&w->idle_node);
  pp__q_init(&w->dirty_node);
  pp__q_init(&w->inflight);
  pp__q_insert_tail(&pool->workers, &w->node);
  pp__worker_count(w, 1);
  uv_pipe_init(pool->loop, &w->pipe, 0);
  uv_timer_init(pool->loop, &w->timer);
  w->pipe.data = w;
  w->timer.data = w;
  w->open_handles = 2;

  err = pool->ops->start(w, why, sizeof(why));
  if (err != 0) {
    pp__worker_count(w, 0);
    w->settled = 1;
    pp__worker_set_state(w, PP__W_GONE);
    pp__worker_close_handles(w);
    if (pool->first_err == 0)
      pool->first_err = err;
    pp__start_failed(pool, PP_ESPAWN, pp__strdupf("%s", why));
    return;
  }
  pool->st_started++;
  uv_read_start((uv_stream_t *) &w->pipe, pp__on_alloc, pp__on_read);
  pp__worker_arm(w, PP__WT_START, pool->start_timeout_ms);
  /* First on the channel, while nothing else is: a descriptor goes with the frame. A
   * launcher forwards bytes only (and may take the worker to another machine). */
  if (pool->launcher == NULL)
    pp__journal_offer(w);

  /* The init frame goes out at once, without waiting for the hello: the worker reads it
   * after it has greeted, so a worker is ready after one round trip. */
  memset(&init, 0, sizeof(init));
  init.max_message = pool->max_message;
  init.max_memory = pool->max_memory;
  init.initializer = pool->initializer;
  init.initializer_len = pool->initializer ? strlen(pool->initializer) : 0;
  init.initarg = pool->initarg;
  init.initarg_len = pool->initarg_len;
  pp__bigmsg_worker_init(w, &init);
  size = PP__HDR_SIZE + pp__init_encode(NULL, &init);
  w->init_buf = p = malloc(size);
  if (p == NULL) {
    pp__worker_start_failed(w, PP_ESPAWN, pp__strdupf("cannot start a worker: out of "
                                                      "memory"));
    return;
  }
  pp__hdr_encode(p, PP__F_INIT, 0, 0, (uint32_t) (size - PP__HDR_SIZE));
  pp__init_encode(p + PP__HDR_SIZE, &init);
  buf = uv_buf_init((char *) w->init_buf, (unsigned int) size);
  w->init_req.data = w;
  if (uv_write(&w->init_req, (uv_stream_t *) &w->pipe, &buf, 1, pp__on_init_written) != 0) {
    free(w->init_buf);
    w->init_buf = NULL;
  }
}

/* How many workers the pool wants: all of its slots while open; while closing, only as
 * long as tasks wait for a worker (a worker that died or was retired during the close is
 * replaced, or its queued tasks would never run). */
static unsigned pp__wanted(const pp_pool *pool) {
  if (pool->terminating || pool->finished)
    return 0;
  if (pool->closing && pp__q_empty(&pool->queue))
    return 0;
  return pool->nworkers;
}

void pp__maintain(pp_pool *pool) {
  while (!pool->broken && pool->active < pp__wanted(pool))
    pp__worker_start(pool);
  pp__fail_queue_if_broken(pool);
}
