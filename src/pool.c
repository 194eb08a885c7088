/* The pool: options, the queue, the workers' life cycle, the parent's end of the
 * protocol, and the delivery of every task's one result. Everything runs on the pool's
 * loop; nothing here blocks except the functions documented as blocking. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "os.h"
#include "pool.h"
#include "protocol.h"
#include "serve.h"
#include "worker.h"

#define PP__DEFAULT_MAX_MESSAGE ((size_t) 256 << 20)
#define PP__DEFAULT_START_TIMEOUT_MS 60000
#define PP__MAX_WORKERS 4096
/* How long a worker that ended may keep its channel open (a grandchild that inherited it)
 * before the pool stops waiting for the last bytes, and how long a retired worker may
 * take to exit after its channel closed before it is killed. */
#define PP__EXIT_GRACE_MS 1000
#define PP__RETIRE_GRACE_MS 5000

static void pp__pump(pp_pool *pool);
static void pp__on_flush(uv_prepare_t *h);
static void pp__maintain(pp_pool *pool);
static void pp__maybe_shutdown(pp_pool *pool);
static void pp__pool_on_flush_closed(uv_handle_t *h);
static int pp__pool_end(pp_pool *pool);
static void pp__worker_kill(pp__worker *w);
static void pp__worker_finish(pp__worker *w);

/* ---- Small helpers ------------------------------------------------------------------ */

static char *pp__vstrdupf(const char *fmt, va_list ap) {
  va_list ap2;
  int n;
  char *s;

  va_copy(ap2, ap);
  n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return NULL;
  s = malloc((size_t) n + 1);
  if (s != NULL)
    vsnprintf(s, (size_t) n + 1, fmt, ap);
  return s;
}

static char *pp__strdupf(const char *fmt, ...) PP_PRINTF(1, 2);
static char *pp__strdupf(const char *fmt, ...) {
  va_list ap;
  char *s;

  va_start(ap, fmt);
  s = pp__vstrdupf(fmt, ap);
  va_end(ap);
  return s;
}

static char *pp__strdup(const char *s) { return s ? pp__strdupf("%s", s) : NULL; }

/* ---- Warnings ----------------------------------------------------------------------- */

static pp_warning_cb pp__warning_cb;
static void *pp__warning_user;

void pp_set_warning_handler(pp_warning_cb cb, void *user) {
  pp__warning_cb = cb;
  pp__warning_user = user;
}

void pp__warn_once(int *once, const char *fmt, ...) {
  char msg[1024];
  va_list ap;

  if (*once)
    return;
  *once = 1;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (pp__warning_cb != NULL)
    pp__warning_cb(msg, pp__warning_user);
  else
    fprintf(stderr, "procpool: warning: %s\n", msg);
}

/* ---- Options ------------------------------------------------------------------------ */

void pp_pool_options_init(pp_pool_options *opts) {
  if (opts != NULL)
    memset(opts, 0, sizeof(*opts));
}

const char *pp_start_method_name(pp_start_method m) {
  switch (m) {
    case PP_START_DEFAULT: return "default";
    case PP_START_FORK: return "fork";
    case PP_START_SPAWN: return "spawn";
    case PP_START_FORKSERVER: return "forkserver";
    default: return "unknown";
  }
}

/* Resolves the method: PROCPOOL_START_METHOD first, then the option, then the OS's
 * default. The error names the variable when the variable was the cause. */
static int pp__resolve_method(pp_start_method asked, pp_start_method *out) {
  char env[32];
  size_t size = sizeof(env);
  pp_start_method m = asked;
  int from_env = 0;

  if (asked < PP_START_DEFAULT || asked > PP_START_FORKSERVER)
    return PP_EINVAL;
  if (uv_os_getenv("PROCPOOL_START_METHOD", env, &size) == 0 && env[0] != '\0') {
    from_env = 1;
    if (strcmp(env, "spawn") == 0)
      m = PP_START_SPAWN;
    else if (strcmp(env, "fork") == 0)
      m = PP_START_FORK;
    else if (strcmp(env, "forkserver") == 0)
      m = PP_START_FORKSERVER;
    else if (strcmp(env, "default") == 0)
      m = PP_START_DEFAULT;
    else {
      fprintf(stderr, "procpool: PROCPOOL_START_METHOD='%s' is not a start method; use "
                      "spawn, fork, forkserver or default\n", env);
      return PP_EINVAL;
    }
  }
  if (m == PP_START_DEFAULT)
    m = pp__os_default_method();
  if (pp__os_method_supported(m) != 0) {
    fprintf(stderr, "procpool: the start method '%s'%s is not available on this OS or in "
                    "this version; use spawn%s\n", pp_start_method_name(m),
            from_env ? " (from PROCPOOL_START_METHOD)" : "",
            from_env ? " or unset PROCPOOL_START_METHOD" : "");
    return PP_ENOTSUP;
  }
  *out = m;
  return 0;
}

static int pp__resolve_options(pp_pool *pool, const pp_pool_options *o) {
  const pp_task *table;
  size_t n, i;
  int err;

  err = pp__resolve_method(o->start_method, &pool->method);
  if (err != 0)
    return err;
  switch (pool->method) {
    case PP_START_FORK: pool->ops = pp__fork_ops; break;
    case PP_START_FORKSERVER: pool->ops = pp__forkserver_ops; break;
    default: pool->ops = &pp__spawn_ops; break;
  }
  if (pool->ops == NULL)
    return PP_ENOTSUP;
  pool->nworkers = o->workers ? o->workers : uv_available_parallelism();
  if (pool->nworkers == 0)
    pool->nworkers = 1;
  if (pool->nworkers > PP__MAX_WORKERS)
    return PP_EINVAL;
  if (o->initarg == NULL && o->initarg_len > 0)
    return PP_EINVAL;
  pool->max_message = o->max_message_bytes ? o->max_message_bytes : PP__DEFAULT_MAX_MESSAGE;
  if (pool->max_message > PP__MAX_MESSAGE_LIMIT || o->initarg_len > pool->max_message)
    return o->initarg_len > pool->max_message ? PP_E2BIG : PP_EINVAL;
  pool->max_tasks = o->max_tasks_per_worker;
  if (o->pipeline_depth > 1024)
    return PP_EINVAL;
  pool->depth = o->pipeline_depth;
  pool->timeout_ms = o->task_timeout_ms;
  pool->start_timeout_ms = o->start_timeout_ms ? o->start_timeout_ms
                                               : PP__DEFAULT_START_TIMEOUT_MS;

  table = pp__table_get(&n);
  if (o->worker_executable == NULL) {
    /* Without pp_main first, a spawned copy of this program would run its whole main()
     * again, pools included: refuse rather than multiply. */
    if (table == NULL) {
      fprintf(stderr, "procpool: call pp_main(argc, argv, tasks) first in main() before "
                      "creating a pool, or set worker_executable\n");
      return PP_EINVAL;
    }
  }
  if (table != NULL) {
    pool->names = malloc((n + 1) * sizeof(*pool->names));
    if (pool->names == NULL)
      return PP_ENOMEM;
    for (i = 0; i < n; i++)
      pool->names[i] = table[i].name;
    pool->ntasks = n;
  }
  if (o->initializer != NULL) {
    size_t len = strlen(o->initializer);
    if (len == 0 || len > PP__MAX_NAME)
      return PP_EINVAL;
    if (pool->names != NULL) {
      for (i = 0; i < pool->ntasks; i++)
        if (strcmp(pool->names[i], o->initializer) == 0)
          break;
      if (i == pool->ntasks)
        return PP_ENOTASK;
    }
    pool->initializer = pp__strdup(o->initializer);
    if (pool->initializer == NULL)
      return PP_ENOMEM;
  }
  if (o->initarg_len > 0) {
    pool->initarg = malloc(o->initarg_len);
    if (pool->initarg == NULL)
      return PP_ENOMEM;
    memcpy(pool->initarg, o->initarg, o->initarg_len);
    pool->initarg_len = o->initarg_len;
  }
  if (o->worker_executable != NULL) {
    if (o->worker_executable[0] == '\0')
      return PP_EINVAL;
    pool->exe = pp__strdup(o->worker_executable);
  } else {
    char path[4096];
    size_t size = sizeof(path);
    err = uv_exepath(path, &size);
    if (err != 0)
      return err;
    pool->exe = pp__strdup(path);
  }
  return pool->exe == NULL ? PP_ENOMEM : 0;
}

/* ---- Tasks -------------------------------------------------------------------------- */

static int pp__find_task(const pp_pool *pool, const char *name, uint32_t *index) {
  size_t i;

  for (i = 0; i < pool->ntasks; i++)
    if (strcmp(pool->names[i], name) == 0) {
      *index = (uint32_t) i;
      return 0;
    }
  return PP_ENOTASK;
}

