/* The engine under pp_map, pp_map_stream and pp_map_array (stream.c), and the blocking
 * helpers it shares with pp_apply (blocking.c). */
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
typedef struct pp__stream pp__stream;

/* An item's outcome without a pp_result (pp_map_array): status 0 with the result's len
 * bytes (borrowed for the call), or a negative error with no bytes and no message.
 * Returns the status the item is delivered with (a success may be refused, e.g. for a
 * wrong size), which the run counts. */
typedef int (*pp__raw_fn)(void *user, size_t index, int status, const void *bytes,
                          size_t len);
/* A run of count items from index on, every one a success of size bytes, end to end at
 * bytes (a BATCH_RESULT's fixed form): raw() for each, in one call. Returns the status
 * they are all delivered with. */
typedef int (*pp__raw_run_fn)(void *user, size_t index, size_t count, const void *bytes,
                              size_t size);

/* One run of the engine: inputs from next(), outcomes to each(); or inputs from an array
 * and outcomes to raw(). */
struct pp__stream {
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

  /* An array run (pp__stream_array): n_items inputs of arg_size bytes each at array
   * (which stays valid and unchanged until the run ends), outcomes to raw. No next(), no
   * each(), no pp_result: a batch's items cost no allocation. The run goes on by itself
   * from the pool's callbacks (each end of a task takes more), so it needs no thread of
   * the caller's: on_end(s) is called on the loop's thread once every item is delivered,
   * and is the run's last touch of s. */
  const uint8_t *array;
  size_t n_items;
  size_t arg_size;
  pp__raw_fn raw;
  pp__raw_run_fn raw_run;
  void (*on_end)(pp__stream *s);
  int kicking;             /* taking now: a callback within leaves the taking to it */
  size_t ended;            /* 1 once on_end ran */
};

/* Runs s (its first eight fields set, the rest zero) to its end: every input taken is
 * delivered once. Returns 0 or PP_ENOMEM (nothing taken); the outcome is in s. */
int pp__stream_run(pp__stream *s);

/* Starts an array run, on the loop's thread: s has pool, task, user, chunk, array,
 * n_items, arg_size, raw, raw_run and on_end set, the rest zero. It takes what the window
 * allows and goes on from the pool's callbacks; on_end may be called before this
 * returns. The items it could not take (the pool refused one: s->stop_err) are from
 * s->taken on. */
void pp__stream_array(pp__stream *s);

/* Ends an array run whose loop ran dry: what is in flight fails with PP_ECANCELED. */
void pp__stream_array_dry(pp__stream *s);
/* On the loop's thread, once it has seen the loop run dry: ends, as pp__stream_array_dry
 * does, the pp_map_array runs that other threads wait for (maparray.c). */
void pp__marr_dry_all(pp_pool *pool);

#endif
