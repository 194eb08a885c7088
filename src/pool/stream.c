/* Streams of work: pp_map_stream, and the engine it shares with pp_map. Inputs are pulled
 * from next() only as the pool has room for them (a few tasks per worker, and in order at
 * most PP__STREAM_MAX_ITEMS items not yet delivered), sent in batches as pp_map's, and
 * each item's outcome goes to each() once.
 *
 * A batch's items have consecutive indices, so a result names its item by the batch's
 * first index plus its place. The worker runs a batch's items in order and keeps every
 * finished item's result (on the wire or in its journal) before it starts the next, so
 * when a batch ends without all its results, the first item without one is the one that
 * was running: it takes the batch's failure, and the items after it, which never started,
 * run again one by one, from the batch's own copy of their inputs.
 *
 * An array run (pp_map_array) is the same engine with its inputs taken from an array,
 * a batch at a time in the protocol's fixed form, and its outcomes handed over as bytes
 * (raw(), raw_run()) rather than as pp_results; it takes its next batch from the end of
 * each task, in the pool's callbacks, rather than from a loop of the caller's.
 *
 * The pool's counters count a batch's items one each: this file counts their outcomes
 * (pp__task_finish counts only single tasks), always before the callback that delivers
 * them, so that a callback reading the counters sees them exact (an array run, which
 * runs no callback of the application's, counts them as it delivers them). */
#include <stdlib.h>
#include <string.h>

#include "../shared/registry.h"
#include "future.h"
#include "stream.h"
#include "threads.h"

/* Inputs a batch holds at most, so that a stream holds few of them at once. */
#define PP__STREAM_BATCH_BYTES (256 * 1024)
/* Items taken and not yet delivered, in order: the ring of results held back. */
#define PP__STREAM_MAX_ITEMS 65536u
/* A stream's batches aim at about this much work each (ns), once items have been timed:
 * long enough that the per-batch costs vanish, short enough that work still spreads. */
#define PP__STREAM_BATCH_NS 2000000u

struct pp__ssingle {
  pp__ssingle *next;
  pp__ssingle **pprev;
  pp__stream *s;
  size_t index;
  uint64_t id;
};

struct pp__sbatch {
  pp__sbatch *next;
  pp__sbatch **pprev;
  pp__stream *s;
  uint64_t id;
  size_t start;            /* the index of its first item */
  uint32_t count;
  uint32_t received;
  const uint8_t *payload;  /* owned by its task: valid until the task's callback returns */
  int held;                /* its results are being delivered: each() may end its task */
  int ended;               /* its task ended while held: freed once let go */
};

/* An item's outcome to an array run's raw(); returns the status it was delivered with. */
static int pp__stream_raw(pp__stream *s, size_t index, int status, const void *bytes,
                          size_t len) {
  s->events++;
  status = s->raw(s->user, index, status, bytes, len);
  if (status != 0 && (s->fail == 0 || index < s->fail_index)) {
    s->fail = status;
    s->fail_index = index;
  }
  s->delivered++;
  return status;
}

static void pp__stream_deliver(pp__stream *s, size_t index, pp_result *r) {
  size_t mask = PP__STREAM_MAX_ITEMS - 1;

  if (s->raw != NULL) {
    pp__stream_raw(s, index, r->status, r->data, r->len);
    return;
  }
  s->events++;
  if (r->status != 0 && (s->fail == 0 || index < s->fail_index)) {
    s->fail = r->status;
    s->fail_index = index;
  }
  if (s->ordered && index != s->delivered) {
    s->ring[index & mask] = *r;
    s->have[index & mask] = 1;
    r->data = NULL;
    r->message = NULL;
    return;
  }
  /* each() runs as a result callback, under the same rules, also when a run of a batch's
   * results is filed outside pp__task_finish. */
  s->pool->cb_depth++;
  s->pool->in_stream_cb++;
  pp__x_cb_depth(1);
  s->each(s->user, index, r);
  pp_result_free(r);
  s->delivered++;
  while (s->ordered && s->have[s->delivered & mask]) {
    pp_result held = s->ring[s->delivered & mask];
    s->have[s->delivered & mask] = 0;
    s->each(s->user, s->delivered, &held);
    pp_result_free(&held);
    s->delivered++;
  }
  pp__x_cb_depth(-1);
  s->pool->in_stream_cb--;
  s->pool->cb_depth--;
}

