/* The shared-memory transport for large messages, the pool's side (bigmsg.c; the
 * worker's is worker/bigmsg.h, the frames shared/protocol.h, doc/protocol.md "Large
 * messages"). An
 * argument of the pool's shm_threshold bytes or more goes into one of the pool's segments
 * for its worker, and a result that large into one of the result segments the pool
 * offered the worker (or, when the task replies with bytes of its argument, stays where
 * it is); the frame on the channel only says where. Segments are kept per worker,
 * PP__SHM_SLOTS each way, and reused, so that their pages are faulted once; they are
 * bounded by the pool's shm_max_bytes, and a message that finds no room goes over the
 * channel as before. A worker gets a result segment once a large result of its came over
 * the channel, sized for it with some room to grow.
 *
 * Every segment is the pool's: it makes them (anonymous, of a size no one can change:
 * seg.h), hands each to its worker with the SHM_OFFER frame that introduces it, and
 * holds its own mapping, so a result written by a worker that died since is still there.
 * The pool reads a result segment only for a RESULT frame it reads, which a dead
 * worker's are not, and treats every byte of it as the worker's input. */
#ifndef PP_POOL_BIGMSG_H
#define PP_POOL_BIGMSG_H

#include "pool.h"
#include "../shared/protocol.h"
#include "../seg.h"


/* At a worker's start: its state, and the INIT fields that offer it the transport (left
 * zero when the pool uses none, or it could not be set up: the channel then does). */
void pp__bigmsg_worker_init(pp__worker *w, pp__init *in);

/* Puts t's argument in one of w's segments (a new one is handed to w first), and writes
 * the TASK payload that says where to ref (PP__SHM_TASK_SIZE bytes). Returns the
 * payload's length, or 0 when the argument goes over the channel (too small, no room, a
 * failure). */
size_t pp__bigmsg_arg(pp__worker *w, const pp__task *t, uint8_t *ref);

/* A large result (len bytes) of w's came over the channel: when there is room, offers w
 * a result segment for the next ones (an SHM_OFFER frame, sent with its next frames). */
void pp__bigmsg_offer(pp__worker *w, size_t len);

/* A RESULT with PP__FL_SHM, payload p of n bytes, for t, w's running task. With data not
 * NULL, copies the result out into a block of its own (*data, *len; pp_result_free's to
 * free) and returns 0; with data NULL (t was decided already) only releases it. Errors:
 * PP_EPROTO (*why: the frame is malformed), or PP_ENOMEM or the OS's error when the result
 * could not be read (*why says so: the task fails with it). Either way the segment is
 * given back to the worker. */
int pp__bigmsg_result(pp__worker *w, const pp__task *t, const uint8_t *p, size_t n,
                      void **data, size_t *len, const char **why);

/* t is no longer w's: the segment that held its argument is free again. */
void pp__bigmsg_task_done(pp__worker *w, const pp__task *t);

/* w's process is gone: unmaps and removes its segments. */
void pp__bigmsg_worker_free(pp__worker *w);

#endif
