/* What a worker sees under each start method: the README's table, asserted row by row.
 * And the two ways to get Windows' answers on any OS: the spawn method, and
 * PROCPOOL_START_METHOD=spawn over a pool that asks for fork. */
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* The parent changes these after pp_main and before it starts a pool. */
static int matrix_level = 1;
static char *matrix_heap = NULL;
static int matrix_shipped = 0;

#define LEVEL_BEFORE_POOL 42
#define LEVEL_LATER 43
#define HEAP_TEXT "filled by the parent"

int test_task_matrix_init(pp_call *call, const void *arg, size_t len) {
  if (len != sizeof(matrix_shipped))
    return pp_fail(call, "matrix_init wants an int");
  memcpy(&matrix_shipped, arg, len);
  return 0;
}

int test_task_matrix_read(pp_call *call, const void *arg, size_t len) {
  int row[3];
  uv_pid_t ppid = uv_os_getppid();

  (void) arg;
  (void) len;
  row[0] = matrix_level;
  row[1] = matrix_shipped;
  row[2] = (int) ppid;
  if (matrix_heap == NULL)
    return pp_reply(call, row, sizeof(row));
  /* The heap block follows the three ints when the worker has it. */
  {
    char buf[sizeof(row) + sizeof(HEAP_TEXT)];
    memcpy(buf, row, sizeof(row));
    memcpy(buf + sizeof(row), matrix_heap, sizeof(HEAP_TEXT));
    return pp_reply(call, buf, sizeof(buf));
  }
}

typedef struct matrix_seen {
  int level;
  int shipped;
  uv_pid_t ppid;
  int heap;         /* 1: the block was there, with the parent's text */
} matrix_seen;

