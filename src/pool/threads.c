/* Calls from any thread: see threads.h. The rules that keep it simple:
 *
 * - The core is touched by one thread at a time, the one that runs the loop. On a private
 *   loop that is whoever holds x.core: the creating thread during its calls, or the
 *   runner. Another thread never takes x.core in a way that could block (trylock only),
 *   so it never waits behind a blocking call.
 * - Other threads share only x's fields, under x.mu, plus what never changes after
 *   pp_pool_new (options, a task table from pp_main).
 * - A command is answered exactly once: by the loop's thread when it runs it, or, once
 *   the pool is ending (x.gone), at once by whoever finds it.
 * - Commands run only at the top of the loop (the wake handle's callback, or a blocking
 *   call's start, outside any callback), never nested inside the core or a callback: a
 *   command may end what a callback's caller still holds (a terminate, a close).
 * - Every public call takes a reference on the pool (x.refs) before it reads anything of
 *   it, and the core holds one until its end; the last one to let go frees the memory.
 *   So a call that began before the end finds the pool's memory still there and x.gone
 *   set, and gets a late answer. Calls that start after the release are the caller's
 *   bug, as the header says.
 * - A thread inside a callback of some pool's loop never waits for another loop: that
 *   loop's thread may be waiting for this one (two pools whose callbacks call each
 *   other). Such a call is refused (PP_EINVAL) rather than made to wait. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "threads.h"

enum {
  PP__C_SUBMIT = 1,
  PP__C_CANCEL,
  PP__C_WAIT,
  PP__C_STATS,
  PP__C_CLOSE,
  PP__C_TERMINATE,
  PP__C_JOB
};

typedef struct pp__cmd {
  pp__qnode node;          /* in x.inbox, then in a drained list or x.waits */
  int kind;
  pp__task *task;          /* SUBMIT: made by the caller, id set */
  uint64_t id;             /* CANCEL */
  pp_close_cb cb;          /* CLOSE, TERMINATE */
  void *user;
  pp_pool_stats *stats;    /* STATS: where the answer goes */
  pp__xjob_fn job;         /* JOB: started with user, answered by pp__x_job_done */
  int reserved;            /* SUBMIT, loop thread only: counted pending by a close */
  int replied;             /* under x.mu: the answer is in (the caller may then return) */
  int result;
} pp__cmd;

/* ---- Set-up and release ------------------------------------------------------------ */

int pp__x_init(pp_pool *pool) {
  pp__xstate *x = &pool->x;
  int err;

  x->owner = uv_thread_self();
  x->refs = 1;
  pp__q_init(&x->inbox);
  pp__q_init(&x->waits);
  err = uv_mutex_init(&x->mu);
  if (err != 0)
    return err;
  err = uv_cond_init(&x->cond);
  if (err != 0)
    goto fail_mu;
  err = uv_mutex_init_recursive(&x->core);
  if (err != 0)
    goto fail_cond;
  return 0;

fail_cond:
  uv_cond_destroy(&x->cond);
fail_mu:
  uv_mutex_destroy(&x->mu);
  return err;
}

static void pp__x_on_wake(uv_async_t *h) { pp__x_drain((pp_pool *) h->data); }

static void pp__x_on_wake_closed(uv_handle_t *h) {
  pp__pool_handle_closed((pp_pool *) h->data);
}

int pp__x_start(pp_pool *pool) {
  int err = uv_async_init(pool->loop, &pool->x.wake, pp__x_on_wake);

  if (err != 0)
    return err;
  pool->x.wake.data = pool;
  pool->x.wake_open = 1;
  pool->open_handles++;
  return 0;
}

void pp__x_destroy(pp_pool *pool) {
  pp__xstate *x = &pool->x;

  uv_mutex_destroy(&x->core);
  uv_cond_destroy(&x->cond);
  uv_mutex_destroy(&x->mu);
}

int pp__x_hold(pp_pool *pool) {
  pp__xstate *x = &pool->x;
  int gone;

  uv_mutex_lock(&x->mu);
  x->refs++;
  gone = x->gone;
  uv_mutex_unlock(&x->mu);
  return gone;
}

void pp__x_drop(pp_pool *pool) {
  pp__xstate *x = &pool->x;
  int last;

  uv_mutex_lock(&x->mu);
  last = --x->refs == 0;
  uv_mutex_unlock(&x->mu);
  if (last)
    pp__pool_free(pool);
}

