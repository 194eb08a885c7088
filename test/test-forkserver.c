/* The forkserver's failure paths, and what every forked worker holds (issue 17):
 *   - a server that cannot take a pool's connection (out of descriptors, stopped) makes
 *     pp_pool_new return PP_ESPAWN, never hang, and the next pool gets a working server;
 *   - a server killed under a pool: its workers end by their channels, nobody signals
 *     their pids, every task gets one result;
 *   - workers print to the parent's stdout and stderr as they are when they start;
 *   - a worker holds no descriptor of the parent's, even one above RLIMIT_NOFILE.
 * The server and its workers are found through /proc, so most of these run on Linux
 * only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#ifndef _WIN32
#  include <fcntl.h>
#  include <signal.h>
#  include <sys/resource.h>
#  include <unistd.h>
#endif

/* Writes its argument to stdout and, after "E:", to stderr: where a worker's output
 * goes. */
int test_task_fs_print(pp_call *call, const void *arg, size_t len) {
  (void) call;
  fwrite(arg, 1, len, stdout);
  fputs("E:", stderr);
  fwrite(arg, 1, len, stderr);
  fflush(stdout);
  fflush(stderr);
  return 0;
}

#if defined(__linux__)


/* 1 when process pid has descriptor fd open. */
static int has_fd(long pid, int fd) {
  char path[64];

  snprintf(path, sizeof(path), "/proc/%ld/fd/%d", pid, fd);
  return access(path, F_OK) == 0;
}

static void need_proc(void) {
  if (!has_fd((long) getpid(), 0))
    test_skip("no /proc/<pid>/fd here");
}

/* A forkserver pool of n workers on loop (NULL: its own), or a skip when the environment
 * forces another method. */
static pp_pool *fs_pool(uv_loop_t *loop, unsigned n, unsigned depth) {
  pp_pool_options opts;
  pp_pool *pool;

  pp_pool_options_init(&opts);
  opts.start_method = PP_START_FORKSERVER;
  opts.workers = n;
  opts.pipeline_depth = depth;
  pool = NEW_POOL(loop, &opts);
  if (pp_pool_start_method(pool) != PP_START_FORKSERVER)
    test_skip("PROCPOOL_START_METHOD chose another method than forkserver");
  return pool;
}

static void check_echo(pp_pool *pool) {
  pp_result r;

  APPLY(pool, "echo", "y", 1, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "y", 1);
  pp_result_free(&r);
}


/* ---- A: a server that cannot take a connection ------------------------------------- */

