/* The spawn start method on Unix: the worker is the program executed afresh, started
 * without copying this process (pp__unix_spawn: posix_spawn where it can close every
 * other descriptor), so a start costs the same from a parent of any size and never
 * fails for want of memory to copy it (vm.overcommit_memory=2). Its channel is a socket
 * pair, at the descriptor named on its command line after procpool's mark. It is
 * watched and reaped as the fork method's workers are (src/unix/child.c): never by
 * waitpid(-1), and without libuv's SIGCHLD handling where there are pidfds.
 *
 * Windows has its own, on uv_spawn (CreateProcess copies nothing). */
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../serve.h"
#include "../worker.h"
#include "unix.h"

static int pp__spawn_start(pp__worker *w, char *why, size_t why_size) {
  pp_pool *pool = w->pool;
  uv_os_sock_t fds[2];
  char mark[sizeof(PP__WORKER_MARK) + 16];
  char *args[3];
  pid_t pid;
  int err;

  snprintf(mark, sizeof(mark), "%s%d", PP__WORKER_MARK, PP__UNIX_CHILD_FD);
  args[0] = pool->exe;
  args[1] = mark;
  args[2] = NULL;
  /* Both ends close-on-exec from birth: no other child of this process, started by any
   * thread meanwhile, holds the worker's channel. The worker's end blocks: it serves
   * with plain blocking I/O. */
  err = uv_socketpair(SOCK_STREAM, 0, fds, UV_NONBLOCK_PIPE, 0);
  if (err != 0) {
    snprintf(why, why_size, "cannot make a channel for a worker: %s", uv_strerror(err));
    return err;
  }
  err = pp__unix_spawn(pool->exe, args, fds[1], &pid);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    snprintf(why, why_size, "cannot start the worker program '%s': %s (%s)", pool->exe,
             uv_strerror(err), uv_err_name(err));
    return err;
  }
  err = pp__unix_child_adopt(w, (long) pid, fds[0]);
  if (err != 0) {
    snprintf(why, why_size, "cannot watch the worker program '%s' (pid %ld): %s",
             pool->exe, w->pid, uv_strerror(err));
    return err;
  }
  return 0;
}

const pp__method_ops pp__spawn_ops = { NULL, NULL, pp__spawn_start, pp__unix_child_kill,
                                       pp__unix_child_close };
