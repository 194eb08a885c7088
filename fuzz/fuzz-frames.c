/* libFuzzer target for everything that decodes bytes a worker (or, for INIT and JOURNAL,
 * the pool) sent: the pool's stream reader, with the input cut into reads of varying
 * sizes, and the HELLO, INIT, JOURNAL and batch payload decoders on every frame it yields;
 * and the pool's reader of a results journal, on the input as a journal. Anything but a
 * clean PP_EPROTO is a bug: a crash, a read out of bounds, a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/journal.h"
#include "../src/protocol.h"
#include "procpool.h"

static int on_frame(void *ctx, const pp__hdr *h, uint8_t *payload, int owned) {
  const char *why;
  pp__hello hello;
  pp__init init;
  pp__batch batch;
  pp_shm_ref ref;
  size_t pos = 0;
  const uint8_t *name;
  size_t nlen;

  (void) ctx;
  if (pp__hello_decode(payload, h->len, &hello, &why) == 0)
    while (pp__hello_name(&hello, &pos, &name, &nlen) == 0)
      ;
  pp__init_decode(payload, h->len, &init, &why);
  pp__batch_decode(payload, h->len, &batch, &why);
  pp__batch_result_decode(payload, h->len, &batch, &why);
  pp__journal_decode(payload, h->len, &ref, &why);
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
    size_t i, total = 0;
    for (i = 0; i < b.count; i++)
      total += pp__get_u32(b.table + i * 8 + 4);
    if (total != b.data_len || b.first != from)
      abort();
  }
  free(out);
  free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pp__rx rx;
  const char *why;
  size_t chunk, off = 0;

  if (size < 2)
    return 0;
  /* The first bytes pick the pool's limit and the size of each read. */
  chunk = 1 + data[0] * 97u;
  if (pp__rx_init(&rx, data[1] % 2 ? 1 << 20 : 64) != 0)
    return 0;
  data += 2;
  size -= 2;
  while (off < size) {
    uint8_t *base;
    size_t room, n;
    pp__rx_space(&rx, &base, &room);
    n = size - off < chunk ? size - off : chunk;
    if (n > room)
      n = room;
    memcpy(base, data + off, n);
    off += n;
    if (pp__rx_feed(&rx, n, on_frame, NULL, &why) != 0)
      break;
  }
  pp__rx_free(&rx);
  journal_input(data, size);
  return 0;
}
