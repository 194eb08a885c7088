#include "protocol.h"

#include <string.h>

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

void pp__hdr_decode(const uint8_t in[PP__HDR_SIZE], pp__hdr *h) {
  h->len = pp__get_u32(in);
  h->type = in[4];
  h->flags = in[5];
  h->aux = pp__get_u16(in + 6);
  h->id = pp__get_u64(in + 8);
}

int pp__hdr_check_from_worker(const pp__hdr *h, size_t max_message, const char **why) {
  size_t limit;

  if (h->flags != 0) {
    *why = "a frame has unknown flags";
    return PP_EPROTO;
  }
  switch (h->type) {
    case PP__F_HELLO:
      limit = 12 + (size_t) PP__MAX_TASKS * (1 + PP__MAX_NAME);
      break;
    case PP__F_READY:
      limit = PP__MAX_ERRMSG;
      break;
    case PP__F_RESULT:
      /* An error message is far below any max_message the pool accepts, so one bound
       * serves both kinds; the kind is checked by the caller. */
      limit = max_message > PP__MAX_ERRMSG ? max_message : PP__MAX_ERRMSG;
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
  size_t nlen;

  if (len < PP__INIT_FIXED) {
    *why = "the pool's init frame is truncated";
    return PP_EPROTO;
  }
  out->version = pp__get_u16(p);
  if (out->version != PP__PROTO_VERSION) {
    *why = "the pool speaks another protocol version (a worker_executable built with "
           "another procpool?)";
    return PP_EPROTO;
  }
  if (pp__get_u16(p + 2) != 0) {
    *why = "the pool's init frame has unknown flags";
    return PP_EPROTO;
  }
  out->max_message = pp__get_u64(p + 4);
  nlen = p[12];
  if (nlen > len - PP__INIT_FIXED) {
    *why = "the pool's init frame is truncated";
    return PP_EPROTO;
  }
  out->initializer = nlen ? (const char *) p + PP__INIT_FIXED : NULL;
  out->initializer_len = nlen;
  out->initarg = p + PP__INIT_FIXED + nlen;
  out->initarg_len = len - PP__INIT_FIXED - nlen;
  return 0;
}
