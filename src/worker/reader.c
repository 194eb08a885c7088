/* The worker's reader of the pool's frames (reader.h). */
#include <stdlib.h>
#include <string.h>

#include "../os.h"
#include "procpool.h"
#include "reader.h"

static int pp__reader_read(pp__reader *r, void *buf, size_t cap, size_t *got) {
  if (r->read != NULL)
    return r->read(r->read_ctx, buf, cap, got);
  return pp__chan_read(r->chan, buf, cap, got);
}

static int pp__reader_fill(pp__reader *r, size_t want) {
  while (r->end - r->off < want) {
    size_t got;
    int err;
    if (r->off > 0 && r->off == r->end)
      r->off = r->end = 0;
    if (PP__RX_CAP - r->off < want) {
      memmove(r->buf, r->buf + r->off, r->end - r->off);
      r->end -= r->off;
      r->off = 0;
    }
    err = pp__reader_read(r, r->buf + r->end, PP__RX_CAP - r->end, &got);
    if (err != 0)
      return err;
    r->end += got;
  }
  return 0;
}

int pp__reader_next(pp__reader *r, pp__hdr *h, const uint8_t **payload,
                    size_t limit, const char **why) {
  int err;

  free(r->big);
  r->big = NULL;
  err = pp__reader_fill(r, PP__HDR_SIZE);
  if (err != 0) {
    *why = "reading from the pool";
    return err;
  }
  pp__hdr_decode(r->buf + r->off, h);
  r->off += PP__HDR_SIZE;
  if ((h->flags != 0 && !(h->flags == PP__FL_SHM && h->type == PP__F_TASK)) ||
      h->len > limit) {
    *why = "the pool sent a frame with unknown flags or over the size limit";
    return PP_EPROTO;
  }
  if (h->len == 0) {
    *payload = NULL;
    return 0;
  }
  if (h->len <= PP__RX_CAP / 2) {
    err = pp__reader_fill(r, h->len);
    if (err != 0) {
      *why = "reading from the pool";
      return err;
    }
    if ((r->off % PP__ALIGN) == 0) {
      *payload = r->buf + r->off;
    } else {
      if (r->scratch == NULL) {
        r->scratch = malloc(PP__RX_CAP / 2);
        if (r->scratch == NULL) {
          *why = "allocating the reader's buffer";
          return PP_ENOMEM;
        }
      }
      memcpy(r->scratch, r->buf + r->off, h->len);
      *payload = r->scratch;
    }
    r->off += h->len;
    return 0;
  } else {
    size_t have = r->end - r->off;
    size_t got;
    r->big = malloc(h->len);
    if (r->big == NULL) {
      *why = "allocating a large argument";
      return PP_ENOMEM;
    }
    pp__os_advise_large(r->big, h->len);
    /* The buffer may hold the frames after this one too: take only this one's bytes. */
    if (have > h->len)
      have = h->len;
    memcpy(r->big, r->buf + r->off, have);
    r->off += have;
    while (have < h->len) {
      err = pp__reader_read(r, r->big + have, h->len - have, &got);
      if (err != 0) {
        *why = "reading from the pool";
        return err;
      }
      have += got;
    }
    *payload = r->big;
    return 0;
  }
}