/* A task is freed once it is decided, no write points at it, and no worker's list holds
 * it (a task decided while sent ahead stays listed until its result comes back). */
static void pp__task_free(pp__task *t) {
  if (t != NULL && t->state == PP__T_DONE && t->writing == 0 && t->worker == NULL)
    free(t);
}

/* Decides the task's outcome, once: calls its callback and releases it. data and msg
 * (malloc'd, may be NULL) pass to the result. A task already done is left alone: its
 * outcome was decided by whoever came first. */
static void pp__task_finish(pp__task *t, int status, void *data, size_t len, char *msg) {
  pp_pool *pool = t->pool;
  pp_result r;

  if (t->state == PP__T_DONE) {
    free(data);
    free(msg);
    pp__task_free(t);
    return;
  }
  if (t->state == PP__T_QUEUED)
    pp__q_remove(&t->node);
  t->state = PP__T_DONE;
  pp__tasktab_del(&pool->tasks, t->id);
  pool->pending--;

  if (status != 0 && msg == NULL)
    msg = pp__strdupf("task '%s' (id %llu): %s", t->name, (unsigned long long) t->id,
                      pp_strerror(status));
  r.id = t->id;
  r.status = status;
  r.data = data;
  r.len = len;
  r.message = msg;
  if (t->cb != NULL) {
    pool->cb_depth++;
    t->cb(pool, &r, t->user);
    pool->cb_depth--;
  }
  pp_result_free(&r);
  pp__task_free(t);
  pp__maybe_shutdown(pool);
}

static void pp__task_fail(pp__task *t, int status, const char *fmt, ...) PP_PRINTF(3, 4);
static void pp__task_fail(pp__task *t, int status, const char *fmt, ...) {
  va_list ap;
  char *msg;

  va_start(ap, fmt);
  msg = pp__vstrdupf(fmt, ap);
  va_end(ap);
  pp__task_finish(t, status, NULL, 0, msg);
}

void pp_result_free(pp_result *result) {
  if (result == NULL)
    return;
  free(result->data);
  free(result->message);
  memset(result, 0, sizeof(*result));
}

/* ---- Workers: start, frames, end ------------------------------------------------------ */

static void pp__worker_count(pp__worker *w, int counted) {
  if (w->counted == counted)
    return;
  w->counted = counted;
  if (counted) {
    w->pool->active++;
  } else {
    w->pool->active--;
    if (w->ready_counted)
      w->pool->ready--;
    w->ready_counted = 0;
  }
}

static void pp__worker_set_idle(pp__worker *w, int idle) {
  pp__q_remove(&w->idle_node);
  if (idle)
    pp__q_insert_tail(&w->pool->idle, &w->idle_node);
}

static pp__task *pp__worker_head(pp__worker *w) {
  return pp__q_empty(&w->inflight) ? NULL
                                   : PP__CONTAINER_OF(pp__q_head(&w->inflight), pp__task, node);
}

/* Takes t off w's list of tasks in flight. */
static void pp__worker_detach(pp__worker *w, pp__task *t) {
  pp__q_remove(&t->node);
  t->worker = NULL;
  w->ninflight--;
}

/* Every task still listed on w goes back to the front of the queue, in order, to run in
 * another worker; those already decided are released. */
static void pp__worker_requeue(pp__worker *w) {
  pp_pool *pool = w->pool;

  while (!pp__q_empty(&w->inflight)) {
    pp__task *t = PP__CONTAINER_OF(w->inflight.prev, pp__task, node);
    pp__worker_detach(w, t);
    if (t->state == PP__T_DONE) {
      pp__task_free(t);
    } else {
      t->state = PP__T_QUEUED;
      t->requeued++;
      pp__q_insert_head(&pool->queue, &t->node);
    }
  }
}

static void pp__wbatch_free(pp__wbatch *b) {
  free(b->bytes);
  free(b->segs);
  free(b->tasks);
  free(b->bufs);
  memset(b, 0, sizeof(*b));
}

void pp__worker_on_handle_closed(uv_handle_t *handle) {
  pp__worker *w = (pp__worker *) handle->data;
  pp_pool *pool = w->pool;

  if (--w->open_handles > 0)
    return;
  pp__q_remove(&w->node);
  pp__q_remove(&w->idle_node);
  pp__q_remove(&w->dirty_node);
  pp__rx_free(&w->rx);
  pp__wbatch_free(&w->wb[0]);
  pp__wbatch_free(&w->wb[1]);
  free(w);
  pp__maybe_shutdown(pool);
}

static void pp__wbatch_done(pp__wbatch *b, pp__worker *sent_to);

static void pp__worker_close(pp__worker *w) {
  /* The batch being filled will never be written; the one being written, if any, is
   * canceled by the pipe's close, which calls its callback. */
  pp__q_remove(&w->dirty_node);
  pp__wbatch_done(&w->wb[w->wb_fill], NULL);
  uv_timer_stop(&w->timer);
  if (!uv_is_closing((uv_handle_t *) &w->pipe))
    uv_close((uv_handle_t *) &w->pipe, pp__worker_on_handle_closed);
  if (!uv_is_closing((uv_handle_t *) &w->timer))
    uv_close((uv_handle_t *) &w->timer, pp__worker_on_handle_closed);
  w->pool->ops->close(w);
}

/* The pool gives up starting workers: it keeps those it has, and when none is left, fails
 * what is queued with the reason. */
static void pp__start_failed(pp_pool *pool, int err, char *msg) {
  pool->start_failures++;
  if (pool->start_failures <= pool->nworkers + 2 || pool->broken) {
    free(msg);
    return;
  }
  pool->broken = err;
  pool->broken_msg = msg ? msg : pp__strdupf("%s", pp_strerror(err));
}

static void pp__fail_queue_if_broken(pp_pool *pool) {
  if (!pool->broken || pool->active > 0)
    return;
  while (!pp__q_empty(&pool->queue)) {
    pp__task *t = PP__CONTAINER_OF(pp__q_head(&pool->queue), pp__task, node);
    pp__task_fail(t, pool->broken, "task '%s' (id %llu) could not run: %s", t->name,
                  (unsigned long long) t->id,
                  pool->broken_msg ? pool->broken_msg : pp_strerror(pool->broken));
  }
}

static void pp__on_timer(uv_timer_t *timer);
static void pp__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void pp__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void pp__on_init_written(uv_write_t *req, int status);

static void pp__worker_start(pp_pool *pool) {
  pp__worker *w;
  char why[512] = "";
  uint8_t *p;
  size_t ilen, size;
  uv_buf_t buf;
  int err;

  w = calloc(1, sizeof(*w));
  if (w == NULL || pp__rx_init(&w->rx, pool->max_message) != 0) {
    free(w);
    pp__start_failed(pool, PP_ESPAWN, pp__strdupf("cannot start a worker: out of memory"));
    return;
  }
  w->pool = pool;
  w->token = ++pool->next_token;
  w->m_fd = -1;
  w->state = PP__W_STARTING;
  pp__q_init(&w->idle_node);
  pp__q_init(&w->dirty_node);
  pp__q_init(&w->inflight);
  pp__q_insert_tail(&pool->workers, &w->node);
  pp__worker_count(w, 1);
  uv_pipe_init(pool->loop, &w->pipe, 0);
  uv_timer_init(pool->loop, &w->timer);
  w->pipe.data = w;
  w->timer.data = w;
  w->open_handles = 2;

  err = pool->ops->start(w, why, sizeof(why));
  if (err != 0) {
    pp__worker_count(w, 0);
    w->state = PP__W_GOING;
    w->finished = 1;
    pp__worker_close(w);
    if (pool->first_err == 0)
      pool->first_err = err;
    pp__start_failed(pool, PP_ESPAWN, pp__strdupf("%s", why));
    return;
  }
  uv_read_start((uv_stream_t *) &w->pipe, pp__on_alloc, pp__on_read);
  uv_timer_start(&w->timer, pp__on_timer, pool->start_timeout_ms, 0);

  /* The init frame goes out at once, without waiting for the hello: the worker reads it
   * after it has greeted, so a worker is ready after one round trip. */
  ilen = pool->initializer ? strlen(pool->initializer) : 0;
  size = PP__HDR_SIZE + PP__INIT_FIXED + ilen + pool->initarg_len;
  w->init_buf = p = malloc(size);
  if (p == NULL) {
    pp__worker_kill(w);
    return;
  }
  pp__hdr_encode(p, PP__F_INIT, 0, 0, (uint32_t) (size - PP__HDR_SIZE));
  p += PP__HDR_SIZE;
  pp__put_u16(p, PP__PROTO_VERSION);
  pp__put_u16(p + 2, 0);
  pp__put_u64(p + 4, pool->max_message);
  p[12] = (uint8_t) ilen;
  memcpy(p + PP__INIT_FIXED, pool->initializer ? pool->initializer : "", ilen);
  if (pool->initarg_len > 0)
    memcpy(p + PP__INIT_FIXED + ilen, pool->initarg, pool->initarg_len);
  buf = uv_buf_init((char *) w->init_buf, (unsigned int) size);
  w->init_req.data = w;
  if (uv_write(&w->init_req, (uv_stream_t *) &w->pipe, &buf, 1, pp__on_init_written) != 0) {
    free(w->init_buf);
    w->init_buf = NULL;
  }
}

