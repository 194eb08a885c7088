/* The pool's side of a server that forks its workers (fs.h): the pool's connection,
 * watched with a uv_poll on the pool's loop; FORK and KILL requests; the server's
 * reports; and what happens when the server dies under the pool. The same for the
 * forkserver and the fork helper; only how the server is started and found (the
 * pp__fs_source) differs.
 *
 * The workers are the server's children, not this process's: their pids may be anyone's
 * once the server has reaped them, or once the server is gone. So a worker is never
 * signalled from here; the server kills it on request, and if the server is gone its
 * channel is shut down instead (an idle worker reads end-of-file and exits, a busy one is
 * ended by its hang-up watcher). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs.h"
#include "unix.h"

/* How long the end of a pool waits for the end of a server of its own (a fork helper)
 * before it kills it. The server ends as soon as it reads the end of its connection, so
 * only a stopped or stuck one takes this long. */
#define PP__FS_GRACE_MS 2000

typedef struct pp__fs_pool {
  uv_poll_t poll;
  uv_timer_t grace;   /* a server of the pool's own: the wait for its end */
  int handles;        /* of poll and grace, not closed yet */
  int ending;         /* the pool is done: the connection's end is the server's, as asked */
  pp__fs_link link;
  const pp__fs_source *src;
  pp_pool *pool;
} pp__fs_pool;

void pp__fs_report_decode(const pp__fs_msg *m, pp__fs_report *r) {
  memset(r, 0, sizeof(*r));
  switch (m->type) {
  case PP__FS_FORKED:
    r->pid = (long) m->value;
    break;
  case PP__FS_FAILED:
    r->err = uv_translate_sys_error(m->value);
    break;
  case PP__FS_EXITED:
    if (WIFSIGNALED(m->value))
      r->term_signal = WTERMSIG(m->value);
    else
      r->exit_status = WEXITSTATUS(m->value);
    break;
  default:
    return;
  }
  r->type = m->type;
}

static pp__worker *pp__fs_worker(pp_pool *pool, uint64_t token) {
  pp__qnode *q;

  for (q = pp__q_head(&pool->workers); q != &pool->workers; q = q->next) {
    pp__worker *w = PP__CONTAINER_OF(q, pp__worker, node);
    if (w->token == token)
      return w;
  }
  return NULL;
}

static void pp__fs_on_handle_closed(uv_handle_t *h) {
  pp__fs_pool *fp = (pp__fs_pool *) h->data;
  pp_pool *pool = fp->pool;

  if (--fp->handles == 0) {
    close(fp->link.conn);
    fp->src->release(&fp->link);
    free(fp->link.label);
    free(fp);
  }
  pp__pool_handle_closed(pool);
}

static void pp__fs_close_handles(pp__fs_pool *fp) {
  if (uv_is_closing((uv_handle_t *) &fp->poll))
    return;
  uv_poll_stop(&fp->poll);
  uv_close((uv_handle_t *) &fp->poll, pp__fs_on_handle_closed);
  uv_timer_stop(&fp->grace);
  uv_close((uv_handle_t *) &fp->grace, pp__fs_on_handle_closed);
}

/* No server can end or report w any more. Shutting down the pool's end of its channel
 * ends it (without closing the descriptor under libuv); its end is reported now, with
 * a status that says it is unknown. */
static void pp__fs_cut(pp__worker *w, const pp__fs_source *src) {
  uv_os_fd_t fd;

  if (uv_fileno((const uv_handle_t *) &w->pipe, &fd) == 0)
    shutdown(fd, SHUT_RDWR);
  pp__worker_on_exit(w, src->gone_status, 0);
}

/* The server is gone (the connection ended): the workers it had started are cut off,
 * and the next start opens a new link. */
static void pp__fs_lost(pp__fs_pool *fp) {
  pp_pool *pool = fp->pool;
  pp__qnode *q, *last;
  char why[512];

  fp->src->lost(pool, &fp->link);
  snprintf(why, sizeof(why), "%s ended before it reported the worker it was asked to "
           "start", fp->link.label);
  pool->method_data = NULL;
  pp__fs_close_handles(fp);
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
        pp__fs_cut(w, fp->src);
      else
        pp__worker_on_start_failed(w, why);
    }
    if (done)
      break;
  }
}

/* The connection ended: the server is gone, or, once the pool is done, going as it was
 * asked to. */
static void pp__fs_ended(pp__fs_pool *fp) {
  if (fp->ending)
    pp__fs_close_handles(fp);
  else
    pp__fs_lost(fp);
}

static void pp__fs_on_readable(uv_poll_t *h, int status, int events) {
  pp__fs_pool *fp = (pp__fs_pool *) h->data;
  pp_pool *pool = fp->pool;

  (void) events;
  if (status < 0) {
    pp__fs_ended(fp);
    return;
  }
  while (!uv_is_closing((uv_handle_t *) &fp->poll)) {
    pp__fs_msg m;
    pp__fs_report r;
    pp__worker *w;
    int fds[PP__FS_MAX_FDS], nfds, dropped;
    int err = pp__fs_recv(fp->link.conn, &m, fds, &nfds, &dropped, 1);
    pp__fs_close_all(fds, &nfds);
    if (err == UV_EAGAIN)
      return;
    if (err != 0) {
      pp__fs_ended(fp);
      return;
    }
    w = fp->ending ? NULL : pp__fs_worker(pool, m.token);
    if (w == NULL || w->exited)
      continue;
    pp__fs_report_decode(&m, &r);
    if (r.type == PP__FS_FORKED) {
      w->pid = r.pid;
    } else if (r.type == PP__FS_FAILED) {
      char why[512];
      snprintf(why, sizeof(why), "%s could not fork a worker: %s", fp->link.label,
               uv_strerror(r.err));
      pp__worker_on_start_failed(w, why);
    } else if (r.type == PP__FS_EXITED) {
      pp__worker_on_exit(w, r.exit_status, r.term_signal);
    }
  }
}

