/* The forkserver start method. On first use, the process starts a server: the program
 * executed afresh (started as a spawned worker is, so it holds nothing of the parent),
 * which enters pp__forkserver_main through pp_main. Workers are forked from that server, so they
 * start cheaply yet see only a fresh program's state, as spawned ones do.
 *
 * One server serves every pool of the process. The process holds one master connection
 * to it, used under a lock only to hand the server a connection of each pool's own; a
 * pool waits for the server's greeting on that connection (not holding the lock), then
 * talks to the server on its own loop. All connections are anonymous socket pairs,
 * inherited or passed with SCM_RIGHTS: nothing has a name another user could reach. The
 * server forks a worker per request, gets the worker's end of its channel from the pool
 * with the request, with the pool's stdout and stderr as they are at that moment, and
 * reports each worker's pid and, once it has reaped it, its wait status.
 *
 * The server is started without copying this process (posix_spawn: see
 * pp__unix_spawn), and lives as long as this process: a pool that ends leaves it idle
 * for the next. It ends when the master connection closes, which only this process's
 * end does (exit, exec or death: the connection is close-on-exec), short of its being
 * set aside as below; a child the application forks without exec holds a copy of the
 * connection, and keeps the server as long as it lives. A server that cannot take a new connection (out of
 * descriptors, at PP__FS_MAX_CONNS, stopped) is set aside: the pool that asked gets
 * PP_ESPAWN saying why, and the next pool starts a new server. If a server dies first,
 * its workers are not this process's children, and their pids may be anyone's by then:
 * they are never signalled. Their pools close their channels instead (an idle worker
 * reads end-of-file and exits, a busy one is ended by its hang-up watcher) and report
 * them ended with their server; a new server is started. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../os.h"
#include "../serve.h"
#include "../worker.h"
#include "unix.h"

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

#define PP__FS_MARK "--procpool-forkserver="
#define PP__FS_MAX_CONNS 4096
#define PP__FS_MAX_FDS 3
/* How long a pool whose connection ended unanswered waits for the server's reason (or
 * its end) on the master connection: either comes at once, so this only bounds a wait
 * that holds the process-wide lock. */
#define PP__FS_PROBE_MS 2000

/* ---- Sending and receiving a message with up to PP__FS_MAX_FDS descriptors --------- */

static int pp__fs_send(int fd, const pp__fs_msg *m, const int *pass, int npass) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(PP__FS_MAX_FDS * sizeof(int))];
  } cbuf;
  struct msghdr msg;
  struct iovec iov;
  ssize_t r;

  memset(&msg, 0, sizeof(msg));
  iov.iov_base = (void *) m;
  iov.iov_len = sizeof(*m);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (npass > 0) {
    struct cmsghdr *c;
    memset(&cbuf, 0, sizeof(cbuf));
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = CMSG_SPACE((size_t) npass * sizeof(int));
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t) npass * sizeof(int));
    memcpy(CMSG_DATA(c), pass, (size_t) npass * sizeof(int));
  }
  do
    r = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (r == -1 && errno == EINTR);
  if (r == -1)
    return uv_translate_sys_error(errno);
  /* Messages are far below a socket's buffer; a short write means the peer is gone. */
  return r == (ssize_t) sizeof(*m) ? 0 : UV_EPIPE;
}

static void pp__fs_close_all(int *fds, int *nfds) {
  while (*nfds > 0)
    close(fds[--*nfds]);
}

/* Receives one whole message, and the descriptors that came with it into fds (at most
 * PP__FS_MAX_FDS, made close-on-exec on arrival; *nfds says how many). *dropped is set
 * when the kernel dropped some that were sent (MSG_CTRUNC): this process is out of
 * descriptors. Returns 0, UV_EOF, UV_EAGAIN (nothing there, with dontwait) or an error;
 * on anything but 0, *nfds is 0. */
static int pp__fs_recv(int fd, pp__fs_msg *m, int *fds, int *nfds, int *dropped,
                       int dontwait) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(PP__FS_MAX_FDS * sizeof(int))];
  } cbuf;
  struct msghdr msg;
  struct iovec iov;
  size_t have = 0;

  *nfds = 0;
  *dropped = 0;
  while (have < sizeof(*m)) {
    struct cmsghdr *c;
    ssize_t r;
    memset(&msg, 0, sizeof(msg));
    iov.iov_base = (char *) m + have;
    iov.iov_len = sizeof(*m) - have;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = sizeof(cbuf.buf);
    do
      r = recvmsg(fd, &msg, (have == 0 && dontwait ? MSG_DONTWAIT : 0) | MSG_CMSG_CLOEXEC);
    while (r == -1 && errno == EINTR);
    if (r <= 0) {
      int err = r == 0 ? UV_EOF
                : errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN
                : uv_translate_sys_error(errno);
      pp__fs_close_all(fds, nfds);
      return err;
    }
    if (msg.msg_flags & MSG_CTRUNC)
      *dropped = 1;
    for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      size_t i, n;
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        continue;
      n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (i = 0; i < n; i++) {
        int extra;
        memcpy(&extra, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (*nfds < PP__FS_MAX_FDS)
          fds[(*nfds)++] = extra;
        else
          close(extra);
      }
    }
    have += (size_t) r;
  }
  return 0;
}