/* How deep this thread is in callbacks of pools' loops. A thread-local: the pools may be
 * on any loops, and what matters is only whether this thread is inside one now. */
static uv_once_t pp__cbkey_once = UV_ONCE_INIT;
static uv_key_t pp__cbkey;

static void pp__cbkey_init(void) {
  if (uv_key_create(&pp__cbkey) != 0)
    abort();
}

void pp__x_cb_depth(int delta) {
  intptr_t depth;

  uv_once(&pp__cbkey_once, pp__cbkey_init);
  depth = (intptr_t) uv_key_get(&pp__cbkey) + delta;
  uv_key_set(&pp__cbkey, (void *) depth);
}

int pp__x_in_cb(void) {
  uv_once(&pp__cbkey_once, pp__cbkey_init);
  return uv_key_get(&pp__cbkey) != NULL;
}

/* ---- Who runs the core ------------------------------------------------------------- */

/* The runner: takes the core for good (once the creating thread's call in progress, if
 * any, has let it go), runs what other threads asked meanwhile, then the loop until
 * the pool's end. The thread that closed the pool joins it and releases the pool. */
static void pp__runner_main(void *arg) {
  pp_pool *pool = (pp_pool *) arg;
  pp__xstate *x = &pool->x;

  uv_mutex_lock(&x->core);
  x->core_depth++;
  uv_mutex_lock(&x->mu);
  x->runner_self = uv_thread_self();
  x->runner_known = 1;
  uv_mutex_unlock(&x->mu);
  pp__x_drain(pool);
  pp__pool_run_to_end(pool);
  x->core_depth--;
  uv_mutex_unlock(&x->core);
  uv_mutex_lock(&x->mu);
  x->finished = 1;
  uv_cond_broadcast(&x->cond);
  uv_mutex_unlock(&x->mu);
}

/* Under x.mu: starts the runner unless it exists or the pool is ending (then whoever
 * ends it runs the loop, and answers). */
static int pp__x_want_runner(pp_pool *pool) {
  pp__xstate *x = &pool->x;
  int err;

  if (x->threaded || x->closed)
    return 0;
  err = uv_thread_create(&x->runner, pp__runner_main, pool);
  if (err != 0)
    return err;
  x->threaded = 1;
  return 0;
}

static int pp__enter_core(pp_pool *pool, int want_thread);

int pp__enter(pp_pool *pool, int want_thread) {
  int mode;

  if (pp__x_hold(pool) || (mode = pp__enter_core(pool, want_thread)) == PP__AWAY)
    return PP__AWAY;
  if (mode < 0)
    pp__x_drop(pool);
  return mode;
}

void pp__leave_core(pp_pool *pool) {
  if (pool->own) {
    pool->x.core_depth--;
    uv_mutex_unlock(&pool->x.core);
  }
}

void pp__leave(pp_pool *pool) {
  pp__leave_core(pool);
  pp__x_drop(pool);
}

static int pp__enter_core(pp_pool *pool, int want_thread) {
  pp__xstate *x = &pool->x;
  uv_thread_t self = uv_thread_self();
  int here, err;

  if (!pool->own)
    return uv_thread_equal(&self, &x->owner) ? PP__HERE : PP__AWAY;
  if (uv_mutex_trylock(&x->core) == 0) {
    /* Nobody else runs the core now: this thread may, if it is the one that runs the
     * loop, or is inside the core already (a callback), whatever the runner's state. */
    uv_mutex_lock(&x->mu);
    if (x->core_depth > 0 || (x->runner_known && uv_thread_equal(&self, &x->runner_self)))
      here = 1;
    else
      here = !x->threaded && uv_thread_equal(&self, &x->owner) && !want_thread;
    err = 0;
    if (!here || want_thread)
      err = pp__x_want_runner(pool);
    if (here)
      x->seen_closed = x->closed;
    uv_mutex_unlock(&x->mu);
    if (here && err == 0) {
      x->core_depth++;
      return PP__HERE;
    }
    uv_mutex_unlock(&x->core);
    return err != 0 ? err : PP__AWAY;
  }
  uv_mutex_lock(&x->mu);
  err = pp__x_want_runner(pool);
  uv_mutex_unlock(&x->mu);
  return err != 0 ? err : PP__AWAY;
}

