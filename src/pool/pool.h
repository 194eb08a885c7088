/* The pool's internal types, shared by the core's files and the start methods
 * (methods.h). The core is split along its seams: pool.c (options, submit, cancel, close),
 * lifecycle.c (a worker's life, one state machine), results.c (what workers send),
 * dispatch.c (what is sent to them) and blocking.c (pp_pool_wait, pp_apply, pp_map). */
#ifndef PP_POOL_H
#define PP_POOL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../shared/names.h"
#include "procpool.h"
#include "../shared/protocol.h"
#include "queue.h"
#include "../seg.h"
#include "tasktab.h"

typedef struct pp__worker pp__worker;
typedef struct pp__task pp__task;
typedef struct pp__method_ops pp__method_ops;

#define PP__NO_INDEX 0xFFFFFFFFu

/* How many times a task may come back from workers that ended before its frame reached
 * them whole; after that its next such end fails it, as if it had run. */
#define PP__MAX_REQUEUE 3

struct pp__task {
  pp__qnode node;          /* in pool->queue, or in its worker's inflight list */
  pp_pool *pool;
  uint64_t id;
  uint32_t index;          /* in the task table; PP__NO_INDEX until known */
  int state;               /* PP__T_QUEUED, PP__T_RUNNING, PP__T_DONE */
  int writing;             /* write batches that hold its frame */
  int in_cb;               /* its callback is running: it is not freed meanwhile */
  uint64_t sent_to;        /* the token of the worker its frame last reached whole */
  uint64_t seq;            /* its number among the tasks sent to its worker (journal.h) */
  unsigned requeued;       /* times it came back from a worker its frame never reached */
  pp_result_cb cb;
  void *user;
  pp__worker *worker;      /* while sent to a worker (also when done, until its result) */
  /* A batch (pp_map's items): how many, how many results came, and where they go. */
  uint32_t nitems;
  uint32_t received;
  void (*on_items)(pp__task *t, const pp__batch *b, long pid);
  /* A blocking caller's count of its tasks whose borrowed argument a write still points
   * at: the caller does not return, and so does not free the argument, before it is 0. */
  size_t *hold;
  void *owned;             /* an argument the task was handed, freed with it */
  size_t len;
  const uint8_t *arg;      /* after name in this allocation, owned, or borrowed */
  char name[1];            /* the task's name, NUL-terminated; arg may follow */
};

enum { PP__T_QUEUED = 1, PP__T_RUNNING, PP__T_DONE };

/* A worker's life; lifecycle.c holds every transition and asserts each one.
 *
 *   STARTING --ready--> READY --retire--> RETIRING --exit--> GONE
 *       |                 |                   \--grace--> KILLED --exit--> GONE
 *       |                 +--exit or end of channel--> ENDING --both--> GONE
 *       |                 |                              \--grace--> KILLED / GONE
 *       +-----------------+--kill (timeout, cancel, bad data, terminate)--> KILLED
 *
 * The tasks a worker holds are decided once, when it leaves STARTING, READY or ENDING
 * (pp__worker_settle); after that nothing it sends is read. */
typedef enum pp__wstate {
  PP__W_STARTING = 1,      /* launched; waiting for its hello and ready */
  PP__W_READY,             /* serving */
  PP__W_ENDING,            /* it ended by itself (process or channel): reading its last words */
  PP__W_RETIRING,          /* let go by the pool: its channel is closed, it should exit */
  PP__W_KILLED,            /* killed: waiting for its process to end */
  PP__W_GONE               /* its process has ended (or never was): handles closing */
} pp__wstate;

/* What the worker's one timer is counting, when it runs. */
typedef enum pp__wtimer {
  PP__WT_NONE = 0,
  PP__WT_START,            /* STARTING: start_timeout_ms */
  PP__WT_TASK,             /* READY: the running task's task_timeout_ms */
  PP__WT_DRAIN,            /* ENDING, process ended: its channel's last bytes */
  PP__WT_HANGUP,           /* ENDING, channel ended: the process's exit */
  PP__WT_RETIRE,           /* RETIRING: the process's exit */
  PP__WT_REAP,             /* KILLED: the process's end, which the OS owes us */
  PP__WT_GRACE             /* READY: a task it says it finished, whose result must come */
} pp__wtimer;

/* Frames to a worker are gathered into a batch and written with one call per loop
 * turn. Small frames are copied into bytes; a large argument is written from the task
 * itself. */