/* The server is out of descriptors: it cannot even receive the pool's connection. */
void test_fs_conn_refused(void) {
  struct rlimit rl;
  pp_pool_options opts;
  pp_pool *pool0, *pool1 = NULL, *pool2;
  char said[4096];
  long spid;
  int lowest, err;

  need_proc();
  pool0 = fs_pool(NULL, 1, 0);
  spid = test_proc_stat((long) test_worker_pid(pool0), NULL);
  ASSERT_TRUE(spid > 1);
  /* With its soft limit at its lowest free descriptor, the server can make no new one.
   * It may still be closing the descriptors a FORK request brought (they are closed
   * after the worker could already answer): wait until the lowest is the same on five
   * looks in a row. */
  {
    int same = 0, prev = -1;
    while (same < 5) {
      for (lowest = 0; has_fd(spid, lowest); lowest++)
        ;
      same = lowest == prev ? same + 1 : 0;
      prev = lowest;
      uv_sleep(20);
    }
  }
  ASSERT_EQ_INT(prlimit((pid_t) spid, RLIMIT_NOFILE, NULL, &rl), 0);
  rl.rlim_cur = (rlim_t) lowest;
  if (prlimit((pid_t) spid, RLIMIT_NOFILE, &rl, NULL) != 0)
    test_skip("cannot set the forkserver's RLIMIT_NOFILE");

  pp_pool_options_init(&opts);
  opts.start_method = PP_START_FORKSERVER;
  opts.workers = 1;
  err = test_pool_new_said(&pool1, NULL, &opts, said, sizeof(said));
  ASSERT_EQ_INT(err, PP_ESPAWN);
  ASSERT_NULL(pool1);
  ASSERT_CONTAINS(said, "forkserver");
  ASSERT_CONTAINS(said, "out of descriptors");

  /* The next pool gets a server of its own, which works. */
  pool2 = fs_pool(NULL, 1, 0);
  check_echo(pool2);
  ASSERT_NE_INT(test_proc_stat((long) test_worker_pid(pool2), NULL), spid);
  /* The old server still serves the pool it had. */
  check_echo(pool0);
  ASSERT_EQ_INT(pp_pool_close(pool2, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(pool0, NULL, NULL), 0);
  test_wait_process_gone(spid, "the old forkserver");
}

/* The server is stopped when a pool connects, then killed, and another pool starts a new
 * one: the first pool must not wait for ever, nor wait for the new server. */
void test_fs_server_stopped(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool0, *pool1 = NULL, *pool2;
  test_rec rec;
  char said[4096];
  long spid;
  int err, closes = 0;

  need_proc();
  pool0 = fs_pool(NULL, 1, 0);
  spid = test_proc_stat((long) test_worker_pid(pool0), NULL);
  ASSERT_TRUE(spid > 1);
  ASSERT_EQ_INT(kill((pid_t) spid, SIGSTOP), 0);

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  pp_pool_options_init(&opts);
  opts.start_method = PP_START_FORKSERVER;
  opts.workers = 1;
  /* The server cannot answer while it is stopped: a short wait is enough to know it. */
  opts.start_timeout_ms = 200;
  err = test_pool_new_said(&pool1, &loop, &opts, said, sizeof(said));
  ASSERT_EQ_INT(kill((pid_t) spid, SIGKILL), 0);
  pool2 = fs_pool(NULL, 1, 0);
  check_echo(pool2);
  ASSERT_NE_INT(test_proc_stat((long) test_worker_pid(pool2), NULL), spid);

  if (err == 0) {
    /* A pool that did not wait for its server's greeting must still end its tasks. */
    ASSERT_EQ_INT(test_submit(pool1, "echo", "x", 1, &rec), 0);
    test_run_until(&loop, &rec.calls, 1, "the task's result");
    ASSERT_TRUE(rec.res.status == 0 || rec.res.status == PP_ESPAWN);
    pp_result_free(&rec.res);
    ASSERT_EQ_INT(pp_pool_close(pool1, test_count_cb, &closes), 0);
    test_run_loop(&loop);
    ASSERT_EQ_INT(closes, 1);
  } else {
    ASSERT_EQ_INT(err, PP_ESPAWN);
    ASSERT_NULL(pool1);
    ASSERT_CONTAINS(said, "forkserver");
    ASSERT_CONTAINS(said, "200 ms");
    test_run_loop(&loop);
  }
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  check_echo(pool2);
  ASSERT_EQ_INT(pp_pool_close(pool2, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(pool0, NULL, NULL), 0);
}

/* ---- C: a server killed under its pool --------------------------------------------- */

/* The workers of a dead server are not the pool's children: their pids may be anyone's
 * by now. Their channels are closed instead; the busy one ends by its hang-up watcher,
 * the idle one by end-of-file, and the task that was running fails, saying why. */
void test_fs_server_killed(void) {
  enum { N = 12 };
  uv_loop_t loop;
  pp_pool *pool;
  test_rec sleeper, probe, echoes[N];
  char marker[1024];
  long spid, idle, busy = -1, pid;
  int closes = 0;
  size_t i;
  uv_fs_t req;
  uv_dirent_t ent;

  need_proc();
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  /* One task per worker at a time: the probe below must reach the idle worker. */
  pool = fs_pool(&loop, 2, 1);
  test_marker_path(marker, sizeof(marker), "fs-killed");
  ASSERT_EQ_INT(test_submit(pool, "sleep_forever", marker, strlen(marker), &sleeper), 0);
  test_wait_marker(&loop, marker, &sleeper);
  ASSERT_EQ_INT(test_submit(pool, "pid", NULL, 0, &probe), 0);
  test_run_until(&loop, &probe.calls, 1, "the pid of the idle worker");
  ASSERT_STATUS(probe.res, 0);
  ASSERT_EQ_INT(probe.res.len, sizeof(uint64_t));
  {
    uint64_t v;
    memcpy(&v, probe.res.data, sizeof(v));
    idle = (long) v;
  }
  pp_result_free(&probe.res);
  spid = test_proc_stat(idle, NULL);
  ASSERT_TRUE(spid > 1);
  /* The busy worker is the server's other child. */
  ASSERT_TRUE(uv_fs_scandir(NULL, &req, "/proc", 0, NULL) >= 0);
  while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
    char *end;
    pid = strtol(ent.name, &end, 10);
    if (*end == '\0' && pid != idle && test_proc_stat(pid, NULL) == spid)
      busy = pid;
  }
  uv_fs_req_cleanup(&req);
  ASSERT_TRUE(busy > 1);

  ASSERT_EQ_INT(kill((pid_t) spid, SIGKILL), 0);
  test_run_until(&loop, &sleeper.calls, 1, "the sleeping task's result");
  ASSERT_STATUS(sleeper.res, PP_EWORKER);
  ASSERT_CONTAINS(sleeper.res.message, "ended with its forkserver");
  pp_result_free(&sleeper.res);
  test_wait_process_gone(busy, "the busy worker of the killed server");
  test_wait_process_gone(idle, "the idle worker of the killed server");

  /* A new server starts new workers, and every task gets its one result. */
  test_submit_echoes(pool, echoes, N);
  for (i = 0; i < N; i++)
    test_run_until(&loop, &echoes[i].calls, 1, "an echo's result");
  test_check_echoes(echoes, N);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- B: the parent's stdout and stderr as they are now ----------------------------- */

void test_stdio_follows(void) {
  pp_pool_options opts;
  pp_pool *pool0, *pool1;
  int out[2], errp[2], saved1, saved2, err1, err2 = 0;
  char word[64], got[256], want[80];
  ssize_t n;

  test_options(&opts);
  opts.workers = 1;
  /* A first pool: under forkserver, the server starts now, with stdout and stderr as
   * they are. */
  pool0 = NEW_POOL(NULL, &opts);
  check_echo(pool0);

  snprintf(word, sizeof(word), "stdio-follows-%ld\n", (long) getpid());
  ASSERT_EQ_INT(pipe(out), 0);
  ASSERT_EQ_INT(pipe(errp), 0);
  fflush(stdout);
  fflush(stderr);
  saved1 = dup(1);
  saved2 = dup(2);
  ASSERT_TRUE(saved1 >= 0 && saved2 >= 0);
  ASSERT_EQ_INT(dup2(out[1], 1), 1);
  ASSERT_EQ_INT(dup2(errp[1], 2), 2);
  /* Nothing may be asserted while stderr is the pipe: note, restore, then check. */
  pool1 = NULL;
  err1 = pp_pool_new(&pool1, NULL, &opts);
  if (err1 == 0) {
    pp_result r;
    err2 = pp_apply(pool1, "fs_print", word, strlen(word), &r);
    pp_result_free(&r);
  }
  dup2(saved1, 1);
  dup2(saved2, 2);
  close(saved1);
  close(saved2);
  close(out[1]);
  close(errp[1]);
  ASSERT_EQ_INT(err1, 0);
  ASSERT_EQ_INT(err2, 0);

  /* The task flushed both before its result came back. */
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(errp[0], F_SETFL, O_NONBLOCK);
  n = read(out[0], got, sizeof(got) - 1);
  got[n > 0 ? n : 0] = '\0';
  ASSERT_EQ_STR(got, word);
  n = read(errp[0], got, sizeof(got) - 1);
  got[n > 0 ? n : 0] = '\0';
  snprintf(want, sizeof(want), "E:%s", word);
  ASSERT_CONTAINS(got, want);
  close(out[0]);
  close(errp[0]);
  ASSERT_EQ_INT(pp_pool_close(pool1, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(pool0, NULL, NULL), 0);
}

/* ---- C: a descriptor above the soft RLIMIT_NOFILE ---------------------------------- */

void test_fds_above_limit(void) {
  struct rlimit rl, low;
  pp_pool_options opts;
  pp_pool *pool;
  long wpid;
  int high, fd;

  need_proc();
  if (test_method == PP_START_SPAWN)
    test_skip("a spawned worker gets what exec passes on, and this test's descriptor is "
              "deliberately inheritable");
  ASSERT_EQ_INT(getrlimit(RLIMIT_NOFILE, &rl), 0);
  high = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536 ? 65535 : (int) rl.rlim_max - 1;
  if (high < 1024)
    test_skip("the hard RLIMIT_NOFILE is too low to make room above a low soft limit");
  low = rl;
  low.rlim_cur = (rlim_t) high + 1;
  ASSERT_EQ_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
  fd = open("/dev/null", O_RDONLY);
  ASSERT_TRUE(fd >= 0);
  /* dup2 makes it inheritable: only the closing of everything stops it. */
  ASSERT_EQ_INT(dup2(fd, high), high);
  close(fd);
  low.rlim_cur = 256;
  ASSERT_EQ_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
  ASSERT_TRUE(has_fd((long) getpid(), high));

  /* The server, if any, starts now: under the low limit too. */
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  wpid = (long) test_worker_pid(pool);
  ASSERT_EQ_INT(has_fd(wpid, high), 0);
  if (pp_pool_start_method(pool) == PP_START_FORKSERVER) {
    long spid = test_proc_stat(wpid, NULL);
    ASSERT_TRUE(spid > 1);
    ASSERT_EQ_INT(has_fd(spid, high), 0);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  close(high);
  ASSERT_EQ_INT(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

#else

static void not_here(void) { test_skip("the forkserver tests need Linux's /proc"); }
void test_fs_conn_refused(void) { not_here(); }
void test_fs_server_stopped(void) { not_here(); }
void test_fs_server_killed(void) { not_here(); }
void test_stdio_follows(void) { not_here(); }
void test_fds_above_limit(void) { not_here(); }

#endif
