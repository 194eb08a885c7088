/* The results journal's format, which both sides read: its layout, and the pure reader
 * of what a worker left in it (journal.h says why it exists and how it is laid out). The
 * pool's hooks are in pool/journal.c, the worker's writer in worker/journal.c. */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "atomics.h"

/* The header's count is the one word both sides use to agree on what is written: the
 * worker stores it after the results it counts (release), the pool loads it before it
 * reads them (acquire), so that whatever count a dead worker left covers only whole
 * results. Starting a run changes count, then (after a full fence) first and id, so that
 * no state the worker can die in pairs old results with a new first; and the pool checks,
 * after a full fence, that count, first and id did not change while it copied the
 * results out, in case something still writes. The state and done words take full
 * barriers both sides, so that a worker's done is seen before its state leaves the
 * task's number. The operations are in atomics.h. */

#define PP__JOURNAL_MAX ((size_t) 1 << 30)

int pp__journal_layout(size_t size, uint32_t *tcap, size_t *data_off) {
  size_t n;

  if (size < PP__JOURNAL_HDR + 16 || size > PP__JOURNAL_MAX)
    return PP_EINVAL;
  /* An entry and 8 bytes of result per item at the least; never more entries than a
   * batch has items. */
  n = (size - PP__JOURNAL_HDR) / 16;
  if (n > PP__BATCH_MAX)
    n = PP__BATCH_MAX;
  *tcap = (uint32_t) n;
  *data_off = PP__JOURNAL_HDR + n * 8;
  return 0;
}

int pp__journal_read(const uint8_t *journal, size_t size, uint64_t id, uint32_t from,
                     uint32_t nitems, uint8_t **out, pp__batch *b, const char **why) {
  uint32_t tcap, count, first, skip, nout, i;
  size_t data_off, dcap, total = 0, skipped = 0, len;
  uint8_t *p;

  *out = NULL;
  if (pp__journal_layout(size, &tcap, &data_off) != 0) {
    *why = "a journal of an impossible size";
    return PP_EPROTO;
  }
  dcap = size - data_off;
  /* Each word once, into a local: the worker may change it at any time, and what is
   * checked must be what is used. */
  count = pp__load_acquire(journal + PP__JOURNAL_COUNT);
  first = pp__load_acquire(journal + PP__JOURNAL_FIRST);
  if (count == 0)
    return 0;
  if (pp__load64(journal + PP__JOURNAL_ID) != id) {
    *why = "a journal of another batch";
    return PP_EPROTO;
  }
  if (count > tcap || first > nitems || count > nitems - first) {
    *why = "a journal whose counts are out of bounds";
    return PP_EPROTO;
  }
  /* Results between those filed and the journal's first were on the wire and are lost:
   * taking the later ones would file them under the wrong items. */
  if (first > from) {
    *why = "a journal that starts past the results filed";
    return PP_EPROTO;
  }
  if (count <= from - first)
    return 0;
  skip = from - first;
  nout = count - skip;
  /* The table is copied whole and checked in the copy; then the results it describes. */
  p = malloc(8 + (size_t) count * 8 + dcap);
  if (p == NULL) {
    *why = "no memory to read a journal";
    b->first = from;
    b->count = nout;
    return PP_ENOMEM;
  }
  memcpy(p + 8, journal + PP__JOURNAL_HDR, (size_t) count * 8);
  for (i = 0; i < count; i++) {
    uint32_t n = pp__get_u32(p + 8 + (size_t) i * 8 + 4);
    if (n > dcap - total) {
      free(p);
      *why = "a journal whose lengths overrun it";
      return PP_EPROTO;
    }
    total += n;
    if (i < skip)
      skipped += n;
  }
  memmove(p + 8, p + 8 + (size_t) skip * 8, (size_t) nout * 8);
  len = 8 + (size_t) nout * 8;
  memcpy(p + len, journal + data_off + skipped, total - skipped);
  len += total - skipped;
  pp__put_u32(p, from);
  pp__put_u32(p + 4, nout);
  if (pp__fence_load(journal + PP__JOURNAL_COUNT) != count ||
      pp__load_acquire(journal + PP__JOURNAL_FIRST) != first ||
      pp__load64(journal + PP__JOURNAL_ID) != id) {
    free(p);
    *why = "a journal that changed while it was read";
    return PP_EPROTO;
  }
  if (pp__batch_result_decode(p, len, b, why) != 0) {
    free(p);
    return PP_EPROTO;
  }
  *out = p;
  return 0;
}
