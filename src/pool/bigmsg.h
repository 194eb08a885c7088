/* The shared-memory transport for large messages (doc/protocol.md, "Large messages"). An
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
#ifndef PP_BIGMSG_H
#define PP_BIGMSG_H

#include "pool.h"
#include "../shared/protocol.h"
#include "../seg.h"

/* ---- The pool's side (bigmsg.c) --------------------------------------------------------- */

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

/* ---- The worker's side (worker/bigmsg.c) ------------------------------------------------------- */

typedef struct pp__wbig pp__wbig;

/* From the INIT frame: NULL when the pool offered no transport or memory ran out (the
 * worker then sends everything over the channel). */
pp__wbig *pp__wbig_new(const pp__init *init);

/* The argument a TASK with PP__FL_SHM points at, in the slot's segment the pool handed
 * over before. Returns 0 and *data, or an error with why filled in (PP_EPROTO: no such
 * segment, or not of that size; another: the segment could not be mapped, and the task
 * is not run). */
int pp__wbig_arg(pp__wbig *b, const pp__shm_task *ref, const uint8_t **data, char *why,
                 size_t why_size);

/* Maps the segment an SHM_OFFER frame (aux kind, a pp__seg_kind) just read from chan
 * introduces, in place of what the slot held. Returns 0, or an error with why filled in
 * (PP_EPROTO: a malformed offer; anything else: the slot stays empty: a result goes over
 * the channel, and a TASK that points at an argument there is refused by pp__wbig_arg). */
int pp__wbig_offer(pp__wbig *b, pp__chan *chan, int kind, const pp__shm_task *ref,
                   char *why, size_t why_size);

/* Places a result of len bytes for the pool: where it lies already when it is within the
 * running task's argument [arg, arg + arg_len) (arg: what pp__wbig_arg gave for it, NULL
 * when its argument came over the channel), else copied into a free result segment.
 * Fills *res and returns 0, or returns non-zero when there is none that holds it (the
 * result then goes over the channel). */
int pp__wbig_reply(pp__wbig *b, const uint8_t *arg, size_t arg_len, const void *data,
                   size_t len, pp__shm_result *res);

/* A result placed by pp__wbig_reply that will not be sent: its segment is free again. */
void pp__wbig_unreply(pp__wbig *b, const pp__shm_result *res);

/* Unmaps everything. NULL is fine. */
void pp__wbig_free(pp__wbig *b);

#endif
