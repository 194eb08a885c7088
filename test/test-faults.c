/* Workers that crash, exit, hang, are killed, never start or outlive their parent: each
 * fault ends only what it must, says why, and the pool carries on. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#  include <fcntl.h>
#  include <unistd.h>
#endif

#include "test.h"

static void check_echo(pp_pool *pool) {
  pp_result r;

  APPLY(pool, "echo", "still here", 10, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "still here", 10);
  pp_result_free(&r);
}

/* The task ends its worker: that task fails with PP_EWORKER, saying which task, which
 * worker and how it ended (how: a text the message must hold, or NULL), and the next task
 * on the same pool runs. */
static void worker_dies(const char *task, const char *how) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;

  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, task, NULL, 0, &r);
  ASSERT_STATUS(r, PP_EWORKER);
  ASSERT_CONTAINS(r.message, task);
  ASSERT_CONTAINS(r.message, "pid");
  if (how != NULL)
    ASSERT_CONTAINS(r.message, how);
  pp_result_free(&r);
  check_echo(pool);
  ASSERT_NULL(pp_pool_error(pool));
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Windows reports a crash as an exit code, not a signal. */
#ifdef _WIN32
#  define UNIX_ONLY(text) NULL
#else
#  define UNIX_ONLY(text) text
#endif

void test_crash_abort(void) { worker_dies("crash_abort", UNIX_ONLY("SIGABRT")); }

void test_crash_segv(void) { worker_dies("crash_segv", UNIX_ONLY("SIGSEGV")); }

void test_exit_code(void) { worker_dies("exit3", "code 3"); }

/* Task faults are the tasks' failures, not a broken set-up: no number of them makes the
 * pool give up. */
