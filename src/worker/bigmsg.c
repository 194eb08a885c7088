/* The shared-memory transport, the worker's side (bigmsg.h; the pool's is
 * pool/bigmsg.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../shared/atomics.h"
#include "bigmsg.h"
#include "../seg.h"

/* One of the pool's segments for this worker, as it maps it. */
typedef struct pp__warg {
  pp__seg seg;             /* seg.data NULL: none */
  int err;                 /* why the last one offered for the slot could not be mapped */
} pp__warg;

struct pp__wbig {
  size_t threshold;
  pp__warg arg[PP__SHM_SLOTS];
  pp__warg res[PP__SHM_SLOTS];
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
  return b;
}

int pp__wbig_arg(pp__wbig *b, const pp__shm_task *ref, const uint8_t **data, char *why,
                 size_t why_size) {
  pp__warg *a;

  if (b == NULL) {
    snprintf(why, why_size, "the pool sent an argument in shared memory without offering "
             "the transport");
    return PP_EPROTO;
  }
  a = &b->arg[ref->slot];
  if (a->seg.data == NULL && a->err != 0) {
    snprintf(why, why_size, "could not map the segment of argument slot %u: %s (%s)",
             (unsigned) ref->slot, pp_strerror(a->err), pp_errname(a->err));
    return a->err;
  }
  if (a->seg.data == NULL || a->seg.size != ref->size) {
    snprintf(why, why_size, "the pool sent an argument in a segment it did not hand over");
    return PP_EPROTO;
  }
  b->cur = ref->slot;
  *data = a->seg.data;
  return 0;
}

int pp__wbig_offer(pp__wbig *b, pp__chan *chan, int kind, const pp__shm_task *ref,
                   char *why, size_t why_size) {
  pp__warg *a;
  int err;

  if (b == NULL || ref->len != 0 || (kind != PP__SEG_ARG && kind != PP__SEG_RESULT) ||
      (kind == PP__SEG_RESULT && ref->size < PP__SHM_RESULT_HDR)) {
    snprintf(why, why_size, "the pool offered a malformed segment");
    return PP_EPROTO;
  }
  a = kind == PP__SEG_ARG ? &b->arg[ref->slot] : &b->res[ref->slot];
  pp__seg_free(&a->seg);
  a->err = 0;
  if ((uint64_t) (size_t) ref->size != ref->size)
    err = UV_ENOMEM;
  else
    err = pp__seg_take(chan, ref->token, (size_t) ref->size, &a->seg);
  if (err == PP_EPROTO) {
    snprintf(why, why_size, "the pool offered a segment of %llu bytes without one that "
             "large", (unsigned long long) ref->size);
    return err;
  }
  if (err != 0) {
    a->err = err;
    snprintf(why, why_size, "could not map a segment of %llu bytes: %s (%s)",
             (unsigned long long) ref->size, pp_strerror(err), pp_errname(err));
  }
  return err;
}

int pp__wbig_reply(pp__wbig *b, const uint8_t *arg, size_t arg_len, const void *data,
                   size_t len, pp__shm_result *res) {
  const uint8_t *d = (const uint8_t *) data;
  uint8_t *busy;
  int i, pick = -1;

  if (b == NULL || len < b->threshold)
    return -1;
  if (arg != NULL && d >= arg && len <= arg_len && (size_t) (d - arg) <= arg_len - len) {
    res->where = 0;
    res->size = b->arg[b->cur].seg.size;
    res->off = (uint64_t) (d - arg);
    res->len = len;
    return 0;
  }
  /* The smallest segment that holds it and that the pool has given back. */
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    pp__warg *r = &b->res[i];
    if (r->seg.data != NULL && r->seg.size - PP__SHM_RESULT_HDR >= len &&
        (pick < 0 || r->seg.size < b->res[pick].seg.size) &&
        pp__load_acquire(r->seg.data) == 0)
      pick = i;
  }
  if (pick < 0)
    return -1;
  busy = b->res[pick].seg.data;
  pp__store_fence(busy, 1);
  memcpy(busy + PP__SHM_RESULT_HDR, data, len);
  res->where = (uint32_t) pick + 1;
  res->size = b->res[pick].seg.size;
  res->off = PP__SHM_RESULT_HDR;
  res->len = len;
  return 0;
}

void pp__wbig_unreply(pp__wbig *b, const pp__shm_result *res) {
  if (b != NULL && res->where > 0 && b->res[res->where - 1].seg.data != NULL)
    pp__store_release(b->res[res->where - 1].seg.data, 0);
}

void pp__wbig_free(pp__wbig *b) {
  int i;

  if (b == NULL)
    return;
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    pp__seg_free(&b->arg[i].seg);
    pp__seg_free(&b->res[i].seg);
  }
  free(b);
}