/* ---- The server -------------------------------------------------------------------- */

typedef struct pp__fs_child {
  pid_t pid;
  int conn;
  uint64_t token;
} pp__fs_child;

/* What a worker is forked with: its channel, and the pool's stdout and stderr (-1: the
 * pool had that one closed). */
typedef struct pp__fs_fork {
  int chan;
  int out;
  int err;
} pp__fs_fork;

static int pp__fs_sigpipe[2] = { -1, -1 };

static void pp__fs_on_sigchld(int sig) {
  int saved = errno;
  char c = 0;
  ssize_t r = write(pp__fs_sigpipe[1], &c, 1);

  (void) sig;
  (void) r;
  errno = saved;
}

static PP__NORETURN void pp__fs_worker_exit(int code) {
  fflush(NULL);
  _exit(code);
}

/* In a child of the server: from onto to, or to closed when from is -1. */
static int pp__fs_stdio(int from, int to) {
  int r;

  if (from < 0) {
    close(to);
    return 0;
  }
  do
    r = dup2(from, to);
  while (r == -1 && errno == EINTR);
  if (r == -1)
    return -1;
  close(from);
  return 0;
}

/* In a child of the server: take the pool's stdout and stderr, then serve on the
 * channel. */
static void pp__fs_worker_child(void *arg, int report) {
  const pp__fs_fork *f = (const pp__fs_fork *) arg;
  pp__serve_ctx ctx;

  /* The pool's, as they were when it asked for this worker: a worker prints where a
   * spawned or forked one would, also after the program moved them with dup2. */
  if (pp__fs_stdio(f->out, 1) != 0 || pp__fs_stdio(f->err, 2) != 0)
    pp__unix_child_fail(report, errno);
  close(report);
  ctx.chan.h = f->chan;
  ctx.exit = pp__fs_worker_exit;
  pp__serve(&ctx);
}

/* Forks one worker. Returns its pid, or -errno. */
static pid_t pp__fs_fork_worker(const pp__fs_fork *f) {
  int keep[3], nkeep = 0, err = 0;
  pid_t pid;

  keep[nkeep++] = f->chan;
  if (f->out >= 0)
    keep[nkeep++] = f->out;
  if (f->err >= 0)
    keep[nkeep++] = f->err;
  pid = pp__unix_fork_child(keep, nkeep, pp__fs_worker_child, (void *) f, &err);
  return pid > 0 ? pid : (pid_t) err;
}

static void pp__fs_reap(pp__fs_child *kids, size_t *nkids) {
  for (;;) {
    int status;
    size_t i;
    /* Every child of the server is a worker it forked: waiting for any is right here. */
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      if (pid == -1 && errno == EINTR)
        continue;
      return;
    }
    for (i = 0; i < *nkids; i++) {
      if (kids[i].pid != pid)
        continue;
      if (kids[i].conn >= 0) {
        pp__fs_msg m;
        m.type = PP__FS_EXITED;
        m.value = status;
        m.token = kids[i].token;
        pp__fs_send(kids[i].conn, &m, NULL, 0);
      }
      kids[i] = kids[--*nkids];
      break;
    }
  }
}

