/* The shared-memory transport for large messages, the worker's side (bigmsg.c). The pool
 * makes every segment and hands each over with the SHM_OFFER frame that introduces it
 * (argument segments: one per slot, the pool writes them; result segments: the worker
 * writes them); the worker maps what it is given, reads arguments where a TASK points,
 * and places a large result in a free result segment, or leaves it where it lies when it
 * is part of its argument. The frames: shared/protocol.h and doc/protocol.md, "Large
 * messages". */
#ifndef PP_WORKER_BIGMSG_H
#define PP_WORKER_BIGMSG_H

#include "../channel.h"
#include "procpool.h"
#include "../shared/protocol.h"

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
