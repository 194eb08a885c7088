/* The many-thread model test (issue 22): 2 to 8 threads and 1 to 3 pools, drawn from a
 * seed, make random calls: pp_submit, pp_submit_future, pp_future_wait,
 * pp_future_wait_any over futures of several pools, pp_future_cancel, pp_cancel,
 * pp_apply, pp_map, pp_map_array, pp_map_stream, pp_pool_stats_get, outside kills of
 * workers (Linux), and pp_pool_close / pp_pool_terminate from any thread and from result
 * callbacks; result callbacks call into their own pool and into the others. The pools are
 * private-loop ones and at most one on a caller's loop, which the main thread runs. Tasks
 * are test-model.c's "model" tasks: they succeed, fail, crash, exit, kill themselves or
 * hang past task_timeout_ms. The checks:
 *   - every accepted task gets exactly one outcome, of a status the header allows for what
 *     it did and what was done to its pool; a success carries its own bytes;
 *   - every task ran at most once, and one that a call refused never ran (the run log of
 *     test-model.c);
 *   - every call returns: a watchdog bounds the whole run, scaled with test_scale_ms;
 *   - nothing is left: every future is done once its pool has ended, the caller's loop
 *     closes (valgrind and the sanitizers see the rest).
 * A pool's end is asked for by any thread or callback, and made, by whoever is last to
 * leave the pool, once no thread is in a call on it: the header lets no call start after
 * the end. Which thread makes which call when varies with timing; the seed fixes the
 * threads, pools and each thread's sequence of choices.
 *
 * Fixed seeds run by default. By hand: PROCPOOL_XMODEL_SEED (one seed, or the first of
 * PROCPOOL_XMODEL_RUNS consecutive ones) and PROCPOOL_XMODEL_OPS (operations per run,
 * shared among its threads). A failure prints the seed and the command that reruns it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#ifndef _WIN32
#  include <signal.h>
#endif

#define XM_MAX_POOLS 3
#define XM_MAX_THREADS 8
#define XM_MAX_TASKS 20000
#define XM_MAX_FUTURES 12
#define XM_MAX_PIDS 16
#define XM_PLEN_MAX 200
#define XM_ARRAY_PLEN 8
#define XM_BOUND_MS 120000  /* the watchdog's bound on a run, scaled */
#define XM_OPS 120

enum { XM_SUBMIT, XM_FUTURE, XM_APPLY, XM_MAP, XM_ARRAY, XM_STREAM };
static const char *const xm_how[] = { "submit", "future", "apply", "map item",
                                      "map_array item", "stream item" };
enum { XM_END_NONE, XM_END_CLOSE, XM_END_TERM };

typedef struct xm_task {
  uint64_t id;
  uint32_t plen, param;
  unsigned char kind, pool, how, refused;
  unsigned char cancel_asked, abandoned;
  int outcomes;
  int status;
} xm_task;

typedef struct xm_pool {
  pp_pool *pool;
  int caller;
  uint64_t timeout;
  int users;          /* threads in (or about to make) a call on it */
  int end_req;        /* XM_END_*: asked for */
  int end_issued;     /* pp_pool_close / pp_pool_terminate returned 0 */
  int gone;           /* its close callback ran */
  int term_asked;     /* a terminate was made: pending tasks may be canceled */
  int disturbed;      /* a cancel or an outside kill: other tasks may die with a worker */
  uint64_t pids[XM_MAX_PIDS];
  size_t npids;
} xm_pool;

/* This thread's place: inside a callback of `self`'s loop (a result callback, or each()
 * of a stream on it), or not. */
typedef struct xm_ctx {
  xm_pool *self;
  int tid;
} xm_ctx;

typedef struct xm_thread {
  int tid;
  uint64_t rng;
  int ops;
  uv_thread_t thread;
  pp_future *fut[XM_MAX_FUTURES];
  size_t ftask[XM_MAX_FUTURES];
  size_t nfut;
  int done;
  const char *op;
} xm_thread;

static struct {
  uv_mutex_t mu;
  uv_key_t key;
  uint64_t seed;
  int ops;
  int npools, nthreads;
  xm_pool pools[XM_MAX_POOLS];
  xm_thread threads[XM_MAX_THREADS];
  xm_task *t;
  size_t nt;
  uint32_t *runs;
  test_model_log log;
  uv_loop_t loop;
  uv_timer_t tick;
  unsigned long warnings;
  /* The watchdog. */
  uv_thread_t wd;
  uv_cond_t wd_cond;
  int wd_stop;
  /* Counts, for the summary. */
  unsigned long n_ops[16], by_status[8], cb_actions, einval_cb, kills;
} xm;

static uint64_t xm_next(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

  z = (z ^ (z >> 33)) * 0xFF51AFD7ED558CCDull;
  z = (z ^ (z >> 33)) * 0xC4CEB9FE1A85EC53ull;
  return z ^ (z >> 33);
}

static unsigned xm_rnd(uint64_t *s, unsigned n) { return (unsigned) (xm_next(s) % n); }

static void xm_fail(const char *fmt, ...) PP_PRINTF(1, 2);

static void xm_describe(FILE *f) {
  char exe[1024];
  size_t n = sizeof(exe);
  int i;

  if (uv_exepath(exe, &n) != 0)
    snprintf(exe, sizeof(exe), "run-tests");
  fprintf(f, "  run: seed=0x%llx method=%s threads=%d pools=%d ops=%d\n",
          (unsigned long long) xm.seed, pp_start_method_name(test_method), xm.nthreads,
          xm.npools, xm.ops);
  for (i = 0; i < xm.npools; i++)
    fprintf(f, "  pool %d: %s loop, timeout %llu ms, end %s%s\n", i,
            xm.pools[i].caller ? "caller's" : "private",
            (unsigned long long) xm.pools[i].timeout,
            xm.pools[i].end_req == XM_END_TERM ? "terminate"
            : xm.pools[i].end_req == XM_END_CLOSE ? "close" : "none",
            xm.pools[i].gone ? " (gone)" : xm.pools[i].end_issued ? " (made)" : "");
  fprintf(f, "  run log: %s\n  rerun: PROCPOOL_XMODEL_SEED=0x%llx PROCPOOL_XMODEL_OPS=%d "
          "%s xmodel %s\n", xm.log.path, (unsigned long long) xm.seed, xm.ops, exe,
          pp_start_method_name(test_method));
}

