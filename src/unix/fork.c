/* The fork start method. pp_pool_new forks one "fork helper" per pool, from the thread
 * that calls it; the helper is single-threaded and runs the forkserver's server loop
 * (fsserver.c) on its end of a socket pair private to the pool, and every worker of the
 * pool, the first ones and every replacement, is forked from it. So every worker is a
 * copy of this process as it was at pp_pool_new, and no worker is ever forked from the
 * pool's loop thread while other threads of the application may hold locks the worker
 * would need (stdio, a logging library, any lock of the application's): the one fork
 * from this process happens at a moment the application chose, e.g. before it starts
 * its threads.
 *
 * A worker behaves as one forked from the pool itself would: it keeps no descriptor but
 * stdio and its channel, takes the pool's stdout and stderr as they are when it is
 * asked for, serves with the blocking loop of every worker and ends with _exit, so the
 * parent's atexit handlers never run in it. Its parent is the helper, not this process.
 *
 * The helper ends with its pool: the pool's end shuts down its connection, and the
 * helper then kills and reaps what it has left and exits; the pool reaps it by pid. If
 * the helper dies first, its workers are cut off as a dead forkserver's are (fsclient.c)
 * and the next start forks a new helper: from the thread that runs the pool's loop, as
 * a last resort, since the moment pp_pool_new chose is gone (a warning says so). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../serve.h"
#include "../shared/registry.h"
#include "../methods.h"
#include "fs.h"
#include "unix.h"

static int pp__threads_warned;
static int pp__helper_warned_death;

/* In the helper: serve the pool's connection until it ends. _exit: the helper is a copy
 * of the parent, whose atexit handlers are not its own. */
typedef struct pp__helper_arg {
  int conn;
  int floor;               /* pp__fs_set_fd_floor's */
} pp__helper_arg;

static void pp__helper_child(void *arg, int report) {
  const pp__helper_arg *a = (const pp__helper_arg *) arg;

  close(report);
  pp__unix_fork_plain();
  pp__fs_set_fd_floor(a->floor);
  _exit(pp__fs_serve(-1, a->conn));
}

/* Kills and reaps the helper. It is this process's child and not reaped yet, so the pid
 * is its own; it has ended or is ending (its connection ended), or is killed here, so
 * the wait is only as long as the kernel's clean-up. */
static void pp__helper_reap(pid_t pid) {
  int status;

  kill(pid, SIGKILL);
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
    ;
}

static int pp__helper_open(pp_pool *pool, pp__fs_link *link, char *why, size_t why_size) {
  uv_os_sock_t fds[2];
  pp__helper_arg arg;
  pid_t pid;
  int err;

  (void) pool;
  err = uv_socketpair(SOCK_STREAM, 0, fds, 0, 0);
  if (err != 0) {
    snprintf(why, why_size, "cannot make the fork helper's connection: %s",
             uv_strerror(err));
    return err;
  }
  arg.conn = fds[1];
  arg.floor = pp__unix_fd_ceiling();
  pid = pp__unix_fork_child(&fds[1], 1, pp__helper_child, &arg, &err);
  close(fds[1]);
  if (pid == -1) {
    close(fds[0]);
    snprintf(why, why_size, "cannot fork the pool's fork helper: %s", uv_strerror(err));
    return err;
  }
  link->label = pp__strdupf("the fork helper of this pool (pid %ld)", (long) pid);
  if (link->label == NULL) {
    close(fds[0]);
    pp__helper_reap(pid);
    snprintf(why, why_size, "out of memory");
    return PP_ENOMEM;
  }
  link->conn = fds[0];
  link->server_pid = (long) pid;
  return 0;
}

static void pp__helper_release(pp__fs_link *link) { pp__helper_reap((pid_t) link->server_pid); }

static void pp__helper_lost(pp_pool *pool, const pp__fs_link *link) {
  (void) pool;
  pp__warn_once(&pp__helper_warned_death, "%s ended: the workers it had forked were cut "
                "off from their pool and end by themselves. A new helper is forked from "
                "the thread that runs the pool's loop: the workers forked from it are "
                "copies of this process as it is now, and any lock another thread holds "
                "now stays locked in them", link->label);
}

static const pp__fs_source pp__helper_src = { pp__helper_open, pp__helper_release,
                                              pp__helper_lost, 1, PP__EXIT_HELPER_GONE };

static int pp__fork_pool_init(pp_pool *pool) {
  size_t n;
  int threads;

  if (pp__table_get(&n) == NULL) {
    fprintf(stderr, "procpool: the fork method needs pp_main called first in main()\n");
    return PP_EINVAL;
  }
  threads = pp__unix_thread_count();
  if (threads > 1)
    pp__warn_once(&pp__threads_warned,
                  "forking a process that runs %d threads (a fork pool's helper, from "
                  "pp_pool_new): a lock another thread held at the fork (in malloc, "
                  "stdio, a logging or math library) stays locked in the helper and the "
                  "workers forked from it, and can deadlock them; create fork pools "
                  "before starting threads, or use the forkserver or spawn method "
                  "(PROCPOOL_START_METHOD=forkserver)", threads);
  return pp__fsc_pool_init(pool, &pp__helper_src);
}

static int pp__fork_start(pp__worker *w, char *why, size_t why_size) {
  return pp__fsc_start(w, &pp__helper_src, why, why_size);
}

static void pp__fork_kill(pp__worker *w) { pp__fsc_kill(w, &pp__helper_src); }

static const pp__method_ops pp__fork_ops_impl = { pp__fork_pool_init, pp__fsc_pool_end,
                                                  pp__fork_start, pp__fork_kill,
                                                  pp__fsc_close };
const pp__method_ops *const pp__fork_ops = &pp__fork_ops_impl;
