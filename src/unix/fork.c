/* The fork start method: the pool forks its workers itself. A worker inherits the
 * parent's memory as it is at that moment, never runs the parent's loop (it serves with
 * the same blocking loop as every worker), holds no descriptor but stdio and its own
 * channel, and ends with _exit so the parent's atexit handlers never run twice.
 *
 * Its end is noticed without SIGCHLD where the kernel has pidfds (Linux 5.3 and later),
 * so neither libuv's child handling nor the application's SIGCHLD handler is disturbed;
 * elsewhere a uv_signal watcher checks this worker's pid, never any other. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__linux__)
#  include <sys/syscall.h>
#endif

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

static void pp__fork_reap(pp__worker *w) {
  int status = 0;
  pid_t r;

  if (w->exited)
    return;
  do
    r = waitpid((pid_t) w->pid, &status, WNOHANG);
  while (r == -1 && errno == EINTR);
  if (r == 0)
    return;
  if (w->m.handle.type == UV_POLL)
    uv_poll_stop(&w->m.pidfd);
  else
    uv_signal_stop(&w->m.sigchld);
  if (r == -1)
    /* ECHILD: someone's waitpid(-1) took it; the status is lost. */
    pp__worker_on_exit(w, -1, 0);
  else if (WIFSIGNALED(status))
    pp__worker_on_exit(w, 0, WTERMSIG(status));
  else
    pp__worker_on_exit(w, WEXITSTATUS(status), 0);
}

static void pp__fork_on_pidfd(uv_poll_t *h, int status, int events) {
  (void) status;
  (void) events;
  pp__fork_reap((pp__worker *) h->data);
}

static void pp__fork_on_sigchld(uv_signal_t *h, int signum) {
  (void) signum;
  pp__fork_reap((pp__worker *) h->data);
}

/* Watches for the worker's end: a pidfd where there is one, SIGCHLD otherwise. */
static int pp__fork_watch(pp__worker *w) {
  uv_loop_t *loop = w->pool->loop;
  int err;

#if defined(__linux__) && defined(SYS_pidfd_open)
  w->m_fd = (int) syscall(SYS_pidfd_open, (pid_t) w->pid, 0);
  if (w->m_fd >= 0) {
    err = uv_poll_init(loop, &w->m.pidfd, w->m_fd);
    if (err == 0) {
      w->m.pidfd.data = w;
      w->open_handles++;
      return uv_poll_start(&w->m.pidfd, UV_READABLE, pp__fork_on_pidfd);
    }
    close(w->m_fd);
    w->m_fd = -1;
  }
#endif
  err = uv_signal_init(loop, &w->m.sigchld);
  if (err != 0)
    return err;
  w->m.sigchld.data = w;
  w->open_handles++;
  err = uv_signal_start(&w->m.sigchld, pp__fork_on_sigchld, SIGCHLD);
  /* It may have ended before the watcher existed. */
  if (err == 0)
    pp__fork_reap(w);
  return err;
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
  w->pid = (long) pid;
  err = uv_pipe_open(&w->pipe, fds[0]);
  if (err != 0)
    close(fds[0]);
  else
    err = pp__fork_watch(w);
  if (err != 0) {
    int status;
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
      ;
    w->exited = 1;
    snprintf(why, why_size, "cannot watch a forked worker: %s", uv_strerror(err));
    return err;
  }
  return 0;
}

static void pp__fork_kill(pp__worker *w) {
  if (w->exited || w->pid <= 0)
    return;
#if defined(__linux__) && defined(SYS_pidfd_send_signal)
  /* A waitpid(-1) elsewhere in the program may have reaped the worker, and its pid may be
   * another process's by now; the pidfd still names the worker, and fails with ESRCH once
   * it is gone. */
  if (w->m_fd >= 0) {
    if (syscall(SYS_pidfd_send_signal, w->m_fd, SIGKILL, NULL, 0u) == 0 || errno != ENOSYS)
      return;
  }
#endif
  kill((pid_t) w->pid, SIGKILL);
}

static void pp__fork_close(pp__worker *w) {
  uv_handle_t *h = &w->m.handle;

  if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
    uv_close(h, pp__worker_on_handle_closed);
  if (w->m_fd >= 0) {
    close(w->m_fd);
    w->m_fd = -1;
  }
}

static const pp__method_ops pp__fork_ops_impl = { pp__fork_pool_init, NULL, pp__fork_start,
                                                  pp__fork_kill, pp__fork_close };
const pp__method_ops *const pp__fork_ops = &pp__fork_ops_impl;
