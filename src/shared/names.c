#include "names.h"

#include <stdlib.h>
#include <string.h>

#include "procpool.h"

/* FNV-1a: task names are short, so a byte at a time is as fast as anything, and it mixes
 * names that differ only in a trailing digit well enough for linear probing. */
static uint32_t pp__names_hash(const char *s, size_t len) {
  uint32_t h = 2166136261u;
  size_t i;

  for (i = 0; i < len; i++) {
    h ^= (unsigned char) s[i];
    h *= 16777619u;
  }
  return h;
}

/* The slot that holds the name, or the empty slot where it would go. */
static size_t pp__names_probe(const pp__names *ix, const char *name, size_t len,
                              uint32_t hash) {
  size_t i;

  for (i = hash & ix->mask; ix->slots[i].index != 0; i = (i + 1) & ix->mask) {
    const pp__names_slot *s = &ix->slots[i];
    /* The stored length comes first: memcmp must not read past a shorter name. */
    if (s->hash == hash && s->len == len && memcmp(ix->names[s->index - 1], name, len) == 0)
      break;
  }
  return i;
}

int pp__names_init(pp__names *ix, const char *const *names, size_t n, size_t *dup_first,
                   size_t *dup_second) {
  size_t cap = 16, i;

  ix->names = names;
  ix->slots = NULL;
  ix->mask = 0;
  if (n == 0)
    return 0;
  if (n >= UINT32_MAX / 2)
    return PP_EINVAL;
  /* Half full at most, so that a probe run stays a few slots long. */
  while (cap < n * 2)
    cap *= 2;
  ix->slots = calloc(cap, sizeof(*ix->slots));
  if (ix->slots == NULL)
    return PP_ENOMEM;
  ix->mask = cap - 1;
  for (i = 0; i < n; i++) {
    size_t len = strlen(names[i]);
    uint32_t hash;
    size_t at;

    if ((uint64_t) len > UINT32_MAX) {
      pp__names_free(ix);
      return PP_EINVAL;
    }
    hash = pp__names_hash(names[i], len);
    at = pp__names_probe(ix, names[i], len, hash);
    if (ix->slots[at].index != 0) {
      if (dup_first != NULL)
        *dup_first = ix->slots[at].index - 1;
      if (dup_second != NULL)
        *dup_second = i;
      pp__names_free(ix);
      return PP_EINVAL;
    }
    ix->slots[at].hash = hash;
    ix->slots[at].index = (uint32_t) i + 1;
    ix->slots[at].len = (uint32_t) len;
  }
  return 0;
}

int pp__names_find(const pp__names *ix, const char *name, size_t len, uint32_t *index) {
  uint32_t hash;
  size_t at;

  if (ix->slots == NULL || (uint64_t) len > UINT32_MAX)
    return PP_ENOTASK;
  hash = pp__names_hash(name, len);
  at = pp__names_probe(ix, name, len, hash);
  if (ix->slots[at].index == 0)
    return PP_ENOTASK;
  *index = ix->slots[at].index - 1;
  return 0;
}

void pp__names_free(pp__names *ix) {
  free(ix->slots);
  ix->slots = NULL;
  ix->mask = 0;
}
