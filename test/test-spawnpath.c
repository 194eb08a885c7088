/* The Unix spawn path without fork (issue 10): what a worker started by posix_spawn must
 * get right, whatever the method that started it:
 *   - a worker_executable that is missing or not executable fails pp_pool_new with the
 *     OS's error and a message naming the path;
 *   - a descriptor the application opened without close-on-exec is not open in a worker;
 *   - a worker starts with every signal at its default and none blocked, also when the
 *     thread that starts it blocks some and the application ignores some;
 *   - a start, and a replacement, from a parent that runs another thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#ifndef _WIN32
#  include <fcntl.h>
#  include <signal.h>
#  include <sys/stat.h>
#  include <unistd.h>

/* Whether descriptor *arg is open in the worker. */
int test_task_sp_fd_open(pp_call *call, const void *arg, size_t len) {
  int fd, open_;

  if (len != sizeof(fd))
    return pp_fail(call, "want an int");
  memcpy(&fd, arg, sizeof(fd));
  open_ = fcntl(fd, F_GETFD) != -1;
  return pp_reply(call, &open_, sizeof(open_));
}

/* A count of what is wrong with the worker's signals: a blocked signal, or SIGINT,
 * SIGTERM or SIGUSR2 not at its default. */
int test_task_sp_signals(pp_call *call, const void *arg, size_t len) {
  static const int sigs[] = { SIGINT, SIGTERM, SIGUSR2 };
  struct sigaction sa;
  sigset_t cur;
  int wrong = 0, sig;
  size_t i;

  (void) arg;
  (void) len;
  pthread_sigmask(SIG_SETMASK, NULL, &cur);
  for (sig = 1; sig < NSIG; sig++)
    if (sigismember(&cur, sig) == 1) {
      fprintf(stderr, "worker: signal %d blocked\n", sig);
      wrong++;
    }
  for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
    if (sigaction(sigs[i], NULL, &sa) != 0 || sa.sa_handler != SIG_DFL) {
      fprintf(stderr, "worker: signal %d not at its default\n", sigs[i]);
      wrong++;
    }
  return pp_reply(call, &wrong, sizeof(wrong));
}


/* A worker_executable that cannot be started: pp_pool_new fails with want, and says why
 * naming the path. Fork starts no program: there the pool works. */
static void bad_exe(const char *path, int want, const char *words) {
  pp_pool_options opts;
  pp_pool *pool = NULL;
  char said[4096];
  int err;

  test_options(&opts);
  opts.workers = 2;
  opts.worker_executable = path;
  err = test_pool_new_said(&pool, NULL, &opts, said, sizeof(said));
  if (err == PP_ENOTSUP)
    test_skip("the start method is not available here");
  if (test_method == PP_START_FORK) {
    pp_result r;
    ASSERT_EQ_INT(err, 0);
    APPLY(pool, "echo", "x", 1, &r);
    ASSERT_STATUS(r, 0);
    pp_result_free(&r);
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
    return;
  }
  ASSERT_EQ_INT(err, want);
  ASSERT_NULL(pool);
  ASSERT_CONTAINS(said, path);
  ASSERT_CONTAINS(said, words);
}

void test_sp_missing_exe(void) {
  bad_exe("/no-such-directory/procpool worker \xc3\xa9", UV_ENOENT,
          "no such file or directory");
}

void test_sp_not_executable(void) {
  char path[1024];
  FILE *f;

  test_marker_path(path, sizeof(path), "not executable");
  f = fopen(path, "w");
  ASSERT_NOT_NULL(f);
  fputs("#!/bin/sh\nexit 0\n", f);
  fclose(f);
  ASSERT_EQ_INT(chmod(path, 0644), 0);
  bad_exe(path, UV_EACCES, "permission denied");
  remove(path);
}

/* Descriptors the application made without close-on-exec, before the pool (and before
 * its forkserver, if any): a file at a high number and both ends of a pipe. Not one is
 * open in a worker, nor in a replacement. */
