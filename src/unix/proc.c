#include "unix.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__linux__)
#  include <sys/prctl.h>
#  include <sys/syscall.h>
#endif

#include <uv.h>

static int pp__fork_plain;

void pp__unix_fork_plain(void) { pp__fork_plain = 1; }

pid_t pp__unix_fork(int *err) {
  sigset_t all, old;
  pid_t pid;

  fflush(NULL);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
#if defined(PP_HAVE__FORK)
  pid = pp__fork_plain ? _Fork() : fork();
#else
  pid = fork();
#endif
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

#if defined(__linux__) && defined(SYS_getdents64)
struct pp__dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

/* Closes every descriptor from lo up that /proc/self/fd lists. Raw system calls only:
 * opendir allocates, which a child of a threaded parent must not. Returns -1 when there
 * is no /proc. */
static int pp__close_listed(int lo) {
  union {
    struct pp__dirent64 align;
    char buf[4096];
  } u;
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (dir == -1)
    return -1;
  for (;;) {
    long n = syscall(SYS_getdents64, dir, u.buf, sizeof(u.buf)), off;
    if (n <= 0)
      break;
    for (off = 0; off < n;) {
      const struct pp__dirent64 *d = (const struct pp__dirent64 *) (u.buf + off);
      const char *p = u.buf + off + offsetof(struct pp__dirent64, d_name);
      int fd = 0;
      off += d->d_reclen;
      if (*p < '0' || *p > '9')
        continue;
      while (*p >= '0' && *p <= '9')
        fd = fd * 10 + (*p++ - '0');
      /* The directory's entries follow descriptor numbers, so closing one as it is
       * listed loses none. */
      if (fd >= lo && fd != dir)
        close(fd);
    }
  }
  close(dir);
  return 0;
}
#endif

/* Closes every descriptor from lo up, whatever its number: one can lie above the soft
 * RLIMIT_NOFILE (made before the limit was lowered), so the limit is no bound. */
static void pp__close_from(int lo) {
  struct rlimit rl;
  long top, fd;

#if defined(__linux__) && defined(SYS_close_range)
  if (syscall(SYS_close_range, (unsigned) lo, ~0u, 0u) == 0 || errno != ENOSYS)
    return;
#endif
#if defined(__linux__) && defined(SYS_getdents64)
  if (pp__close_listed(lo) == 0)
    return;
#endif
  /* The last resort: the hard limit bounds what could have been made before a lower
   * soft one. */
  top = 1L << 20;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY &&
      rl.rlim_max < (rlim_t) top)
    top = (long) rl.rlim_max;
  for (fd = lo; fd < top; fd++)
    close((int) fd);
}

