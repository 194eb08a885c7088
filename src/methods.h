/* The start methods' contract with the core. A method launches a worker process and
 * connects it to w->pipe; the core does everything else (protocol, tasks, replacement).
 * spawn lives in src/unix/spawn.c on Unix (posix_spawn) and in src/win/spawn.c on
 * Windows (CreateProcessW with an explicit handle list, in a job object of its own). */
#ifndef PP_METHODS_H
#define PP_METHODS_H

#include <stddef.h>

#include "pool/pool.h"

struct pp__method_ops {
  /* Sets up what the method needs for a pool (pool->method_data), before any worker.
   * May be NULL. Returns 0 or an error for pp_pool_new. */
  int (*pool_init)(pp_pool *pool);
  /* Once the pool's workers are all gone: releases pool->method_data. Each pool-level
   * handle it had counted in pool->open_handles ends with a call of
   * pp__pool_handle_closed from its close callback. May be NULL. */
  void (*pool_end)(pp_pool *pool);
  /* Starts w's process. The core has initialised w->pipe (not yet connected) and counts
   * it and w->timer in w->open_handles. On return, success or not, every handle the
   * method initialised is counted there too and is closed by close() with
   * pp__worker_on_handle_closed as its callback. On success w->pipe is connected to the
   * worker, w->pid is set (or is set later, for a method that starts workers
   * asynchronously), and the method calls pp__worker_on_exit exactly once, when the
   * process has ended, or pp__worker_on_start_failed if it could not be started after
   * all. On failure it returns a UV_E* or PP_E* code and writes a reason into why. */
  int (*start)(pp__worker *w, char *why, size_t why_size);
  /* Kills the process at once; harmless when it already ended. */
  void (*kill)(pp__worker *w);
  /* Closes the method's own handles of w, once the process has ended or never started. */
  void (*close)(pp__worker *w);
};

extern const pp__method_ops pp__spawn_ops;

/* What the core offers the platform code: appends a small frame of the pool's own to the
 * batch w is filling, which is written on the loop's next turn even if no task follows
 * (pool/dispatch.c). Returns 0 or an error code. */
int pp__wbatch_send(pp__worker *w, const void *frame, size_t len);
/* The Unix-only methods: NULL where they do not exist (src/win/methods.c). */
extern const pp__method_ops *const pp__fork_ops;
extern const pp__method_ops *const pp__forkserver_ops;

#endif