/* An item that fails without a task of its own. */
static void pp__stream_fail(pp__stream *s, size_t index, uint64_t id, int status,
                            const char *why) {
  pp_result r;

  if (s->raw != NULL) {
    pp__stream_raw(s, index, status, NULL, 0);
    return;
  }
  memset(&r, 0, sizeof(r));
  r.id = id;
  r.status = status;
  r.message = pp__strdupf("task '%s' (map item %zu): %s", s->task, index,
                          why);
  pp__stream_deliver(s, index, &r);
}

static void pp__stream_kick(pp__stream *s);

static void pp__stream_single_cb(pp_pool *pool, pp_result *r, void *user) {
  pp__ssingle *it = (pp__ssingle *) user;
  pp__stream *s = it->s;
  size_t index = it->index;

  if ((*it->pprev = it->next) != NULL)
    it->next->pprev = it->pprev;
  free(it);
  s->tasks--;
  if (s->raw == NULL) {
    pp__stream_deliver(s, index, r);
    return;
  }
  /* pp__task_finish counted it a success; raw() may refuse it (a wrong size). */
  if (pp__stream_raw(s, index, r->status, r->data, r->len) != 0 && r->status == 0)
    pool->st_failed++;
  pp__stream_kick(s);
}

/* Sends one item as a task of its own. borrow: data stays valid and unchanged until the
 * run ends (the task points at it). owned: a malloc'd copy the task takes over. Neither:
 * the task copies data. counted: the item is in the pool's counters already (it comes
 * back from a batch). A submit error fails the item and stops the run: the pool takes
 * nothing any more. */
static void pp__stream_single(pp__stream *s, size_t index, const void *data, size_t len,
                              int borrow, void *owned, int counted) {
  pp_pool *pool = s->pool;
  pp__ssingle *it = malloc(sizeof(*it));
  pp_result r;
  int err = PP_ENOMEM;

  /* The batch counted it: pp__submit counts it again, before anything can read that. */
  if (counted)
    pool->st_submitted--;
  if (it != NULL) {
    it->s = s;
    it->index = index;
    size_t *hold = borrow && owned == NULL ? &s->hold : NULL;
    /* An item that comes back from a batch was accepted with it: a close lets it run. */
    if (counted)
      err = pp__submit_again(pool, s->task, owned ? owned : data, len, pp__stream_single_cb,
                             it, &it->id, hold, owned);
    else
      err = pp__submit(pool, s->task, owned ? owned : data, len, pp__stream_single_cb, it,
                       &it->id, hold, owned, 0, NULL);
  }
  if (err == 0) {
    if ((it->next = s->singles) != NULL)
      s->singles->pprev = &it->next;
    it->pprev = &s->singles;
    s->singles = it;
    s->tasks++;
    return;
  }
  free(it);
  free(owned);
  if (counted) {
    pool->st_submitted++;
    pool->st_done++;
    pool->st_failed++;
  }
  s->stop = 1;
  if (s->stop_err == 0)
    s->stop_err = err;
  if (s->raw != NULL) {
    pp__stream_raw(s, index, err, NULL, 0);
    return;
  }
  pp__submit_error(pool, s->task, err, &r);
  pp__stream_deliver(s, index, &r);
}