int pp__unix_child_reset(const int *keep, int nkeep) {
  struct sigaction sa;
  sigset_t none;
  int sorted[8];
  int sig, i, lo, devnull;

  /* Every signal to its default, ignored ones too: a spawned worker starts that way
   * (libuv resets them all), and a worker must not differ by start method. The pool's
   * own SIG_IGN for SIGPIPE in particular is the parent's business; the channel is
   * written with MSG_NOSIGNAL. */
  for (sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP)
      continue;
    if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL) {
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
  lo = 3;
  for (i = 0; i < nkeep; i++) {
    if (sorted[i] < lo)
      continue;
    pp__close_span(lo, sorted[i] - 1);
    lo = sorted[i] + 1;
  }
  pp__close_from(lo);

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

/* In a child just forked, before anything that can block: on Linux, the child is killed
 * when the thread that forked it ends. End-of-file on its channel is how a child learns
 * of its parent's end, but a child that is stuck (a lock another thread held at the
 * fork, in a malloc that is not fork-safe) reads nothing, and would outlive its parent.
 * So every fork is made by a thread that ends only with its process: the main thread
 * (the fork helper's and the forkserver's workers, forked by a single-threaded process),
 * or procpool's forker thread (below). Async-signal-safe. */
static void pp__unix_child_tie(pid_t parent) {
#if defined(__linux__)
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  /* The parent may have ended before the call: the signal would never come. */
  if (getppid() != parent)
    _exit(127);
#else
  (void) parent;
#endif
}

static pid_t pp__fork_child_here(const int *keep, int nkeep,
                                 void (*child)(void *arg, int report), void *arg, int *err) {
  int all[8];
  uv_file rep[2];
  pid_t pid, parent = getpid();
  int report = 0, i, status;
  ssize_t r;

  if (nkeep > 7) {
    *err = UV_EINVAL;
    return -1;
  }
  /* Close-on-exec from birth, so no other child of this process can inherit it, whatever
   * thread forks or execs meanwhile. */
  *err = uv_pipe(rep, 0, 0);
  if (*err != 0)
    return -1;
  pid = pp__unix_fork(err);
  if (pid == 0) {
    pp__unix_child_tie(parent);
    for (i = 0; i < nkeep; i++)
      all[i] = keep[i];
    all[nkeep] = rep[1];
    report = pp__unix_child_reset(all, nkeep + 1);
    if (report != 0)
      pp__unix_child_fail(rep[1], report);
    child(arg, rep[1]);
    _exit(127);
  }
  close(rep[1]);
  if (pid > 0) {
    do
      r = read(rep[0], &report, sizeof(report));
    while (r == -1 && errno == EINTR);
    if (r != (ssize_t) sizeof(report))
      report = 0;
  }
  close(rep[0]);
  if (pid == -1)
    return -1;
  if (report != 0) {
    /* The child has already given up and is ending: reap it here. */
    while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
      ;
    *err = uv_translate_sys_error(report);
    return -1;
  }
  return pid;
}

#if defined(__linux__)
/* The forker: a thread of procpool's, made by the first fork asked for on a thread other
 * than the main one, that makes every such fork and never ends, so that the children it
 * forks are tied to the process, not to a thread of the application's that may end
 * first (a fork pool made by a short-lived thread). Its copy in a child is the child's
 * one thread, as the asking thread's would have been, at the same moment of memory. */
typedef struct pp__fork_req {
  const int *keep;
  int nkeep;
  void (*child)(void *arg, int report);
  void *arg;
  int err;
  pid_t pid;
  int done;
} pp__fork_req;

static uv_mutex_t pp__forker_mu;
static uv_cond_t pp__forker_cond;
static pp__fork_req *pp__forker_req;
static pid_t pp__forker_pid;  /* the process whose forker runs; 0: none yet */
static int pp__forker_err;

static void pp__forker_main(void *unused) {
  sigset_t all;

  (void) unused;
  /* Signals are the application's threads' business. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  uv_mutex_lock(&pp__forker_mu);
  for (;;) {
    pp__fork_req *q;
    while ((q = pp__forker_req) == NULL || q->done)
      uv_cond_wait(&pp__forker_cond, &pp__forker_mu);
    uv_mutex_unlock(&pp__forker_mu);
    q->pid = pp__fork_child_here(q->keep, q->nkeep, q->child, q->arg, &q->err);
    uv_mutex_lock(&pp__forker_mu);
    q->done = 1;
    uv_cond_broadcast(&pp__forker_cond);
  }
}

static void pp__forker_init(void) {
  uv_thread_t t;

  if (uv_mutex_init(&pp__forker_mu) != 0 || uv_cond_init(&pp__forker_cond) != 0) {
    pp__forker_err = UV_ENOMEM;
    return;
  }
  pp__forker_err = uv_thread_create(&t, pp__forker_main, NULL);
  if (pp__forker_err == 0)
    pp__forker_pid = getpid();
}

static uv_once_t pp__forker_once = UV_ONCE_INIT;

/* Forks through the forker; -1 with *err UV_ENOSYS when there is none to be had. */
static pid_t pp__fork_child_forker(const int *keep, int nkeep,
                                   void (*child)(void *arg, int report), void *arg,
                                   int *err) {
  pp__fork_req q;

  uv_once(&pp__forker_once, pp__forker_init);
  /* A child of this process has the variables, but not the thread. */
  if (pp__forker_err != 0 || pp__forker_pid != getpid()) {
    *err = UV_ENOSYS;
    return -1;
  }
  memset(&q, 0, sizeof(q));
  q.keep = keep;
  q.nkeep = nkeep;
  q.child = child;
  q.arg = arg;
  uv_mutex_lock(&pp__forker_mu);
  while (pp__forker_req != NULL)
    uv_cond_wait(&pp__forker_cond, &pp__forker_mu);
  pp__forker_req = &q;
  uv_cond_broadcast(&pp__forker_cond);
  while (!q.done)
    uv_cond_wait(&pp__forker_cond, &pp__forker_mu);
  pp__forker_req = NULL;
  uv_cond_broadcast(&pp__forker_cond);
  uv_mutex_unlock(&pp__forker_mu);
  *err = q.err;
  return q.pid;
}
#endif

pid_t pp__unix_fork_child(const int *keep, int nkeep, void (*child)(void *arg, int report),
                          void *arg, int *err) {
#if defined(__linux__)
  if ((pid_t) syscall(SYS_gettid) != getpid()) {
    pid_t pid = pp__fork_child_forker(keep, nkeep, child, arg, err);
    if (pid != -1 || *err != UV_ENOSYS)
      return pid;
  }
#endif
  return pp__fork_child_here(keep, nkeep, child, arg, err);
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

#if defined(PP_HAVE_ADDCLOSEFROM) || defined(__APPLE__)
#  define PP__SPAWN_NO_FORK 1
#endif

#if defined(PP__SPAWN_NO_FORK)
#  include <spawn.h>

extern char **environ;

/* glibc's posix_spawn starts the child with clone(CLONE_VM | CLONE_VFORK): no page table
 * is copied, so the cost is the same from a 20 GiB parent as from a small one, and the
 * exec's errno comes back as its result. The file actions run in the child in order. */
static int pp__spawn_posix(const char *path, char *const argv[], int chan, int on_stdio,
                           pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t all, none;
  int fd, err;

  err = posix_spawn_file_actions_init(&fa);
  if (err != 0)
    return uv_translate_sys_error(err);
  err = posix_spawnattr_init(&attr);
  if (err != 0) {
    posix_spawn_file_actions_destroy(&fa);
    return uv_translate_sys_error(err);
  }
  sigfillset(&all);
  sigemptyset(&none);
  /* Every signal to its default, ignored ones too (the pool's SIG_IGN for SIGPIPE is the
   * parent's business), and none blocked: a worker must not differ by start method nor
   * by what thread started it. */
  err = posix_spawnattr_setsigdefault(&attr, &all);
  if (err == 0)
    err = posix_spawnattr_setsigmask(&attr, &none);
  if (err == 0)
    err = posix_spawnattr_setflags(&attr, (short) (POSIX_SPAWN_SETSIGDEF |
                                                   POSIX_SPAWN_SETSIGMASK
#  if defined(__APPLE__)
                                                   | POSIX_SPAWN_CLOEXEC_DEFAULT
#  endif
                                                   ));
  if (err == 0 && !on_stdio)
    err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  /* A launcher gets the channel as its stdin and stdout. */
  for (fd = 0; fd <= 1 && err == 0 && on_stdio; fd++)
    err = posix_spawn_file_actions_adddup2(&fa, chan, fd);
  /* stdout and stderr stay the parent's, even marked close-on-exec: a dup2 onto itself
   * clears the mark (POSIX 2024; glibc since 2.29, macOS), as uv_spawn did. One closed
   * here stays closed there. */
  for (fd = on_stdio ? 2 : 1; fd <= 2 && err == 0; fd++)
    if (fcntl(fd, F_GETFD) != -1) {
#  if defined(__APPLE__)
      err = posix_spawn_file_actions_addinherit_np(&fa, fd);
#  else
      err = posix_spawn_file_actions_adddup2(&fa, fd, fd);
#  endif
    }
  if (err == 0 && !on_stdio)
    err = posix_spawn_file_actions_adddup2(&fa, chan, PP__UNIX_CHILD_FD);
#  if !defined(__APPLE__)
  /* The application's descriptors opened without close-on-exec too: a worker that holds
   * another's channel or a listening socket keeps them alive after the parent let go.
   * (macOS: POSIX_SPAWN_CLOEXEC_DEFAULT does this.) */
  if (err == 0)
    err = posix_spawn_file_actions_addclosefrom_np(&fa, on_stdio ? 3 : PP__UNIX_CHILD_FD + 1);
#  endif
  /* A launcher is named as a shell would find it ("ssh"); the worker program by path. */
  if (err == 0 && on_stdio)
    err = posix_spawnp(pid, path, &fa, &attr, argv, environ);
  else if (err == 0)
    err = posix_spawn(pid, path, &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return err == 0 ? 0 : uv_translate_sys_error(err);
}

#else

typedef struct pp__spawn_args {
  const char *path;
  char *const *argv;
  int chan;
  int on_stdio;
} pp__spawn_args;

/* In a forked child whose descriptors are stdio, the channel and report only. The
 * report pipe may sit where the channel goes (at PP__UNIX_CHILD_FD, or at 1 for a
 * launcher when this process runs with stdout closed): it moves first. */
static void pp__spawn_child(void *arg, int report) {
  const pp__spawn_args *a = (const pp__spawn_args *) arg;
  int fd, lo, hi, r;

  if (report <= PP__UNIX_CHILD_FD) {
    report = fcntl(report, F_DUPFD_CLOEXEC, PP__UNIX_CHILD_FD + 1);
    if (report == -1)
      _exit(127);
  }
  for (fd = 1; fd <= 2; fd++)
    fcntl(fd, F_SETFD, 0);
  /* The channel sits above PP__UNIX_CHILD_FD (pp__unix_spawn), so each copy is a new
   * descriptor, without close-on-exec. */
  lo = a->on_stdio ? 0 : PP__UNIX_CHILD_FD;
  hi = a->on_stdio ? 1 : PP__UNIX_CHILD_FD;
  for (fd = lo; fd <= hi; fd++) {
    do
      r = dup2(a->chan, fd);
    while (r == -1 && errno == EINTR);
    if (r == -1)
      pp__unix_child_fail(report, errno);
  }
  if (a->on_stdio)
    execvp(a->path, a->argv);
  else
    execv(a->path, a->argv);
  pp__unix_child_fail(report, errno);
}

/* No way to close the descriptors opened without close-on-exec in a posix_spawn child
 * (glibc before 2.34, musl, the BSDs): the one fully safe alternative is a child of our
 * own that closes them itself before exec. A vfork child could too, but it would share
 * our memory while it runs the closing loop and the signal resets, which only
 * posix_spawn's implementers can make safe against this process's signal handlers. */
static int pp__spawn_fork(const char *path, char *const argv[], int chan, int on_stdio,
                          pid_t *pid) {
  pp__spawn_args a;
  int err = 0;

  a.path = path;
  a.argv = argv;
  a.chan = chan;
  a.on_stdio = on_stdio;
  *pid = pp__unix_fork_child(&chan, 1, pp__spawn_child, &a, &err);
  return *pid == -1 ? err : 0;
}

#endif

int pp__unix_spawn(const char *path, char *const argv[], int chan, int on_stdio,
                   pid_t *pid) {
  int moved = -1, err;

  /* The channel must survive the actions that set up 0 to PP__UNIX_CHILD_FD: one that
   * already sits there (this process runs with some of stdio closed) moves up first. */
  if (chan <= PP__UNIX_CHILD_FD) {
    moved = fcntl(chan, F_DUPFD_CLOEXEC, PP__UNIX_CHILD_FD + 1);
    if (moved == -1)
      return uv_translate_sys_error(errno);
    chan = moved;
  }
#if defined(PP__SPAWN_NO_FORK)
  err = pp__spawn_posix(path, argv, chan, on_stdio, pid);
#else
  err = pp__spawn_fork(path, argv, chan, on_stdio, pid);
#endif
  if (moved != -1)
    close(moved);
  return err;
}

int pp__unix_fd_ceiling(void) {
  int fd, max = -1;
#if defined(__linux__)
  DIR *d = opendir("/proc/self/fd");

  if (d != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9')
        continue;
      fd = atoi(e->d_name);
      if (fd != dirfd(d) && fd > max)
        max = fd;
    }
    closedir(d);
    return max + 1;
  }
#endif
  for (fd = 0; fd < 4096; fd++)
    if (fcntl(fd, F_GETFD) != -1)
      max = fd;
  return max + 1;
}
