/* The shared-memory transport, the worker's side (bigmsg.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "bigmsg.h"
#include "shm.h"

/* The pool's argument segment in one of its slots, as this worker maps it. */
typedef struct pp__warg {
  pp_shm *shm;
  size_t size;
  char name[PP__SHM_NAME_MAX + 1];
} pp__warg;

/* One of this worker's result segments. */
typedef struct pp__wres {
  pp_shm *shm;
  size_t size;
  uint32_t gen;            /* of shm; the next one made gets gen + 1 */
} pp__wres;

struct pp__wbig {
  size_t threshold;
  size_t budget;           /* the most bytes of result segments kept */
  size_t used;
  char base[PP__SHM_BASE_MAX + 1];
  pp__warg arg[PP__SHM_SLOTS];
  pp__wres res[PP__SHM_SLOTS];
  uint32_t cur;            /* the slot of the last argument mapped: the running task's */
};

pp__wbig *pp__wbig_new(const pp__init *init) {
  pp__wbig *b;

  if (init->shm_threshold == 0)
    return NULL;
  b = (pp__wbig *) calloc(1, sizeof(*b));
  if (b == NULL)
    return NULL;
  b->threshold = (size_t) init->shm_threshold == init->shm_threshold
                     ? (size_t) init->shm_threshold : (size_t) -1;
  b->budget = (size_t) init->shm_budget == init->shm_budget ? (size_t) init->shm_budget
                                                              : (size_t) -1;
  memcpy(b->base, init->shm_base, init->shm_base_len);
  b->base[init->shm_base_len] = '\0';
  return b;
}

size_t pp__wbig_threshold(const pp__wbig *b) { return b ? b->threshold : 0; }

int pp__wbig_arg(pp__wbig *b, const pp__shm_task *ref, const uint8_t **data, char *why,
                 size_t why_size) {
  pp__warg *a;
  pp_shm_ref r;
  int err;

  if (b == NULL) {
    snprintf(why, why_size, "the pool sent an argument in shared memory without offering "
             "the transport");
    return PP_EPROTO;
  }
  if ((uint64_t) (size_t) ref->size != ref->size) {
    snprintf(why, why_size, "a large argument's segment of %llu bytes is more than this "
             "process can map", (unsigned long long) ref->size);
    return UV_ENOMEM;
  }
  a = &b->arg[ref->slot];
  if (a->shm == NULL || a->size != ref->size || strcmp(a->name, ref->name) != 0) {
    pp_shm_close(a->shm);
    a->shm = NULL;
    memset(&r, 0, sizeof(r));
    r.size = ref->size;
    memcpy(r.name, ref->name, strlen(ref->name) + 1);
    err = pp_shm_open(&r, &a->shm);
    if (err != 0) {
      snprintf(why, why_size, "could not map the segment '%s' of %llu bytes: %s (%s)",
               ref->name, (unsigned long long) ref->size, pp_strerror(err),
               pp_errname(err));
      return err;
    }
    /* Only this worker maps it, and it stays mapped here while the pool reuses it: the
     * name is not needed any more, and gone it cannot outlive both processes. */
    pp__shm_unlink(ref->name);
    a->size = (size_t) ref->size;
    memcpy(a->name, ref->name, strlen(ref->name) + 1);
  }
  b->cur = ref->slot;
  *data = (const uint8_t *) pp_shm_data(a->shm);
  return 0;
}

/* A result segment that is free (the pool gave it back) and holds len bytes, else a slot
 * to make one in within the budget; -1 when there is neither. */
static int pp__wbig_pick(pp__wbig *b, size_t need) {
  int i, pick = -1;

  for (i = 0; i < PP__SHM_SLOTS; i++) {
    pp__wres *r = &b->res[i];
    if (r->shm != NULL && r->size >= need &&
        pp__load_acquire((const uint8_t *) pp_shm_data(r->shm)) == 0 &&
        (pick < 0 || r->size < b->res[pick].size))
      pick = i;
  }
  if (pick >= 0)
    return pick;
  for (i = 0; i < PP__SHM_SLOTS && pick < 0; i++)
    if (b->res[i].shm == NULL && b->used + need <= b->budget)
      pick = i;
  /* Made anew larger: the smallest free one whose room, with what the others hold, the
   * budget allows. */
  for (i = 0; i < PP__SHM_SLOTS && pick < 0; i++) {
    pp__wres *r = &b->res[i];
    if (r->shm != NULL && b->used - r->size + need <= b->budget &&
        pp__load_acquire((const uint8_t *) pp_shm_data(r->shm)) == 0)
      pick = i;
  }
  return pick;
}

int pp__wbig_reply(pp__wbig *b, const uint8_t *arg, size_t arg_len, const void *data,
                   size_t len, pp__shm_result *res) {
  const uint8_t *d = (const uint8_t *) data;
  char name[PP__SHM_NAME_MAX + 1];
  size_t need, grain = (size_t) 1 << 20;
  pp__wres *r;
  int k, err;

  if (b == NULL || len < b->threshold)
    return -1;
  if (arg != NULL && d >= arg && len <= arg_len && (size_t) (d - arg) <= arg_len - len) {
    res->where = 0;
    res->gen = 0;
    res->size = b->arg[b->cur].size;
    res->off = (uint64_t) (d - arg);
    res->len = len;
    return 0;
  }
  need = PP__SHM_RESULT_HDR + len;
  if (need < len)
    return -1;
  need = (need + grain - 1) & ~(grain - 1);
  k = pp__wbig_pick(b, need);
  if (k < 0)
    return -1;
  r = &b->res[k];
  if (r->shm == NULL || r->size < need) {
    uint32_t gen = r->shm != NULL ? r->gen + 1 : r->gen;
    if (r->shm != NULL) {
      /* The pool removed its name when it mapped it; gone from here too, the memory
       * goes once the pool lets go of its mapping. */
      pp_shm_close(r->shm);
      b->used -= r->size;
      r->shm = NULL;
      /* Taken even if the making fails: the pool has seen the last one's number, and
       * takes no result of a generation it has seen before. */
      r->gen = gen;
    }
    pp__bigmsg_result_name(name, b->base, (uint32_t) k, gen);
    err = pp__shm_create_named(name, need, &r->shm);
    if (err != 0)
      return -1;
    r->size = need;
    r->gen = gen;
    b->used += need;
  }
  pp__store_fence((uint8_t *) pp_shm_data(r->shm), 1);
  memcpy((uint8_t *) pp_shm_data(r->shm) + PP__SHM_RESULT_HDR, data, len);
  res->where = (uint32_t) k + 1;
  res->gen = r->gen;
  res->size = r->size;
  res->off = PP__SHM_RESULT_HDR;
  res->len = len;
  return 0;
}

void pp__wbig_unreply(pp__wbig *b, const pp__shm_result *res) {
  if (b != NULL && res->where > 0 && b->res[res->where - 1].shm != NULL)
    pp__store_release((uint8_t *) pp_shm_data(b->res[res->where - 1].shm), 0);
}

void pp__wbig_free(pp__wbig *b) {
  int i;

  if (b == NULL)
    return;
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    pp_shm_close(b->arg[i].shm);
    /* The creator's close removes the name, if the pool has not yet. */
    pp_shm_close(b->res[i].shm);
  }
  free(b);
}