static void pp__stream_on_items(pp__task *t, const pp__batch *b, long pid) {
  pp__sbatch *mb = (pp__sbatch *) t->user;
  pp__stream *s = mb->s;
  pp_pool *pool = t->pool;
  const uint8_t *data = b->data;
  uint32_t j, failed = 0;

  if (s->raw != NULL && b->table == NULL) {
    /* A run of successes of one size: delivered in one piece. */
    int status = s->raw_run(s->user, mb->start + b->first, b->count, data, b->size);
    size_t i = mb->start + b->first;
    pool->st_done += b->count;
    s->events += b->count;
    s->delivered += b->count;
    mb->received += b->count;
    if (status != 0) {
      pool->st_failed += b->count;
      if (s->fail == 0 || i < s->fail_index) {
        s->fail = status;
        s->fail_index = i;
      }
    }
    return;
  }
  if (s->raw != NULL) {
    /* No pp_result, no copy but raw()'s own: each item's bytes go as they lie in the
     * frame. Counted as they are delivered: raw() may refuse a success, and no callback
     * of the application's runs meanwhile to read the counters. */
    for (j = 0; j < b->count; j++) {
      uint32_t kind = b->table != NULL ? pp__get_u32(b->table + (size_t) j * 8) : PP__R_OK;
      uint32_t n = b->table != NULL ? pp__get_u32(b->table + (size_t) j * 8 + 4) : b->size;
      int status = kind == PP__R_OK ? 0 : kind == PP__R_FAIL ? PP_ETASK
                   : kind == PP__R_NOTASK ? PP_ENOTASK : PP_E2BIG;
      pool->st_done++;
      if (pp__stream_raw(s, mb->start + b->first + j, status, status == 0 ? data : NULL,
                         status == 0 ? n : 0) != 0)
        pool->st_failed++;
      data += n;
    }
    mb->received += b->count;
    return;
  }
  for (j = 0; j < b->count && b->table != NULL; j++)
    if (pp__get_u32(b->table + (size_t) j * 8) != PP__R_OK)
      failed++;
  pool->st_done += b->count;
  pool->st_failed += failed;
  mb->received += b->count;
  /* each() may cancel the batch's task (its callback then ends mb) while its items are
   * still being delivered from b: mb is held until the last of them. */
  mb->held++;
  for (j = 0; j < b->count; j++) {
    size_t i = mb->start + b->first + j;
    uint32_t kind = b->table != NULL ? pp__get_u32(b->table + (size_t) j * 8) : PP__R_OK;
    uint32_t n = b->table != NULL ? pp__get_u32(b->table + (size_t) j * 8 + 4) : b->size;
    pp_result o;

    memset(&o, 0, sizeof(o));
    o.id = mb->id + 1 + b->first + j;
    if (kind == PP__R_OK) {
      if (n > 0 && (o.data = malloc(n)) != NULL) {
        memcpy(o.data, data, n);
        o.len = n;
      } else if (n > 0) {
        pool->st_failed++;
        o.status = PP_ENOMEM;
        o.message = pp__strdupf("task '%s' (map item %zu): no memory for its result",
                                s->task, i);
      }
    } else {
      o.status = kind == PP__R_FAIL ? PP_ETASK : kind == PP__R_NOTASK ? PP_ENOTASK : PP_E2BIG;
      if (kind == PP__R_FAIL)
        o.message = pp__strdupf("task '%s' (map item %zu) failed in worker pid %ld: %.*s",
                                s->task, i, pid, (int) n,
                                (const char *) data);
      else
        o.message = pp__strdupf("task '%s' (map item %zu): %.*s", s->task,
                                i, (int) n, (const char *) data);
    }
    data += n;
    pp__stream_deliver(s, i, &o);
  }
  if (--mb->held == 0 && mb->ended)
    free(mb);
}

/* Sends items from..count-1 of a batch again, one by one, from its payload (either form),
 * which the tasks copy. */
static void pp__stream_redo(pp__stream *s, size_t start, const uint8_t *p, uint32_t from,
                            uint32_t count, int counted) {
  size_t off, len, k;

  if ((pp__get_u32(p) & PP__BATCH_FIXED) != 0) {
    len = pp__get_u32(p + 4);
    for (k = from; k < count; k++)
      pp__stream_single(s, start + k, p + PP__BATCH_FIXED_HDR + k * len, len, 0, NULL,
                        counted);
    return;
  }
  off = 4 + (size_t) count * 4;
  for (k = 0; k < from; k++)
    off += pp__get_u32(p + 4 + k * 4);
  for (k = from; k < count; k++) {
    len = pp__get_u32(p + 4 + k * 4);
    pp__stream_single(s, start + k, p + off, len, 0, NULL, counted);
    off += len;
  }
}

