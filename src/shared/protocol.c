#include "protocol.h"

#include <stdlib.h>
#include <string.h>

#include "../os.h"
#include "procpool.h"

void pp__put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
}

void pp__put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
  p[2] = (uint8_t) (v >> 16);
  p[3] = (uint8_t) (v >> 24);
}

void pp__put_u64(uint8_t *p, uint64_t v) {
  pp__put_u32(p, (uint32_t) v);
  pp__put_u32(p + 4, (uint32_t) (v >> 32));
}

uint16_t pp__get_u16(const uint8_t *p) { return (uint16_t) (p[0] | (p[1] << 8)); }

uint32_t pp__get_u32(const uint8_t *p) {
  return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) |
         ((uint32_t) p[3] << 24);
}

uint64_t pp__get_u64(const uint8_t *p) {
  return (uint64_t) pp__get_u32(p) | ((uint64_t) pp__get_u32(p + 4) << 32);
}

void pp__hdr_encode(uint8_t out[PP__HDR_SIZE], uint8_t type, uint16_t aux, uint64_t id,
                    uint32_t len) {
  pp__put_u32(out, len);
  out[4] = type;
  out[5] = 0;
  pp__put_u16(out + 6, aux);
  pp__put_u64(out + 8, id);
}

void pp__hdr_set_flags(uint8_t out[PP__HDR_SIZE], uint8_t flags) { out[5] = flags; }

void pp__hdr_decode(const uint8_t in[PP__HDR_SIZE], pp__hdr *h) {
  h->len = pp__get_u32(in);
  h->type = in[4];
  h->flags = in[5];
  h->aux = pp__get_u16(in + 6);
  h->id = pp__get_u64(in + 8);
}

int pp__hdr_check_from_worker(const pp__hdr *h, size_t max_message, const char **why) {
  size_t limit;

  if (h->flags != 0 && !(h->flags == PP__FL_SHM && h->type == PP__F_RESULT)) {
    *why = "a frame has unknown flags";
    return PP_EPROTO;
  }
  if (h->flags == PP__FL_SHM && (h->aux != PP__R_OK || h->len != PP__SHM_RESULT_SIZE)) {
    *why = "a result in shared memory of the wrong kind or length";
    return PP_EPROTO;
  }
  switch (h->type) {
    case PP__F_HELLO:
      if (h->aux > PP__HELLO_FAILED) {
        *why = "a hello of an unknown kind";
        return PP_EPROTO;
      }
      limit = h->aux == PP__HELLO_FAILED ? PP__MAX_ERRMSG
                                         : 12 + (size_t) PP__MAX_TASKS * (1 + PP__MAX_NAME);
      break;
    case PP__F_READY:
      limit = PP__MAX_ERRMSG;
      break;
    case PP__F_RESULT:
      /* An error message is far below any max_message the pool accepts, so one bound
       * serves both kinds; the kind is checked by the caller. */
      limit = max_message > PP__MAX_ERRMSG ? max_message : PP__MAX_ERRMSG;
      break;
    case PP__F_JOURNAL_FAILED:
      limit = 0;
      break;
    case PP__F_SHM_FAILED:
      limit = PP__MAX_ERRMSG;
      break;
    case PP__F_RETIRE:
      if (h->len != 8) {
        *why = "a retire frame of the wrong length";
        return PP_EPROTO;
      }
      limit = 8;
      break;
    case PP__F_BATCH_RESULT:
      /* A run of results, each within the limit, with their table. */
      limit = (max_message > PP__MAX_ERRMSG ? max_message : PP__MAX_ERRMSG) +
              PP__BATCH_SLACK;
      break;
    default:
      *why = "a frame has an unknown type";
      return PP_EPROTO;
  }
  if (h->len > limit) {
    *why = "a frame is longer than the limit for its type";
    return PP_EPROTO;
  }
  return 0;
}

size_t pp__hello_size(const char *const *names, size_t ntasks) {
  size_t n = 12;
  size_t i;

  for (i = 0; i < ntasks; i++)
    n += 1 + strlen(names[i]);
  return n;
}

void pp__hello_encode(uint8_t *out, uint32_t pid, const char *const *names, size_t ntasks) {
  size_t i;

  pp__put_u32(out, PP__PROTO_MAGIC);
  pp__put_u16(out + 4, PP__PROTO_VERSION);
  pp__put_u16(out + 6, (uint16_t) ntasks);
  pp__put_u32(out + 8, pid);
  out += 12;
  for (i = 0; i < ntasks; i++) {
    size_t n = strlen(names[i]);
    *out++ = (uint8_t) n;
    memcpy(out, names[i], n);
    out += n;
  }
}

