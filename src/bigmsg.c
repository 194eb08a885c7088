/* The shared-memory transport, the pool's side (bigmsg.h). */
#include "bigmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "bufcache.h"
#include "shm.h"

/* Segments are made in whole mebibytes, so that a slightly larger message next time
 * still fits the one made for the last. */
#define PP__SHM_GRAIN ((size_t) 1 << 20)

/* One of the pool's argument segments for a worker. */
typedef struct pp__pseg {
  pp_shm *shm;
  size_t size;
  const pp__task *task;    /* whose argument it holds, or NULL: free */
} pp__pseg;

/* The pool's view of one of the worker's result segments. */
typedef struct pp__rseg {
  pp_shm *shm;             /* mapped, or NULL */
  size_t size;
  uint32_t gen;            /* of the mapping */
  uint32_t next_gen;       /* the first generation the worker may have made unseen */
} pp__rseg;

struct pp__pbig {
  pp__pseg arg[PP__SHM_SLOTS];
  pp__rseg res[PP__SHM_SLOTS];
  char base[PP__SHM_NAME_MAX + 1];
};

void pp__bigmsg_result_name(char *out, const char *base, uint32_t slot, uint32_t gen) {
  char suffix[PP__SHM_SUFFIX_MAX + 1];
  size_t n = strlen(base);

  /* The base was made with room for the suffix (pp__shm_new_name). */
  snprintf(suffix, sizeof(suffix), "-%u-%x", (unsigned) (slot % 10), (unsigned) gen);
  memcpy(out, base, n);
  memcpy(out + n, suffix, strlen(suffix) + 1);
}

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
  struct pp__pbig *b;

  if (pool->shm_threshold == 0 || pool->shm_off)
    return;
  b = (struct pp__pbig *) calloc(1, sizeof(*b));
  if (b == NULL)
    return;
  if (pp__shm_new_name(b->base, PP__SHM_SUFFIX_MAX) != 0 ||
      strlen(b->base) > PP__SHM_BASE_MAX) {
    free(b);
    return;
  }
  w->big = b;
  in->shm_threshold = pool->shm_threshold;
  /* Half the pool's room for arguments, the other half shared among the workers'
   * results. */
  in->shm_budget = pool->shm_max / 2 / pool->nworkers;
  in->shm_base = b->base;
  in->shm_base_len = strlen(b->base);
}

static size_t pp__round_grain(size_t len) {
  size_t r = (len + PP__SHM_GRAIN - 1) & ~(PP__SHM_GRAIN - 1);

  return r >= len ? r : len;
}

size_t pp__bigmsg_arg(pp__worker *w, const pp__task *t, uint8_t *ref) {
  pp_pool *pool = w->pool;
  struct pp__pbig *b = w->big;
  pp__shm_task st;
  pp_shm_ref r;
  pp__pseg *g = NULL;
  size_t need, i;
  int err;

  if (b == NULL || pool->shm_off || t->nitems != 0 || t->len < pool->shm_threshold)
    return 0;
  /* A free segment large enough, the smallest; else an empty slot; else the smallest
   * free one, made anew larger. */
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    pp__pseg *s = &b->arg[i];
    if (s->shm != NULL && s->task == NULL && s->size >= t->len &&
        (g == NULL || s->size < g->size))
      g = s;
  }
  if (g == NULL) {
    need = pp__round_grain(t->len);
    for (i = 0; i < PP__SHM_SLOTS && g == NULL; i++)
      if (b->arg[i].shm == NULL)
        g = &b->arg[i];
    for (i = 0; i < PP__SHM_SLOTS && g == NULL; i++)
      if (b->arg[i].task == NULL)
        g = &b->arg[i];
    for (i = 0; i < PP__SHM_SLOTS; i++)
      if (g != NULL && b->arg[i].shm != NULL && b->arg[i].task == NULL &&
          b->arg[i].size < g->size)
        g = &b->arg[i];
    if (g == NULL || pool->shm_arg_bytes - g->size + need > pool->shm_max / 2)
      return 0;
    if (g->shm != NULL) {
      pp_shm_close(g->shm);
      pool->shm_arg_bytes -= g->size;
      g->shm = NULL;
      g->size = 0;
    }
    err = pp_shm_create(&g->shm, need);
    if (err != 0) {
      pp__bigmsg_give_up(pool, need, err);
      return 0;
    }
    g->size = need;
    pool->shm_arg_bytes += need;
  }
  memcpy(pp_shm_data(g->shm), t->arg, t->len);
  g->task = t;
  pp_shm_ref_get(g->shm, &r);
  st.slot = (uint32_t) (g - b->arg);
  st.size = g->size;
  st.len = t->len;
  memcpy(st.name, r.name, strlen(r.name) + 1);
  return pp__shm_task_encode(ref, &st);
}