static void pp__stream_batch_cb(pp_pool *pool, pp_result *r, void *user) {
  pp__sbatch *mb = (pp__sbatch *) user;
  pp__stream *s = mb->s;
  size_t running = mb->start + mb->received, end = mb->start + mb->count, i, nfail;
  int died = r->status == PP_EWORKER || r->status == PP_EPROTO;
  const char *why = r->message ? r->message : pp_strerror(r->status);

  s->tasks--;
  s->events++;
  if ((*mb->pprev = mb->next) != NULL)
    mb->next->pprev = mb->pprev;
  if (running < end) {
    nfail = died ? 1 : end - running;
    pool->st_done += nfail;
    pool->st_failed += nfail;
    /* The items after the one that was running never started: they go back first, so
     * that the counters see them queued when the failures are delivered. */
    if (died)
      pp__stream_redo(s, mb->start, mb->payload, mb->received + 1, mb->count, 1);
    for (i = running; i < (died ? running + 1 : end); i++)
      pp__stream_fail(s, i, r->id + 1 + (i - mb->start), r->status, why);
  }
  if (mb->held > 0)
    mb->ended = 1;
  else
    free(mb);
  if (s->raw != NULL)
    pp__stream_kick(s);
}

/* Items per batch: 1 while a per-task limit needs them one by one. */
static size_t pp__stream_chunk(const pp__stream *s) {
  const pp_pool *pool = s->pool;
  uint64_t c;

  if (pool->timeout_ms != 0 || pool->max_tasks != 0 || pool->max_memory != 0 ||
      pool->max_message < 4 + (size_t) PP__BATCH_MAX * 4 + 4096)
    return 1;
  if (s->chunk != 0)
    return s->chunk;
  /* Nothing is known of the items' length until one has finished. */
  if (pool->timed == 0)
    return 1;
  c = PP__STREAM_BATCH_NS / (pool->avg_ns ? pool->avg_ns : 1);
  return c < 1 ? 1 : c > PP__BATCH_MAX ? PP__BATCH_MAX : (size_t) c;
}

/* Tasks in flight at most: a few batches per worker, or enough single items to keep
 * every worker's pipeline full. An array run's batches fill every worker's pipeline too:
 * the pool hands a task to the first worker in its list with room in its pipeline, so
 * with a few batches per worker in flight the others would get theirs one at a time, and
 * wait between them for the pool to answer. Its inputs in flight stay under
 * PP__ARRAY_WINDOW_BYTES per worker. */
#define PP__ARRAY_WINDOW_BYTES (4u << 20)
/* The pipeline's depth while items take microseconds (dispatch.c's adaptive depth). */
#define PP__ARRAY_DEPTH 32u

static size_t pp__stream_window(const pp__stream *s, size_t chunk) {
  size_t per, fit;

  if (s->raw == NULL || chunk < 2)
    return (size_t) s->pool->nworkers * (chunk > 1 ? 4 : s->lent ? 64 : 8);
  per = (s->pool->depth != 0 ? s->pool->depth : PP__ARRAY_DEPTH) + 1;
  fit = PP__ARRAY_WINDOW_BYTES / (PP__BATCH_FIXED_HDR + chunk * s->arg_size);
  if (per > fit)
    per = fit < 4 ? 4 : fit;
  return (size_t) s->pool->nworkers * per;
}

/* The next input from next(): 1 with *in and *index, else 0 (the run stops taking). */
static int pp__stream_next(pp__stream *s, pp_input *in, size_t *index) {
  int r;

  if (s->stop)
    return 0;
  in->data = NULL;
  in->len = 0;
  /* Counted as a callback: next() must not call the blocking functions. */
  s->pool->cb_depth++;
  s->pool->in_stream_cb++;
  pp__x_cb_depth(1);
  r = s->next(s->user, in);
  pp__x_cb_depth(-1);
  s->pool->in_stream_cb--;
  s->pool->cb_depth--;
  if (r > 0) {
    *index = s->taken++;
    return 1;
  }
  s->stop = 1;
  if (r < 0)
    s->next_err = r;
  return 0;
}

