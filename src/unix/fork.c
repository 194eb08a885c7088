/* The fork start method: the pool forks its workers itself. A worker inherits the
 * parent's memory as it is at that moment, never runs the parent's loop (it serves with
 * the same blocking loop as every worker), holds no descriptor but stdio and its own
 * channel, and ends with _exit so the parent's atexit handlers never run twice.
 *
 * It is watched and reaped like a spawned worker (src/unix/child.c). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../serve.h"
#include "../worker.h"
#include "unix.h"

static int pp__threads_warned;

static PP__NORETURN void pp__forked_exit(int code) {
  /* The child's stdio buffers hold only what its tasks wrote: the parent flushed its own
   * before the fork. */
  fflush(NULL);
  _exit(code);
}

static int pp__fork_pool_init(pp_pool *pool) {
  size_t n;
  int threads;

  if (pp__table_get(&n) == NULL) {
    fprintf(stderr, "procpool: the fork method needs pp_main called first in main()\n");
    return PP_EINVAL;
  }
  threads = pp__unix_thread_count();
  (void) pool;
  if (threads > 1)
    pp__warn_once(&pp__threads_warned,
                  "forking a process that runs %d threads: a lock another thread held at "
                  "the fork (in malloc, stdio, a logging or math library) stays locked in "
                  "the worker and can deadlock it; use the forkserver or spawn method "
                  "(PROCPOOL_START_METHOD=forkserver)", threads);
  return 0;
}

/* In the child: serve on the channel. */
static void pp__fork_child(void *arg, int report) {
  pp__serve_ctx ctx;

  close(report);
  ctx.chan.h = *(const uv_os_sock_t *) arg;
  ctx.exit = pp__forked_exit;
  pp__serve(&ctx);
}

static int pp__fork_start(pp__worker *w, char *why, size_t why_size) {
  uv_os_sock_t fds[2];
  pid_t pid;
  int err;

  err = uv_socketpair(SOCK_STREAM, 0, fds, UV_NONBLOCK_PIPE, 0);
  if (err != 0) {
    snprintf(why, why_size, "cannot make a channel for a forked worker: %s",
             uv_strerror(err));
    return err;
  }
  pid = pp__unix_fork_child(&fds[1], 1, pp__fork_child, &fds[1], &err);
  close(fds[1]);
  if (pid == -1) {
    close(fds[0]);
    snprintf(why, why_size, "cannot fork a worker: %s", uv_strerror(err));
    return err;
  }
  err = pp__unix_child_adopt(w, (long) pid, fds[0]);
  if (err != 0) {
    snprintf(why, why_size, "cannot watch a forked worker: %s", uv_strerror(err));
    return err;
  }
  return 0;
}

static const pp__method_ops pp__fork_ops_impl = { pp__fork_pool_init, NULL, pp__fork_start,
                                                  pp__unix_child_kill, pp__unix_child_close };
const pp__method_ops *const pp__fork_ops = &pp__fork_ops_impl;