static void pp__on_init_written(uv_write_t *req, int status) {
  pp__worker *w = (pp__worker *) req->data;

  (void) status;  /* A failed write shows up as the worker's end, handled there. */
  free(w->init_buf);
  w->init_buf = NULL;
}

/* Replaces workers until the pool has its number of them, unless it is ending or gave
 * up. A start that fails at once counts as a failed start, so this loop is bounded. */
static void pp__maintain(pp_pool *pool) {
  while (!pool->closing && !pool->broken && pool->active < pool->nworkers)
    pp__worker_start(pool);
  pp__fail_queue_if_broken(pool);
}

/* Ends a worker that must not go on. Its running task must already be decided; the
 * tasks sent after it had not started, and go back to the queue. */
static void pp__worker_kill(pp__worker *w) {
  if (w->state == PP__W_GOING && w->finished)
    return;
  w->state = PP__W_GOING;
  pp__worker_requeue(w);
  pp__worker_set_idle(w, 0);
  pp__worker_count(w, 0);
  /* Nothing more is wanted from it, and nothing more may be written to it: a write still
   * under way may point at an argument whose task is decided and whose owner may free it. */
  if (!uv_is_closing((uv_handle_t *) &w->pipe))
    uv_close((uv_handle_t *) &w->pipe, pp__worker_on_handle_closed);
  w->pool->ops->kill(w);
  if (w->exited)
    pp__worker_finish(w);
  pp__maintain(w->pool);
}

/* Closes an idle worker's channel so that it exits by itself; it is killed if it has not
 * exited after a grace period. */
static void pp__worker_retire(pp__worker *w) {
  w->state = PP__W_GOING;
  pp__worker_set_idle(w, 0);
  pp__worker_count(w, 0);
  if (!uv_is_closing((uv_handle_t *) &w->pipe))
    uv_close((uv_handle_t *) &w->pipe, pp__worker_on_handle_closed);
  uv_timer_start(&w->timer, pp__on_timer, PP__RETIRE_GRACE_MS, 0);
  pp__maintain(w->pool);
}

/* The worker's process has ended and its channel is drained: decide what its end means
 * for its task and for the pool, and release it. */
static void pp__worker_finish(pp__worker *w) {
  pp_pool *pool = w->pool;
  char how[128];
  int was_starting = w->state == PP__W_STARTING;
  int was_alive = w->state != PP__W_GOING;

  if (w->finished)
    return;
  w->finished = 1;
  pp__os_describe_exit(w->exit_status, w->term_signal, how, sizeof(how));
  w->state = PP__W_GOING;
  pp__worker_set_idle(w, 0);
  pp__worker_count(w, 0);
  if (was_starting) {
    if (!w->got_hello)
      pp__start_failed(pool, PP_ESPAWN,
                       pp__strdupf("worker pid %ld %s before it reached pp_main (does main() "
                                   "call pp_main first? is '%s' a program with the same "
                                   "tasks?)", w->pid, how, pool->exe));
    else
      pp__start_failed(pool, PP_EINIT,
                       pp__strdupf("worker pid %ld %s while it ran the initializer '%s'",
                                   w->pid, how, pool->initializer ? pool->initializer
                                                                  : "(none)"));
  } else if (was_alive && pp__worker_head(w) != NULL &&
             (pp__worker_head(w)->sent_to == w->token || pp__worker_head(w)->requeued >= 3)) {
    /* It had started (its frame reached the worker whole), or it has come back from dead
     * workers too often to be an accident. */
    pp__task *t = pp__worker_head(w);
    pp__worker_detach(w, t);
    pp__task_fail(t, PP_EWORKER, "task '%s' (id %llu) failed: worker pid %ld %s while it "
                    "ran the task", t->name, (unsigned long long) t->id, w->pid, how);
  }
  pp__worker_requeue(w);
  pp__worker_close(w);
  pp__maintain(pool);
  pp__pump(pool);
}

void pp__worker_on_exit(pp__worker *w, int64_t exit_status, int term_signal) {
  w->exited = 1;
  w->exit_status = exit_status;
  w->term_signal = term_signal;
  /* The process may have written a result just before it ended: keep reading until the
   * channel is drained, unless nothing more is wanted from it. */
  if (w->eof || w->state == PP__W_GOING || uv_is_closing((uv_handle_t *) &w->pipe))
    pp__worker_finish(w);
  else
    uv_timer_start(&w->timer, pp__on_timer, PP__EXIT_GRACE_MS, 0);
}

void pp__worker_on_start_failed(pp__worker *w, const char *why) {
  pp_pool *pool = w->pool;

  if (w->state != PP__W_STARTING)
    return;
  w->exited = 1;
  w->state = PP__W_GOING;
  if (pool->first_err == 0)
    pool->first_err = PP_ESPAWN;
  pp__start_failed(pool, PP_ESPAWN, pp__strdupf("%s", why));
  w->finished = 1;
  pp__worker_set_idle(w, 0);
  pp__worker_count(w, 0);
  pp__worker_close(w);
  pp__maintain(pool);
}

static void pp__on_timer(uv_timer_t *timer) {
  pp__worker *w = (pp__worker *) timer->data;
  pp_pool *pool = w->pool;

  if (w->exited) {
    /* Ended, but something else holds its channel open: stop waiting for it. */
    pp__worker_finish(w);
  } else if (w->state == PP__W_STARTING) {
    char *msg = pp__strdupf("worker pid %ld was not ready within %llu ms (stuck before "
                            "pp_main, or in the initializer?); it was killed", w->pid,
                            (unsigned long long) pool->start_timeout_ms);
    w->state = PP__W_GOING;
    pp__start_failed(pool, PP_ESPAWN, msg);
    pp__worker_kill(w);
  } else if (w->state == PP__W_READY && pp__worker_head(w) != NULL && !w->eof) {
    pp__task *t = pp__worker_head(w);
    pp__worker_detach(w, t);
    pp__task_fail(t, PP_ETIMEDOUT, "task '%s' (id %llu) ran longer than task_timeout_ms "
                  "(%llu ms); worker pid %ld was killed", t->name, (unsigned long long) t->id,
                  (unsigned long long) pool->timeout_ms, w->pid);
    pp__worker_kill(w);
  } else {
    /* A retired worker that did not exit, or one that closed its channel and stayed. */
    pp__worker_kill(w);
  }
  pp__pump(pool);
}

/* A worker broke the protocol: it is killed, and its task fails with PP_EPROTO. */
static void pp__worker_proto(pp__worker *w, const char *why) {
  pp_pool *pool = w->pool;

  if (w->state == PP__W_STARTING) {
    pp__start_failed(pool, PP_ESPAWN,
                     pp__strdupf("worker pid %ld sent malformed data while starting (%s); "
                                 "it was killed", w->pid, why));
  } else if (pp__worker_head(w) != NULL) {
    pp__task *t = pp__worker_head(w);
    pp__worker_detach(w, t);
    pp__task_fail(t, PP_EPROTO, "task '%s' (id %llu) failed: worker pid %ld sent malformed "
                  "data (%s); it was killed", t->name, (unsigned long long) t->id, w->pid,
                  why);
  }
  pp__worker_kill(w);
}