static int pp__stream_valid(pp__stream *s, size_t index, const pp_input *in) {
  if (in->data == NULL && in->len > 0) {
    pp__stream_fail(s, index, 0, PP_EINVAL, "its input has data NULL and a length of more "
                    "than 0 bytes");
    return 0;
  }
  if (in->len > s->pool->max_message) {
    pp__stream_fail(s, index, 0, PP_E2BIG, "its input is over the pool's max_message_bytes");
    return 0;
  }
  return 1;
}

/* Keeps an input taken that the batch being built has no room for: it starts the next. */
static void pp__stream_keep(pp__stream *s, const pp_input *in, size_t index) {
  s->pend = *in;
  s->pend_index = index;
  s->pend_copy = NULL;
  s->has_pend = 1;
  /* next() may reuse its buffer; a bad input is never read, so it needs no copy. */
  if (!s->lent && in->len > 0 && in->data != NULL && in->len <= s->pool->max_message) {
    s->pend_copy = malloc(in->len);
    if (s->pend_copy == NULL) {
      s->has_pend = 0;
      pp__stream_fail(s, index, 0, PP_ENOMEM, "no memory for a copy of its input");
      return;
    }
    memcpy(s->pend_copy, in->data, in->len);
    s->pend.data = s->pend_copy;
  }
}

/* Sends a batch of count items whose payload, of len bytes, is laid out (count word
 * included) in either form. */
static void pp__stream_send_batch(pp__stream *s, size_t start, uint8_t *payload,
                                   uint32_t count, size_t len) {
  pp__sbatch *mb = calloc(1, sizeof(*mb));
  int err = PP_ENOMEM;

  if (mb != NULL) {
    mb->s = s;
    mb->start = start;
    mb->count = count;
    mb->payload = payload;
    /* The task owns the payload from here: it lives until no write points at it. */
    err = pp__submit(s->pool, s->task, payload, len, pp__stream_batch_cb, mb, &mb->id,
                     NULL, payload, count, pp__stream_on_items);
  }
  if (err == 0) {
    if ((mb->next = s->batches) != NULL)
      s->batches->pprev = &mb->next;
    mb->pprev = &s->batches;
    s->batches = mb;
    s->tasks++;
    return;
  }
  free(mb);
  pp__stream_redo(s, start, payload, 0, count, 0);
  free(payload);
}

/* Takes the inputs of one task, a batch or a single item, and sends it; or fails an
 * input that cannot be sent. */
static void pp__stream_take(pp__stream *s) {
  size_t chunk = pp__stream_chunk(s), cap, index, first, bytes, room, size, table;
  uint32_t count;
  pp_input in;
  void *copy = NULL;
  uint8_t *payload;

  if (s->has_pend) {
    in = s->pend;
    index = s->pend_index;
    copy = s->pend_copy;
    s->has_pend = 0;
    s->pend_copy = NULL;
  } else if (!pp__stream_next(s, &in, &index)) {
    return;
  }
  if (!pp__stream_valid(s, index, &in)) {
    free(copy);
    return;
  }
  cap = s->pool->max_message - 4 - (size_t) PP__BATCH_MAX * 4;
  if (cap > PP__STREAM_BATCH_BYTES)
    cap = PP__STREAM_BATCH_BYTES;
  if (s->ordered) {
    room = PP__STREAM_MAX_ITEMS - (s->taken - s->delivered) + 1;
    if (chunk > room)
      chunk = room;
  }
  if (chunk < 2 || in.len > cap) {
    pp__stream_single(s, index, in.data, in.len, s->lent, copy, 0);
    return;
  }
  /* The table is laid out for chunk items; a shorter batch moves its data down. */
  table = 4 + chunk * 4;
  size = table + (in.len > 16 * chunk ? in.len : 16 * chunk);
  if (size > table + cap)
    size = table + cap;
  payload = malloc(size);
  if (payload == NULL) {
    pp__stream_single(s, index, in.data, in.len, s->lent, copy, 0);
    return;
  }
  first = index;
  pp__put_u32(payload + 4, (uint32_t) in.len);
  if (in.len > 0)
    memcpy(payload + table, in.data, in.len);
  free(copy);
  bytes = in.len;
  count = 1;
  while (count < chunk && (!s->ordered || s->taken - s->delivered < PP__STREAM_MAX_ITEMS) &&
         pp__stream_next(s, &in, &index)) {
    /* Lengths are compared, never summed past cap: an absurd one cannot wrap. */
    if ((in.data == NULL && in.len > 0) || in.len > cap - bytes) {
      pp__stream_keep(s, &in, index);
      break;
    }
    if (table + bytes + in.len > size) {
      size_t want = size * 2 < table + bytes + in.len ? table + bytes + in.len : size * 2;
      uint8_t *grown;
      if (want > table + cap)
        want = table + cap;
      grown = realloc(payload, want);
      if (grown == NULL) {
        pp__stream_keep(s, &in, index);
        break;
      }
      payload = grown;
      size = want;
    }
    pp__put_u32(payload + 4 + (size_t) count * 4, (uint32_t) in.len);
    if (in.len > 0)
      memcpy(payload + table + bytes, in.data, in.len);
    bytes += in.len;
    count++;
  }
  if (count < chunk)
    memmove(payload + 4 + (size_t) count * 4, payload + table, bytes);
  if (count == 1) {
    pp__stream_single(s, first, payload + 8, bytes, 0, NULL, 0);
    free(payload);
    return;
  }
  pp__put_u32(payload, count);
  pp__stream_send_batch(s, first, payload, count, 4 + (size_t) count * 4 + bytes);
}

