/* An index of a table of names: which position holds a given name. pp_main checks a task
 * table for duplicates with it, the worker finds its initializer with it, and the pool
 * turns a task's name into its number with it, so a table of 65535 tasks costs O(n) to
 * check and O(1) per lookup rather than O(n^2) and O(n).
 *
 * It is an open-addressing hash table with linear probing, built once and never changed:
 * one allocation for the whole index, nothing per name. The names themselves are
 * borrowed: the array and the strings it points to must outlive the index. */
#ifndef PP_NAMES_H
#define PP_NAMES_H

#include <stddef.h>
#include <stdint.h>

typedef struct pp__names_slot {
  uint32_t hash;
  uint32_t index;  /* the name's position + 1; 0 marks an empty slot */
  uint32_t len;
} pp__names_slot;

typedef struct pp__names {
  const char *const *names;
  pp__names_slot *slots;  /* NULL when the table is empty */
  size_t mask;            /* capacity - 1; capacity is a power of two */
} pp__names;

/* Indexes names[0..n), each a NUL-terminated string, in O(n). Returns 0; PP_ENOMEM; or
 * PP_EINVAL when two names are equal, with *dup_first < *dup_second their positions (the
 * pair whose second member comes first in the table; either pointer may be NULL). On
 * failure *ix holds nothing, and pp__names_free on it is harmless. */
int pp__names_init(pp__names *ix, const char *const *names, size_t n, size_t *dup_first,
                   size_t *dup_second);

/* Finds the name of len bytes (not NUL-terminated; it may hold any byte) and sets *index
 * to its position. Returns 0, or PP_ENOTASK when the table has no such name. */
int pp__names_find(const pp__names *ix, const char *name, size_t len, uint32_t *index);

/* Releases the index (not the names). Harmless on a zeroed or already freed index. */
void pp__names_free(pp__names *ix);

#endif
