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
#include "fs.h"
#include "unix.h"

#define PP__FS_MARK "--procpool-forkserver="
/* How long a pool whose connection ended unanswered waits for the server's reason (or
 * its end) on the master connection: either comes at once, so this only bounds a wait
 * that holds the process-wide lock. */
#define PP__FS_PROBE_MS 2000

int pp__forkserver_main(const char *spec) {
  char *end;
  long master = strtol(spec, &end, 10);

  if (*spec == '\0' || *end != '\0' || master < 0 || master > INT_MAX) {
    fprintf(stderr, "procpool forkserver: bad channel '%s'\n", spec);
    exit(PP__EXIT_SETUP);
  }
  fcntl((int) master, F_SETFD, FD_CLOEXEC);
  /* A program of its own: a normal exit. */
  exit(pp__fs_serve((int) master, -1));
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
  err = pp__unix_spawn(srv->exe, args, fds[1], 0, &pid);
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


/* ---- The forkserver as the source of a pool's server --------------------------------- */

static int pp__fs_warned_death;

static int pp__fs_src_open(pp_pool *pool, pp__fs_link *link, char *why, size_t why_size) {
  pp__fs_server *srv;
  int err = pp__fs_connect(pool->exe, pool->start_timeout_ms, &srv, &link->conn,
                           &link->server_pid, why, why_size);

  if (err != 0)
    return err;
  link->label = pp__strdupf("the forkserver '%s' (pid %ld)", pool->exe, link->server_pid);
  if (link->label == NULL) {
    close(link->conn);
    pp__fs_release(srv);
    snprintf(why, why_size, "out of memory");
    return PP_ENOMEM;
  }
  link->data = srv;
  return 0;
}

static void pp__fs_src_release(pp__fs_link *link) { pp__fs_release((pp__fs_server *) link->data); }

static void pp__fs_src_lost(pp_pool *pool, const pp__fs_link *link) {
  (void) pool;
  pp__warn_once(&pp__fs_warned_death, "%s ended: the workers it had started were cut off "
                "from their pools and end by themselves, and a new server will be started",
                link->label);
}

static const pp__fs_source pp__fs_spawned = { pp__fs_src_open, pp__fs_src_release,
                                              pp__fs_src_lost, 0, PP__EXIT_FORKSERVER_GONE };

static int pp__fs_pool_init(pp_pool *pool) { return pp__fsc_pool_init(pool, &pp__fs_spawned); }

static int pp__fs_start(pp__worker *w, char *why, size_t why_size) {
  return pp__fsc_start(w, &pp__fs_spawned, why, why_size);
}

static void pp__fs_kill(pp__worker *w) { pp__fsc_kill(w, &pp__fs_spawned); }

static const pp__method_ops pp__fs_ops_impl = { pp__fs_pool_init, pp__fsc_pool_end,
                                                pp__fs_start, pp__fs_kill, pp__fsc_close };
const pp__method_ops *const pp__forkserver_ops = &pp__fs_ops_impl;