/* Takes the next inputs of an array run: a batch of them, copied in one piece, or one
 * item as a task of its own (which copies it). */
static void pp__stream_take_array(pp__stream *s) {
  size_t chunk = pp__stream_chunk(s), index = s->taken, left = s->n_items - s->taken;
  size_t count = chunk < left ? chunk : left, bytes = 0;
  const uint8_t *src = s->arg_size > 0 ? s->array + index * s->arg_size : NULL;
  uint8_t *payload = NULL;

  /* A batch's frame within max_message, which is over 20 KiB whenever items go in
   * batches at all (pp__stream_chunk), and its inputs within PP__STREAM_BATCH_BYTES. */
  if (count >= 2 && s->arg_size > 0) {
    size_t cap = s->pool->max_message - PP__BATCH_FIXED_HDR;
    if (cap > PP__STREAM_BATCH_BYTES)
      cap = PP__STREAM_BATCH_BYTES;
    if (count > cap / s->arg_size)
      count = cap / s->arg_size;
  }
  if (count >= 2) {
    bytes = count * s->arg_size;
    payload = malloc(PP__BATCH_FIXED_HDR + bytes);
  }
  if (payload == NULL) {
    s->taken++;
    s->stop = s->taken == s->n_items;
    pp__stream_single(s, index, src, s->arg_size, 0, NULL, 0);
    return;
  }
  /* The fixed form: no table, and the items start 16-byte aligned, as the worker wants
   * them. */
  pp__put_u32(payload, (uint32_t) count | PP__BATCH_FIXED);
  pp__put_u32(payload + 4, (uint32_t) s->arg_size);
  memset(payload + 8, 0, 8);
  if (bytes > 0)
    memcpy(payload + PP__BATCH_FIXED_HDR, src, bytes);
  s->taken += count;
  s->stop = s->taken == s->n_items;
  pp__stream_send_batch(s, index, payload, (uint32_t) count, PP__BATCH_FIXED_HDR + bytes);
}

/* Takes what an array run's window allows, and ends the run once all is delivered. A
 * take runs pp__submit, whose callbacks could come back here: only the outermost call
 * takes and ends, so that on_end is the last thing done with s. */
static void pp__stream_kick(pp__stream *s) {
  if (s->kicking)
    return;
  s->kicking = 1;
  while (!s->stop && s->tasks < pp__stream_window(s, pp__stream_chunk(s)))
    pp__stream_take_array(s);
  s->kicking = 0;
  if (s->stop && s->tasks == 0 && !s->ended) {
    s->ended = 1;
    s->on_end(s);
  }
}

