/* Watching, killing and reaping a worker that is this process's own child (the fork and
 * spawn methods), without disturbing anyone else's children.
 *
 * Its end is noticed without SIGCHLD where the kernel has pidfds (Linux 5.3 and later),
 * so neither libuv's child handling nor the application's SIGCHLD handler is disturbed;
 * elsewhere a uv_signal watcher checks this worker's pid, never any other. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__linux__)
#  include <sys/syscall.h>
#endif

#include "../methods.h"
#include "unix.h"

static void pp__child_reap(pp__worker *w) {
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

static void pp__child_on_pidfd(uv_poll_t *h, int status, int events) {
  (void) status;
  (void) events;
  pp__child_reap((pp__worker *) h->data);
}

static void pp__child_on_sigchld(uv_signal_t *h, int signum) {
  (void) signum;
  pp__child_reap((pp__worker *) h->data);
}

int pp__unix_child_watch(pp__worker *w) {
  uv_loop_t *loop = w->pool->loop;
  int err;

#if defined(__linux__) && defined(SYS_pidfd_open)
  w->m_fd = (int) syscall(SYS_pidfd_open, (pid_t) w->pid, 0);
  if (w->m_fd >= 0) {
    err = uv_poll_init(loop, &w->m.pidfd, w->m_fd);
    if (err == 0) {
      w->m.pidfd.data = w;
      w->open_handles++;
      return uv_poll_start(&w->m.pidfd, UV_READABLE, pp__child_on_pidfd);
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
  err = uv_signal_start(&w->m.sigchld, pp__child_on_sigchld, SIGCHLD);
  /* It may have ended before the watcher existed. */
  if (err == 0)
    pp__child_reap(w);
  return err;
}

int pp__unix_child_adopt(pp__worker *w, long pid, int fd) {
  int err;

  w->pid = pid;
  err = uv_pipe_open(&w->pipe, fd);
  if (err != 0)
    close(fd);
  else
    err = pp__unix_child_watch(w);
  if (err != 0)
    pp__unix_child_abandon(w);
  return err;
}

void pp__unix_child_abandon(pp__worker *w) {
  int status;

  kill((pid_t) w->pid, SIGKILL);
  while (waitpid((pid_t) w->pid, &status, 0) == -1 && errno == EINTR)
    ;
  w->exited = 1;
}

void pp__unix_child_kill(pp__worker *w) {
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

void pp__unix_child_close(pp__worker *w) {
  uv_handle_t *h = &w->m.handle;

  if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
    uv_close(h, pp__worker_on_handle_closed);
  if (w->m_fd >= 0) {
    close(w->m_fd);
    w->m_fd = -1;
  }
}
