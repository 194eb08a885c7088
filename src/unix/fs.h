/* A server that forks workers on request, and a pool's connection to it: what the
 * forkserver and fork methods share. They differ only in how the server is started and
 * found (an fs_source):
 *   forkserver (forkserver.c): one server per worker program for the whole process,
 *     started without copying this process (posix_spawn of the program), reached through
 *     a master connection; a pool gets a connection of its own to it.
 *   fork (fork.c): a "fork helper" per pool, forked from the thread that calls
 *     pp_pool_new, so that no worker is ever forked from the pool's loop thread while
 *     other threads of the application hold locks; it serves that pool's connection only
 *     and ends with it.
 * The server loop is fsserver.c, the pool's side fsclient.c. */
#ifndef PP_UNIX_FS_H
#define PP_UNIX_FS_H

#include <stddef.h>
#include <stdint.h>

#include "../methods.h"

/* One message, either way, on any connection. Both ends are this program, built once,
 * so native byte order and layout are fine. */
typedef struct pp__fs_msg {
  uint32_t type;
  int32_t value;    /* see the types */
  uint64_t token;   /* the worker's token, from the pool */
} pp__fs_msg;

enum {
  PP__FS_ADD = 1,   /* process -> server, on the master connection: a new connection (fd) */
  PP__FS_FORK,      /* pool -> server: fork a worker on this channel (fd), followed by
                     * the stdout and stderr that value's PP__FS_STD* bits name */
  PP__FS_KILL,      /* pool -> server: kill that worker */
  PP__FS_FORKED,    /* server -> pool: value is the pid */
  PP__FS_FAILED,    /* server -> pool: value is an errno value */
  PP__FS_EXITED,    /* server -> pool: value is the wait status */
  PP__FS_HELLO,     /* server -> process or pool, first on each connection: it reached
                     * pp_main (value: its pid) and took the connection */
  PP__FS_REFUSED    /* server -> process, on the master connection: an ADD it could not
                     * take; value: an errno value, or 0 when it has too many connections */
};

enum { PP__FS_STDOUT = 1, PP__FS_STDERR = 2 };

#define PP__FS_MAX_CONNS 4096
#define PP__FS_MAX_FDS 3

/* Sends one message with npass descriptors (at most PP__FS_MAX_FDS). 0 or an error. */
int pp__fs_send(int fd, const pp__fs_msg *m, const int *pass, int npass);

/* pp__fs_send of len bytes of buf, which need not be a whole message, with up to
 * PP__FS_SEND_MAX_FDS descriptors: more than a message carries, past pp__fs_recv's
 * buffer. Only the fuzz target (fuzz/fuzz-fs.c) sends such, as a broken peer would. */
#define PP__FS_SEND_MAX_FDS (PP__FS_MAX_FDS + 2)
int pp__fs_send_bytes(int fd, const void *buf, size_t len, const int *pass, int npass);

/* Receives one whole message, and the descriptors that came with it into fds (at most
 * PP__FS_MAX_FDS, made close-on-exec on arrival; *nfds says how many). *dropped is set
 * when the kernel dropped some that were sent (MSG_CTRUNC): this process is out of
 * descriptors. Returns 0, UV_EOF, UV_EAGAIN (nothing there, with dontwait) or an error;
 * on anything but 0, *nfds is 0. */
int pp__fs_recv(int fd, pp__fs_msg *m, int *fds, int *nfds, int *dropped, int dontwait);

/* Closes the *nfds descriptors in fds and sets *nfds to 0. */
void pp__fs_close_all(int *fds, int *nfds);

/* What a worker is forked with: its channel, and the pool's stdout and stderr (-1: the
 * pool had that one closed). */
typedef struct pp__fs_fork {
  int chan;
  int out;
  int err;
} pp__fs_fork;

/* The server's reading of a FORK request m that came with the nfds descriptors fds
 * (dropped: the kernel dropped some): fills f with descriptors of fds and returns 0, or
 * returns the errno value to refuse it with. */
int pp__fs_fork_decode(const pp__fs_msg *m, const int *fds, int nfds, int dropped,
                       pp__fs_fork *f);

/* The pool's reading of a server's report about a worker. */
typedef struct pp__fs_report {
  uint32_t type;     /* PP__FS_FORKED, PP__FS_FAILED, PP__FS_EXITED; 0: not a report */
  long pid;          /* FORKED */
  int err;           /* FAILED: a UV_E* error */
  int exit_status;   /* EXITED: the exit status, or 0 when ended by a signal */
  int term_signal;   /* EXITED: the signal that ended it, or 0 */
} pp__fs_report;

void pp__fs_report_decode(const pp__fs_msg *m, pp__fs_report *r);

/* The server loop (fsserver.c), in a process of its own. With master >= 0 (the
 * forkserver): greets master, takes new pool connections from it (PP__FS_ADD), and
 * returns when master ends; workers still running then end by their channels. With
 * master -1 (a fork helper): serves the one pool connection conn, and when that ends,
 * kills and reaps the workers it has left and returns. Returns the exit code the
 * process should end with: 0, or PP__EXIT_SETUP when it could not set itself up (said
 * on stderr). */
int pp__fs_serve(int master, int conn);

/* The fork helper: every descriptor number below floor was open in the parent it was
 * forked from. A worker's channel is moved to floor or above (pp__fs_serve's workers):
 * the parent's libuv, copied into the worker, closes its own descriptors by number when
 * the process exits (a task that calls exit()), and one of those numbers must not be the
 * worker's channel. 0 (the forkserver, a fresh program): no floor. */
void pp__fs_set_fd_floor(int floor);

/* ---- The pool's side --------------------------------------------------------------- */

/* A pool's link to its server. */
typedef struct pp__fs_link {
  int conn;          /* the pool's end of its connection */
  long server_pid;
  char *label;       /* malloc'd: "the forkserver '/bin/x' (pid 7)", for messages */
  void *data;        /* the source's own */
} pp__fs_link;

/* How a pool's server is started and found. */
typedef struct pp__fs_source {
  /* Gives pool a connection of its own to a server that has taken it: fills link, or
   * returns an error saying why. Called by pool_init, and again by a start once the
   * server was lost. */
  int (*open)(pp_pool *pool, pp__fs_link *link, char *why, size_t why_size);
  /* The pool is done with the link; link->conn is closed already. */
  void (*release)(pp__fs_link *link);
  /* The server ended under the pool (its connection ended): warns, once per process,
   * saying what happens next. */
  void (*lost)(pp_pool *pool, const pp__fs_link *link);
  /* 1: the server is the pool's own and ends with it. The pool's end then waits for its
   * end (its connection's end), and kills it if it is not over after a grace period. */
  int owned;
  /* The exit status a worker is reported with when its server ended before reporting
   * the worker's own (src/unix/unix.h). */
  int gone_status;
} pp__fs_source;

/* The method ops, over src (fsclient.c). pool_init returns the open's error, said on
 * stderr. */
int pp__fsc_pool_init(pp_pool *pool, const pp__fs_source *src);
void pp__fsc_pool_end(pp_pool *pool);
int pp__fsc_start(pp__worker *w, const pp__fs_source *src, char *why, size_t why_size);
void pp__fsc_kill(pp__worker *w, const pp__fs_source *src);
void pp__fsc_close(pp__worker *w);

#endif