void test_sp_fd_no_cloexec(void) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int p[2], fds[3], i, k, open_;

  /* At numbers no worker has of its own, so that an open one can only be inherited. */
  ASSERT_EQ_INT(pipe(p), 0);
  ASSERT_EQ_INT(dup2(p[0], 200), 200);
  ASSERT_EQ_INT(dup2(p[1], 201), 201);
  close(p[0]);
  close(p[1]);
  fds[2] = open("/dev/null", O_RDONLY);
  ASSERT_TRUE(fds[2] >= 0);
  ASSERT_EQ_INT(dup2(fds[2], 202), 202);
  close(fds[2]);
  for (i = 0; i < 3; i++)
    fds[i] = 200 + i;
  for (i = 0; i < 3; i++)
    ASSERT_EQ_INT(fcntl(fds[i], F_GETFD) & FD_CLOEXEC, 0);
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  for (k = 0; k < 2; k++) {
    for (i = 0; i < 3; i++) {
      APPLY(pool, "sp_fd_open", &fds[i], sizeof(fds[i]), &r);
      ASSERT_STATUS(r, 0);
      memcpy(&open_, r.data, sizeof(open_));
      ASSERT_EQ_INT_MSG(open_, 0, "a descriptor without close-on-exec is open in a worker");
      pp_result_free(&r);
    }
    /* The replacement too. */
    APPLY(pool, "crash_segv", NULL, 0, &r);
    ASSERT_STATUS(r, PP_EWORKER);
    pp_result_free(&r);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  for (i = 0; i < 3; i++)
    close(fds[i]);
}

/* The application ignores SIGINT and SIGTERM, and the thread that makes the pool blocks
 * SIGUSR2 (and SIGCHLD, which the pool must not need unblocked where it has pidfds):
 * the worker starts with none of that. */
