/* What the pool sends its workers. pp__pump hands queued tasks to READY workers; each
 * task's frame is appended to its worker's batch (small frames copied, large arguments
 * referenced), and a prepare handle writes each dirty worker's batch once per loop turn,
 * uv_try_write first. At most one write per worker is under way; the next batch fills
 * meanwhile. */
#include <stdlib.h>
#include <string.h>

#include "bigmsg.h"
#include "dispatch.h"
#include "lifecycle.h"

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
  /* ends grows with tasks, to the same capacity. */
  if (b->captasks > 0 && b->ends == NULL) {
    b->ends = malloc(b->captasks * sizeof(*b->ends));
    b->capends = b->ends ? b->captasks : 0;
  } else if (b->capends < b->captasks) {
    size_t *e = realloc(b->ends, b->captasks * sizeof(*e));
    if (e != NULL) {
      b->ends = e;
      b->capends = b->captasks;
    }
  }
  if (b->capends < b->ntasks + 1)
    return PP_ENOMEM;
  sg = pp__grow(b->segs, &b->capsegs, b->nsegs + 2, sizeof(*sg));
  if (sg == NULL)
    return PP_ENOMEM;
  b->segs = sg;
  return 0;
}

/* A task whose frame is written from a blocking caller's own memory. Such a task goes
 * only to a worker that has nothing else in flight, which reads it at once: sent ahead to
 * a busy worker, its write could wait on that worker for ever, and the caller, which may
 * not return while a write points at its memory (its task may be canceled meanwhile),
 * with it. */
static int pp__task_lent(const pp__task *t) {
  return t->hold != NULL && t->len > PP__WCOPY_MAX;
}

int pp__wbatch_put(pp__worker *w, const void *frame, size_t len) {
  pp__wbatch *b = &w->wb[w->wb_fill];
  int err = pp__wbatch_reserve(b, len);

  if (err != 0)
    return err;
  memcpy(b->bytes + b->len, frame, len);
  b->segs[b->nsegs].off = b->len;
  b->segs[b->nsegs].len = len;
  b->segs[b->nsegs].task = NULL;
  b->nsegs++;
  b->len += len;
  b->total += len;
  return 0;
}

static void pp__mark_dirty(pp__worker *w) {
  if (pp__q_empty(&w->dirty_node)) {
    pp__q_insert_tail(&w->pool->dirty, &w->dirty_node);
    uv_prepare_start(&w->pool->flush, pp__on_flush);
  }
}

int pp__wbatch_send(pp__worker *w, const void *frame, size_t len) {
  int err = pp__wbatch_put(w, frame, len);

  if (err == 0)
    pp__mark_dirty(w);
  return err;
}

/* Appends t's frame to the worker's batch: its argument, or with ref its argument's
 * place in shared memory (reflen bytes, bigmsg.h). */
static int pp__wbatch_add(pp__wbatch *b, pp__task *t, const uint8_t *ref, size_t reflen) {
  int copy = ref != NULL || t->len <= PP__WCOPY_MAX;
  size_t plen = ref != NULL ? reflen : t->len;
  size_t n = PP__HDR_SIZE + (copy ? plen : 0);
  int err = pp__wbatch_reserve(b, n);

  if (err != 0)
    return err;
  pp__hdr_encode(b->bytes + b->len, t->nitems ? PP__F_BATCH : PP__F_TASK,
                 (uint16_t) t->index, t->id, (uint32_t) plen);
  if (ref != NULL) {
    pp__hdr_set_flags(b->bytes + b->len, PP__FL_SHM);
    memcpy(b->bytes + b->len + PP__HDR_SIZE, ref, reflen);
  } else if (copy && t->len > 0) {
    memcpy(b->bytes + b->len + PP__HDR_SIZE, t->arg, t->len);
  }
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
  b->total += PP__HDR_SIZE + plen;
  b->ends[b->ntasks] = b->total;
  b->tasks[b->ntasks++] = t;
  if (t->writing++ == 0 && t->hold != NULL)
    (*t->hold)++;
  return 0;
}

/* n more of the batch's bytes are written: each task whose frame is now written whole
 * has reached the worker (t->sent_to), and the worker may run it. */
