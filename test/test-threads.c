/* Pools used from several threads, and futures (issue 11): every parent-side call from
 * any thread; a program whose main thread never runs a loop gets every result once and
 * right; futures outlive their pool; a close from one thread while others wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define THR_SUBMITTERS 8
#define THR_APPLIERS 2

/* A thread that fails an assertion ends the whole test process: that is the verdict. */

static uint32_t thr_input(unsigned thread, unsigned i) {
  return ((uint32_t) thread << 20) | (uint32_t) i;
}

static void thr_check_mapf(const pp_result *r, uint32_t x) {
  uint64_t want = test_mapf(x);

  ASSERT_STATUS(*r, 0);
  ASSERT_EQ_MEM(r->data, r->len, &want, sizeof(want));
}

/* ---- Many threads, futures, wait and wait_any, cancels ------------------------------ */

typedef struct thr_sub {
  pp_pool *pool;
  unsigned thread;
  unsigned n;
  unsigned ok, canceled;
  uv_thread_t tid;
} thr_sub;

/* Collects the outcome of futs[i] once: a future whose cancel returned 0 has
 * PP_ECANCELED, any other has its right result. */
static void thr_collect(thr_sub *s, pp_future *f, uint32_t x, int cancel_said) {
  const pp_result *r = pp_future_result(f);

  ASSERT_NOT_NULL(r);
  if (cancel_said == 0) {
    ASSERT_STATUS(*r, PP_ECANCELED);
    s->canceled++;
  } else {
    thr_check_mapf(r, x);
    s->ok++;
  }
  ASSERT_EQ_U64(r->id, pp_future_id(f));
  /* The same pointer every time. */
  ASSERT_TRUE(pp_future_result(f) == r);
  pp_future_free(f);
}

#define THR_WINDOW 16

static void thr_submitter(void *arg) {
  thr_sub *s = (thr_sub *) arg;
  pp_future *win[THR_WINDOW];
  uint32_t xs[THR_WINDOW];
  int said[THR_WINDOW];
  size_t nwin = 0, k;
  unsigned i;

  for (i = 0; i < s->n; i++) {
    uint32_t x = thr_input(s->thread, i);
    pp_future *f = NULL;
    ASSERT_EQ_INT(pp_submit_future(s->pool, "mapf", &x, sizeof(x), &f), 0);
    ASSERT_NOT_NULL(f);
    said[nwin] = PP_ENOENT;
    if (i % 7 == 3) {
      said[nwin] = pp_future_cancel(f);
      ASSERT_TRUE(said[nwin] == 0 || said[nwin] == PP_ENOENT);
      /* A second cancel finds it decided. */
      ASSERT_EQ_INT(pp_future_cancel(f), PP_ENOENT);
    }
    win[nwin] = f;
    xs[nwin] = x;
    nwin++;
    if (nwin < THR_WINDOW && i + 1 < s->n)
      continue;
    /* Half the window with wait_any, the rest one by one with wait. */
    while (nwin > THR_WINDOW / 2) {
      size_t at = (size_t) -1;
      ASSERT_EQ_INT(pp_future_wait_any(win, nwin, -1, &at), 0);
      ASSERT_TRUE(at < nwin);
      thr_collect(s, win[at], xs[at], said[at]);
      win[at] = win[nwin - 1];
      xs[at] = xs[nwin - 1];
      said[at] = said[nwin - 1];
      nwin--;
    }
    if (i + 1 == s->n || i % 3 == 0) {
      for (k = 0; k < nwin; k++) {
        ASSERT_EQ_INT(pp_future_wait(win[k], -1), 0);
        thr_collect(s, win[k], xs[k], said[k]);
      }
      nwin = 0;
    }
  }
  ASSERT_EQ_INT(nwin, 0);
}

typedef struct thr_app {
  pp_pool *pool;
  unsigned thread;
  unsigned n;
  uv_thread_t tid;
} thr_app;

