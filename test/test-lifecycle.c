/* Cancel, close and terminate; what result callbacks may and may not do; pools on the
 * caller's loop and pools made by a thread that then ends. Every task gets exactly one
 * callback whatever ends it, and every close callback runs once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static pp_pool *loop_pool(uv_loop_t *loop, unsigned workers) {
  pp_pool_options opts;

  ASSERT_EQ_INT(uv_loop_init(loop), 0);
  test_options(&opts);
  opts.workers = workers;
  return NEW_POOL(loop, &opts);
}

static pp_pool *private_pool(unsigned workers) {
  pp_pool_options opts;

  test_options(&opts);
  opts.workers = workers;
  return NEW_POOL(NULL, &opts);
}

static void check_echo(pp_pool *pool) {
  pp_result r;

  APPLY(pool, "echo", "again", 5, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "again", 5);
  pp_result_free(&r);
}

/* The task's one callback came, with status want. */
static void check_rec(test_rec *rec, int want) {
  ASSERT_EQ_INT(rec->calls, 1);
  ASSERT_STATUS(rec->res, want);
  pp_result_free(&rec->res);
}

/* pp_submit with any callback, marked as test_submit marks it. */
static void submit_cb(pp_pool *pool, const char *task, const void *arg, size_t len,
                      pp_result_cb cb, void *user, uint64_t *id) {
  int err;

  test_in_submit++;
  err = pp_submit(pool, task, arg, len, cb, user, id);
  test_in_submit--;
  ASSERT_EQ_INT(err, 0);
}

/* ---- Cancel ------------------------------------------------------------------------ */

void test_cancel_queued(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 1);
  test_rec sleeper, queued;
  int terms = 0;

  /* One worker, busy for ever with the first task: the second waits, queued or sent
   * ahead to it. */
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &sleeper), 0);
  ASSERT_EQ_INT(test_submit(pool, "echo", "q", 1, &queued), 0);
  ASSERT_EQ_INT(pp_cancel(pool, queued.id), 0);
  /* The header: the callback runs before pp_cancel returns. */
  ASSERT_EQ_INT(queued.calls, 1);
  ASSERT_STATUS(queued.res, PP_ECANCELED);
  ASSERT_EQ_INT(pp_cancel(pool, queued.id), PP_ENOENT);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &terms), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(terms, 1);
  check_rec(&queued, PP_ECANCELED);
  check_rec(&sleeper, PP_ECANCELED);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_cancel_running(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 1);
  char marker[1024];
  test_rec rec, behind[3];
  long worker;
  int closes = 0;

  worker = (long) test_worker_pid(pool);
  test_marker_path(marker, sizeof(marker), "cancel");
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", marker, strlen(marker), &rec), 0);
  /* One worker: these wait behind the sleeper, in the queue or sent ahead to it. */
  test_submit_echoes(pool, behind, 3);
  test_wait_marker(&loop, marker, &rec);
  ASSERT_EQ_INT(pp_cancel(pool, rec.id), 0);
  /* The header: the callback runs before pp_cancel returns, and the worker is killed. */
  check_rec(&rec, PP_ECANCELED);
  ASSERT_EQ_INT(pp_cancel(pool, rec.id), PP_ENOENT);
  test_wait_process_gone(worker, "the worker of a canceled task");
  /* A replacement serves what waited behind, and what comes next. */
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  test_check_echoes(behind, 3);
  check_echo(pool);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_cancel_unknown(void) {
  pp_pool *pool = private_pool(1);
  pp_result r;

  ASSERT_EQ_INT(pp_cancel(pool, 0), PP_ENOENT);
  ASSERT_EQ_INT(pp_cancel(pool, 999999), PP_ENOENT);
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_STATUS(r, 0);
  /* Finished: no longer pending. */
  ASSERT_EQ_INT(pp_cancel(pool, r.id), PP_ENOENT);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- Close ------------------------------------------------------------------------- */

#define CLOSE_N 20

void test_close_drains(void) {
  pp_pool *pool = private_pool(2);
  test_rec recs[CLOSE_N];
  uint32_t xs[CLOSE_N];
  uint64_t y;
  int closes = 0;
  size_t i;

  for (i = 0; i < CLOSE_N; i++) {
    xs[i] = (uint32_t) (i + 1000u);
    ASSERT_EQ_INT(test_submit(pool, "mapf", &xs[i], sizeof(xs[i]), &recs[i]), 0);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  ASSERT_EQ_INT(closes, 1);
  for (i = 0; i < CLOSE_N; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    ASSERT_EQ_INT(recs[i].res.len, sizeof(y));
    memcpy(&y, recs[i].res.data, sizeof(y));
    ASSERT_EQ_U64(y, test_mapf(xs[i]));
    pp_result_free(&recs[i].res);
  }
}

void test_caller_loop(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 2);
  test_rec recs[CLOSE_N];
  int closes = 0, second = 0;
  size_t i;

  /* pp_apply runs the caller's loop for as long as it needs. */
  check_echo(pool);
  for (i = 0; i < CLOSE_N; i++)
    ASSERT_EQ_INT(test_submit(pool, "echo", &i, sizeof(i), &recs[i]), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &second), PP_ECLOSED);
  /* Returns once the pool has closed every handle it had on the loop. */
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(second, 0);
  for (i = 0; i < CLOSE_N; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    ASSERT_EQ_MEM(recs[i].res.data, recs[i].res.len, &i, sizeof(i));
    pp_result_free(&recs[i].res);
  }
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_submit_after_close(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 1);
  pp_input in[2] = { { "a", 1 }, { "b", 1 } };
  pp_result out[2], r;
  test_rec rec;
  int closes = 0;

  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  ASSERT_EQ_INT(test_submit(pool, "echo", "x", 1, &rec), PP_ECLOSED);
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_STATUS(r, PP_ECLOSED);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_map(pool, "echo", 2, in, out), PP_ECLOSED);
  ASSERT_STATUS(out[0], PP_ECLOSED);
  ASSERT_STATUS(out[1], PP_ECLOSED);
  pp_result_free(&out[0]);
  pp_result_free(&out[1]);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(rec.calls, 0);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Terminate --------------------------------------------------------------------- */

