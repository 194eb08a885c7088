/* The blocking calls: pp_pool_wait, pp_apply and pp_map run the pool's loop until what
 * they wait for is done. pp_apply and pp_map lend the caller's arguments to the pool
 * rather than copy them, so neither returns while a write still points at them. */
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "serve.h"

/* Runs the pool's loop until *done reaches target, or with done NULL until nothing is
 * pending. Returns PP_ECLOSED if the loop runs dry first: that would be a hang, never a
 * wait. */
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

/* Runs the loop until no write points at the caller's arguments any more. A write under
 * way always ends (with its worker's end at the latest), so this is bounded. */
static void pp__release_args(pp_pool *pool, const size_t *hold) {
  pool->blocking++;
  while (*hold > 0 && uv_run(pool->loop, UV_RUN_ONCE) != 0)
    ;
  pool->blocking--;
}

int pp_pool_wait(pp_pool *pool) {
  if (pool == NULL || pool->cb_depth > 0 || pool->finished || pp__in_worker())
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
  size_t hold = 0;
  int err;

  if (pool == NULL || out == NULL)
    return PP_EINVAL;
  if (pool->cb_depth > 0 || pp__in_worker()) {
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
    pp_cancel(pool, out->id);
  pp__release_args(pool, &hold);
  return out->status;
}

/* pp_map: items go out in batches (many per frame, each still run as its own task by the
 * worker) unless a per-task limit (timeout, max tasks per worker) needs them one by one.
 * The worker writes each item's result before it starts the next, so when a batch ends
 * without all its results, the first item without one is the one that was running: it
 * takes the batch's failure, and the items after it, which never started, run again. */
typedef struct pp__map_batch pp__map_batch;

typedef struct pp__map {
  pp_pool *pool;
  const char *task;
  const pp_input *args;
  pp_result *out;
  size_t n;
  size_t done;             /* items whose out[] is filled */
  size_t tasks;            /* tasks in flight, single or batch */
  size_t hold;             /* tasks whose borrowed argument a write points at */
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

/* An item that cannot be sent at all fails on its own, and the map goes on. */
static int pp__map_check(pp__map *map, size_t i) {
  const pp_input *a = &map->args[i];

  if (a->data == NULL && a->len > 0) {
    pp__map_fail(map, i, 0, PP_EINVAL, "its input has data NULL and a length of more than "
                 "0 bytes");
    return PP_EINVAL;
  }
  if (a->len > map->pool->max_message) {
    pp__map_fail(map, i, 0, PP_E2BIG, "its input is over the pool's max_message_bytes");
    return PP_E2BIG;
  }
  return 0;
}

static void pp__map_single(pp__map *map, size_t i) {
  pp__map_item *item = &map->items[i];
  int err;

  item->map = map;
  item->index = i;
  err = pp__submit(map->pool, map->task, map->args[i].data, map->args[i].len, pp__map_cb,
                   item, &map->out[i].id, &map->hold, NULL, 0, NULL);
  if (err != 0) {
    pp__submit_error(map->pool, map->task, err, &map->out[i]);
    map->done++;
  } else {
    map->tasks++;
  }
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
  size_t i, running = mb->start + mb->received;
  int died = r->status == PP_EWORKER || r->status == PP_EPROTO;

  (void) pool;
  map->tasks--;
  for (p = &map->batches; *p != NULL; p = &(*p)->next)
    if (*p == mb) {
      *p = mb->next;
      break;
    }
  for (i = running; i < mb->start + mb->count; i++) {
    if (died && i > running)
      pp__map_single(map, i);
    else
      pp__map_fail(map, i, r->id + 1 + (i - mb->start), r->status,
                   r->message ? r->message : pp_strerror(r->status));
  }
  free(mb);
}

/* Sends items [i, i + count) as one batch (their lengths sum to at most
 * PP__MAP_BATCH_BYTES); falls back to single tasks if it cannot. */
static void pp__map_batch_send(pp__map *map, size_t i, uint32_t count) {
  pp__map_batch *mb = calloc(1, sizeof(*mb));
  size_t k, bytes = 4 + (size_t) count * 4, off;
  uint8_t *payload = NULL;
  int err = PP_ENOMEM;

  for (k = 0; k < count; k++)
    bytes += map->args[i + k].len;
  if (mb != NULL && (payload = malloc(bytes)) != NULL) {
    mb->map = map;
    mb->start = i;
    mb->count = count;
    pp__put_u32(payload, count);
    off = 4 + (size_t) count * 4;
    for (k = 0; k < count; k++) {
      size_t len = map->args[i + k].len;
      pp__put_u32(payload + 4 + k * 4, (uint32_t) len);
      if (len > 0)
        memcpy(payload + off, map->args[i + k].data, len);
      off += len;
    }
    /* The task owns the payload from here: it lives until no write points at it. */
    err = pp__submit(map->pool, map->task, payload, bytes, pp__map_batch_cb, mb, &mb->id,
                     NULL, payload, count, pp__map_on_items);
  }
  if (err == 0) {
    mb->next = map->batches;
    map->batches = mb;
    map->tasks++;
    return;
  }
  free(payload);
  free(mb);
  for (k = 0; k < count; k++)
    pp__map_single(map, i + k);
}

int pp_map(pp_pool *pool, const char *task, size_t n, const pp_input *args, pp_result *out) {
  pp__map map;
  size_t window, chunk = 1, next = 0, i;
  size_t cap;
  int status = 0;

  if (pool == NULL || task == NULL || (n > 0 && (args == NULL || out == NULL)))
    return PP_EINVAL;
  if (pool->cb_depth > 0 || pp__in_worker())
    return PP_EINVAL;
  if (n == 0)
    return 0;
  if (n > SIZE_MAX / sizeof(*map.items))
    return PP_ENOMEM;
  memset(&map, 0, sizeof(map));
  map.items = malloc(n * sizeof(*map.items));
  if (map.items == NULL)
    return PP_ENOMEM;
  memset(out, 0, n * sizeof(*out));
  map.pool = pool;
  map.task = task;
  map.args = args;
  map.out = out;
  map.n = n;
  /* Batches of about an eighth of each worker's share, so that work still spreads. */
  if (pool->timeout_ms == 0 && pool->max_tasks == 0) {
    chunk = n / ((size_t) pool->nworkers * 8);
    if (chunk > PP__BATCH_MAX)
      chunk = PP__BATCH_MAX;
  }
  if (pool->max_message < 4 + (size_t) PP__BATCH_MAX * 4 + 4096)
    chunk = 1;
  cap = chunk > 1 ? pool->max_message - 4 - (size_t) PP__BATCH_MAX * 4 : 0;
  if (cap > PP__MAP_BATCH_BYTES)
    cap = PP__MAP_BATCH_BYTES;
  /* A bounded window keeps a huge map from holding every argument's copy at once. */
  window = (size_t) pool->nworkers * (chunk > 1 ? 4 : 64);
  pool->blocking++;
  while (map.done < n) {
    while (next < n && map.tasks < window) {
      size_t count = 0, bytes = 0;
      if (pp__map_check(&map, next) != 0) {
        next++;
        continue;
      }
      /* Lengths are compared, never summed past cap: an absurd one cannot wrap. */
      while (chunk > 1 && count < chunk && next + count < n &&
             args[next + count].len <= cap - bytes &&
             (args[next + count].data != NULL || args[next + count].len == 0)) {
        bytes += args[next + count].len;
        count++;
      }
      if (count >= 2) {
        pp__map_batch_send(&map, next, (uint32_t) count);
      } else {
        count = 1;
        pp__map_single(&map, next);
      }
      next += count;
    }
    if (map.done < n && pp__run_until(pool, &map.done, map.done + 1) != 0) {
      /* The loop ran dry (someone closed the pool's handles): end what is in flight. */
      for (i = 0; i < next; i++)
        if (out[i].id != 0)
          pp_cancel(pool, out[i].id);
      while (map.batches != NULL)
        if (pp_cancel(pool, map.batches->id) != 0)
          break;
      for (i = next; i < n; i++)
        pp__map_fail(&map, i, 0, PP_ECANCELED, "the pool's loop stopped");
      break;
    }
  }
  pp__release_args(pool, &map.hold);
  pool->blocking--;
  free(map.items);
  for (i = 0; i < n; i++)
    if (out[i].status != 0) {
      status = out[i].status;
      break;
    }
  return status;
}
