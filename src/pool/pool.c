/* The pool: options, submitting and canceling tasks, every task's one outcome, and the
 * pool's end. A worker's life is in lifecycle.c, what is sent to workers in dispatch.c,
 * what they send back in results.c, the blocking calls in blocking.c. Everything runs on
 * the pool's loop; nothing here blocks except the functions documented as blocking. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bufcache.h"
#include "dispatch.h"
#include "lifecycle.h"
#include "../os.h"
#include "../shared/registry.h"
#include "threads.h"
#include "../methods.h"

#define PP__DEFAULT_MAX_MESSAGE ((size_t) 256 << 20)
#define PP__DEFAULT_START_TIMEOUT_MS 60000
/* Below about 1 MiB a message through the channel costs no more than through a segment
 * (bench/bench-data.c measures both). */
#define PP__DEFAULT_SHM_THRESHOLD ((size_t) 1 << 20)
#define PP__DEFAULT_SHM_MAX (sizeof(size_t) >= 8 ? (size_t) 1 << 30 : (size_t) 256 << 20)
#define PP__MAX_WORKERS 4096

/* ---- Small helpers ------------------------------------------------------------------ */

char *pp__vstrdupf(const char *fmt, va_list ap) {
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

char *pp__strdupf(const char *fmt, ...) {
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
/* Pools on several threads may warn at once: the once flags and the handler are read
 * and written under this lock. The handler itself is called outside it. */
static uv_once_t pp__warn_once_init = UV_ONCE_INIT;
static uv_mutex_t pp__warn_mu;

static void pp__warn_init(void) {
  if (uv_mutex_init(&pp__warn_mu) != 0)
    abort();
}

void pp_set_warning_handler(pp_warning_cb cb, void *user) {
  uv_once(&pp__warn_once_init, pp__warn_init);
  uv_mutex_lock(&pp__warn_mu);
  pp__warning_cb = cb;
  pp__warning_user = user;
  uv_mutex_unlock(&pp__warn_mu);
}

void pp__warn_once(int *once, const char *fmt, ...) {
  char msg[1024];
  pp_warning_cb cb;
  void *user;
  va_list ap;

  uv_once(&pp__warn_once_init, pp__warn_init);
  uv_mutex_lock(&pp__warn_mu);
  if (*once) {
    uv_mutex_unlock(&pp__warn_mu);
    return;
  }
  *once = 1;
  cb = pp__warning_cb;
  user = pp__warning_user;
  uv_mutex_unlock(&pp__warn_mu);
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (cb != NULL)
    cb(msg, user);
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

/* Resolves the method: PROCPOOL_START_METHOD first, then the option, then the default
 * (the OS's; spawn for a pool with a launcher, the only method that has one). The error
 * names the variable when the variable was the cause. */
static int pp__resolve_method(pp_start_method asked, pp_start_method dflt,
                              pp_start_method *out) {
  char env[64];
  size_t size = sizeof(env);
  pp_start_method m = asked;
  int from_env = 0;
  int err;

  if (asked < PP_START_DEFAULT || asked > PP_START_FORKSERVER)
    return PP_EINVAL;
  err = uv_os_getenv("PROCPOOL_START_METHOD", env, &size);
  if (err == UV_ENOBUFS) {
    /* Longer than any method's name: a mistake, never "unset". */
    fprintf(stderr, "procpool: PROCPOOL_START_METHOD holds %zu bytes, which is no start "
                    "method; use spawn, fork, forkserver or default\n",
            size);
    return PP_EINVAL;
  }
  if (err == 0 && env[0] != '\0') {
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
    m = dflt;
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

/* The worker program, as an absolute path: resolved once, here, so that a later chdir()
 * of the application does not change which program replacements run. */
static int pp__resolve_exe(pp_pool *pool, const char *asked) {
  char path[4096];
  size_t size = sizeof(path);
  int err;

  if (asked == NULL) {
    err = uv_exepath(path, &size);
    if (err != 0)
      return err;
    pool->exe = pp__strdup(path);
  } else {
    err = pp__os_full_path(asked, path, sizeof(path));
    if (err != 0) {
      fprintf(stderr, "procpool: cannot make worker_executable '%s' an absolute path: %s "
                      "(%s)\n", asked, uv_strerror(err), uv_err_name(err));
      return err;
    }
    pool->exe = pp__strdup(path);
  }
  return pool->exe == NULL ? PP_ENOMEM : 0;
}

/* The launcher's arguments in one allocation: the pointers, then the strings. Only
 * spawn runs a program of the user's choosing; fork and forkserver workers have no
 * command line to put a launcher in front of. The worker program must be named where
 * the launcher runs it, so a path relative to this process's folder means nothing. */
static int pp__copy_launcher(pp_pool *pool, const pp_pool_options *o) {
  const char *const *l = o->worker_launcher;
  size_t n, size, used, i;
  char *strings;

  if (pool->method != PP_START_SPAWN) {
    fprintf(stderr, "procpool: worker_launcher needs the spawn start method, not '%s'%s\n",
            pp_start_method_name(pool->method),
            getenv("PROCPOOL_START_METHOD") != NULL ? " (PROCPOOL_START_METHOD is set)" : "");
    return PP_EINVAL;
  }
  if (l[0] == NULL || l[0][0] == '\0') {
    fprintf(stderr, "procpool: worker_launcher is empty: it needs at least a program\n");
    return PP_EINVAL;
  }
  if (o->worker_executable != NULL && !pp__os_path_is_absolute(o->worker_executable)) {
    fprintf(stderr, "procpool: with worker_launcher, worker_executable must be an absolute "
                    "path (the path the launcher runs it by), not '%s'\n",
            o->worker_executable);
    return PP_EINVAL;
  }
  size = 0;
  for (n = 0; l[n] != NULL; n++)
    size += strlen(l[n]) + 1;
  pool->launcher = malloc((n + 1) * sizeof(char *) + size);
  if (pool->launcher == NULL)
    return PP_ENOMEM;
  strings = (char *) (pool->launcher + n + 1);
  for (i = 0, used = 0; i < n; i++) {
    size_t len = strlen(l[i]) + 1;
    memcpy(strings + used, l[i], len);
    pool->launcher[i] = strings + used;
    used += len;
  }
  pool->launcher[n] = NULL;
  return 0;
}

static int pp__resolve_options(pp_pool *pool, const pp_pool_options *o) {
  const pp_task *table;
  size_t n, i;
  int err;

  err = pp__resolve_method(o->start_method,
                           o->worker_launcher != NULL ? PP_START_SPAWN
                                                      : pp__os_default_method(),
                           &pool->method);
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
  pool->max_memory = o->max_worker_memory;
  /* The transport needs the worker's memory to be this machine's, which a launcher's
   * worker may not share. */
  pool->shm_threshold = o->shm_threshold ? o->shm_threshold : PP__DEFAULT_SHM_THRESHOLD;
  if (o->shm_threshold == PP_SHM_OFF || o->worker_launcher != NULL)
    pool->shm_threshold = 0;
  pool->shm_max = o->shm_max_bytes ? o->shm_max_bytes : PP__DEFAULT_SHM_MAX;
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
  } else if (o->worker_executable[0] == '\0') {
    return PP_EINVAL;
  }
  if (table != NULL) {
    pool->names = malloc((n + 1) * sizeof(*pool->names));
    if (pool->names == NULL)
      return PP_ENOMEM;
    for (i = 0; i < n; i++)
      pool->names[i] = table[i].name;
    pool->ntasks = n;
    /* pp_main checked the table: its names are unique. */
    if (pp__names_init(&pool->index, pool->names, n, NULL, NULL) != 0)
      return PP_ENOMEM;
    pool->names_fixed = 1;
  }
  if (o->initializer != NULL) {
    size_t len = strlen(o->initializer);
    uint32_t index;
    if (len == 0 || len > PP__MAX_NAME)
      return PP_EINVAL;
    if (pool->names != NULL && pp__find_task(pool, o->initializer, &index) != 0)
      return PP_ENOTASK;
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
  if (o->worker_launcher != NULL) {
    err = pp__copy_launcher(pool, o);
    if (err != 0)
      return err;
  }
  if (pool->method == PP_START_FORK) {
    /* Fork runs no program: its workers are copies of this process, whose own file may
     * have been replaced or deleted since it started (an upgrade). The name only serves
     * messages. */
    if (pp__resolve_exe(pool, NULL) != 0)
      pool->exe = pp__strdup("(this program)");
    return pool->exe == NULL ? PP_ENOMEM : 0;
  }
  return pp__resolve_exe(pool, o->worker_executable);
}

/* ---- Tasks -------------------------------------------------------------------------- */

int pp__find_task(const pp_pool *pool, const char *name, uint32_t *index) {
  if (pool->names == NULL)
    return PP_ENOTASK;
  return pp__names_find(&pool->index, name, strlen(name), index);
}

void pp__task_free(pp__task *t) {
  if (t != NULL && t->state == PP__T_DONE && t->writing == 0 && t->worker == NULL &&
      !t->in_cb) {
    free(t->owned);
    free(t);
  }
}

void pp__task_finish(pp__task *t, int status, void *data, size_t len, char *msg) {
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
  /* Counted before the callback, which may read the counters. */
  if (t->nitems == 0) {
    pool->st_done++;
    if (status != 0)
      pool->st_failed++;
  }

  if (status != 0 && msg == NULL)
    msg = pp__strdupf("task '%s' (id %llu): %s", t->name, (unsigned long long) t->id,
                      pp_strerror(status));
  r.id = t->id;
  r.status = status;
  r.data = data;
  r.len = len;
  r.message = msg;
  if (t->cb != NULL) {
    /* The callback may end the worker that lists t, which releases it: not yet. */
    t->in_cb = 1;
    pool->cb_depth++;
    pp__x_cb_depth(1);
    t->cb(pool, &r, t->user);
    pp__x_cb_depth(-1);
    pool->cb_depth--;
    t->in_cb = 0;
  }
  pp_result_free(&r);
  pp__task_free(t);
  if (pool->pending == 0)
    pp__x_pending_zero(pool);
  pp__maybe_shutdown(pool);
}

void pp__task_fail(pp__task *t, int status, const char *fmt, ...) {
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
  pp__bufcache_put(result->data);
  free(result->message);
  memset(result, 0, sizeof(*result));
}

/* ---- Making a pool ------------------------------------------------------------------ */

void pp__pool_free(pp_pool *pool) {
  size_t i;

  pp__x_destroy(pool);
  pp__bufcache_pools(-1);
  if (pool->names_owned)
    for (i = 0; i < pool->ntasks; i++)
      free((char *) pool->names[i]);
  free((void *) pool->names);
  pp__names_free(&pool->index);
  pp__tasktab_free(&pool->tasks);
  free(pool->broken_msg);
  free(pool->exe);
  free(pool->launcher);
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
  err = pp__x_init(pool);
  if (err != 0) {
    free(pool);
    return err;
  }
  pp__bufcache_pools(1);
  pp__q_init(&pool->queue);
  pp__q_init(&pool->workers);
  pp__q_init(&pool->idle);
  pp__q_init(&pool->dirty);
  pp__q_init(&pool->xarrays);
  pp__tasktab_init(&pool->tasks);
  pool->next_id = 1;
  pool->x_next_id = (uint64_t) 1 << 63;
  err = pp__resolve_options(pool, opts);
  if (err != 0)
    goto fail;
  /* A missing or non-executable worker program is the commonest set-up error: say so
   * here, with the OS's own code, rather than through every task. Fork runs none; a
   * launcher runs it elsewhere, where it alone can look. */
  if (pool->method != PP_START_FORK && pool->launcher == NULL) {
    err = uv_fs_access(NULL, &req, pool->exe, X_OK, NULL);
    uv_fs_req_cleanup(&req);
    if (err != 0) {
      fprintf(stderr, "procpool: cannot use '%s' as the worker program: %s\n", pool->exe,
              uv_strerror(err));
      goto fail;
    }
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
  err = pp__x_start(pool);
  if (err != 0)
    return pp__pool_new_undo(pool, err);
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
  pp__x_drop(pool);
  return err;
}

pp_start_method pp_pool_start_method(const pp_pool *pool) {
  pp_start_method m;

  if (pool == NULL)
    return PP_START_DEFAULT;
  pp__x_hold((pp_pool *) pool);
  m = pool->method;
  pp__x_drop((pp_pool *) pool);
  return m;
}

unsigned pp_pool_workers(const pp_pool *pool) {
  unsigned n;

  if (pool == NULL)
    return 0;
  pp__x_hold((pp_pool *) pool);
  n = pool->nworkers;
  pp__x_drop((pp_pool *) pool);
  return n;
}

const char *pp_pool_error(const pp_pool *pool) {
  const char *msg;

  /* In a worker, a copy of a parent's pool under fork, whose lock another thread of the
   * parent may have held at the fork. */
  if (pool == NULL || pp__in_worker())
    return NULL;
  /* Set once, under x.mu, by the loop's thread; never changed after, and freed with the
   * pool's memory. */
  pp__x_hold((pp_pool *) pool);
  uv_mutex_lock((uv_mutex_t *) &pool->x.mu);
  msg = pool->broken ? pool->broken_msg : NULL;
  uv_mutex_unlock((uv_mutex_t *) &pool->x.mu);
  pp__x_drop((pp_pool *) pool);
  return msg;
}

/* ---- Submitting and canceling ------------------------------------------------------- */

int pp__task_check(pp_pool *pool, const char *task, size_t len, uint32_t *index) {
  size_t nlen;

  *index = PP__NO_INDEX;
  if (len > pool->max_message)
    return PP_E2BIG;
  if (pool->names_fixed && pp__find_task(pool, task, index) != 0)
    return PP_ENOTASK;
  nlen = strlen(task);
  if (nlen == 0 || nlen > PP__MAX_NAME)
    return PP_ENOTASK;
  return 0;
}

pp__task *pp__task_new(pp_pool *pool, const char *task, uint32_t index, const void *arg,
                       size_t len, pp_result_cb cb, void *user, int borrow, size_t *hold,
                       uint32_t nitems, void (*on_items)(pp__task *t, const pp__batch *b,
                                                         long pid)) {
  int copy = !borrow;
  size_t nlen = strlen(task);
  pp__task *t;

  t = (pp__task *) malloc(offsetof(pp__task, name) + nlen + 1 + (copy ? len : 0));
  if (t == NULL)
    return NULL;
  if (copy)
    pp__os_advise_large(t, offsetof(pp__task, name) + nlen + 1 + len);
  t->pool = pool;
  t->id = 0;
  t->index = index;
  t->state = PP__T_QUEUED;
  t->writing = 0;
  t->in_cb = 0;
  t->sent_to = 0;
  t->requeued = 0;
  t->cb = cb;
  t->user = user;
  t->worker = NULL;
  t->nitems = nitems;
  t->received = 0;
  t->on_items = on_items;
  t->hold = hold;
  t->owned = NULL;
  t->len = len;
  memcpy(t->name, task, nlen + 1);
  if (copy) {
    t->arg = (uint8_t *) t->name + nlen + 1;
    if (len > 0)
      memcpy(t->name + nlen + 1, arg, len);
  } else {
    t->arg = (const uint8_t *) arg;
  }
  return t;
}

void pp__task_accept(pp_pool *pool, pp__task *t, int reserved) {
  /* A reserved task was counted by the close it came before (pp__mark_closed). */
  if (!reserved) {
    pool->pending++;
    pool->st_submitted++;
  }
  pp__q_insert_tail(&pool->queue, &t->node);
  if (pp__tasktab_put(&pool->tasks, t->id, t) != 0) {
    pp__task_fail(t, PP_ENOMEM, "task '%s' (id %llu) was not run: out of memory", t->name,
                  (unsigned long long) t->id);
  } else if (t->index == PP__NO_INDEX && pool->names != NULL &&
             pp__find_task(pool, t->name, &t->index) != 0) {
    pp__task_fail(t, PP_ENOTASK, "task '%s' (id %llu): no task of that name in the task "
                  "table", t->name, (unsigned long long) t->id);
  } else if (pool->terminating) {
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled: the pool was "
                  "terminated", t->name, (unsigned long long) t->id);
  } else if (pool->closing && !reserved) {
    pp__task_fail(t, PP_ECLOSED, "task '%s' (id %llu) was not run: the pool was closed",
                  t->name, (unsigned long long) t->id);
  } else if (pool->broken && pool->active == 0) {
    pp__task_fail(t, pool->broken, "task '%s' (id %llu) could not run: %s", t->name,
                  (unsigned long long) t->id,
                  pool->broken_msg ? pool->broken_msg : pp_strerror(pool->broken));
  } else {
    pp__pump(pool);
  }
}

/* again: the task is work the pool accepted before (a batch's items that never started,
 * sent once more one by one), which a close lets finish; a terminate cancels it. */
static int pp__submit_in(pp_pool *pool, const char *task, const void *arg, size_t len,
                         pp_result_cb cb, void *user, uint64_t *id, size_t *hold,
                         void *owned, uint32_t nitems,
                         void (*on_items)(pp__task *t, const pp__batch *b, long pid),
                         int again) {
  uint32_t index = PP__NO_INDEX;
  size_t nlen;
  pp__task *t;
  int closed;

  if (pool == NULL || task == NULL || (arg == NULL && len > 0) || pp__in_worker())
    return PP_EINVAL;
  if (again && pool->terminating)
    return PP_ECANCELED;
  if (pool->closing && !again)
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
  t = pp__task_new(pool, task, index, arg, len, cb, user, hold != NULL || owned != NULL,
                   hold, nitems, on_items);
  if (t == NULL)
    return PP_ENOMEM;
  /* A close from another thread refuses new tasks as soon as it is called. On a private
   * loop pp__enter has just read x.closed under x.mu; on a caller's it is read here. */
  if (pool->own) {
    closed = pool->x.seen_closed;
  } else {
    uv_mutex_lock(&pool->x.mu);
    closed = pool->x.closed;
    uv_mutex_unlock(&pool->x.mu);
  }
  if (closed && !again) {
    free(t);
    return PP_ECLOSED;
  }
  t->id = pool->next_id;
  /* A batch reserves an id for each of its items too. */
  pool->next_id += 1 + nitems;
  if (pp__tasktab_put(&pool->tasks, t->id, t) != 0) {
    free(t);
    return PP_ENOMEM;
  }
  /* Only once accepted does the task own what it was handed. */
  t->owned = owned;
  pool->pending++;
  pool->st_submitted += nitems ? nitems : 1;
  pp__q_insert_tail(&pool->queue, &t->node);
  if (id != NULL)
    *id = t->id;
  pp__pump(pool);
  return 0;
}

int pp__submit(pp_pool *pool, const char *task, const void *arg, size_t len,
               pp_result_cb cb, void *user, uint64_t *id, size_t *hold, void *owned,
               uint32_t nitems, void (*on_items)(pp__task *t, const pp__batch *b, long pid)) {
  return pp__submit_in(pool, task, arg, len, cb, user, id, hold, owned, nitems, on_items, 0);
}

int pp__submit_again(pp_pool *pool, const char *task, const void *arg, size_t len,
                     pp_result_cb cb, void *user, uint64_t *id, size_t *hold, void *owned) {
  return pp__submit_in(pool, task, arg, len, cb, user, id, hold, owned, 0, NULL, 1);
}

int pp_submit(pp_pool *pool, const char *task, const void *arg, size_t len,
              pp_result_cb cb, void *user, uint64_t *id) {
  int mode, err;

  if (pool == NULL || task == NULL || (arg == NULL && len > 0) || pp__in_worker())
    return PP_EINVAL;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    /* The reference is held while the argument is copied. */
    err = pp__x_submit(pool, task, arg, len, cb, user, id);
    pp__x_drop(pool);
    return err;
  }
  err = pp__submit(pool, task, arg, len, cb, user, id, NULL, NULL, 0, NULL);
  pp__leave(pool);
  return err;
}

int pp__cancel_core(pp_pool *pool, uint64_t id) {
  pp__task *t;

  t = (pp__task *) pp__tasktab_get(&pool->tasks, id);
  if (t == NULL) {
    /* It may have come from another thread and still wait in the inbox. It is taken out
     * of it and ends canceled; the inbox itself runs only at the top of the loop, never
     * here, where a callback may be up the stack. */
    int reserved;
    t = pp__x_take_submit(pool, id, &reserved);
    if (t == NULL)
      return PP_ENOENT;
    if (!reserved) {
      pool->pending++;
      pool->st_submitted++;
    }
    pp__q_insert_tail(&pool->queue, &t->node);
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled before it ran",
                  t->name, (unsigned long long) id);
    return 0;
  }
  if (t->state == PP__T_RUNNING && pp__worker_head(t->worker) == t) {
    pp__worker *w = t->worker;
    pp__worker_abort_head(w, PP_ECANCELED,
                          pp__strdupf("task '%s' (id %llu) was canceled while it ran; "
                                      "worker pid %ld was killed", t->name,
                                      (unsigned long long) id, w->pid));
  } else {
    /* Queued, or sent ahead but not started: one sent ahead stays listed so that the
     * worker's results still line up, and its result, when it comes, is dropped. */
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled before it ran",
                  t->name, (unsigned long long) id);
  }
  pp__pump(pool);
  return 0;
}

int pp_cancel(pp_pool *pool, uint64_t id) {
  int mode, err;

  if (pool == NULL || pp__in_worker())
    return PP_EINVAL;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    err = pp__x_cancel(pool, id);
    pp__x_drop(pool);
    return err;
  }
  err = pp__cancel_core(pool, id);
  pp__leave(pool);
  return err;
}

/* ---- Ending a pool ------------------------------------------------------------------ */

/* Calls the close callbacks last, after the pool's memory is gone, so that a callback
 * may free whatever the pool's user pointers refer to. */
static void pp__pool_release(pp_pool *pool) {
  pp_close_cb ccb = pool->close_cb, tcb = pool->term_cb;
  void *cu = pool->close_user, *tu = pool->term_user;
  int orphan = pool->orphan;

  /* The core's reference: a call from another thread that began before the end may
   * still hold the memory, and finds the pool gone. */
  pp__x_drop(pool);
  if (orphan)
    return;
  pp__x_cb_depth(1);
  if (ccb)
    ccb(cu);
  if (tcb)
    tcb(tu);
  pp__x_cb_depth(-1);
}

static void pp__pool_on_final_closed(uv_handle_t *h) {
  pp_pool *pool = (pp_pool *) h->data;

  pool->final_closed = 1;
  if (!pool->own)
    pp__pool_release(pool);
}

static void pp__pool_on_flush_closed(uv_handle_t *h) {
  pp__pool_handle_closed((pp_pool *) h->data);
}

/* Once the pool is closing and nothing is pending, lets every worker end; once they are
 * gone, closes the last handle, whose callback releases the pool. The release is never
 * synchronous, so callers up the stack may go on using the pool. */
void pp__maybe_shutdown(pp_pool *pool) {
  pp__qnode *q;

  if (!pool->closing || pool->pending > 0 || pool->finished)
    return;
  for (q = pp__q_head(&pool->workers); q != &pool->workers;) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    q = q->next;
    if (w->state == PP__W_READY)
      pp__worker_retire(w);
    else if (w->state == PP__W_STARTING)
      pp__worker_kill(w, 0, NULL);
  }
  if (!pp__q_empty(&pool->workers) || pool->finished)
    return;
  if (!pool->method_ended) {
    pool->method_ended = 1;
    pp__x_end(pool);
    uv_close((uv_handle_t *) &pool->flush, pp__pool_on_flush_closed);
    if (pool->ops != NULL && pool->ops->pool_end != NULL)
      pool->ops->pool_end(pool);
  }
  if (pool->open_handles > 0 || pool->finished)
    return;
  pool->finished = 1;
  uv_close((uv_handle_t *) &pool->final, pp__pool_on_final_closed);
}

