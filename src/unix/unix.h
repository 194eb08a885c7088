/* What the Unix start methods share: forking safely, and setting up a child. */
#ifndef PP_UNIX_H
#define PP_UNIX_H

#include <sys/types.h>

#include "../methods.h"

/* Forks with every signal blocked, so that no handler of the parent's (libuv's among
 * them) runs in the child before the child has reset them. stdio is flushed first, so
 * buffered output is not written twice. Returns the pid (0 in the child) or a UV_E*
 * error. In the child, signals stay blocked until pp__unix_child_reset. */
pid_t pp__unix_fork(int *err);

/* From now on, pp__unix_fork runs no atfork handler (_Fork, where the C library has
 * it): for a fork pool's helper, which is single-threaded, so nothing those handlers
 * guard can be held when it forks, and whose handlers belong to the process it copied.
 * They ran once, in the helper, when it was forked; run again in its workers they can
 * break them: libuv's closes and re-creates its signal lock pipe at the descriptor
 * numbers it had in the parent, which the helper has reused, e.g. for a worker's
 * channel. Where there is no _Fork, fork runs them all the same. */
void pp__unix_fork_plain(void);

/* In a forked child: every caught signal back to its default, the signal mask empty,
 * stdin on the null device, and every descriptor but 0, 1, 2 and the nkeep in keep
 * closed, up to the highest number there is (not only up to RLIMIT_NOFILE). Only
 * async-signal-safe calls, as a child of a threaded parent requires. Returns 0 or an
 * errno value. */
int pp__unix_child_reset(const int *keep, int nkeep);

/* Writes errno value err to fd and ends the child: how a forked child reports that its
 * set-up failed. */
void pp__unix_child_fail(int fd, int err);

/* Forks a child that keeps only stdio and `keep` (pp__unix_child_reset), and that on
 * Linux is killed when this process ends (so a child that is stuck dies all the same:
 * a fork asked for on a thread other than the main one is made by a thread of
 * procpool's that lasts as long as the process), then calls
 * child(arg, report). The child reports a failure of its own set-up with
 * pp__unix_child_fail(report, errno), and success by closing report (or by exec, since
 * report is close-on-exec); child must not return, and makes only async-signal-safe
 * calls until it execs or serves (prepare every string before the fork). The parent waits for that report.
 * Returns the child's pid, or -1 with *err set (a UV_E* code): fork failed, or the child
 * failed to set itself up (it has then been reaped). */
pid_t pp__unix_fork_child(const int *keep, int nkeep, void (*child)(void *arg, int report),
                          void *arg, int *err);

/* The exit status a forkserver worker is reported with when its server ended before it
 * could report the worker's own: the worker is not the pool's child, so its real status
 * cannot be had. pp__os_describe_exit says so in words. */
#define PP__EXIT_FORKSERVER_GONE (-2)
/* The same for a worker of a pool's fork helper (src/unix/fork.c). */
#define PP__EXIT_HELPER_GONE (-3)

/* The descriptor a started program finds its channel at (spawned workers, the
 * forkserver), named on its command line. */
#define PP__UNIX_CHILD_FD 3

/* Starts the program path with argv, without copying this process (posix_spawn, whose
 * cost does not grow with this process's size, where the C library can close every
 * other descriptor in the child; fork and exec elsewhere). The child gets chan (which
 * stays open here) at PP__UNIX_CHILD_FD, stdin on the null device, this process's
 * stdout and stderr (closed where they are closed here), no other descriptor, even one
 * opened without close-on-exec, every signal at its default and an empty signal mask.
 * on_stdio (a worker's launcher): chan is its stdin and stdout instead, and path is
 * looked up in PATH when it has no slash. Returns 0 with *pid, or the UV_E* error of
 * the failed start, exec's included. */
int pp__unix_spawn(const char *path, char *const argv[], int chan, int on_stdio,
                   pid_t *pid);

/* A worker that is this process's child (spawn, fork), in src/unix/child.c. watch sets
 * up the watcher of its end (a pidfd where there is one, SIGCHLD by pid otherwise; never
 * waitpid(-1)), counted in w->open_handles, and reports the end with
 * pp__worker_on_exit. abandon kills and reaps it at once, for a start that failed after
 * the process existed. kill and close are the method's kill and close. */
int pp__unix_child_watch(pp__worker *w);
void pp__unix_child_abandon(pp__worker *w);
/* The child pid has started with the pool's end of its channel at fd: connects w->pipe
 * to fd and watches the child. Returns 0, or an error after which fd is closed and the
 * child abandoned (killed and reaped). */
int pp__unix_child_adopt(pp__worker *w, long pid, int fd);
void pp__unix_child_kill(pp__worker *w);
void pp__unix_child_close(pp__worker *w);

/* Gives a new shared-memory file (shm_open's, memfd's) its size, zero-filled, every page
 * allocated now on Linux: tmpfs gives a page only when it is first touched, and one it
 * has no room for then raises SIGBUS (a container's 64 MiB /dev/shm is the usual
 * victim), so a full /dev/shm fails here with UV_ENOSPC instead. Retries a signal's
 * interruption. Returns 0 or a UV_E* code. In src/unix/seg.c. */
int pp__unix_shm_allocate(int fd, off_t len);

/* The number of threads in this process, or -1 when it cannot be known here. */
int pp__unix_thread_count(void);

/* 1 + the highest descriptor this process has open (Linux: /proc/self/fd; elsewhere a
 * probe of the first 4096 numbers). */
int pp__unix_fd_ceiling(void);

#endif
