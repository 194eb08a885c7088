/* libFuzzer target for everything that decodes bytes a worker (or, for INIT, the pool)
 * sent: the pool's stream reader, with the input cut into reads of varying sizes, and
 * the HELLO, INIT and batch payload decoders on every frame it yields. Anything but a clean
 * PP_EPROTO is a bug: a crash, a read out of bounds, a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/protocol.h"
#include "procpool.h"

static int on_frame(void *ctx, const pp__hdr *h, uint8_t *payload, int owned) {
  const char *why;
  pp__hello hello;
  pp__init init;
  pp__batch batch;
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
  if (owned)
    free(payload);
  return 0;
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
  return 0;
}