void pp__pool_handle_closed(pp_pool *pool) {
  pool->open_handles--;
  pp__maybe_shutdown(pool);
}

void pp__pool_run_to_end(pp_pool *pool) {
  pool->blocking++;
  pp__maybe_shutdown(pool);
  while (!pool->final_closed) {
    /* A pool that still has work always has a handle or a request at work (a worker's
     * channel or timer, a write, the wake handle): a loop with nothing left to run would
     * be a bug here, and must not become a busy wait. */
    int alive = uv_run(pool->loop, UV_RUN_ONCE);
    assert(alive || pool->final_closed);
    if (!alive && !pool->final_closed) {
      pp__maintain(pool);
      pp__maybe_shutdown(pool);
    }
  }
  pool->blocking--;
}

void pp__pool_finish_own(pp_pool *pool) {
  /* uv_loop_close fails while a closed handle's callback is still to run. */
  while (uv_loop_close(&pool->own_loop) == UV_EBUSY)
    uv_run(&pool->own_loop, UV_RUN_NOWAIT);
  pp__pool_release(pool);
}

int pp__pool_end(pp_pool *pool) {
  if (!pool->own) {
    pp__maybe_shutdown(pool);
    return 0;
  }
  pp__pool_run_to_end(pool);
  pp__pool_finish_own(pool);
  return 0;
}