void test_sp_signals(void) {
  struct sigaction ign, old_int, old_term;
  sigset_t block, old_mask;
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int wrong;

  memset(&ign, 0, sizeof(ign));
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  ASSERT_EQ_INT(sigaction(SIGINT, &ign, &old_int), 0);
  ASSERT_EQ_INT(sigaction(SIGTERM, &ign, &old_term), 0);
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  ASSERT_EQ_INT(pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, "sp_signals", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  memcpy(&wrong, r.data, sizeof(wrong));
  ASSERT_EQ_INT(wrong, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(pthread_sigmask(SIG_SETMASK, &old_mask, NULL), 0);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
}

#else

void test_sp_missing_exe(void) { test_skip("the Unix spawn path"); }
void test_sp_not_executable(void) { test_skip("the Unix spawn path"); }
void test_sp_fd_no_cloexec(void) { test_skip("the Unix spawn path"); }
void test_sp_signals(void) { test_skip("the Unix spawn path"); }

#endif

/* ---- A start from a parent that runs another thread ------------------------------- */

typedef struct busy_thread {
  uv_thread_t tid;
  uv_mutex_t lock;
  int stop;
  unsigned long rounds;
} busy_thread;

/* ASan's allocator (clang 14's) is not locked around fork(), as glibc's malloc is: a child
 * forked while another thread is inside ASan's malloc inherits that lock taken, and its
 * own first malloc waits for ever. That is the hazard the fork method warns of (a lock
 * another thread held), in the sanitizer's runtime rather than in procpool, so under
 * ASan the thread keeps only the environment busy. */
#define BUSY_MALLOC (!TEST_ASAN)

/* Keeps malloc, stdio's locks and the environment busy while the pool starts workers:
 * what a child of a threaded parent must not depend on. */
static void busy_run(void *arg) {
  busy_thread *b = (busy_thread *) arg;
  char buf[64];
  size_t n = sizeof(buf);

  for (;;) {
    void *p;
    int stop;
    uv_mutex_lock(&b->lock);
    stop = b->stop;
    b->rounds++;
    uv_mutex_unlock(&b->lock);
    if (stop)
      break;
    if (BUSY_MALLOC) {
      p = malloc(4096 + (b->rounds % 64) * 512);
      if (p != NULL)
        memset(p, 1, 64);
      free(p);
    }
    n = sizeof(buf);
    uv_os_getenv("PATH", buf, &n);
  }
}

void test_sp_threaded_parent(void) {
  busy_thread b;
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int i;

  memset(&b, 0, sizeof(b));
  ASSERT_EQ_INT(uv_mutex_init(&b.lock), 0);
  ASSERT_EQ_INT(uv_thread_create(&b.tid, busy_run, &b), 0);
  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 6; i++) {
    /* Every other task kills its worker: a replacement starts with the thread running. */
    APPLY(pool, i % 2 ? "crash_segv" : "echo", "t", 1, &r);
    ASSERT_STATUS(r, i % 2 ? PP_EWORKER : 0);
    pp_result_free(&r);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  uv_mutex_lock(&b.lock);
  b.stop = 1;
  uv_mutex_unlock(&b.lock);
  ASSERT_EQ_INT(uv_thread_join(&b.tid), 0);
  uv_mutex_destroy(&b.lock);
}

/* ---- One forkserver for the life of the process ------------------------------------ */

#if defined(__linux__)
#  include <sys/wait.h>


/* A forkserver pool of one worker, used once; gives back its server's pid (its worker's
 * parent). Skips when the environment forces another method. */
static long fs_pool_server(void) {
  pp_pool_options opts;
  pp_pool *pool;
  long server;

  pp_pool_options_init(&opts);
  opts.start_method = PP_START_FORKSERVER;
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  if (pp_pool_start_method(pool) != PP_START_FORKSERVER)
    test_skip("PROCPOOL_START_METHOD chose another method than forkserver");
  server = test_proc_stat((long) test_worker_pid(pool), NULL);
  ASSERT_TRUE(server > 1);
  ASSERT_TRUE(server != (long) getpid());
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  return server;
}

/* Makes two forkserver pools one after the other, prints their server's pid, then ends
 * as argv[2] says: "exit" returns from main, "kill" is SIGKILLed. */
int test_helper_fs_kept(int argc, char **argv) {
  long a, b;

  if (argc != 3)
    return 2;
  a = fs_pool_server();
  b = fs_pool_server();
  if (a != b) {
    fprintf(stderr, "fs-kept: the second pool had server %ld, the first %ld\n", b, a);
    return 3;
  }
  printf("%ld\n", a);
  fflush(stdout);
  if (strcmp(argv[2], "kill") == 0)
    raise(SIGKILL);
  return 0;
}

/* Runs the helper role "@fs-kept" with how; returns the server pid it printed, once it
 * has ended as asked. */
static long run_fs_kept(const char *how) {
  char exe[4096], line[64];
  size_t size = sizeof(exe), have = 0;
  int p[2], status;
  pid_t pid;
  ssize_t n;
  long server = -1;

  ASSERT_EQ_INT(uv_exepath(exe, &size), 0);
  ASSERT_EQ_INT(pipe(p), 0);
  fflush(NULL);
  pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    char *args[4];
    args[0] = exe;
    args[1] = (char *) "@fs-kept";
    args[2] = (char *) how;
    args[3] = NULL;
    dup2(p[1], 1);
    execv(exe, args);
    _exit(127);
  }
  close(p[1]);
  /* One line; the server holds the write end too (it has the helper's stdout), so the
   * end of the pipe is not waited for. */
  while (have + 1 < sizeof(line) && (have == 0 || line[have - 1] != '\n')) {
    n = read(p[0], line + have, sizeof(line) - 1 - have);
    if (n == -1 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    have += (size_t) n;
  }
  line[have] = '\0';
  close(p[0]);
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
    ;
  if (strcmp(how, "kill") == 0) {
    ASSERT_TRUE(WIFSIGNALED(status));
    ASSERT_EQ_INT(WTERMSIG(status), SIGKILL);
  } else {
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ_INT(WEXITSTATUS(status), 0);
  }
  ASSERT_EQ_INT(sscanf(line, "%ld", &server), 1);
  return server;
}

/* A pool's end leaves the server idle, and the next pool uses it; a process that made
 * forkserver pools leaves no server behind when it exits or is killed. */
void test_sp_fs_kept(void) {
  long a, b, server;

  a = fs_pool_server();
  ASSERT_EQ_INT(test_process_gone(a), 0);
  b = fs_pool_server();
  ASSERT_EQ_INT(b, a);

  server = run_fs_kept("exit");
  test_wait_process_gone(server, "the forkserver of a process that exited");
  server = run_fs_kept("kill");
  test_wait_process_gone(server, "the forkserver of a process that was killed");
}

#else

int test_helper_fs_kept(int argc, char **argv) {
  (void) argc;
  (void) argv;
  return 77;
}

void test_sp_fs_kept(void) { test_skip("the forkserver's processes are found in /proc"); }

#endif
