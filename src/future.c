/* Futures: a task's outcome that any thread may wait for, and that outlives its pool.
 *
 * A future is shared by its owner (who frees it) and its task (whose callback fills it
 * on the loop's thread), so it is counted twice and freed by the last of the two. Every
 * future's state is guarded by one process-wide lock: waiting on several futures (of
 * several pools) at once then needs no lock order, and the lock is held only for a few
 * stores. A waiter sleeps on a condition of its own, linked into each future it waits on,
 * so a result wakes only the threads that wait for it. */
#include <stdlib.h>
#include <string.h>

#include "future.h"
#include "serve.h"
#include "threads.h"

typedef struct pp__fwaiter {
  uv_cond_t cond;
  int fired;
} pp__fwaiter;

/* A waiter's link into one future's list. */
typedef struct pp__fnode {
  pp__qnode link;
  pp__fwaiter *w;
} pp__fnode;

struct pp_future {
  pp__qnode waiters;       /* pp__fnode */
  pp_pool *pool;           /* until done: the pool is alive while its task is pending */
  uint64_t id;             /* set before the future is shared, then read-only */
  int done;
  int refs;                /* the owner's and the task's */
  pp_result result;
};

static uv_once_t pp__fut_once = UV_ONCE_INIT;
static uv_mutex_t pp__fut_mu;

static void pp__fut_init_once(void) {
  if (uv_mutex_init(&pp__fut_mu) != 0)
    abort();
}

static void pp__fut_lock(void) {
  uv_once(&pp__fut_once, pp__fut_init_once);
  uv_mutex_lock(&pp__fut_mu);
}

static void pp__fut_unlock(void) { uv_mutex_unlock(&pp__fut_mu); }

static void pp__fut_release(pp_future *f) {
  pp_result_free(&f->result);
  free(f);
}

/* The task's callback, on the loop's thread. */
static void pp__future_cb(pp_pool *pool, pp_result *r, void *user) {
  pp_future *f = (pp_future *) user;
  pp__qnode *q;
  int last;

  (void) pool;
  pp__fut_lock();
  f->result = *r;
  r->data = NULL;
  r->message = NULL;
  f->done = 1;
  f->pool = NULL;
  for (q = pp__q_head(&f->waiters); q != &f->waiters; q = q->next) {
    pp__fnode *n = PP__CONTAINER_OF(q, pp__fnode, link);
    n->w->fired = 1;
    uv_cond_signal(&n->w->cond);
  }
  last = --f->refs == 0;
  pp__fut_unlock();
  if (last)
    pp__fut_release(f);
}

int pp_submit_future(pp_pool *pool, const char *task, const void *arg, size_t len,
                     pp_future **future) {
  pp_future *f;
  int mode, err;

  if (future == NULL)
    return PP_EINVAL;
  *future = NULL;
  if (pool == NULL || task == NULL || (arg == NULL && len > 0) || pp__in_worker())
    return PP_EINVAL;
  uv_once(&pp__fut_once, pp__fut_init_once);
  f = (pp_future *) calloc(1, sizeof(*f));
  if (f == NULL)
    return PP_ENOMEM;
  pp__q_init(&f->waiters);
  f->pool = pool;
  f->refs = 2;
  /* A future may be waited for from any thread, which must not have to run a private
   * loop: the pool's own thread runs it from the first future on. */
  mode = pp__enter(pool, 1);
  if (mode < 0) {
    free(f);
    return mode;
  }
  if (mode == PP__AWAY) {
    err = pp__x_submit(pool, task, arg, len, pp__future_cb, f, &f->id);
    pp__x_drop(pool);
  } else {
    err = pp__submit(pool, task, arg, len, pp__future_cb, f, &f->id, NULL, NULL, 0, NULL);
    pp__leave(pool);
  }
  if (err != 0) {
    free(f);
    return err;
  }
  *future = f;
  return 0;
}

uint64_t pp_future_id(const pp_future *future) { return future ? future->id : 0; }

const pp_result *pp_future_result(const pp_future *future) {
  const pp_result *r;

  if (future == NULL)
    return NULL;
  pp__fut_lock();
  r = future->done ? &future->result : NULL;
  pp__fut_unlock();
  return r;
}

int pp__future_take(pp_future *future, pp_result *out) {
  int done;

  pp__fut_lock();
  done = future->done;
  if (done) {
    *out = future->result;
    memset(&future->result, 0, sizeof(future->result));
    out->id = future->id;
  }
  pp__fut_unlock();
  return done ? 0 : PP_EINVAL;
}

int pp_future_cancel(pp_future *future) {
  pp_pool *pool;
  uint64_t id;
  int mode, err;

  if (future == NULL || pp__in_worker())
    return PP_EINVAL;
  pp__fut_lock();
  if (future->done) {
    pp__fut_unlock();
    return PP_ENOENT;
  }
  /* The pool is alive while the task is pending, and the task cannot be decided while
   * this thread holds the futures' lock: pp__enter takes a reference on the pool before
   * the lock goes, so that it stays alive through this call. */
  pool = future->pool;
  id = future->id;
  mode = pp__enter(pool, 0);
  if (mode == PP__HERE) {
    pp__fut_unlock();
    err = pp__cancel_core(pool, id);
    pp__leave(pool);
    return err;
  }
  if (mode < 0) {
    pp__fut_unlock();
    return mode;
  }
  pp__fut_unlock();
  err = pp__x_cancel(pool, id);
  pp__x_drop(pool);
  return err;
}