/* A broken promise: says what, and how to rerun it, and ends the process at once (other
 * threads are still in calls). */
static void xm_fail(const char *fmt, ...) {
  va_list ap;

  fflush(stdout);
  fprintf(stderr, "xmodel: VIOLATION: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  xm_describe(stderr);
  fflush(stderr);
  _Exit(1);
}

static void xm_count(unsigned long *n) {
  uv_mutex_lock(&xm.mu);
  (*n)++;
  uv_mutex_unlock(&xm.mu);
}

static xm_ctx *xm_here(void) { return (xm_ctx *) uv_key_get(&xm.key); }

static const char *xm_desc(const xm_task *t) {
  static char buf[160];

  snprintf(buf, sizeof(buf), "%s task (%s, nonce %llu, pool %u)", test_model_kind_names[t->kind],
           xm_how[t->how], (unsigned long long) (t - xm.t + 1), (unsigned) t->pool);
  return buf;
}

/* ---- The watchdog: a bound on the whole run ------------------------------------------ */

static void xm_wd_main(void *arg) {
  uint64_t bound = test_scale_ms(XM_BOUND_MS) * 1000000ull, start = uv_hrtime();
  int i;

  (void) arg;
  uv_mutex_lock(&xm.mu);
  while (!xm.wd_stop) {
    uint64_t now = uv_hrtime();
    if (now - start >= bound)
      break;
    uv_cond_timedwait(&xm.wd_cond, &xm.mu, bound - (now - start));
  }
  if (!xm.wd_stop) {
    fprintf(stderr, "xmodel: VIOLATION: the run did not end within %llu ms (a hang); the "
            "threads' calls:\n", (unsigned long long) (bound / 1000000ull));
    for (i = 0; i < xm.nthreads; i++)
      fprintf(stderr, "  thread %d: %s\n", i,
              xm.threads[i].done ? "done" : xm.threads[i].op ? xm.threads[i].op : "-");
    xm_describe(stderr);
    fflush(stderr);
    _Exit(1);
  }
  uv_mutex_unlock(&xm.mu);
}

static void xm_op(xm_thread *th, const char *op) {
  uv_mutex_lock(&xm.mu);
  th->op = op;
  xm.n_ops[0]++;
  uv_mutex_unlock(&xm.mu);
}

/* ---- Tasks, outcomes ----------------------------------------------------------------- */

/* Kinds by weight; a hang only where a timeout ends it. */
static unsigned xm_kind(uint64_t *rng, const xm_pool *p) {
  static const int w[TEST_MK_N] = { 50, 10, 14, 3, 3, 3, 3, 2 };
  int r = (int) xm_rnd(rng, 88), k;

  for (k = 0; k < TEST_MK_N - 1 && r >= w[k]; k++)
    r -= w[k];
  if (k == TEST_MK_HANG && p->timeout == 0)
    k = TEST_MK_OK;
  return (unsigned) k;
}

/* A new task, under xm.mu; NULL when the run has made as many as it may. */
static xm_task *xm_new(uint64_t *rng, int pool, int how, unsigned kind, uint32_t plen) {
  xm_task *t;

  uint32_t param = kind == TEST_MK_SLOW ? 2 + xm_rnd(rng, 30) : 0;

  /* Under the lock: pp_cancel's choice, on other threads, reads the fields. */
  uv_mutex_lock(&xm.mu);
  t = xm.nt < XM_MAX_TASKS ? &xm.t[xm.nt++] : NULL;
  if (t != NULL) {
    t->kind = (unsigned char) kind;
    t->pool = (unsigned char) pool;
    t->how = (unsigned char) how;
    t->plen = plen;
    t->param = param;
  }
  uv_mutex_unlock(&xm.mu);
  return t;
}

static uint64_t xm_nonce(const xm_task *t) { return (uint64_t) (t - xm.t) + 1; }

static size_t xm_arg(const xm_task *t, unsigned char *buf) {
  return test_model_arg(t->kind, t->param, xm_nonce(t), t->plen, buf);
}

/* Records t's outcome: one only, of a status that the header allows. closed_ok: the
 * pool's end was made before the call that ran t (an item may then be refused). */
static void xm_outcome(xm_task *t, int status, const void *data, size_t len,
                       const char *msg, int closed_ok) {
  xm_pool *p = &xm.pools[t->pool];
  const char *m = msg ? msg : "(no message)";
  uint64_t pid = 0;
  char want[48];
  int ok;

  uv_mutex_lock(&xm.mu);
  if (++t->outcomes > 1)
    xm_fail("%s: a second outcome (%s after %s)", xm_desc(t), pp_errname(status),
            pp_errname(t->status));
  t->status = status;
  xm.by_status[status == 0 ? 0 : status == PP_ETASK ? 1 : status == PP_EWORKER ? 2
               : status == PP_ETIMEDOUT ? 3 : status == PP_ECANCELED ? 4
               : status == PP_ECLOSED ? 5 : 6]++;
  if (status != 0 && (msg == NULL || msg[0] == '\0'))
    xm_fail("%s: %s without a message", xm_desc(t), pp_errname(status));
  switch (status) {
    case 0: {
      const char *bad;
      if (t->kind != TEST_MK_OK && t->kind != TEST_MK_SLOW)
        xm_fail("%s: succeeded", xm_desc(t));
      bad = test_model_check_reply(xm_nonce(t), t->plen, data, len, &pid);
      if (bad != NULL)
        xm_fail("%s: %s (%zu bytes)", xm_desc(t), bad, len);
      if (p->npids < XM_MAX_PIDS)
        p->pids[p->npids++] = pid;
      else
        p->pids[xm_nonce(t) % XM_MAX_PIDS] = pid;
      ok = 1;
      break;
    }
    case PP_ETASK:
      snprintf(want, sizeof(want), "nonce=%llu", (unsigned long long) xm_nonce(t));
      /* pp_map_array keeps no messages. */
      ok = t->kind == TEST_MK_FAIL && (t->how == XM_ARRAY || strstr(m, want) != NULL);
      break;
    case PP_EWORKER:
      /* A crash of its own; or its worker killed under it: from outside, for a cancel,
       * a timeout (of any task, since a task of any kind may time out on a busy
       * machine) or a terminate. */
      ok = (t->kind >= TEST_MK_ABORT && t->kind <= TEST_MK_SELFKILL) || p->disturbed ||
           p->timeout > 0 || p->term_asked;
      break;
    case PP_ETIMEDOUT:
      ok = p->timeout > 0;
      break;
    case PP_ECANCELED:
      ok = t->cancel_asked || p->term_asked;
      break;
    case PP_ECLOSED:
      ok = closed_ok && t->how != XM_SUBMIT && t->how != XM_FUTURE;
      break;
    default:
      ok = 0;
  }
  if (!ok)
    xm_fail("%s: ended with %s, not an outcome the header allows for it (cancel asked %d, "
            "terminate %d, kills or cancels in its pool %d): %s", xm_desc(t),
            pp_errname(status), t->cancel_asked, p->term_asked, p->disturbed, m);
  uv_mutex_unlock(&xm.mu);
}

/* ---- Entering a pool: no call starts after its end ----------------------------------- */

/* 1 when this thread may call pool i now (and then must xm_leave): the pool's end has not
 * been asked for, or this thread is inside a callback of that pool, which the end cannot
 * pass. */
static int xm_enter(int i) {
  xm_pool *p = &xm.pools[i];
  xm_ctx *c = xm_here();
  int ok;

  uv_mutex_lock(&xm.mu);
  ok = !p->gone && (p->end_req == XM_END_NONE || (c != NULL && c->self == p));
  if (ok)
    p->users++;
  uv_mutex_unlock(&xm.mu);
  return ok;
}

static void xm_end_cb(void *user) {
  xm_pool *p = (xm_pool *) user;

  uv_mutex_lock(&xm.mu);
  if (p->gone)
    xm_fail("pool %d: a second close callback", (int) (p - xm.pools));
  p->gone = 1;
  uv_mutex_unlock(&xm.mu);
}

/* Makes the end of pool i that was asked for, if no thread is in a call on it. From a
 * callback where the header refuses it (PP_EINVAL), it is left for later. */
static void xm_try_end(int i) {
  xm_pool *p = &xm.pools[i];
  xm_ctx *c = xm_here();
  int kind, err;

  uv_mutex_lock(&xm.mu);
  kind = p->end_req;
  if (kind == XM_END_NONE || p->end_issued || p->users > 0 || p->gone) {
    uv_mutex_unlock(&xm.mu);
    return;
  }
  p->end_issued = 1;
  p->users++;
  if (kind == XM_END_TERM)
    p->term_asked = 1;
  uv_mutex_unlock(&xm.mu);
  err = kind == XM_END_TERM ? pp_pool_terminate(p->pool, xm_end_cb, p)
                            : pp_pool_close(p->pool, xm_end_cb, p);
  uv_mutex_lock(&xm.mu);
  p->users--;
  if (err == PP_EINVAL && c != NULL) {
    p->end_issued = 0;
    xm.einval_cb++;
  } else if (err != 0) {
    xm_fail("pp_pool_%s of pool %d returned %s, want 0%s", kind == XM_END_TERM ?
            "terminate" : "close", i, pp_errname(err), c ? " or PP_EINVAL" : "");
  } else if (!p->caller && c == NULL && !p->gone) {
    xm_fail("pp_pool_%s of private pool %d returned before its callback ran",
            kind == XM_END_TERM ? "terminate" : "close", i);
  }
  uv_mutex_unlock(&xm.mu);
}

static void xm_leave(int i) {
  int last;

  uv_mutex_lock(&xm.mu);
  last = --xm.pools[i].users == 0 && xm.pools[i].end_req != XM_END_NONE;
  uv_mutex_unlock(&xm.mu);
  if (last)
    xm_try_end(i);
}

static void xm_ask_end(int i, int kind) {
  uv_mutex_lock(&xm.mu);
  if (xm.pools[i].end_req == XM_END_NONE)
    xm.pools[i].end_req = kind;
  uv_mutex_unlock(&xm.mu);
}

/* ---- The calls ----------------------------------------------------------------------- */

static void xm_cb(pp_pool *pool, pp_result *r, void *user);

/* pp_submit on pool i (entered): 0, or PP_ECLOSED once its end was made (which only a
 * callback of its own can see). */
static void xm_submit(uint64_t *rng, int i) {
  xm_pool *p = &xm.pools[i];
  unsigned char buf[TEST_MODEL_HDR + XM_PLEN_MAX];
  xm_task *t = xm_new(rng, i, XM_SUBMIT, xm_kind(rng, p), xm_rnd(rng, XM_PLEN_MAX + 1));
  uint64_t id = 0;
  size_t len;
  int issued, err;

  if (t == NULL)
    return;
  len = xm_arg(t, buf);
  uv_mutex_lock(&xm.mu);
  issued = p->end_issued;
  uv_mutex_unlock(&xm.mu);
  err = pp_submit(p->pool, "model", buf, len, xm_cb, t, &id);
  if (err != 0 && !(issued && err == PP_ECLOSED))
    xm_fail("pp_submit of %s returned %s, want 0", xm_desc(t), pp_errname(err));
  uv_mutex_lock(&xm.mu);
  if (err != 0)
    t->refused = 1;
  else if (id == 0 || (t->id != 0 && t->id != id))
    xm_fail("pp_submit of %s gave id %llu, its callback %llu", xm_desc(t),
            (unsigned long long) id, (unsigned long long) t->id);
  t->id = id;
  uv_mutex_unlock(&xm.mu);
}

/* pp_cancel of a task of pool i (entered), or of an id it never gave. */
static void xm_cancel(uint64_t *rng, int i) {
  xm_pool *p = &xm.pools[i];
  xm_ctx *c = xm_here();
  xm_task *t = NULL;
  uint64_t id = UINT64_MAX - xm_rnd(rng, 100);
  size_t n, k, start;
  int err;

  uv_mutex_lock(&xm.mu);
  n = xm.nt;
  start = n > 0 ? xm_rnd(rng, (unsigned) n) : 0;
  for (k = 0; k < n && k < 64; k++) {
    xm_task *u = &xm.t[(start + k) % n];
    if (u->pool == i && u->how == XM_SUBMIT && !u->refused && u->id != 0) {
      t = u;
      break;
    }
  }
  if (t != NULL) {
    id = t->id;
    t->cancel_asked = 1;
    p->disturbed = 1;
  }
  uv_mutex_unlock(&xm.mu);
  err = pp_cancel(p->pool, id);
  if (err == PP_EINVAL && c != NULL && c->self != p) {
    xm_count(&xm.einval_cb);
    return;
  }
  if (err != 0 && err != PP_ENOENT)
    xm_fail("pp_cancel of id %llu on pool %d returned %s", (unsigned long long) id, i,
            pp_errname(err));
  if (err == 0) {
    if (t == NULL)
      xm_fail("pp_cancel of id %llu, which pool %d never gave, returned 0",
              (unsigned long long) id, i);
    uv_mutex_lock(&xm.mu);
    if (t->outcomes != 1 || t->status != PP_ECANCELED)
      xm_fail("pp_cancel of %s returned 0 with %d outcomes (%s)", xm_desc(t), t->outcomes,
              pp_errname(t->status));
    uv_mutex_unlock(&xm.mu);
  }
}

static void xm_stats(int i) {
  xm_ctx *c = xm_here();
  pp_pool_stats st;
  int err = pp_pool_stats_get(xm.pools[i].pool, &st);

  if (err == PP_EINVAL && c != NULL && c->self != &xm.pools[i]) {
    xm_count(&xm.einval_cb);
    return;
  }
  if (err != 0)
    xm_fail("pp_pool_stats_get of pool %d returned %s", i, pp_errname(err));
  if (st.submitted != st.done + st.queued + st.running)
    xm_fail("pool %d's counters: submitted %llu != done %llu + queued %llu + running %llu",
            i, (unsigned long long) st.submitted, (unsigned long long) st.done,
            (unsigned long long) st.queued, (unsigned long long) st.running);
}

/* What a result callback does: calls into its own pool or another, or asks for an end. */
static void xm_cb_action(xm_pool *self, uint64_t seed) {
  uint64_t s = seed;
  unsigned a = xm_rnd(&s, 100);
  int q = (int) xm_rnd(&s, (unsigned) xm.npools);

  if (a >= 30)
    return;
  if (a < 5)
    q = (int) (self - xm.pools);
  if (!xm_enter(q))
    return;
  xm_count(&xm.cb_actions);
  if (a < 10)
    xm_submit(&s, q);
  else if (a < 17)
    xm_cancel(&s, q);
  else if (a < 23)
    xm_stats(q);
  else if (a < 29) {
    pp_future *f = NULL;
    int err = pp_submit_future(xm.pools[q].pool, "model", NULL, 0, &f);
    /* An empty argument: the model task refuses it with PP_ETASK. Only that the call
     * from a callback works, and its future, is checked here. */
    if (err != 0 && err != PP_ECLOSED)
      xm_fail("pp_submit_future from a callback returned %s", pp_errname(err));
    if (f != NULL && pp_future_wait(f, 0) == PP_EINVAL)
      xm_fail("pp_future_wait(0) from a callback returned PP_EINVAL");
    pp_future_free(f);
  } else {
    xm_ask_end(q, xm_rnd(&s, 2) ? XM_END_CLOSE : XM_END_TERM);
  }
  xm_leave(q);
}

static void xm_cb(pp_pool *pool, pp_result *r, void *user) {
  xm_task *t = (xm_task *) user;
  xm_pool *p = &xm.pools[t->pool];
  xm_ctx *saved = xm_here(), c;

  if (pool != p->pool)
    xm_fail("%s: its callback got another pool", xm_desc(t));
  /* The callback may run, on the loop's thread, before pp_submit has returned the id. */
  uv_mutex_lock(&xm.mu);
  if (t->id != 0 && r->id != t->id)
    xm_fail("%s: its callback got id %llu, want %llu", xm_desc(t),
            (unsigned long long) r->id, (unsigned long long) t->id);
  t->id = r->id;
  uv_mutex_unlock(&xm.mu);
  xm_outcome(t, r->status, r->data, r->len, r->message, 0);
  c.self = p;
  c.tid = saved ? saved->tid : -1;
  uv_key_set(&xm.key, &c);
  xm_cb_action(p, xm.seed ^ (xm_nonce(t) * 0xD1B54A32D192ED03ull));
  uv_key_set(&xm.key, saved);
}

/* Futures: the thread's own, some of several pools. */
static void xm_future_done(xm_thread *th, size_t k) {
  const pp_result *r = pp_future_result(th->fut[k]);
  xm_task *t = &xm.t[th->ftask[k]];

  if (r == NULL)
    xm_fail("%s: its future said done but has no result", xm_desc(t));
  if (r->id != t->id)
    xm_fail("%s: its future's result has id %llu, want %llu", xm_desc(t),
            (unsigned long long) r->id, (unsigned long long) t->id);
  xm_outcome(t, r->status, r->data, r->len, r->message, 0);
  pp_future_free(th->fut[k]);
  th->fut[k] = th->fut[--th->nfut];
  th->ftask[k] = th->ftask[th->nfut];
}

static void xm_future_new(xm_thread *th, int i) {
  xm_pool *p = &xm.pools[i];
  unsigned char buf[TEST_MODEL_HDR + XM_PLEN_MAX];
  xm_task *t;
  pp_future *f = NULL;
  int err;

  if (th->nfut == XM_MAX_FUTURES)
    return;
  t = xm_new(&th->rng, i, XM_FUTURE, xm_kind(&th->rng, p), xm_rnd(&th->rng, XM_PLEN_MAX + 1));
  if (t == NULL)
    return;
  err = pp_submit_future(p->pool, "model", buf, xm_arg(t, buf), &f);
  if (err != 0 || f == NULL)
    xm_fail("pp_submit_future of %s returned %s", xm_desc(t), pp_errname(err));
  t->id = pp_future_id(f);
  th->fut[th->nfut] = f;
  th->ftask[th->nfut++] = (size_t) (t - xm.t);
}

static int64_t xm_timeout(uint64_t *rng) {
  unsigned r = xm_rnd(rng, 10);

  return r < 3 ? 0 : r < 7 ? (int64_t) (1 + xm_rnd(rng, 20)) : -1;
}

static void xm_future_wait(xm_thread *th) {
  int64_t ms = xm_timeout(&th->rng);
  size_t k;
  int err;

  if (th->nfut == 0)
    return;
  k = xm_rnd(&th->rng, (unsigned) th->nfut);
  err = pp_future_wait(th->fut[k], ms);
  if (err == 0)
    xm_future_done(th, k);
  else if (err != PP_ETIMEDOUT || ms < 0)
    xm_fail("pp_future_wait(%lld ms) of %s returned %s", (long long) ms,
            xm_desc(&xm.t[th->ftask[k]]), pp_errname(err));
}

static void xm_future_wait_any(xm_thread *th) {
  int64_t ms = xm_timeout(&th->rng);
  size_t index = (size_t) -1;
  int err;

  if (th->nfut == 0)
    return;
  err = pp_future_wait_any(th->fut, th->nfut, ms, &index);
  if (err == 0) {
    if (index >= th->nfut || pp_future_result(th->fut[index]) == NULL)
      xm_fail("pp_future_wait_any returned 0 with index %zu of %zu, not done", index,
              th->nfut);
    xm_future_done(th, index);
  } else if (err != PP_ETIMEDOUT || ms < 0) {
    xm_fail("pp_future_wait_any(%zu futures, %lld ms) returned %s", th->nfut,
            (long long) ms, pp_errname(err));
  }
}

static void xm_future_cancel(xm_thread *th) {
  size_t k;
  xm_task *t;
  int err;

  if (th->nfut == 0)
    return;
  k = xm_rnd(&th->rng, (unsigned) th->nfut);
  t = &xm.t[th->ftask[k]];
  uv_mutex_lock(&xm.mu);
  t->cancel_asked = 1;
  xm.pools[t->pool].disturbed = 1;
  uv_mutex_unlock(&xm.mu);
  err = pp_future_cancel(th->fut[k]);
  if (err != 0 && err != PP_ENOENT)
    xm_fail("pp_future_cancel of %s returned %s", xm_desc(t), pp_errname(err));
  if (pp_future_result(th->fut[k]) == NULL)
    xm_fail("pp_future_cancel of %s returned %s, and the future has no outcome",
            xm_desc(t), pp_errname(err));
  if (err == 0 && pp_future_result(th->fut[k])->status != PP_ECANCELED)
    xm_fail("pp_future_cancel of %s returned 0, but its outcome is %s", xm_desc(t),
            pp_errname(pp_future_result(th->fut[k])->status));
  xm_future_done(th, k);
}

/* A future freed before its outcome: the task still runs, its result is dropped. */
static void xm_future_drop(xm_thread *th) {
  size_t k;

  if (th->nfut == 0)
    return;
  k = xm_rnd(&th->rng, (unsigned) th->nfut);
  if (pp_future_result(th->fut[k]) != NULL) {
    xm_future_done(th, k);
    return;
  }
  xm.t[th->ftask[k]].abandoned = 1;
  pp_future_free(th->fut[k]);
  th->fut[k] = th->fut[--th->nfut];
  th->ftask[k] = th->ftask[th->nfut];
}

static void xm_apply(xm_thread *th, int i) {
  xm_pool *p = &xm.pools[i];
  unsigned char buf[TEST_MODEL_HDR + XM_PLEN_MAX];
  xm_task *t = xm_new(&th->rng, i, XM_APPLY, xm_kind(&th->rng, p),
                      xm_rnd(&th->rng, XM_PLEN_MAX + 1));
  pp_result out;
  int err;

  if (t == NULL)
    return;
  err = pp_apply(p->pool, "model", buf, xm_arg(t, buf), &out);
  if (err != out.status)
    xm_fail("pp_apply of %s returned %s, out.status %s", xm_desc(t), pp_errname(err),
            pp_errname(out.status));
  t->id = out.id;
  xm_outcome(t, out.status, out.data, out.len, out.message, 0);
  pp_result_free(&out);
}

/* Items are consecutive tasks: other threads make theirs under the same lock. */
static xm_task *xm_items_locked(uint64_t *rng, int i, int how, size_t n, uint32_t plen) {
  xm_task *t;
  size_t k;

  uv_mutex_lock(&xm.mu);
  if (xm.nt + n > XM_MAX_TASKS) {
    uv_mutex_unlock(&xm.mu);
    return NULL;
  }
  t = &xm.t[xm.nt];
  xm.nt += n;
  for (k = 0; k < n; k++) {
    t[k].kind = (unsigned char) xm_kind(rng, &xm.pools[i]);
    t[k].pool = (unsigned char) i;
    t[k].how = (unsigned char) how;
    t[k].plen = plen != (uint32_t) -1 ? plen : xm_rnd(rng, 65);
    t[k].param = t[k].kind == TEST_MK_SLOW ? 2 + xm_rnd(rng, 30) : 0;
  }
  uv_mutex_unlock(&xm.mu);
  return t;
}

static void xm_map(xm_thread *th, int i) {
  size_t n = 1 + xm_rnd(&th->rng, 8), k;
  xm_task *t = xm_items_locked(&th->rng, i, XM_MAP, n, (uint32_t) -1);
  unsigned char *args;
  pp_input in[8];
  pp_result out[8];
  int err, want = 0;

  if (t == NULL)
    return;
  args = (unsigned char *) malloc(n * (TEST_MODEL_HDR + 64));
  ASSERT_NOT_NULL(args);
  for (k = 0; k < n; k++) {
    in[k].data = args + k * (TEST_MODEL_HDR + 64);
    in[k].len = xm_arg(&t[k], args + k * (TEST_MODEL_HDR + 64));
  }
  err = pp_map(xm.pools[i].pool, "model", n, in, out);
  for (k = 0; k < n; k++) {
    t[k].id = out[k].id;
    if (want == 0)
      want = out[k].status;
    xm_outcome(&t[k], out[k].status, out[k].data, out[k].len, out[k].message, 0);
    pp_result_free(&out[k]);
  }
  if (err != want)
    xm_fail("pp_map returned %s, its first failed item %s", pp_errname(err),
            pp_errname(want));
  free(args);
}

static void xm_array(xm_thread *th, int i) {
  enum { ASZ = TEST_MODEL_HDR + XM_ARRAY_PLEN, RSZ = TEST_MODEL_REPLY_HDR + XM_ARRAY_PLEN };
  size_t n = 1 + xm_rnd(&th->rng, 12), k;
  xm_task *t = xm_items_locked(&th->rng, i, XM_ARRAY, n, XM_ARRAY_PLEN);
  unsigned char args[12 * ASZ], res[12 * RSZ];
  int statuses[12], err, want = 0;

  if (t == NULL)
    return;
  for (k = 0; k < n; k++)
    xm_arg(&t[k], args + k * ASZ);
  err = pp_map_array(xm.pools[i].pool, "model", n, args, ASZ, res, RSZ, statuses);
  for (k = 0; k < n; k++) {
    if (want == 0)
      want = statuses[k];
    /* No messages here: the status is all there is. */
    xm_outcome(&t[k], statuses[k], res + k * RSZ, RSZ, statuses[k] ? "(pp_map_array)" : NULL,
               0);
  }
  if (err != want)
    xm_fail("pp_map_array returned %s, its first failed item %s", pp_errname(err),
            pp_errname(want));
}

typedef struct xm_stream {
  xm_task *t;
  size_t n, given, delivered, first_failed;
  int pool, first_status;
  uint64_t rng;
  unsigned char buf[TEST_MODEL_HDR + 64];
} xm_stream;

static int xm_next_in(void *user, pp_input *in) {
  xm_stream *s = (xm_stream *) user;

  if (s->given == s->n)
    return 0;
  in->data = s->buf;
  in->len = xm_arg(&s->t[s->given++], s->buf);
  return 1;
}

static void xm_each(void *user, size_t index, pp_result *r) {
  xm_stream *s = (xm_stream *) user;
  xm_ctx *saved = xm_here(), c;

  if (index >= s->given)
    xm_fail("each() for index %zu, of %zu items given", index, s->given);
  s->delivered++;
  if (r->status != 0 && index < s->first_failed) {
    s->first_failed = index;
    s->first_status = r->status;
  }
  xm_outcome(&s->t[index], r->status, r->data, r->len, r->message, 0);
  c.self = &xm.pools[s->pool];
  c.tid = saved ? saved->tid : -1;
  uv_key_set(&xm.key, &c);
  xm_cb_action(&xm.pools[s->pool], xm_next(&s->rng));
  uv_key_set(&xm.key, saved);
}

static void xm_map_stream(xm_thread *th, int i) {
  xm_stream s;
  int err;

  memset(&s, 0, sizeof(s));
  s.n = 1 + xm_rnd(&th->rng, 16);
  s.first_failed = s.n;
  s.pool = i;
  s.rng = xm_next(&th->rng);
  s.t = xm_items_locked(&th->rng, i, XM_STREAM, s.n, (uint32_t) -1);
  if (s.t == NULL)
    return;
  err = pp_map_stream(xm.pools[i].pool, "model", xm_next_in, xm_each, &s,
                      xm_rnd(&th->rng, 2) ? PP_MAP_UNORDERED : 0);
  if (s.delivered != s.given || s.given != s.n)
    xm_fail("pp_map_stream returned %s after %zu of %zu items given, %zu delivered",
            pp_errname(err), s.given, s.n, s.delivered);
  if (err != s.first_status)
    xm_fail("pp_map_stream returned %s, its first failed item (index %zu) %s",
            pp_errname(err), s.first_failed, pp_errname(s.first_status));
}

static void xm_kill(xm_thread *th, int i) {
#ifdef __linux__
  xm_pool *p = &xm.pools[i];
  uint64_t pid = 0;

  uv_mutex_lock(&xm.mu);
  if (p->npids > 0)
    pid = p->pids[xm_rnd(&th->rng, (unsigned) p->npids)];
  if (pid != 0)
    p->disturbed = 1;
  uv_mutex_unlock(&xm.mu);
  if (pid != 0 && test_model_is_worker((long) pid) && kill((pid_t) pid, SIGKILL) == 0) {
    uv_mutex_lock(&xm.mu);
    xm.kills++;
    uv_mutex_unlock(&xm.mu);
  }
#else
  (void) th;
  (void) i;
#endif
}

/* ---- The threads --------------------------------------------------------------------- */

static void xm_run_loop_once(void) {
  uv_run(&xm.loop, UV_RUN_ONCE);
}

static void xm_one_op(xm_thread *th) {
  unsigned r = xm_rnd(&th->rng, 100);
  int i = (int) xm_rnd(&th->rng, (unsigned) xm.npools);

  if (r < 14) {
    xm_op(th, "pp_future_wait");
    xm_future_wait(th);
    return;
  }
  if (r < 20) {
    xm_op(th, "pp_future_wait_any");
    xm_future_wait_any(th);
    return;
  }
  if (r < 25) {
    xm_op(th, "pp_future_cancel");
    xm_future_cancel(th);
    return;
  }
  if (r < 27) {
    xm_op(th, "pp_future_free of a pending future");
    xm_future_drop(th);
    return;
  }
  if (!xm_enter(i))
    return;
  if (r < 42) {
    xm_op(th, "pp_submit");
    xm_submit(&th->rng, i);
  } else if (r < 56) {
    xm_op(th, "pp_submit_future");
    xm_future_new(th, i);
  } else if (r < 62) {
    xm_op(th, "pp_cancel");
    xm_cancel(&th->rng, i);
  } else if (r < 70) {
    xm_op(th, "pp_apply");
    xm_apply(th, i);
  } else if (r < 76) {
    xm_op(th, "pp_map");
    xm_map(th, i);
  } else if (r < 82) {
    xm_op(th, "pp_map_array");
    xm_array(th, i);
  } else if (r < 88) {
    xm_op(th, "pp_map_stream");
    xm_map_stream(th, i);
  } else if (r < 92) {
    xm_op(th, "pp_pool_stats_get");
    xm_stats(i);
  } else if (r < 99) {
    xm_op(th, "kill a worker");
    xm_kill(th, i);
  } else {
    xm_op(th, "ask for a pool's end");
    xm_ask_end(i, xm_rnd(&th->rng, 2) ? XM_END_CLOSE : XM_END_TERM);
  }
  xm_op(th, "between calls");
  xm_leave(i);
}

static void xm_thread_main(void *arg) {
  xm_thread *th = (xm_thread *) arg;
  int k, i;

  for (k = 0; k < th->ops; k++) {
    xm_one_op(th);
    for (i = 0; i < xm.npools; i++)
      xm_try_end(i);
  }
  uv_mutex_lock(&xm.mu);
  th->done = 1;
  uv_mutex_unlock(&xm.mu);
}

static int xm_flag(const int *flag) {
  int v;

  uv_mutex_lock(&xm.mu);
  v = *flag;
  uv_mutex_unlock(&xm.mu);
  return v;
}

static int xm_others_done(void) {
  int i, done = 1;

  uv_mutex_lock(&xm.mu);
  for (i = 1; i < xm.nthreads; i++)
    done = done && xm.threads[i].done;
  uv_mutex_unlock(&xm.mu);
  return done;
}

static void xm_tick(uv_timer_t *timer) { (void) timer; }

static void xm_warning(const char *message, void *user) {
  (void) message;
  (void) user;
  xm_count(&xm.warnings);
}

static void xm_run_add(void *user, uint64_t nonce, uint64_t pid) {
  (void) user;
  (void) pid;
  if (nonce == 0 || nonce > xm.nt)
    xm_fail("the run log names nonce %llu, which no task had", (unsigned long long) nonce);
  xm.runs[nonce]++;
}

static void xm_log_fail(void *user, const char *what) {
  (void) user;
  xm_fail("%s", what);
}

static void xm_run(uint64_t seed, int ops, int index) {
  uint64_t rng = seed, t0 = uv_hrtime();
  char tag[64];
  int i, k, has_caller, err;
  size_t n;

  memset(xm.pools, 0, sizeof(xm.pools));
  memset(xm.threads, 0, sizeof(xm.threads));
  memset(xm.by_status, 0, sizeof(xm.by_status));
  memset(&xm.log, 0, sizeof(xm.log));
  xm.seed = seed;
  xm.ops = ops;
  xm.nt = 0;
  xm.cb_actions = xm.einval_cb = xm.kills = 0;
  xm.wd_stop = 0;
  xm.t = (xm_task *) calloc(XM_MAX_TASKS, sizeof(xm_task));
  xm.runs = (uint32_t *) calloc(XM_MAX_TASKS + 1, sizeof(uint32_t));
  ASSERT_NOT_NULL(xm.t);
  ASSERT_NOT_NULL(xm.runs);
  xm.nthreads = 2 + (int) xm_rnd(&rng, 7);
  xm.npools = 1 + (int) xm_rnd(&rng, 3);
  has_caller = xm_rnd(&rng, 2) == 0;
  snprintf(tag, sizeof(tag), "xmodel-%d-XXXXXX", index);
  xm.log.add = xm_run_add;
  xm.log.fail = xm_log_fail;
  err = test_model_log_init(&xm.log, tag);
  if (err != 0)
    xm_fail("cannot make the run log's directory %s: %s", xm.log.path, uv_strerror(err));
  ASSERT_EQ_INT(uv_thread_create(&xm.wd, xm_wd_main, NULL), 0);
  if (has_caller) {
    ASSERT_EQ_INT(uv_loop_init(&xm.loop), 0);
    ASSERT_EQ_INT(uv_timer_init(&xm.loop, &xm.tick), 0);
    ASSERT_EQ_INT(uv_timer_start(&xm.tick, xm_tick, 2, 2), 0);
  }
  for (i = 0; i < xm.npools; i++) {
    xm_pool *p = &xm.pools[i];
    pp_pool_options opts;
    unsigned d = xm_rnd(&rng, 4);
    test_options(&opts);
    opts.workers = 1 + xm_rnd(&rng, 3);
    opts.pipeline_depth = d == 0 ? 1 : d == 1 ? 4 : 0;
    opts.max_tasks_per_worker = xm_rnd(&rng, 3) == 0 ? 1 + xm_rnd(&rng, 4) : 0;
    /* Under TSan a retired forked worker waits out its grace too (see test_xmodel). */
    if (TEST_TSAN && test_method == PP_START_FORK)
      opts.max_tasks_per_worker = 0;
    if (xm_rnd(&rng, 2) == 0)
      opts.task_timeout_ms = test_scale_ms(400);
    opts.initializer = "model_init";
    opts.initarg = xm.log.path;
    opts.initarg_len = strlen(xm.log.path);
    p->caller = has_caller && i == 0;
    p->timeout = opts.task_timeout_ms;
    p->pool = NEW_POOL(p->caller ? &xm.loop : NULL, &opts);
  }
  for (i = 0; i < xm.nthreads; i++) {
    xm_thread *th = &xm.threads[i];
    th->tid = i;
    th->rng = seed ^ ((uint64_t) (i + 1) * 0xA24BAED4963EE407ull);
    th->ops = ops / xm.nthreads + (i < ops % xm.nthreads);
  }
  for (i = 1; i < xm.nthreads; i++)
    ASSERT_EQ_INT(uv_thread_create(&xm.threads[i].thread, xm_thread_main, &xm.threads[i]), 0);
  /* The main thread is thread 0, and runs the caller's loop between its calls, and after
   * them until the others are done: their calls on that pool wait for it. */
  for (k = 0; k < xm.threads[0].ops; k++) {
    xm_one_op(&xm.threads[0]);
    for (i = 0; i < xm.npools; i++)
      xm_try_end(i);
    if (has_caller)
      xm_run_loop_once();
  }
  uv_mutex_lock(&xm.mu);
  xm.threads[0].done = 1;
  uv_mutex_unlock(&xm.mu);
  xm_op(&xm.threads[0], "running the caller's loop until the other threads are done");
  while (!xm_others_done()) {
    if (has_caller)
      xm_run_loop_once();
    else
      uv_sleep(2);
  }
  for (i = 1; i < xm.nthreads; i++)
    ASSERT_EQ_INT(uv_thread_join(&xm.threads[i].thread), 0);
  /* The end of every pool still there, asked for now if it was not. */
  xm_op(&xm.threads[0], "ending the pools");
  for (i = 0; i < xm.npools; i++) {
    xm_ask_end(i, xm_rnd(&rng, 3) == 0 ? XM_END_TERM : XM_END_CLOSE);
    /* A callback on a pool's own thread may be in a call on it for a moment, or have
     * been refused the end it made (PP_EINVAL): the watchdog bounds this. */
    while (!xm_flag(&xm.pools[i].end_issued)) {
      xm_try_end(i);
      if (has_caller)
        xm_run_loop_once();
      else
        uv_sleep(1);
    }
  }
  if (has_caller) {
    while (!xm_flag(&xm.pools[0].gone))
      if (uv_run(&xm.loop, UV_RUN_ONCE) == 0 && !xm_flag(&xm.pools[0].gone))
        xm_fail("the caller's loop ran out of work before pool 0's close callback");
    uv_close((uv_handle_t *) &xm.tick, NULL);
    uv_run(&xm.loop, UV_RUN_DEFAULT);
    err = uv_loop_close(&xm.loop);
    if (err != 0) {
      test_run_loop(&xm.loop);
      xm_fail("uv_loop_close of the caller's loop returned %s after its pool ended",
              uv_err_name(err));
    }
  }
  for (i = 0; i < xm.npools; i++)
    if (!xm_flag(&xm.pools[i].gone))
      xm_fail("pool %d's close callback has not run", i);
  /* Every future is done once its pool is gone, and says so at once. */
  xm_op(&xm.threads[0], "the futures after the end");
  for (i = 0; i < xm.nthreads; i++) {
    xm_thread *th = &xm.threads[i];
    while (th->nfut > 0) {
      err = pp_future_wait(th->fut[0], 0);
      if (err != 0)
        xm_fail("%s: pp_future_wait(0) returned %s after its pool ended",
                xm_desc(&xm.t[th->ftask[0]]), pp_errname(err));
      xm_future_done(th, 0);
    }
  }
  uv_mutex_lock(&xm.mu);
  xm.wd_stop = 1;
  uv_cond_signal(&xm.wd_cond);
  uv_mutex_unlock(&xm.mu);
  ASSERT_EQ_INT(uv_thread_join(&xm.wd), 0);
  /* One outcome each, at most one run each, none for a refused one. */
  test_model_log_update(&xm.log);
  for (n = 0; n < xm.nt; n++) {
    xm_task *t = &xm.t[n];
    uint32_t runs = xm.runs[n + 1];
    if (runs > 1)
      xm_fail("%s ran %u times (outcome %s)", xm_desc(t), runs,
              t->outcomes ? pp_errname(t->status) : "none");
    if (t->refused) {
      if (runs > 0 || t->outcomes > 0)
        xm_fail("%s was refused, yet ran %u times and had %d outcomes", xm_desc(t), runs,
                t->outcomes);
      continue;
    }
    if (t->outcomes != (t->abandoned ? 0 : 1))
      xm_fail("%s: %d outcomes at the end, want %d", xm_desc(t), t->outcomes,
              t->abandoned ? 0 : 1);
    if (t->outcomes && (t->status == 0 || t->status == PP_ETASK) && runs == 0)
      xm_fail("%s: %s, but the run log has no run of it", xm_desc(t),
              pp_errname(t->status));
  }
  printf("xmodel %s seed=0x%llx: %d threads, %d pools (%s), %d ops, %zu tasks; outcomes "
         "ok=%lu etask=%lu eworker=%lu etimedout=%lu ecanceled=%lu eclosed=%lu; %lu "
         "callback calls (%lu refused as PP_EINVAL), %lu outside kills; %.0f ms\n",
         pp_start_method_name(test_method), (unsigned long long) seed, xm.nthreads,
         xm.npools, has_caller ? "one on the caller's loop" : "all private", ops, xm.nt,
         xm.by_status[0], xm.by_status[1], xm.by_status[2], xm.by_status[3],
         xm.by_status[4], xm.by_status[5], xm.cb_actions, xm.einval_cb, xm.kills,
         (double) (uv_hrtime() - t0) / 1e6);
  fflush(stdout);
  test_model_log_remove(&xm.log);
  free(xm.runs);
  free(xm.t);
}

/* A caller's loop and a private pool; one private pool; three private; a caller's loop
 * and two private. */
static const uint64_t xm_seeds[] = { 0x6, 0x1, 0x2, 0x4 };

static int xm_env(const char *name, uint64_t *v) {
  char buf[64];
  size_t size = sizeof(buf);

  if (uv_os_getenv(name, buf, &size) != 0 || buf[0] == '\0')
    return 0;
  *v = (uint64_t) strtoull(buf, NULL, 0);
  return 1;
}

void test_xmodel(void) {
  uint64_t seed, runs = 1, ops = XM_OPS, i;

  xm_env("PROCPOOL_XMODEL_OPS", &ops);
  if (ops == 0 || ops > 100000)
    test_skip("PROCPOOL_XMODEL_OPS must be between 1 and 100000");
  ASSERT_EQ_INT(uv_mutex_init(&xm.mu), 0);
  ASSERT_EQ_INT(uv_cond_init(&xm.wd_cond), 0);
  ASSERT_EQ_INT(uv_key_create(&xm.key), 0);
  /* The fork method warns that this process runs threads: it is made to work so. */
  pp_set_warning_handler(xm_warning, NULL);
  if (xm_env("PROCPOOL_XMODEL_SEED", &seed)) {
    xm_env("PROCPOOL_XMODEL_RUNS", &runs);
    for (i = 0; i < runs; i++)
      xm_run(seed + i, (int) ops, (int) i);
  } else {
    /* Under TSan a worker forked from a threaded process may never end by itself (TSan's
     * exit waits for a lock that a thread of the parent held at the fork): each pool's
     * close then waits for its grace before the kill, some 5 s, and so may a task that
     * exits. One seed, not four, there: the parent's side is the same as forkserver's. */
    size_t nseeds = sizeof(xm_seeds) / sizeof(xm_seeds[0]);
    if (TEST_TSAN && test_method == PP_START_FORK)
      nseeds = 1;
    for (i = 0; i < nseeds; i++)
      xm_run(xm_seeds[i], (int) ops, (int) i);
  }
  pp_set_warning_handler(NULL, NULL);
  uv_key_delete(&xm.key);
  uv_cond_destroy(&xm.wd_cond);
  uv_mutex_destroy(&xm.mu);
}
