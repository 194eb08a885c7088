/* The shared-memory transport, the pool's side (bigmsg.h). */
#include "bigmsg.h"

#include <stdlib.h>
#include <string.h>

#include "../shared/atomics.h"
#include "bufcache.h"
#include "dispatch.h"
#include "../seg.h"

/* Segments are made in whole mebibytes, so that a slightly larger message next time
 * still fits the one made for the last. */
#define PP__SHM_GRAIN ((size_t) 1 << 20)

/* One of the pool's segments for a worker: an argument's, or a result's. */
typedef struct pp__pseg {
  pp__seg seg;             /* seg.data NULL: none in this slot */
  const pp__task *task;    /* arguments: whose it holds, or NULL: free */
} pp__pseg;

struct pp__pbig {
  pp__pseg arg[PP__SHM_SLOTS];
  pp__pseg res[PP__SHM_SLOTS];
};

/* After a segment could not be made: the pool's large messages go over the channel
 * from now on, rather than fail again, at a cost, for each one. */
static void pp__bigmsg_give_up(pp_pool *pool, size_t size, int err) {
  static int warned;

  pool->shm_off = 1;
  pp__warn_once(&warned, "could not make a shared-memory segment of %zu bytes for a large "
                "message: %s (%s); the pool sends its large messages over the workers' "
                "channels from now on (is /dev/shm full or small? see shm_max_bytes)",
                size, pp_strerror(err), pp_errname(err));
}

void pp__bigmsg_worker_init(pp__worker *w, pp__init *in) {
  pp_pool *pool = w->pool;

  if (pool->shm_threshold == 0 || pool->shm_off)
    return;
  w->big = (struct pp__pbig *) calloc(1, sizeof(*w->big));
  if (w->big != NULL)
    in->shm_threshold = pool->shm_threshold;
}

static size_t pp__round_grain(size_t len) {
  size_t r = (len + PP__SHM_GRAIN - 1) & ~(PP__SHM_GRAIN - 1);

  return r >= len ? r : len;
}

/* Makes segment g, slot `slot` of w's of that kind, anew with need bytes, within the
 * pool's room, and hands it to w (an SHM_OFFER frame, ahead of everything not yet
 * written). 0 when there is no room, or it could not be made or handed over now (then
 * the message goes over the channel). */
static int pp__bigmsg_make(pp__worker *w, pp__pseg *g, uint32_t slot, int kind,
                           size_t need) {
  pp_pool *pool = w->pool;
  uint8_t frame[PP__HDR_SIZE + PP__SHM_TASK_SIZE];
  pp__shm_task st;
  int err;

  if (pool->shm_bytes - g->seg.size + need > pool->shm_max)
    return 0;
  if (g->seg.data != NULL) {
    pool->shm_bytes -= g->seg.size;
    pp__seg_free(&g->seg);
  }
  err = pp__seg_create(&g->seg, need);
  if (err != 0) {
    pp__bigmsg_give_up(pool, need, err);
    return 0;
  }
  st.slot = slot;
  st.size = need;
  st.len = 0;
  st.token = 0;
  pp__hdr_encode(frame, PP__F_SHM_OFFER, (uint16_t) kind, 0, PP__SHM_TASK_SIZE);
  pp__shm_task_encode(frame + PP__HDR_SIZE, &st);
  if (pp__seg_give(w, &g->seg, frame, sizeof(frame), PP__HDR_SIZE + PP__SHM_TASK_TOKEN) != 0) {
    /* The worker got nothing: the slot stays empty, and is tried again next time. */
    pp__seg_free(&g->seg);
    return 0;
  }
  pool->shm_bytes += need;
  return 1;
}

static void pp__bigmsg_ref(uint8_t *ref, uint32_t slot, const pp__pseg *g, size_t len) {
  pp__shm_task st;

  st.slot = slot;
  st.size = g->seg.size;
  st.len = len;
  st.token = 0;
  pp__shm_task_encode(ref, &st);
}

