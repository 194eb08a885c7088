/* Waits across threads and loops (issue 22, items 4 to 10): a wait on a caller's loop
 * woken by another pool's future, a wait on a loop that ran dry, limits too large for
 * nanoseconds, a stream from another thread on a pool that gave up, another thread's
 * pp_map_array on a loop that ran dry, a forked task that asks its parent's pool for its
 * counters, and the largest max_message_bytes the header allows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* A bound on a hang, never reached by a correct run: a test that reaches it fails. */
#define XW_BOUND_MS 30000

/* ---- Helpers ------------------------------------------------------------------------ */

static pp_pool *xw_pool(uv_loop_t *loop, unsigned workers) {
  pp_pool_options opts;

  test_options(&opts);
  opts.workers = workers;
  return NEW_POOL(loop, &opts);
}

static void xw_check_echo(pp_future *f, const char *want) {
  const pp_result *r = pp_future_result(f);

  ASSERT_NOT_NULL(r);
  ASSERT_STATUS(*r, 0);
  ASSERT_EQ_MEM(r->data, r->len, want, strlen(want));
}

/* The handles that keep a loop alive, unreferenced, as if someone had closed them: the
 * loop runs dry while the pool's work is pending, and nothing is freed, so that they are
 * referenced again afterwards and the pool ends as any other. */
#define XW_MAX_HANDLES 256
typedef struct xw_unref {
  uv_handle_t *h[XW_MAX_HANDLES];
  size_t n;
} xw_unref;

static void xw_unref_one(uv_handle_t *h, void *arg) {
  xw_unref *u = (xw_unref *) arg;

  if (!uv_has_ref(h) || uv_is_closing(h))
    return;
  ASSERT_TRUE(u->n < XW_MAX_HANDLES);
  uv_unref(h);
  u->h[u->n++] = h;
}

static void xw_dry(uv_loop_t *loop, xw_unref *u) {
  u->n = 0;
  uv_walk(loop, xw_unref_one, u);
  ASSERT_TRUE(u->n > 0);
  ASSERT_EQ_INT(uv_loop_alive(loop), 0);
}

/* Before the loop runs again: a handle closed meanwhile is not freed before that. */
static void xw_undry(xw_unref *u) {
  size_t i;

  for (i = 0; i < u->n; i++)
    uv_ref(u->h[i]);
  u->n = 0;
}

/* Runs the loop until the pool has n tasks running (sent to a worker). */
static void xw_run_until_running(uv_loop_t *loop, pp_pool *pool, uint64_t n) {
  uint64_t start = uv_hrtime();
  pp_pool_stats st;

  for (;;) {
    ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
    if (st.running >= n)
      return;
    ASSERT_LE_INT((long long) ((uv_hrtime() - start) / 1000000), XW_BOUND_MS);
    uv_run(loop, UV_RUN_NOWAIT);
    uv_sleep(5);
  }
}

/* ---- Item 4: a wait that runs a loop is woken by another pool's future ---------------- */

/* The loop's thread waits for a future of its own pool that never comes and one of a
 * pool whose loop another thread runs: that one's result ends the wait, with or without
 * a limit. */
