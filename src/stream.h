/* The engine under pp_map and pp_map_stream (stream.c), and the blocking helpers it
 * shares with pp_apply (blocking.c). */
#ifndef PP_STREAM_H
#define PP_STREAM_H

#include "pool.h"

/* Runs the pool's loop until *done reaches target, or with done NULL until nothing is
 * pending. PP_ECLOSED if the loop runs dry first. */
int pp__run_until(pp_pool *pool, const size_t *done, size_t target);
/* Runs the loop until no write points at the caller's arguments (*hold is 0). */
void pp__release_args(pp_pool *pool, const size_t *hold);
/* Fills *out with a submit error's result: status err and a message naming task. */
void pp__submit_error(pp_pool *pool, const char *task, int err, pp_result *out);

typedef struct pp__sbatch pp__sbatch;
typedef struct pp__ssingle pp__ssingle;

/* One run of the engine: inputs from next(), outcomes to each(). */
typedef struct pp__stream {
  pp_pool *pool;
  const char *task;
  pp_next_fn next;
  pp_each_fn each;
  void *user;
  int ordered;
  /* next()'s inputs stay valid and unchanged until the run ends (pp_map's args): a single
   * item borrows its input instead of copying it. */
  int lent;
  /* Items per batch; 0: from how long items take. */
  size_t chunk;

  size_t taken;            /* inputs next() gave */
  size_t delivered;        /* items given to each() */
  size_t events;           /* outcomes and task ends: what the loop waits for */
  size_t tasks;            /* tasks in flight, single or batch */
  size_t hold;             /* single items whose borrowed input a write points at */
  int stop;                /* no more inputs are taken */
  int next_err;            /* next()'s error */
  int stop_err;            /* the submit error that stopped the run, or 0 */
  int dry;                 /* the loop ran dry: what was in flight was canceled */
  int fail;                /* the status of the failed item of lowest index */
  size_t fail_index;
  pp__sbatch *batches;     /* in flight */
  pp__ssingle *singles;    /* in flight */
  pp_result *ring;         /* ordered: results ahead of their turn, by index & mask */
  unsigned char *have;
  pp_input pend;           /* an input taken that did not fit the last batch */
  size_t pend_index;
  void *pend_copy;         /* its copy, unless lent */
  int has_pend;
} pp__stream;

/* Runs s (its first eight fields set, the rest zero) to its end: every input taken is
 * delivered once. Returns 0 or PP_ENOMEM (nothing taken); the outcome is in s. */
int pp__stream_run(pp__stream *s);

#endif
