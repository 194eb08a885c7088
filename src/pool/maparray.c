/* pp_map_array: pp_map for items of fixed sizes, on the stream engine's array runs
 * (stream.c). The items are taken from the caller's array a batch at a time, in one copy
 * each, and every result is copied straight into its place: nothing is allocated per
 * item, and no pp_result is made.
 *
 * An array run needs nothing from the caller's thread once started (no next(), no
 * each()), so it runs the same on the loop's thread and from any other: there it is a job
 * in the pool's inbox, started and carried on by the loop's thread, and answered when the
 * last item is delivered. */
#include <stdint.h>
#include <string.h>

#include "../shared/registry.h"
#include "stream.h"
#include "threads.h"

typedef struct pp__marr {
  pp__stream s;
  uint8_t *results;
  size_t result_size;
  int *statuses;
  struct pp__cmd *job;     /* off the loop's thread: answered at the run's end */
  pp__qnode xnode;         /* meanwhile, in pool->xarrays */
  int started;
} pp__marr;

static int pp__marr_raw(void *user, size_t index, int status, const void *bytes,
                        size_t len) {
  pp__marr *m = (pp__marr *) user;
  uint8_t *slot = m->result_size > 0 ? m->results + index * m->result_size : NULL;

  if (status == 0 && len != m->result_size)
    status = PP_EPROTO;
  if (status == 0 && len > 0)
    memcpy(slot, bytes, len);
  else if (status != 0 && slot != NULL)
    memset(slot, 0, m->result_size);
  if (m->statuses != NULL)
    m->statuses[index] = status;
  return status;
}

static int pp__marr_raw_run(void *user, size_t index, size_t count, const void *bytes,
                            size_t size) {
  pp__marr *m = (pp__marr *) user;
  size_t i;

  if (size != m->result_size) {
    for (i = 0; i < count; i++)
      pp__marr_raw(m, index + i, PP_EPROTO, NULL, 0);
    return PP_EPROTO;
  }
  if (size > 0)
    memcpy(m->results + index * size, bytes, count * size);
  if (m->statuses != NULL)
    for (i = 0; i < count; i++)
      m->statuses[index + i] = 0;
  return 0;
}

static void pp__marr_end(pp__stream *s) {
  pp__marr *m = (pp__marr *) s->user;

  /* The caller returns once answered: the last touch of m. */
  if (m->job != NULL) {
    pp__q_remove(&m->xnode);
    pp__x_job_done(s->pool, m->job, 0);
  }
}

void pp__marr_dry_all(pp_pool *pool) {
  while (!pp__q_empty(&pool->xarrays)) {
    pp__marr *m = PP__CONTAINER_OF(pp__q_head(&pool->xarrays), pp__marr, xnode);
    /* Canceling what is in flight ends the run, which unlinks it (and its caller may
     * return at once): m is not touched again. A run that did not end would be a bug,
     * never a loop here. */
    pp__stream_array_dry(&m->s);
    if (pp__q_head(&pool->xarrays) == &m->xnode)
      break;
  }
}

/* On the loop's thread, for a caller on another. */
static void pp__marr_start(pp_pool *pool, struct pp__cmd *job, void *arg) {
  pp__marr *m = (pp__marr *) arg;

  m->job = job;
  m->started = 1;
  /* A run of another thread's is ended by nothing but its items, or by the loop's thread
   * seeing the loop run dry (pp__marr_dry_all): that thread must be able to find it. */
  pp__q_insert_tail(&pool->xarrays, &m->xnode);
  pp__stream_array(&m->s);
}

int pp_map_array(pp_pool *pool, const char *task, size_t n, const void *args,
                 size_t arg_size, void *results, size_t result_size, int *statuses) {
  pp__marr m;
  size_t chunk, i;
  int mode, stop_err, status;

  if (pool == NULL || task == NULL || pp__in_worker())
    return PP_EINVAL;
  if (n > 0 && ((args == NULL && arg_size > 0) || (results == NULL && result_size > 0)))
    return PP_EINVAL;
  if ((arg_size > 0 && n > SIZE_MAX / arg_size) ||
      (result_size > 0 && n > SIZE_MAX / result_size))
    return PP_EINVAL;
  /* Fixed when the pool was made: any thread may read it. */
  if (arg_size > pool->max_message || result_size > pool->max_message)
    return PP_E2BIG;
  if (n == 0)
    return 0;

  memset(&m, 0, sizeof(m));
  m.results = (uint8_t *) results;
  m.result_size = result_size;
  m.statuses = statuses;
  m.s.pool = pool;
  m.s.task = task;
  m.s.user = &m;
  m.s.array = (const uint8_t *) args;
  m.s.n_items = n;
  m.s.arg_size = arg_size;
  m.s.raw = pp__marr_raw;
  m.s.raw_run = pp__marr_raw_run;
  m.s.on_end = pp__marr_end;
  pp__q_init(&m.xnode);
  /* Batches of about an eighth of each worker's share, as pp_map's. */
  chunk = n / ((size_t) pool->nworkers * 8);
  m.s.chunk = chunk < 1 ? 1 : chunk > PP__BATCH_MAX ? PP__BATCH_MAX : chunk;

  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    pp__x_job(pool, pp__marr_start, &m, 0);
    pp__x_drop(pool);
    /* The pool was going already: nothing ran. */
    if (!m.started)
      m.s.stop_err = PP_ECLOSED;
  } else {
    if (pool->cb_depth > 0 || pool->finished) {
      pp__leave(pool);
      return PP_EINVAL;
    }
    m.started = 1;
    pp__stream_array(&m.s);
    if (!m.s.ended && pp__run_until(pool, &m.s.ended, 1) != 0)
      pp__stream_array_dry(&m.s);
    pp__leave(pool);
  }

  /* What was never taken: the pool stopped taking (closed, gave up), or its loop did. */
  stop_err = m.s.dry ? PP_ECANCELED : m.s.stop_err;
  for (i = m.s.taken; i < n; i++)
    pp__marr_raw(&m, i, stop_err, NULL, 0);
  status = m.s.fail;
  if (status == 0 && m.s.taken < n)
    status = stop_err;
  return status;
}
