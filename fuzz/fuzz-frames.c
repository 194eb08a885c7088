/* libFuzzer target for everything the pool decodes from bytes a worker sent: the pool's
 * stream reader (pp__rx_feed), with the input cut into reads of varying sizes, and every
 * payload decoder on every frame it yields, as the pool reads each type (HELLO, READY,
 * RESULT, BATCH_RESULT) and also as every other type, so that each decoder sees every
 * shape of payload; and the pool's reader of a results journal (pp__journal_read), on the
 * input as a journal. Anything but a clean PP_EPROTO is a bug: a crash, a read out of
 * bounds, a leak, or a decoded value that breaks the decoder's promise (abort). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/shared/journal.h"
#include "../src/shared/protocol.h"
#include "procpool.h"

static volatile uint8_t sink;

/* Reads every byte, so that a length that overruns the frame is a read out of bounds. */
static void touch(const uint8_t *p, size_t n) {
  uint8_t x = 0;
  size_t i;

  for (i = 0; i < n; i++)
    x ^= p[i];
  sink = x;
}

/* A decoded batch (result) of the fixed form keeps its promise: count items of size
 * bytes are its data, exactly. */
static void check_fixed(const pp__batch *b) {
  if (b->count == 0 || b->count > PP__BATCH_MAX ||
      b->data_len != (size_t) b->count * b->size)
    abort();
  touch(b->data, b->data_len);
}

/* A decoded batch result keeps its promise: its items' lengths add up to its data, and
 * every item is inside it. */
static void check_batch_result(const pp__batch *b) {
  size_t i, total = 0;

  if (b->table == NULL) {
    check_fixed(b);
    return;
  }
  if (b->count == 0 || b->count > PP__BATCH_MAX)
    abort();
  for (i = 0; i < b->count; i++) {
    uint32_t kind = pp__get_u32(b->table + i * 8);
    uint32_t n = pp__get_u32(b->table + i * 8 + 4);
    if (kind > PP__R_TOOBIG || (kind != PP__R_OK && n > PP__MAX_ERRMSG))
      abort();
    if (n > b->data_len - total)
      abort();
    touch(b->data + total, n);
    total += n;
  }
  if (total != b->data_len)
    abort();
}

static void check_batch(const pp__batch *b) {
  size_t i, total = 0;

  if (b->table == NULL) {
    check_fixed(b);
    return;
  }
  if (b->count == 0 || b->count > PP__BATCH_MAX)
    abort();
  for (i = 0; i < b->count; i++) {
    uint32_t n = pp__get_u32(b->table + i * 4);
    if (n > b->data_len - total)
      abort();
    touch(b->data + total, n);
    total += n;
  }
  if (total != b->data_len)
    abort();
}

static int on_frame(void *ctx, const pp__hdr *h, uint8_t *payload, int owned) {
  const char *why;
  pp__hello hello;
  pp__init init;
  pp__batch batch;
  uint64_t jsize, token;
  pp__shm_result sr;
  size_t *frames = (size_t *) ctx;
  size_t max = 0;

  ++*frames;
  /* The reader checked the header already, as pp__hdr_check_from_worker does: the one
   * flag there is marks a RESULT of kind 0 whose bytes are in shared memory. */
  if (h->flags != 0 && !(h->flags == PP__FL_SHM && h->type == PP__F_RESULT &&
                         h->aux == PP__R_OK && h->len == PP__SHM_RESULT_SIZE))
    abort();
  touch(payload, h->len);
  if (pp__hello_decode(payload, h->len, &hello, &why) == 0) {
    size_t pos = 0, n = 0;
    const uint8_t *name;
    size_t nlen;
    while (pp__hello_name(&hello, &pos, &name, &nlen) == 0) {
      if (name < hello.names || name + nlen > hello.names + hello.names_len)
        abort();
      touch(name, nlen);
      n++;
    }
    if (pos > hello.names_len)
      abort();
    (void) n;
  }
  if (pp__init_decode(payload, h->len, &init, &why) == 0) {
    /* With the memory-cap flag, the cap's 8 bytes lie between the fixed part and the
     * name. */
    size_t cap = ((pp__get_u16(payload + 2) & PP__INIT_MEMCAP) ? 8 : 0) +
                 ((pp__get_u16(payload + 2) & PP__INIT_SHM) ? 8 : 0);
    if (init.initializer_len > PP__MAX_NAME ||
        init.initializer_len + init.initarg_len + PP__INIT_FIXED + cap != h->len)
      abort();
    if (init.initializer != NULL)
      touch((const uint8_t *) init.initializer, init.initializer_len);
    touch(init.initarg, init.initarg_len);
    max = (size_t) init.max_message;
  }
  if (pp__batch_decode(payload, h->len, &batch, &why) == 0)
    check_batch(&batch);
  if (pp__batch_result_decode(payload, h->len, &batch, &why) == 0)
    check_batch_result(&batch);
  if (pp__journal_decode(payload, h->len, &jsize, &token, &why) == 0 &&
      h->len != PP__JOURNAL_FRAME)
    abort();
  if (pp__shm_result_decode(payload, h->len, &sr, &why) == 0) {
    if (sr.where > PP__SHM_SLOTS || sr.off > sr.size || sr.len > sr.size - sr.off ||
        (sr.where > 0 && sr.off < PP__SHM_RESULT_HDR))
      abort();
  }
  (void) max;
  if (owned)
    free(payload);
  return 0;
}

/* The input as a worker's journal, in memory aligned as a mapping is; the batch's id is
 * the one the journal names, so that the reader goes past that check. */
static void journal_input(const uint8_t *data, size_t size) {
  const char *why;
  uint8_t *j, *out = NULL;
  pp__batch b;
  uint32_t from, nitems;

  if (size < PP__JOURNAL_HDR)
    return;
  j = malloc(size);
  if (j == NULL)
    return;
  memcpy(j, data, size);
  from = pp__get_u32(j + 20) % 8;
  nitems = pp__get_u32(j + 24);
  if (pp__journal_read(j, size, pp__get_u64(j + PP__JOURNAL_ID), from, nitems, &out, &b,
                       &why) == 0 && out != NULL) {
    check_batch_result(&b);
    if (b.first != from || b.count > nitems - from)
      abort();
  }
  free(out);
  free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t limits[4] = { 64, 4096, 40000, 1 << 20 };
  pp__rx rx;
  const char *why;
  size_t chunk, off = 0, frames = 0;
  int err = 0;

  if (size < 2)
    return 0;
  /* The first bytes pick the pool's limit and the size of each read. */
  chunk = 1 + data[0] * 97u;
  if (pp__rx_init(&rx, limits[data[1] % 4]) != 0)
    return 0;
  data += 2;
  size -= 2;
  while (off < size) {
    uint8_t *base;
    size_t room, n;
    pp__rx_space(&rx, &base, &room);
    if (room == 0)
      abort();
    n = size - off < chunk ? size - off : chunk;
    if (n > room)
      n = room;
    memcpy(base, data + off, n);
    off += n;
    err = pp__rx_feed(&rx, n, on_frame, &frames, &why);
    if (err != 0)
      break;
  }
  if (err != 0 && err != PP_EPROTO)
    abort();
  pp__rx_free(&rx);
  journal_input(data, size);
  return 0;
}
