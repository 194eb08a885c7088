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
 * closed. Only async-signal-safe calls, as a child of a threaded parent requires.
 * Returns 0 or an errno value. */
int pp__unix_child_reset(const int *keep, int nkeep);

/* Writes errno value err to fd and ends the child: how a forked child reports that its
 * set-up failed. The parent reads it from a close-on-exec pipe. */
void pp__unix_child_fail(int fd, int err);

/* Reads a child's set-up report from the pipe's read end: 0 when the child closed it
 * (set-up done, or exec succeeded), else the errno value the child sent. */
int pp__unix_read_report(int fd);

/* The number of threads in this process, or -1 when it cannot be known here. */
int pp__unix_thread_count(void);

#endif