/* The server of the pool's own did not end within the grace period after the pool let
 * it go (stopped, or stuck): it is killed. It is this process's child, not reaped yet
 * (its release reaps it), so the pid is still its own. */
static void pp__fs_on_grace(uv_timer_t *t) {
  pp__fs_pool *fp = (pp__fs_pool *) t->data;

  kill((pid_t) fp->link.server_pid, SIGKILL);
  pp__fs_close_handles(fp);
}

static int pp__fs_open(pp_pool *pool, const pp__fs_source *src, char *why,
                       size_t why_size) {
  pp__fs_pool *fp = calloc(1, sizeof(*fp));
  int err;

  if (fp == NULL)
    return PP_ENOMEM;
  err = src->open(pool, &fp->link, why, why_size);
  if (err != 0) {
    free(fp);
    return err;
  }
  fp->pool = pool;
  fp->src = src;
  err = uv_poll_init(pool->loop, &fp->poll, fp->link.conn);
  if (err != 0) {
    close(fp->link.conn);
    src->release(&fp->link);
    snprintf(why, why_size, "cannot watch the connection to %s: %s", fp->link.label,
             uv_strerror(err));
    free(fp->link.label);
    free(fp);
    return err;
  }
  uv_timer_init(pool->loop, &fp->grace);
  fp->poll.data = fp;
  fp->grace.data = fp;
  fp->handles = 2;
  pool->open_handles += 2;
  pool->method_data = fp;
  uv_poll_start(&fp->poll, UV_READABLE, pp__fs_on_readable);
  return 0;
}

int pp__fsc_pool_init(pp_pool *pool, const pp__fs_source *src) {
  char why[512] = "";
  int err = pp__fs_open(pool, src, why, sizeof(why));

  if (err != 0)
    fprintf(stderr, "procpool: %s\n", why);
  return err;
}

void pp__fsc_pool_end(pp_pool *pool) {
  pp__fs_pool *fp = (pp__fs_pool *) pool->method_data;

  if (fp == NULL)
    return;
  pool->method_data = NULL;
  if (!fp->src->owned) {
    pp__fs_close_handles(fp);
    return;
  }
  /* A server of the pool's own ends when it reads the end of the connection: it then
   * kills and reaps what it has left, and exits. shutdown, not close: a child the
   * application forked without exec holds a copy of this end, and close would not end
   * the connection while it lives. The connection's end, read below, is the server's
   * exit. */
  fp->ending = 1;
  shutdown(fp->link.conn, SHUT_WR);
  uv_timer_start(&fp->grace, pp__fs_on_grace, PP__FS_GRACE_MS, 0);
}

int pp__fsc_start(pp__worker *w, const pp__fs_source *src, char *why, size_t why_size) {
  pp_pool *pool = w->pool;
  pp__fs_pool *fp;
  uv_os_sock_t fds[2];
  pp__fs_msg m;
  int pass[PP__FS_MAX_FDS], npass = 0, err;

  if (pool->method_data == NULL) {
    err = pp__fs_open(pool, src, why, why_size);
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
  /* This process's stdout and stderr as they are now, not the server's: spawned workers
   * get them too. One that is closed here is closed in the worker. */
  if (fcntl(1, F_GETFD) != -1) {
    pass[npass++] = 1;
    m.value |= PP__FS_STDOUT;
  }
  if (fcntl(2, F_GETFD) != -1) {
    pass[npass++] = 2;
    m.value |= PP__FS_STDERR;
  }
  err = pp__fs_send(fp->link.conn, &m, pass, npass);
  close(fds[1]);
  if (err != 0) {
    snprintf(why, why_size, "cannot reach %s: %s", fp->link.label, uv_strerror(err));
    return err;
  }
  return 0;
}

void pp__fsc_kill(pp__worker *w, const pp__fs_source *src) {
  pp__fs_pool *fp = (pp__fs_pool *) w->pool->method_data;
  pp__fs_msg m;

  if (w->exited)
    return;
  memset(&m, 0, sizeof(m));
  m.type = PP__FS_KILL;
  m.token = w->token;
  if (fp == NULL || pp__fs_send(fp->link.conn, &m, NULL, 0) != 0) {
    /* The server is gone: nothing can kill or report the worker but its channel. */
    pp__fs_cut(w, src);
    return;
  }
  /* Its fork not reported yet: the server takes requests in order, so it kills the
   * worker as soon as it has forked it (or it never forks it), and the report of that
   * end is not worth waiting for. */
  if (w->pid <= 0)
    pp__worker_on_exit(w, 0, SIGKILL);
}

void pp__fsc_close(pp__worker *w) { (void) w; }