static void thr_applier(void *arg) {
  thr_app *a = (thr_app *) arg;
  unsigned i;

  for (i = 0; i < a->n; i++) {
    uint32_t x = thr_input(a->thread, i);
    pp_result r;
    int err = pp_apply(a->pool, "mapf", &x, sizeof(x), &r);
    /* Other threads' cancels kill workers; never this task with them. */
    ASSERT_EQ_INT(err, r.status);
    thr_check_mapf(&r, x);
    ASSERT_NE_U64(r.id, 0);
    pp_result_free(&r);
  }
}

static unsigned thr_count(const char *var, unsigned dflt) {
  char buf[32];
  size_t size = sizeof(buf);

  if (uv_os_getenv(var, buf, &size) == 0 && atoi(buf) > 0)
    return (unsigned) atoi(buf);
  return dflt;
}

/* The program: 8 threads x 1000 futures (some canceled, half collected with
 * wait_any) and 2 threads of pp_apply, on one pool whose creating thread never runs a
 * loop. */
void test_thr_futures_many(void) {
  pp_pool_options opts;
  pp_pool_stats st;
  thr_sub subs[THR_SUBMITTERS];
  thr_app apps[THR_APPLIERS];
  unsigned n = thr_count("PROCPOOL_THR_FUTURES", 1000), napply = n / 4, i;
  unsigned ok = 0, canceled = 0;
  pp_pool *pool;

  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < THR_SUBMITTERS; i++) {
    subs[i].pool = pool;
    subs[i].thread = i + 1;
    subs[i].n = n;
    subs[i].ok = subs[i].canceled = 0;
    ASSERT_EQ_INT(uv_thread_create(&subs[i].tid, thr_submitter, &subs[i]), 0);
  }
  for (i = 0; i < THR_APPLIERS; i++) {
    apps[i].pool = pool;
    apps[i].thread = 100 + i;
    apps[i].n = napply;
    ASSERT_EQ_INT(uv_thread_create(&apps[i].tid, thr_applier, &apps[i]), 0);
  }
  for (i = 0; i < THR_SUBMITTERS; i++) {
    ASSERT_EQ_INT(uv_thread_join(&subs[i].tid), 0);
    ok += subs[i].ok;
    canceled += subs[i].canceled;
  }
  for (i = 0; i < THR_APPLIERS; i++)
    ASSERT_EQ_INT(uv_thread_join(&apps[i].tid), 0);
  ASSERT_EQ_INT(ok + canceled, THR_SUBMITTERS * n);
  /* Every task the pool took has exactly one outcome, and nothing is left. */
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.submitted, (uint64_t) THR_SUBMITTERS * n + THR_APPLIERS * napply);
  ASSERT_EQ_U64(st.done, st.submitted);
  ASSERT_EQ_U64(st.failed, canceled);
  ASSERT_EQ_U64(st.queued + st.running, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  printf("%u futures: %u ok, %u canceled; %u applies, all ok\n", THR_SUBMITTERS * n, ok,
         canceled, THR_APPLIERS * napply);
}

/* ---- pp_apply, pp_map, pp_map_stream, pp_pool_wait and stats from other threads ------ */

typedef struct thr_mix {
  pp_pool *pool;
  int which;
  uv_thread_t tid;
} thr_mix;

typedef struct thr_stream {
  uint32_t next;
  uint32_t n;
  size_t seen;
  int in_order;
} thr_stream;

static int thr_stream_next(void *user, pp_input *in) {
  thr_stream *s = (thr_stream *) user;
  static uint32_t buf;

  if (s->next == s->n)
    return 0;
  buf = thr_input(50, s->next++);
  in->data = &buf;
  in->len = sizeof(buf);
  return 1;
}

static void thr_stream_each(void *user, size_t index, pp_result *r) {
  thr_stream *s = (thr_stream *) user;

  if (index != s->seen)
    s->in_order = 0;
  thr_check_mapf(r, thr_input(50, (unsigned) index));
  s->seen++;
}

#define THR_MAP_N 300