static void pp__wbatch_advance(pp__wbatch *b, pp__worker *w, size_t n) {
  b->done += n;
  while (b->marked < b->ntasks && b->ends[b->marked] <= b->done)
    b->tasks[b->marked++]->sent_to = w->token;
}

void pp__wbatch_done(pp__wbatch *b, pp__worker *sent_to) {
  size_t i;

  for (i = 0; i < b->ntasks; i++) {
    pp__task *t = b->tasks[i];
    if (sent_to != NULL)
      t->sent_to = sent_to->token;
    if (--t->writing == 0 && t->hold != NULL)
      (*t->hold)--;
    pp__task_free(t);
  }
  b->len = 0;
  b->nsegs = 0;
  b->ntasks = 0;
  b->total = 0;
  b->done = 0;
  b->marked = 0;
  b->req_end = 0;
}

void pp__worker_writes_landed(pp__worker *w) {
  pp__wbatch *b = &w->wb[w->wb_fill ^ 1];

  /* libuv reports a write's end from the loop's next turn, but counts the bytes still to
   * write at once: with none left, the write under way is all in the socket already, and
   * the worker may have read its frames and run their tasks. */
  if (!w->wb_busy || w->pipe.write_queue_size != 0)
    return;
  pp__wbatch_advance(b, w, b->req_end - b->done);
}

void pp__wbatch_free(pp__wbatch *b) {
  free(b->bytes);
  free(b->segs);
  free(b->tasks);
  free(b->ends);
  free(b->bufs);
  memset(b, 0, sizeof(*b));
}

static void pp__flush_worker(pp__worker *w);

/* A write to the worker failed. If its channel is broken, the worker is ending (a task
 * may have crashed it): it gets nothing more, and its end, with the real cause, decides
 * its running task. Otherwise the task it runs fails for this reason and it is killed. */
static void pp__worker_write_failed(pp__worker *w, int err) {
  pp__task *t;

  pp__worker_set_idle(w, 0);
  w->unwritable = 1;
  /* On Windows a write to a pipe whose other end is gone fails with UV_EOF. */
  if (err == UV_EPIPE || err == UV_ECONNRESET || err == UV_ECANCELED || err == UV_EOF)
    return;
  t = pp__worker_head(w);
  if (t == NULL) {
    pp__worker_kill(w, 0, NULL);
    return;
  }
  pp__worker_kill(w, PP_EWORKER,
                  pp__strdupf("task '%s' (id %llu) failed: the pool could not write to "
                              "worker pid %ld: %s (%s); it was killed", t->name,
                              (unsigned long long) t->id, w->pid, uv_strerror(err),
                              uv_err_name(err)));
}

/* Fills b->bufs with the batch's bytes on the wire from `from` to `to`; returns how many
 * buffers. */
static unsigned pp__wbatch_bufs(pp__wbatch *b, size_t from, size_t to) {
  size_t i, pos = 0;
  unsigned n = 0;

  for (i = 0; i < b->nsegs && pos < to; i++) {
    const pp__wseg *g = &b->segs[i];
    const char *base = g->task ? (const char *) g->task->arg : (const char *) b->bytes + g->off;
    size_t lo = from > pos ? from - pos : 0;
    size_t hi = to - pos < g->len ? to - pos : g->len;
    if (lo < hi)
      b->bufs[n++] = uv_buf_init((char *) base + lo, (unsigned int) (hi - lo));
    pos += g->len;
  }
  return n;
}

static void pp__on_written(uv_write_t *req, int status);

/* Writes what is left of batch b: at once what the socket takes, and the rest through a
 * write request that ends where the first frame not yet written whole ends. A request
 * never spans two frames: when one fails, every frame before it is known to have
 * reached the worker whole, and none after it, so a worker that dies while its frames
 * are being written has its running task decided right. Returns 1 when b is written
 * whole, 0 when a request is under way, or a UV_E* error. */
