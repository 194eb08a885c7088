/* Intrusive circular doubly-linked lists: a node embedded in each element, no
 * allocation to link or unlink. An empty list is a head that points to itself. */
#ifndef PP_QUEUE_H
#define PP_QUEUE_H

#include <stddef.h>

typedef struct pp__qnode {
  struct pp__qnode *next;
  struct pp__qnode *prev;
} pp__qnode;

#define PP__CONTAINER_OF(ptr, type, field) \
  ((type *) ((char *) (ptr) - offsetof(type, field)))

static inline void pp__q_init(pp__qnode *h) { h->next = h->prev = h; }
static inline int pp__q_empty(const pp__qnode *h) { return h->next == h; }
static inline pp__qnode *pp__q_head(const pp__qnode *h) { return h->next; }

static inline void pp__q_insert_tail(pp__qnode *h, pp__qnode *n) {
  n->next = h;
  n->prev = h->prev;
  h->prev->next = n;
  h->prev = n;
}

static inline void pp__q_insert_head(pp__qnode *h, pp__qnode *n) {
  n->prev = h;
  n->next = h->next;
  h->next->prev = n;
  h->next = n;
}

/* Unlinks n and leaves it pointing to itself, so a second removal is harmless. */
static inline void pp__q_remove(pp__qnode *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}

#endif
