/* Regression tests for the defects issue 17 listed in the core: each test names its
 * item. Every one asserts the rule that was broken: one outcome per accepted task, no
 * task run twice, no call that hangs, no memory used after it was given back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "../src/serve.h"

#ifdef _WIN32
#  include <direct.h>
#  include <windows.h>
#  define chdir _chdir
#else
#  include <pthread.h>
#  include <signal.h>
#  include <unistd.h>
#endif

/* ---- Tasks --------------------------------------------------------------------------- */

/* The argument is a directory and a count, "<n>:<dir>": writes "<dir>/<pid>", then waits
 * until n such files exist, so that it succeeds only when n workers run it at once. */
int test_task_rendezvous(pp_call *call, const void *arg, size_t len) {
  char buf[1024], path[1100];
  unsigned n, i;
  const char *dir;
  FILE *f;

  if (len == 0 || len >= sizeof(buf))
    return pp_fail(call, "rendezvous: bad argument");
  memcpy(buf, arg, len);
  buf[len] = '\0';
  n = (unsigned) strtoul(buf, NULL, 10);
  dir = strchr(buf, ':');
  if (dir == NULL)
    return pp_fail(call, "rendezvous: bad argument");
  dir++;
  snprintf(path, sizeof(path), "%s/%ld", dir, (long) uv_os_getpid());
  f = fopen(path, "w");
  if (f == NULL)
    return pp_fail(call, "rendezvous: cannot create %s", path);
  fclose(f);
  /* Bounded, so that a pool that never starts n workers fails the test, not hangs it. */
  for (i = 0; i < 3000; i++) {
    uv_fs_t req;
    uv_dirent_t ent;
    unsigned found = 0;
    if (uv_fs_scandir(NULL, &req, dir, 0, NULL) >= 0)
      while (uv_fs_scandir_next(&req, &ent) == 0)
        found++;
    uv_fs_req_cleanup(&req);
    if (found >= n)
      return 0;
    uv_sleep(10);
  }
  return pp_fail(call, "rendezvous: fewer than %u workers ran at once", n);
}

/* Sleeps the uint32 milliseconds of its argument, then replies "slept". */
int test_task_sleep_ms(pp_call *call, const void *arg, size_t len) {
  uint32_t ms;

  if (len != sizeof(ms))
    return pp_fail(call, "sleep_ms: want a uint32");
  memcpy(&ms, arg, sizeof(ms));
  uv_sleep(ms);
  return pp_reply(call, "slept", 5);
}

/* Set in the parent before a second pool's workers are forked: under fork they inherit
 * it, a pointer to a pool that is not theirs. */
static pp_pool *parent_pool;

/* Every call on the parent's pool must be refused in a worker; replies "ok" if it was. */
int test_task_use_parent_pool(pp_call *call, const void *arg, size_t len) {
  pp_result r;
  pp_input in;
  int e;

  (void) arg;
  (void) len;
  if (parent_pool == NULL)
    return pp_reply(call, "ok", 2);  /* spawn and forkserver: a fresh program */
  if ((e = pp_cancel(parent_pool, 1)) != PP_EINVAL)
    return pp_fail(call, "pp_cancel returned %s", pp_errname(e));
  if ((e = pp_pool_wait(parent_pool)) != PP_EINVAL)
    return pp_fail(call, "pp_pool_wait returned %s", pp_errname(e));
  if ((e = pp_apply(parent_pool, "echo", "x", 1, &r)) != PP_EINVAL)
    return pp_fail(call, "pp_apply returned %s", pp_errname(e));
  pp_result_free(&r);
  in.data = "x";
  in.len = 1;
  if ((e = pp_map(parent_pool, "echo", 1, &in, &r)) != PP_EINVAL)
    return pp_fail(call, "pp_map returned %s", pp_errname(e));
  if ((e = pp_pool_terminate(parent_pool, NULL, NULL)) != PP_EINVAL)
    return pp_fail(call, "pp_pool_terminate returned %s", pp_errname(e));
  if ((e = pp_pool_close(parent_pool, NULL, NULL)) != PP_EINVAL)
    return pp_fail(call, "pp_pool_close returned %s", pp_errname(e));
  return pp_reply(call, "ok", 2);
}