void test_crash_burst(void) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_input in[12];
  pp_result out[12];
  size_t i;

  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 12; i++) {
    in[i].data = NULL;
    in[i].len = 0;
  }
  ASSERT_EQ_INT(pp_map(pool, "exit3", 12, in, out), PP_EWORKER);
  for (i = 0; i < 12; i++) {
    ASSERT_STATUS(out[i], PP_EWORKER);
    pp_result_free(&out[i]);
  }
  check_echo(pool);
  ASSERT_NULL(pp_pool_error(pool));
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_killed_externally(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  uint64_t pid;
  char marker[1024];
  test_rec rec, behind[3];
  int closes = 0;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(&loop, &opts);
  pid = test_worker_pid(pool);
  test_marker_path(marker, sizeof(marker), "killed");
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", marker, strlen(marker), &rec), 0);
  test_submit_echoes(pool, behind, 3);
  test_wait_marker(&loop, marker, &rec);
  ASSERT_EQ_INT(uv_kill((int) pid, SIGKILL), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(rec.calls, 1);
  ASSERT_STATUS(rec.res, PP_EWORKER);
  ASSERT_CONTAINS(rec.res.message, "sleep_forever");
#ifndef _WIN32
  ASSERT_CONTAINS(rec.res.message, "SIGKILL");
#endif
  pp_result_free(&rec.res);
  /* Only the running task is the dead worker's: what waited behind it runs elsewhere. */
  test_check_echoes(behind, 3);
  check_echo(pool);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_timeout(void) {
  pp_pool_options opts;
  pp_pool *pool;
  test_rec rec, behind[3];

  test_options(&opts);
  opts.workers = 1;
  /* Far above what an echo takes, so that only the sleeper can reach it. */
  opts.task_timeout_ms = test_scale_ms(2000);
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", NULL, 0, &rec), 0);
  test_submit_echoes(pool, behind, 3);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(rec.calls, 1);
  ASSERT_STATUS(rec.res, PP_ETIMEDOUT);
  ASSERT_CONTAINS(rec.res.message, "sleep_forever");
  pp_result_free(&rec.res);
  test_check_echoes(behind, 3);
  check_echo(pool);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* run-tests' main() misbehaves before pp_main when `var` is 1: every worker start fails,
 * the pool gives up, and the tasks and pp_pool_error say why (cause: a text the message
 * must hold, or NULL). On a caller's loop, so that a pool that never gives up or never
 * ends fails the test with a diagnosis rather than hanging it. */
static void start_fails(const char *var, uint64_t start_timeout_ms, const char *cause) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool = NULL;
  test_rec rec, late;
  int closes = 0, err;

  if (test_method == PP_START_FORK)
    test_skip("a forked worker does not run main()");
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.start_timeout_ms = start_timeout_ms;
  test_setenv(var, "1");
  err = pp_pool_new(&pool, &loop, &opts);
  if (err == PP_ENOTSUP)
    test_skip("the start method is not available here");
  if (err != 0) {
    /* The header allows it: the error that stopped the first worker. A forkserver pool
     * may find its server gone already. Nothing may be left on the loop. */
    test_unsetenv(var);
    ASSERT_TRUE(err < 0);
    ASSERT_NULL(pool);
    test_run_loop(&loop);
    ASSERT_EQ_INT(uv_loop_close(&loop), 0);
    return;
  }
  if (pp_pool_start_method(pool) == PP_START_FORK)
    test_skip("PROCPOOL_START_METHOD chose fork, whose workers do not run main()");
  ASSERT_EQ_INT(test_submit(pool, "echo", "x", 1, &rec), 0);
  test_run_until(&loop, &rec.calls, 1, "the task's result");
  ASSERT_STATUS(rec.res, PP_ESPAWN);
  ASSERT_CONTAINS(rec.res.message, "pp_main");
  if (cause != NULL)
    ASSERT_CONTAINS(rec.res.message, cause);
  pp_result_free(&rec.res);
  ASSERT_NOT_NULL(pp_pool_error(pool));
  /* Only now: a worker started before the pool gave up must still see it. */
  test_unsetenv(var);
  ASSERT_EQ_INT(test_submit(pool, "echo", "x", 1, &late), PP_ESPAWN);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_hang_before_main(void) { start_fails("PP_TEST_HANG_BEFORE_MAIN", 300, NULL); }

void test_exit_before_main(void) { start_fails("PP_TEST_EXIT_BEFORE_MAIN", 0, "code 5"); }

void test_missing_exe(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool = NULL;
  int err;

  test_options(&opts);
  opts.workers = 1;
#ifdef _WIN32
  opts.worker_executable = "C:\\no-such-directory\\procpool-worker.exe";
#else
  opts.worker_executable = "/no-such-directory/procpool-worker";
#endif
  err = pp_pool_new(&pool, NULL, &opts);
  if (err == PP_ENOTSUP)
    test_skip("the start method is not available here");
  if (test_method == PP_START_FORK) {
    /* Fork runs no program, so a missing one is no error (issue 17, item 12). */
    pp_result r;
    ASSERT_EQ_INT(err, 0);
    ASSERT_EQ_INT(pp_apply(pool, "echo", "x", 1, &r), 0);
    pp_result_free(&r);
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
    return;
  }
  ASSERT_EQ_INT(err, UV_ENOENT);
  ASSERT_NULL(pool);
  /* On a caller's loop, the failed pool leaves nothing on it. */
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  ASSERT_EQ_INT(pp_pool_new(&pool, &loop, &opts), UV_ENOENT);
  ASSERT_NULL(pool);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_not_procpool(void) {
#ifdef _WIN32
  test_skip("no /bin/true to start on Windows");
#else
  static const char *const candidates[] = { "/bin/true", "/usr/bin/true" };
  pp_pool_options opts;
  pp_pool *pool = NULL;
  pp_result r;
  size_t i;
  int err;

  if (test_method == PP_START_FORK)
    test_skip("fork starts no program: the header does not say what worker_executable "
              "means for it");
  test_options(&opts);
  opts.workers = 1;
  for (i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
    if (access(candidates[i], X_OK) == 0)
      opts.worker_executable = candidates[i];
  if (opts.worker_executable == NULL)
    test_skip("no true(1) here");
  /* A forkserver pool may find its server (true) gone already: pp_pool_new may then fail
   * with the libuv error of that first start, as the header allows. */
  err = pp_pool_new(&pool, NULL, &opts);
  if (err == PP_ENOTSUP)
    test_skip("the start method is not available here");
  if (err != 0) {
    ASSERT_TRUE(err < 0);
    ASSERT_NULL(pool);
    return;
  }
  if (pp_pool_start_method(pool) == PP_START_FORK)
    test_skip("PROCPOOL_START_METHOD chose fork, which starts no program");
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_STATUS(r, PP_ESPAWN);
  pp_result_free(&r);
  ASSERT_NOT_NULL(pp_pool_error(pool));
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
#endif
}

/* ---- parent-death: a pool's parent is SIGKILLed; its workers must not outlive it --- */

/* A pool of one worker, of the method named on the helper's command line; NULL when the
 * method does not exist here. */
static pp_pool *orphan_pool(int argc, char **argv) {
  static const pp_start_method methods[] = { PP_START_SPAWN, PP_START_FORK,
                                             PP_START_FORKSERVER };
  pp_pool_options opts;
  pp_pool *pool = NULL;
  size_t i;
  int err;

  pp_pool_options_init(&opts);
  opts.workers = 1;
  for (i = 0; argc == 3 && i < sizeof(methods) / sizeof(methods[0]); i++)
    if (strcmp(argv[2], pp_start_method_name(methods[i])) == 0)
      opts.start_method = methods[i];
  err = pp_pool_new(&pool, NULL, &opts);
  if (err == PP_ENOTSUP)
    return NULL;
  ASSERT_EQ_INT(err, 0);
  return pool;
}

int test_helper_orphan_parent(int argc, char **argv) {
  pp_pool *pool = orphan_pool(argc, argv);

  if (pool == NULL)
    return TEST_SKIP;
  printf("%llu\n", (unsigned long long) test_worker_pid(pool));
  fflush(stdout);
  for (;;)
    uv_sleep(1000);
}

/* The same, busy: its worker's pid and the worker's parent's (a fork helper, the
 * forkserver, or this process), then a stream of batches and large messages, through
 * the journal and the transport's segments, until it is killed. */
typedef struct orphan_thread_arg {
  int argc;
  char **argv;
  pp_pool *pool;
} orphan_thread_arg;

static void orphan_thread(void *p) {
  orphan_thread_arg *a = (orphan_thread_arg *) p;

  a->pool = orphan_pool(a->argc, a->argv);
}

/* With a fourth argument, "thread": the pool is made by a thread that has ended by the
 * time its workers run (a fork helper is then forked for a thread that is gone). */
int test_helper_orphan_busy(int argc, char **argv) {
  enum { ITEMS = 2000, BIG = 2 << 20 };
  static pp_input in[ITEMS];
  static pp_result out[ITEMS];
  orphan_thread_arg ta;
  pp_pool *pool;
  unsigned char *big = calloc(1, BIG);
  uint32_t v = 7;
  uint64_t ppid;
  pp_result r;
  size_t i;

  if (argc == 4 && strcmp(argv[3], "thread") == 0) {
    uv_thread_t t;
    ta.argc = 3;
    ta.argv = argv;
    ASSERT_EQ_INT(uv_thread_create(&t, orphan_thread, &ta), 0);
    ASSERT_EQ_INT(uv_thread_join(&t), 0);
    pool = ta.pool;
  } else {
    pool = orphan_pool(argc, argv);
  }
  if (pool == NULL)
    return TEST_SKIP;
  ASSERT_NOT_NULL(big);
  ASSERT_EQ_INT(pp_apply(pool, "hs_ppid", NULL, 0, &r), 0);
  memcpy(&ppid, r.data, sizeof(ppid));
  pp_result_free(&r);
  printf("%llu %llu\n", (unsigned long long) test_worker_pid(pool), (unsigned long long) ppid);
  fflush(stdout);
  for (i = 0; i < ITEMS; i++) {
    in[i].data = &v;
    in[i].len = sizeof(v);
  }
  for (;;) {
    pp_map(pool, "echo", ITEMS, in, out);
    for (i = 0; i < ITEMS; i++)
      pp_result_free(&out[i]);
    if (pp_apply(pool, "echo", big, BIG, &r) == 0)
      pp_result_free(&r);
  }
}

typedef struct orphan_parent {
  uv_process_t proc;
  uv_pipe_t out;
  char line[64];
  size_t len;
  int done_reading;
  int exited;
  int64_t exit_status;
} orphan_parent;

static void orphan_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  orphan_parent *o = (orphan_parent *) h->data;

  (void) suggested;
  *buf = uv_buf_init(o->line + o->len, (unsigned int) (sizeof(o->line) - 1 - o->len));
}

static void orphan_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  orphan_parent *o = (orphan_parent *) s->data;

  (void) buf;
  if (nread > 0)
    o->len += (size_t) nread;
  o->line[o->len] = '\0';
  if (nread < 0 || strchr(o->line, '\n') != NULL || o->len == sizeof(o->line) - 1) {
    o->done_reading = 1;
    uv_read_stop(s);
  }
}

static void orphan_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
  orphan_parent *o = (orphan_parent *) proc->data;

  (void) term_signal;
  o->exited = 1;
  o->exit_status = exit_status;
}

/* Starts the helper `role`, reads the pids it prints, kills it and checks that its
 * worker (and with busy, the worker's own parent when that is not the helper: a fork
 * helper, stopped first so that only the kernel can end it, or the forkserver) ends
 * too, and that it left nothing in /dev/shm. */
static void parent_death(const char *role, int busy, const char *variant) {
  uv_loop_t loop;
  orphan_parent o;
  uv_process_options_t opts;
  uv_stdio_container_t stdio[3];
  char exe[4096];
  size_t size = sizeof(exe);
  char *args[5];
  char *end;
  unsigned long long worker, wparent = 0;
  long helper;

  memset(&o, 0, sizeof(o));
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  ASSERT_EQ_INT(uv_exepath(exe, &size), 0);
  args[0] = exe;
  args[1] = (char *) role;
  args[2] = (char *) pp_start_method_name(test_method);
  args[3] = (char *) variant;
  args[4] = NULL;
  ASSERT_EQ_INT(uv_pipe_init(&loop, &o.out, 0), 0);
  o.out.data = &o;
  o.proc.data = &o;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = (uv_stdio_flags) (UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[1].data.stream = (uv_stream_t *) &o.out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  memset(&opts, 0, sizeof(opts));
  opts.file = exe;
  opts.args = args;
  opts.exit_cb = orphan_exit;
  opts.stdio = stdio;
  opts.stdio_count = 3;
  ASSERT_EQ_INT(uv_spawn(&loop, &o.proc, &opts), 0);
  helper = (long) o.proc.pid;
  ASSERT_EQ_INT(uv_read_start((uv_stream_t *) &o.out, orphan_alloc, orphan_read), 0);
  test_run_until(&loop, &o.done_reading, 1, "the helper to print its worker's pid");
  if (strchr(o.line, '\n') == NULL) {
    test_run_until(&loop, &o.exited, 1, "the helper to exit");
    if (o.exit_status == TEST_SKIP)
      test_skip("the start method is not available here");
    ASSERT_EQ_INT(o.exit_status, 0);
  }
  worker = strtoull(o.line, &end, 10);
  ASSERT_NE_U64(worker, 0);
  if (busy)
    wparent = strtoull(end, NULL, 10);
#if defined(SIGSTOP)
  /* A fork helper that cannot run, as one stuck in a lock after the fork would be. */
  if (busy && test_method == PP_START_FORK && wparent != 0 && (long) wparent != helper)
    ASSERT_EQ_INT(uv_kill((int) wparent, SIGSTOP), 0);
#endif
  if (busy)
    uv_sleep(100);

  ASSERT_EQ_INT(uv_process_kill(&o.proc, SIGKILL), 0);
  test_run_until(&loop, &o.exited, 1, "the helper to die");
  uv_close((uv_handle_t *) &o.proc, NULL);
  uv_close((uv_handle_t *) &o.out, NULL);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  test_wait_process_gone((long) worker, "the worker of a parent that was killed");
  if (wparent != 0 && (long) wparent != helper)
    test_wait_process_gone((long) wparent, "the fork helper or forkserver of a parent that "
                           "was killed");
  if (test_shm_names_of(helper) >= 0)
    ASSERT_EQ_INT(test_shm_names_of(helper), 0);
}

void test_parent_death(void) { parent_death("@orphan-parent", 0, NULL); }

void test_parent_death_busy(void) { parent_death("@orphan-busy", 1, NULL); }

void test_parent_death_thread(void) { parent_death("@orphan-busy", 1, "thread"); }

/* ---- foreign-child: the pool must reap its own workers only ------------------------ */

typedef struct own_child {
  uv_process_t proc;
  int exited;
  int64_t exit_status;
} own_child;

static void own_child_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
  own_child *c = (own_child *) proc->data;

  (void) term_signal;
  c->exited++;
  c->exit_status = exit_status;
}

void test_foreign_child(void) {
  uv_loop_t loop;
  pp_pool_options popts;
  pp_pool *pool;
  own_child child;
  uv_process_options_t opts;
  uv_stdio_container_t stdio[3];
  char exe[4096];
  size_t size = sizeof(exe);
  char *args[3];
  test_rec crash, echo;
  int closes = 0;

  memset(&child, 0, sizeof(child));
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&popts);
  popts.workers = 1;
  pool = NEW_POOL(&loop, &popts);

  ASSERT_EQ_INT(uv_exepath(exe, &size), 0);
  args[0] = exe;
  args[1] = (char *) "@exit7";
  args[2] = NULL;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  memset(&opts, 0, sizeof(opts));
  opts.file = exe;
  opts.args = args;
  opts.exit_cb = own_child_exit;
  opts.stdio = stdio;
  opts.stdio_count = 3;
  child.proc.data = &child;
  ASSERT_EQ_INT(uv_spawn(&loop, &child.proc, &opts), 0);

  /* A worker that dies, to be reaped while the test's own child ends too. */
  ASSERT_EQ_INT(test_submit(pool, "exit3", NULL, 0, &crash), 0);
  ASSERT_EQ_INT(test_submit(pool, "echo", "e", 1, &echo), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  test_run_until(&loop, &child.exited, 1, "the exit callback of the test's own child");
  ASSERT_EQ_INT(child.exited, 1);
  ASSERT_EQ_INT(child.exit_status, 7);
  ASSERT_STATUS(crash.res, PP_EWORKER);
  ASSERT_STATUS(echo.res, 0);
  pp_result_free(&crash.res);
  pp_result_free(&echo.res);

  uv_close((uv_handle_t *) &child.proc, NULL);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- worker-fds: a worker holds its own channel and what the program handed down --- */

void test_worker_fds(void) {
#ifdef _WIN32
  test_skip("counts Unix file descriptors");
#else
  pp_pool_options opts;
  pp_pool *pool;
  pp_input in[12];
  pp_result out[12];
  long inherited = 0, fd, max = sysconf(_SC_OPEN_MAX);
  uint32_t n;
  size_t i;

  /* What this process would pass to any program it runs: descriptors without
   * close-on-exec. Each worker may hold those and its channel, not its siblings'
   * channels nor the pool's own descriptors. */
  if (max < 0 || max > 65536)
    max = 65536;
  for (fd = 3; fd < max; fd++) {
    int flags = fcntl((int) fd, F_GETFD);
    if (flags != -1 && !(flags & FD_CLOEXEC))
      inherited++;
  }
  test_options(&opts);
  opts.workers = 3;
  pool = NEW_POOL(NULL, &opts);
  /* The header: a forked worker keeps none of the parent's descriptors but stdio. */
  if (pp_pool_start_method(pool) == PP_START_FORK)
    inherited = 0;
  for (i = 0; i < 12; i++) {
    in[i].data = NULL;
    in[i].len = 0;
  }
  ASSERT_EQ_INT(pp_map(pool, "count_fds", 12, in, out), 0);
  for (i = 0; i < 12; i++) {
    ASSERT_STATUS(out[i], 0);
    ASSERT_EQ_INT(out[i].len, sizeof(n));
    memcpy(&n, out[i].data, sizeof(n));
    ASSERT_LE_INT(n, inherited + 1);
    pp_result_free(&out[i]);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
#endif
}
