/* What every forked worker holds (issue 17):
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
void test_fds_above_limit(void) { not_here(); }

#endif
