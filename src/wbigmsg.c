/* The shared-memory transport, the worker's side (bigmsg.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "bigmsg.h"
#include "shm.h"

/* One of the pool's segments for this worker, as it maps it. */
typedef struct pp__warg {
  pp_shm *shm;
  size_t size;
  char name[PP__SHM_NAME_MAX + 1];
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

/* Maps the segment ref names into a, unless a holds it already. */
static int pp__wbig_map(pp__warg *a, const pp__shm_task *ref, char *why, size_t why_size) {
  pp_shm_ref r;
  int err;

  if ((uint64_t) (size_t) ref->size != ref->size) {
    snprintf(why, why_size, "a segment of %llu bytes is more than this process can map",
             (unsigned long long) ref->size);
    return UV_ENOMEM;
  }
  if (a->shm != NULL && a->size == ref->size && strcmp(a->name, ref->name) == 0)
    return 0;
  pp_shm_close(a->shm);
  a->shm = NULL;
  memset(&r, 0, sizeof(r));
  r.size = ref->size;
  memcpy(r.name, ref->name, strlen(ref->name) + 1);
  err = pp_shm_open(&r, &a->shm);
  if (err != 0) {
    snprintf(why, why_size, "could not map the segment '%s' of %llu bytes: %s (%s)",
             ref->name, (unsigned long long) ref->size, pp_strerror(err), pp_errname(err));
    return err;
  }
  /* Only this worker maps it, and it stays mapped here while the pool reuses it: the name
   * is not needed any more, and gone it cannot outlive both processes. */
  pp__shm_os_unlink(ref->name);
  a->size = (size_t) ref->size;
  memcpy(a->name, ref->name, strlen(ref->name) + 1);
  return 0;
}

int pp__wbig_arg(pp__wbig *b, const pp__shm_task *ref, const uint8_t **data, char *why,
                 size_t why_size) {
  int err;

  if (b == NULL) {
    snprintf(why, why_size, "the pool sent an argument in shared memory without offering "
             "the transport");
    return PP_EPROTO;
  }
  err = pp__wbig_map(&b->arg[ref->slot], ref, why, why_size);
  if (err != 0)
    return err;
  b->cur = ref->slot;
  *data = (const uint8_t *) pp_shm_data(b->arg[ref->slot].shm);
  return 0;
}

int pp__wbig_offer(pp__wbig *b, const pp__shm_task *ref, char *why, size_t why_size) {
  if (b == NULL || ref->len != 0 || ref->size < PP__SHM_RESULT_HDR) {
    snprintf(why, why_size, "the pool offered a malformed result segment");
    return PP_EPROTO;
  }
  return pp__wbig_map(&b->res[ref->slot], ref, why, why_size);
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
    res->size = b->arg[b->cur].size;
    res->off = (uint64_t) (d - arg);
    res->len = len;
    return 0;
  }
  /* The smallest segment that holds it and that the pool has given back. */
  for (i = 0; i < PP__SHM_SLOTS; i++) {
    pp__warg *r = &b->res[i];
    if (r->shm != NULL && r->size - PP__SHM_RESULT_HDR >= len &&
        (pick < 0 || r->size < b->res[pick].size) &&
        pp__load_acquire((const uint8_t *) pp_shm_data(r->shm)) == 0)
      pick = i;
  }
  if (pick < 0)
    return -1;
  busy = (uint8_t *) pp_shm_data(b->res[pick].shm);
  pp__store_fence(busy, 1);
  memcpy(busy + PP__SHM_RESULT_HDR, data, len);
  res->where = (uint32_t) pick + 1;
  res->size = b->res[pick].size;
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
    pp_shm_close(b->res[i].shm);
  }
  free(b);
}
