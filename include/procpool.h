/* procpool: one worker-process pool API for Linux, the BSDs, macOS and Windows.
 *
 * A program built on procpool names its work as tasks: functions listed in a table that
 * exists, identical, in every process of the program. The program calls pp_main() first
 * in main(); in a worker process that call never returns (it serves tasks), in the parent
 * it records the table and returns 0. The parent then creates a pool and hands it work.
 *
 * Workers are started by one of three methods (see pp_start_method). Whatever the method,
 * a task's argument and result are bytes: they are copied to and from the worker, never
 * shared. Results are delivered on a libuv loop: the caller's, or one the pool owns.
 *
 * Errors: every function that can fail returns 0 or a negative error code. procpool's own
 * codes (PP_E*) lie in a range of their own; failures of the OS or of libuv pass through
 * as libuv's UV_E* codes. pp_strerror() and pp_errname() describe both.
 *
 * Threads: every parent-side function may be called from any thread, on any pool,
 * concurrently. A pool's core runs on one thread, the one that runs its loop; a call made
 * on another thread is handed to it, and a call that waits (pp_apply, pp_map,
 * pp_map_array, pp_map_stream, pp_pool_wait, pp_cancel, pp_pool_stats_get, a private
 * pool's pp_pool_close) sleeps until that thread has answered. It never runs a loop that
 * another thread runs. A thread inside a callback of a pool's loop (a result, close,
 * next() or each() callback) never sleeps waiting for another loop, which might be
 * waiting for this one (two pools whose callbacks call each other): there those calls,
 * made on a pool whose loop another thread runs, return PP_EINVAL at once (pp_apply fills
 * *out, as for its other refusals); pp_submit and pp_submit_future, which do not wait,
 * are fine. Which thread runs the loop:
 *   - A caller's loop: the thread that called pp_pool_new, which must be the thread that
 *     runs that loop (uv_run). Calls from other threads are answered when it runs it.
 *   - A private loop (loop NULL): the creating thread runs it inside its blocking calls,
 *     as long as only that thread uses the pool and it uses no future: a single-threaded
 *     program pays nothing for threads. From the first call made on another thread, or
 *     the first pp_submit_future, the pool starts a thread of its own that runs the loop
 *     from then on, for good, and the creating thread's calls are handed to it too.
 * Result and close callbacks run on the thread that runs the loop, one at a time;
 * pp_map_stream's next() and each() on the thread that called pp_map_stream.
 * Blocking calls made off the loop's thread copy their arguments; pp_map and pp_map_stream
 * made there send items one by one rather than in batches (fewer items per second);
 * pp_map_array sends its batches from there as from the loop's thread.
 * A pool ends when pp_pool_close's work is done (its cb runs): from then on no thread may
 * use the pool pointer; a call racing with that end must have started before it, and then
 * gets the answer a closed pool gives (PP_ECLOSED; pp_cancel PP_ENOENT). On a
 * private loop, pp_pool_close from any thread returns once the pool is gone. Futures stay
 * valid after their pool is gone. Under PP_START_FORK, see there for what threads mean.
 */
#ifndef PROCPOOL_H
#define PROCPOOL_H

#include <stddef.h>
#include <stdint.h>

/* libuv's loop, which pp_pool_new takes, by its struct tag: uv.h's uv_loop_t is a typedef
 * of it, so a uv_loop_t * is passed as it is. The header does not include uv.h, which on
 * Unix needs POSIX types (pthread_rwlock_t) that strict ISO C (-std=c11) hides: a program
 * that uses the loop includes uv.h itself. (Not a typedef of our own: C99 forbids
 * repeating one, so it would clash with uv.h's under -std=c99 -pedantic.) */
struct uv_loop_s;