typedef struct pp__wseg {
  size_t off;              /* into bytes, when task is NULL */
  size_t len;
  pp__task *task;          /* the argument of this task, when not NULL */
} pp__wseg;

typedef struct pp__wbatch {
  uv_write_t req;
  pp__worker *worker;
  uint8_t *bytes;
  size_t len, cap;
  pp__wseg *segs;
  size_t nsegs, capsegs;
  pp__task **tasks;        /* whose frames it holds: each counted in its writing */
  size_t ntasks, captasks;
  size_t capends;
  size_t *ends;            /* where each task's frame ends in the batch's bytes on the wire */
  size_t total;            /* the batch's bytes on the wire */
  size_t done;             /* of those, written */
  size_t marked;           /* tasks whose frame is written whole (t->sent_to set) */
  size_t req_end;          /* where the write under way ends */
  uv_buf_t *bufs;
  size_t capbufs;
} pp__wbatch;

struct pp__worker {
  pp__qnode node;          /* in pool->workers */
  pp__qnode idle_node;     /* in pool->idle while ready with nothing to run */
  pp__qnode dirty_node;    /* in pool->dirty while it has frames to write */
  pp__qnode inflight;      /* tasks sent, in order; the first is the one running */
  unsigned ninflight;
  uint64_t head_since;     /* when the first in flight started running (uv_hrtime) */
  pp__wbatch wb[2];        /* one being filled, one possibly being written */
  int wb_fill;             /* which one is being filled */
  int wb_busy;             /* the other is being written */
  pp_pool *pool;
  pp__wstate state;
  pp__wtimer timer_why;
  int settled;             /* its tasks are decided (pp__worker_settle ran) */
  int counted;             /* counts toward pool->active */
  int ready_counted;       /* counts toward pool->ready */
  int got_hello;
  int became_ready;        /* it reached READY once */
  int unwritable;          /* a write failed: it gets nothing more */
  int abort_kill;          /* pp__worker_abort_head is to kill it after its callback */
  uint64_t aborted_id;     /* the task pp__worker_abort_head killed it for, or 0 */
  int aborted_status;      /* and why: PP_ECANCELED or PP_ETIMEDOUT */
  int lost_counted;        /* counted in pool->st_lost already */
  int exited;              /* the start method reported the process's end */
  int eof;                 /* its channel ended */
  int open_handles;
  long pid;
  int64_t exit_status;
  int term_signal;
  unsigned assigned;       /* tasks handed to it */
  uv_pipe_t pipe;
  uv_timer_t timer;
  union {                  /* the start method's handle for the process, if any */
    uv_handle_t handle;    /* its type is UV_UNKNOWN_HANDLE until one is initialised */
    uv_process_t proc;     /* spawn */
    uv_poll_t pidfd;       /* fork on Linux: readable once the process has ended */
    uv_signal_t sigchld;   /* fork elsewhere */
    struct {               /* spawn on Windows (src/win/spawn.c) */
      uv_async_t ended;    /* sent from a wait thread once the process has ended */
      void *process;       /* its HANDLE, from CreateProcessW on */
      void *job;           /* the HANDLE of its own job object: it and all it starts */
      void *wait;          /* the RegisterWaitForSingleObject that watches it */
      int killed;          /* the pool ended its job with TerminateJobObject */
      int reported;        /* pp__worker_on_exit was called, or never will be */
    } win;
  } m;
  int m_fd;                /* the start method's descriptor for the process, or -1 */
  uint64_t token;          /* the worker's number within its pool, never 0 */
  uv_write_t init_req;
  uint8_t *init_buf;
  pp__rx rx;
  pp__seg journal;         /* its results journal and control words, handed over at its
                              start (journal.c); data NULL: none */
  uint64_t seq_sent;       /* tasks sent to it so far: the last one's number */
  uint64_t grace_seq;      /* PP__WT_GRACE: the task whose result it owes */
  int doomed;              /* a kill was claimed: nothing it holds after its running task
                              has started, unless journal_failed */
  int journal_failed;      /* it said it could not map its journal */
  int said_retire;         /* it went over max_worker_memory, or could not map a large
                              argument: it starts nothing more */
  struct pp__pbig *big;    /* its large messages' segments (bigmsg.c), or NULL */
};

