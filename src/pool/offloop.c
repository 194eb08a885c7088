/* The blocking calls made from a thread that does not run the pool's loop: pp_apply
 * through a future, pp_map and pp_map_stream through a bridge that submits each item as
 * a task of its own and waits for the outcomes on this thread. next() and each() run on
 * the calling thread, as they do on the loop's, and never while a lock is held.
 *
 * The bridge is simpler than the loop-side engine (stream.c): no batches, so it moves
 * fewer items per second, but its memory is bounded the same way, by a window of items
 * taken and not yet delivered. */
#include <stdlib.h>
#include <string.h>

#include "future.h"
#include "stream.h"
#include "threads.h"

int pp__x_apply(pp_pool *pool, const char *task, const void *arg, size_t len,
                pp_result *out) {
  pp_future *f;
  int err;

  memset(out, 0, sizeof(*out));
  /* The argument is copied: nothing points at it once this returns. */
  err = pp_submit_future(pool, task, arg, len, &f);
  if (err != 0) {
    pp__submit_error(pool, task, err, out);
    return err;
  }
  pp_future_wait(f, -1);
  pp__future_take(f, out);
  pp_future_free(f);
  return out->status;
}

/* One item taken and not yet delivered. */
typedef struct pp__xslot {
  struct pp__xstream *s;
  size_t index;
  int done;                /* under s->mu */
  pp_result r;
} pp__xslot;

typedef struct pp__xstream {
  uv_mutex_t mu;
  uv_cond_t cond;
  pp__xslot *slots;
  size_t window;
  int ordered;
  /* Unordered: the slots free to take, and the slots done, in the order they came. */
  size_t *free_slots;
  size_t nfree;
  size_t *done_q;          /* a ring of window entries, under mu */
  size_t dq_head, dq_len;
} pp__xstream;

static void pp__xs_cb(pp_pool *pool, pp_result *r, void *user) {
  pp__xslot *slot = (pp__xslot *) user;
  pp__xstream *s = slot->s;

  (void) pool;
  uv_mutex_lock(&s->mu);
  slot->r = *r;
  r->data = NULL;
  r->message = NULL;
  slot->done = 1;
  if (!s->ordered)
    s->done_q[(s->dq_head + s->dq_len++) % s->window] = (size_t) (slot - s->slots);
  uv_cond_signal(&s->cond);
  uv_mutex_unlock(&s->mu);
}

/* An item that fails without running: done at once. */
static void pp__xs_fail(pp__xstream *s, pp__xslot *slot, const char *task, int status,
                        const char *why) {
  uv_mutex_lock(&s->mu);
  memset(&slot->r, 0, sizeof(slot->r));
  slot->r.status = status;
  slot->r.message = pp__strdupf("task '%s' (item %zu) was not run: %s", task,
                                slot->index, why);
  slot->done = 1;
  if (!s->ordered)
    s->done_q[(s->dq_head + s->dq_len++) % s->window] = (size_t) (slot - s->slots);
  uv_mutex_unlock(&s->mu);
}

/* A submit made on the loop's thread for the bridge: it refuses as pp_submit does there
 * (from the pool's own state, which only that thread may read). */
typedef struct pp__xs_here {
  const char *task;
  const pp_input *in;
  pp__xslot *slot;
} pp__xs_here;

static void pp__xs_submit_job(pp_pool *pool, struct pp__cmd *job, void *arg) {
  pp__xs_here *h = (pp__xs_here *) arg;

  pp__x_job_done(pool, job, pp__submit(pool, h->task, h->in->data, h->in->len, pp__xs_cb,
                                       h->slot, NULL, NULL, NULL, 0, NULL));
}

/* Submits one item. Once the pool has given up starting workers, whether it still takes
 * tasks depends on whether it has a worker left, which only the loop's thread knows: the
 * item is then submitted there, and the first one refused stops the stream, as it does on
 * that thread. Before that the submit is posted, as any other thread's. */
static int pp__xs_submit(pp_pool *pool, const char *task, const pp_input *in,
                         pp__xslot *slot) {
  pp__xs_here h;
  int broken;

  uv_mutex_lock(&pool->x.mu);
  broken = pool->broken;
  uv_mutex_unlock(&pool->x.mu);
  if (!broken)
    return pp__x_submit(pool, task, in->data, in->len, pp__xs_cb, slot, NULL);
  h.task = task;
  h.in = in;
  h.slot = slot;
  return pp__x_job(pool, pp__xs_submit_job, &h, PP_ECLOSED);
}

/* Runs the items next() gives, each(): the outcomes. On return every item taken has
 * been delivered. *taken: how many; *stop_err: the submit error that stopped it. */
