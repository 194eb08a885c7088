/* The server loop of the forkserver and of the fork helper (see fs.h): it forks a
 * worker per FORK request, with the worker's end of its channel and the pool's stdout
 * and stderr as they were at the request, reports each worker's pid and, once it has
 * reaped it, its wait status. It is single-threaded, and every child it has is a worker
 * it forked. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../serve.h"
#include "fs.h"
#include "unix.h"

/* ---- Sending and receiving a message with up to PP__FS_MAX_FDS descriptors --------- */

int pp__fs_send(int fd, const pp__fs_msg *m, const int *pass, int npass) {
  return pp__fs_send_bytes(fd, m, sizeof(*m), pass, npass);
}

int pp__fs_send_bytes(int fd, const void *buf, size_t len, const int *pass, int npass) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(PP__FS_SEND_MAX_FDS * sizeof(int))];
  } cbuf;
  struct msghdr msg;
  struct iovec iov;
  ssize_t r;

  assert(npass >= 0 && npass <= PP__FS_SEND_MAX_FDS);
  memset(&msg, 0, sizeof(msg));
  iov.iov_base = (void *) buf;
  iov.iov_len = len;
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
  return r == (ssize_t) len ? 0 : UV_EPIPE;
}

void pp__fs_close_all(int *fds, int *nfds) {
  while (*nfds > 0)
    close(fds[--*nfds]);
}

