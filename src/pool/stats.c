/* pp_pool_stats_get: the pool's counters. Four are kept as events happen; queued and
 * running are derived at the moment they are read, so that no two counters can disagree:
 * running is what the workers' lists hold undecided (bounded: workers times the pipeline
 * depth), and queued is whatever else was accepted and is not decided yet. */
#include <string.h>

#include "../shared/registry.h"
#include "threads.h"

int pp_pool_stats_get(pp_pool *pool, pp_pool_stats *stats) {
  int mode;

  /* A task under fork sees its parent's pools: a copy, whose counters are stale and
   * whose loop's thread and wake-up are not this process's. */
  if (pool == NULL || stats == NULL || pp__in_worker())
    return PP_EINVAL;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    mode = pp__x_stats(pool, stats);
    pp__x_drop(pool);
    return mode;
  }
  pp__stats_core(pool, stats);
  pp__leave(pool);
  return 0;
}

void pp__stats_core(pp_pool *pool, pp_pool_stats *stats) {
  uint64_t running = 0;
  pp__qnode *q, *k;

  for (q = pp__q_head(&pool->workers); q != &pool->workers; q = q->next) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    for (k = pp__q_head(&w->inflight); k != &w->inflight; k = k->next) {
      const pp__task *t = PP__CONTAINER_OF(k, pp__task, node);
      if (t->state != PP__T_DONE)
        running += t->nitems ? t->nitems - t->received : 1;
    }
  }
  memset(stats, 0, sizeof(*stats));
  stats->submitted = pool->st_submitted;
  stats->done = pool->st_done;
  stats->failed = pool->st_failed;
  stats->running = running;
  stats->queued = pool->st_submitted - pool->st_done - running;
  stats->workers_ready = pool->ready;
  stats->workers_started = pool->st_started;
  stats->workers_lost = pool->st_lost;
}