int pp__hello_decode(const uint8_t *p, size_t len, pp__hello *out, const char **why) {
  size_t pos = 0;
  size_t i;
  const uint8_t *name;
  size_t nlen;

  if (len < 12) {
    *why = "the worker's hello is truncated";
    return PP_EPROTO;
  }
  if (pp__get_u32(p) != PP__PROTO_MAGIC) {
    *why = "the worker's hello has the wrong magic number (is it a procpool program?)";
    return PP_EPROTO;
  }
  out->version = pp__get_u16(p + 4);
  if (out->version != PP__PROTO_VERSION) {
    *why = "the worker speaks another protocol version (built with another procpool?)";
    return PP_EPROTO;
  }
  out->ntasks = pp__get_u16(p + 6);
  out->pid = pp__get_u32(p + 8);
  out->names = p + 12;
  out->names_len = len - 12;
  for (i = 0; i < out->ntasks; i++) {
    if (pp__hello_name(out, &pos, &name, &nlen) != 0 || nlen == 0) {
      *why = "the worker's hello has a truncated or empty task name";
      return PP_EPROTO;
    }
  }
  if (pos != out->names_len) {
    *why = "the worker's hello has bytes after its task names";
    return PP_EPROTO;
  }
  return 0;
}

int pp__hello_name(const pp__hello *h, size_t *pos, const uint8_t **name, size_t *nlen) {
  size_t n;

  if (*pos >= h->names_len)
    return PP_EPROTO;
  n = h->names[*pos];
  if (n > h->names_len - *pos - 1)
    return PP_EPROTO;
  *name = h->names + *pos + 1;
  *nlen = n;
  *pos += 1 + n;
  return 0;
}

int pp__init_decode(const uint8_t *p, size_t len, pp__init *out, const char **why) {
  unsigned flags;
  size_t nlen;

  *why = "the pool's init frame is truncated";
  if (len < PP__INIT_FIXED)
    return PP_EPROTO;
  out->version = pp__get_u16(p);
  if (out->version != PP__PROTO_VERSION) {
    *why = "the pool speaks another protocol version (a worker_executable built with "
           "another procpool?)";
    return PP_EPROTO;
  }
  flags = pp__get_u16(p + 2);
  if ((flags & ~(unsigned) (PP__INIT_MEMCAP | PP__INIT_SHM)) != 0) {
    *why = "the pool's init frame has unknown flags";
    return PP_EPROTO;
  }
  out->max_message = pp__get_u64(p + 4);
  out->max_memory = 0;
  out->shm_threshold = 0;
  /* The optional fields sit between max_message and the initializer's name: each one
   * read moves p and len on, so that the fixed part's offsets hold for what follows. */
  if (flags & PP__INIT_MEMCAP) {
    if (len < PP__INIT_FIXED + 8)
      return PP_EPROTO;
    out->max_memory = pp__get_u64(p + 12);
    p += 8;
    len -= 8;
  }
  if (flags & PP__INIT_SHM) {
    if (len < PP__INIT_FIXED + 8)
      return PP_EPROTO;
    out->shm_threshold = pp__get_u64(p + 12);
    if (out->shm_threshold == 0) {
      *why = "the pool's init frame has a malformed shared-memory transport";
      return PP_EPROTO;
    }
    p += 8;
    len -= 8;
  }
  nlen = p[12];
  if (nlen > len - PP__INIT_FIXED)
    return PP_EPROTO;
  out->initializer = nlen ? (const char *) p + PP__INIT_FIXED : NULL;
  out->initializer_len = nlen;
  out->initarg = p + PP__INIT_FIXED + nlen;
  out->initarg_len = len - PP__INIT_FIXED - nlen;
  return 0;
}

size_t pp__init_encode(uint8_t *out, const pp__init *in) {
  size_t size = PP__INIT_FIXED + in->initializer_len + in->initarg_len;
  unsigned flags = 0;

  if (in->max_memory != 0) {
    flags |= PP__INIT_MEMCAP;
    size += 8;
  }
  if (in->shm_threshold != 0) {
    flags |= PP__INIT_SHM;
    size += 8;
  }
  if (out == NULL)
    return size;
  pp__put_u16(out, PP__PROTO_VERSION);
  pp__put_u16(out + 2, (uint16_t) flags);
  pp__put_u64(out + 4, in->max_message);
  out += 12;
  if (flags & PP__INIT_MEMCAP) {
    pp__put_u64(out, in->max_memory);
    out += 8;
  }
  if (flags & PP__INIT_SHM) {
    pp__put_u64(out, in->shm_threshold);
    out += 8;
  }
  out[0] = (uint8_t) in->initializer_len;
  if (in->initializer_len > 0)
    memcpy(out + 1, in->initializer, in->initializer_len);
  if (in->initarg_len > 0)
    memcpy(out + 1 + in->initializer_len, in->initarg, in->initarg_len);
  return size;
}