int pp__x_inside(pp_pool *pool) {
  pp__xstate *x = &pool->x;
  uv_thread_t self = uv_thread_self();
  int inside;

  if (!pool->own)
    return uv_thread_equal(&self, &x->owner);
  if (uv_mutex_trylock(&x->core) != 0)
    return 0;
  uv_mutex_lock(&x->mu);
  inside = x->core_depth > 0 || (x->runner_known && uv_thread_equal(&self, &x->runner_self));
  uv_mutex_unlock(&x->mu);
  uv_mutex_unlock(&x->core);
  return inside;
}

/* ---- Commands, from other threads -------------------------------------------------- */

/* Under x.mu: queues c and wakes the loop. */
static void pp__x_post(pp_pool *pool, pp__cmd *c) {
  pp__q_insert_tail(&pool->x.inbox, &c->node);
  uv_async_send(&pool->x.wake);
}

/* The answer a command gets once the pool is going: nothing is pending any more. */
static int pp__x_late_answer(pp_pool *pool, pp__cmd *c) {
  switch (c->kind) {
    case PP__C_CANCEL: return PP_ENOENT;
    case PP__C_STATS: *c->stats = pool->x.last; return 0;
    case PP__C_JOB: return c->result;
    default: return 0;
  }
}

/* Posts c and waits for its answer. The caller holds a reference (pp__enter). From a
 * callback of another pool's loop it would wait for that loop while holding up its own:
 * refused. */
static int pp__x_ask(pp_pool *pool, pp__cmd *c) {
  pp__xstate *x = &pool->x;
  int result;

  uv_mutex_lock(&x->mu);
  if (x->gone) {
    result = pp__x_late_answer(pool, c);
    uv_mutex_unlock(&x->mu);
    return result;
  }
  if (pp__x_in_cb()) {
    uv_mutex_unlock(&x->mu);
    return PP_EINVAL;
  }
  pp__x_post(pool, c);
  while (!c->replied)
    uv_cond_wait(&x->cond, &x->mu);
  result = c->result;
  uv_mutex_unlock(&x->mu);
  return result;
}

static void pp__x_reply(pp_pool *pool, pp__cmd *c, int result) {
  uv_mutex_lock(&pool->x.mu);
  c->result = result;
  c->replied = 1;
  uv_cond_broadcast(&pool->x.cond);
  uv_mutex_unlock(&pool->x.mu);
}

int pp__x_submit(pp_pool *pool, const char *task, const void *arg, size_t len,
                 pp_result_cb cb, void *user, uint64_t *id) {
  pp__xstate *x = &pool->x;
  uint32_t index;
  pp__task *t;
  pp__cmd *c;
  int err;

  err = pp__task_check(pool, task, len, &index);
  if (err != 0)
    return err;
  t = pp__task_new(pool, task, index, arg, len, cb, user, 0, NULL, 0, NULL);
  c = (pp__cmd *) calloc(1, sizeof(*c));
  if (t == NULL || c == NULL) {
    free(t);
    free(c);
    return PP_ENOMEM;
  }
  c->kind = PP__C_SUBMIT;
  c->task = t;
  uv_mutex_lock(&x->mu);
  if (x->closed || x->gone) {
    uv_mutex_unlock(&x->mu);
    free(t);
    free(c);
    return PP_ECLOSED;
  }
  t->id = pool->x_next_id++;
  if (id != NULL)
    *id = t->id;
  pp__x_post(pool, c);
  uv_mutex_unlock(&x->mu);
  return 0;
}

int pp__x_cancel(pp_pool *pool, uint64_t id) {
  pp__cmd c;

  memset(&c, 0, sizeof(c));
  c.kind = PP__C_CANCEL;
  c.id = id;
  return pp__x_ask(pool, &c);
}

int pp__x_wait(pp_pool *pool) {
  pp__cmd c;

  memset(&c, 0, sizeof(c));
  c.kind = PP__C_WAIT;
  return pp__x_ask(pool, &c);
}

int pp__x_stats(pp_pool *pool, pp_pool_stats *stats) {
  pp__cmd c;

  memset(&c, 0, sizeof(c));
  c.kind = PP__C_STATS;
  c.stats = stats;
  return pp__x_ask(pool, &c);
}