#ifdef __cplusplus
extern "C" {
#endif

/* PP_EXTERN marks the exported functions. Building the library as a DLL defines
 * PROCPOOL_BUILDING_SHARED; a program that links the DLL defines PROCPOOL_SHARED.
 * Linking the static library needs no define, as with libuv's USING_UV_SHARED. */
#if defined(_WIN32)
#  if defined(PROCPOOL_BUILDING_SHARED)
#    define PP_EXTERN __declspec(dllexport)
#  elif defined(PROCPOOL_SHARED)
#    define PP_EXTERN __declspec(dllimport)
#  else
#    define PP_EXTERN
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define PP_EXTERN __attribute__((visibility("default")))
#else
#  define PP_EXTERN
#endif

/* On MinGW, GCC's `printf` in a format attribute means msvcrt's dialect, which lacks
 * %zu; the library formats with MinGW's C99 printf, so GCC checks its formats as
 * gnu_printf. clang has no gnu_printf (a warning, an error under -Werror) and its `printf`
 * is already C99's on MinGW targets, as MinGW's own stdio.h assumes. */
#if defined(__MINGW32__) && !defined(__clang__)
#  define PP_PRINTF(fmt, args) __attribute__((format(gnu_printf, fmt, args)))
#elif defined(__GNUC__) || defined(__clang__)
#  define PP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#  define PP_PRINTF(fmt, args)
#endif

#define PP_VERSION_MAJOR 0
#define PP_VERSION_MINOR 1
#define PP_VERSION_PATCH 0

/* ---- Errors ------------------------------------------------------------------------ */

/* procpool's own error codes. They never clash with libuv's UV_E* codes, which lie
 * between -1 and -4096. Every error result also carries a message (pp_result.message)
 * that names the task, the worker and the cause. */
#define PP__ERRBASE (-30000)
enum {
  PP_EINVAL = PP__ERRBASE - 1,     /* a bad argument or option, or a call at the wrong time */
  PP_ENOMEM = PP__ERRBASE - 2,     /* out of memory */
  PP_ENOTSUP = PP__ERRBASE - 3,    /* the start method does not exist on this OS */
  PP_ENOTASK = PP__ERRBASE - 4,    /* no task of that name in the task table */
  PP_ETASK = PP__ERRBASE - 5,      /* the task reported failure (pp_fail, or a non-zero return) */
  PP_EWORKER = PP__ERRBASE - 6,    /* the worker died while it ran the task */
  PP_ETIMEDOUT = PP__ERRBASE - 7,  /* the task ran past task_timeout_ms; its worker was killed */
  PP_ECANCELED = PP__ERRBASE - 8,  /* pp_cancel or pp_pool_terminate ended the task */
  PP_ECLOSED = PP__ERRBASE - 9,    /* the pool is closing or closed */
  PP_EPROTO = PP__ERRBASE - 10,    /* a worker sent malformed data; it was killed */
  PP_E2BIG = PP__ERRBASE - 11,     /* an argument or result is over max_message_bytes */
  PP_EINIT = PP__ERRBASE - 12,     /* the initializer failed in a worker */
  PP_ESPAWN = PP__ERRBASE - 13,    /* a worker could not be started, or died before it was ready */
  PP_ENOENT = PP__ERRBASE - 14     /* pp_cancel: no pending task has that id */
};

/* A static, human-readable description of err: one of procpool's codes, a libuv code,
 * or 0. Unknown codes give "unknown error". Never NULL; thread-safe. */
PP_EXTERN const char *pp_strerror(int err);

/* The symbolic name of err: "PP_ENOTASK", "ENOENT" (libuv's name for UV_ENOENT), "OK"
 * for 0, "UNKNOWN" otherwise. Never NULL; thread-safe. */
PP_EXTERN const char *pp_errname(int err);

/* ---- The worker side --------------------------------------------------------------- */

/* One running task, opaque. Valid only during the task function's call. */
typedef struct pp_call pp_call;

/* A task: it receives the argument bytes (arg is NULL when len is 0; otherwise it stays
 * valid for the call and is suitably aligned for any type). It returns 0 on success, after
 * an optional pp_reply; any other value fails the task (return pp_fail(...) to say why). */
typedef int (*pp_task_fn)(pp_call *call, const void *arg, size_t len);

/* A task table: an array ending with {NULL, NULL}. Names are unique and at most 255
 * bytes; the table must be the same, in the same order, in every process of the program
 * (it normally is one static array). At most 65535 tasks. */
typedef struct pp_task {
  const char *name;
  pp_task_fn fn;
} pp_task;

/* Sets the task's result bytes (copied; a later call replaces an earlier one). Returns 0,
 * PP_EINVAL (call is NULL, or data is NULL with len > 0), PP_E2BIG (over the pool's
 * max_message_bytes: the task then fails with PP_E2BIG whatever it returns) or PP_ENOMEM. */
PP_EXTERN int pp_reply(pp_call *call, const void *data, size_t len);

/* Fails the task with a printf-style message (truncated to 4000 bytes) that reaches the
 * parent in pp_result.message. Returns PP_ETASK, so a task can end with
 * `return pp_fail(call, "...")`. A failure wins over any pp_reply. */
PP_EXTERN int pp_fail(pp_call *call, const char *fmt, ...) PP_PRINTF(2, 3);

/* Call first in main(), before anything that must not run in a worker.
 *
 * In a process started as a worker (its command line carries procpool's mark), pp_main
 * serves tasks from `tasks` and never returns: the process exits when the parent closes
 * the pool or dies. Any code before pp_main runs in every spawned worker too.
 *
 * In any other process it records `tasks` as the program's task table and returns 0.
 * It returns PP_EINVAL when tasks is NULL or the table is malformed (a NULL fn, a
 * duplicate, empty or over-long name, too many tasks: stderr says which), or PP_ENOMEM.
 * A worker whose table is malformed tells the pool why, and its start fails with
 * PP_ESPAWN and that reason. The table is borrowed and must stay valid for as long as a
 * pool exists. */
PP_EXTERN int pp_main(int argc, char **argv, const pp_task *tasks);

/* ---- Start methods ----------------------------------------------------------------- */

/* How workers are started.
 *   PP_START_SPAWN: the program is executed afresh and reaches the worker loop through
 *     pp_main. On Unix it is started with posix_spawn, which does not copy this process:
 *     a start costs the same from a parent of any size, and never stalls the loop for
 *     longer than from a small one (Windows: CreateProcess, which copies nothing
 *     either). A worker sees only what the program's static initialisation gives: not
 *     the parent's later changes to globals, not its heap. Windows' only method;
 *     available everywhere.
 *   PP_START_FORK: pp_pool_new forks one helper process for the pool, from the thread
 *     that calls it, and every worker of the pool, the first ones and every replacement,
 *     is forked from that helper. So a worker sees a copy of the parent's memory as it
 *     was at pp_pool_new, a replacement too (not the parent's later changes), and its
 *     parent is the helper. This process itself forks only then, at a moment it
 *     chooses: create fork pools before starting threads, since a lock another thread
 *     holds at that fork (in malloc, stdio, a logging library) stays locked in the
 *     workers; the pool warns once when it sees threads. (Called on a thread other than
 *     the main one, the fork is made, at that same moment, by a thread of procpool's
 *     that lasts as long as the process: on Linux a helper or worker is killed when the
 *     thread that forked it ends, so that none outlives this process, even one stuck in
 *     a lock, and the application's thread may end before its pool.) A worker keeps no descriptor of
 *     the parent's but stdin (the null device), stdout and stderr (the parent's as they
 *     are when the worker starts). The helper ends, and is reaped, with its pool; if it
 *     dies first, its workers' tasks fail (PP_EWORKER) or run again as for any dead
 *     worker, and a new helper is forked, from the thread that runs the pool's loop,
 *     with a warning. A fork copies this process's page tables, so pp_pool_new costs
 *     more the more memory the process holds, and so does each worker's start (the
 *     helper is as big), but a replacement no longer stalls the pool's loop: from 2 GiB
 *     of touched heap, a pool's first result about 52 ms, a replacement 55 ms and a
 *     0.2 ms stall on the project's machine (a fork from the loop's own thread would
 *     stall it some 26 ms), against under 1.5 ms from a small process. Unix only.
 *   PP_START_FORKSERVER: a server process is started once, like a spawned worker, and
 *     workers are forked from it: cheap to start, and they see a fresh program's state,
 *     as under spawn; their parent is the server. One server serves every pool of the
 *     process that uses the same worker program, and it is started as a spawned worker
 *     is, without copying this process. It lives as long as the process: a pool that
 *     ends leaves it idle (a process, some 1.5 MiB resident), and the next pool gets
 *     workers from it at once. It ends by itself when this process exits, execs or dies
 *     (it sees the end of its connection), so it is never left behind; a child this
 *     process forks without exec holds that connection too, and keeps the server until
 *     it ends. Unix only.
 *   PP_START_DEFAULT: forkserver on Linux and the BSDs, spawn on macOS (where fork is
 *     unsafe under the system frameworks) and Windows. So by default a worker sees a
 *     fresh program on every OS.
 * The environment variable PROCPOOL_START_METHOD ("fork", "spawn", "forkserver",
 * "default", in lower case), when set and not empty, overrides the method of every pool:
 * PROCPOOL_START_METHOD=spawn gives every OS Windows' behaviour. Any other value (of any
 * length) makes pp_pool_new fail with PP_EINVAL (and say why on stderr). */
typedef enum pp_start_method {
  PP_START_DEFAULT = 0,
  PP_START_FORK,
  PP_START_SPAWN,
  PP_START_FORKSERVER
} pp_start_method;

/* "default", "fork", "spawn", "forkserver"; "unknown" for any other value. */
PP_EXTERN const char *pp_start_method_name(pp_start_method m);

/* Receives procpool's warnings: things that work but deserve a look, such as forking a
 * process that runs several threads. The message is borrowed for the call. */
typedef void (*pp_warning_cb)(const char *message, void *user);

/* Sends warnings to cb instead of stderr (the default); NULL restores stderr. A
 * process-wide setting: set it before creating pools, not while other threads create
 * them. */
PP_EXTERN void pp_set_warning_handler(pp_warning_cb cb, void *user);

/* ---- The parent side: pools -------------------------------------------------------- */

typedef struct pp_pool pp_pool;

/* Pool options. All zero means the defaults; pp_pool_options_init sets all zero.
 * Every field is checked by pp_pool_new; a value out of range is PP_EINVAL.
 *
 * Every string here (worker_executable, each worker_launcher argument, initializer) is
 * UTF-8, on Windows too, where procpool hands paths and command lines to Windows in
 * UTF-16. A path taken from main()'s argv on Windows is in the ANSI code page instead,
 * and one with a character outside ASCII in it (a u-umlaut) is then not UTF-8, or names
 * another file: take it from wmain() or GetCommandLineW() and convert it with
 * WideCharToMultiByte(CP_UTF8, ...). A string that is not UTF-8 fails pp_pool_new with
 * UV_EINVAL on Windows. */
typedef struct pp_pool_options {
  /* Worker processes. 0: the CPUs available to the process (uv_available_parallelism).
   * At most 4096. */
  unsigned workers;
  /* See pp_start_method; PROCPOOL_START_METHOD overrides it. */
  pp_start_method start_method;
  /* A task run once in each worker before any other, with initarg as its argument (copied
   * by pp_pool_new). It is the portable way to give workers state: it reaches them by the
   * same path under every method. A failure (pp_fail or non-zero) fails the worker's start
   * and, if no worker can start, every queued task with PP_EINIT and its message. NULL:
   * none. */
  const char *initializer;
  const void *initarg;
  size_t initarg_len;
  /* 0: unlimited. Otherwise a worker is retired after that many tasks, and a new one is
   * started in its place once the old one has delivered its last result. (Under fork the
   * new one, like the replacement of a worker that died, is a copy of the parent as it
   * was at pp_pool_new: see PP_START_FORK.) */
  unsigned max_tasks_per_worker;
  /* 0: none. Otherwise a task still running that long after it started in its worker
   * fails with PP_ETIMEDOUT; its worker is killed and replaced. (A task sent ahead of its
   * turn starts its clock when the one before it ends.) Counted in real time: time the
   * application spends away from the loop does not shorten it. */
  uint64_t task_timeout_ms;
  /* NULL: this program (uv_exepath). Otherwise the path of a program whose main() calls
   * pp_main with the same task table (checked: a worker with another table fails to
   * start). Copied by pp_pool_new; a relative path is taken relative to the current
   * directory once, there, so a later chdir() changes nothing. On Windows every form
   * Windows knows is resolved as Windows resolves it (GetFullPathNameW): "C:\dir\app.exe",
   * "\\server\share\app.exe", root-relative "\dir\app.exe" or "/dir/app.exe" (on the
   * current directory's drive), drive-relative "D:app.exe" (in drive D:'s current
   * directory), and relative ones; / and \ alike. Unused (and not checked) under fork,
   * whose workers are copies of this process; the forkserver runs it. */
  const char *worker_executable;
  /* 0: 256 MiB. The largest argument, result or initarg, in bytes, at most 4 GiB - 1 MiB.
   * A larger argument fails pp_submit with PP_E2BIG before anything is sent; a larger
   * result fails its task with PP_E2BIG and leaves the worker serving. */
  size_t max_message_bytes;
  /* 0: 60 s. How long a worker may take from its start to ready (through pp_main and the
   * initializer) before it is killed and counts as a failed start. */
  uint64_t start_timeout_ms;
  /* How many tasks a worker may have been sent ahead of their results. 0: adaptive, up to
   * 32 while tasks take microseconds, down to 1 as they take milliseconds; 1: one at a
   * time, so a long task never holds up a short one queued behind it in the same
   * worker. At most 1024. A task sent ahead that its worker never started (the worker
   * died, timed out or was canceled with its running task) runs in another worker. */
  unsigned pipeline_depth;
  /* 0: no cap. Otherwise a worker whose resident memory (what the OS counts as resident
   * for the process: its private pages and the shared ones it touched; under fork, the
   * pages it still shares with the parent too) is over this many bytes once a task has
   * finished is retired as max_tasks_per_worker retires it: that task's result is
   * delivered, the worker starts nothing more (tasks sent ahead to it go to other
   * workers, nothing fails), and a replacement is started. The worker measures itself
   * after each task (uv_resident_set_memory: Linux /proc, macOS task_info, Windows
   * GetProcessMemoryInfo), so a worker passes the cap by at most one task's growth.
   * With a cap, pp_map and pp_map_stream send their items one by one (as under
   * task_timeout_ms), so that each item is checked. For tasks that leak: Celery's
   * worker_max_memory_per_child. */
  size_t max_worker_memory;
  /* NULL (the default), or a NULL-terminated argv prefix that starts every worker
   * through a launcher: ssh, Slurm's srun, docker exec, taskset, nice, bwrap. A worker is
   * then started as
   *     launcher[0] launcher[1] ... <worker program> --procpool-worker=stdio
   * (launcher[0] looked up in PATH, as a shell would) and its channel is the worker's
   * stdin and stdout, which every launcher forwards, instead of an inherited descriptor.
   * Spawn semantics: PP_START_DEFAULT then means spawn, and fork or forkserver (also
   * from PROCPOOL_START_METHOD) is PP_EINVAL, as is an empty launcher or a relative
   * worker_executable. Copied by pp_pool_new.
   * - The worker program (worker_executable, or this program) is named by its absolute
   *   path, and must exist at that path where the launcher runs it, with the same task
   *   table; nothing else is carried over: environment, working folder and files are
   *   the far side's. pp_pool_new does not check that the program exists here.
   * - pp_main moves the channel off descriptors 0 and 1 before anything else: stdin
   *   becomes the null device and stdout goes where stderr goes, so what a task prints
   *   reaches the launcher's stderr (here, this process's stderr) and never the channel.
   * - The launcher is the pool's child: it is what the pool waits for and kills (a
   *   timeout, a cancel, pp_pool_terminate). The worker behind it ends by end-of-file
   *   on its stdin when the launcher goes, as a local worker does when its channel
   *   closes; a worker that ends, or a connection that drops, fails only the running
   *   task with PP_EWORKER, and the worker is replaced through the launcher again.
   * - A launcher that cannot start the worker (it exits at once, cannot connect, or
   *   writes a banner on stdout) fails the start with PP_ESPAWN, naming the launcher
   *   and its exit status; what it wrote on stderr is on this process's stderr. After
   *   workers + 2 failed starts in a row the pool gives up, as for any failed start.
   * - ssh passes the command through the remote shell: a program path with spaces or
   *   shell characters needs quoting of its own (e.g. a wrapper script). On Windows
   *   each argument is quoted as the C runtime reads it back, and behind "cmd" /c (or
   *   /k) what cmd reads as its command is escaped for cmd too (& | < > ( ) ^ ! % in a
   *   path stay the path's); a .bat or .cmd launcher gets no such escaping.
   * - A launcher forwards bytes only, so its workers get no shared memory: no results
   *   journal (pp_map's batches send each item's result on its own) and no shm_threshold
   *   transport. Without the journal, a cancel or a timeout that kills a worker cannot
   *   tell whether it had started the tasks sent ahead to it: those fail with
   *   PP_EWORKER (their message says why), where a local worker's would run elsewhere.
   *   pipeline_depth = 1 sends nothing ahead, and so rules this out. */
  const char *const *worker_launcher;
  /* Large messages through shared memory. An argument (pp_submit, pp_apply, pp_map's
   * single items, futures) or a result (pp_reply) of at least shm_threshold bytes travels
   * in a shared-memory segment rather than through the worker's channel: the pool copies
   * the argument into a segment kept for that worker, and the worker its result into one
   * of its own, each once; the frames on the channel only say where. A task that replies
   * with bytes of its own argument (pp_reply(call, arg + k, n)) is not copied at all in
   * the worker. Segments are kept for each worker (up to 4 each way) and reused, so their
   * pages are faulted once, not per message; they go with their worker. Nothing changes
   * for the caller or the task: a task still sees (arg, len), valid until it returns; a
   * result still arrives as pp_result data, malloc'd, that pp_result_free frees.
   * 0: 1 MiB (below it the channel is as fast). PP_SHM_OFF: never. Not used with
   * worker_launcher (the worker may be on another machine), nor for pp_map's batches of
   * small items. Segments have no name, and their size is fixed for good (Linux: sealed
   * memfds; elsewhere on Unix shm_open with the name removed at once; Windows: unnamed
   * sections, backed by the page file): no other process can open one, a task cannot
   * shrink one under the pool, and no death leaves anything behind. */
  size_t shm_threshold;
  /* 0: 1 GiB (256 MiB in a 32-bit process). The most shared memory the pool keeps for
   * large messages, all workers together: half for arguments, and the other half shared
   * evenly among the workers' results. A message that finds no room within it travels
   * through the channel instead, as does every one after a segment could not be made
   * (/dev/shm full: a warning says so once). Nothing fails for want of shared memory. */
  size_t shm_max_bytes;
} pp_pool_options;

/* shm_threshold: large messages never go through shared memory. */
#define PP_SHM_OFF ((size_t) -1)

/* Sets *opts to the defaults (all zero). */
PP_EXTERN void pp_pool_options_init(pp_pool_options *opts);

/* Creates a pool and starts its workers; tasks submitted before a worker is ready wait in
 * the pool's queue. loop: the libuv loop that delivers results (the caller runs it), or
 * NULL for a loop the pool owns and runs inside pp_pool_wait, pp_apply, pp_map and
 * pp_pool_close. opts: NULL for the defaults.
 *
 * On success *pool is set and the caller owns it until pp_pool_close or
 * pp_pool_terminate. On failure *pool is NULL and nothing is left to clean up (on a
 * caller's loop, handles already made are closed and release their memory at the loop's
 * next turn). Errors: PP_EINVAL (NULL pool, an option out of range, pp_main not called
 * first while worker_executable is NULL, or called in a worker: tasks may not make pools,
 * as Python's daemonic workers may not), PP_E2BIG (initarg_len over max_message_bytes),
 * PP_ENOTASK (initializer not in the task table), PP_ENOTSUP
 * (method not available here; the message on stderr names PROCPOOL_START_METHOD when it
 * was the cause), PP_ENOMEM, or the libuv error that stopped the first worker from
 * starting (UV_ENOENT for a missing worker_executable; for one that is not a program,
 * UV_EACCES on Unix and UV_EFTYPE on Windows; UV_EMFILE, ...).
 *
 * On Unix, a pool sets SIGPIPE to SIG_IGN if it is SIG_DFL, so that a worker that goes
 * away cannot kill the parent; an application's own handler is left alone. */
PP_EXTERN int pp_pool_new(pp_pool **pool, struct uv_loop_s *loop,
                          const pp_pool_options *opts);

/* The method the pool actually uses, after the default and PROCPOOL_START_METHOD were
 * resolved: never PP_START_DEFAULT, except for a NULL pool. */
PP_EXTERN pp_start_method pp_pool_start_method(const pp_pool *pool);

/* The number of worker slots (options.workers after the default was resolved); 0 for a
 * NULL pool. */
PP_EXTERN unsigned pp_pool_workers(const pp_pool *pool);

/* The message of the failure that made the pool give up starting workers (after repeated
 * PP_ESPAWN or PP_EINIT failures), or NULL while it has none (and for a NULL pool, or
 * when called from a worker, which sees a copy of its parent's pools under fork).
 * Owned by the pool. */
PP_EXTERN const char *pp_pool_error(const pp_pool *pool);

/* ---- Submitting work --------------------------------------------------------------- */

/* A task's outcome.
 *   id:      the id pp_submit returned; under pp_map, an id of the item's own.
 *   status:  0 on success, else a negative error code (PP_ETASK, PP_EWORKER, ...).
 *   data:    the result bytes on success (NULL when len is 0), malloc'd.
 *   len:     their length.
 *   message: on failure, a NUL-terminated description a person can act on (the task's
 *            name and id, the worker's pid, an exit code or signal, the task's pp_fail
 *            text); NULL on success. malloc'd. */
typedef struct pp_result {
  uint64_t id;
  int status;
  void *data;
  size_t len;
  char *message;
} pp_result;

/* Called once, on the pool's loop, for every task pp_submit accepted, whatever becomes of
 * it (success, failure, worker death, timeout, cancel, close, terminate). The result is
 * borrowed for the call: the pool frees data and message afterwards. To keep either, take
 * the pointer and set the field to NULL. The callback may submit and cancel, and on a
 * caller's loop close or terminate the pool. It must not call the blocking functions
 * (pp_apply, pp_map, pp_map_array, pp_pool_wait), nor on a private loop pp_pool_close
 * or pp_pool_terminate (except pp_pool_terminate to hurry a running pp_pool_close):
 * those return PP_EINVAL. */
typedef void (*pp_result_cb)(pp_pool *pool, pp_result *result, void *user);

/* Queues the task `task` with a copy of the len bytes at arg (arg may be NULL when len is
 * 0). cb (may be NULL) gets the outcome; user is passed through. *id (if id is not NULL)
 * receives the task's id, unique within the pool and never 0.
 *
 * Tasks start in the order they were submitted. Returns 0 when the task was accepted:
 * cb will be called exactly once, never from within pp_submit. Otherwise nothing was queued and cb will not be called: PP_EINVAL
 * (NULL pool or task, arg NULL with len > 0, or called from a worker), PP_ENOTASK (no such
 * task), PP_E2BIG (len over max_message_bytes), PP_ECLOSED (after pp_pool_close or
 * pp_pool_terminate), PP_ENOMEM, or the error that made the pool give up starting
 * workers (PP_ESPAWN, PP_EINIT: see pp_pool_error). */
PP_EXTERN int pp_submit(pp_pool *pool, const char *task, const void *arg, size_t len,
                        pp_result_cb cb, void *user, uint64_t *id);

/* Cancels a pending task: its callback runs with PP_ECANCELED before pp_cancel returns
 * (called on another thread than the loop's: before it returns, on the loop's thread).
 * A task that was running has its worker killed (a replacement is started, and tasks
 * sent to that worker behind it run elsewhere); one sent ahead to a worker but not
 * started is stopped the same way when its turn comes (its worker is killed and
 * replaced), so that it never holds up the tasks behind it, even if it would hang.
 * The kill is precise: if the worker turns out to have finished the task already, it is
 * not killed (the task's result is dropped), and a worker that is killed has started
 * nothing after the canceled task, which all runs elsewhere. (Only a worker that could
 * not map its small shared-memory segment is killed blind: a task it may have started
 * behind the canceled one then fails with PP_EWORKER, with a message that says so.)
 * Returns 0, PP_EINVAL
 * (NULL pool; called from a worker: a task under fork sees its parent's pools, and
 * may not touch them; from a callback of another loop than the pool's: see Threads) or
 * PP_ENOENT (no pending task has that id: it already finished,
 * or never existed). */
PP_EXTERN int pp_cancel(pp_pool *pool, uint64_t id);

/* Runs the pool's loop until no task is pending (tasks other threads submitted before
 * the call included). Returns 0, PP_EINVAL (NULL pool, or
 * called from a result callback or a worker) or PP_ECLOSED (the loop ran out of work with tasks still
 * pending, which means someone closed the pool's handles: it does not hang). On a
 * caller's loop it runs that loop (UV_RUN_ONCE, repeatedly), so other handles' callbacks
 * run too; do not call it from any callback of that loop. From a thread that does not
 * run the loop it waits, without running any loop, until the loop's thread sees nothing
 * pending. */
PP_EXTERN int pp_pool_wait(pp_pool *pool);

/* One argument of pp_map. */
typedef struct pp_input {
  const void *data;
  size_t len;
} pp_input;

/* Runs one task and waits for it, running the pool's loop (same rules as pp_pool_wait).
 * The argument is lent, not copied: it must stay unchanged until pp_apply returns, which
 * it does only once nothing reads it any more (also when the task was canceled).
 * *out receives the result, which the caller frees with pp_result_free. Returns
 * out->status: 0, a task's error, or a submit error (then out->message says why; called
 * from a result callback, that is PP_EINVAL). Whenever pool and out are not NULL, *out
 * is filled and must be freed; with either NULL it is PP_EINVAL and nothing is filled. */
PP_EXTERN int pp_apply(pp_pool *pool, const char *task, const void *arg, size_t len,
                       pp_result *out);

/* Runs task once for each of the n args and waits for all; out[i] receives the result of
 * args[i] (free each with pp_result_free). The arguments are lent, as with pp_apply. At
 * most a few tasks per worker are queued at a time, so a huge n does not hold n copies
 * of the arguments. An item that cannot be sent fails alone and the others run: PP_EINVAL
 * for data NULL with len > 0, PP_E2BIG for len over max_message_bytes. Items go to
 * workers in batches, but each runs at most once: a worker that dies in the middle of a
 * batch fails only the item it was running (PP_EWORKER), and the items after it run
 * elsewhere. Returns 0 when every task succeeded, else the status of the first (lowest
 * index) that failed; every out[i] is filled either way. With out untouched: PP_EINVAL when pool or task is NULL, args or out
 * is NULL with n > 0, or when called from a result callback; PP_ENOMEM. */
PP_EXTERN int pp_map(pp_pool *pool, const char *task, size_t n, const pp_input *args,
                     pp_result *out);

/* Runs task once per item of an array and waits for all, as pp_map does, for items of
 * fixed sizes: args holds n items of arg_size bytes each, end to end (item i at
 * args + i * arg_size), and each item's result must be exactly result_size bytes; it is
 * written at results + i * result_size. statuses (may be NULL) receives each item's
 * status at statuses[i]: 0, or the error that item failed with. The task is an ordinary
 * pp_task_fn: it receives its item as arg (aligned as always; NULL when arg_size is 0)
 * and replies with pp_reply. Blocks like pp_map, with the same rules (not from a result
 * callback or a worker; on a caller's loop not from any of that loop's callbacks); made
 * from a thread that does not run the loop, it runs as fast as on it.
 *
 * Memory: args, results and statuses stay the caller's. args is read, never written, and
 * must stay unchanged until pp_map_array returns; results and statuses must not be read
 * or written by anyone else until then. Items go to workers in batches, as pp_map's do,
 * each batch a copy of its items (at most 4 MiB of copies per worker at a time), and
 * each result is copied into its place as it comes: nothing is allocated per item. Under
 * task_timeout_ms, max_tasks_per_worker or max_worker_memory the items go one by one,
 * each a task of its own, as pp_map's do (fewer items per second).
 *
 * Items fail alone and the others run. An item fails when the task failed (PP_ETASK),
 * replied other than exactly result_size bytes (PP_EPROTO) or over max_message_bytes
 * (PP_E2BIG), its worker died while it ran it (PP_EWORKER: only the item it was running
 * fails; the items after it in its batch run elsewhere, each exactly once) or it ran
 * past task_timeout_ms (PP_ETIMEDOUT). When the pool will not take an item (the task is
 * not in its table: PP_ENOTASK; it was closed: PP_ECLOSED; it gave up starting workers:
 * PP_ESPAWN, PP_EINIT; memory ran out: PP_ENOMEM), that item and every later one fail
 * with that error, while those already taken run to their end. pp_pool_terminate ends
 * the items in flight with PP_ECANCELED, and so does a loop that stops (someone closed
 * the pool's handles): called from another thread, once the loop's thread sees the loop
 * stop, in a pp_pool_wait, pp_apply, pp_map, pp_map_array, pp_map_stream or
 * pp_future_wait of its own (libuv's uv_run does not say). A failed item's result_size bytes in results are set to zero.
 * Failure messages are not kept: statuses is all there is (pp_map gives each item's
 * message).
 *
 * Returns 0 when every item succeeded, else the status of the first (lowest index) that
 * failed; every entry of results and statuses is then filled. n == 0 returns 0 and
 * touches nothing. arg_size 0: every item gets an empty argument, and args may be NULL.
 * result_size 0: results may be NULL, and every item must reply nothing.
 * With results and statuses untouched and nothing run: PP_EINVAL (pool or task NULL;
 * args NULL with n > 0 and arg_size > 0; results NULL with n > 0 and result_size > 0;
 * n * arg_size or n * result_size overflows a size_t; called from a result callback or
 * a worker), PP_E2BIG (arg_size or result_size over max_message_bytes: no item could
 * succeed). */
PP_EXTERN int pp_map_array(pp_pool *pool, const char *task, size_t n, const void *args,
                           size_t arg_size, void *results, size_t result_size,
                           int *statuses);

/* ---- Streams of work ---------------------------------------------------------------- */

/* Gives pp_map_stream its next input. Returns 1 with *next set (next->data may be NULL
 * when next->len is 0): the pool copies the bytes before it calls again, so one buffer may
 * serve every call, and the bytes need to stay valid only until next() is called again or
 * pp_map_stream returns. Returns 0 when there are no more inputs (next() is not called
 * again), or a negative error to stop the stream: no more inputs are asked for, and
 * pp_map_stream returns that error once every item already taken has been delivered.
 * Called on the thread that called pp_map_stream, never from within a result callback: it
 * may block, read files, allocate. It must not call procpool's blocking functions. */
typedef int (*pp_next_fn)(void *user, pp_input *next);

/* Receives one item's outcome, once per item, with its index: 0, 1, 2... in the order
 * next() gave the inputs. The result is borrowed, as in pp_result_cb: the pool frees
 * result->data and result->message after the call; to keep either, take the pointer and
 * set the field to NULL. result->id is an id of the item's own. Called from the pool's
 * loop inside pp_map_stream, with the same rules as a pp_result_cb: it may call
 * pp_pool_stats_get, pp_submit and pp_cancel, and must not call the blocking functions
 * (pp_apply, pp_map, pp_map_array, pp_map_stream, pp_pool_wait), nor close the pool
 * (pp_pool_close and pp_pool_terminate return PP_EINVAL there). */
typedef void (*pp_each_fn)(void *user, size_t index, pp_result *result);

/* pp_map_stream's flags. */
enum {
  PP_MAP_UNORDERED = 1   /* deliver each item as it completes, not in index order */
};

/* Runs task over every input next() gives and calls each() once per item: in index
 * order, or with PP_MAP_UNORDERED as items complete. Blocks, running the pool's loop, as
 * pp_map does (same rules: not from a result callback or a worker, on a caller's loop
 * not from any of that loop's callbacks).
 *
 * Memory stays bounded whatever the stream's length: inputs are pulled from next() only
 * as the pool has room for them, a few batches per worker (items go in batches as pp_map
 * sends them, sized from how long items take; one by one under task_timeout_ms or
 * max_tasks_per_worker), each batch a copy of at most 256 KiB of inputs. In order, results
 * that come ahead of their turn are held back, at most 65536 items' worth: once the
 * window is full (one slow item), no more inputs are taken until the slow one is done.
 *
 * Items fail alone, and the stream goes on: an input with data NULL and len > 0
 * (PP_EINVAL) or over max_message_bytes (PP_E2BIG) fails without running; a worker that
 * dies in the middle of a batch fails only the item it was running (PP_EWORKER), and the
 * items after it run elsewhere, once each. When the pool cannot take items any more (it
 * was closed or gave up starting workers), the item that found it so fails with that
 * error (PP_ECLOSED, PP_ESPAWN, PP_EINIT) and no more inputs are taken. If the loop stops
 * (someone closed the pool's handles), what is in flight fails with PP_ECANCELED.
 *
 * Returns, once every item taken has been delivered: next()'s error if it gave one, else
 * the status of the failed item of the lowest index, else 0. Without calling next() or
 * each(): PP_EINVAL (pool, task, next or each NULL, an unknown flag, called from a result
 * callback or a worker), PP_ENOTASK (task is not in the table), PP_ECLOSED (the pool is
 * closing), PP_ENOMEM. */
PP_EXTERN int pp_map_stream(pp_pool *pool, const char *task, pp_next_fn next,
                            pp_each_fn each, void *user, unsigned flags);

/* ---- Watching a pool ----------------------------------------------------------------- */

/* What a pool has done and is doing, counted in tasks: a task of pp_submit or pp_apply
 * counts one, and so does each item of pp_map and pp_map_stream (an item that fails
 * before it is handed to the pool, for a bad input, is not counted). At every moment
 * submitted == done + queued + running. */
typedef struct pp_pool_stats {
  uint64_t submitted;        /* tasks accepted since the pool was made */
  uint64_t done;             /* of those, with their outcome decided (delivered, or, in an
                                ordered stream, held back for its turn) */
  uint64_t failed;           /* of the done, with a non-zero status */
  uint64_t queued;           /* waiting for a worker now (also one whose worker died
                                before it started, back in the queue) */
  uint64_t running;          /* sent to a worker, outcome not yet decided */
  unsigned workers_ready;    /* workers serving now */
  uint64_t workers_started;  /* processes started since the pool was made */
  uint64_t workers_lost;     /* of those, ended otherwise than by the pool letting them
                                go (retirement after max_tasks_per_worker, the close): a
                                crash, a failed start, a kill for a timeout, a cancel, bad
                                data or pp_pool_terminate */
} pp_pool_stats;

/* Fills *stats with a snapshot of the counters, consistent with each other. Cheap (it
 * walks the workers' pipelines, at most workers x pipeline depth tasks): a progress line
 * may call it in every pp_each_fn. Call it on the thread that runs the pool's loop, as
 * any pool function (from a result callback too). Returns 0, or PP_EINVAL when pool or
 * stats is NULL, when called from a callback of another loop than the pool's (see
 * Threads), or when called from a worker (a task under fork sees a copy of its parent's
 * pools, and may not touch them). */
PP_EXTERN int pp_pool_stats_get(pp_pool *pool, pp_pool_stats *stats);

/* ---- Futures: a task's outcome for any thread ------------------------------------ */

/* A task's outcome that any thread may wait for. It outlives its pool. */
typedef struct pp_future pp_future;

/* Like pp_submit, from any thread: queues the task with a copy of the len bytes at arg
 * and sets *future, which the caller owns and frees with pp_future_free. On a private
 * loop the first future hands the loop to the pool's own thread (see Threads). Errors
 * as pp_submit's, and PP_EINVAL when future is NULL; on error *future is NULL and
 * nothing was queued. (From a thread other than the loop's, a pool that gave up
 * starting workers, or a task table learned from worker_executable that lacks the name,
 * comes as the future's outcome, PP_ESPAWN / PP_EINIT / PP_ENOTASK, not as the return.) */
PP_EXTERN int pp_submit_future(pp_pool *pool, const char *task, const void *arg,
                               size_t len, pp_future **future);

/* Waits until the task has its outcome: 0 when it has, PP_ETIMEDOUT when timeout_ms
 * passed first (0: just look; negative: no limit; any positive value, INT64_MAX too, is
 * a limit of that many milliseconds). Any thread. On the thread that runs the future's
 * pool's caller loop it runs that loop meanwhile (as pp_pool_wait does: not from that
 * loop's callbacks), and returns PP_ECLOSED, as pp_pool_wait does, if the loop runs out
 * of work with the task pending (someone closed the pool's handles): it never hangs on a
 * loop that has nothing left to run. From a result callback of the pool, or of a private
 * pool on its own thread, it would wait for itself: PP_EINVAL (0 still answers at once).
 * From a worker: PP_EINVAL. */
PP_EXTERN int pp_future_wait(pp_future *future, int64_t timeout_ms);

/* Waits until one of the n futures (of any pools) has its outcome, sets *index (if not
 * NULL) to the lowest index of one that has, and returns 0; PP_ETIMEDOUT when
 * timeout_ms passed first; PP_EINVAL when futures is NULL, n is 0 or a future is NULL,
 * or as pp_future_wait; PP_ENOMEM. Any thread. On the thread that runs a caller's loop
 * of some of the futures' pools it runs that loop, as pp_future_wait does, and a future
 * of any other pool that is done meanwhile (on another thread) ends the wait at once;
 * PP_ECLOSED only when every future's pool is on a loop of this thread that ran out of
 * work. */
PP_EXTERN int pp_future_wait_any(pp_future *const *futures, size_t n, int64_t timeout_ms,
                                 size_t *index);

/* The outcome once the future has one (NULL before): status, data, message as in a
 * pp_result_cb's result. Owned by the future: valid until pp_future_free, and the
 * same pointer each time. Any thread; NULL in a worker (which sees a copy of its
 * parent's futures under fork). */
PP_EXTERN const pp_result *pp_future_result(const pp_future *future);

/* The task's id (as pp_submit's *id); 0 for NULL. */
PP_EXTERN uint64_t pp_future_id(const pp_future *future);

/* As pp_cancel, for this future's task: 0 when it was pending and is now canceled (the
 * future then has PP_ECANCELED as its outcome), PP_ENOENT when it had its outcome
 * already, PP_EINVAL for NULL or from a callback of another loop than the pool's (see
 * Threads). Any thread; valid after the pool is gone (PP_ENOENT). */
PP_EXTERN int pp_future_cancel(pp_future *future);

/* Frees the future, done or not (a task not done yet still runs; its result is dropped
 * when it comes). Valid also after the pool was closed and freed: futures outlive their
 * pool. Not while another thread waits on it. NULL is fine. In a worker it does nothing:
 * a future there is a copy of its parent's, under fork. */
PP_EXTERN void pp_future_free(pp_future *future);

/* Frees result->data and result->message and zeroes *result. NULL is fine; a zeroed or
 * already freed result is fine. A large data block (1 MiB and up) may be kept, while a
 * pool exists, for the next large result to reuse (its pages already in place, which
 * spares a 64 MiB result some 16000 page faults): at most 4 blocks and 512 MiB, all
 * freed when the process's last pool ends. Any thread. */
PP_EXTERN void pp_result_free(pp_result *result);

/* ---- Ending a pool ----------------------------------------------------------------- */

typedef void (*pp_close_cb)(void *user);

/* Stops accepting work (pp_submit returns PP_ECLOSED), lets every queued and running task
 * finish and deliver its result, then stops the workers and frees the pool. cb (may be
 * NULL) is called once all of it is done; the pool pointer is invalid from then on.
 * On a caller's loop it returns at once and the loop finishes the work; on a private loop
 * it runs the loop until done, calls cb, closes the loop and returns. A worker that dies,
 * is retired or times out meanwhile is replaced as long as tasks wait for one. Returns 0,
 * PP_EINVAL (NULL pool; a private-loop pool closed from its own result callback, or
 * from a callback of another loop; called from pp_map_stream's next() or each(); called
 * from a worker) or PP_ECLOSED (already closing: the first call's cb still runs). */
PP_EXTERN int pp_pool_close(pp_pool *pool, pp_close_cb cb, void *user);

/* Like pp_pool_close, but queued and running tasks end at once with PP_ECANCELED (their
 * callbacks run) and the workers are killed. May be called while a pp_pool_close is in
 * progress: it hurries it (the close's cb still runs, once). Returns 0, PP_EINVAL (as
 * pp_pool_close) or PP_ECLOSED (already terminating). */
PP_EXTERN int pp_pool_terminate(pp_pool *pool, pp_close_cb cb, void *user);

/* ---- Shared memory: large data without copies ------------------------------------- */

/* A shared memory segment, mapped into this process. Arguments and results are copied
 * through the worker's channel; a segment is not: a program that must hand a worker a
 * large buffer (what fork's copy-on-write gives for free) creates a segment, fills it,
 * passes its reference (a few bytes) as or inside the task's argument, and the worker maps
 * the same memory with pp_shm_open. It works the same under every start method and OS.
 *
 * Lifetime: the memory lives as long as any process has the segment mapped. Its name,
 * through which pp_shm_open finds it, lives until its creator's pp_shm_close, which is
 * the only one that removes it: so the creator keeps the segment open until the workers
 * that need it have opened it (typically, until the task's result). A process forked
 * from the creator while the segment is mapped (a worker under PP_START_FORK) inherits
 * the mapping, and with it keeps the memory until it exits or closes its copy, which
 * does not remove the name. A segment whose creator dies without closing it may leave
 * its name behind on Unix (in /dev/shm on Linux); it is named after procpool and the
 * creator's pid.
 *
 * Trust: a segment is named, so any process of the same user that learns the name (a
 * worker that is handed it, or one that finds it in its own /proc/self/maps) can open
 * it, write anything into it, and on Unix change its size. A program that reads a
 * segment after a worker could have touched it reads untrusted bytes; and on Unix, a
 * segment made smaller under a reader makes its next read fault with SIGBUS, a risk the
 * program takes on by sharing it (guard such reads, or hand such workers no segment it
 * must read back). The pool's own shared memory with its workers (results journal,
 * large messages) is not of this kind: it has no name, no process can change its size,
 * and the pool checks everything a worker writes there. */
typedef struct pp_shm pp_shm;

/* What a worker needs to map a segment: plain bytes, to copy into a task's argument. */
typedef struct pp_shm_ref {
  uint64_t size;
  char name[56];           /* NUL-terminated */
} pp_shm_ref;

/* Creates a segment of size bytes (zero-filled), maps it read-write, and sets *shm.
 * Returns 0, PP_EINVAL (shm NULL or size 0), PP_ENOMEM, or the OS's error as a UV_E*
 * code (UV_ENOSPC when /dev/shm or the page file is full). On failure *shm is NULL and
 * nothing is left behind. */
PP_EXTERN int pp_shm_create(pp_shm **shm, size_t size);

/* Maps the segment ref names, read-write. Returns 0, PP_EINVAL (NULL arguments, or a ref
 * that is not one), UV_ENOENT (its creator closed it already) or another UV_E* code. */
PP_EXTERN int pp_shm_open(const pp_shm_ref *ref, pp_shm **shm);

/* The mapped memory, suitably aligned for any type, and its size. */
PP_EXTERN void *pp_shm_data(const pp_shm *shm);
PP_EXTERN size_t pp_shm_size(const pp_shm *shm);

/* Fills *ref with the segment's reference. */
PP_EXTERN void pp_shm_ref_get(const pp_shm *shm, pp_shm_ref *ref);

/* Unmaps the segment and frees *shm; the creator's close also removes its name. NULL is
 * fine. Returns 0 or the OS's error as a UV_E* code (the segment is freed regardless). */
PP_EXTERN int pp_shm_close(pp_shm *shm);

#ifdef __cplusplus
}
#endif

#endif /* PROCPOOL_H */
