/* Futures (future.c), and what the blocking calls made off the loop's thread use of
 * them (offloop.c). */
#ifndef PP_FUTURE_H
#define PP_FUTURE_H

#include "pool.h"

/* Moves a done future's result into *out (its id included) and leaves the future's
 * empty. 0, or PP_EINVAL when the future is not done. */
int pp__future_take(pp_future *future, pp_result *out);

/* pp_apply, pp_map and pp_map_stream from a thread that does not run the pool's loop
 * (offloop.c). */
int pp__x_apply(pp_pool *pool, const char *task, const void *arg, size_t len,
                pp_result *out);
int pp__x_map(pp_pool *pool, const char *task, size_t n, const pp_input *args,
              pp_result *out);
int pp__x_map_stream(pp_pool *pool, const char *task, pp_next_fn next, pp_each_fn each,
                     void *user, unsigned flags);

#endif
