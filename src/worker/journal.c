/* The worker's side of the results journal: it maps the segment the pool gave and
 * records each result before the next item starts (journal.h; the ordering of the shared
 * words is explained in shared/journal.c). */
#include "journal.h"

#include <string.h>

#include "../shared/atomics.h"

int pp__jw_open(pp__jw *j, pp__chan *chan, uint64_t size, uint64_t token) {
  size_t data_off;
  uint32_t tcap;
  int err;

  pp__jw_close(j);
  if ((uint64_t) (size_t) size != size ||
      pp__journal_layout((size_t) size, &tcap, &data_off) != 0) {
    /* Taken, to be closed: what came with the frame is not to be kept. */
    pp__seg_take(chan, token, 0, &j->seg);
    return PP_EPROTO;
  }
  err = pp__seg_take(chan, token, (size_t) size, &j->seg);
  if (err != 0)
    return err;
  j->base = j->seg.data;
  j->table = j->base + PP__JOURNAL_HDR;
  j->data = j->base + data_off;
  j->tcap = tcap;
  j->dcap = (size_t) size - data_off;
  j->count = 0;
  j->used = 0;
  return 0;
}

void pp__jw_close(pp__jw *j) {
  pp__seg_free(&j->seg);
  memset(j, 0, sizeof(*j));
}

void pp__jw_begin(pp__jw *j, uint64_t id, uint32_t first) {
  /* The count first: the pool then never pairs old results with the new first and id. */
  pp__store_fence(j->base + PP__JOURNAL_COUNT, 0);
  pp__store_release(j->base + PP__JOURNAL_FIRST, first);
  pp__store64(j->base + PP__JOURNAL_ID, id);
  j->count = 0;
  j->used = 0;
  j->uniform = 1;
  j->same_left = 0;
}

uint32_t pp__jw_room_same(const pp__jw *j, size_t limit) {
  size_t room = j->tcap - j->count;

  /* As pp__jw_fits: room in the journal, and the run's results within limit. */
  if (j->usize > 0) {
    size_t by_data = (j->dcap - j->used) / j->usize;
    size_t by_limit = j->used < limit ? (limit - j->used) / j->usize : 0;
    if (by_data < room)
      room = by_data;
    if (by_limit < room)
      room = by_limit;
  }
  return (uint32_t) room;
}

/* pp__put_u32, here where it runs for every item of a batch: a call each would cost more
 * than the store. On a little-endian machine (the test folds away) the value is stored as
 * it lies, in one move; compilers do not always merge the bytes' stores into one. */
static void pp__jw_u32(uint8_t *p, uint32_t v) {
  const uint16_t probe = 1;

  if (*(const uint8_t *) &probe == 1) {
    memcpy(p, &v, sizeof(v));
    return;
  }
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
  p[2] = (uint8_t) (v >> 16);
  p[3] = (uint8_t) (v >> 24);
}

void pp__jw_add(pp__jw *j, uint32_t kind, const void *data, size_t n) {
  uint8_t *e = j->table + (size_t) j->count * 8;

  if (n > 0)
    memcpy(j->data + j->used, data, n);
  pp__jw_u32(e, kind);
  pp__jw_u32(e + 4, (uint32_t) n);
  if (j->count == 0) {
    j->usize = (uint32_t) n;
    memcpy(j->entry, e, 8);
  }
  if (kind != PP__R_OK || n != j->usize)
    j->uniform = 0;
  j->used += n;
  j->count++;
  pp__store_release(j->base + PP__JOURNAL_COUNT, j->count);
}

int pp__jw_start(pp__jw *j, uint64_t seq) {
  if (j->base == NULL)
    return 0;
  return pp__cas64(j->base + PP__JOURNAL_STATE, 0, seq) ? 0 : -1;
}

int pp__jw_finish(pp__jw *j, uint64_t seq) {
  if (j->base == NULL)
    return 0;
  pp__store64(j->base + PP__JOURNAL_DONE, seq);
  return pp__cas64(j->base + PP__JOURNAL_STATE, seq, 0) ? 0 : -1;
}
