/* A worker's life cycle (lifecycle.c): the one state machine in pool.h's pp__wstate, the
 * rule that decides the fate of a worker's tasks when it ends, and the rule that starts
 * replacements. The rest of the core changes a worker's state only through these. */
#ifndef PP_LIFECYCLE_H
#define PP_LIFECYCLE_H

#include "pool.h"

/* Starts workers while the pool wants more: as many as it has slots, or while closing,
 * as long as tasks wait in the queue; never after it gave up or while terminating. Fails
 * the queue once the pool gave up and has no worker left. */
void pp__maintain(pp_pool *pool);

/* Starts one worker (or counts a failed start). */
void pp__worker_start(pp_pool *pool);

/* STARTING -> READY: its initializer succeeded. */
void pp__worker_ready(pp__worker *w);

/* A worker that never became ready (STARTING, or ENDING since) failed (bad hello, initializer failed, timeout): the failure counts
 * toward the pool giving up (err PP_ESPAWN, PP_EINIT or PP_ENOTASK; msg malloc'd), and the
 * worker is killed. */
void pp__worker_start_failed(pp__worker *w, int err, char *msg);

/* Kills a live worker. status != 0: its running task fails with status and msg
 * (malloc'd; NULL for a default). status 0: the running task's fate is decided as for a
 * worker that died by itself. Tasks sent to it behind the running one go back to the
 * front of the queue. Harmless on a worker already killed or gone. */
void pp__worker_kill(pp__worker *w, int status, char *msg);

/* Ends w's running task at once with status and msg (malloc'd; cancel, timeout) and
 * kills w, which is read to its end all the same: it may have finished that task and
 * started the ones behind it. Harmless to call on a worker already ending. */
void pp__worker_abort_head(pp__worker *w, int status, char *msg);

/* READY with nothing in flight -> RETIRING: its channel is closed so that it exits by
 * itself; it is killed if it does not within a grace period. */
void pp__worker_retire(pp__worker *w);

/* Its channel ended (read end-of-file or an error). */
void pp__worker_on_eof(pp__worker *w);

/* Whether what it sends is still read: STARTING, READY or ENDING. */
int pp__worker_live(const pp__worker *w);

/* The task it runs now (the first in flight), or NULL. */
pp__task *pp__worker_head(pp__worker *w);

/* Takes t off w's list of tasks in flight. */
void pp__worker_detach(pp__worker *w, pp__task *t);

/* Puts w on, or takes it off, the pool's list of idle workers. */
void pp__worker_set_idle(pp__worker *w, int idle);

/* (Re)starts the running task's timeout, or stops it when nothing runs. */
void pp__worker_arm_task_timer(pp__worker *w);

/* Bytes came from w: a grace period for a result it owes starts again. */
void pp__worker_progress(pp__worker *w);

#endif