int pp__fs_recv(int fd, pp__fs_msg *m, int *fds, int *nfds, int *dropped, int dontwait) {
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
static int pp__fs_fd_floor;

void pp__fs_set_fd_floor(int floor) { pp__fs_fd_floor = floor; }

static void pp__fs_worker_child(void *arg, int report) {
  const pp__fs_fork *f = (const pp__fs_fork *) arg;
  pp__serve_ctx ctx;
  int chan = f->chan;

  /* The pool's, as they were when it asked for this worker: a worker prints where a
   * spawned or forked one would, also after the program moved them with dup2. */
  if (pp__fs_stdio(f->out, 1) != 0 || pp__fs_stdio(f->err, 2) != 0)
    pp__unix_child_fail(report, errno);
  if (chan < pp__fs_fd_floor) {
    /* A floor at or over the descriptor limit (the parent held a descriptor above its
     * soft limit) leaves the channel where it is: only a task's exit() could then meet
     * the collision, as before the floor. */
    int high = fcntl(chan, F_DUPFD_CLOEXEC, pp__fs_fd_floor);
    if (high != -1) {
      close(chan);
      chan = high;
    }
  }
  close(report);
  memset(&ctx, 0, sizeof(ctx));
  ctx.chan.h = chan;
  ctx.chan.out = chan;
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

int pp__fs_fork_decode(const pp__fs_msg *m, const int *fds, int nfds, int dropped,
                       pp__fs_fork *f) {
  int want = 1 + ((m->value & PP__FS_STDOUT) != 0) + ((m->value & PP__FS_STDERR) != 0);
  int k = 1;

  /* Out of descriptors, most likely: it is the one way to lose them on the way. */
  if (dropped)
    return EMFILE;
  if (nfds != want)
    return EINVAL;
  f->chan = fds[0];
  f->out = m->value & PP__FS_STDOUT ? fds[k++] : -1;
  f->err = m->value & PP__FS_STDERR ? fds[k++] : -1;
  return 0;
}

/* A FORK request: forks the worker, or says why not. */
static void pp__fs_on_fork(int conn, const pp__fs_msg *m, const int *fds, int nfds,
                           int dropped, pp__fs_child **kids, size_t *nkids,
                           size_t *capkids) {
  pp__fs_msg reply;
  pp__fs_fork f;
  pid_t pid;

  reply.token = m->token;
  reply.type = PP__FS_FAILED;
  reply.value = pp__fs_fork_decode(m, fds, nfds, dropped, &f);
  if (reply.value != 0) {
    pp__fs_send(conn, &reply, NULL, 0);
    return;
  }
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


/* A fork helper's pool is done: the workers it has left (killed before their fork was
 * reported, or cut off from a pool that gave up on them) are killed and reaped. None is
 * reaped yet, so every pid is still this process's child. */
static void pp__fs_end_kids(pp__fs_child *kids, size_t nkids) {
  size_t k;
  int status;

  for (k = 0; k < nkids; k++) {
    kill(kids[k].pid, SIGKILL);
    while (waitpid(kids[k].pid, &status, 0) == -1 && errno == EINTR)
      ;
  }
}

int pp__fs_serve(int master, int conn) {
  struct pollfd *pfd;
  pp__fs_child *kids = NULL;
  size_t nkids = 0, capkids = 0;
  int *conns;
  size_t nconns = 1, i;
  struct sigaction sa;
  int fd;

  /* 0, 1 and 2 taken, so that no descriptor received later gets their number: a
   * worker's stdout and stderr are put there with dup2. */
  for (fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) == -1 && open("/dev/null", O_RDWR) == -1) {
      fprintf(stderr, "procpool forkserver: cannot open /dev/null\n");
      return PP__EXIT_SETUP;
    }
  pfd = calloc(PP__FS_MAX_CONNS + 2, sizeof(*pfd));
  conns = calloc(PP__FS_MAX_CONNS + 1, sizeof(*conns));
  if (pfd == NULL || conns == NULL || uv_pipe(pp__fs_sigpipe, UV_NONBLOCK_PIPE,
                                              UV_NONBLOCK_PIPE) != 0) {
    fprintf(stderr, "procpool forkserver: cannot set itself up\n");
    free(pfd);
    free(conns);
    return PP__EXIT_SETUP;
  }
  conns[0] = master >= 0 ? master : conn;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = pp__fs_on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL);
  /* A pool that went away must not kill the server with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  /* Tell the process that started it that it reached pp_main. (A fork helper's pool
   * knows that from the fork itself.) */
  if (master >= 0) {
    pp__fs_msg hello;
    hello.type = PP__FS_HELLO;
    hello.value = (int32_t) getpid();
    hello.token = 0;
    if (pp__fs_send(master, &hello, NULL, 0) != 0)
      goto done;
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
      int from_master = master >= 0 && i == 0;
      if (!(pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      err = pp__fs_recv(conns[i], &m, fds, &nfds, &dropped, 1);
      if (err == UV_EAGAIN)
        continue;
      if (err != 0) {
        size_t k;
        /* The process that started the server is gone, or done with it. */
        if (from_master)
          goto done;
        /* A fork helper's one pool is done with it. */
        if (master < 0) {
          pp__fs_end_kids(kids, nkids);
          nkids = 0;
          goto done;
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
      if (m.type == PP__FS_ADD && from_master) {
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
          pp__fs_send(master, &reply, NULL, 0);
        }
      } else if (m.type == PP__FS_FORK && !from_master) {
        pp__fs_on_fork(conns[i], &m, fds, nfds, dropped, &kids, &nkids, &capkids);
      } else if (m.type == PP__FS_KILL && !from_master) {
        size_t k;
        /* Only a child not yet reaped is killed, so the pid cannot be another's. */
        for (k = 0; k < nkids; k++)
          if (kids[k].conn == conns[i] && kids[k].token == m.token)
            kill(kids[k].pid, SIGKILL);
      }
      pp__fs_close_all(fds, &nfds);
    }
  }

done:
  /* No handler may write to the pipe's number once it is closed, and reused. */
  signal(SIGCHLD, SIG_DFL);
  for (i = 0; i < nconns; i++)
    close(conns[i]);
  close(pp__fs_sigpipe[0]);
  close(pp__fs_sigpipe[1]);
  free(kids);
  free(conns);
  free(pfd);
  return 0;
}