/* A FORK request: forks the worker, or says why not. */
static void pp__fs_on_fork(int conn, const pp__fs_msg *m, const int *fds, int nfds,
                           int dropped, pp__fs_child **kids, size_t *nkids,
                           size_t *capkids) {
  pp__fs_msg reply;
  pp__fs_fork f;
  int want = 1 + ((m->value & PP__FS_STDOUT) != 0) + ((m->value & PP__FS_STDERR) != 0);
  int k = 1;
  pid_t pid;

  reply.token = m->token;
  reply.type = PP__FS_FAILED;
  if (dropped || nfds != want) {
    /* Out of descriptors, most likely: it is the one way to lose them on the way. */
    reply.value = dropped ? EMFILE : EINVAL;
    pp__fs_send(conn, &reply, NULL, 0);
    return;
  }
  f.chan = fds[0];
  f.out = m->value & PP__FS_STDOUT ? fds[k++] : -1;
  f.err = m->value & PP__FS_STDERR ? fds[k++] : -1;
  pid = pp__fs_fork_worker(&f);
  if (pid > 0 && *nkids == *capkids) {
    size_t cap = *capkids ? *capkids * 2 : 16;
    pp__fs_child *grown = realloc(*kids, cap * sizeof(**kids));
    if (grown == NULL) {
      /* Not reaped yet, so the pid is still this child's. */
      kill(pid, SIGKILL);
    } else {
      *kids = grown;
      *capkids = cap;
    }
  }
  if (pid > 0 && *nkids < *capkids) {
    (*kids)[*nkids].pid = pid;
    (*kids)[*nkids].conn = conn;
    (*kids)[*nkids].token = m->token;
    ++*nkids;
    reply.type = PP__FS_FORKED;
    reply.value = (int32_t) pid;
  } else {
    reply.value = pid < 0 ? (int32_t) -pid : ENOMEM;
  }
  pp__fs_send(conn, &reply, NULL, 0);
}