static void thr_mixer(void *arg) {
  thr_mix *m = (thr_mix *) arg;
  pp_pool_stats st;
  size_t i;

  if (m->which == 0) {
    pp_input in[THR_MAP_N];
    uint32_t xs[THR_MAP_N];
    pp_result out[THR_MAP_N];
    for (i = 0; i < THR_MAP_N; i++) {
      xs[i] = thr_input(40, (unsigned) i);
      in[i].data = &xs[i];
      in[i].len = sizeof(xs[i]);
    }
    /* A bad input fails alone. */
    in[7].data = NULL;
    ASSERT_EQ_INT(pp_map(m->pool, "mapf", THR_MAP_N, in, out), PP_EINVAL);
    for (i = 0; i < THR_MAP_N; i++) {
      if (i == 7)
        ASSERT_STATUS(out[i], PP_EINVAL);
      else
        thr_check_mapf(&out[i], xs[i]);
      pp_result_free(&out[i]);
    }
  } else if (m->which == 1) {
    thr_stream s;
    memset(&s, 0, sizeof(s));
    s.n = THR_MAP_N;
    s.in_order = 1;
    ASSERT_EQ_INT(pp_map_stream(m->pool, "mapf", thr_stream_next, thr_stream_each, &s, 0),
                  0);
    ASSERT_EQ_INT(s.seen, THR_MAP_N);
    ASSERT_EQ_INT(s.in_order, 1);
    ASSERT_EQ_INT(pp_map_stream(m->pool, "no_such_task", thr_stream_next,
                                thr_stream_each, &s, 0), PP_ENOTASK);
  } else {
    for (i = 0; i < 50; i++) {
      ASSERT_EQ_INT(pp_pool_stats_get(m->pool, &st), 0);
      ASSERT_EQ_U64(st.submitted, st.done + st.queued + st.running);
      ASSERT_TRUE(st.failed <= st.done);
    }
    ASSERT_EQ_INT(pp_pool_wait(m->pool), 0);
  }
}

void test_thr_blocking_calls(void) {
  pp_pool_options opts;
  thr_mix mix[3];
  uint64_t id;
  pp_pool *pool;
  pp_result r;
  int i;

  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  /* Used from this thread first: the pool runs its loop here, inside the calls. */
  ASSERT_EQ_INT(APPLY(pool, "echo", "a", 1, &r), 0);
  pp_result_free(&r);
  for (i = 0; i < 3; i++) {
    mix[i].pool = pool;
    mix[i].which = i;
    ASSERT_EQ_INT(uv_thread_create(&mix[i].tid, thr_mixer, &mix[i]), 0);
  }
  /* Meanwhile this thread goes on using it, now through the pool's own thread. */
  for (i = 0; i < 20; i++) {
    uint32_t x = thr_input(60, (unsigned) i);
    ASSERT_EQ_INT(APPLY(pool, "mapf", &x, sizeof(x), &r), 0);
    thr_check_mapf(&r, x);
    pp_result_free(&r);
  }
  ASSERT_EQ_INT(pp_submit(pool, "echo", "b", 1, NULL, NULL, &id), 0);
  ASSERT_EQ_INT(pp_submit(pool, "no_such_task", "b", 1, NULL, NULL, &id), PP_ENOTASK);
  for (i = 0; i < 3; i++)
    ASSERT_EQ_INT(uv_thread_join(&mix[i].tid), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- A close from one thread while others wait on futures ----------------------------- */

typedef struct thr_waiter {
  pp_future *f;
  int status;
  uv_thread_t tid;
} thr_waiter;

static void thr_wait_one(void *arg) {
  thr_waiter *w = (thr_waiter *) arg;

  ASSERT_EQ_INT(pp_future_wait(w->f, -1), 0);
  w->status = pp_future_result(w->f)->status;
}

static void thr_close_under_waiters(int terminate) {
  pp_pool_options opts;
  thr_waiter ws[4];
  uint32_t ms = 200;
  pp_pool *pool;
  int closed = 0, i;

  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 4; i++) {
    ASSERT_EQ_INT(pp_submit_future(pool, "sleep_ms", &ms, sizeof(ms), &ws[i].f), 0);
    ws[i].status = 1;
    ASSERT_EQ_INT(uv_thread_create(&ws[i].tid, thr_wait_one, &ws[i]), 0);
  }
  if (terminate)
    ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &closed), 0);
  else
    ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  /* A private pool's close returns once the pool is gone, its callback run. */
  ASSERT_EQ_INT(closed, 1);
  for (i = 0; i < 4; i++) {
    ASSERT_EQ_INT(uv_thread_join(&ws[i].tid), 0);
    /* A close lets every task finish; a terminate cancels what has not. */
    if (terminate)
      ASSERT_TRUE(ws[i].status == PP_ECANCELED || ws[i].status == 0);
    else
      ASSERT_EQ_INT(ws[i].status, 0);
    ASSERT_EQ_INT(pp_future_cancel(ws[i].f), PP_ENOENT);
    pp_future_free(ws[i].f);
  }
}