void pp__stream_array(pp__stream *s) {
  s->stop = s->n_items == 0;
  pp__stream_kick(s);
}

/* The pool's loop ran dry (someone closed its handles): what is in flight ends, canceled,
 * and nothing more is taken. */
static void pp__stream_cancel_all(pp__stream *s) {
  s->dry = 1;
  s->stop = 1;
  while (s->singles != NULL)
    if (pp__cancel_core(s->pool, s->singles->id) != 0)
      break;
  while (s->batches != NULL)
    if (pp__cancel_core(s->pool, s->batches->id) != 0)
      break;
}

void pp__stream_array_dry(pp__stream *s) {
  s->kicking = 1;
  pp__stream_cancel_all(s);
  s->kicking = 0;
  pp__stream_kick(s);
}

int pp__stream_run(pp__stream *s) {
  pp_pool *pool = s->pool;

  if (s->ordered) {
    s->ring = calloc(PP__STREAM_MAX_ITEMS, sizeof(*s->ring));
    s->have = calloc(PP__STREAM_MAX_ITEMS, 1);
    if (s->ring == NULL || s->have == NULL) {
      free(s->ring);
      free(s->have);
      return PP_ENOMEM;
    }
  }
  pool->blocking++;
  for (;;) {
    while ((!s->stop || s->has_pend) &&
           s->tasks < pp__stream_window(s, pp__stream_chunk(s)) &&
           (!s->ordered || s->has_pend || s->taken - s->delivered < PP__STREAM_MAX_ITEMS))
      pp__stream_take(s);
    if (s->tasks == 0) {
      if (s->stop && !s->has_pend)
        break;
      continue;
    }
    if (pp__run_until(pool, &s->events, s->events + 1) != 0) {
      pp__stream_cancel_all(s);
      if (s->has_pend) {
        s->has_pend = 0;
        free(s->pend_copy);
        s->pend_copy = NULL;
        pp__stream_fail(s, s->pend_index, 0, PP_ECANCELED, "the pool's loop stopped");
      }
      break;
    }
  }
  pp__release_args(pool, &s->hold);
  pool->blocking--;
  free(s->ring);
  free(s->have);
  s->ring = NULL;
  s->have = NULL;
  return 0;
}

static int pp__map_stream_here(pp_pool *pool, const char *task, pp_next_fn next,
                               pp_each_fn each, void *user, unsigned flags);

int pp_map_stream(pp_pool *pool, const char *task, pp_next_fn next, pp_each_fn each,
                  void *user, unsigned flags) {
  int mode, err;

  if (pool == NULL || task == NULL || next == NULL || each == NULL ||
      (flags & ~(unsigned) PP_MAP_UNORDERED) != 0 || pp__in_worker())
    return PP_EINVAL;
  mode = pp__enter(pool, 0);
  if (mode < 0)
    return mode;
  if (mode == PP__AWAY) {
    /* From a callback of another loop it would wait for this pool's loop. */
    err = pp__x_in_cb() ? PP_EINVAL : pp__x_map_stream(pool, task, next, each, user, flags);
    pp__x_drop(pool);
    return err;
  }
  err = pp__map_stream_here(pool, task, next, each, user, flags);
  pp__leave(pool);
  return err;
}

static int pp__map_stream_here(pp_pool *pool, const char *task, pp_next_fn next,
                               pp_each_fn each, void *user, unsigned flags) {
  pp__stream s;
  uint32_t index;
  int err;

  if (pool->cb_depth > 0 || pool->finished)
    return PP_EINVAL;
  if (pool->closing)
    return PP_ECLOSED;
  if (pool->names != NULL && pp__find_task(pool, task, &index) != 0)
    return PP_ENOTASK;
  memset(&s, 0, sizeof(s));
  s.pool = pool;
  s.task = task;
  s.next = next;
  s.each = each;
  s.user = user;
  s.ordered = (flags & PP_MAP_UNORDERED) == 0;
  err = pp__stream_run(&s);
  if (err != 0)
    return err;
  return s.next_err ? s.next_err : s.fail;
}