int pp__forkserver_main(const char *spec) {
  struct pollfd *pfd;
  pp__fs_child *kids = NULL;
  size_t nkids = 0, capkids = 0;
  int *conns;
  size_t nconns = 1, i;
  struct sigaction sa;
  char *end;
  long master = strtol(spec, &end, 10);
  int fd;

  if (*spec == '\0' || *end != '\0' || master < 0) {
    fprintf(stderr, "procpool forkserver: bad channel '%s'\n", spec);
    exit(PP__EXIT_SETUP);
  }
  fcntl((int) master, F_SETFD, FD_CLOEXEC);
  /* 0, 1 and 2 taken, so that no descriptor received later gets their number: a
   * worker's stdout and stderr are put there with dup2. */
  for (fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) == -1 && open("/dev/null", O_RDWR) == -1) {
      fprintf(stderr, "procpool forkserver: cannot open /dev/null\n");
      exit(PP__EXIT_SETUP);
    }
  pfd = calloc(PP__FS_MAX_CONNS + 2, sizeof(*pfd));
  conns = calloc(PP__FS_MAX_CONNS + 1, sizeof(*conns));
  if (pfd == NULL || conns == NULL || uv_pipe(pp__fs_sigpipe, UV_NONBLOCK_PIPE,
                                              UV_NONBLOCK_PIPE) != 0) {
    fprintf(stderr, "procpool forkserver: cannot set itself up\n");
    exit(PP__EXIT_SETUP);
  }
  conns[0] = (int) master;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = pp__fs_on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL);
  /* A pool that went away must not kill the server with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  /* Tell the process that started it that it reached pp_main. */
  {
    pp__fs_msg hello;
    hello.type = PP__FS_HELLO;
    hello.value = (int32_t) getpid();
    hello.token = 0;
    if (pp__fs_send((int) master, &hello, NULL, 0) != 0)
      exit(0);
  }

  for (;;) {
    pfd[0].fd = pp__fs_sigpipe[0];
    pfd[0].events = POLLIN;
    for (i = 0; i < nconns; i++) {
      pfd[i + 1].fd = conns[i];
      pfd[i + 1].events = POLLIN;
      pfd[i + 1].revents = 0;
    }
    if (poll(pfd, nconns + 1, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (pfd[0].revents) {
      char drain[64];
      while (read(pp__fs_sigpipe[0], drain, sizeof(drain)) > 0)
        ;
      pp__fs_reap(kids, &nkids);
    }
    for (i = 0; i < nconns; i++) {
      pp__fs_msg m, reply;
      int fds[PP__FS_MAX_FDS], nfds, dropped, err;
      if (!(pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      err = pp__fs_recv(conns[i], &m, fds, &nfds, &dropped, 1);
      if (err == UV_EAGAIN)
        continue;
      if (err != 0) {
        size_t k;
        if (i == 0) {
          /* The process that started the server is gone, or done with it. */
          exit(0);
        }
        /* A pool ended: its workers end when their channels close; no one is left to
         * tell about them. */
        for (k = 0; k < nkids; k++)
          if (kids[k].conn == conns[i])
            kids[k].conn = -1;
        close(conns[i]);
        conns[i] = conns[--nconns];
        pfd[i + 1] = pfd[nconns + 1];
        i--;
        continue;
      }
      reply.token = 0;
      if (m.type == PP__FS_ADD && i == 0) {
        if (nfds == 1 && !dropped && nconns < PP__FS_MAX_CONNS + 1) {
          conns[nconns++] = fds[0];
          nfds = 0;
          pfd[nconns].revents = 0;
          reply.type = PP__FS_HELLO;
          reply.value = (int32_t) getpid();
          pp__fs_send(conns[nconns - 1], &reply, NULL, 0);
        } else {
          /* The pool sees only its connection end (the kernel dropped it, or it is
           * closed below): say why where the process will look. */
          reply.type = PP__FS_REFUSED;
          reply.value = nfds == 1 && !dropped ? 0 : EMFILE;
          pp__fs_send((int) master, &reply, NULL, 0);
        }
      } else if (m.type == PP__FS_FORK && i > 0) {
        pp__fs_on_fork(conns[i], &m, fds, nfds, dropped, &kids, &nkids, &capkids);
      } else if (m.type == PP__FS_KILL && i > 0) {
        size_t k;
        /* Only a child not yet reaped is killed, so the pid cannot be another's. */
        for (k = 0; k < nkids; k++)
          if (kids[k].conn == conns[i] && kids[k].token == m.token)
            kill(kids[k].pid, SIGKILL);
      }
      pp__fs_close_all(fds, &nfds);
    }
  }
  exit(0);
}

/* ---- The pool's side: the servers of this process ----------------------------------- */

/* One record per server process. The listed ones are where new pools connect: one per
 * worker program (pools with different worker_executable values need different
 * servers). A server found gone, or set aside because it could not take a connection,
 * is unlisted; its record lives on while pools hold it. Every field, and the list, is
 * under the lock, which is never held across an unbounded wait. */
typedef struct pp__fs_server {
  struct pp__fs_server *next;
  char *exe;
  pid_t pid;          /* the server, this process's child; 0 once reaped */
  long shown_pid;     /* its pid for messages, also once reaped */
  int master;         /* -1 once the server is known to be gone */
  int listed;
  unsigned refs;      /* pools connected to it */
} pp__fs_server;

static uv_once_t pp__fs_once = UV_ONCE_INIT;
static uv_mutex_t pp__fs_lock;
static pp__fs_server *pp__fs_servers;

static void pp__fs_init_lock(void) {
  if (uv_mutex_init(&pp__fs_lock) != 0)
    abort();
}

/* Kills and reaps a server. It is this process's child and not reaped yet, so the pid is
 * its own; after SIGKILL the wait is only as long as the kernel's clean-up, the one kind
 * of wait allowed under the lock. Says how it ended in how (may be NULL). A server that
 * had exited already keeps its own status: the signal does not change it. */
static void pp__fs_kill_reap(pid_t pid, char *how, size_t how_size) {
  int status = 0;
  pid_t r;

  kill(pid, SIGKILL);
  do
    r = waitpid(pid, &status, 0);
  while (r == -1 && errno == EINTR);
  if (how == NULL)
    return;
  if (r != pid)
    snprintf(how, how_size, "ended");
  else if (WIFSIGNALED(status))
    pp__os_describe_exit(0, WTERMSIG(status), how, how_size);
  else
    pp__os_describe_exit(WEXITSTATUS(status), 0, how, how_size);
}

static void pp__fs_unlist(pp__fs_server *srv) {
  pp__fs_server **p;

  if (!srv->listed)
    return;
  for (p = &pp__fs_servers; *p != NULL; p = &(*p)->next)
    if (*p == srv) {
      *p = srv->next;
      break;
    }
  srv->listed = 0;
}

/* The server is gone, or must go: no new pool connects to it, its master connection
 * closes (which ends it) and it is reaped. Harmless when done already. */
static void pp__fs_end(pp__fs_server *srv, char *how, size_t how_size) {
  pp__fs_unlist(srv);
  if (srv->master >= 0)
    close(srv->master);
  srv->master = -1;
  if (srv->pid > 0)
    pp__fs_kill_reap(srv->pid, how, how_size);
  else if (how != NULL)
    snprintf(how, how_size, "ended");
  srv->pid = 0;
}

/* A listed server stays, idle, when its last pool ends: the next pool gets workers from
 * it at once, and is not charged a new server's start. */
static void pp__fs_free_if_unused(pp__fs_server *srv) {
  if (srv->refs > 0 || srv->listed)
    return;
  pp__fs_end(srv, NULL, 0);
  free(srv->exe);
  free(srv);
}

/* Waits for the new server's hello: it reached pp_main. Returns 0, or PP_ESPAWN with why
 * saying how it ended or that it took too long (it is then killed and reaped). */
static int pp__fs_await_hello(pp__fs_server *srv, uint64_t timeout_ms, char *why,
                              size_t why_size) {
  struct pollfd p;
  pp__fs_msg m;
  int r, fds[PP__FS_MAX_FDS], nfds, dropped, err = UV_ETIMEDOUT;
  char how[128];

  p.fd = srv->master;
  p.events = POLLIN;
  do
    r = poll(&p, 1, timeout_ms > INT32_MAX ? INT32_MAX : (int) timeout_ms);
  while (r == -1 && errno == EINTR);
  if (r == 1) {
    err = pp__fs_recv(srv->master, &m, fds, &nfds, &dropped, 0);
    pp__fs_close_all(fds, &nfds);
    if (err == 0 && m.type == PP__FS_HELLO)
      return 0;
  }
  pp__fs_end(srv, how, sizeof(how));
  if (err == UV_ETIMEDOUT)
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) did not reach pp_main within "
             "%llu ms (stuck before it?); it was killed", srv->exe, srv->shown_pid,
             (unsigned long long) timeout_ms);
  else
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) %s before it reached pp_main "
             "(does main() call pp_main first?)", srv->exe, srv->shown_pid, how);
  return PP_ESPAWN;
}