static int pp__on_hello(pp__worker *w, const uint8_t *p, size_t len) {
  pp_pool *pool = w->pool;
  pp__hello h;
  const char *why;
  const uint8_t *name;
  size_t nlen, pos = 0, i;

  if (pp__hello_decode(p, len, &h, &why) != 0) {
    pp__worker_proto(w, why);
    return -1;
  }
  w->got_hello = 1;
  if (pool->names == NULL) {
    /* A worker_executable and no table in this process: the first worker's table is
     * the pool's. */
    pool->names = calloc((size_t) h.ntasks + 1, sizeof(*pool->names));
    if (pool->names == NULL) {
      pp__worker_proto(w, "out of memory");
      return -1;
    }
    pool->names_owned = 1;
    for (i = 0; i < h.ntasks; i++) {
      char *s;
      pp__hello_name(&h, &pos, &name, &nlen);
      s = malloc(nlen + 1);
      if (s == NULL) {
        pp__worker_proto(w, "out of memory");
        return -1;
      }
      memcpy(s, name, nlen);
      s[nlen] = '\0';
      pool->names[i] = s;
      pool->ntasks = i + 1;
    }
    return 0;
  }
  if (h.ntasks != pool->ntasks)
    goto differs;
  for (i = 0; i < h.ntasks; i++) {
    pp__hello_name(&h, &pos, &name, &nlen);
    if (strlen(pool->names[i]) != nlen || memcmp(pool->names[i], name, nlen) != 0)
      goto differs;
  }
  return 0;

differs:
  pp__worker_proto(w, "its task table differs from this program's: is the worker "
                      "program built from the same sources?");
  return -1;
}

static void pp__on_ready(pp__worker *w, const pp__hdr *h, const uint8_t *p) {
  pp_pool *pool = w->pool;

  if (h->aux != PP__R_OK) {
    char *msg = pp__strdupf("the initializer '%s' failed in worker pid %ld: %.*s",
                            pool->initializer ? pool->initializer : "(none)", w->pid,
                            (int) h->len, (const char *) p);
    w->state = PP__W_GOING;
    pp__start_failed(pool, h->aux == PP__R_NOTASK ? PP_ENOTASK : PP_EINIT, msg);
    pp__worker_kill(w);
    return;
  }
  uv_timer_stop(&w->timer);
  w->state = PP__W_READY;
  if (w->counted) {
    w->ready_counted = 1;
    pool->ready++;
  }
  pool->start_failures = 0;
  pp__worker_set_idle(w, 1);
  pp__pump(pool);
}

/* The depth a worker's pipeline may reach, from how long tasks have been taking. */
static unsigned pp__depth(const pp_pool *pool) {
  if (pool->depth != 0)
    return pool->depth;
  /* Nothing is known of the tasks' length until one has finished. */
  if (pool->timed == 0)
    return 1;
  if (pool->avg_ns < 100000)
    return 32;
  if (pool->avg_ns < 1000000)
    return 4;
  return 1;
}

static int pp__worker_can_take(const pp__worker *w) {
  const pp_pool *pool = w->pool;

  return w->state == PP__W_READY && !w->unwritable && w->ninflight < pp__depth(pool) &&
         (pool->max_tasks == 0 || w->assigned < pool->max_tasks);
}

/* The worker's running task has all its results: the next one starts running. */
static void pp__worker_pop(pp__worker *w, pp__task *t) {
  pp_pool *pool = w->pool;
  uint64_t now = uv_hrtime();

  pp__worker_detach(w, t);
  /* A batch's time is shared among its items, so that the depth suits what they cost. */
  pool->avg_ns = pool->timed++ ? (pool->avg_ns * 7 + (now - w->head_since) /
                                  (t->nitems ? t->nitems : 1)) / 8
                               : now - w->head_since;
  w->head_since = now;
  if (pool->timeout_ms != 0) {
    if (w->ninflight > 0)
      uv_timer_start(&w->timer, pp__on_timer, pool->timeout_ms, 0);
    else
      uv_timer_stop(&w->timer);
  }
  if (w->state == PP__W_READY && w->ninflight == 0 && !w->unwritable) {
    if (pool->max_tasks != 0 && w->assigned >= pool->max_tasks)
      pp__worker_retire(w);
    else
      pp__worker_set_idle(w, 1);
  }
}

/* A run of a batch's results, for the worker's running task. */
static void pp__on_batch_result(pp__worker *w, const pp__hdr *h, const uint8_t *p) {
  pp_pool *pool = w->pool;
  pp__task *t = pp__worker_head(w);
  const char *why;
  pp__batch b;

  if (t == NULL || t->id != h->id || t->nitems == 0) {
    pp__worker_proto(w, "a batch result for a task it was not given");
    return;
  }
  if (pp__batch_result_decode(p, h->len, &b, &why) != 0) {
    pp__worker_proto(w, why);
    return;
  }
  if (b.first != t->received || b.count > t->nitems - t->received) {
    pp__worker_proto(w, "a batch result out of order");
    return;
  }
  t->received += b.count;
  if (t->state != PP__T_DONE)
    t->on_items(t, &b, w->pid);
  if (t->received < t->nitems)
    return;
  pp__worker_pop(w, t);
  if (t->state == PP__T_DONE) {
    pool->dropped++;
    pp__task_free(t);
  } else {
    pp__task_finish(t, 0, NULL, 0, NULL);
  }
  pp__pump(pool);
}

/* A result for the worker's running task, the first in flight. data is malloc'd when
 * owned, else it points into the reader's buffer and is copied. */
static void pp__on_result(pp__worker *w, const pp__hdr *h, uint8_t *data, int owned) {
  pp_pool *pool = w->pool;
  pp__task *t = pp__worker_head(w);
  int status;
  void *copy = NULL;

  if (t == NULL || t->id != h->id) {
    if (owned)
      free(data);
    pp__worker_proto(w, "a result for a task it was not given");
    return;
  }
  switch (h->aux) {
    case PP__R_OK: status = 0; break;
    case PP__R_FAIL: status = PP_ETASK; break;
    case PP__R_NOTASK: status = PP_ENOTASK; break;
    case PP__R_TOOBIG: status = PP_E2BIG; break;
    default:
      if (owned)
        free(data);
      pp__worker_proto(w, "a result of an unknown kind");
      return;
  }
  if (status != 0 && h->len > PP__MAX_ERRMSG) {
    if (owned)
      free(data);
    pp__worker_proto(w, "an error message over the size limit");
    return;
  }
  if (t->nitems != 0) {
    if (owned)
      free(data);
    pp__worker_proto(w, "a single result for a batch");
    return;
  }
  pp__worker_pop(w, t);

  if (t->state == PP__T_DONE) {
    /* Decided already (canceled while it waited in the worker): the result is dropped. */
    pool->dropped++;
    pp__task_free(t);
  } else if (status == 0) {
    if (h->len > 0) {
      if (owned) {
        copy = data;
        owned = 0;
      } else if ((copy = malloc(h->len)) != NULL) {
        memcpy(copy, data, h->len);
      } else {
        status = PP_ENOMEM;
      }
    }
    if (status == 0) {
      pp__task_finish(t, 0, copy, h->len, NULL);
    } else {
      pp__task_fail(t, status, "task '%s' (id %llu): no memory for its result of %lu bytes",
                    t->name, (unsigned long long) t->id, (unsigned long) h->len);
    }
  } else if (status == PP_ETASK) {
    pp__task_fail(t, status, "task '%s' (id %llu) failed in worker pid %ld: %.*s", t->name,
                  (unsigned long long) t->id, w->pid, (int) h->len, (const char *) data);
  } else {
    pp__task_fail(t, status, "task '%s' (id %llu): %.*s", t->name,
                  (unsigned long long) t->id, (int) h->len, (const char *) data);
  }
  if (owned)
    free(data);
  pp__pump(pool);
}

/* Handles one whole frame. Returns 0 to go on reading, -1 when the worker was let go. */
static int pp__on_frame(void *ctx, const pp__hdr *h, uint8_t *p, int owned) {
  pp__worker *w = (pp__worker *) ctx;
  int err;

  if (w->state == PP__W_STARTING && !w->got_hello) {
    if (h->type != PP__F_HELLO) {
      if (owned)
        free(p);
      pp__worker_proto(w, "its first frame is not a hello (is it a procpool program?)");
      return -1;
    }
    err = pp__on_hello(w, p, h->len);
    if (owned)
      free(p);
    return err;
  }
  if (w->state == PP__W_STARTING && h->type == PP__F_READY) {
    pp__on_ready(w, h, p);
  } else if (w->state == PP__W_READY && h->type == PP__F_RESULT) {
    pp__on_result(w, h, p, owned);
    owned = 0;
  } else if (w->state == PP__W_READY && h->type == PP__F_BATCH_RESULT) {
    pp__on_batch_result(w, h, p);
  } else {
    if (owned)
      free(p);
    pp__worker_proto(w, "a frame out of order");
    return -1;
  }
  if (owned)
    free(p);
  return w->state == PP__W_GOING ? -1 : 0;
}

static void pp__on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  pp__worker *w = (pp__worker *) h->data;
  uint8_t *base;
  size_t len;

  (void) suggested;
  pp__rx_space(&w->rx, &base, &len);
  *buf = uv_buf_init((char *) base, (unsigned int) len);
}

