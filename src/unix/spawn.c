/* The spawn start method on Unix: the worker is the program executed afresh, started
 * without copying this process (pp__unix_spawn: posix_spawn where it can close every
 * other descriptor), so a start costs the same from a parent of any size and never
 * fails for want of memory to copy it (vm.overcommit_memory=2). Its channel is a socket
 * pair, at the descriptor named on its command line after procpool's mark (behind a
 * launcher, the launcher's stdin and stdout, which it forwards to the worker's). It is
 * watched and reaped as the fork method's workers are (src/unix/child.c): never by
 * waitpid(-1), and without libuv's SIGCHLD handling where there are pidfds.
 *
 * Windows has its own, on uv_spawn (CreateProcess copies nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../serve.h"
#include "../methods.h"
#include "unix.h"

/* The command line: the launcher's arguments, if any, then the worker program and the
 * mark. NULL when out of memory; the caller frees it. */
static char **pp__spawn_args(pp_pool *pool, char *mark) {
  size_t n = 0, i;
  char **args;

  if (pool->launcher != NULL)
    while (pool->launcher[n] != NULL)
      n++;
  args = malloc((n + 3) * sizeof(*args));
  if (args == NULL)
    return NULL;
  for (i = 0; i < n; i++)
    args[i] = pool->launcher[i];
  args[n] = pool->exe;
  args[n + 1] = mark;
  args[n + 2] = NULL;
  return args;
}

static int pp__spawn_start(pp__worker *w, char *why, size_t why_size) {
  pp_pool *pool = w->pool;
  uv_os_sock_t fds[2];
  char mark[sizeof(PP__WORKER_MARK) + 16];
  char **args;
  const char *path;
  pid_t pid;
  int err;

  /* Behind a launcher the channel is the worker's stdin and stdout, which the launcher
   * forwards: the launcher gets the socket as both, and the worker finds it there. */
  if (pool->launcher != NULL)
    snprintf(mark, sizeof(mark), "%s%s", PP__WORKER_MARK, PP__CHAN_STDIO);
  else
    snprintf(mark, sizeof(mark), "%s%d", PP__WORKER_MARK, PP__UNIX_CHILD_FD);
  path = pool->launcher != NULL ? pool->launcher[0] : pool->exe;
  args = pp__spawn_args(pool, mark);
  if (args == NULL) {
    snprintf(why, why_size, "cannot start a worker: out of memory");
    return UV_ENOMEM;
  }
  /* Both ends close-on-exec from birth: no other child of this process, started by any
   * thread meanwhile, holds the worker's channel. The worker's end blocks: it serves
   * with plain blocking I/O. */
  err = uv_socketpair(SOCK_STREAM, 0, fds, UV_NONBLOCK_PIPE, 0);
  if (err != 0) {
    free(args);
    snprintf(why, why_size, "cannot make a channel for a worker: %s", uv_strerror(err));
    return err;
  }
  err = pp__unix_spawn(path, args, fds[1], pool->launcher != NULL, &pid);
  free(args);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    if (pool->launcher != NULL)
      snprintf(why, why_size, "cannot start the launcher '%s' for the worker program "
               "'%s': %s (%s)", path, pool->exe, uv_strerror(err), uv_err_name(err));
    else
      snprintf(why, why_size, "cannot start the worker program '%s': %s (%s)", pool->exe,
               uv_strerror(err), uv_err_name(err));
    return err;
  }
  err = pp__unix_child_adopt(w, (long) pid, fds[0]);
  if (err != 0) {
    snprintf(why, why_size, "cannot watch the %s '%s' (pid %ld): %s",
             pool->launcher != NULL ? "launcher" : "worker program", path, w->pid,
             uv_strerror(err));
    return err;
  }
  return 0;
}

const pp__method_ops pp__spawn_ops = { NULL, NULL, pp__spawn_start, pp__unix_child_kill,
                                       pp__unix_child_close };