/* Starts a server for exe and lists it: the worker program with the server's mark,
 * started as spawned workers are (pp__unix_spawn: posix_spawn, no copy of this process,
 * which may be big), its master connection at PP__UNIX_CHILD_FD. */
static int pp__fs_start_server(const char *exe, uint64_t timeout_ms, pp__fs_server **out,
                               char *why, size_t why_size) {
  uv_os_sock_t fds[2];
  pp__fs_server *srv;
  char mark[sizeof(PP__FS_MARK) + 16];
  char *args[3];
  pid_t pid;
  int err;

  srv = calloc(1, sizeof(*srv));
  if (srv == NULL || (srv->exe = malloc(strlen(exe) + 1)) == NULL) {
    free(srv);
    snprintf(why, why_size, "out of memory");
    return PP_ENOMEM;
  }
  strcpy(srv->exe, exe);
  srv->master = -1;
  err = uv_socketpair(SOCK_STREAM, 0, fds, 0, 0);
  if (err != 0) {
    snprintf(why, why_size, "cannot make the forkserver's channel: %s", uv_strerror(err));
    pp__fs_free_if_unused(srv);
    return err;
  }
  snprintf(mark, sizeof(mark), "%s%d", PP__FS_MARK, PP__UNIX_CHILD_FD);
  args[0] = srv->exe;
  args[1] = mark;
  args[2] = NULL;
  err = pp__unix_spawn(srv->exe, args, fds[1], &pid);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    snprintf(why, why_size, "cannot start the forkserver '%s': %s", exe, uv_strerror(err));
    pp__fs_free_if_unused(srv);
    return err;
  }
  srv->pid = pid;
  srv->shown_pid = (long) pid;
  srv->master = fds[0];
  err = pp__fs_await_hello(srv, timeout_ms, why, why_size);
  if (err != 0) {
    pp__fs_free_if_unused(srv);
    return err;
  }
  srv->next = pp__fs_servers;
  pp__fs_servers = srv;
  srv->listed = 1;
  *out = srv;
  return 0;
}

/* A pool's new connection ended, or stayed silent, before the server's greeting: finds
 * out why and sets the server aside, so that the next pool starts a new one. Under the
 * lock. */
static void pp__fs_explain(pp__fs_server *srv, int err, uint64_t timeout_ms, char *why,
                           size_t why_size) {
  struct pollfd p;
  pp__fs_msg m;
  int r, fds[PP__FS_MAX_FDS], nfds, dropped, got = UV_EAGAIN;
  char how[128];

  if (!srv->listed) {
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) was found gone or set aside by "
             "another pool before it took this pool's connection; the next pool starts a "
             "new one", srv->exe, srv->shown_pid);
    return;
  }
  if (err == UV_ETIMEDOUT) {
    pp__fs_unlist(srv);
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) did not take this pool's "
             "connection within %llu ms (is it stopped or stuck?); it gets no new pools, "
             "and the next pool starts a new server", srv->exe, srv->shown_pid,
             (unsigned long long) timeout_ms);
    return;
  }
  /* It closed the connection unanswered: either it refused it, and has said why on the
   * master connection by now or will in a moment, or it is ending, and that connection
   * ends too. */
  p.fd = srv->master;
  p.events = POLLIN;
  do
    r = poll(&p, 1, PP__FS_PROBE_MS);
  while (r == -1 && errno == EINTR);
  if (r == 1) {
    got = pp__fs_recv(srv->master, &m, fds, &nfds, &dropped, 1);
    pp__fs_close_all(fds, &nfds);
  }
  if (got == 0 && m.type == PP__FS_REFUSED && m.value == 0) {
    pp__fs_unlist(srv);
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) refused this pool's connection: "
             "it serves %d connections already, its most; it gets no new pools, and the "
             "next pool starts a new server", srv->exe, srv->shown_pid, PP__FS_MAX_CONNS);
  } else if (got == 0 && m.type == PP__FS_REFUSED) {
    pp__fs_unlist(srv);
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) could not take this pool's "
             "connection: it is out of descriptors (%s); it gets no new pools, and the "
             "next pool starts a new server", srv->exe, srv->shown_pid,
             uv_strerror(uv_translate_sys_error(m.value)));
  } else if (got != 0 && got != UV_EAGAIN) {
    pp__fs_end(srv, how, sizeof(how));
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) %s before it took this pool's "
             "connection; the next pool starts a new one", srv->exe, srv->shown_pid, how);
  } else {
    pp__fs_unlist(srv);
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) closed this pool's connection "
             "unanswered (%s); it gets no new pools, and the next pool starts a new "
             "server", srv->exe, srv->shown_pid, uv_strerror(err));
  }
}

