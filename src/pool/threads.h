/* Calls from any thread (threads.c). The core stays single-threaded: only the thread
 * that runs the pool's loop touches it. A call made on that thread goes straight to the
 * core; a call from any other thread becomes a command in the pool's inbox, which the
 * loop's thread runs after a uv_async wake-up, and, when the call must wait for an
 * answer, the caller sleeps on the pool's condition until the loop's thread gives it.
 *
 * Which thread runs the loop: on a caller's loop, the thread that created the pool (it
 * must be the one that runs that loop). On a private loop, the creating thread, inside
 * its blocking calls, until the pool is first used from another thread or through a
 * future; then a thread of the pool's own (the runner), for the rest of its life. */
#ifndef PP_THREADS_H
#define PP_THREADS_H

#include "pool.h"

/* How a call reaches the core. */
enum {
  PP__HERE = 0,   /* this thread runs the core now: call it, then pp__leave */
  PP__AWAY = 1    /* another thread runs it (or will): post a command */
};

/* Sets up pool->x, before anything else in pp_pool_new. 0 or a UV_E* code. */
int pp__x_init(pp_pool *pool);
/* Makes the wake handle on the pool's loop, counted in open_handles. */
int pp__x_start(pp_pool *pool);
/* Releases what pp__x_init made, with the pool's memory (pp__pool_free). */
void pp__x_destroy(pp_pool *pool);

/* A reference on the pool's memory, any thread: taken before anything else of the pool
 * is read, so that a call that began before the pool's end still finds it. Returns 1 when
 * the pool is ending already (x.gone; the reference is taken all the same). The core
 * holds one until its end; pp__x_drop of the last frees the pool. */
int pp__x_hold(pp_pool *pool);
void pp__x_drop(pp_pool *pool);

/* This thread enters (1) or leaves (-1) a callback of a pool's loop (a result callback,
 * next(), each(), a close callback). A thread inside one never waits for another loop. */
void pp__x_cb_depth(int delta);
int pp__x_in_cb(void);

/* Takes a reference (pp__x_hold), then says how this call reaches the core: PP__HERE
 * (then call pp__leave when done), PP__AWAY (then pp__x_drop when done; always once the
 * pool is ending), or a UV_E* code, with no reference, when the pool's thread was needed
 * and could not be started. want_thread: on a private loop, hand the loop to the pool's
 * own thread now (futures). */
int pp__enter(pp_pool *pool, int want_thread);
void pp__leave(pp_pool *pool);
/* pp__leave but for the reference, which the caller keeps (and drops later). */
void pp__leave_core(pp_pool *pool);
/* Whether this thread is inside the pool's core right now (a callback on the loop's
 * thread): a call that waits for the loop would wait for itself. Any thread. */
int pp__x_inside(pp_pool *pool);

/* From another thread: queues a task (its argument copied) as pp_submit does. */
int pp__x_submit(pp_pool *pool, const char *task, const void *arg, size_t len,
                 pp_result_cb cb, void *user, uint64_t *id);
/* From another thread: the core's answers, waited for. */
int pp__x_cancel(pp_pool *pool, uint64_t id);
int pp__x_wait(pp_pool *pool);
int pp__x_stats(pp_pool *pool, pp_pool_stats *stats);
/* From another thread: pp_pool_close (terminate 0) or pp_pool_terminate (1). */
int pp__x_close(pp_pool *pool, int terminate, pp_close_cb cb, void *user);

/* From another thread: runs start(pool, job, arg) on the loop's thread and waits until
 * the work it began calls pp__x_job_done(pool, job, result), on the loop's thread; returns
 * that result. When the pool is ending, start never runs and the answer is late. The
 * caller's memory that arg points at is the loop's thread's until pp__x_job_done. */
struct pp__cmd;
typedef void (*pp__xjob_fn)(pp_pool *pool, struct pp__cmd *job, void *arg);
int pp__x_job(pp_pool *pool, pp__xjob_fn start, void *arg, int late);
void pp__x_job_done(pp_pool *pool, struct pp__cmd *job, int result);

/* On the loop's thread, at the top of the loop only: runs what the inbox holds. */
void pp__x_drain(pp_pool *pool);
/* On the loop's thread, as the pool closes: marks the submits still in the inbox as
 * accepted before the close (the caller counts them pending); returns how many. */
int pp__x_reserve(pp_pool *pool);
/* On the loop's thread: takes the task with that id out of the inbox, if its submit is
 * still there; *reserved as pp__x_reserve marked it. NULL if not there. */
pp__task *pp__x_take_submit(pp_pool *pool, uint64_t id, int *reserved);
/* On the loop's thread: answers the waits once nothing is pending. */
void pp__x_pending_zero(pp_pool *pool);
/* On the loop's thread, as the pool ends: answers everything still asked, refuses what
 * comes later, and closes the wake handle. */
void pp__x_end(pp_pool *pool);

/* The core's halves of pp_cancel, pp_pool_close and pp_pool_terminate (pool.c). */
int pp__cancel_core(pp_pool *pool, uint64_t id);
void pp__close_core(pp_pool *pool, pp_close_cb cb, void *user);
int pp__terminate_core(pp_pool *pool, pp_close_cb cb, void *user);
/* A private loop's end once its loop has run the pool to its end: closes the loop and
 * releases the pool (pool.c). */
void pp__pool_finish_own(pp_pool *pool);
/* Runs a private loop until the pool is released from it (pool.c). */
void pp__pool_run_to_end(pp_pool *pool);

#endif