static void matrix_read(pp_pool *pool, matrix_seen *seen) {
  pp_result r;
  int row[3];

  APPLY(pool, "matrix_read", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_TRUE(r.len == sizeof(row) || r.len == sizeof(row) + sizeof(HEAP_TEXT));
  memcpy(row, r.data, sizeof(row));
  seen->level = row[0];
  seen->shipped = row[1];
  seen->ppid = (uv_pid_t) row[2];
  seen->heap = r.len > sizeof(row);
  if (seen->heap)
    ASSERT_EQ_STR((const char *) r.data + sizeof(row), HEAP_TEXT);
  pp_result_free(&r);
}

/* Runs the table's rows for `asked`, and checks them against the method the pool reports
 * it used. */
static void matrix_check(pp_start_method asked, pp_start_method expect_used) {
  pp_pool_options opts;
  pp_pool *pool;
  matrix_seen first, replaced;
  pp_result r;
  int shipped = LEVEL_BEFORE_POOL;
  int forked, fresh;

  matrix_level = LEVEL_BEFORE_POOL;
  matrix_heap = malloc(sizeof(HEAP_TEXT));
  ASSERT_NOT_NULL(matrix_heap);
  memcpy(matrix_heap, HEAP_TEXT, sizeof(HEAP_TEXT));

  pp_pool_options_init(&opts);
  opts.start_method = asked;
  opts.workers = 1;
  opts.initializer = "matrix_init";
  opts.initarg = &shipped;
  opts.initarg_len = sizeof(shipped);
  /* One task per worker: each read below runs in a worker started after the last. */
  opts.max_tasks_per_worker = 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_pool_start_method(pool), expect_used);
  forked = expect_used == PP_START_FORK;
  fresh = !forked;

  matrix_read(pool, &first);
  /* Row: a global the parent changed after pp_main and before pool start. */
  ASSERT_EQ_INT(first.level, fresh ? 1 : LEVEL_BEFORE_POOL);
  /* Row: the initializer's argument, under every method. */
  ASSERT_EQ_INT(first.shipped, LEVEL_BEFORE_POOL);
  /* Row: the parent's pid as the worker's parent: only under spawn (a forkserver
   * worker's parent is the server, a fork worker's its pool's fork helper). */
  if (expect_used != PP_START_SPAWN)
    ASSERT_NE_INT(first.ppid, uv_os_getpid());
  else
    ASSERT_EQ_INT(first.ppid, uv_os_getpid());
  /* Row: a heap block reached through a global pointer: only fork copies it. */
  ASSERT_EQ_INT(first.heap, forked);

  /* Row: a replacement sees the parent's later changes: under no method. The worker
   * that runs the next task was started before the change; the one after it, after,
   * yet under fork it is a copy of the parent as it was at pp_pool_new. */
  matrix_level = LEVEL_LATER;
  APPLY(pool, "nothing", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  matrix_read(pool, &replaced);
  ASSERT_EQ_INT(replaced.level, forked ? LEVEL_BEFORE_POOL : 1);
  ASSERT_EQ_INT(replaced.shipped, LEVEL_BEFORE_POOL);

  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(matrix_heap);
  matrix_heap = NULL;
  matrix_level = 1;
}

void test_matrix(void) { matrix_check(test_method, test_method); }

/* Windows' behaviour forced on a pool that asks for fork. */
void test_matrix_env_spawn(void) {
  test_setenv("PROCPOOL_START_METHOD", "spawn");
  matrix_check(PP_START_FORK, PP_START_SPAWN);
  test_unsetenv("PROCPOOL_START_METHOD");
}

/* ---- fork in a process with a running loop, a timer and another thread ---------------- */

static int warnings;

static void count_warning(const char *message, void *user) {
  (void) user;
  ASSERT_CONTAINS(message, "thread");
  ASSERT_CONTAINS(message, "forkserver");
  warnings++;
}

static void on_tick(uv_timer_t *t) {
  int *ticks = (int *) t->data;
  (*ticks)++;
}

static uv_sem_t thread_go;

static void idle_thread(void *arg) {
  (void) arg;
  uv_sem_wait(&thread_go);
}

void test_fork_busy_parent(void) {
  uv_loop_t loop;
  uv_timer_t timer;
  uv_thread_t thread;
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int ticks = 0, i, err;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  ASSERT_EQ_INT(uv_timer_init(&loop, &timer), 0);
  timer.data = &ticks;
  ASSERT_EQ_INT(uv_timer_start(&timer, on_tick, 1, 1), 0);
  ASSERT_EQ_INT(uv_sem_init(&thread_go, 0), 0);
  ASSERT_EQ_INT(uv_thread_create(&thread, idle_thread, NULL), 0);
  pp_set_warning_handler(count_warning, NULL);

  pp_pool_options_init(&opts);
  opts.start_method = PP_START_FORK;
  opts.workers = 2;
  /* Two pools one after the other: the warning comes once per process. */
  for (i = 0; i < 2; i++) {
    err = pp_pool_new(&pool, &loop, &opts);
    if (err == PP_ENOTSUP)
      test_skip("no fork here");
    ASSERT_EQ_INT(err, 0);
    APPLY(pool, "echo", "ok", 3, &r);
    ASSERT_STATUS(r, 0);
    ASSERT_EQ_STR((const char *) r.data, "ok");
    pp_result_free(&r);
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  }
#if defined(__linux__)
  /* Elsewhere the thread count may not be known, and the warning not given. */
  ASSERT_EQ_INT(warnings, 1);
#endif
  pp_set_warning_handler(NULL, NULL);

  /* The loop ran the timer throughout, in the parent only. */
  uv_close((uv_handle_t *) &timer, NULL);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  uv_sem_post(&thread_go);
  ASSERT_EQ_INT(uv_thread_join(&thread), 0);
  uv_sem_destroy(&thread_go);
  ASSERT_TRUE(ticks > 0);
}

/* ---- Signal dispositions: the same in a worker under every method --------------------- */

#ifndef _WIN32
#  include <signal.h>

static void parent_usr1(int sig) { (void) sig; }
#endif

/* Replies 1 when SIGPIPE and SIGUSR1 are at their defaults in the worker. */
int test_task_signals_default(pp_call *call, const void *arg, size_t len) {
  int ok = 1;
#ifndef _WIN32
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
    ok = 0;
  if (sigaction(SIGUSR1, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
    ok = 0;
#endif
  (void) arg;
  (void) len;
  return pp_reply(call, &ok, sizeof(ok));
}

/* The parent ignores SIGPIPE (the pool sees to it) and handles SIGUSR1; a worker starts
 * with both at their defaults whatever the method, as a spawned program does. */
void test_worker_signals(void) {
#ifdef _WIN32
  test_skip("no POSIX signal dispositions on Windows");
#else
  struct sigaction sa, old;
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int ok;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = parent_usr1;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ_INT(sigaction(SIGUSR1, &sa, &old), 0);
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, "signals_default", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  memcpy(&ok, r.data, sizeof(ok));
  ASSERT_EQ_INT(ok, 1);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  sigaction(SIGUSR1, &old, NULL);
#endif
}