void test_thr_close_under_waiters(void) { thr_close_under_waiters(0); }

void test_thr_terminate_under_waiters(void) { thr_close_under_waiters(1); }

/* ---- Futures outlive their pool -------------------------------------------------------- */

void test_thr_future_outlives_pool(void) {
  pp_pool_options opts;
  pp_future *done, *dropped, *canceled, *late = NULL;
  uint32_t x = 5, ms = 100;
  const pp_result *r;
  pp_pool *pool;

  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_submit_future(pool, "mapf", &x, sizeof(x), &done), 0);
  ASSERT_EQ_INT(pp_submit_future(pool, "sleep_ms", &ms, sizeof(ms), &dropped), 0);
  ASSERT_EQ_INT(pp_submit_future(pool, "sleep_forever", "x", 1, &canceled), 0);
  /* Freed before its outcome: the task still runs, its result is dropped. */
  pp_future_free(dropped);
  ASSERT_EQ_INT(pp_future_wait(done, -1), 0);
  /* Not done: looking does not wait. */
  ASSERT_NULL(pp_future_result(canceled));
  ASSERT_EQ_INT(pp_future_wait(canceled, 0), PP_ETIMEDOUT);
  ASSERT_EQ_INT(pp_future_wait(canceled, 30), PP_ETIMEDOUT);
  ASSERT_EQ_INT(pp_future_cancel(canceled), 0);
  ASSERT_EQ_INT(pp_future_wait(canceled, -1), 0);
  ASSERT_STATUS(*pp_future_result(canceled), PP_ECANCELED);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  /* The pool is gone; its futures are not. */
  r = pp_future_result(done);
  ASSERT_NOT_NULL(r);
  thr_check_mapf(r, x);
  ASSERT_EQ_INT(pp_future_wait(done, -1), 0);
  ASSERT_EQ_INT(pp_future_cancel(done), PP_ENOENT);
  ASSERT_EQ_INT(pp_future_cancel(canceled), PP_ENOENT);
  pp_future_free(done);
  pp_future_free(canceled);
  pp_future_free(NULL);
  /* Misuse is an error code, never a crash. */
  ASSERT_EQ_INT(pp_submit_future(NULL, "echo", "a", 1, &late), PP_EINVAL);
  ASSERT_NULL(late);
  ASSERT_EQ_INT(pp_future_wait(NULL, 0), PP_EINVAL);
  ASSERT_EQ_INT(pp_future_wait_any(NULL, 1, 0, NULL), PP_EINVAL);
  ASSERT_EQ_INT(pp_future_cancel(NULL), PP_EINVAL);
  ASSERT_NULL(pp_future_result(NULL));
  ASSERT_EQ_U64(pp_future_id(NULL), 0);
}

/* ---- A caller's loop: the loop's thread and the others ---------------------------------- */

typedef struct thr_cl {
  pp_pool *pool;
  int cbs;                 /* callbacks run (on the loop's thread) */
  int wrong_thread;        /* a callback ran on another thread */
  uv_thread_t loop_thread;
  int closed;
  uv_thread_t tid;
} thr_cl;

static void thr_cl_cb(pp_pool *pool, pp_result *r, void *user) {
  thr_cl *c = (thr_cl *) user;
  uv_thread_t self = uv_thread_self();

  (void) pool;
  ASSERT_STATUS(*r, 0);
  if (!uv_thread_equal(&self, &c->loop_thread))
    c->wrong_thread = 1;
  c->cbs++;
}