static int pp__xs_run(pp_pool *pool, const char *task, pp_next_fn next, pp_each_fn each,
                      void *user, int ordered, size_t *taken_out, int *stop_err) {
  pp__xstream s;
  size_t taken = 0, delivered = 0, i;
  int stop = 0, next_err = 0, fail = 0, err = 0;
  size_t fail_index = 0;

  memset(&s, 0, sizeof(s));
  *stop_err = 0;
  s.ordered = ordered;
  s.window = (size_t) pool->nworkers * 64;
  if (s.window < 64)
    s.window = 64;
  if (s.window > 65536)
    s.window = 65536;
  s.slots = (pp__xslot *) calloc(s.window, sizeof(*s.slots));
  s.free_slots = (size_t *) malloc(s.window * sizeof(size_t));
  s.done_q = (size_t *) malloc(s.window * sizeof(size_t));
  if (s.slots == NULL || s.free_slots == NULL || s.done_q == NULL) {
    err = PP_ENOMEM;
    goto out;
  }
  if (uv_mutex_init(&s.mu) != 0) {
    err = PP_ENOMEM;
    goto out;
  }
  if (uv_cond_init(&s.cond) != 0) {
    uv_mutex_destroy(&s.mu);
    err = PP_ENOMEM;
    goto out;
  }
  for (i = 0; i < s.window; i++) {
    s.slots[i].s = &s;
    s.free_slots[i] = s.window - 1 - i;
  }
  s.nfree = s.window;

  for (;;) {
    size_t batch[64], nb = 0;

    while (!stop && taken - delivered < s.window) {
      pp_input in;
      pp__xslot *slot;
      int k = next(user, &in);
      if (k <= 0) {
        next_err = k;
        stop = 1;
        break;
      }
      slot = ordered ? &s.slots[taken % s.window] : &s.slots[s.free_slots[--s.nfree]];
      slot->index = taken++;
      slot->done = 0;
      if (in.data == NULL && in.len > 0) {
        pp__xs_fail(&s, slot, task, PP_EINVAL, "its input has data NULL and len > 0");
        continue;
      }
      err = pp__xs_submit(pool, task, &in, slot);
      if (err == PP_E2BIG) {
        pp__xs_fail(&s, slot, task, err, "its input is over max_message_bytes");
      } else if (err != 0) {
        /* The pool takes no more: this item fails with why, and no more are taken. */
        pp__xs_fail(&s, slot, task, err, pp_strerror(err));
        *stop_err = err;
        stop = 1;
      }
      err = 0;
    }
    if (stop && delivered == taken)
      break;
    uv_mutex_lock(&s.mu);
    if (ordered) {
      while (!s.slots[delivered % s.window].done)
        uv_cond_wait(&s.cond, &s.mu);
      for (i = delivered; i < taken && nb < 64 && s.slots[i % s.window].done; i++)
        batch[nb++] = i % s.window;
    } else {
      while (s.dq_len == 0)
        uv_cond_wait(&s.cond, &s.mu);
      while (s.dq_len > 0 && nb < 64) {
        batch[nb++] = s.done_q[s.dq_head];
        s.dq_head = (s.dq_head + 1) % s.window;
        s.dq_len--;
      }
    }
    uv_mutex_unlock(&s.mu);
    /* A slot that is done is this thread's alone until it is taken again. */
    for (i = 0; i < nb; i++) {
      pp__xslot *slot = &s.slots[batch[i]];
      if (slot->r.status != 0 && (fail == 0 || slot->index < fail_index)) {
        fail = slot->r.status;
        fail_index = slot->index;
      }
      each(user, slot->index, &slot->r);
      pp_result_free(&slot->r);
      if (!ordered)
        s.free_slots[s.nfree++] = batch[i];
      delivered++;
    }
  }
  uv_cond_destroy(&s.cond);
  uv_mutex_destroy(&s.mu);
  err = next_err != 0 ? next_err : fail;

out:
  free(s.slots);
  free(s.free_slots);
  free(s.done_q);
  *taken_out = taken;
  return err;
}

/* Checks what pp_map_stream checks before it calls next(), from any thread. */
static int pp__xs_check(pp_pool *pool, const char *task) {
  uint32_t index;
  int closed;

  uv_mutex_lock(&pool->x.mu);
  closed = pool->x.closed || pool->x.gone;
  uv_mutex_unlock(&pool->x.mu);
  if (closed)
    return PP_ECLOSED;
  return pp__task_check(pool, task, 0, &index);
}

int pp__x_map_stream(pp_pool *pool, const char *task, pp_next_fn next, pp_each_fn each,
                     void *user, unsigned flags) {
  size_t taken;
  int stop_err, err;

  err = pp__xs_check(pool, task);
  if (err != 0)
    return err;
  return pp__xs_run(pool, task, next, each, user, (flags & PP_MAP_UNORDERED) == 0, &taken,
                    &stop_err);
}

typedef struct pp__xmap {
  const pp_input *args;
  pp_result *out;
  size_t n, i;
} pp__xmap;

static int pp__xmap_next(void *user, pp_input *in) {
  pp__xmap *m = (pp__xmap *) user;

  if (m->i == m->n)
    return 0;
  *in = m->args[m->i++];
  return 1;
}

static void pp__xmap_each(void *user, size_t index, pp_result *r) {
  pp__xmap *m = (pp__xmap *) user;

  m->out[index] = *r;
  m->out[index].id = r->id;
  r->data = NULL;
  r->message = NULL;
}

int pp__x_map(pp_pool *pool, const char *task, size_t n, const pp_input *args,
              pp_result *out) {
  pp__xmap m;
  size_t taken, i;
  int stop_err, err;

  memset(out, 0, n * sizeof(*out));
  m.args = args;
  m.out = out;
  m.n = n;
  m.i = 0;
  err = pp__xs_check(pool, task);
  if (err == 0)
    err = pp__xs_run(pool, task, pp__xmap_next, pp__xmap_each, &m, 0, &taken, &stop_err);
  else
    taken = 0, stop_err = err;
  if (err == PP_ENOMEM && taken == 0)
    return err;
  for (i = taken; i < n; i++)
    pp__submit_error(pool, task, stop_err, &out[i]);
  for (i = 0; i < n; i++)
    if (out[i].status != 0)
      return out[i].status;
  return 0;
}