static void pp__on_eof(pp__worker *w) {
  w->eof = 1;
  uv_read_stop((uv_stream_t *) &w->pipe);
  if (w->exited)
    pp__worker_finish(w);
  else if (w->state != PP__W_GOING)
    /* It closed its channel but lives on: give it a moment to exit, so the message can
     * say how it ended, then kill it. */
    uv_timer_start(&w->timer, pp__on_timer, PP__EXIT_GRACE_MS, 0);
}

static void pp__on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pp__worker *w = (pp__worker *) s->data;
  const char *why = NULL;
  int err;

  (void) buf;
  if (nread < 0) {
    pp__on_eof(w);
    return;
  }
  if (nread == 0 || w->state == PP__W_GOING)
    return;
  err = pp__rx_feed(&w->rx, (size_t) nread, pp__on_frame, w, &why);
  if (err == PP_EPROTO)
    pp__worker_proto(w, why);
  else if (err == PP_ENOMEM)
    pp__worker_proto(w, "no memory for a large result");
}

/* ---- Dispatch ------------------------------------------------------------------------ */

/* Arguments this large are written from the task itself rather than copied. */
#define PP__WCOPY_MAX (16 * 1024)

/* Grows array p, of *cap elements of size bytes, to hold at least need. Returns the
 * array (perhaps moved), or NULL when memory ran out (p is then still valid). */
static void *pp__grow(void *p, size_t *cap, size_t need, size_t size) {
  size_t n = *cap ? *cap : 16;
  void *q;

  if (need <= *cap)
    return p;
  while (n < need)
    n *= 2;
  q = realloc(p, n * size);
  if (q != NULL)
    *cap = n;
  return q;
}

static int pp__wbatch_reserve(pp__wbatch *b, size_t bytes) {
  uint8_t *by = pp__grow(b->bytes, &b->cap, b->len + bytes, 1);
  pp__task **ts;
  pp__wseg *sg;

  if (by == NULL)
    return PP_ENOMEM;
  b->bytes = by;
  ts = pp__grow(b->tasks, &b->captasks, b->ntasks + 1, sizeof(*ts));
  if (ts == NULL)
    return PP_ENOMEM;
  b->tasks = ts;
  sg = pp__grow(b->segs, &b->capsegs, b->nsegs + 2, sizeof(*sg));
  if (sg == NULL)
    return PP_ENOMEM;
  b->segs = sg;
  return 0;
}

/* Appends t's frame to the worker's batch. */
static int pp__wbatch_add(pp__wbatch *b, pp__task *t) {
  int copy = t->len <= PP__WCOPY_MAX;
  size_t n = PP__HDR_SIZE + (copy ? t->len : 0);
  int err = pp__wbatch_reserve(b, n);

  if (err != 0)
    return err;
  pp__hdr_encode(b->bytes + b->len, t->nitems ? PP__F_BATCH : PP__F_TASK,
                 (uint16_t) t->index, t->id, (uint32_t) t->len);
  if (copy && t->len > 0)
    memcpy(b->bytes + b->len + PP__HDR_SIZE, t->arg, t->len);
  /* Consecutive copied frames make one segment. */
  if (b->nsegs > 0 && b->segs[b->nsegs - 1].task == NULL &&
      b->segs[b->nsegs - 1].off + b->segs[b->nsegs - 1].len == b->len) {
    b->segs[b->nsegs - 1].len += n;
  } else {
    b->segs[b->nsegs].off = b->len;
    b->segs[b->nsegs].len = n;
    b->segs[b->nsegs].task = NULL;
    b->nsegs++;
  }
  b->len += n;
  if (!copy) {
    b->segs[b->nsegs].off = 0;
    b->segs[b->nsegs].len = t->len;
    b->segs[b->nsegs].task = t;
    b->nsegs++;
  }
  b->tasks[b->ntasks++] = t;
  t->writing++;
  return 0;
}

/* The batch's write ended: when it went through (sent_to not NULL), its tasks reached
 * that worker, so a task that was running there when it died had started. One whose
 * frame never reached its worker runs elsewhere instead. */
static void pp__wbatch_done(pp__wbatch *b, pp__worker *sent_to) {
  size_t i;

  for (i = 0; i < b->ntasks; i++) {
    pp__task *t = b->tasks[i];
    if (sent_to != NULL)
      t->sent_to = sent_to->token;
    t->writing--;
    pp__task_free(t);
  }
  b->len = 0;
  b->nsegs = 0;
  b->ntasks = 0;
}

static void pp__flush_worker(pp__worker *w);

/* A write to the worker failed. If its channel is broken, the worker is ending (a task
 * may have crashed it): it gets nothing more, and its end, with the real cause, decides
 * its running task. Otherwise the task it runs fails for this reason and it is killed. */
static void pp__worker_write_failed(pp__worker *w, int err) {
  pp__task *t;

  pp__worker_set_idle(w, 0);
  w->unwritable = 1;
  if (err == UV_EPIPE || err == UV_ECONNRESET || err == UV_ECANCELED)
    return;
  t = pp__worker_head(w);
  if (t != NULL) {
    pp__worker_detach(w, t);
    pp__task_fail(t, PP_EWORKER, "task '%s' (id %llu) failed: the pool could not write to "
                  "worker pid %ld: %s (%s); it was killed", t->name,
                  (unsigned long long) t->id, w->pid, uv_strerror(err), uv_err_name(err));
  }
  pp__worker_kill(w);
}

static void pp__on_written(uv_write_t *req, int status) {
  pp__wbatch *b = (pp__wbatch *) req->data;
  pp__worker *w = b->worker;

  pp__wbatch_done(b, status == 0 ? w : NULL);
  w->wb_busy = 0;
  if (w->state == PP__W_GOING)
    return;
  if (status < 0)
    pp__worker_write_failed(w, status);
  else
    pp__flush_worker(w);
}

/* Writes the batch being filled, unless one is being written already: the write
 * callback then sends this one. */
static void pp__flush_worker(pp__worker *w) {
  pp__wbatch *b = &w->wb[w->wb_fill];
  size_t i, first = 0;
  int err;

  if (w->wb_busy || b->nsegs == 0)
    return;
  if (w->unwritable) {
    pp__wbatch_done(b, NULL);
    return;
  }
  if (b->capbufs < b->nsegs) {
    uv_buf_t *bufs = realloc(b->bufs, b->nsegs * sizeof(*bufs));
    if (bufs == NULL) {
      pp__worker_proto(w, "no memory to write to it");
      return;
    }
    b->bufs = bufs;
    b->capbufs = b->nsegs;
  }
  for (i = 0; i < b->nsegs; i++) {
    const pp__wseg *g = &b->segs[i];
    b->bufs[i] = uv_buf_init(g->task ? (char *) g->task->arg : (char *) b->bytes + g->off,
                             (unsigned int) g->len);
  }
  /* Most batches fit in the socket's buffer: written at once, they need no request, no
   * extra loop turn and no change to what the loop watches. */
  err = uv_try_write((uv_stream_t *) &w->pipe, b->bufs, (unsigned int) b->nsegs);
  if (err >= 0 || err == UV_EAGAIN) {
    size_t done = err > 0 ? (size_t) err : 0;
    while (first < b->nsegs && done >= b->bufs[first].len)
      done -= b->bufs[first++].len;
    if (first == b->nsegs) {
      pp__wbatch_done(b, w);
      return;
    }
    b->bufs[first].base += done;
    b->bufs[first].len -= (unsigned int) done;
    err = 0;
  }
  b->req.data = b;
  b->worker = w;
  if (err == 0)
    err = uv_write(&b->req, (uv_stream_t *) &w->pipe, b->bufs + first,
                   (unsigned int) (b->nsegs - first), pp__on_written);
  if (err != 0) {
    pp__wbatch_done(b, NULL);
    pp__worker_write_failed(w, err);
    return;
  }
  w->wb_busy = 1;
  w->wb_fill ^= 1;
}

static void pp__on_flush(uv_prepare_t *h) {
  pp_pool *pool = (pp_pool *) h->data;

  while (!pp__q_empty(&pool->dirty)) {
    pp__worker *w = PP__CONTAINER_OF(pp__q_head(&pool->dirty), pp__worker, dirty_node);
    pp__q_remove(&w->dirty_node);
    if (w->state != PP__W_GOING)
      pp__flush_worker(w);
  }
  uv_prepare_stop(h);
  /* After the writes: a task must not wait for the start of a worker it does not need. */
  pp__maintain(pool);
}