void pp__close_core(pp_pool *pool, pp_close_cb cb, void *user) {
  pool->close_cb = cb;
  pool->close_user = user;
  if (!pool->closing) {
    pool->closing = 1;
    /* Workers that died or were retired meanwhile are replaced for what is still
     * queued. */
    pp__maintain(pool);
  }
  pp__maybe_shutdown(pool);
}

/* Marks the pool closed for other threads, unless it is already; what they submitted
 * before and still waits in the inbox counts as pending from here (it runs at the top of
 * the loop, not from within this call, which may be a callback's). 0, PP_ECLOSED, or
 * PP__AWAY when a runner waits to take over the private loop, so the end must go through
 * it. */
static int pp__mark_closed(pp_pool *pool, int terminate) {
  pp__xstate *x = &pool->x;
  uv_thread_t self = uv_thread_self();
  int n;

  uv_mutex_lock(&x->mu);
  if (terminate ? x->terminated : x->closed) {
    uv_mutex_unlock(&x->mu);
    return PP_ECLOSED;
  }
  if (pool->own && x->threaded &&
      !(x->runner_known && uv_thread_equal(&self, &x->runner_self))) {
    uv_mutex_unlock(&x->mu);
    return PP__AWAY;
  }
  x->closed = 1;
  if (terminate)
    x->terminated = 1;
  uv_mutex_unlock(&x->mu);
  /* No submit comes in after x.closed: the ones before are all in the inbox now. */
  n = pp__x_reserve(pool);
  pool->pending += (size_t) n;
  pool->st_submitted += (uint64_t) n;
  return 0;
}

