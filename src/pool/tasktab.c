#include "tasktab.h"

#include <stdlib.h>

#include "procpool.h"

static size_t pp__tasktab_hash(uint64_t id) {
  /* Ids are sequential; a multiplicative mix spreads them over the high bits, which the
   * shift then brings down. */
  id *= 0x9E3779B97F4A7C15ull;
  return (size_t) (id ^ (id >> 32));
}

void pp__tasktab_init(pp__tasktab *t) {
  t->slots = NULL;
  t->mask = 0;
  t->count = 0;
}

void pp__tasktab_free(pp__tasktab *t) {
  free(t->slots);
  pp__tasktab_init(t);
}

static void pp__tasktab_insert(pp__tasktab_slot *slots, size_t mask, uint64_t id,
                               void *value) {
  size_t i = pp__tasktab_hash(id) & mask;

  while (slots[i].id != 0)
    i = (i + 1) & mask;
  slots[i].id = id;
  slots[i].value = value;
}

static int pp__tasktab_grow(pp__tasktab *t) {
  size_t cap = t->slots ? (t->mask + 1) * 2 : 64;
  pp__tasktab_slot *slots = calloc(cap, sizeof(*slots));
  size_t i;

  if (slots == NULL)
    return PP_ENOMEM;
  if (t->slots != NULL) {
    for (i = 0; i <= t->mask; i++)
      if (t->slots[i].id != 0)
        pp__tasktab_insert(slots, cap - 1, t->slots[i].id, t->slots[i].value);
    free(t->slots);
  }
  t->slots = slots;
  t->mask = cap - 1;
  return 0;
}

int pp__tasktab_put(pp__tasktab *t, uint64_t id, void *value) {
  /* Keep the load under one half so probe runs stay short. */
  if (t->slots == NULL || (t->count + 1) * 2 > t->mask + 1) {
    int err = pp__tasktab_grow(t);
    if (err != 0)
      return err;
  }
  pp__tasktab_insert(t->slots, t->mask, id, value);
  t->count++;
  return 0;
}

static size_t pp__tasktab_find(const pp__tasktab *t, uint64_t id) {
  size_t i;

  if (t->slots == NULL || id == 0)
    return (size_t) -1;
  for (i = pp__tasktab_hash(id) & t->mask; t->slots[i].id != 0; i = (i + 1) & t->mask)
    if (t->slots[i].id == id)
      return i;
  return (size_t) -1;
}

void *pp__tasktab_get(const pp__tasktab *t, uint64_t id) {
  size_t i = pp__tasktab_find(t, id);

  return i == (size_t) -1 ? NULL : t->slots[i].value;
}

void *pp__tasktab_del(pp__tasktab *t, uint64_t id) {
  size_t i = pp__tasktab_find(t, id);
  size_t j;
  void *value;

  if (i == (size_t) -1)
    return NULL;
  value = t->slots[i].value;
  /* Backward-shift: move later members of the probe run into the hole when their home
   * slot does not lie cyclically between the hole and their position. */
  j = i;
  for (;;) {
    size_t home;
    j = (j + 1) & t->mask;
    if (t->slots[j].id == 0)
      break;
    home = pp__tasktab_hash(t->slots[j].id) & t->mask;
    if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
      t->slots[i] = t->slots[j];
      i = j;
    }
  }
  t->slots[i].id = 0;
  t->slots[i].value = NULL;
  t->count--;
  return value;
}