/* Sends t to w. Returns 0, or an error that leaves t queued. */
static int pp__assign(pp__worker *w, pp__task *t) {
  pp_pool *pool = w->pool;
  int err = pp__wbatch_add(&w->wb[w->wb_fill], t);

  if (err != 0)
    return err;
  pp__q_remove(&t->node);
  pp__q_insert_tail(&w->inflight, &t->node);
  if (w->ninflight++ == 0) {
    w->head_since = uv_hrtime();
    if (pool->timeout_ms != 0)
      uv_timer_start(&w->timer, pp__on_timer, pool->timeout_ms, 0);
  }
  w->assigned++;
  t->state = PP__T_RUNNING;
  t->worker = w;
  pp__worker_set_idle(w, 0);
  if (pp__q_empty(&w->dirty_node)) {
    pp__q_insert_tail(&pool->dirty, &w->dirty_node);
    uv_prepare_start(&pool->flush, pp__on_flush);
  }
  return 0;
}

/* The queue's first task, with its name resolved; tasks no worker knows fail here. */
static pp__task *pp__next_task(pp_pool *pool) {
  while (!pp__q_empty(&pool->queue)) {
    pp__task *t = PP__CONTAINER_OF(pp__q_head(&pool->queue), pp__task, node);
    if (t->index != PP__NO_INDEX || pp__find_task(pool, t->name, &t->index) == 0)
      return t;
    pp__task_fail(t, PP_ENOTASK, "task '%s' (id %llu): the workers have no task of that "
                  "name", t->name, (unsigned long long) t->id);
  }
  return NULL;
}

/* Hands out queued tasks: first one to each idle worker, then, while tasks are short
 * enough to pipeline, round after round of one more to each worker that can take one,
 * so that work spreads evenly. */
static void pp__pump(pp_pool *pool) {
  pp__task *t;
  int progress = 1;

  while (!pp__q_empty(&pool->idle) && (t = pp__next_task(pool)) != NULL) {
    pp__worker *w = PP__CONTAINER_OF(pp__q_head(&pool->idle), pp__worker, idle_node);
    if (pp__assign(w, t) != 0)
      return;
  }
  /* While some workers are still starting, the ready ones get no more than one task each,
   * or the first to be ready would take everything. */
  if (pool->ready < pool->active)
    return;
  while (progress && !pp__q_empty(&pool->queue)) {
    pp__qnode *q;
    progress = 0;
    for (q = pp__q_head(&pool->workers); q != &pool->workers; q = q->next) {
      pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
      if (!pp__worker_can_take(w))
        continue;
      t = pp__next_task(pool);
      if (t == NULL || pp__assign(w, t) != 0)
        return;
      progress = 1;
    }
  }
}

/* ---- The public API ----------------------------------------------------------------- */

static void pp__pool_free(pp_pool *pool) {
  size_t i;

  if (pool->names_owned)
    for (i = 0; i < pool->ntasks; i++)
      free((char *) pool->names[i]);
  free((void *) pool->names);
  pp__tasktab_free(&pool->tasks);
  free(pool->broken_msg);
  free(pool->exe);
  free(pool->initializer);
  free(pool->initarg);
  free(pool);
}

/* pp_pool_new failed once the pool had handles: they close on the loop's next turn (at
 * once on a private loop), and the last one releases the pool, with no callback. */
static int pp__pool_new_undo(pp_pool *pool, int err) {
  pool->orphan = 1;
  pool->closing = 1;
  pp__maybe_shutdown(pool);
  if (pool->own)
    pp__pool_end(pool);
  return err;
}

int pp_pool_new(pp_pool **out, uv_loop_t *loop, const pp_pool_options *opts) {
  pp_pool_options defaults;
  pp_pool *pool;
  uv_fs_t req;
  int err;

  if (out == NULL)
    return PP_EINVAL;
  *out = NULL;
  if (pp__in_worker())
    return PP_EINVAL;
  if (opts == NULL) {
    pp_pool_options_init(&defaults);
    opts = &defaults;
  }
  pool = calloc(1, sizeof(*pool));
  if (pool == NULL)
    return PP_ENOMEM;
  pp__q_init(&pool->queue);
  pp__q_init(&pool->workers);
  pp__q_init(&pool->idle);
  pp__q_init(&pool->dirty);
  pp__tasktab_init(&pool->tasks);
  pool->next_id = 1;
  err = pp__resolve_options(pool, opts);
  if (err != 0)
    goto fail;
  /* A missing or non-executable worker program is the commonest set-up error: say so
   * here, with the OS's own code, rather than through every task. */
  err = uv_fs_access(NULL, &req, pool->exe, X_OK, NULL);
  uv_fs_req_cleanup(&req);
  if (err != 0) {
    fprintf(stderr, "procpool: cannot use '%s' as the worker program: %s\n", pool->exe,
            uv_strerror(err));
    goto fail;
  }
  if (loop == NULL) {
    err = uv_loop_init(&pool->own_loop);
    if (err != 0)
      goto fail;
    pool->own = 1;
    loop = &pool->own_loop;
  }
  pool->loop = loop;
  uv_idle_init(loop, &pool->final);
  pool->final.data = pool;
  uv_prepare_init(loop, &pool->flush);
  pool->flush.data = pool;
  pool->open_handles++;
  pp__os_parent_init();
  if (pool->ops->pool_init != NULL) {
    err = pool->ops->pool_init(pool);
    if (err != 0)
      return pp__pool_new_undo(pool, err);
  }

  /* One worker now, so that a set-up that cannot start any fails here; the others on the
   * loop's first turn, while the first one starts up. */
  while (pool->active == 0 && !pool->broken)
    pp__worker_start(pool);
  uv_prepare_start(&pool->flush, pp__on_flush);
  if (pool->broken && pool->active == 0) {
    /* Not one worker could be started: undo everything. The handles close on the loop's
     * next turn, which releases the pool's memory. */
    fprintf(stderr, "procpool: %s\n", pool->broken_msg ? pool->broken_msg : "no worker");
    return pp__pool_new_undo(pool, pool->first_err ? pool->first_err : pool->broken);
  }
  *out = pool;
  return 0;

fail:
  pp__pool_free(pool);
  return err;
}

pp_start_method pp_pool_start_method(const pp_pool *pool) {
  return pool ? pool->method : PP_START_DEFAULT;
}

unsigned pp_pool_workers(const pp_pool *pool) { return pool ? pool->nworkers : 0; }

const char *pp_pool_error(const pp_pool *pool) {
  return pool && pool->broken ? pool->broken_msg : NULL;
}

/* pp_submit, and for the blocking calls, whose caller's memory outlives the task, the
 * same without the copy of the argument (borrow). */
static int pp__submit(pp_pool *pool, const char *task, const void *arg, size_t len,
                      pp_result_cb cb, void *user, uint64_t *id, int borrow,
                      uint32_t nitems,
                      void (*on_items)(pp__task *t, const pp__batch *b, long pid)) {
  uint32_t index = PP__NO_INDEX;
  size_t nlen;
  pp__task *t;

  if (pool == NULL || task == NULL || (arg == NULL && len > 0) || pp__in_worker())
    return PP_EINVAL;
  if (pool->closing)
    return PP_ECLOSED;
  if (pool->broken && pool->active == 0)
    return pool->broken;
  if (len > pool->max_message)
    return PP_E2BIG;
  if (pool->names != NULL && pp__find_task(pool, task, &index) != 0)
    return PP_ENOTASK;
  nlen = strlen(task);
  if (nlen == 0 || nlen > PP__MAX_NAME)
    return PP_ENOTASK;
  t = malloc(offsetof(pp__task, name) + nlen + 1 + (borrow ? 0 : len));
  if (t == NULL)
    return PP_ENOMEM;
  if (!borrow)
    pp__os_advise_large(t, offsetof(pp__task, name) + nlen + 1 + len);
  t->pool = pool;
  t->id = pool->next_id;
  t->index = index;
  t->state = PP__T_QUEUED;
  t->writing = 0;
  t->sent_to = 0;
  t->requeued = 0;
  t->cb = cb;
  t->user = user;
  t->worker = NULL;
  t->nitems = nitems;
  t->received = 0;
  t->on_items = on_items;
  t->len = len;
  memcpy(t->name, task, nlen + 1);
  if (borrow) {
    t->arg = (const uint8_t *) arg;
  } else {
    t->arg = (uint8_t *) t->name + nlen + 1;
    if (len > 0)
      memcpy(t->name + nlen + 1, arg, len);
  }
  if (pp__tasktab_put(&pool->tasks, t->id, t) != 0) {
    free(t);
    return PP_ENOMEM;
  }
  /* A batch reserves an id for each of its items too. */
  pool->next_id += 1 + nitems;
  pool->pending++;
  pp__q_insert_tail(&pool->queue, &t->node);
  if (id != NULL)
    *id = t->id;
  pp__pump(pool);
  return 0;
}

