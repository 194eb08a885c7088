/* The fork method's helper: every worker of a fork pool, the first ones and every
 * replacement, is forked from one helper process per pool, itself forked from the thread
 * that called pp_pool_new (src/unix/fork.c):
 *   - a replacement (max_tasks_per_worker, or after a worker was killed) is a copy of
 *     the parent as it was at pp_pool_new, not as it is later;
 *   - a lock another thread takes after pp_pool_new is free in every worker;
 *   - one helper per pool, the workers' parent, gone (reaped) once the pool is closed,
 *     and no descriptor left behind;
 *   - a helper killed under its pool: every task gets one outcome, a new helper takes
 *     over, close ends.
 * The helper is found through /proc: Linux only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#ifndef _WIN32
#  include <pthread.h>
#  include <signal.h>
#  include <unistd.h>
#endif

/* Taken by a thread of the parent after pp_pool_new (fh_lock_later). */
#ifndef _WIN32
static pthread_mutex_t fh_lock = PTHREAD_MUTEX_INITIALIZER;
#endif

/* What a worker sees: test_global, its parent's pid, and whether fh_lock is free. */
typedef struct fh_state {
  int global;
  int ppid;
  int lock_free;
} fh_state;

int test_task_fh_state(pp_call *call, const void *arg, size_t len) {
  fh_state s;

  (void) arg;
  (void) len;
  memset(&s, 0, sizeof(s));
  s.global = test_global;
  s.ppid = (int) uv_os_getppid();
  s.lock_free = 1;
#ifndef _WIN32
  if (pthread_mutex_trylock(&fh_lock) == 0)
    pthread_mutex_unlock(&fh_lock);
  else
    s.lock_free = 0;
#endif
  return pp_reply(call, &s, sizeof(s));
}

#if defined(__linux__)

static void fh_get(pp_pool *pool, fh_state *s) {
  pp_result r;

  APPLY(pool, "fh_state", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(*s));
  memcpy(s, r.data, sizeof(*s));
  pp_result_free(&r);
}

/* A fork pool of n workers on loop (NULL: its own), or a skip where there is no fork or
 * the environment forces another method. */
static pp_pool *fh_pool(uv_loop_t *loop, unsigned n, unsigned max_tasks) {
  pp_pool_options opts;
  pp_pool *pool;

  pp_pool_options_init(&opts);
  opts.start_method = PP_START_FORK;
  opts.workers = n;
  opts.max_tasks_per_worker = max_tasks;
  opts.pipeline_depth = 1;
  pool = NEW_POOL(loop, &opts);
  if (pp_pool_start_method(pool) != PP_START_FORK)
    test_skip("PROCPOOL_START_METHOD chose another method than fork");
  return pool;
}

/* The pool's helper: the workers' parent, this process's child. */
static long fh_helper(pp_pool *pool) {
  fh_state s;

  fh_get(pool, &s);
  ASSERT_NE_INT(s.ppid, (int) getpid());
  ASSERT_EQ_INT(test_proc_stat(s.ppid, NULL), (long) getpid());
  return s.ppid;
}

/* 1 once pid is gone and reaped: no /proc entry, not even a zombie. */
static int fh_reaped(long pid) { return test_proc_stat(pid, NULL) == -1; }

/* ---- Replacements are copies of the parent as it was at pp_pool_new ------------------ */

