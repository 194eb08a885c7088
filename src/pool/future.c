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
#include "../shared/registry.h"
#include "stream.h"
#include "threads.h"

typedef struct pp__fwaiter {
  uv_cond_t cond;
  uv_async_t *wake;        /* while this thread runs a loop instead of sleeping, or NULL */
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
    /* A waiter that runs its own loop sleeps in that loop's poll, not on its condition:
     * a future of a pool on another thread must wake the poll. */
    if (n->w->wake != NULL)
      uv_async_send(n->w->wake);
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

  /* In a worker, a copy of a parent's future under fork: its lock may have been held by
   * another thread of the parent at the fork. */
  if (future == NULL || pp__in_worker())
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

  /* A copy of a parent's future, under fork, is the parent's to free. */
  if (future == NULL || pp__in_worker())
    return;
  pp__fut_lock();
  last = --future->refs == 0;
  pp__fut_unlock();
  if (last)
    pp__fut_release(future);
}

/* What a wait that runs a caller's loop keeps on that loop: a wake-up that the futures
 * it waits for send when they are done on another thread, and a timer for its limit.
 * Both are unreferenced: they never keep the loop alive, so a loop that has nothing else
 * left (its pool's handles closed) is seen to be dry rather than waited on. */
typedef struct pp__fut_loopw {
  uv_async_t wake;
  uv_timer_t timer;
  uv_loop_t *loop;
  int open;                /* handles still to be closed */
} pp__fut_loopw;

static void pp__fut_on_wake(uv_async_t *h) { (void) h; }

static void pp__fut_on_timer(uv_timer_t *timer) { (void) timer; }

static void pp__fut_on_closed(uv_handle_t *h) {
  pp__fut_loopw *lw = (pp__fut_loopw *) h->data;

  if (--lw->open == 0)
    free(lw);
}

static pp__fut_loopw *pp__fut_loopw_new(uv_loop_t *loop) {
  pp__fut_loopw *lw = (pp__fut_loopw *) calloc(1, sizeof(*lw));

  if (lw == NULL)
    return NULL;
  if (uv_async_init(loop, &lw->wake, pp__fut_on_wake) != 0) {
    free(lw);
    return NULL;
  }
  uv_timer_init(loop, &lw->timer);
  lw->wake.data = lw;
  lw->timer.data = lw;
  lw->loop = loop;
  lw->open = 2;
  uv_unref((uv_handle_t *) &lw->wake);
  uv_unref((uv_handle_t *) &lw->timer);
  return lw;
}

static void pp__fut_loopw_close(pp__fut_loopw *lw) {
  uv_close((uv_handle_t *) &lw->wake, pp__fut_on_closed);
  uv_close((uv_handle_t *) &lw->timer, pp__fut_on_closed);
}

/* The longest single sleep, in nanoseconds (a day): uv_cond_timedwait adds its timeout
 * to the clock on Unix and converts it to a 32-bit count of milliseconds on Windows, so
 * a longer wait is slept in slices. */
#define PP__FUT_SLICE_NS ((uint64_t) 86400 * 1000000000u)

/* uv_hrtime() + ms milliseconds, or UINT64_MAX where that is past what 64 bits of
 * nanoseconds hold (some 584 years): INT64_MAX is a limit, not an overflow. */
static uint64_t pp__fut_deadline(int64_t ms) {
  uint64_t now = uv_hrtime();

  if ((uint64_t) ms > (UINT64_MAX - now) / 1000000u)
    return UINT64_MAX;
  return now + (uint64_t) ms * 1000000u;
}

static void pp__fut_link(pp_future *const *futures, size_t n, pp__fnode *nodes,
                         pp__fwaiter *w) {
  size_t i;

  w->fired = 0;
  for (i = 0; i < n; i++) {
    nodes[i].w = w;
    pp__q_insert_tail(&futures[i]->waiters, &nodes[i].link);
  }
}

static void pp__fut_unlink(size_t n, pp__fnode *nodes) {
  size_t i;

  for (i = 0; i < n; i++)
    pp__q_remove(&nodes[i].link);
}

