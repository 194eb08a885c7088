/* The spawn start method on Unix: the worker is the program executed afresh through
 * uv_spawn, with its channel (a socket pair) as an extra stdio slot, named on its command
 * line after procpool's mark. Windows has its own, src/win/spawn.c. */
#include <stdio.h>
#include <string.h>

#include "../os.h"
#include "../serve.h"
#include "../worker.h"

#define PP__CHANNEL_FD 3

static void pp__spawn_on_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
  pp__worker_on_exit((pp__worker *) proc->data, exit_status, term_signal);
}

static int pp__spawn_start(pp__worker *w, char *why, size_t why_size) {
  pp_pool *pool = w->pool;
  uv_process_options_t opts;
  uv_stdio_container_t stdio[PP__CHANNEL_FD + 1];
  char mark[sizeof(PP__WORKER_MARK) + 16];
  char *args[3];
  int err;

  snprintf(mark, sizeof(mark), "%s%d", PP__WORKER_MARK, PP__CHANNEL_FD);
  args[0] = pool->exe;
  args[1] = mark;
  args[2] = NULL;

  /* stdin is the null device: a worker must not compete with the parent for input.
   * stdout and stderr are the parent's, so what a task prints is seen. */
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[3].flags = (uv_stdio_flags) (UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE);
  stdio[3].data.stream = (uv_stream_t *) &w->pipe;

  memset(&opts, 0, sizeof(opts));
  opts.file = pool->exe;
  opts.args = args;
  opts.exit_cb = pp__spawn_on_exit;
  opts.stdio = stdio;
  opts.stdio_count = PP__CHANNEL_FD + 1;
  opts.flags = UV_PROCESS_WINDOWS_HIDE;

  w->m.proc.data = w;
  /* uv_spawn initialises the handle even when it fails, so it is always closed. */
  err = uv_spawn(pool->loop, &w->m.proc, &opts);
  w->open_handles++;
  if (err != 0) {
    snprintf(why, why_size, "cannot start the worker program '%s': %s (%s)", pool->exe,
             uv_strerror(err), uv_err_name(err));
    return err;
  }
  w->pid = (long) w->m.proc.pid;
  return 0;
}

static void pp__spawn_kill(pp__worker *w) {
  if (!w->exited)
    uv_process_kill(&w->m.proc, pp__os_kill_signal());
}

static void pp__spawn_close(pp__worker *w) {
  if (!uv_is_closing((uv_handle_t *) &w->m.proc))
    uv_close((uv_handle_t *) &w->m.proc, pp__worker_on_handle_closed);
}

const pp__method_ops pp__spawn_ops = { NULL, NULL, pp__spawn_start, pp__spawn_kill,
                                       pp__spawn_close };