int pp__x_job(pp_pool *pool, pp__xjob_fn start, void *arg, int late) {
  pp__cmd c;

  memset(&c, 0, sizeof(c));
  c.kind = PP__C_JOB;
  c.job = start;
  c.user = arg;
  c.result = late;
  return pp__x_ask(pool, &c);
}

void pp__x_job_done(pp_pool *pool, pp__cmd *job, int result) {
  pp__x_reply(pool, job, result);
}

int pp__x_close(pp_pool *pool, int terminate, pp_close_cb cb, void *user) {
  pp__xstate *x = &pool->x;
  pp__cmd *c;
  int first;

  c = (pp__cmd *) calloc(1, sizeof(*c));
  if (c == NULL)
    return PP_ENOMEM;
  c->kind = terminate ? PP__C_TERMINATE : PP__C_CLOSE;
  c->cb = cb;
  c->user = user;
  uv_mutex_lock(&x->mu);
  if (x->gone || (terminate ? x->terminated : x->closed)) {
    uv_mutex_unlock(&x->mu);
    free(c);
    return PP_ECLOSED;
  }
  first = !x->closed;
  if (pool->own && first && x->threaded && pp__x_in_cb()) {
    /* It would wait for the pool's thread from a callback of another loop. */
    uv_mutex_unlock(&x->mu);
    free(c);
    return PP_EINVAL;
  }
  x->closed = 1;
  if (terminate)
    x->terminated = 1;
  pp__x_post(pool, c);
  /* On a caller's loop the loop's thread finishes the pool. On a private loop the first
   * call to end the pool waits for the runner to finish it, then releases it; a
   * terminate that hurries a close returns at once, as it does on the loop's thread.
   * Without a runner, the creating thread is closing the pool itself. */
  if (!pool->own || !first || !x->threaded) {
    uv_mutex_unlock(&x->mu);
    return 0;
  }
  while (!x->finished)
    uv_cond_wait(&x->cond, &x->mu);
  uv_mutex_unlock(&x->mu);
  uv_thread_join(&x->runner);
  pp__pool_finish_own(pool);
  return 0;
}

/* ---- Running commands, on the loop's thread ---------------------------------------- */

static void pp__x_run(pp_pool *pool, pp__cmd *c) {
  pp_pool_stats st;

  switch (c->kind) {
    case PP__C_SUBMIT:
      pp__task_accept(pool, c->task, c->reserved);
      free(c);
      break;
    case PP__C_CANCEL:
      pp__x_reply(pool, c, pp__cancel_core(pool, c->id));
      break;
    case PP__C_WAIT:
      if (pool->pending == 0)
        pp__x_reply(pool, c, 0);
      else
        pp__q_insert_tail(&pool->x.waits, &c->node);
      break;
    case PP__C_STATS:
      pp__stats_core(pool, &st);
      uv_mutex_lock(&pool->x.mu);
      *c->stats = st;
      uv_mutex_unlock(&pool->x.mu);
      pp__x_reply(pool, c, 0);
      break;
    case PP__C_CLOSE:
      pp__close_core(pool, c->cb, c->user);
      free(c);
      break;
    case PP__C_TERMINATE:
      pp__terminate_core(pool, c->cb, c->user);
      free(c);
      break;
    case PP__C_JOB:
      /* Answered by the work it starts, once done: c is the caller's until then. */
      c->job(pool, c, c->user);
      break;
    default:
      assert(!"unknown command");
  }
}

/* Moves the inbox's commands, in order, to list. */
static void pp__x_take(pp_pool *pool, pp__qnode *list) {
  pp__qnode *inbox = &pool->x.inbox;

  pp__q_init(list);
  if (pp__q_empty(inbox))
    return;
  list->next = inbox->next;
  list->prev = inbox->prev;
  list->next->prev = list;
  list->prev->next = list;
  pp__q_init(inbox);
}

/* One command at a time, straight from the inbox, in the order they came. Only at the top
 * of the loop: never from within a command or a callback. */