int pp_pool_close(pp_pool *pool, pp_close_cb cb, void *user) {
  int mode, err;

  if (pool == NULL || pp__in_worker())
    return PP_EINVAL;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    err = pp__x_close(pool, 0, cb, user);
    pp__x_drop(pool);
    return err;
  }
  if (pool->closing) {
    pp__leave(pool);
    return PP_ECLOSED;
  }
  if ((pool->own && (pool->cb_depth > 0 || pool->blocking > 0)) || pool->in_stream_cb > 0) {
    pp__leave(pool);
    return PP_EINVAL;
  }
  err = pp__mark_closed(pool, 0);
  if (err != 0) {
    if (err != PP__AWAY) {
      pp__leave(pool);
      return err;
    }
    /* The core is the runner's: this thread lets it go, and keeps its reference. */
    pp__leave_core(pool);
    err = pp__x_close(pool, 0, cb, user);
    pp__x_drop(pool);
    return err;
  }
  pp__close_core(pool, cb, user);
  if (!pool->own) {
    pp__leave(pool);
    return 0;
  }
  pp__pool_run_to_end(pool);
  pp__leave(pool);
  pp__pool_finish_own(pool);
  return 0;
}

int pp__terminate_core(pp_pool *pool, pp_close_cb cb, void *user) {
  pp__qnode *q;

  pool->terminating = 1;
  pool->closing = 1;
  pool->term_cb = cb;
  pool->term_user = user;
  pool->pending++;  /* Hold off the shutdown until everything below is done. */
  /* The callbacks below may cancel a running task, whose worker then gives back the
   * tasks behind it: round again until none is left. */
again:
  while (!pp__q_empty(&pool->queue)) {
    pp__task *t = PP__CONTAINER_OF(pp__q_head(&pool->queue), pp__task, node);
    pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled: the pool was "
                  "terminated", t->name, (unsigned long long) t->id);
  }
  for (q = pp__q_head(&pool->workers); q != &pool->workers;) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    pp__qnode *k;
    q = q->next;
    /* Every task it holds is decided here; the kill then only releases them. */
    for (k = pp__q_head(&w->inflight); k != &w->inflight;) {
      pp__task *t = PP__CONTAINER_OF(k, pp__task, node);
      k = k->next;
      pp__task_fail(t, PP_ECANCELED, "task '%s' (id %llu) was canceled in worker pid %ld: "
                    "the pool was terminated", t->name, (unsigned long long) t->id, w->pid);
    }
    pp__worker_kill(w, 0, NULL);
  }
  if (!pp__q_empty(&pool->queue))
    goto again;
  pool->pending--;
  if (pool->pending == 0)
    pp__x_pending_zero(pool);
  pp__maybe_shutdown(pool);
  return 0;
}