#define TERM_QUEUED 4

void test_terminate(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 2);
  char markers[2][1024];
  test_rec sleepers[2], queued[TERM_QUEUED];
  int terms = 0;
  size_t i;

  for (i = 0; i < 2; i++) {
    test_marker_path(markers[i], sizeof(markers[i]), i == 0 ? "term0" : "term1");
    ASSERT_EQ_INT(test_submit(pool, "sleep_forever", markers[i], strlen(markers[i]),
                              &sleepers[i]), 0);
  }
  /* Both workers sleep for ever: these wait, queued or sent ahead to a sleeper. */
  for (i = 0; i < TERM_QUEUED; i++)
    ASSERT_EQ_INT(test_submit(pool, "echo", "q", 1, &queued[i]), 0);
  for (i = 0; i < 2; i++)
    test_wait_marker(&loop, markers[i], &sleepers[i]);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &terms), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(terms, 1);
  for (i = 0; i < 2; i++)
    check_rec(&sleepers[i], PP_ECANCELED);
  for (i = 0; i < TERM_QUEUED; i++)
    check_rec(&queued[i], PP_ECANCELED);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_terminate_private(void) {
  pp_pool *pool = private_pool(1);
  test_rec sleeper, queued[TERM_QUEUED];
  int terms = 0;
  size_t i;

  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &sleeper), 0);
  for (i = 0; i < TERM_QUEUED; i++)
    ASSERT_EQ_INT(test_submit(pool, "echo", "q", 1, &queued[i]), 0);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &terms), 0);
  ASSERT_EQ_INT(terms, 1);
  check_rec(&sleeper, PP_ECANCELED);
  for (i = 0; i < TERM_QUEUED; i++)
    check_rec(&queued[i], PP_ECANCELED);
}

static int during_close_terms;

static void terminate_from_cb(pp_pool *pool, pp_result *r, void *user) {
  test_rec_cb(pool, r, user);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &during_close_terms), 0);
}

/* pp_pool_close would wait for ever for the sleeper; a terminate from a result callback
 * hurries it. Two workers, so that the echo finishes whichever task starts first. */
void test_terminate_during_close(void) {
  pp_pool *pool = private_pool(2);
  test_rec echo, sleeper;
  int closes = 0;

  memset(&echo, 0, sizeof(echo));
  submit_cb(pool, "echo", "e", 1, terminate_from_cb, &echo, &echo.id);
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &sleeper), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(during_close_terms, 1);
  check_rec(&echo, 0);
  check_rec(&sleeper, PP_ECANCELED);
}

void test_close_then_terminate(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 1);
  test_rec sleeper, late;
  int closes = 0, terms = 0, extra = 0;

  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &sleeper), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &extra), PP_ECLOSED);
  ASSERT_EQ_INT(test_submit(pool, "echo", "x", 1, &late), PP_ECLOSED);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &terms), 0);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &extra), PP_ECLOSED);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(terms, 1);
  ASSERT_EQ_INT(extra, 0);
  check_rec(&sleeper, PP_ECANCELED);
  ASSERT_EQ_INT(late.calls, 0);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* pipeline_depth 1: a task that never ends holds up its own worker only; the tasks
 * behind it all run in the other one. */