/* Waits, not holding the lock, for the server's greeting on a pool's new connection: it
 * took the connection. Returns 0 with the server's pid, or PP_ESPAWN saying why not. */
static int pp__fs_await_greeting(pp__fs_server *srv, int conn, uint64_t timeout_ms,
                                 long *server_pid, char *why, size_t why_size) {
  struct pollfd p;
  pp__fs_msg m;
  int r, fds[PP__FS_MAX_FDS], nfds, dropped, err = UV_ETIMEDOUT;
  uint64_t start = uv_hrtime(), waited;

  p.fd = conn;
  p.events = POLLIN;
  for (;;) {
    waited = (uv_hrtime() - start) / 1000000u;
    if (waited >= timeout_ms)
      break;
    r = poll(&p, 1, timeout_ms - waited > INT32_MAX ? INT32_MAX : (int) (timeout_ms - waited));
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1) {
      err = uv_translate_sys_error(errno);
    } else if (r == 1) {
      err = pp__fs_recv(conn, &m, fds, &nfds, &dropped, 0);
      pp__fs_close_all(fds, &nfds);
      if (err == 0 && m.type == PP__FS_HELLO) {
        *server_pid = (long) m.value;
        return 0;
      }
      if (err == 0)
        err = UV_EPROTO;
    }
    if (r != 0)
      break;
  }
  uv_mutex_lock(&pp__fs_lock);
  pp__fs_explain(srv, err, timeout_ms, why, why_size);
  uv_mutex_unlock(&pp__fs_lock);
  return PP_ESPAWN;
}

/* Gives the caller a connection of its own to the server of exe, starting the server if
 * there is none or the one there was has died. */
static int pp__fs_connect(const char *exe, uint64_t timeout_ms, pp__fs_server **out,
                          int *conn, long *server_pid, char *why, size_t why_size) {
  uv_os_sock_t fds[2];
  pp__fs_server *srv = NULL;
  pp__fs_msg m;
  int err, attempt;

  err = uv_socketpair(SOCK_STREAM, 0, fds, 0, 0);
  if (err != 0) {
    snprintf(why, why_size, "cannot make a forkserver connection: %s", uv_strerror(err));
    return err;
  }
  memset(&m, 0, sizeof(m));
  m.type = PP__FS_ADD;
  uv_once(&pp__fs_once, pp__fs_init_lock);
  uv_mutex_lock(&pp__fs_lock);
  for (attempt = 0; attempt < 2; attempt++) {
    char how[128];
    for (srv = pp__fs_servers; srv != NULL; srv = srv->next)
      if (strcmp(srv->exe, exe) == 0)
        break;
    if (srv == NULL) {
      err = pp__fs_start_server(exe, timeout_ms, &srv, why, why_size);
      if (err != 0)
        break;
    }
    err = pp__fs_send(srv->master, &m, &fds[1], 1);
    if (err == 0) {
      srv->refs++;
      break;
    }
    /* It died since it was last used: the next attempt starts another. */
    pp__fs_end(srv, how, sizeof(how));
    snprintf(why, why_size, "the forkserver '%s' (pid %ld) %s", exe, srv->shown_pid, how);
    pp__fs_free_if_unused(srv);
    srv = NULL;
  }
  uv_mutex_unlock(&pp__fs_lock);
  close(fds[1]);
  if (srv == NULL) {
    close(fds[0]);
    return err;
  }
  err = pp__fs_await_greeting(srv, fds[0], timeout_ms, server_pid, why, why_size);
  if (err != 0) {
    close(fds[0]);
    uv_mutex_lock(&pp__fs_lock);
    srv->refs--;
    pp__fs_free_if_unused(srv);
    uv_mutex_unlock(&pp__fs_lock);
    return err;
  }
  *out = srv;
  *conn = fds[0];
  return 0;
}

/* A pool is done with its server. The last one leaves it idle if it is listed, and ends
 * it if it was set aside. */