/* ---- Helpers ------------------------------------------------------------------------- */

static pp_pool *pool_with(uv_loop_t *loop, unsigned workers, unsigned max_tasks,
                          uint64_t timeout_ms) {
  pp_pool_options opts;

  test_options(&opts);
  opts.workers = workers;
  opts.max_tasks_per_worker = max_tasks;
  opts.task_timeout_ms = timeout_ms;
  return NEW_POOL(loop, &opts);
}

#ifndef _WIN32
/* Counts, and removes, the files "mark_run" made for prefix: one per run. */
static int count_runs(const char *prefix) {
  char dir[1024], path[1200];
  const char *base = strrchr(prefix, '/');
  size_t size = sizeof(dir), blen;
  uv_fs_t req;
  uv_dirent_t ent;
  int found = 0;

  ASSERT_NOT_NULL(base);
  snprintf(dir, size, "%.*s", (int) (base - prefix), prefix);
  base++;
  blen = strlen(base);
  ASSERT_LE_INT(0, uv_fs_scandir(NULL, &req, dir, 0, NULL));
  while (uv_fs_scandir_next(&req, &ent) == 0) {
    if (strncmp(ent.name, base, blen) != 0 || ent.name[blen] != '.')
      continue;
    found++;
    snprintf(path, sizeof(path), "%s/%s", dir, ent.name);
    remove(path);
  }
  uv_fs_req_cleanup(&req);
  return found;
}
#endif

static void check_echo_rec(test_rec *rec, const char *want) {
  ASSERT_EQ_INT(rec->calls, 1);
  ASSERT_STATUS(rec->res, 0);
  ASSERT_EQ_MEM(rec->res.data, rec->res.len, want, strlen(want));
  pp_result_free(&rec->res);
}

/* ---- Item 1: a close outlives the deaths of its workers ------------------------------ */

/* A worker dies, retires or times out while the pool closes: the tasks queued behind it
 * still run, on a replacement, and the close ends. Private loop (the close runs it) and
 * caller's loop. */
static void close_through(int how, int own_loop) {
  uv_loop_t loop;
  pp_pool *pool;
  test_rec first, rest[3];
  const char *task = how == 0 ? "crash_abort" : how == 1 ? "echo" : "sleep_forever";
  int closed = 0, i;

  if (!own_loop)
    ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  pool = pool_with(own_loop ? NULL : &loop, 1, how == 1 ? 1 : 0, how == 2 ? 300 : 0);
  ASSERT_EQ_INT(test_submit(pool, task, "a", 1, &first), 0);
  for (i = 0; i < 3; i++)
    ASSERT_EQ_INT(test_submit(pool, "echo", "b", 1, &rest[i]), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  if (!own_loop) {
    test_run_until(&loop, &closed, 1, "the close");
    test_run_loop(&loop);
    ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  }
  ASSERT_EQ_INT(closed, 1);
  ASSERT_EQ_INT(first.calls, 1);
  ASSERT_STATUS(first.res, how == 0 ? PP_EWORKER : how == 1 ? 0 : PP_ETIMEDOUT);
  pp_result_free(&first.res);
  for (i = 0; i < 3; i++)
    check_echo_rec(&rest[i], "b");
}

void test_close_worker_dies(void) {
  close_through(0, 1);
  close_through(0, 0);
}

void test_close_worker_retires(void) {
  close_through(1, 1);
  close_through(1, 0);
}

void test_close_worker_times_out(void) {
  close_through(2, 1);
  close_through(2, 0);
}

/* A close right after the submits still starts every worker: four tasks that each wait
 * for the four of them to run at once all succeed. */
void test_close_starts_all(void) {
  enum { N = 4 };
  pp_pool *pool = pool_with(NULL, N, 0, 0);
  test_rec recs[N];
  char dir[1024], arg[1100];
  size_t size = sizeof(dir);
  uv_fs_t req;
  uv_dirent_t ent;
  int i;

  ASSERT_EQ_INT(uv_os_tmpdir(dir, &size), 0);
  snprintf(dir + size, sizeof(dir) - size, "/procpool-test-%ld-rdv", (long) uv_os_getpid());
  uv_fs_mkdir(NULL, &req, dir, 0700, NULL);
  uv_fs_req_cleanup(&req);
  snprintf(arg, sizeof(arg), "%d:%s", N, dir);
  for (i = 0; i < N; i++)
    ASSERT_EQ_INT(test_submit(pool, "rendezvous", arg, strlen(arg), &recs[i]), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  for (i = 0; i < N; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    pp_result_free(&recs[i].res);
  }
  ASSERT_LE_INT(0, uv_fs_scandir(NULL, &req, dir, 0, NULL));
  while (uv_fs_scandir_next(&req, &ent) == 0) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, ent.name);
    remove(path);
  }
  uv_fs_req_cleanup(&req);
  uv_fs_rmdir(NULL, &req, dir, NULL);
  uv_fs_req_cleanup(&req);
}

