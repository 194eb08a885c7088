/* Large result blocks kept for reuse (bufcache.c). A large result arrives in a block the
 * caller frees with pp_result_free (or with free(), having taken it): a fresh block of
 * 64 MiB costs the process some 16000 page faults on first touch, several times the copy
 * itself. pp_result_free hands large blocks here instead of to free(), and the next large
 * result reuses one, its pages already there. A block is plain malloc'd memory whichever
 * way it comes, so a caller that takes a result's data and frees it itself is right too.
 * Bounded (a few blocks, PP__BUFCACHE_MAX bytes in all), and emptied when the process's
 * last pool ends. Any thread. */
#ifndef PP_BUFCACHE_H
#define PP_BUFCACHE_H

#include <stddef.h>

/* Blocks smaller than this are left to malloc, which keeps them well itself. */
#define PP__BUFCACHE_MIN ((size_t) 1 << 20)

/* A malloc'd block of at least len bytes (a kept one when one fits), or NULL. */
void *pp__bufcache_get(size_t len);

/* Takes a malloc'd block (or NULL): kept for reuse, or freed. */
void pp__bufcache_put(void *p);

/* A pool begins (+1) or ends (-1); when none is left, every kept block is freed. */
void pp__bufcache_pools(int delta);

#endif