void test_pipeline_one(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  test_rec sleeper, behind[8];
  int terms = 0;
  size_t i;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  opts.pipeline_depth = 1;
  pool = NEW_POOL(&loop, &opts);
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &sleeper), 0);
  test_submit_echoes(pool, behind, 8);
  for (i = 0; i < 8; i++)
    test_run_until(&loop, &behind[i].calls, 1, "a task behind one that never ends");
  test_check_echoes(behind, 8);
  ASSERT_EQ_INT(sleeper.calls, 0);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &terms), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(terms, 1);
  check_rec(&sleeper, PP_ECANCELED);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- What a result callback may do ------------------------------------------------- */

typedef struct blocking_ctx {
  test_rec rec;
  int private_loop;
} blocking_ctx;

/* The blocking functions, called from a result callback, refuse with PP_EINVAL. */
static void blocking_cb(pp_pool *pool, pp_result *r, void *user) {
  blocking_ctx *ctx = (blocking_ctx *) user;
  pp_input in = { "x", 1 };
  pp_result inner;

  test_rec_cb(pool, r, &ctx->rec);
  memset(&inner, 0, sizeof(inner));
  ASSERT_EQ_INT(pp_apply(pool, "echo", "x", 1, &inner), PP_EINVAL);
  pp_result_free(&inner);
  ASSERT_EQ_INT(pp_pool_wait(pool), PP_EINVAL);
  memset(&inner, 0, sizeof(inner));
  ASSERT_EQ_INT(pp_map(pool, "echo", 1, &in, &inner), PP_EINVAL);
  pp_result_free(&inner);
  if (ctx->private_loop)
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), PP_EINVAL);
}

void test_callback_blocking_caller(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 1);
  blocking_ctx ctx;
  int closes = 0;

  memset(&ctx, 0, sizeof(ctx));
  submit_cb(pool, "echo", "b", 1, blocking_cb, &ctx, &ctx.rec.id);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  check_rec(&ctx.rec, 0);
  check_echo(pool);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_callback_blocking_private(void) {
  pp_pool *pool = private_pool(1);
  blocking_ctx ctx;

  memset(&ctx, 0, sizeof(ctx));
  ctx.private_loop = 1;
  submit_cb(pool, "echo", "b", 1, blocking_cb, &ctx, &ctx.rec.id);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  check_rec(&ctx.rec, 0);
  check_echo(pool);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

#define CHAIN_N 30
#define CHAIN_CANCEL_AT 10

typedef struct chain {
  uint32_t sent[CHAIN_N];
  int done;
  test_rec sleeper;
  int closes;
} chain;

/* Each result submits the next task; one of them also submits and cancels a sleeper; the
 * last closes the pool: all from inside result callbacks, as the header allows. */
static void chain_cb(pp_pool *pool, pp_result *r, void *user) {
  chain *c = (chain *) user;
  uint32_t i = (uint32_t) c->done;

  ASSERT_EQ_INT(test_in_submit, 0);
  ASSERT_STATUS(*r, 0);
  ASSERT_EQ_MEM(r->data, r->len, &c->sent[i], sizeof(c->sent[i]));
  c->done++;
  if (c->done == CHAIN_CANCEL_AT) {
    ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &c->sleeper), 0);
    ASSERT_EQ_INT(pp_cancel(pool, c->sleeper.id), 0);
  }
  if (c->done < CHAIN_N) {
    c->sent[i + 1] = i + 1;
    submit_cb(pool, "echo", &c->sent[i + 1], sizeof(c->sent[i + 1]), chain_cb, c, NULL);
  } else {
    ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &c->closes), 0);
  }
}

void test_callback_reentry(void) {
  uv_loop_t loop;
  pp_pool *pool = loop_pool(&loop, 1);
  chain c;

  memset(&c, 0, sizeof(c));
  submit_cb(pool, "echo", &c.sent[0], sizeof(c.sent[0]), chain_cb, &c, NULL);
  test_run_loop(&loop);
  ASSERT_EQ_INT(c.done, CHAIN_N);
  ASSERT_EQ_INT(c.closes, 1);
  check_rec(&c.sleeper, PP_ECANCELED);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- thread-exit: the thread that made the pool ends; its workers must not --------- */

typedef struct thread_made {
  pp_pool *pool;
  uint64_t pid;
} thread_made;

static void make_pool(void *arg) {
  thread_made *t = (thread_made *) arg;

  t->pool = private_pool(1);
  t->pid = test_worker_pid(t->pool);
}

void test_thread_exit(void) {
  uv_thread_t thread;
  thread_made t;
  int i;

  memset(&t, 0, sizeof(t));
  ASSERT_EQ_INT(uv_thread_create(&thread, make_pool, &t), 0);
  ASSERT_EQ_INT(uv_thread_join(&thread), 0);
  /* The pool now belongs to this thread, the one that runs its loop from here on. One
   * worker, never retired: the same process must serve every task. */
  for (i = 0; i < 10; i++)
    ASSERT_EQ_U64(test_worker_pid(t.pool), t.pid);
  ASSERT_EQ_INT(pp_pool_close(t.pool, NULL, NULL), 0);
}