int pp_future_wait_any(pp_future *const *futures, size_t n, int64_t timeout_ms,
                       size_t *index) {
  pp__fnode stack_nodes[8], *nodes = stack_nodes;
  pp__fwaiter w;
  pp__fut_loopw *lw = NULL;
  uv_loop_t *dry = NULL;
  uint64_t deadline = UINT64_MAX, now;
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
  w.wake = NULL;
  if (timeout_ms > 0)
    deadline = pp__fut_deadline(timeout_ms);
  pp__fut_lock();
  for (;;) {
    pp_pool *loop_pool = NULL;
    size_t others = 0;
    uint64_t left;
    int alive;

    for (i = 0; i < n && !futures[i]->done; i++)
      ;
    if (i < n) {
      if (index != NULL)
        *index = i;
      break;
    }
    now = uv_hrtime();
    if (timeout_ms == 0 || now >= deadline) {
      err = PP_ETIMEDOUT;
      break;
    }
    left = deadline - now;
    if (left > PP__FUT_SLICE_NS)
      left = PP__FUT_SLICE_NS;
    /* A future whose pool's loop is run by this very thread comes only if this thread
     * runs that loop: it does, when it may (a caller's loop, outside its callbacks), and
     * until that loop has nothing left to run. The others come from other threads. */
    for (i = 0; i < n; i++) {
      pp_pool *p = futures[i]->pool;
      if (!pp__x_inside(p))
        others++;
      else if (loop_pool == NULL && p->loop != dry)
        loop_pool = p;
    }
    if (loop_pool == NULL && others == 0) {
      /* As pp_pool_wait: the loop ran dry with the task pending (its handles were
       * closed), so waiting longer would never end. */
      err = PP_ECLOSED;
      break;
    }
    if (loop_pool == NULL) {
      pp__fut_link(futures, n, nodes, &w);
      while (!w.fired && uv_cond_timedwait(&w.cond, &pp__fut_mu, left) == 0) {
        now = uv_hrtime();
        if (now >= deadline)
          break;
        left = deadline - now;
        if (left > PP__FUT_SLICE_NS)
          left = PP__FUT_SLICE_NS;
      }
      pp__fut_unlink(n, nodes);
      continue;
    }
    if (loop_pool->own || loop_pool->cb_depth > 0) {
      err = PP_EINVAL;
      break;
    }
    if (lw != NULL && lw->loop != loop_pool->loop) {
      pp__fut_loopw_close(lw);
      lw = NULL;
    }
    if (lw == NULL && (lw = pp__fut_loopw_new(loop_pool->loop)) == NULL) {
      err = PP_ENOMEM;
      break;
    }
    /* Linked before the lock is let go: a future done from now on wakes the loop. The
     * pool is not touched after the run, which may end it. */
    pp__fut_link(futures, n, nodes, &w);
    w.wake = &lw->wake;
    pp__fut_unlock();
    uv_timer_start(&lw->timer, pp__fut_on_timer, (left + 999999) / 1000000, 0);
    alive = uv_run(lw->loop, UV_RUN_ONCE);
    uv_timer_stop(&lw->timer);
    pp__fut_lock();
    pp__fut_unlink(n, nodes);
    w.wake = NULL;
    if (alive)
      continue;
    /* A pool whose future is pending is alive, and only this thread could end it. */
    dry = lw->loop;
    for (i = 0; i < n; i++) {
      pp_pool *p = futures[i]->pool;
      if (p != NULL && p->loop == dry) {
        pp__fut_unlock();
        pp__marr_dry_all(p);
        pp__fut_lock();
      }
    }
  }
  pp__fut_unlock();
  if (lw != NULL)
    pp__fut_loopw_close(lw);
  uv_cond_destroy(&w.cond);
  if (nodes != stack_nodes)
    free(nodes);
  return err;
}

int pp_future_wait(pp_future *future, int64_t timeout_ms) {
  size_t index;

  return pp_future_wait_any(&future, 1, timeout_ms, &index);
}