static void thr_cl_other(void *arg) {
  thr_cl *c = (thr_cl *) arg;
  pp_future *f;
  pp_result r;
  uint32_t x = 9;
  int i;

  for (i = 0; i < 50; i++)
    ASSERT_EQ_INT(pp_submit(c->pool, "echo", "z", 1, thr_cl_cb, c, NULL), 0);
  ASSERT_EQ_INT(pp_apply(c->pool, "mapf", &x, sizeof(x), &r), 0);
  thr_check_mapf(&r, x);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_submit_future(c->pool, "mapf", &x, sizeof(x), &f), 0);
  ASSERT_EQ_INT(pp_future_wait(f, -1), 0);
  thr_check_mapf(pp_future_result(f), x);
  pp_future_free(f);
  ASSERT_EQ_INT(pp_pool_wait(c->pool), 0);
  /* A close from another thread returns at once; the loop's thread finishes it. */
  ASSERT_EQ_INT(pp_pool_close(c->pool, test_count_cb, &c->closed), 0);
  ASSERT_EQ_INT(pp_pool_close(c->pool, NULL, NULL), PP_ECLOSED);
}

void test_thr_caller_loop(void) {
  pp_pool_options opts;
  uv_loop_t loop;
  pp_future *f;
  uint32_t x = 3;
  thr_cl c;

  memset(&c, 0, sizeof(c));
  c.loop_thread = uv_thread_self();
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  c.pool = NEW_POOL(&loop, &opts);
  /* The loop's thread waits on a future by running its loop. */
  ASSERT_EQ_INT(pp_submit_future(c.pool, "mapf", &x, sizeof(x), &f), 0);
  ASSERT_EQ_INT(pp_future_wait(f, -1), 0);
  thr_check_mapf(pp_future_result(f), x);
  pp_future_free(f);
  ASSERT_EQ_INT(uv_thread_create(&c.tid, thr_cl_other, &c), 0);
  test_run_until(&loop, &c.closed, 1, "the close from another thread");
  ASSERT_EQ_INT(uv_thread_join(&c.tid), 0);
  ASSERT_EQ_INT(c.cbs, 50);
  ASSERT_EQ_INT(c.wrong_thread, 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Waiting for oneself is an error, not a hang ---------------------------------------- */

typedef struct thr_self {
  pp_future *pending;
  int wait_err, any_err, apply_err, poll_err;
  int calls;
} thr_self;

static void thr_self_cb(pp_pool *pool, pp_result *r, void *user) {
  thr_self *s = (thr_self *) user;
  pp_result out;

  (void) r;
  s->calls++;
  s->wait_err = pp_future_wait(s->pending, -1);
  s->any_err = pp_future_wait_any(&s->pending, 1, 1000, NULL);
  s->poll_err = pp_future_wait(s->pending, 0);
  s->apply_err = pp_apply(pool, "echo", "a", 1, &out);
  pp_result_free(&out);
}

void test_thr_wait_in_callback(void) {
  pp_pool_options opts;
  thr_self s;
  pp_future *f;
  pp_pool *pool;

  memset(&s, 0, sizeof(s));
  test_options(&opts);
  opts.workers = 2;
  /* One task per worker at a time: the echoes run, in order, in the worker that does
   * not sleep. */
  opts.pipeline_depth = 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_submit_future(pool, "sleep_forever", "x", 1, &s.pending), 0);
  /* Its callback runs on the pool's own thread, from where waiting would wait for
   * itself. */
  ASSERT_EQ_INT(pp_submit(pool, "echo", "a", 1, thr_self_cb, &s, NULL), 0);
  ASSERT_EQ_INT(pp_submit_future(pool, "echo", "b", 1, &f), 0);
  ASSERT_EQ_INT(pp_future_wait(f, -1), 0);
  ASSERT_EQ_INT(pp_future_cancel(s.pending), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(s.calls, 1);
  ASSERT_EQ_INT(s.wait_err, PP_EINVAL);
  ASSERT_EQ_INT(s.any_err, PP_EINVAL);
  ASSERT_EQ_INT(s.poll_err, PP_ETIMEDOUT);
  ASSERT_EQ_INT(s.apply_err, PP_EINVAL);
  pp_future_free(f);
  pp_future_free(s.pending);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- A single thread pays nothing: no thread of the pool's own until it is needed ------- */

#ifdef __linux__
static int thr_threads_now(void) {
  uv_fs_t req;
  int n = uv_fs_scandir(NULL, &req, "/proc/self/task", 0, NULL);

  uv_fs_req_cleanup(&req);
  return n;
}
#endif

void test_thr_no_thread_until_needed(void) {
#ifdef __linux__
  pp_pool_options opts;
  pp_input in[3];
  pp_result out[3], r;
  pp_future *f;
  pp_pool *pool;
  int before, during;

  test_options(&opts);
  opts.workers = 1;
  /* libuv's own threads (its thread pool, the forkserver's watcher) come with the first
   * pool: count after one. */
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(APPLY(pool, "echo", "a", 1, &r), 0);
  pp_result_free(&r);
  before = thr_threads_now();
  ASSERT_EQ_INT(APPLY(pool, "echo", "a", 1, &r), 0);
  pp_result_free(&r);
  in[0].data = "x";
  in[0].len = 1;
  in[1] = in[0];
  in[2] = in[0];
  ASSERT_EQ_INT(pp_map(pool, "echo", 3, in, out), 0);
  pp_result_free(&out[0]);
  pp_result_free(&out[1]);
  pp_result_free(&out[2]);
  ASSERT_EQ_INT(pp_submit(pool, "echo", "a", 1, NULL, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(thr_threads_now(), before);
  /* A future hands the loop to a thread of the pool's own. */
  ASSERT_EQ_INT(pp_submit_future(pool, "echo", "a", 1, &f), 0);
  ASSERT_EQ_INT(pp_future_wait(f, -1), 0);
  /* At least one more (ThreadSanitizer starts a thread of its own with the first one a
   * program makes), and one fewer once the pool is gone. */
  during = thr_threads_now();
  ASSERT_TRUE(during > before);
  pp_future_free(f);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(thr_threads_now(), during - 1);
#else
  test_skip("counts threads through /proc");
#endif
}

/* ---- Pools made, used and closed by several threads at once -------------------------- */

typedef struct thr_own {
  pp_pool *pool;           /* made by the thread itself when NULL */
  int failed;
  uv_thread_t tid;
} thr_own;

static void thr_own_pool(void *arg) {
  thr_own *o = (thr_own *) arg;
  int *failed = &o->failed;
  pp_pool_options opts;
  pp_pool *pool = o->pool;
  pp_future *f = NULL;
  pp_result r;
  uint32_t x = 11;
  int i;

  test_options(&opts);
  opts.workers = 1;
  if (pool == NULL && pp_pool_new(&pool, NULL, &opts) != 0) {
    *failed = 1;
    return;
  }
  for (i = 0; i < 20; i++) {
    if (pp_apply(pool, "mapf", &x, sizeof(x), &r) != 0)
      *failed = 1;
    pp_result_free(&r);
  }
  if (pp_submit_future(pool, "mapf", &x, sizeof(x), &f) != 0 || pp_future_wait(f, -1) != 0 ||
      pp_future_result(f)->status != 0)
    *failed = 1;
  pp_future_free(f);
  if (pp_pool_close(pool, NULL, NULL) != 0)
    *failed = 1;
}

void test_thr_pools_in_parallel(void) {
  thr_own own[4];
  pp_pool_options opts;
  pp_pool *probe;
  int i;

  /* Skips where the method does not exist, before any thread starts. */
  test_options(&opts);
  opts.workers = 1;
  probe = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_pool_close(probe, NULL, NULL), 0);
  memset(own, 0, sizeof(own));
  /* A fork pool forks its helper in pp_pool_new: the header says to make fork pools
   * before threads start (a lock another thread holds, in malloc say, would stay locked
   * in the helper), so here they are made first and only used by the threads. */
  if (test_method == PP_START_FORK)
    for (i = 0; i < 4; i++)
      own[i].pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 4; i++)
    ASSERT_EQ_INT(uv_thread_create(&own[i].tid, thr_own_pool, &own[i]), 0);
  for (i = 0; i < 4; i++) {
    ASSERT_EQ_INT(uv_thread_join(&own[i].tid), 0);
    ASSERT_EQ_INT(own[i].failed, 0);
  }
}