int pp__shm_task_decode(const uint8_t *p, size_t len, pp__shm_task *out, const char **why) {
  if (len != PP__SHM_TASK_SIZE) {
    *why = "the pool sent a malformed shared-memory argument";
    return PP_EPROTO;
  }
  out->slot = pp__get_u32(p);
  out->size = pp__get_u64(p + 8);
  out->len = pp__get_u64(p + 16);
  out->token = pp__get_u64(p + PP__SHM_TASK_TOKEN);
  if (out->slot >= PP__SHM_SLOTS || pp__get_u32(p + 4) != 0 || out->len > out->size ||
      out->size == 0) {
    *why = "the pool sent a malformed shared-memory argument";
    return PP_EPROTO;
  }
  return 0;
}

void pp__shm_task_encode(uint8_t out[PP__SHM_TASK_SIZE], const pp__shm_task *in) {
  pp__put_u32(out, in->slot);
  pp__put_u32(out + 4, 0);
  pp__put_u64(out + 8, in->size);
  pp__put_u64(out + 16, in->len);
  pp__put_u64(out + PP__SHM_TASK_TOKEN, in->token);
}

int pp__shm_result_decode(const uint8_t *p, size_t len, pp__shm_result *out,
                          const char **why) {
  if (len != PP__SHM_RESULT_SIZE) {
    *why = "a result in shared memory of the wrong length";
    return PP_EPROTO;
  }
  out->where = pp__get_u32(p);
  out->size = pp__get_u64(p + 8);
  out->off = pp__get_u64(p + 16);
  out->len = pp__get_u64(p + 24);
  if (out->where > PP__SHM_SLOTS || pp__get_u32(p + 4) != 0 || out->off > out->size ||
      out->len > out->size - out->off ||
      (out->where > 0 && out->off < PP__SHM_RESULT_HDR)) {
    *why = "a result in shared memory out of its segment's bounds";
    return PP_EPROTO;
  }
  return 0;
}

void pp__shm_result_encode(uint8_t out[PP__SHM_RESULT_SIZE], const pp__shm_result *in) {
  pp__put_u32(out, in->where);
  pp__put_u32(out + 4, 0);
  pp__put_u64(out + 8, in->size);
  pp__put_u64(out + 16, in->off);
  pp__put_u64(out + 24, in->len);
}

int pp__rx_init(pp__rx *rx, size_t max_message) {
  memset(rx, 0, sizeof(*rx));
  rx->max_message = max_message;
  rx->buf = malloc(PP__RX_CAP);
  return rx->buf ? 0 : PP_ENOMEM;
}

void pp__rx_free(pp__rx *rx) {
  free(rx->buf);
  free(rx->big);
  rx->buf = rx->big = NULL;
  rx->len = 0;
}

void pp__rx_space(pp__rx *rx, uint8_t **base, size_t *len) {
  if (rx->big != NULL) {
    *base = rx->big + rx->big_got;
    *len = rx->big_len - rx->big_got;
  } else {
    *base = rx->buf + rx->len;
    *len = PP__RX_CAP - rx->len;
  }
}

int pp__rx_feed(pp__rx *rx, size_t n, pp__frame_cb cb, void *ctx, const char **why) {
  size_t off = 0;
  pp__hdr h;
  int r = 0;

  if (rx->big != NULL) {
    rx->big_got += n;
    if (rx->big_got < rx->big_len)
      return 0;
    pp__hdr_decode(rx->big_hdr, &h);
    {
      uint8_t *p = rx->big;
      rx->big = NULL;
      return cb(ctx, &h, p, 1);
    }
  }
  rx->len += n;
  while (rx->len - off >= PP__HDR_SIZE) {
    size_t have;
    pp__hdr_decode(rx->buf + off, &h);
    r = pp__hdr_check_from_worker(&h, rx->max_message, why);
    if (r != 0)
      break;
    have = rx->len - off - PP__HDR_SIZE;
    if (h.len > PP__RX_CAP - PP__HDR_SIZE) {
      /* Larger than the buffer can ever hold, so the rest of the buffer is all its own. */
      uint8_t *p = malloc(h.len);
      if (p == NULL) {
        r = PP_ENOMEM;
        break;
      }
      pp__os_advise_large(p, h.len);
      memcpy(rx->big_hdr, rx->buf + off, PP__HDR_SIZE);
      memcpy(p, rx->buf + off + PP__HDR_SIZE, have);
      off = rx->len;
      if (have == h.len) {
        r = cb(ctx, &h, p, 1);
        break;
      }
      rx->big = p;
      rx->big_len = h.len;
      rx->big_got = have;
      break;
    }
    if (have < h.len)
      break;
    off += PP__HDR_SIZE + h.len;
    r = cb(ctx, &h, rx->buf + off - h.len, 0);
    if (r != 0)
      break;
  }
  if (r != 0) {
    rx->len = 0;
    return r;
  }
  memmove(rx->buf, rx->buf + off, rx->len - off);
  rx->len -= off;
  return 0;
}