/* What threads other than the loop's share with it (threads.c). Everything here but
 * `core` and the fields marked otherwise is guarded by `mu`. */
typedef struct pp__xstate {
  uv_mutex_t mu;
  uv_cond_t cond;          /* broadcast on a reply, a ref dropped, the runner finished */
  /* Recursive; private loop only. Held by whichever thread runs the core: the creating
   * thread during each of its calls until the runner exists, then the runner for good.
   * core_depth is read and written by its holder only. */
  uv_mutex_t core;
  int core_depth;
  uv_async_t wake;         /* the inbox has something */
  int wake_open;
  uv_thread_t owner;       /* pp_pool_new's thread (immutable) */
  uv_thread_t runner;      /* the pool's own thread, when it exists (uv_thread_create's) */
  uv_thread_t runner_self; /* the same, as the runner sees itself, once runner_known */
  int runner_known;
  int threaded;            /* private loop: the runner was started and runs the loop */
  int joined;
  int seen_closed;         /* core holder only: x.closed as pp__enter last saw it */
  pp__qnode inbox;         /* pp__cmd, from other threads, in order */
  pp__qnode waits;         /* loop thread only: WAIT commands until nothing is pending */
  int closed;              /* pp_pool_close or pp_pool_terminate was called */
  int terminated;          /* pp_pool_terminate was called */
  int gone;                /* the pool is ending: commands are answered at once */
  int finished;            /* the runner has run the pool to its end */
  int refs;                /* the core's, and one per call in progress, from any thread:
                              the last to let go frees the pool (pp__x_drop) */
  pp_pool_stats last;      /* the counters when the pool went, for late callers */
} pp__xstate;

struct pp_pool {
  pp__xstate x;
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int own;                 /* the loop is own_loop */
  pp_start_method method;
  const pp__method_ops *ops;
  void *method_data;       /* the start method's own, per pool */
  int open_handles;        /* pool-level handles of the method still open */
  int method_ended;
  uint64_t next_token;
  unsigned nworkers;
  unsigned active;         /* workers counted toward nworkers */
  unsigned ready;          /* of those, the ones ready to serve */
  unsigned start_failures; /* consecutive failed starts */
  int broken;              /* 0, or PP_ESPAWN / PP_EINIT once starting workers gave up */
  char *broken_msg;
  char *exe;
  char **launcher;         /* options.worker_launcher, copied (one allocation), or NULL */
  char *initializer;
  uint8_t *initarg;
  size_t initarg_len;
  unsigned max_tasks;
  uint64_t max_memory;     /* options.max_worker_memory; 0: none */
  uint64_t timeout_ms;
  uint64_t start_timeout_ms;
  size_t max_message;
  /* The shared-memory transport (bigmsg.c): messages of shm_threshold bytes and up, 0:
   * none. Its segments, all workers', take at most shm_max bytes. */
  size_t shm_threshold;
  size_t shm_max;
  size_t shm_bytes;
  int shm_off;             /* a segment could not be made or mapped: the channel only */
  /* The task table: the program's own (pp_main), or learned from the first worker. */
  const char **names;
  size_t ntasks;
  int names_owned;
  pp__names index;         /* the names by name, built with them */
  int names_fixed;         /* names came from pp_main: immutable, any thread may read */
  /* Ids: the loop's thread takes them from next_id; other threads from x_next_id (under
   * x.mu), which starts at 2^63, so that the two never meet and neither needs the
   * other's lock. */
  uint64_t next_id;
  uint64_t x_next_id;
  size_t pending;          /* queued + running */
  pp__qnode queue;
  pp__qnode workers;
  pp__qnode idle;
  pp__qnode dirty;
  pp__qnode xarrays;       /* other threads' pp_map_array runs in flight (maparray.c) */
  uv_prepare_t flush;      /* writes the dirty workers' batches once per loop turn */
  unsigned depth;          /* options.pipeline_depth; 0: adaptive */
  uint64_t avg_ns;         /* running average of a task's time in its worker */
  uint64_t timed;          /* results that went into avg_ns */
  uint64_t dropped;        /* results that came for tasks already decided */
  /* pp_pool_stats's counters (stats.c derives queued and running). A batch's items count
   * one each; its owner (stream.c) counts their outcomes, pp__task_finish the others'. */
  uint64_t st_submitted;
  uint64_t st_done;
  uint64_t st_failed;
  uint64_t st_started;
  uint64_t st_lost;
  pp__tasktab tasks;
  uv_idle_t final;         /* closed last: its close callback releases the pool */
  int final_closed;
  int orphan;              /* pp_pool_new failed: release without callbacks */
  int first_err;           /* the first error that stopped a worker from starting */
  int cb_depth;            /* > 0 inside a result callback */
  int in_stream_cb;        /* > 0 inside a pp_map_stream's next() or each() */
  int blocking;            /* > 0 inside pp_pool_wait, pp_apply, pp_map, pp_pool_close */
  int closing;
  int terminating;
  int finished;
  pp_close_cb close_cb;
  void *close_user;
  pp_close_cb term_cb;
  void *term_user;
};