void test_xw_wait_any_pools(void) {
  uv_loop_t loop;
  pp_pool *here, *away;
  pp_future *f[2];
  size_t index = 99;
  int closed = 0;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  here = xw_pool(&loop, 1);
  away = xw_pool(NULL, 1);
  ASSERT_EQ_INT(pp_submit_future(here, "sleep_forever", NULL, 0, &f[0]), 0);

  ASSERT_EQ_INT(pp_submit_future(away, "echo", "a", 1, &f[1]), 0);
  ASSERT_EQ_INT(pp_future_wait_any(f, 2, XW_BOUND_MS, &index), 0);
  ASSERT_EQ_INT(index, 1);
  xw_check_echo(f[1], "a");
  pp_future_free(f[1]);

  /* No limit: before, this never returned. */
  ASSERT_EQ_INT(pp_submit_future(away, "echo", "b", 1, &f[1]), 0);
  index = 99;
  ASSERT_EQ_INT(pp_future_wait_any(f, 2, -1, &index), 0);
  ASSERT_EQ_INT(index, 1);
  xw_check_echo(f[1], "b");
  pp_future_free(f[1]);

  /* The other future first: the lowest index done is still the one given. */
  ASSERT_EQ_INT(pp_submit_future(away, "echo", "c", 1, &f[1]), 0);
  {
    pp_future *g[2];
    g[0] = f[1];
    g[1] = f[0];
    index = 99;
    ASSERT_EQ_INT(pp_future_wait_any(g, 2, -1, &index), 0);
    ASSERT_EQ_INT(index, 0);
  }
  xw_check_echo(f[1], "c");
  pp_future_free(f[1]);

  ASSERT_NULL(pp_future_result(f[0]));
  ASSERT_EQ_INT(pp_future_cancel(f[0]), 0);
  ASSERT_STATUS(*pp_future_result(f[0]), PP_ECANCELED);
  pp_future_free(f[0]);
  ASSERT_EQ_INT(pp_pool_close(away, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(here, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Item 5: a wait on a loop that ran dry ------------------------------------------ */

/* The loop's handles are gone (unreferenced here) while a task is pending: the wait
 * returns PP_ECLOSED at once, as pp_pool_wait does, with a limit or without one; and a
 * wait over a future of another thread's pool too still waits for that one. */
void test_xw_wait_dry(void) {
  uv_loop_t loop;
  pp_pool *pool, *away;
  pp_future *f, *g[2];
  xw_unref u;
  size_t index = 99;
  int closed = 0;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  pool = xw_pool(&loop, 1);
  away = xw_pool(NULL, 1);
  ASSERT_EQ_INT(pp_submit_future(pool, "sleep_forever", NULL, 0, &f), 0);
  xw_run_until_running(&loop, pool, 1);

  xw_dry(&loop, &u);
  ASSERT_EQ_INT(pp_pool_wait(pool), PP_ECLOSED);
  ASSERT_EQ_INT(pp_future_wait(f, XW_BOUND_MS), PP_ECLOSED);
  ASSERT_EQ_INT(pp_future_wait(f, -1), PP_ECLOSED);
  ASSERT_EQ_INT(pp_future_wait_any(&f, 1, -1, &index), PP_ECLOSED);
  ASSERT_EQ_INT(index, 99);
  ASSERT_EQ_INT(pp_future_wait(f, 0), PP_ETIMEDOUT);
  g[0] = f;
  ASSERT_EQ_INT(pp_submit_future(away, "echo", "d", 1, &g[1]), 0);
  ASSERT_EQ_INT(pp_future_wait_any(g, 2, -1, &index), 0);
  ASSERT_EQ_INT(index, 1);
  xw_check_echo(g[1], "d");
  pp_future_free(g[1]);
  ASSERT_NULL(pp_future_result(f));
  xw_undry(&u);

  ASSERT_EQ_INT(pp_future_cancel(f), 0);
  ASSERT_STATUS(*pp_future_result(f), PP_ECANCELED);
  pp_future_free(f);
  ASSERT_EQ_INT(pp_pool_close(away, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Item 6: limits whose nanoseconds overflow 64 bits ------------------------------ */

static void xw_wait_long(pp_pool *pool, int64_t ms, const char *arg) {
  pp_future *f;
  size_t index = 99;

  ASSERT_EQ_INT(pp_submit_future(pool, "echo", arg, strlen(arg), &f), 0);
  ASSERT_EQ_INT(pp_future_wait(f, ms), 0);
  xw_check_echo(f, arg);
  pp_future_free(f);
  ASSERT_EQ_INT(pp_submit_future(pool, "echo", arg, strlen(arg), &f), 0);
  ASSERT_EQ_INT(pp_future_wait_any(&f, 1, ms, &index), 0);
  ASSERT_EQ_INT(index, 0);
  xw_check_echo(f, arg);
  pp_future_free(f);
}

/* INT64_MAX and the first value past 64 bits of nanoseconds are limits like any other:
 * the wait ends with the result, on a thread that sleeps and on one that runs a loop. */
void test_xw_deadline_max(void) {
  const int64_t past = (int64_t) (UINT64_MAX / 1000000u) + 1;
  uv_loop_t loop;
  pp_pool *pool;
  int closed = 0;

  pool = xw_pool(NULL, 1);
  xw_wait_long(pool, INT64_MAX, "max");
  xw_wait_long(pool, past, "past");
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  pool = xw_pool(&loop, 1);
  xw_wait_long(pool, INT64_MAX, "loop max");
  xw_wait_long(pool, past, "loop past");
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Item 7: a stream from another thread on a pool that gave up -------------------- */

#define XW_INPUTS 100000

typedef struct xw_stream {
  pp_pool *pool;
  size_t nexts, eaches;
  int status0;
  int ret;
  int map_ret;
  int map_status[3];
  uv_thread_t tid;
} xw_stream;

static int xw_next(void *user, pp_input *in) {
  xw_stream *s = (xw_stream *) user;

  if (s->nexts == XW_INPUTS)
    return 0;
  s->nexts++;
  in->data = "x";
  in->len = 1;
  return 1;
}

static void xw_each(void *user, size_t index, pp_result *r) {
  xw_stream *s = (xw_stream *) user;

  if (index == 0)
    s->status0 = r->status;
  s->eaches++;
}

static void xw_stream_thread(void *arg) {
  xw_stream *s = (xw_stream *) arg;
  pp_input in[3];
  pp_result out[3];
  int i;

  s->ret = pp_map_stream(s->pool, "echo", xw_next, xw_each, s, 0);
  for (i = 0; i < 3; i++) {
    in[i].data = "y";
    in[i].len = 1;
  }
  s->map_ret = pp_map(s->pool, "echo", 3, in, out);
  for (i = 0; i < 3; i++) {
    s->map_status[i] = out[i].status;
    pp_result_free(&out[i]);
  }
}

/* Every worker fails its initializer, so the pool gives up: a stream from another
 * thread takes one input, which fails with PP_EINIT, and no more, as on the loop's
 * thread (before, next() was called for every input). */
void test_xw_stream_broken(void) {
  pp_pool_options opts;
  xw_stream s;
  test_rec rec;
  int i;

  test_options(&opts);
  opts.workers = 1;
  opts.initializer = "init_fail";
  memset(&s, 0, sizeof(s));
  s.pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(test_submit(s.pool, "echo", "q", 1, &rec), 0);
  ASSERT_EQ_INT(pp_pool_wait(s.pool), 0);
  ASSERT_STATUS(rec.res, PP_EINIT);
  pp_result_free(&rec.res);
  ASSERT_NOT_NULL(pp_pool_error(s.pool));

  ASSERT_EQ_INT(uv_thread_create(&s.tid, xw_stream_thread, &s), 0);
  ASSERT_EQ_INT(uv_thread_join(&s.tid), 0);
  ASSERT_EQ_INT(s.ret, PP_EINIT);
  ASSERT_EQ_INT(s.nexts, 1);
  ASSERT_EQ_INT(s.eaches, 1);
  ASSERT_EQ_INT(s.status0, PP_EINIT);
  ASSERT_EQ_INT(s.map_ret, PP_EINIT);
  for (i = 0; i < 3; i++)
    ASSERT_EQ_INT(s.map_status[i], PP_EINIT);

  ASSERT_EQ_INT(pp_pool_close(s.pool, NULL, NULL), 0);
}

/* ---- Item 8: another thread's pp_map_array on a loop that ran dry ------------------- */

#define XW_ARRAY_N 4

typedef struct xw_array {
  pp_pool *pool;
  int statuses[XW_ARRAY_N];
  int ret;
  uv_mutex_t mu;
  int done;
  uv_thread_t tid;
} xw_array;

static void xw_array_thread(void *arg) {
  xw_array *a = (xw_array *) arg;
  int ret;

  ret = pp_map_array(a->pool, "sleep_forever", XW_ARRAY_N, NULL, 0, NULL, 0, a->statuses);
  uv_mutex_lock(&a->mu);
  a->ret = ret;
  a->done = 1;
  uv_mutex_unlock(&a->mu);
}

static int xw_array_done(xw_array *a) {
  int done;

  uv_mutex_lock(&a->mu);
  done = a->done;
  uv_mutex_unlock(&a->mu);
  return done;
}

/* The items hang; the loop's thread then finds its loop dry (its handles gone): the run
 * another thread waits for ends, its items canceled, as the loop's thread's own would.
 * Before, that thread waited for ever. */
void test_xw_array_dry(void) {
  uv_loop_t loop;
  xw_array a;
  xw_unref u;
  uint64_t start;
  int closed = 0, i;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  memset(&a, 0, sizeof(a));
  ASSERT_EQ_INT(uv_mutex_init(&a.mu), 0);
  a.pool = xw_pool(&loop, 2);
  ASSERT_EQ_INT(uv_thread_create(&a.tid, xw_array_thread, &a), 0);
  xw_run_until_running(&loop, a.pool, 2);

  xw_dry(&loop, &u);
  ASSERT_EQ_INT(pp_pool_wait(a.pool), PP_ECLOSED);
  start = uv_hrtime();
  while (!xw_array_done(&a)) {
    ASSERT_LE_INT((long long) ((uv_hrtime() - start) / 1000000), XW_BOUND_MS);
    uv_sleep(5);
  }
  xw_undry(&u);
  ASSERT_EQ_INT(uv_thread_join(&a.tid), 0);
  ASSERT_EQ_INT(a.ret, PP_ECANCELED);
  for (i = 0; i < XW_ARRAY_N; i++)
    ASSERT_EQ_INT(a.statuses[i], PP_ECANCELED);

  ASSERT_EQ_INT(pp_pool_close(a.pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  uv_mutex_destroy(&a.mu);
}

/* ---- Item 9: a forked task and its parent's pool ------------------------------------ */

/* Set in the parent before the second pool's workers are forked: under fork they
 * inherit a pool that runs on its own thread, and a future of it. */
static pp_pool *xw_parent_pool;
static pp_future *xw_parent_future;

/* Every call on the parent's pool and future is refused, and nothing is read or posted;
 * replies "ok" if so. */
int test_task_xw_parent(pp_call *call, const void *arg, size_t len) {
  pp_pool_stats st;
  pp_future *f = NULL;
  int e;

  (void) arg;
  (void) len;
  if (xw_parent_pool == NULL)
    return pp_reply(call, "ok", 2);  /* spawn and forkserver: a fresh program */
  memset(&st, 0xAB, sizeof(st));
  if ((e = pp_pool_stats_get(xw_parent_pool, &st)) != PP_EINVAL)
    return pp_fail(call, "pp_pool_stats_get returned %s", pp_errname(e));
  if (pp_pool_error(xw_parent_pool) != NULL)
    return pp_fail(call, "pp_pool_error gave a message");
  if ((e = pp_submit_future(xw_parent_pool, "echo", "x", 1, &f)) != PP_EINVAL || f != NULL)
    return pp_fail(call, "pp_submit_future returned %s", pp_errname(e));
  if (pp_future_result(xw_parent_future) != NULL)
    return pp_fail(call, "pp_future_result gave a result");
  if ((e = pp_future_wait(xw_parent_future, 0)) != PP_EINVAL)
    return pp_fail(call, "pp_future_wait returned %s", pp_errname(e));
  if ((e = pp_future_cancel(xw_parent_future)) != PP_EINVAL)
    return pp_fail(call, "pp_future_cancel returned %s", pp_errname(e));
  pp_future_free(xw_parent_future);
  if ((e = pp_map_array(xw_parent_pool, "echo", 1, "x", 1, NULL, 0, NULL)) != PP_EINVAL)
    return pp_fail(call, "pp_map_array returned %s", pp_errname(e));
  return pp_reply(call, "ok", 2);
}

void test_xw_fork_parent(void) {
  pp_pool *first = xw_pool(NULL, 1), *second;
  pp_future *f;
  pp_pool_stats st;
  pp_result r;

  /* A future hands the first pool's loop to a thread of its own. */
  ASSERT_EQ_INT(pp_submit_future(first, "echo", "f", 1, &f), 0);
  ASSERT_EQ_INT(pp_future_wait(f, XW_BOUND_MS), 0);
  xw_check_echo(f, "f");
  xw_parent_pool = first;
  xw_parent_future = f;
  second = xw_pool(NULL, 1);
  APPLY(second, "xw_parent", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "ok", 2);
  pp_result_free(&r);
  xw_parent_pool = NULL;
  xw_parent_future = NULL;
  /* The first pool and its future are untouched. */
  xw_check_echo(f, "f");
  pp_future_free(f);
  ASSERT_EQ_INT(pp_pool_stats_get(first, &st), 0);
  ASSERT_EQ_U64(st.submitted, 1);
  ASSERT_EQ_U64(st.done, 1);
  ASSERT_EQ_INT(pp_pool_close(second, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(first, NULL, NULL), 0);
}

/* ---- Item 10: the largest max_message_bytes ----------------------------------------- */

void test_xw_max_message(void) {
  const size_t most = (size_t) 0xFFFFFFFFu - ((size_t) 1 << 20) + 1;  /* 4 GiB - 1 MiB */
  pp_pool_options opts;
  pp_pool *pool = NULL;
  pp_result r;

  test_options(&opts);
  opts.workers = 1;
  opts.max_message_bytes = most + 1;
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &opts), PP_EINVAL);
  ASSERT_NULL(pool);
  opts.max_message_bytes = most;
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, "echo", "m", 1, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "m", 1);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}