int pp_pool_terminate(pp_pool *pool, pp_close_cb cb, void *user) {
  int mode, nested, err;

  if (pool == NULL || pp__in_worker())
    return PP_EINVAL;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    err = pp__x_close(pool, 1, cb, user);
    pp__x_drop(pool);
    return err;
  }
  if (pool->terminating) {
    pp__leave(pool);
    return PP_ECLOSED;
  }
  /* On a private loop the pool may only be ended from outside its loop, or, to hurry a
   * pp_pool_close that is running the loop, from one of its callbacks. */
  nested = pool->cb_depth > 0 || pool->blocking > 0;
  if ((pool->own && nested && !pool->closing) || pool->in_stream_cb > 0) {
    pp__leave(pool);
    return PP_EINVAL;
  }
  err = pp__mark_closed(pool, 1);
  if (err != 0) {
    if (err != PP__AWAY) {
      pp__leave(pool);
      return err;
    }
    /* The core is the runner's: this thread lets it go, and keeps its reference. */
    pp__leave_core(pool);
    err = pp__x_close(pool, 1, cb, user);
    pp__x_drop(pool);
    return err;
  }
  pp__terminate_core(pool, cb, user);
  if (!pool->own || nested) {
    pp__leave(pool);
    return 0;
  }
  pp__pool_run_to_end(pool);
  pp__leave(pool);
  pp__pool_finish_own(pool);
  return 0;
}