/* ---- pool.c: tasks, strings, warnings, the pool's end ---------------------------------- */

/* Decides the task's outcome, once: calls its callback and releases it. data and msg
 * (malloc'd, may be NULL) pass to the result. A task already done is left alone. */
void pp__task_finish(pp__task *t, int status, void *data, size_t len, char *msg);
void pp__task_fail(pp__task *t, int status, const char *fmt, ...) PP_PRINTF(3, 4);
/* Frees t once it is decided, no write points at it and no worker lists it. */
void pp__task_free(pp__task *t);
/* Resolves a task's name to its index in the table: 0 or PP_ENOTASK. */
int pp__find_task(const pp_pool *pool, const char *name, uint32_t *index);
/* Makes a task, not yet queued nor given an id: the argument copied, or with borrow
 * pointed at (then hold, if not NULL, counts the writes that point at it). NULL: out of
 * memory. */
pp__task *pp__task_new(pp_pool *pool, const char *task, uint32_t index, const void *arg,
                       size_t len, pp_result_cb cb, void *user, int borrow, size_t *hold,
                       uint32_t nitems, void (*on_items)(pp__task *t, const pp__batch *b,
                                                         long pid));
/* Checks a task's name and size as pp_submit does, from any thread (the names only
 * when they are fixed); sets *index. 0 or the error. */
int pp__task_check(pp_pool *pool, const char *task, size_t len, uint32_t *index);
/* Queues a task made by another thread (threads.c); its outcome comes, whatever it is.
 * reserved: a close counted it already, as work it lets finish (pp__x_reserve). */
void pp__task_accept(pp_pool *pool, pp__task *t, int reserved);
/* Queues a task; borrow: the argument is the caller's (counted in *hold while written). */
int pp__submit(pp_pool *pool, const char *task, const void *arg, size_t len,
               pp_result_cb cb, void *user, uint64_t *id, size_t *hold, void *owned,
               uint32_t nitems, void (*on_items)(pp__task *t, const pp__batch *b, long pid));
/* pp__submit of a single task, for work the pool accepted before (a batch's items that
 * never started): a close lets it run, a terminate refuses it with PP_ECANCELED. */
int pp__submit_again(pp_pool *pool, const char *task, const void *arg, size_t len,
                     pp_result_cb cb, void *user, uint64_t *id, size_t *hold, void *owned);
/* Frees the pool's memory, once its last reference is let go (threads.c). */
void pp__pool_free(pp_pool *pool);
/* Once the pool is closing and nothing is pending, lets the workers go and then releases
 * the pool. */
void pp__maybe_shutdown(pp_pool *pool);
/* On a private loop, runs it until the pool is released. */
int pp__pool_end(pp_pool *pool);

char *pp__strdupf(const char *fmt, ...) PP_PRINTF(1, 2);
char *pp__vstrdupf(const char *fmt, va_list ap);

/* pp_pool_stats_get's work, on the loop's thread (stats.c). */
void pp__stats_core(pp_pool *pool, pp_pool_stats *stats);

/* ---- Called by the start methods (lifecycle.c) ------------------------------------------ */

void pp__worker_on_exit(pp__worker *w, int64_t exit_status, int term_signal);
void pp__worker_on_start_failed(pp__worker *w, const char *why);
void pp__worker_on_handle_closed(uv_handle_t *handle);
/* A pool-level handle of the method's (counted in pool->open_handles) has closed. */
void pp__pool_handle_closed(pp_pool *pool);

/* Reports a warning: to the handler set with pp_set_warning_handler, else to stderr.
 * Each distinct `once` flag reports once per process. */
void pp__warn_once(int *once, const char *fmt, ...) PP_PRINTF(2, 3);

#endif