static void pp__fs_release(pp__fs_server *srv) {
  uv_mutex_lock(&pp__fs_lock);
  srv->refs--;
  pp__fs_free_if_unused(srv);
  uv_mutex_unlock(&pp__fs_lock);
}

/* ---- The pool's side: its connection ----------------------------------------------- */

typedef struct pp__fs_pool {
  uv_poll_t poll;
  int conn;
  long server_pid;    /* from the server's greeting on this connection */
  pp_pool *pool;
  pp__fs_server *server;
} pp__fs_pool;

static int pp__fs_warned_death;

static pp__worker *pp__fs_worker(pp_pool *pool, uint64_t token) {
  pp__qnode *q;

  for (q = pp__q_head(&pool->workers); q != &pool->workers; q = q->next) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    if (w->token == token)
      return w;
  }
  return NULL;
}

static void pp__fs_on_poll_closed(uv_handle_t *h) {
  pp__fs_pool *fp = (pp__fs_pool *) h->data;
  pp_pool *pool = fp->pool;

  close(fp->conn);
  pp__fs_release(fp->server);
  free(fp);
  pp__pool_handle_closed(pool);
}

/* No server can end or report w any more. It is not this process's child, and its pid
 * may be anyone's by now: it is never signalled. Shutting down the pool's end of its
 * channel ends it instead (an idle worker reads end-of-file and exits, a busy one is
 * ended by its hang-up watcher), without closing the descriptor under libuv; its end is
 * reported now, with a status that says it is unknown. */
static void pp__fs_cut(pp__worker *w) {
  uv_os_fd_t fd;

  if (uv_fileno((const uv_handle_t *) &w->pipe, &fd) == 0)
    shutdown(fd, SHUT_RDWR);
  pp__worker_on_exit(w, PP__EXIT_FORKSERVER_GONE, 0);
}

/* The server is gone (the connection ended): the workers it had started are cut off,
 * and the next start connects to a new server. */
static void pp__fs_lost(pp_pool *pool) {
  pp__fs_pool *fp = (pp__fs_pool *) pool->method_data;
  pp__qnode *q, *last;
  char why[512];

  pp__warn_once(&pp__fs_warned_death, "the forkserver '%s' (pid %ld) ended: the workers "
                "it had started were cut off from their pools and end by themselves, and "
                "a new server will be started", pool->exe, fp->server_pid);
  snprintf(why, sizeof(why), "the forkserver '%s' (pid %ld) ended before it reported "
           "the worker it was asked to start", pool->exe, fp->server_pid);
  pool->method_data = NULL;
  uv_poll_stop(&fp->poll);
  uv_close((uv_handle_t *) &fp->poll, pp__fs_on_poll_closed);
  /* Replacements started below join the list's tail; they belong to a new server. */
  last = pool->workers.prev;
  for (q = pp__q_head(&pool->workers); q != &pool->workers;) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    int done = q == last;
    q = q->next;
    if (!w->exited) {
      /* A worker that greeted its pool exists, even if the server's word of it was
       * lost; one that did neither may never have been forked. */
      if (w->pid > 0 || w->got_hello)
        pp__fs_cut(w);
      else
        pp__worker_on_start_failed(w, why);
    }
    if (done)
      break;
  }
}

static void pp__fs_on_readable(uv_poll_t *h, int status, int events) {
  pp__fs_pool *fp = (pp__fs_pool *) h->data;
  pp_pool *pool = fp->pool;

  (void) events;
  if (status < 0) {
    pp__fs_lost(pool);
    return;
  }
  for (;;) {
    pp__fs_msg m;
    pp__worker *w;
    int fds[PP__FS_MAX_FDS], nfds, dropped;
    int err = pp__fs_recv(fp->conn, &m, fds, &nfds, &dropped, 1);
    pp__fs_close_all(fds, &nfds);
    if (err == UV_EAGAIN)
      return;
    if (err != 0) {
      pp__fs_lost(pool);
      return;
    }
    w = pp__fs_worker(pool, m.token);
    if (w == NULL || w->exited)
      continue;
    if (m.type == PP__FS_FORKED) {
      w->pid = (long) m.value;
    } else if (m.type == PP__FS_FAILED) {
      char why[512];
      snprintf(why, sizeof(why), "the forkserver '%s' (pid %ld) could not fork a worker: %s",
               pool->exe, fp->server_pid, uv_strerror(uv_translate_sys_error(m.value)));
      pp__worker_on_start_failed(w, why);
    } else if (m.type == PP__FS_EXITED) {
      if (WIFSIGNALED(m.value))
        pp__worker_on_exit(w, 0, WTERMSIG(m.value));
      else
        pp__worker_on_exit(w, WEXITSTATUS(m.value), 0);
    }
  }
}

