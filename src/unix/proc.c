#include "unix.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__linux__)
#  include <sys/syscall.h>
#endif

#include <uv.h>

pid_t pp__unix_fork(int *err) {
  sigset_t all, old;
  pid_t pid;

  fflush(NULL);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid = fork();
  if (pid == -1)
    *err = uv_translate_sys_error(errno);
  if (pid != 0)
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  return pid;
}

/* Closes [lo, hi] with close_range where the kernel has it, else one by one. */
static void pp__close_span(int lo, int hi) {
  int fd;

  if (lo > hi)
    return;
#if defined(__linux__) && defined(SYS_close_range)
  if (syscall(SYS_close_range, (unsigned) lo, (unsigned) hi, 0u) == 0)
    return;
#endif
  for (fd = lo; fd <= hi; fd++)
    close(fd);
}

int pp__unix_child_reset(const int *keep, int nkeep) {
  struct sigaction sa;
  sigset_t none;
  long max = sysconf(_SC_OPEN_MAX);
  int sorted[8];
  int sig, i, lo, devnull;

  for (sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP)
      continue;
    if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN &&
        sa.sa_handler != SIG_DFL) {
      memset(&sa, 0, sizeof(sa));
      sa.sa_handler = SIG_DFL;
      sigaction(sig, &sa, NULL);
    }
  }

  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull == -1)
    return errno;
  if (devnull != 0) {
    if (dup2(devnull, 0) == -1)
      return errno;
    close(devnull);
  } else if (fcntl(0, F_SETFD, 0) == -1) {
    return errno;
  }

  /* Nothing of the parent's but stdio and what the child needs: a worker that holds no
   * other process's channel lets end-of-file mean what it says. The kept descriptors
   * are few; sort them and close the spans between. */
  if (nkeep > 8)
    return EINVAL;
  for (i = 0; i < nkeep; i++) {
    int j, v = keep[i];
    for (j = i; j > 0 && sorted[j - 1] > v; j--)
      sorted[j] = sorted[j - 1];
    sorted[j] = v;
  }
  if (max <= 0 || max > 1 << 20)
    max = 1 << 20;
  lo = 3;
  for (i = 0; i < nkeep; i++) {
    if (sorted[i] < lo)
      continue;
    pp__close_span(lo, sorted[i] - 1);
    lo = sorted[i] + 1;
  }
  pp__close_span(lo, (int) max - 1);

  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL);
  return 0;
}

void pp__unix_child_fail(int fd, int err) {
  ssize_t r;

  do
    r = write(fd, &err, sizeof(err));
  while (r == -1 && errno == EINTR);
  _exit(127);
}

int pp__unix_read_report(int fd) {
  int err = 0;
  ssize_t r;

  do
    r = read(fd, &err, sizeof(err));
  while (r == -1 && errno == EINTR);
  return r == (ssize_t) sizeof(err) ? err : 0;
}

int pp__unix_thread_count(void) {
#if defined(__linux__)
  char line[256];
  int n = -1;
  FILE *f = fopen("/proc/self/status", "re");

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, "Threads:", 8) == 0) {
      n = atoi(line + 8);
      break;
    }
  fclose(f);
  return n;
#else
  return -1;
#endif
}