/* The fixed form (PP__BATCH_FIXED): a 16-byte head whose size word is at size_off and
 * whose other words after the count are zero, then the items, all of one size. */
static int pp__batch_fixed(const uint8_t *p, size_t len, size_t size_off, pp__batch *b,
                           const char **why) {
  size_t i;

  b->count &= ~PP__BATCH_FIXED;
  if (b->count == 0 || b->count > PP__BATCH_MAX || len < PP__BATCH_FIXED_HDR) {
    *why = "a fixed batch with a bad count";
    return PP_EPROTO;
  }
  for (i = size_off + 4; i < PP__BATCH_FIXED_HDR; i++)
    if (p[i] != 0) {
      *why = "a fixed batch whose padding is not zero";
      return PP_EPROTO;
    }
  b->size = pp__get_u32(p + size_off);
  b->table = NULL;
  b->data = p + PP__BATCH_FIXED_HDR;
  b->data_len = len - PP__BATCH_FIXED_HDR;
  if (b->data_len % b->count != 0 || b->data_len / b->count != b->size) {
    *why = "a fixed batch whose size does not add up";
    return PP_EPROTO;
  }
  return 0;
}

int pp__batch_decode(const uint8_t *p, size_t len, pp__batch *b, const char **why) {
  size_t i, total = 0;

  b->first = 0;
  b->size = 0;
  if (len >= 4 && (pp__get_u32(p) & PP__BATCH_FIXED) != 0) {
    b->count = pp__get_u32(p);
    return pp__batch_fixed(p, len, 4, b, why);
  }
  if (len < 4 || (b->count = pp__get_u32(p)) == 0 || b->count > PP__BATCH_MAX ||
      len - 4 < (size_t) b->count * 4) {
    *why = "a batch with a bad count";
    return PP_EPROTO;
  }
  b->table = p + 4;
  b->data = b->table + (size_t) b->count * 4;
  b->data_len = len - 4 - (size_t) b->count * 4;
  for (i = 0; i < b->count; i++)
    total += pp__get_u32(b->table + i * 4);
  if (total != b->data_len) {
    *why = "a batch whose lengths do not add up";
    return PP_EPROTO;
  }
  return 0;
}

int pp__batch_result_decode(const uint8_t *p, size_t len, pp__batch *b, const char **why) {
  size_t i, total = 0;

  if (len < 8) {
    *why = "a truncated batch result";
    return PP_EPROTO;
  }
  b->first = pp__get_u32(p);
  b->count = pp__get_u32(p + 4);
  b->size = 0;
  if ((b->count & PP__BATCH_FIXED) != 0)
    return pp__batch_fixed(p, len, 8, b, why);
  if (b->count == 0 || b->count > PP__BATCH_MAX || len - 8 < (size_t) b->count * 8) {
    *why = "a batch result with a bad count";
    return PP_EPROTO;
  }
  b->table = p + 8;
  b->data = b->table + (size_t) b->count * 8;
  b->data_len = len - 8 - (size_t) b->count * 8;
  for (i = 0; i < b->count; i++) {
    uint32_t kind = pp__get_u32(b->table + i * 8);
    uint32_t n = pp__get_u32(b->table + i * 8 + 4);
    if (kind > PP__R_TOOBIG || (kind != PP__R_OK && n > PP__MAX_ERRMSG)) {
      *why = "a batch result with an unknown kind or an oversize message";
      return PP_EPROTO;
    }
    total += n;
  }
  if (total != b->data_len) {
    *why = "a batch result whose lengths do not add up";
    return PP_EPROTO;
  }
  return 0;
}

int pp__journal_decode(const uint8_t *p, size_t len, uint64_t *size, uint64_t *token,
                       const char **why) {
  if (len != PP__JOURNAL_FRAME) {
    *why = "a journal frame of a bad length";
    return PP_EPROTO;
  }
  *size = pp__get_u64(p);
  *token = pp__get_u64(p + PP__JOURNAL_TOKEN);
  return 0;
}