static int pp__wbatch_write(pp__worker *w, pp__wbatch *b) {
  unsigned n;
  int err;

  if (b->capbufs < b->nsegs) {
    uv_buf_t *bufs = realloc(b->bufs, b->nsegs * sizeof(*bufs));
    if (bufs == NULL)
      return UV_ENOMEM;
    b->bufs = bufs;
    b->capbufs = b->nsegs;
  }
  /* Most batches fit in the socket's buffer: written at once, they need no request, no
   * extra loop turn and no change to what the loop watches. */
  n = pp__wbatch_bufs(b, b->done, b->total);
  err = uv_try_write((uv_stream_t *) &w->pipe, b->bufs, n);
  if (err < 0 && err != UV_EAGAIN)
    return err;
  pp__wbatch_advance(b, w, err > 0 ? (size_t) err : 0);
  if (b->done == b->total)
    return 1;
  b->req_end = b->marked < b->ntasks ? b->ends[b->marked] : b->total;
  n = pp__wbatch_bufs(b, b->done, b->req_end);
  b->req.data = b;
  b->worker = w;
  return uv_write(&b->req, (uv_stream_t *) &w->pipe, b->bufs, n, pp__on_written);
}

static void pp__on_written(uv_write_t *req, int status) {
  pp__wbatch *b = (pp__wbatch *) req->data;
  pp__worker *w = b->worker;
  int err = status;

  if (status == 0) {
    pp__wbatch_advance(b, w, b->req_end - b->done);
    if (b->done == b->total) {
      err = 1;
    } else if (w->state == PP__W_READY) {
      /* The rest of the same batch goes first, frame by frame while the socket is full. */
      err = pp__wbatch_write(w, b);
      if (err == 0)
        return;
    } else {
      err = UV_ECANCELED;
    }
  }
  pp__wbatch_done(b, err == 1 ? w : NULL);
  w->wb_busy = 0;
  if (w->state != PP__W_READY)
    return;
  if (err < 0)
    pp__worker_write_failed(w, err);
  else
    pp__flush_worker(w);
}

/* Writes the batch being filled, unless one is being written already: the write
 * callback then sends this one. */
static void pp__flush_worker(pp__worker *w) {
  pp__wbatch *b = &w->wb[w->wb_fill];
  int err;

  if (w->wb_busy || b->nsegs == 0)
    return;
  if (w->unwritable) {
    pp__wbatch_done(b, NULL);
    return;
  }
  err = pp__wbatch_write(w, b);
  if (err == 1) {
    pp__wbatch_done(b, w);
    return;
  }
  if (err != 0) {
    pp__wbatch_done(b, NULL);
    pp__worker_write_failed(w, err);
    return;
  }
  w->wb_busy = 1;
  w->wb_fill ^= 1;
}

void pp__on_flush(uv_prepare_t *h) {
  pp_pool *pool = (pp_pool *) h->data;

  while (!pp__q_empty(&pool->dirty)) {
    pp__worker *w = PP__CONTAINER_OF(pp__q_head(&pool->dirty), pp__worker, dirty_node);
    pp__q_remove(&w->dirty_node);
    if (w->state == PP__W_READY)
      pp__flush_worker(w);
  }
  uv_prepare_stop(h);
  /* After the writes: a task must not wait for the start of a worker it does not need. */
  pp__maintain(pool);
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

/* Sends t to w. Returns 0, or an error that leaves t queued. */
static int pp__assign(pp__worker *w, pp__task *t) {
  uint8_t ref[PP__SHM_TASK_SIZE];
  size_t reflen;
  int err;

  reflen = pp__bigmsg_arg(w, t, ref);
  err = pp__wbatch_add(&w->wb[w->wb_fill], t, reflen ? ref : NULL, reflen);
  if (err != 0) {
    pp__bigmsg_task_done(w, t);
    return err;
  }
  t->seq = ++w->seq_sent;
  pp__q_remove(&t->node);
  pp__q_insert_tail(&w->inflight, &t->node);
  w->assigned++;
  t->state = PP__T_RUNNING;
  t->worker = w;
  pp__worker_set_idle(w, 0);
  if (w->ninflight++ == 0) {
    w->head_since = uv_hrtime();
    pp__worker_arm_task_timer(w);
  }
  pp__mark_dirty(w);
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
void pp__pump(pp_pool *pool) {
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
      if (t == NULL || pp__task_lent(t) || pp__assign(w, t) != 0)
        return;
      progress = 1;
    }
  }
}