size_t pp__bigmsg_arg(pp__worker *w, const pp__task *t, uint8_t *ref) {
  pp_pool *pool = w->pool;
  struct pp__pbig *b = w->big;
  pp__pseg *g = NULL;
  size_t i;

  if (b == NULL || pool->shm_off || t->nitems != 0 || t->len < pool->shm_threshold)
    return 0;
  /* A free segment large enough, the smallest; else a new one in an empty slot, if the
   * pool has room for it; else the smallest free one, made anew larger. */
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    pp__pseg *s = &b->arg[i];
    if (s->seg.data != NULL && s->task == NULL && s->seg.size >= t->len &&
        (g == NULL || s->seg.size < g->seg.size))
      g = s;
  }
  if (g == NULL) {
    size_t need = pp__round_grain(t->len);
    for (i = 0; i < PP__SHM_SLOTS && g == NULL; i++)
      if (b->arg[i].seg.data == NULL && pool->shm_bytes + need <= pool->shm_max)
        g = &b->arg[i];
    for (i = 0; i < PP__SHM_SLOTS; i++)
      if (b->arg[i].seg.data != NULL && b->arg[i].task == NULL &&
          (g == NULL || (g->seg.data != NULL && b->arg[i].seg.size < g->seg.size)))
        g = &b->arg[i];
    if (g == NULL || !pp__bigmsg_make(w, g, (uint32_t) (g - b->arg), PP__SEG_ARG, need))
      return 0;
  }
  memcpy(g->seg.data, t->arg, t->len);
  g->task = t;
  pp__bigmsg_ref(ref, (uint32_t) (g - b->arg), g, t->len);
  return PP__SHM_TASK_SIZE;
}

void pp__bigmsg_offer(pp__worker *w, size_t len) {
  pp_pool *pool = w->pool;
  struct pp__pbig *b = w->big;
  size_t need, i;

  if (b == NULL || pool->shm_off || len < pool->shm_threshold || w->state != PP__W_READY)
    return;
  /* Slots are only ever added, never made anew: a worker may be writing in any one it
   * has, at any time. */
  for (i = 0; i < PP__SHM_SLOTS && b->res[i].seg.data != NULL; i++)
    ;
  /* An eighth more, so that results that vary a little all fit. */
  need = PP__SHM_RESULT_HDR + len + len / 8;
  if (i == PP__SHM_SLOTS || need < len)
    return;
  pp__bigmsg_make(w, &b->res[i], (uint32_t) i, PP__SEG_RESULT, pp__round_grain(need));
}

void pp__bigmsg_task_done(pp__worker *w, const pp__task *t) {
  size_t i;

  if (w->big == NULL)
    return;
  for (i = 0; i < PP__SHM_SLOTS; i++)
    if (w->big->arg[i].task == t)
      w->big->arg[i].task = NULL;
}

int pp__bigmsg_result(pp__worker *w, const pp__task *t, const uint8_t *p, size_t n,
                      void **data, size_t *len, const char **why) {
  pp_pool *pool = w->pool;
  pp__shm_result sr;
  uint8_t *busy = NULL;
  const uint8_t *src = NULL;
  size_t i;
  int err;

  err = pp__shm_result_decode(p, n, &sr, why);
  if (err != 0)
    return err;
  if (w->big == NULL) {
    *why = "a result in shared memory, which the pool did not offer";
    return PP_EPROTO;
  }
  if (sr.len > pool->max_message) {
    *why = "a result in shared memory over max_message_bytes";
    return PP_EPROTO;
  }
  if (sr.where == 0) {
    /* The task replied with bytes of its own argument, which are still where the pool
     * put them. */
    for (i = 0; i < PP__SHM_SLOTS && src == NULL; i++)
      if (w->big->arg[i].task == t && sr.size == w->big->arg[i].seg.size &&
          sr.off + sr.len <= t->len)
        src = w->big->arg[i].seg.data + sr.off;
    if (src == NULL) {
      *why = "a result in its argument's shared memory, out of the argument's bounds";
      return PP_EPROTO;
    }
  } else {
    pp__pseg *g = &w->big->res[sr.where - 1];
    if (g->seg.data == NULL || g->seg.size != sr.size) {
      *why = "a result in a shared-memory segment the pool did not offer";
      return PP_EPROTO;
    }
    busy = g->seg.data;
    if (pp__load_acquire(busy) != 1) {
      *why = "a result in a shared-memory segment that the worker did not mark as written";
      return PP_EPROTO;
    }
    src = busy + sr.off;
  }
  if (data != NULL) {
    *len = (size_t) sr.len;
    *data = pp__bufcache_get(*len);
    if (*data == NULL) {
      *why = "no memory for the result";
      err = PP_ENOMEM;
    } else {
      memcpy(*data, src, *len);
    }
  }
  /* The worker may write the segment again from now on. */
  if (busy != NULL)
    pp__store_release(busy, 0);
  return err;
}

void pp__bigmsg_worker_free(pp__worker *w) {
  struct pp__pbig *b = w->big;
  uint32_t i;

  if (b == NULL)
    return;
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    w->pool->shm_bytes -= b->arg[i].seg.size + b->res[i].seg.size;
    pp__seg_free(&b->arg[i].seg);
    pp__seg_free(&b->res[i].seg);
  }
  free(b);
  w->big = NULL;
}
