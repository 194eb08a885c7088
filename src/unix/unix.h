/* What the Unix start methods share: forking safely, and setting up a child. */
#ifndef PP_UNIX_H
#define PP_UNIX_H

#include <sys/types.h>

/* Forks with every signal blocked, so that no handler of the parent's (libuv's among
 * them) runs in the child before the child has reset them. stdio is flushed first, so
 * buffered output is not written twice. Returns the pid (0 in the child) or a UV_E*
 * error. In the child, signals stay blocked until pp__unix_child_reset. */
pid_t pp__unix_fork(int *err);

/* In a forked child: every caught signal back to its default, the signal mask empty,
 * stdin on the null device, and every descriptor but 0, 1, 2 and the nkeep in keep
 * closed, up to the highest number there is (not only up to RLIMIT_NOFILE). Only
 * async-signal-safe calls, as a child of a threaded parent requires. Returns 0 or an
 * errno value. */
int pp__unix_child_reset(const int *keep, int nkeep);

/* Writes errno value err to fd and ends the child: how a forked child reports that its
 * set-up failed. */
void pp__unix_child_fail(int fd, int err);

/* Forks a child that keeps only stdio and `keep` (pp__unix_child_reset), then calls
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

/* The number of threads in this process, or -1 when it cannot be known here. */
int pp__unix_thread_count(void);

#endif