void pp__x_drain(pp_pool *pool) {
  pp__cmd *c;

  for (;;) {
    uv_mutex_lock(&pool->x.mu);
    if (pp__q_empty(&pool->x.inbox)) {
      uv_mutex_unlock(&pool->x.mu);
      return;
    }
    c = PP__CONTAINER_OF(pp__q_head(&pool->x.inbox), pp__cmd, node);
    pp__q_remove(&c->node);
    uv_mutex_unlock(&pool->x.mu);
    pp__x_run(pool, c);
  }
}

int pp__x_reserve(pp_pool *pool) {
  pp__qnode *q;
  int n = 0;

  uv_mutex_lock(&pool->x.mu);
  for (q = pp__q_head(&pool->x.inbox); q != &pool->x.inbox; q = q->next) {
    pp__cmd *c = PP__CONTAINER_OF(q, pp__cmd, node);
    if (c->kind == PP__C_SUBMIT && !c->reserved) {
      c->reserved = 1;
      n++;
    }
  }
  uv_mutex_unlock(&pool->x.mu);
  return n;
}

pp__task *pp__x_take_submit(pp_pool *pool, uint64_t id, int *reserved) {
  pp__task *t = NULL;
  pp__qnode *q;

  uv_mutex_lock(&pool->x.mu);
  for (q = pp__q_head(&pool->x.inbox); q != &pool->x.inbox; q = q->next) {
    pp__cmd *c = PP__CONTAINER_OF(q, pp__cmd, node);
    if (c->kind == PP__C_SUBMIT && c->task->id == id) {
      pp__q_remove(&c->node);
      t = c->task;
      *reserved = c->reserved;
      free(c);
      break;
    }
  }
  uv_mutex_unlock(&pool->x.mu);
  return t;
}

void pp__x_pending_zero(pp_pool *pool) {
  while (pool->pending == 0 && !pp__q_empty(&pool->x.waits)) {
    pp__cmd *c = PP__CONTAINER_OF(pp__q_head(&pool->x.waits), pp__cmd, node);
    pp__q_remove(&c->node);
    pp__x_reply(pool, c, 0);
  }
}

/* A task submitted from another thread that the pool never took: it still gets its one
 * outcome. (The close refuses submits before it runs, so this is a safety net.) */
static void pp__x_refuse(pp_pool *pool, pp__task *t) {
  pp_result r;

  memset(&r, 0, sizeof(r));
  r.id = t->id;
  r.status = PP_ECLOSED;
  r.message = pp__strdupf("task '%s' (id %llu) was not run: the pool was closed", t->name,
                          (unsigned long long) t->id);
  if (t->cb != NULL) {
    pp__x_cb_depth(1);
    t->cb(pool, &r, t->user);
    pp__x_cb_depth(-1);
  }
  pp_result_free(&r);
  free(t);
}

void pp__x_end(pp_pool *pool) {
  pp__xstate *x = &pool->x;
  pp__qnode list;
  pp_pool_stats st;

  pp__stats_core(pool, &st);
  uv_mutex_lock(&x->mu);
  x->gone = 1;
  x->last = st;
  pp__x_take(pool, &list);
  uv_mutex_unlock(&x->mu);
  while (!pp__q_empty(&list)) {
    pp__cmd *c = PP__CONTAINER_OF(pp__q_head(&list), pp__cmd, node);
    pp__q_remove(&c->node);
    switch (c->kind) {
      case PP__C_SUBMIT:
        pp__x_refuse(pool, c->task);
        free(c);
        break;
      case PP__C_CLOSE:
      case PP__C_TERMINATE:
        /* Accepted as a hurry or a second end that lost the race: its callback still
         * runs once, with the pool's release. */
        if (c->kind == PP__C_CLOSE && pool->close_cb == NULL) {
          pool->close_cb = c->cb;
          pool->close_user = c->user;
        } else if (c->kind == PP__C_TERMINATE && pool->term_cb == NULL) {
          pool->term_cb = c->cb;
          pool->term_user = c->user;
        }
        free(c);
        break;
      default:
        uv_mutex_lock(&x->mu);
        c->result = pp__x_late_answer(pool, c);
        c->replied = 1;
        uv_cond_broadcast(&x->cond);
        uv_mutex_unlock(&x->mu);
        break;
    }
  }
  pp__x_pending_zero(pool);
  if (x->wake_open)
    uv_close((uv_handle_t *) &x->wake, pp__x_on_wake_closed);
}