/* ---- Item 3: a worker whose end-of-file comes without an exit status ----------------- */

/* With SIGCHLD blocked, a spawned worker's exit is never reported: the pool sees only its
 * channel's end, waits, kills it and stops waiting for its status. Its running task had
 * reached it: it fails with PP_EWORKER, once, and never runs again (the grace path used
 * to requeue it with no bound). Under fork and forkserver, the exit is seen all the same
 * (a pidfd; the server), and the rule is the same. */
void test_eof_without_exit(void) {
#ifdef _WIN32
  test_skip("no SIGCHLD on Windows");
#else
  pp_pool *pool;
  char prefix[1024], arg[1100];
  sigset_t block, old;
  pp_result r;

  sigemptyset(&block);
  sigaddset(&block, SIGCHLD);
  ASSERT_EQ_INT(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  pool = pool_with(NULL, 1, 0, 0);
  test_marker_path(prefix, sizeof(prefix), "eof");
  snprintf(arg, sizeof(arg), "x%s", prefix);
  APPLY(pool, "mark_run", arg, strlen(arg), &r);
  ASSERT_STATUS(r, PP_EWORKER);
  pp_result_free(&r);
  APPLY(pool, "echo", "c", 1, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
  ASSERT_EQ_INT(count_runs(prefix), 1);
#endif
}

/* ---- A crash with frames still being written behind it ------------------------------ */

/* The crashing task's frame reaches its worker whole, but the large frames sent ahead
 * behind it are still being written when it dies: the write fails. The crashing task
 * must still count as having run (PP_EWORKER, once); it used to be sent again, and
 * crash up to four times. */
void test_pipelined_crash_once(void) {
#ifdef _WIN32
  test_skip("mark_run counts runs by file, on Unix");
#else
  enum { N = 12, BIG = 256 * 1024 };
  pp_pool_options opts;
  pp_pool *pool;
  test_rec crash, recs[N];
  char prefix[1024], arg[1100];
  unsigned char *big;
  int i;

  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 16;
  pool = NEW_POOL(NULL, &opts);
  big = (unsigned char *) malloc(BIG);
  ASSERT_NOT_NULL(big);
  memset(big, 7, BIG);
  test_marker_path(prefix, sizeof(prefix), "pipecrash");
  snprintf(arg, sizeof(arg), "x%s", prefix);
  ASSERT_EQ_INT(test_submit(pool, "mark_run", arg, strlen(arg), &crash), 0);
  for (i = 0; i < N; i++)
    ASSERT_EQ_INT(test_submit(pool, "echo", big, BIG, &recs[i]), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(crash.calls, 1);
  ASSERT_STATUS(crash.res, PP_EWORKER);
  pp_result_free(&crash.res);
  for (i = 0; i < N; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    ASSERT_EQ_INT(recs[i].res.len, BIG);
    pp_result_free(&recs[i].res);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(big);
  ASSERT_EQ_INT(count_runs(prefix), 1);
#endif
}

/* ---- Item 5: timeouts count real time, not the loop's cached clock ------------------- */

/* The application spends longer than the timeout away from its loop, then submits a task
 * that takes microseconds: it succeeds (it used to time out at once). The timeout is far
 * above what an echo takes even on a loaded machine under valgrind. */
void test_timeout_loop_time(void) {
  const uint64_t timeout = test_scale_ms(3000);
  uv_loop_t loop;
  pp_pool *pool;
  test_rec rec;
  int closed = 0;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  pool = pool_with(&loop, 1, 0, timeout);
  ASSERT_EQ_INT(test_submit(pool, "echo", "warm", 4, &rec), 0);
  test_run_until(&loop, &rec.calls, 1, "the first echo");
  check_echo_rec(&rec, "warm");
  uv_sleep((unsigned) timeout + 500);
  ASSERT_EQ_INT(test_submit(pool, "echo", "late", 4, &rec), 0);
  test_run_until(&loop, &rec.calls, 1, "the second echo");
  check_echo_rec(&rec, "late");
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Items 6 and 7: bad map items fail alone ----------------------------------------- */

/* Enough items to be batched, with one whose length is absurd (the batch's sum used to
 * wrap and corrupt the heap) and one with NULL data and a length (a segfault). */
void test_map_bad_items(void) {
  enum { N = 256 };
  pp_pool *pool = pool_with(NULL, 2, 0, 0);
  static pp_input in[N];
  static pp_result out[N];
  static char bytes[N][16];
  int i;

  for (i = 0; i < N; i++) {
    snprintf(bytes[i], sizeof(bytes[i]), "item %d", i);
    in[i].data = bytes[i];
    in[i].len = 16;
  }
  in[100].len = SIZE_MAX - 8;
  in[200].data = NULL;
  in[200].len = 4;
  ASSERT_EQ_INT(pp_map(pool, "echo", N, in, out), PP_E2BIG);
  for (i = 0; i < N; i++) {
    if (i == 100) {
      ASSERT_STATUS(out[i], PP_E2BIG);
      ASSERT_CONTAINS(out[i].message, "map item 100");
    } else if (i == 200) {
      ASSERT_STATUS(out[i], PP_EINVAL);
      ASSERT_CONTAINS(out[i].message, "map item 200");
    } else {
      ASSERT_STATUS(out[i], 0);
      ASSERT_EQ_MEM(out[i].data, out[i].len, bytes[i], 16);
    }
    pp_result_free(&out[i]);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- Item 8: pp_apply returns only when no write points at its argument -------------- */

typedef struct cancel_later {
  uv_timer_t timer;
  pp_pool *pool;
  uint64_t id;
  int ret;
} cancel_later;

static void on_cancel_later(uv_timer_t *t) {
  cancel_later *c = (cancel_later *) t->data;

  c->ret = pp_cancel(c->pool, c->id);
  uv_close((uv_handle_t *) t, NULL);
}

/* The applied task waits behind a sleeper on a pool that sends tasks ahead, with an
 * argument too large for the socket to take at once, and is canceled by a timer. It used
 * to be sent ahead, and pp_apply returned while the write still read the argument; the
 * argument is freed as soon as pp_apply returns, and ASan and valgrind see any later
 * read. The call must also return: the sleeper never reads what is behind it. */
void test_apply_cancel_sent_ahead(void) {
  enum { BIG = 8 << 20 };
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  test_rec sleeper;
  cancel_later c;
  pp_result r;
  char marker[1024];
  unsigned char *arg;
  int closed = 0;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 4;
  pool = NEW_POOL(&loop, &opts);
  test_marker_path(marker, sizeof(marker), "apply-cancel");
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", marker, strlen(marker), &sleeper), 0);
  test_wait_marker(&loop, marker, &sleeper);
  arg = (unsigned char *) malloc(BIG);
  ASSERT_NOT_NULL(arg);
  memset(arg, 0x5a, BIG);
  c.pool = pool;
  c.id = sleeper.id + 1;  /* the next id: pp_apply's task */
  c.ret = 1;
  ASSERT_EQ_INT(uv_timer_init(&loop, &c.timer), 0);
  c.timer.data = &c;
  ASSERT_EQ_INT(uv_timer_start(&c.timer, on_cancel_later, 100, 0), 0);
  ASSERT_EQ_INT(pp_apply(pool, "echo", arg, BIG, &r), PP_ECANCELED);
  ASSERT_EQ_INT(c.ret, 0);
  ASSERT_EQ_U64(r.id, c.id);
  pp_result_free(&r);
  memset(arg, 0, BIG);
  free(arg);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the terminate");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  ASSERT_EQ_INT(sleeper.calls, 1);
  ASSERT_STATUS(sleeper.res, PP_ECANCELED);
  pp_result_free(&sleeper.res);
}

/* ---- Callbacks that end the pool (found by the model test) ---------------------------- */

typedef struct ender {
  pp_pool *pool;
  uint64_t cancel_id;      /* canceled from the first callback, when not 0 */
  int terminate;           /* the first callback terminates the pool */
  int calls;
  int closed;
  test_rec *recs;          /* every task's record, to count callbacks */
  size_t nrecs;
} ender;

static void ender_cb(pp_pool *pool, pp_result *r, void *user) {
  ender *e = (ender *) user;
  size_t i;

  for (i = 0; i < e->nrecs; i++)
    if (e->recs[i].id == r->id)
      e->recs[i].calls++;
  if (e->calls++ == 0) {
    if (e->cancel_id != 0)
      pp_cancel(pool, e->cancel_id);
    if (e->terminate)
      pp_pool_terminate(pool, test_count_cb, &e->closed);
  }
}

/* A task sent ahead is canceled, and its callback terminates the pool: the kill of its
 * worker released the task while its callback ran, and it was freed twice (ASan). */
void test_cancel_cb_terminates(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  test_rec recs[2];
  char marker[1024];
  ender e;
  uint64_t ahead;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 4;
  pool = NEW_POOL(&loop, &opts);
  memset(&e, 0, sizeof(e));
  memset(recs, 0, sizeof(recs));
  e.pool = pool;
  e.terminate = 1;
  e.recs = recs;
  e.nrecs = 2;
  test_marker_path(marker, sizeof(marker), "cbterm");
  ASSERT_EQ_INT(pp_submit(pool, "sleep_forever", marker, strlen(marker), ender_cb, &e,
                          &recs[0].id), 0);
  ASSERT_EQ_INT(pp_submit(pool, "echo", "a", 1, ender_cb, &e, &ahead), 0);
  recs[1].id = ahead;
  test_wait_marker(&loop, marker, &recs[0]);
  ASSERT_EQ_INT(pp_cancel(pool, ahead), 0);
  test_run_until(&loop, &e.closed, 1, "the terminate");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  ASSERT_EQ_INT(recs[0].calls, 1);
  ASSERT_EQ_INT(recs[1].calls, 1);
}

/* While pp_pool_terminate fails the tasks of one worker, a callback cancels the running
 * task of another: the tasks behind that one must still get their callback (they went
 * back to a queue terminate had emptied already, and were lost). */
void test_terminate_cb_cancels(void) {
  enum { N = 6 };
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  test_rec recs[N];
  char m0[1024], m1[1024];
  ender e;
  int i;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  opts.pipeline_depth = 3;
  pool = NEW_POOL(&loop, &opts);
  memset(&e, 0, sizeof(e));
  memset(recs, 0, sizeof(recs));
  e.pool = pool;
  e.recs = recs;
  e.nrecs = N;
  test_marker_path(m0, sizeof(m0), "tcc0");
  test_marker_path(m1, sizeof(m1), "tcc1");
  /* Two sleepers, one per worker, each with two tasks sent ahead behind it. */
  ASSERT_EQ_INT(pp_submit(pool, "sleep_forever", m0, strlen(m0), ender_cb, &e,
                          &recs[0].id), 0);
  ASSERT_EQ_INT(pp_submit(pool, "sleep_forever", m1, strlen(m1), ender_cb, &e,
                          &recs[1].id), 0);
  test_wait_marker(&loop, m0, &recs[0]);
  test_wait_marker(&loop, m1, &recs[1]);
  for (i = 2; i < N; i++)
    ASSERT_EQ_INT(pp_submit(pool, "echo", "b", 1, ender_cb, &e, &recs[i].id), 0);
  /* Let the echoes go out to the workers, behind the sleepers. */
  uv_run(&loop, UV_RUN_NOWAIT);
  e.cancel_id = recs[1].id;
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &e.closed), 0);
  test_run_until(&loop, &e.closed, 1, "the terminate");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  for (i = 0; i < N; i++)
    ASSERT_EQ_INT(recs[i].calls, 1);
}

/* ---- A canceled task sent ahead must not hold up the tasks behind it ----------------- */

typedef struct running_wait {
  uv_timer_t timer;
  pp_pool *pool;
  uint64_t want;
  int seen;
} running_wait;

static void on_running_poll(uv_timer_t *t) {
  running_wait *rw = (running_wait *) t->data;
  pp_pool_stats st;

  if (pp_pool_stats_get(rw->pool, &st) == 0 && st.running >= rw->want) {
    rw->seen = 1;
    uv_timer_stop(t);
  }
}

/* Runs loop until the pool has `want` tasks sent to workers. */
static void wait_running(uv_loop_t *loop, pp_pool *pool, uint64_t want) {
  running_wait rw;

  rw.pool = pool;
  rw.want = want;
  rw.seen = 0;
  ASSERT_EQ_INT(uv_timer_init(loop, &rw.timer), 0);
  rw.timer.data = &rw;
  ASSERT_EQ_INT(uv_timer_start(&rw.timer, on_running_poll, 0, 1), 0);
  test_run_until(loop, &rw.seen, 1, "tasks sent to the worker");
  uv_close((uv_handle_t *) &rw.timer, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

/* A worker runs a short task, with a task that hangs and an echo sent ahead behind it.
 * The hanging one is canceled while it waits; when its turn comes the worker would run
 * it for no one, and the echo behind it would wait for ever (found by the model test,
 * seed 0x414). */
void test_cancel_ahead_hang(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  test_rec first, hang, echo;
  uint32_t ms = 300;
  int closed = 0;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 4;
  pool = NEW_POOL(&loop, &opts);
  ASSERT_EQ_INT(test_submit(pool, "sleep_ms", &ms, sizeof(ms), &first), 0);
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &hang), 0);
  ASSERT_EQ_INT(test_submit(pool, "echo", "e", 1, &echo), 0);
  /* All three are in the worker's hands: the hanging one is sent ahead, not queued. */
  wait_running(&loop, pool, 3);
  ASSERT_EQ_INT(pp_cancel(pool, hang.id), 0);
  ASSERT_EQ_INT(hang.calls, 1);
  ASSERT_STATUS(hang.res, PP_ECANCELED);
  pp_result_free(&hang.res);
  test_run_until(&loop, &echo.calls, 1, "the echo behind the canceled task");
  check_echo_rec(&first, "slept");
  check_echo_rec(&echo, "e");
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Item 10: a worker cannot use its parent's pool ---------------------------------- */

void test_worker_parent_pool(void) {
  pp_pool *first = pool_with(NULL, 1, 0, 0);
  pp_pool *second;
  pp_result r;

  parent_pool = first;
  second = pool_with(NULL, 1, 0, 0);
  APPLY(second, "use_parent_pool", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "ok", 2);
  pp_result_free(&r);
  /* The first pool is untouched: its worker still serves. */
  APPLY(first, "echo", "d", 1, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  parent_pool = NULL;
  ASSERT_EQ_INT(pp_pool_close(second, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(first, NULL, NULL), 0);
}

/* ---- Item 11: a long PROCPOOL_START_METHOD is an error, not "unset" ------------------ */

void test_env_method_long(void) {
  static const char *const values[] = {
    "spawnspawnspawnspawnspawnspawnsp",  /* 32 bytes */
    "forkserverforkserverforkserverforkserverforkserverforkserverforkserver",
  };
  pp_pool *pool = NULL;
  size_t i;

  for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    test_setenv("PROCPOOL_START_METHOD", values[i]);
    ASSERT_EQ_INT(pp_pool_new(&pool, NULL, NULL), PP_EINVAL);
    ASSERT_NULL(pool);
  }
  test_unsetenv("PROCPOOL_START_METHOD");
}

/* ---- Item 12: a relative worker_executable is resolved once -------------------------- */

/* The pool is made from the program's own directory with a relative path, then the
 * application changes directory: a replacement worker still starts. */
void test_relative_exe_chdir(void) {
  char exe[4096], cwd[4096];
  size_t size = sizeof(exe), csize = sizeof(cwd);
  char *base;
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;

  if (test_method == PP_START_FORK)
    test_skip("fork runs no program");
  ASSERT_EQ_INT(uv_exepath(exe, &size), 0);
  ASSERT_EQ_INT(uv_cwd(cwd, &csize), 0);
  base = strrchr(exe, '/');
#ifdef _WIN32
  if (strrchr(exe, '\\') > base)
    base = strrchr(exe, '\\');
#endif
  ASSERT_NOT_NULL(base);
  *base = '\0';
  ASSERT_EQ_INT(chdir(exe), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.worker_executable = base + 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(chdir(cwd), 0);
  ASSERT_EQ_INT(chdir(".."), 0);
  APPLY(pool, "crash_abort", NULL, 0, &r);
  ASSERT_STATUS(r, PP_EWORKER);
  pp_result_free(&r);
  APPLY(pool, "echo", "e", 1, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(chdir(cwd), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- A cancel's kill takes down nothing but the canceled task ------------------------- */

/* Under wine a worker's start takes tens of milliseconds, and hundreds of kills would
 * outlast the test's time: fewer there. */
#ifdef _WIN32
#  define BYSTANDER_N 150
#else
#  define BYSTANDER_N 2000
#endif

typedef struct bystander {
  pp_pool *pool;
  uint64_t ids[BYSTANDER_N];
  int status[BYSTANDER_N];
  int calls[BYSTANDER_N];
  int cancel_said[BYSTANDER_N];
  int done;
} bystander;

typedef struct bystander_item {
  bystander *b;
  int i;
} bystander_item;

static bystander_item bystander_items[BYSTANDER_N];

/* Each result cancels the task after it, which the worker (sent many ahead) is running,
 * or has just finished, or has not reached: any of those may be killed, but never the
 * task behind it, which must still run, once, and succeed. */
static void bystander_cb(pp_pool *pool, pp_result *r, void *user) {
  bystander_item *it = (bystander_item *) user;
  bystander *b = it->b;

  b->calls[it->i]++;
  b->status[it->i] = r->status;
  if (r->status == PP_EWORKER)
    fprintf(stderr, "task %d: %s\n", it->i, r->message);
  b->done++;
  if (it->i + 1 < BYSTANDER_N && it->i % 3 == 0 && b->calls[it->i + 1] == 0)
    b->cancel_said[it->i + 1] = pp_cancel(pool, b->ids[it->i + 1]);
}

void test_cancel_no_bystander(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  bystander *b = (bystander *) calloc(1, sizeof(*b));
  int closed = 0, i, canceled = 0;

  ASSERT_NOT_NULL(b);
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 16;
  b->pool = NEW_POOL(&loop, &opts);
  for (i = 0; i < BYSTANDER_N; i++) {
    uint32_t x = (uint32_t) i;
    bystander_items[i].b = b;
    bystander_items[i].i = i;
    b->cancel_said[i] = 1;
    ASSERT_EQ_INT(pp_submit(b->pool, "mapf", &x, sizeof(x), bystander_cb,
                            &bystander_items[i], &b->ids[i]), 0);
  }
  test_run_until(&loop, &b->done, BYSTANDER_N, "every task's outcome");
  for (i = 0; i < BYSTANDER_N; i++) {
    ASSERT_EQ_INT(b->calls[i], 1);
    if (b->cancel_said[i] == 0) {
      ASSERT_EQ_INT(b->status[i], PP_ECANCELED);
      canceled++;
    } else {
      ASSERT_EQ_INT(b->status[i], 0);
    }
  }
  printf("%d tasks, %d canceled, none else failed\n", BYSTANDER_N, canceled);
  ASSERT_EQ_INT(pp_pool_close(b->pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  free(b);
}
