/* The pool's table of pending tasks by id: an open-addressing hash table with linear
 * probing and backward-shift deletion (no tombstones), so lookups stay short however
 * many tasks come and go. Ids are never 0; 0 marks an empty slot. */
#ifndef PP_TASKTAB_H
#define PP_TASKTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct pp__tasktab_slot {
  uint64_t id;
  void *value;
} pp__tasktab_slot;

typedef struct pp__tasktab {
  pp__tasktab_slot *slots;
  size_t mask;    /* capacity - 1; capacity is a power of two */
  size_t count;
} pp__tasktab;

void pp__tasktab_init(pp__tasktab *t);
void pp__tasktab_free(pp__tasktab *t);
/* Returns 0 or PP_ENOMEM. The id must not be in the table. */
int pp__tasktab_put(pp__tasktab *t, uint64_t id, void *value);
void *pp__tasktab_get(const pp__tasktab *t, uint64_t id);
/* Returns the value removed, or NULL when the id is not there. */
void *pp__tasktab_del(pp__tasktab *t, uint64_t id);

#endif