void pp__bigmsg_task_done(pp__worker *w, const pp__task *t) {
  size_t i;

  if (w->big == NULL)
    return;
  for (i = 0; i < PP__SHM_SLOTS; i++)
    if (w->big->arg[i].task == t)
      w->big->arg[i].task = NULL;
}

/* Maps the worker's result segment of the frame, unless mapped already; its name goes
 * at once, the mapping keeps it. */
static int pp__bigmsg_map_result(pp__worker *w, const pp__shm_result *sr, pp__rseg **out,
                                 const char **why) {
  pp__rseg *r = &w->big->res[sr->where - 1];
  pp_shm_ref ref;
  int err;

  *out = r;
  if (r->shm != NULL && r->gen == sr->gen && r->size == sr->size)
    return 0;
  /* A generation the worker cannot have made: it makes the next only once the pool has
   * given back the last. */
  if (sr->gen < r->next_gen || (r->shm != NULL && sr->gen == r->gen)) {
    *why = "a result in a shared-memory segment of a stale generation";
    return PP_EPROTO;
  }
  if ((uint64_t) (size_t) sr->size != sr->size || sr->size < PP__SHM_RESULT_HDR) {
    *why = "a result in a shared-memory segment of an impossible size";
    return PP_EPROTO;
  }
  if (r->shm != NULL)
    pp_shm_close(r->shm);
  r->shm = NULL;
  memset(&ref, 0, sizeof(ref));
  ref.size = sr->size;
  pp__bigmsg_result_name(ref.name, w->big->base, sr->where - 1, sr->gen);
  r->next_gen = sr->gen + 1;
  err = pp_shm_open(&ref, &r->shm);
  pp__shm_unlink(ref.name);
  if (err != 0) {
    *why = "the worker's shared-memory segment could not be mapped";
    return err;
  }
  r->gen = sr->gen;
  r->size = (size_t) sr->size;
  return 0;
}

int pp__bigmsg_result(pp__worker *w, const pp__task *t, const uint8_t *p, size_t n,
                      void **data, size_t *len, const char **why) {
  pp_pool *pool = w->pool;
  pp__shm_result sr;
  pp__rseg *r = NULL;
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
    err = pp__bigmsg_map_result(w, &sr, &r, why);
    if (err != 0)
      return err;
    if (pp__load_acquire((const uint8_t *) pp_shm_data(r->shm)) != 1) {
      *why = "a result in a shared-memory segment that the worker did not mark as written";
      return PP_EPROTO;
    }
    src = (const uint8_t *) pp_shm_data(r->shm) + sr.off;
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
  if (r != NULL)
    pp__store_release((uint8_t *) pp_shm_data(r->shm), 0);
  return err;
}

void pp__bigmsg_worker_free(pp__worker *w) {
  struct pp__pbig *b = w->big;
  char name[PP__SHM_NAME_MAX + 1];
  uint32_t i;

  if (b == NULL)
    return;
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    if (b->arg[i].shm != NULL) {
      pp_shm_close(b->arg[i].shm);
      w->pool->shm_arg_bytes -= b->arg[i].size;
    }
    if (b->res[i].shm != NULL)
      pp_shm_close(b->res[i].shm);
    /* The one result segment of this slot whose name may still be there: the worker
     * makes a new generation only after the pool has mapped, unnamed and given back
     * the last. */
    pp__bigmsg_result_name(name, b->base, i, b->res[i].next_gen);
    pp__shm_unlink(name);
  }
  free(b);
  w->big = NULL;
}