int pp_submit(pp_pool *pool, const char *task, const void *arg, size_t len,
              pp_result_cb cb, void *user, uint64_t *id) {
  return pp__submit(pool, task, arg, len, cb, user, id, 0, 0, NULL);
}

int pp_cancel(pp_pool *pool, uint64_t id) {
  pp__task *t;

  if (pool == NULL)
    return PP_EINVAL;
  t = (pp__task *) pp__tasktab_get(&pool->tasks, id);
  if (t == NULL)
    return PP_ENOENT;
  if (t->state == PP__T_RUNNING && t->worker != NULL && pp__worker_head(t->worker) == t) {
    pp__worker *w = t->worker;
    pp__worker_detach(w, t);
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled while it ran; worker "
                  "pid %ld was killed", t->name, (unsigned long long) id, w->pid);
    pp__worker_kill(w);
  } else if (t->state == PP__T_RUNNING) {
    /* Sent ahead but not started: it stays listed so the worker's results still line
     * up, and its result, when it comes, is dropped. */
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled before it ran",
                  t->name, (unsigned long long) id);
  } else {
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled before it ran",
                  t->name, (unsigned long long) id);
  }
  pp__pump(pool);
  return 0;
}

/* Runs the pool's loop until *done is set, or with done NULL until nothing is pending.
 * Returns PP_ECLOSED if the loop runs dry first: that would be a hang, never a wait. */
static int pp__run_until(pp_pool *pool, const size_t *done, size_t target) {
  int err = 0;

  pool->blocking++;
  while (done ? *done < target : pool->pending > 0) {
    if (uv_run(pool->loop, UV_RUN_ONCE) == 0 && (done ? *done < target : pool->pending > 0)) {
      err = PP_ECLOSED;
      break;
    }
  }
  pool->blocking--;
  return err;
}

int pp_pool_wait(pp_pool *pool) {
  if (pool == NULL || pool->cb_depth > 0 || pool->finished)
    return PP_EINVAL;
  return pp__run_until(pool, NULL, 0);
}

typedef struct pp__sync {
  pp_result *out;
  size_t done;
} pp__sync;

static void pp__sync_cb(pp_pool *pool, pp_result *r, void *user) {
  pp__sync *s = (pp__sync *) user;

  (void) pool;
  *s->out = *r;
  r->data = NULL;
  r->message = NULL;
  s->done = 1;
}

static void pp__submit_error(pp_pool *pool, const char *task, int err, pp_result *out) {
  memset(out, 0, sizeof(*out));
  out->status = err;
  if (pool->broken && err == pool->broken && pool->broken_msg != NULL)
    out->message = pp__strdupf("task '%s' could not run: %s", task, pool->broken_msg);
  else
    out->message = pp__strdupf("task '%s' was not submitted: %s (%s)", task,
                               pp_strerror(err), pp_errname(err));
}

int pp_apply(pp_pool *pool, const char *task, const void *arg, size_t len, pp_result *out) {
  pp__sync s;
  int err;

  if (pool == NULL || out == NULL)
    return PP_EINVAL;
  if (pool->cb_depth > 0) {
    pp__submit_error(pool, task ? task : "(null)", PP_EINVAL, out);
    return PP_EINVAL;
  }
  memset(out, 0, sizeof(*out));
  s.out = out;
  s.done = 0;
  err = pp__submit(pool, task, arg, len, pp__sync_cb, &s, &out->id, 1, 0, NULL);
  if (err != 0) {
    pp__submit_error(pool, task ? task : "(null)", err, out);
    return err;
  }
  if (pp__run_until(pool, &s.done, 1) != 0)
    pp_cancel(pool, out->id);
  return out->status;
}

/* pp_map: items go out in batches (many per frame, each still run as its own task by the
 * worker) unless a per-task limit (timeout, max tasks per worker) needs them one by one.
 * An item whose batch ended without its result (the worker died in the batch, or sent
 * garbage) runs again on its own, so that its result, or its crash, is its own. */
typedef struct pp__map_batch pp__map_batch;

typedef struct pp__map {
  pp_pool *pool;
  const char *task;
  const pp_input *args;
  pp_result *out;
  size_t n;
  size_t done;             /* items whose out[] is filled */
  size_t tasks;            /* tasks in flight, single or batch */
  pp__map_batch *batches;  /* in flight */
  struct pp__map_item *items;
} pp__map;

typedef struct pp__map_item {
  pp__map *map;
  size_t index;
} pp__map_item;

struct pp__map_batch {
  pp__map_batch *next;
  pp__map *map;
  uint64_t id;
  size_t start;
  uint32_t count;
  uint32_t received;
  uint8_t *payload;
};

/* Arguments a batch holds at most, so that a map holds few of them at once. */
#define PP__MAP_BATCH_BYTES (256 * 1024)

static void pp__map_cb(pp_pool *pool, pp_result *r, void *user) {
  pp__map_item *item = (pp__map_item *) user;

  (void) pool;
  item->map->out[item->index] = *r;
  r->data = NULL;
  r->message = NULL;
  item->map->done++;
  item->map->tasks--;
}

static void pp__map_fail(pp__map *map, size_t i, uint64_t id, int status, const char *why) {
  pp_result *o = &map->out[i];

  memset(o, 0, sizeof(*o));
  o->id = id;
  o->status = status;
  o->message = pp__strdupf("task '%s' (map item %lu): %s", map->task, (unsigned long) i,
                           why);
  map->done++;
}

static void pp__map_single(pp__map *map, pp__map_item *items, size_t i) {
  int err;

  items[i].map = map;
  items[i].index = i;
  err = pp__submit(map->pool, map->task, map->args[i].data, map->args[i].len, pp__map_cb,
                   &items[i], &map->out[i].id, 1, 0, NULL);
  if (err != 0)
    pp__submit_error(map->pool, map->task, err, &map->out[i]);
  if (err != 0)
    map->done++;
  else
    map->tasks++;
}

static void pp__map_on_items(pp__task *t, const pp__batch *b, long pid) {
  pp__map_batch *mb = (pp__map_batch *) t->user;
  pp__map *map = mb->map;
  const uint8_t *data = b->data;
  uint32_t j;

  for (j = 0; j < b->count; j++) {
    size_t i = mb->start + b->first + j;
    uint32_t kind = pp__get_u32(b->table + (size_t) j * 8);
    uint32_t n = pp__get_u32(b->table + (size_t) j * 8 + 4);
    pp_result *o = &map->out[i];

    memset(o, 0, sizeof(*o));
    o->id = t->id + 1 + b->first + j;
    if (kind == PP__R_OK) {
      if (n > 0 && (o->data = malloc(n)) != NULL) {
        memcpy(o->data, data, n);
        o->len = n;
      } else if (n > 0) {
        o->status = PP_ENOMEM;
        o->message = pp__strdupf("task '%s' (map item %lu): no memory for its result",
                                 map->task, (unsigned long) i);
      }
    } else {
      o->status = kind == PP__R_FAIL ? PP_ETASK : kind == PP__R_NOTASK ? PP_ENOTASK : PP_E2BIG;
      if (kind == PP__R_FAIL)
        o->message = pp__strdupf("task '%s' (map item %lu) failed in worker pid %ld: %.*s",
                                 map->task, (unsigned long) i, pid, (int) n,
                                 (const char *) data);
      else
        o->message = pp__strdupf("task '%s' (map item %lu): %.*s", map->task,
                                 (unsigned long) i, (int) n, (const char *) data);
    }
    data += n;
    map->done++;
  }
  mb->received += b->count;
}

static void pp__map_batch_cb(pp_pool *pool, pp_result *r, void *user) {
  pp__map_batch *mb = (pp__map_batch *) user;
  pp__map *map = mb->map;
  pp__map_batch **p;
  size_t i;

  (void) pool;
  map->tasks--;
  for (p = &map->batches; *p != NULL; p = &(*p)->next)
    if (*p == mb) {
      *p = mb->next;
      break;
    }
  for (i = mb->start + mb->received; i < mb->start + mb->count; i++) {
    if (r->status == PP_EWORKER || r->status == PP_EPROTO)
      pp__map_single(map, map->items, i);
    else
      pp__map_fail(map, i, r->id + 1 + (i - mb->start), r->status,
                   r->message ? r->message : pp_strerror(r->status));
  }
  free(mb->payload);
  free(mb);
}