void test_fh_replacement_snapshot(void) {
  pp_pool *pool;
  fh_state s;
  pp_result r;
  long helper;
  int i;

  test_global = TEST_GLOBAL_INITIAL + 10;
  /* One task per worker: every call below runs in a new worker, forked after the
   * change. */
  pool = fh_pool(NULL, 1, 1);
  test_global = TEST_GLOBAL_INITIAL + 20;
  helper = fh_helper(pool);
  for (i = 0; i < 4; i++) {
    fh_get(pool, &s);
    ASSERT_EQ_INT(s.global, TEST_GLOBAL_INITIAL + 10);
    /* One helper forks them all. */
    ASSERT_EQ_INT(s.ppid, helper);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  /* The replacement of a worker killed by a signal, too. */
  test_global = TEST_GLOBAL_INITIAL + 30;
  pool = fh_pool(NULL, 1, 0);
  test_global = TEST_GLOBAL_INITIAL + 40;
  fh_get(pool, &s);
  ASSERT_EQ_INT(s.global, TEST_GLOBAL_INITIAL + 30);
  helper = s.ppid;
  ASSERT_EQ_INT(pp_apply(pool, "crash_segv", NULL, 0, &r), PP_EWORKER);
  ASSERT_STATUS(r, PP_EWORKER);
  pp_result_free(&r);
  ASSERT_EQ_INT(uv_kill((int) test_worker_pid(pool), SIGKILL), 0);
  for (i = 0; i < 3; i++) {
    /* The first may reach the worker that was just killed, and fail with it. */
    ASSERT_TRUE(pp_apply(pool, "fh_state", NULL, 0, &r) == 0 || r.status == PP_EWORKER);
    if (r.status == 0) {
      ASSERT_EQ_INT(r.len, sizeof(s));
      memcpy(&s, r.data, sizeof(s));
      ASSERT_EQ_INT(s.global, TEST_GLOBAL_INITIAL + 30);
      ASSERT_EQ_INT(s.ppid, helper);
    }
    pp_result_free(&r);
  }
  fh_get(pool, &s);
  ASSERT_EQ_INT(s.global, TEST_GLOBAL_INITIAL + 30);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  test_global = TEST_GLOBAL_INITIAL;
}

/* ---- A lock another thread takes later is free in every worker ------------------------ */

static int fh_warnings;
static char fh_warning[1024];

static void fh_on_warning(const char *message, void *user) {
  (void) user;
  snprintf(fh_warning, sizeof(fh_warning), "%s", message);
  fh_warnings++;
}

static uv_sem_t fh_go, fh_taken, fh_release;

/* Runs from before pp_pool_new; takes the lock after it. */
static void fh_holder(void *arg) {
  (void) arg;
  uv_sem_wait(&fh_go);
  pthread_mutex_lock(&fh_lock);
  uv_sem_post(&fh_taken);
  uv_sem_wait(&fh_release);
  pthread_mutex_unlock(&fh_lock);
}

/* A pool made while another thread runs: the one warning of the process, then that
 * thread takes a lock and holds it while workers are replaced. A worker forked from the
 * pool's thread now would hold the lock for ever; one forked from the helper never
 * does. */
void test_fh_lock_later(void) {
  uv_thread_t thread;
  pp_pool *pool, *pool2;
  fh_state s;
  int i;

  ASSERT_EQ_INT(uv_sem_init(&fh_go, 0), 0);
  ASSERT_EQ_INT(uv_sem_init(&fh_taken, 0), 0);
  ASSERT_EQ_INT(uv_sem_init(&fh_release, 0), 0);
  pp_set_warning_handler(fh_on_warning, NULL);
  ASSERT_EQ_INT(uv_thread_create(&thread, fh_holder, NULL), 0);
  pool = fh_pool(NULL, 2, 1);
  ASSERT_EQ_INT(fh_warnings, 1);
  ASSERT_CONTAINS(fh_warning, "threads");
  uv_sem_post(&fh_go);
  uv_sem_wait(&fh_taken);
  for (i = 0; i < 6; i++) {
    fh_get(pool, &s);
    ASSERT_EQ_INT(s.lock_free, 1);
  }
  ASSERT_CONTAINS(fh_warning, "helper");
  /* The warning comes once per process. */
  pool2 = fh_pool(NULL, 1, 0);
  fh_get(pool2, &s);
  ASSERT_EQ_INT(fh_warnings, 1);
  ASSERT_EQ_INT(pp_pool_close(pool2, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  uv_sem_post(&fh_release);
  ASSERT_EQ_INT(uv_thread_join(&thread), 0);
  pp_set_warning_handler(NULL, NULL);
  uv_sem_destroy(&fh_go);
  uv_sem_destroy(&fh_taken);
  uv_sem_destroy(&fh_release);
}

/* ---- One helper per pool, gone with it ----------------------------------------------- */

/* This process's descriptors, as a string of numbers. */
static void fh_fds(char *buf, size_t size) {
  uv_fs_t req;
  uv_dirent_t ent;
  int present[1024], i, n;
  size_t have = 0;

  memset(present, 0, sizeof(present));
  ASSERT_TRUE(uv_fs_scandir(NULL, &req, "/proc/self/fd", 0, NULL) >= 0);
  while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
    n = atoi(ent.name);
    if (n >= 0 && n < 1024)
      present[n] = 1;
  }
  uv_fs_req_cleanup(&req);
  buf[0] = '\0';
  for (i = 0; i < 1024; i++)
    if (present[i] && have + 8 < size)
      have += (size_t) snprintf(buf + have, size - have, "%d ", i);
}

void test_fh_one_per_pool(void) {
  pp_pool *warm, *a, *b;
  char before[4096], after[4096];
  long ha, hb;
  fh_state s;
  int i;

  /* libuv's process-wide descriptors (its signal pipe, made with the first loop) exist
   * before the count. */
  warm = fh_pool(NULL, 1, 0);
  ASSERT_EQ_INT(pp_pool_close(warm, NULL, NULL), 0);
  fh_fds(before, sizeof(before));

  a = fh_pool(NULL, 3, 0);
  b = fh_pool(NULL, 2, 1);
  ha = fh_helper(a);
  hb = fh_helper(b);
  ASSERT_NE_INT(ha, hb);
  for (i = 0; i < 6; i++) {
    fh_get(a, &s);
    ASSERT_EQ_INT(s.ppid, ha);
    fh_get(b, &s);
    ASSERT_EQ_INT(s.ppid, hb);
  }
  ASSERT_EQ_INT(pp_pool_close(a, NULL, NULL), 0);
  ASSERT_TRUE(fh_reaped(ha));
  ASSERT_EQ_INT(test_proc_stat(hb, NULL), (long) getpid());
  fh_get(b, &s);
  ASSERT_EQ_INT(s.ppid, hb);
  ASSERT_EQ_INT(pp_pool_close(b, NULL, NULL), 0);
  ASSERT_TRUE(fh_reaped(hb));
  fh_fds(after, sizeof(after));
  ASSERT_EQ_STR(after, before);
}

/* ---- A helper killed under its pool -------------------------------------------------- */

void test_fh_helper_killed(void) {
  enum { N = 12 };
  uv_loop_t loop;
  pp_pool *pool;
  test_rec sleeper, echoes[N];
  char marker[1024];
  long helper, helper2, busy;
  int closes = 0;
  size_t i;
  fh_state s;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  pp_set_warning_handler(fh_on_warning, NULL);
  fh_warnings = 0;
  pool = fh_pool(&loop, 2, 0);
  test_marker_path(marker, sizeof(marker), "fh-killed");
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", marker, strlen(marker), &sleeper), 0);
  test_wait_marker(&loop, marker, &sleeper);
  {
    test_rec probe;
    ASSERT_EQ_INT(test_submit(pool, "fh_state", NULL, 0, &probe), 0);
    test_run_until(&loop, &probe.calls, 1, "the idle worker's state");
    ASSERT_STATUS(probe.res, 0);
    memcpy(&s, probe.res.data, sizeof(s));
    pp_result_free(&probe.res);
  }
  helper = s.ppid;
  ASSERT_EQ_INT(test_proc_stat(helper, NULL), (long) getpid());
  busy = -1;
  {
    uv_fs_t req;
    uv_dirent_t ent;
    ASSERT_TRUE(uv_fs_scandir(NULL, &req, "/proc", 0, NULL) >= 0);
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
      char *end;
      long pid = strtol(ent.name, &end, 10);
      if (*end == '\0' && test_proc_stat(pid, NULL) == helper)
        busy = pid;
    }
    uv_fs_req_cleanup(&req);
  }
  ASSERT_TRUE(busy > 1);

  ASSERT_EQ_INT(kill((pid_t) helper, SIGKILL), 0);
  test_run_until(&loop, &sleeper.calls, 1, "the sleeping task's result");
  ASSERT_STATUS(sleeper.res, PP_EWORKER);
  ASSERT_CONTAINS(sleeper.res.message, "fork helper");
  pp_result_free(&sleeper.res);
  /* A new helper forks new workers, and every task gets its one result. */
  test_submit_echoes(pool, echoes, N);
  for (i = 0; i < N; i++)
    test_run_until(&loop, &echoes[i].calls, 1, "an echo's result");
  test_check_echoes(echoes, N);
  test_wait_process_gone(busy, "the busy worker of the killed helper");
  /* The dead helper is reaped by its pool, not left a zombie. */
  ASSERT_TRUE(fh_reaped(helper));
  ASSERT_EQ_INT(fh_warnings, 1);
  ASSERT_CONTAINS(fh_warning, "fork helper");

  /* A new helper serves the pool. */
  {
    test_rec probe;
    ASSERT_EQ_INT(test_submit(pool, "fh_state", NULL, 0, &probe), 0);
    test_run_until(&loop, &probe.calls, 1, "a new worker's state");
    ASSERT_STATUS(probe.res, 0);
    memcpy(&s, probe.res.data, sizeof(s));
    pp_result_free(&probe.res);
  }
  helper2 = s.ppid;
  ASSERT_NE_INT(helper2, helper);
  ASSERT_EQ_INT(test_proc_stat(helper2, NULL), (long) getpid());

  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  ASSERT_TRUE(fh_reaped(helper2));
  pp_set_warning_handler(NULL, NULL);
}

#else

void test_fh_replacement_snapshot(void) { test_skip("the fork helper is checked on Linux"); }
void test_fh_lock_later(void) { test_skip("the fork helper is checked on Linux"); }
void test_fh_one_per_pool(void) { test_skip("the fork helper is checked on Linux"); }
void test_fh_helper_killed(void) { test_skip("the fork helper is checked on Linux"); }

#endif