static int pp__fs_open(pp_pool *pool, char *why, size_t why_size) {
  pp__fs_pool *fp = calloc(1, sizeof(*fp));
  int err;

  if (fp == NULL)
    return PP_ENOMEM;
  err = pp__fs_connect(pool->exe, pool->start_timeout_ms, &fp->server, &fp->conn,
                       &fp->server_pid, why, why_size);
  if (err != 0) {
    free(fp);
    return err;
  }
  fp->pool = pool;
  err = uv_poll_init(pool->loop, &fp->poll, fp->conn);
  if (err != 0) {
    close(fp->conn);
    pp__fs_release(fp->server);
    free(fp);
    snprintf(why, why_size, "cannot watch the forkserver connection: %s", uv_strerror(err));
    return err;
  }
  fp->poll.data = fp;
  pool->open_handles++;
  pool->method_data = fp;
  uv_poll_start(&fp->poll, UV_READABLE, pp__fs_on_readable);
  return 0;
}

static int pp__fs_pool_init(pp_pool *pool) {
  char why[512] = "";
  int err = pp__fs_open(pool, why, sizeof(why));

  if (err != 0)
    fprintf(stderr, "procpool: %s\n", why);
  return err;
}

static void pp__fs_pool_end(pp_pool *pool) {
  pp__fs_pool *fp = (pp__fs_pool *) pool->method_data;

  if (fp == NULL)
    return;
  pool->method_data = NULL;
  uv_poll_stop(&fp->poll);
  uv_close((uv_handle_t *) &fp->poll, pp__fs_on_poll_closed);
}

static int pp__fs_start(pp__worker *w, char *why, size_t why_size) {
  pp_pool *pool = w->pool;
  pp__fs_pool *fp;
  uv_os_sock_t fds[2];
  pp__fs_msg m;
  int pass[PP__FS_MAX_FDS], npass = 0, err;

  if (pool->method_data == NULL) {
    err = pp__fs_open(pool, why, why_size);
    if (err != 0)
      return err;
  }
  fp = (pp__fs_pool *) pool->method_data;
  err = uv_socketpair(SOCK_STREAM, 0, fds, UV_NONBLOCK_PIPE, 0);
  if (err != 0) {
    snprintf(why, why_size, "cannot make a channel for a worker: %s", uv_strerror(err));
    return err;
  }
  err = uv_pipe_open(&w->pipe, fds[0]);
  if (err != 0) {
    close(fds[0]);
    close(fds[1]);
    snprintf(why, why_size, "cannot open a worker's channel: %s", uv_strerror(err));
    return err;
  }
  memset(&m, 0, sizeof(m));
  m.type = PP__FS_FORK;
  m.token = w->token;
  pass[npass++] = fds[1];
  /* This process's stdout and stderr as they are now, not the server's: spawned and
   * forked workers get them too. One that is closed here is closed in the worker. */
  if (fcntl(1, F_GETFD) != -1) {
    pass[npass++] = 1;
    m.value |= PP__FS_STDOUT;
  }
  if (fcntl(2, F_GETFD) != -1) {
    pass[npass++] = 2;
    m.value |= PP__FS_STDERR;
  }
  err = pp__fs_send(fp->conn, &m, pass, npass);
  close(fds[1]);
  if (err != 0) {
    snprintf(why, why_size, "cannot reach the forkserver '%s' (pid %ld): %s", pool->exe,
             fp->server_pid, uv_strerror(err));
    return err;
  }
  return 0;
}

static void pp__fs_kill(pp__worker *w) {
  pp__fs_pool *fp = (pp__fs_pool *) w->pool->method_data;
  pp__fs_msg m;

  if (w->exited)
    return;
  memset(&m, 0, sizeof(m));
  m.type = PP__FS_KILL;
  m.token = w->token;
  if (fp == NULL || pp__fs_send(fp->conn, &m, NULL, 0) != 0) {
    /* The server is gone: nothing can kill or report the worker but its channel. */
    pp__fs_cut(w);
    return;
  }
  /* Its fork not reported yet: the server takes requests in order, so it kills the
   * worker as soon as it has forked it (or it never forks it), and the report of that
   * end is not worth waiting for. */
  if (w->pid <= 0)
    pp__worker_on_exit(w, 0, SIGKILL);
}

static void pp__fs_close(pp__worker *w) { (void) w; }

static const pp__method_ops pp__fs_ops_impl = { pp__fs_pool_init, pp__fs_pool_end,
                                                pp__fs_start, pp__fs_kill, pp__fs_close };
const pp__method_ops *const pp__forkserver_ops = &pp__fs_ops_impl;