/* Sends items [i, i + count) as one batch; falls back to single tasks if it cannot. */
static void pp__map_batch_send(pp__map *map, pp__map_item *items, size_t i, uint32_t count) {
  pp__map_batch *mb = calloc(1, sizeof(*mb));
  size_t k, bytes = 4 + (size_t) count * 4, off;
  int err = PP_ENOMEM;

  for (k = 0; k < count; k++)
    bytes += map->args[i + k].len;
  if (mb != NULL && (mb->payload = malloc(bytes)) != NULL) {
    mb->map = map;
    mb->start = i;
    mb->count = count;
    pp__put_u32(mb->payload, count);
    off = 4 + (size_t) count * 4;
    for (k = 0; k < count; k++) {
      size_t len = map->args[i + k].len;
      pp__put_u32(mb->payload + 4 + k * 4, (uint32_t) len);
      if (len > 0)
        memcpy(mb->payload + off, map->args[i + k].data, len);
      off += len;
    }
    err = pp__submit(map->pool, map->task, mb->payload, bytes, pp__map_batch_cb, mb, &mb->id,
                     1, count, pp__map_on_items);
  }
  if (err == 0) {
    mb->next = map->batches;
    map->batches = mb;
    map->tasks++;
    return;
  }
  if (mb != NULL)
    free(mb->payload);
  free(mb);
  for (k = 0; k < count; k++)
    pp__map_single(map, items, i + k);
}

int pp_map(pp_pool *pool, const char *task, size_t n, const pp_input *args, pp_result *out) {
  pp__map map;
  pp__map_item *items;
  size_t window, chunk = 1, next = 0, i;
  size_t cap;
  int status = 0;

  if (pool == NULL || task == NULL || (n > 0 && (args == NULL || out == NULL)))
    return PP_EINVAL;
  if (pool->cb_depth > 0)
    return PP_EINVAL;
  if (n == 0)
    return 0;
  items = malloc(n * sizeof(*items));
  if (items == NULL)
    return PP_ENOMEM;
  memset(out, 0, n * sizeof(*out));
  memset(&map, 0, sizeof(map));
  map.pool = pool;
  map.task = task;
  map.args = args;
  map.out = out;
  map.n = n;
  map.items = items;
  /* Batches of about an eighth of each worker's share, so that work still spreads. */
  if (pool->timeout_ms == 0 && pool->max_tasks == 0) {
    chunk = n / ((size_t) pool->nworkers * 8);
    if (chunk > PP__BATCH_MAX)
      chunk = PP__BATCH_MAX;
  }
  cap = pool->max_message - 4 - (size_t) PP__BATCH_MAX * 4;
  if (pool->max_message < 4 + (size_t) PP__BATCH_MAX * 4 + 4096)
    chunk = 1;
  if (cap > PP__MAP_BATCH_BYTES)
    cap = PP__MAP_BATCH_BYTES;
  /* A bounded window keeps a huge map from holding every argument's copy at once. */
  window = (size_t) pool->nworkers * (chunk > 1 ? 4 : 64);
  pool->blocking++;
  while (map.done < n) {
    while (next < n && map.tasks < window) {
      size_t count = 0, bytes = 0;
      while (chunk > 1 && count < chunk && next + count < n &&
             bytes + args[next + count].len <= cap) {
        bytes += args[next + count].len;
        count++;
      }
      if (count >= 2) {
        pp__map_batch_send(&map, items, next, (uint32_t) count);
      } else {
        count = 1;
        pp__map_single(&map, items, next);
      }
      next += count;
    }
    if (map.done < n && pp__run_until(pool, &map.done, map.done + 1) != 0) {
      /* The loop ran dry (someone closed the pool's handles): end what is in flight. */
      for (i = 0; i < next; i++)
        if (out[i].id != 0)
          pp_cancel(pool, out[i].id);
      while (map.batches != NULL)
        pp_cancel(pool, map.batches->id);
      for (i = next; i < n; i++)
        pp__map_fail(&map, i, 0, PP_ECANCELED, "the pool's loop stopped");
      break;
    }
  }
  pool->blocking--;
  free(items);
  for (i = 0; i < n; i++)
    if (out[i].status != 0) {
      status = out[i].status;
      break;
    }
  return status;
}

/* Calls the close callbacks last, after the pool's memory is gone, so that a callback
 * may free whatever the pool's user pointers refer to. */
static void pp__pool_release(pp_pool *pool) {
  pp_close_cb ccb = pool->close_cb, tcb = pool->term_cb;
  void *cu = pool->close_user, *tu = pool->term_user;
  int orphan = pool->orphan;

  pp__pool_free(pool);
  if (orphan)
    return;
  if (ccb)
    ccb(cu);
  if (tcb)
    tcb(tu);
}

static void pp__pool_on_final_closed(uv_handle_t *h) {
  pp_pool *pool = (pp_pool *) h->data;

  pool->final_closed = 1;
  if (!pool->own)
    pp__pool_release(pool);
}

/* Once the pool is closing and nothing is pending, lets every worker end; once they are
 * gone, closes the last handle, whose callback releases the pool. The release is never
 * synchronous, so callers up the stack may go on using the pool. */
static void pp__maybe_shutdown(pp_pool *pool) {
  pp__qnode *q;

  if (!pool->closing || pool->pending > 0 || pool->finished)
    return;
  for (q = pp__q_head(&pool->workers); q != &pool->workers;) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    q = q->next;
    if (w->state == PP__W_READY)
      pp__worker_retire(w);
    else if (w->state == PP__W_STARTING)
      pp__worker_kill(w);
  }
  if (!pp__q_empty(&pool->workers))
    return;
  if (!pool->method_ended) {
    pool->method_ended = 1;
    uv_close((uv_handle_t *) &pool->flush, pp__pool_on_flush_closed);
    if (pool->ops != NULL && pool->ops->pool_end != NULL)
      pool->ops->pool_end(pool);
  }
  if (pool->open_handles > 0)
    return;
  pool->finished = 1;
  uv_close((uv_handle_t *) &pool->final, pp__pool_on_final_closed);
}

static void pp__pool_on_flush_closed(uv_handle_t *h) {
  pp__pool_handle_closed((pp_pool *) h->data);
}

void pp__pool_handle_closed(pp_pool *pool) {
  pool->open_handles--;
  pp__maybe_shutdown(pool);
}

/* On a private loop, runs it until the pool is released, then closes the loop. */
static int pp__pool_end(pp_pool *pool) {
  if (!pool->own) {
    pp__maybe_shutdown(pool);
    return 0;
  }
  pool->blocking++;
  pp__maybe_shutdown(pool);
  while (!pool->final_closed)
    uv_run(pool->loop, UV_RUN_ONCE);
  pool->blocking--;
  /* uv_loop_close fails while a closed handle's callback is still to run. */
  while (uv_loop_close(&pool->own_loop) == UV_EBUSY)
    uv_run(&pool->own_loop, UV_RUN_NOWAIT);
  pp__pool_release(pool);
  return 0;
}

int pp_pool_close(pp_pool *pool, pp_close_cb cb, void *user) {
  if (pool == NULL)
    return PP_EINVAL;
  if (pool->closing)
    return PP_ECLOSED;
  if (pool->own && (pool->cb_depth > 0 || pool->blocking > 0))
    return PP_EINVAL;
  pool->closing = 1;
  pool->close_cb = cb;
  pool->close_user = user;
  return pp__pool_end(pool);
}

int pp_pool_terminate(pp_pool *pool, pp_close_cb cb, void *user) {
  pp__qnode *q;
  int nested;

  if (pool == NULL)
    return PP_EINVAL;
  if (pool->terminating)
    return PP_ECLOSED;
  /* On a private loop the pool may only be ended from outside its loop, or, to hurry a
   * pp_pool_close that is running the loop, from one of its callbacks. */
  nested = pool->cb_depth > 0 || pool->blocking > 0;
  if (pool->own && nested && !pool->closing)
    return PP_EINVAL;
  pool->terminating = 1;
  pool->closing = 1;
  pool->term_cb = cb;
  pool->term_user = user;
  pool->pending++;  /* Hold off the shutdown until everything below is done. */
  while (!pp__q_empty(&pool->queue)) {
    pp__task *t = PP__CONTAINER_OF(pp__q_head(&pool->queue), pp__task, node);
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled: the pool was "
                  "terminated", t->name, (unsigned long long) t->id);
  }
  for (q = pp__q_head(&pool->workers); q != &pool->workers;) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    q = q->next;
    pp__task *t;
    while ((t = pp__worker_head(w)) != NULL) {
      pp__worker_detach(w, t);
      pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled in worker pid %ld: "
                    "the pool was terminated", t->name, (unsigned long long) t->id, w->pid);
    }
    if (w->state != PP__W_GOING || !w->exited)
      pp__worker_kill(w);
  }
  pool->pending--;
  if (pool->own && nested)
    return 0;
  return pp__pool_end(pool);
}
