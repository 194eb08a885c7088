/* What every forked worker holds (issue 17):
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

/* The parent of process pid, from /proc; -1 when it cannot be read. */
static long parent_of(long pid) {
  char path[64], buf[512];
  FILE *f;
  size_t n;
  const char *p;
  long ppid;

  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  f = fopen(path, "r");
  if (f == NULL)
    return -1;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The name in parentheses may hold anything: the fields follow the last ')'. */
  p = strrchr(buf, ')');
  if (p == NULL || sscanf(p + 1, " %*c %ld", &ppid) != 1)
    return -1;
  return ppid;
}

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

static void check_echo(pp_pool *pool) {
  pp_result r;

  APPLY(pool, "echo", "y", 1, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "y", 1);
  pp_result_free(&r);
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
    long spid = parent_of(wpid);
    ASSERT_TRUE(spid > 1);
    ASSERT_EQ_INT(has_fd(spid, high), 0);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  close(high);
  ASSERT_EQ_INT(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

#else

static void not_here(void) { test_skip("the forkserver tests need Linux's /proc"); }
void test_stdio_follows(void) { not_here(); }
void test_fds_above_limit(void) { not_here(); }

#endif
