/* The blocking calls: pp_pool_wait, pp_apply and pp_map (on stream.c's engine) run the pool's loop until what
 * they wait for is done. pp_apply and pp_map lend the caller's arguments to the pool
 * rather than copy them, so neither returns while a write still points at them. */
#include <stdlib.h>
#include <string.h>

#include "future.h"
#include "../shared/registry.h"
#include "stream.h"
#include "threads.h"

/* Runs the pool's loop until *done reaches target, or with done NULL until nothing is
 * pending. Returns PP_ECLOSED if the loop runs dry first: that would be a hang, never a
 * wait. */
int pp__run_until(pp_pool *pool, const size_t *done, size_t target) {
  int err = 0;

  pool->blocking++;
  while (done ? *done < target : pool->pending > 0) {
    if (uv_run(pool->loop, UV_RUN_ONCE) == 0 && (done ? *done < target : pool->pending > 0)) {
      /* The pool's handles were closed: no turn of the loop will end another thread's
       * pp_map_array either, and that thread cannot see the loop. */
      pp__marr_dry_all(pool);
      err = PP_ECLOSED;
      break;
    }
  }
  pool->blocking--;
  return err;
}

/* Runs the loop until no write points at the caller's arguments any more. A write under
 * way always ends (with its worker's end at the latest), so this is bounded. */
void pp__release_args(pp_pool *pool, const size_t *hold) {
  pool->blocking++;
  while (*hold > 0 && uv_run(pool->loop, UV_RUN_ONCE) != 0)
    ;
  pool->blocking--;
}

int pp_pool_wait(pp_pool *pool) {
  int mode, err;

  if (pool == NULL || pp__in_worker())
    return PP_EINVAL;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    err = pp__x_wait(pool);
    pp__x_drop(pool);
    return err;
  }
  if (pool->cb_depth > 0 || pool->finished) {
    pp__leave(pool);
    return PP_EINVAL;
  }
  /* What other threads submitted before this call counts too. Outside any callback of
   * the pool's, this is the top of its loop. */
  pp__x_drain(pool);
  err = pp__run_until(pool, NULL, 0);
  pp__leave(pool);
  return err;
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

void pp__submit_error(pp_pool *pool, const char *task, int err, pp_result *out) {
  const char *broken;

  memset(out, 0, sizeof(*out));
  out->status = err;
  /* Any thread: the pool's reason for giving up is set once, under x.mu. */
  uv_mutex_lock(&pool->x.mu);
  broken = pool->broken && err == pool->broken ? pool->broken_msg : NULL;
  if (broken != NULL)
    out->message = pp__strdupf("task '%s' could not run: %s", task, broken);
  uv_mutex_unlock(&pool->x.mu);
  if (broken == NULL)
    out->message = pp__strdupf("task '%s' was not submitted: %s (%s)", task,
                               pp_strerror(err), pp_errname(err));
}

static int pp__apply_here(pp_pool *pool, const char *task, const void *arg, size_t len,
                          pp_result *out) {
  pp__sync s;
  size_t hold = 0;
  int err;

  if (pool->cb_depth > 0) {
    pp__submit_error(pool, task ? task : "(null)", PP_EINVAL, out);
    return PP_EINVAL;
  }
  memset(out, 0, sizeof(*out));
  s.out = out;
  s.done = 0;
  err = pp__submit(pool, task, arg, len, pp__sync_cb, &s, &out->id, &hold, NULL, 0, NULL);
  if (err != 0) {
    pp__submit_error(pool, task ? task : "(null)", err, out);
    return err;
  }
  if (pp__run_until(pool, &s.done, 1) != 0)
    pp__cancel_core(pool, out->id);
  pp__release_args(pool, &hold);
  return out->status;
}

int pp_apply(pp_pool *pool, const char *task, const void *arg, size_t len, pp_result *out) {
  int mode, err;

  if (pool == NULL || out == NULL)
    return PP_EINVAL;
  if (pp__in_worker()) {
    pp__submit_error(pool, task ? task : "(null)", PP_EINVAL, out);
    return PP_EINVAL;
  }
  mode = pp__enter(pool, 0);
  if (mode < 0) {
    pp__submit_error(pool, task ? task : "(null)", mode, out);
    return mode;
  }
  if (mode == PP__AWAY) {
    /* From a callback of another loop it would wait for this pool's loop. */
    if (task == NULL || (arg == NULL && len > 0) || pp__x_in_cb()) {
      pp__submit_error(pool, task ? task : "(null)", PP_EINVAL, out);
      err = PP_EINVAL;
    } else {
      err = pp__x_apply(pool, task, arg, len, out);
    }
    pp__x_drop(pool);
    return err;
  }
  err = pp__apply_here(pool, task, arg, len, out);
  pp__leave(pool);
  return err;
}

/* pp_map is a stream over its array, delivered as items complete, each result straight
 * into out[]. Its inputs are lent: a single item's task points at args[i]. */
typedef struct pp__map {
  const pp_input *args;
  pp_result *out;
  size_t n, i;
} pp__map;

static int pp__map_next(void *user, pp_input *in) {
  pp__map *m = (pp__map *) user;

  if (m->i == m->n)
    return 0;
  *in = m->args[m->i++];
  return 1;
}

static void pp__map_each(void *user, size_t index, pp_result *r) {
  pp__map *m = (pp__map *) user;

  m->out[index] = *r;
  r->data = NULL;
  r->message = NULL;
}

static int pp__map_here(pp_pool *pool, const char *task, size_t n, const pp_input *args,
                        pp_result *out) {
  pp__map m;
  pp__stream s;
  size_t chunk = 1, i;
  int err;

  if (pool->cb_depth > 0)
    return PP_EINVAL;
  memset(out, 0, n * sizeof(*out));
  m.args = args;
  m.out = out;
  m.n = n;
  m.i = 0;
  /* Batches of about an eighth of each worker's share, so that work still spreads. */
  chunk = n / ((size_t) pool->nworkers * 8);
  if (chunk > PP__BATCH_MAX)
    chunk = PP__BATCH_MAX;
  memset(&s, 0, sizeof(s));
  s.pool = pool;
  s.task = task;
  s.next = pp__map_next;
  s.each = pp__map_each;
  s.user = &m;
  s.ordered = 0;
  s.lent = 1;
  s.chunk = chunk > 1 ? chunk : 1;
  err = pp__stream_run(&s);
  if (err != 0)
    return err;
  /* What was never taken: the pool stopped taking (closed, gave up), or its loop did. */
  for (i = s.taken; i < n; i++) {
    if (s.dry) {
      memset(&out[i], 0, sizeof(out[i]));
      out[i].status = PP_ECANCELED;
      out[i].message = pp__strdupf("task '%s' (map item %zu): the pool's loop stopped",
                                   task, i);
    } else {
      pp__submit_error(pool, task, s.stop_err, &out[i]);
    }
  }
  for (i = 0; i < n; i++)
    if (out[i].status != 0)
      return out[i].status;
  return 0;
}

int pp_map(pp_pool *pool, const char *task, size_t n, const pp_input *args, pp_result *out) {
  int mode, err;

  if (pool == NULL || task == NULL || (n > 0 && (args == NULL || out == NULL)))
    return PP_EINVAL;
  if (pp__in_worker())
    return PP_EINVAL;
  if (n == 0)
    return 0;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    err = pp__x_in_cb() ? PP_EINVAL : pp__x_map(pool, task, n, args, out);
    pp__x_drop(pool);
    return err;
  }
  err = pp__map_here(pool, task, n, args, out);
  pp__leave(pool);
  return err;
}
