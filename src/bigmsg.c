/* The shared-memory transport, the pool's side (bigmsg.h). */
#include "bigmsg.h"

#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "bufcache.h"
#include "dispatch.h"
#include "shm.h"

/* Segments are made in whole mebibytes, so that a slightly larger message next time
 * still fits the one made for the last. */
#define PP__SHM_GRAIN ((size_t) 1 << 20)

/* One of the pool's segments for a worker: an argument's, or a result's. */
typedef struct pp__pseg {
  pp_shm *shm;
  size_t size;
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
  pp__warn_once(&warned, "could not make a shared-memory segment of %lu bytes for a large "
                "message: %s (%s); the pool sends its large messages over the workers' "
                "channels from now on (is /dev/shm full or small? see shm_max_bytes)",
                (unsigned long) size, pp_strerror(err), pp_errname(err));
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

/* Makes segment g of need bytes, within the pool's room; 0 when there is none. */
static int pp__bigmsg_make(pp_pool *pool, pp__pseg *g, size_t need) {
  int err;

  if (pool->shm_bytes - g->size + need > pool->shm_max)
    return 0;
  if (g->shm != NULL) {
    pp_shm_close(g->shm);
    pool->shm_bytes -= g->size;
    g->shm = NULL;
    g->size = 0;
  }
  err = pp_shm_create(&g->shm, need);
  if (err != 0) {
    pp__bigmsg_give_up(pool, need, err);
    return 0;
  }
  g->size = need;
  pool->shm_bytes += need;
  return 1;
}

static size_t pp__bigmsg_ref(uint8_t *ref, uint32_t slot, const pp__pseg *g, size_t len) {
  pp__shm_task st;
  pp_shm_ref r;

  pp_shm_ref_get(g->shm, &r);
  st.slot = slot;
  st.size = g->size;
  st.len = len;
  memcpy(st.name, r.name, strlen(r.name) + 1);
  return pp__shm_task_encode(ref, &st);
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
    if (s->shm != NULL && s->task == NULL && s->size >= t->len &&
        (g == NULL || s->size < g->size))
      g = s;
  }
  if (g == NULL) {
    size_t need = pp__round_grain(t->len);
    for (i = 0; i < PP__SHM_SLOTS && g == NULL; i++)
      if (b->arg[i].shm == NULL && pool->shm_bytes + need <= pool->shm_max)
        g = &b->arg[i];
    for (i = 0; i < PP__SHM_SLOTS; i++)
      if (b->arg[i].shm != NULL && b->arg[i].task == NULL &&
          (g == NULL || (g->shm != NULL && b->arg[i].size < g->size)))
        g = &b->arg[i];
    if (g == NULL || !pp__bigmsg_make(pool, g, need))
      return 0;
  }
  memcpy(pp_shm_data(g->shm), t->arg, t->len);
  g->task = t;
  return pp__bigmsg_ref(ref, (uint32_t) (g - b->arg), g, t->len);
}

void pp__bigmsg_offer(pp__worker *w, size_t len) {
  pp_pool *pool = w->pool;
  struct pp__pbig *b = w->big;
  uint8_t frame[PP__HDR_SIZE + PP__SHM_TASK_FIXED + PP__SHM_NAME_MAX];
  size_t need, n, i;

  if (b == NULL || pool->shm_off || len < pool->shm_threshold || w->state != PP__W_READY)
    return;
  /* Slots are only ever added, never made anew: a worker may be writing in any one it
   * has, at any time. */
  for (i = 0; i < PP__SHM_SLOTS && b->res[i].shm != NULL; i++)
    ;
  /* An eighth more, so that results that vary a little all fit. */
  need = PP__SHM_RESULT_HDR + len + len / 8;
  if (i == PP__SHM_SLOTS || need < len || !pp__bigmsg_make(pool, &b->res[i],
                                                           pp__round_grain(need)))
    return;
  n = pp__bigmsg_ref(frame + PP__HDR_SIZE, (uint32_t) i, &b->res[i], 0);
  pp__hdr_encode(frame, PP__F_SHM_OFFER, 0, 0, (uint32_t) n);
  pp__wbatch_send(w, frame, PP__HDR_SIZE + n);
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
      if (w->big->arg[i].task == t && sr.size == w->big->arg[i].size &&
          sr.off + sr.len <= t->len)
        src = (const uint8_t *) pp_shm_data(w->big->arg[i].shm) + sr.off;
    if (src == NULL) {
      *why = "a result in its argument's shared memory, out of the argument's bounds";
      return PP_EPROTO;
    }
  } else {
    pp__pseg *g = &w->big->res[sr.where - 1];
    if (g->shm == NULL || g->size != sr.size) {
      *why = "a result in a shared-memory segment the pool did not offer";
      return PP_EPROTO;
    }
    busy = (uint8_t *) pp_shm_data(g->shm);
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

void pp__bigmsg_unname(pp__worker *w) {
  pp_shm_ref r;
  uint32_t i;

  for (i = 0; w->big != NULL && i < PP__SHM_SLOTS; i++) {
    if (w->big->arg[i].shm == NULL)
      continue;
    pp_shm_ref_get(w->big->arg[i].shm, &r);
    pp__shm_os_unlink(r.name);
  }
}

void pp__bigmsg_worker_free(pp__worker *w) {
  struct pp__pbig *b = w->big;
  uint32_t i;

  if (b == NULL)
    return;
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    if (b->arg[i].shm != NULL) {
      pp_shm_close(b->arg[i].shm);
      w->pool->shm_bytes -= b->arg[i].size;
    }
    if (b->res[i].shm != NULL) {
      pp_shm_close(b->res[i].shm);
      w->pool->shm_bytes -= b->res[i].size;
    }
  }
  free(b);
  w->big = NULL;
}