void pp_future_free(pp_future *future) {
  int last;

  if (future == NULL)
    return;
  pp__fut_lock();
  last = --future->refs == 0;
  pp__fut_unlock();
  if (last)
    pp__fut_release(future);
}

/* Runs a caller's loop once, for at most ms milliseconds (negative: no limit), on the
 * thread that runs it: the only way its futures can come while that thread waits. */
static void pp__fut_on_timer(uv_timer_t *timer) { (void) timer; }

static void pp__fut_on_timer_closed(uv_handle_t *h) { free(h); }

static void pp__fut_run_loop(pp_pool *pool, uv_timer_t **timer, int64_t ms) {
  if (ms >= 0) {
    if (*timer != NULL && (*timer)->loop != pool->loop) {
      uv_close((uv_handle_t *) *timer, pp__fut_on_timer_closed);
      *timer = NULL;
    }
    if (*timer == NULL) {
      *timer = (uv_timer_t *) malloc(sizeof(**timer));
      if (*timer != NULL)
        uv_timer_init(pool->loop, *timer);
    }
    /* Without a timer (out of memory) the wait may overrun its limit until the next
     * event; it never spins. */
    if (*timer != NULL)
      uv_timer_start(*timer, pp__fut_on_timer, (uint64_t) ms, 0);
  }
  pool->blocking++;
  uv_run(pool->loop, UV_RUN_ONCE);
  pool->blocking--;
}

int pp_future_wait_any(pp_future *const *futures, size_t n, int64_t timeout_ms,
                       size_t *index) {
  pp__fnode stack_nodes[8], *nodes = stack_nodes;
  pp__fwaiter w;
  uv_timer_t *timer = NULL;
  pp_pool *loop_pool = NULL;
  uint64_t deadline = 0, now;
  size_t i;
  int err = 0;

  if (futures == NULL || n == 0 || pp__in_worker())
    return PP_EINVAL;
  for (i = 0; i < n; i++)
    if (futures[i] == NULL)
      return PP_EINVAL;
  if (n > sizeof(stack_nodes) / sizeof(stack_nodes[0])) {
    nodes = (pp__fnode *) malloc(n * sizeof(*nodes));
    if (nodes == NULL)
      return PP_ENOMEM;
  }
  if (uv_cond_init(&w.cond) != 0) {
    if (nodes != stack_nodes)
      free(nodes);
    return PP_ENOMEM;
  }
  if (timeout_ms > 0)
    deadline = uv_hrtime() + (uint64_t) timeout_ms * 1000000u;
  pp__fut_lock();
  for (;;) {
    int64_t left = -1;

    for (i = 0; i < n && !futures[i]->done; i++)
      ;
    if (i < n) {
      if (index != NULL)
        *index = i;
      break;
    }
    now = uv_hrtime();
    if (timeout_ms == 0 || (timeout_ms > 0 && now >= deadline)) {
      err = PP_ETIMEDOUT;
      break;
    }
    if (timeout_ms > 0)
      left = (int64_t) (deadline - now);
    /* A future whose pool's loop is run by this very thread comes only if this thread
     * runs that loop: it does, when it may (a caller's loop, outside its callbacks). */
    loop_pool = NULL;
    for (i = 0; i < n && loop_pool == NULL; i++)
      if (pp__x_inside(futures[i]->pool))
        loop_pool = futures[i]->pool;
    if (loop_pool != NULL) {
      if (loop_pool->own || loop_pool->cb_depth > 0) {
        err = PP_EINVAL;
        break;
      }
      pp__fut_unlock();
      pp__fut_run_loop(loop_pool, &timer, left < 0 ? -1 : (left + 999999) / 1000000);
      pp__fut_lock();
      continue;
    }
    w.fired = 0;
    for (i = 0; i < n; i++) {
      nodes[i].w = &w;
      pp__q_insert_tail(&futures[i]->waiters, &nodes[i].link);
    }
    while (!w.fired) {
      if (left < 0) {
        uv_cond_wait(&w.cond, &pp__fut_mu);
      } else if (uv_cond_timedwait(&w.cond, &pp__fut_mu, (uint64_t) left) != 0) {
        break;
      } else {
        now = uv_hrtime();
        left = now >= deadline ? 0 : (int64_t) (deadline - now);
        if (left == 0)
          break;
      }
    }
    for (i = 0; i < n; i++)
      pp__q_remove(&nodes[i].link);
  }
  pp__fut_unlock();
  if (timer != NULL)
    uv_close((uv_handle_t *) timer, pp__fut_on_timer_closed);
  uv_cond_destroy(&w.cond);
  if (nodes != stack_nodes)
    free(nodes);
  return err;
}

int pp_future_wait(pp_future *future, int64_t timeout_ms) {
  size_t index;

  return pp_future_wait_any(&future, 1, timeout_ms, &index);
}
