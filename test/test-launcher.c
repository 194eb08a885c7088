/* Workers started through a launcher (worker_launcher): a stand-in for another host (a
 * shell script that gives the worker a fresh environment and working folder), the test
 * program itself as a launcher (a program, as on Windows), and real ssh to an sshd on
 * 127.0.0.1 that the test starts with throw-away keys. The channel is then the worker's
 * stdin and stdout: what a task prints must not reach it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#ifdef _WIN32
#  include <direct.h>
#  include <io.h>
#  define ln_getcwd _getcwd
#else
#  include <arpa/inet.h>
#  include <errno.h>
#  include <fcntl.h>
#  include <netinet/in.h>
#  include <pwd.h>
#  include <signal.h>
#  include <sys/socket.h>
#  include <sys/stat.h>
#  include <sys/wait.h>
#  include <unistd.h>
#  define ln_getcwd getcwd
#endif

#define LN_PROBE "PP_LN_PROBE"
#define LN_PRINTED "ln-printed-by-the-task"

/* ---- Tasks --------------------------------------------------------------------------- */

/* Prints its argument on stdout three ways (stdio flushed, the raw descriptor, stdio left
 * buffered for exit to flush), then echoes it: the result must be the argument. */
int test_task_ln_print(pp_call *call, const void *arg, size_t len) {
  fwrite(arg, 1, len, stdout);
  fputs("\n", stdout);
  fflush(stdout);
#ifdef _WIN32
  _write(1, LN_PRINTED "-raw\n", (unsigned) sizeof(LN_PRINTED "-raw\n") - 1);
#else
  if (write(1, LN_PRINTED "-raw\n", sizeof(LN_PRINTED "-raw\n") - 1) < 0)
    return pp_fail(call, "ln_print: write(1) failed");
#endif
  fputs(LN_PRINTED "-buffered\n", stdout);
  return pp_reply(call, arg, len);
}

/* Where the worker runs: its working folder, a newline, and LN_PROBE's value or
 * "(unset)". */
int test_task_ln_where(pp_call *call, const void *arg, size_t len) {
  char out[2048], cwd[1024];
  const char *probe = getenv(LN_PROBE);

  (void) arg;
  (void) len;
  if (ln_getcwd(cwd, sizeof(cwd)) == NULL)
    return pp_fail(call, "ln_where: getcwd failed");
  snprintf(out, sizeof(out), "%s\n%s", cwd, probe ? probe : "(unset)");
  return pp_reply(call, out, strlen(out));
}

/* Whether stdin is at its end at once (the null device): "eof" or what it read. */
int test_task_ln_stdin(pp_call *call, const void *arg, size_t len) {
  char buf[64];
  size_t n;

  (void) arg;
  (void) len;
  n = fread(buf, 1, sizeof(buf), stdin);
  if (n == 0)
    return pp_reply(call, "eof", 3);
  return pp_reply(call, buf, n);
}

/* Writes its pid into the file its argument names, then waits for good: a busy worker
 * that must end by its channel's end alone. */
int test_task_ln_park(pp_call *call, const void *arg, size_t len) {
  char path[1024];
  FILE *f;

  if (len >= sizeof(path))
    return pp_fail(call, "ln_park: path too long");
  memcpy(path, arg, len);
  path[len] = '\0';
  f = fopen(path, "w");
  if (f == NULL)
    return pp_fail(call, "ln_park: cannot create %s", path);
  fprintf(f, "%lu\n", (unsigned long) uv_os_getpid());
  fclose(f);
  for (;;)
    uv_sleep(1000);
}

/* ---- The test program as a launcher: run-tests @launch <program> <args...> ------------ */

static void ln_launch_exit(uv_process_t *p, int64_t status, int sig) {
  *(int64_t *) p->data = sig ? 128 + sig : status;
  uv_close((uv_handle_t *) p, NULL);
}

/* Runs its arguments as a child with the same stdin, stdout and stderr, and exits with
 * its status: the smallest launcher, a program (Windows has no sh). */
int test_helper_launch(int argc, char **argv) {
  uv_loop_t loop;
  uv_process_t proc;
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  int64_t status = 127;
  int i, err;

  if (argc < 3)
    return 2;
  memset(&o, 0, sizeof(o));
  for (i = 0; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  o.file = argv[2];
  o.args = argv + 2;
  o.stdio = stdio;
  o.stdio_count = 3;
  o.exit_cb = ln_launch_exit;
  uv_loop_init(&loop);
  proc.data = &status;
  err = uv_spawn(&loop, &proc, &o);
  if (err != 0) {
    fprintf(stderr, "@launch: cannot start %s: %s\n", argv[2], uv_strerror(err));
    uv_close((uv_handle_t *) &proc, NULL);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return (int) status;
}

/* ---- Helpers ------------------------------------------------------------------------- */

static char ln_exe[4096];

static const char *exe_path(void) {
  size_t size = sizeof(ln_exe);

  ASSERT_EQ_INT(uv_exepath(ln_exe, &size), 0);
  return ln_exe;
}

static pp_pool *ln_pool(const char *const *launcher, unsigned workers) {
  pp_pool_options o;

  pp_pool_options_init(&o);
  o.start_method = PP_START_SPAWN;
  o.workers = workers;
  o.worker_launcher = launcher;
  return NEW_POOL(NULL, &o);
}

static void ln_echo(pp_pool *pool, const char *s) {
  pp_result r;

  APPLY(pool, "echo", s, strlen(s), &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, s, strlen(s));
  pp_result_free(&r);
}

/* A pool of two through launcher: tasks run, one of many, in order. */
static void ln_check_runs(pp_pool *pool) {
  pp_input in[16];
  pp_result out[16];
  char bufs[16][8];
  size_t i;

  for (i = 0; i < 16; i++) {
    snprintf(bufs[i], sizeof(bufs[i]), "i%zu", i);
    in[i].data = bufs[i];
    in[i].len = strlen(bufs[i]);
  }
  ASSERT_EQ_INT(pp_map(pool, "echo", 16, in, out), 0);
  for (i = 0; i < 16; i++) {
    ASSERT_EQ_MEM(out[i].data, out[i].len, in[i].data, in[i].len);
    pp_result_free(&out[i]);
  }
}

/* A task that prints: its result is right and the pool goes on. */
static void ln_check_print(pp_pool *pool) {
  pp_result r;

  APPLY(pool, "ln_print", LN_PRINTED, strlen(LN_PRINTED), &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, LN_PRINTED, strlen(LN_PRINTED));
  pp_result_free(&r);
  ln_echo(pool, "after the print");
}

/* A crash fails only its task, with PP_EWORKER, and the pool goes on. */
static void ln_check_crash(pp_pool *pool) {
  pp_pool_stats st;
  pp_result r;

  APPLY(pool, "crash_segv", NULL, 0, &r);
  ASSERT_STATUS(r, PP_EWORKER);
  pp_result_free(&r);
  ln_echo(pool, "after the crash");
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.workers_lost, 1);
}

static void ln_close(pp_pool *pool) {
  int closed = 0;

  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  ASSERT_EQ_INT(closed, 1);
}

#ifndef _WIN32

/* Sends this process's stderr to a file while the pool lives (its launchers inherit
 * it); ln_stderr_end puts it back and returns what was written, malloc'd. */
typedef struct ln_stderr {
  char path[256];
  int saved;
} ln_stderr;

static void ln_stderr_begin(ln_stderr *s, const char *tag) {
  int fd;

  test_marker_path(s->path, sizeof(s->path), tag);
  fflush(stderr);
  fd = open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_TRUE(fd >= 0);
  s->saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
  ASSERT_TRUE(s->saved >= 0);
  ASSERT_EQ_INT(dup2(fd, 2), 2);
  close(fd);
}

static char *ln_stderr_end(ln_stderr *s) {
  char *text = calloc(1, 65536);
  FILE *f;
  size_t n;

  fflush(stderr);
  dup2(s->saved, 2);
  close(s->saved);
  ASSERT_NOT_NULL(text);
  f = fopen(s->path, "r");
  ASSERT_NOT_NULL(f);
  n = fread(text, 1, 65535, f);
  text[n] = '\0';
  fclose(f);
  remove(s->path);
  fprintf(stderr, "--- what the launchers wrote on stderr:\n%s---\n", text);
  return text;
}

/* The stand-in for another host: sh gives the worker a fresh environment (env -i) and
 * working folder (cd), then runs it. exec: the worker replaces the script, as ssh's
 * remote shell does; without, the script stays the worker's parent, as a launcher that
 * waits for it. */
static char ln_dir[256];
static const char *ln_standin_exec[8];
static const char *ln_standin_wait[8];

static void ln_standin_init(void) {
  const char *p;

  snprintf(ln_dir, sizeof(ln_dir), "/tmp/pp-ln-%ld-XXXXXX", (long) getpid());
  ASSERT_NOT_NULL(mkdtemp(ln_dir));
  /* Realpath: the worker's getcwd names the folder as the kernel knows it. */
  p = realpath(ln_dir, NULL);
  ASSERT_NOT_NULL(p);
  snprintf(ln_dir, sizeof(ln_dir), "%s", p);
  free((void *) p);
  test_setenv(LN_PROBE, "set in the parent");
  ln_standin_exec[0] = "/bin/sh";
  ln_standin_exec[1] = "-c";
  ln_standin_exec[2] = "cd \"$0\" && exec env -i PATH=/usr/bin:/bin \"$@\"";
  ln_standin_exec[3] = ln_dir;
  ln_standin_exec[4] = NULL;
  ln_standin_wait[0] = "/bin/sh";
  ln_standin_wait[1] = "-c";
  ln_standin_wait[2] = "cd \"$0\" && env -i PATH=/usr/bin:/bin \"$@\"; exit $?";
  ln_standin_wait[3] = ln_dir;
  ln_standin_wait[4] = NULL;
}

static void ln_standin_done(void) {
  ASSERT_EQ_INT(rmdir(ln_dir), 0);
}

void test_ln_standin(void) {
  pp_pool *pool;
  pp_pool_stats st;
  pp_result r;
  char want[512];

  ln_standin_init();
  pool = ln_pool(ln_standin_exec, 2);
  ln_check_runs(pool);
  /* The worker ran where the launcher put it, with the launcher's environment. */
  APPLY(pool, "ln_where", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  snprintf(want, sizeof(want), "%s\n(unset)", ln_dir);
  ASSERT_EQ_MEM(r.data, r.len, want, strlen(want));
  pp_result_free(&r);
  /* Its stdin is the null device, not the channel. */
  APPLY(pool, "ln_stdin", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "eof", 3);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.workers_lost, 0);
  ASSERT_EQ_INT(pp_pool_start_method(pool), PP_START_SPAWN);
  ln_close(pool);
  ln_standin_done();
}

void test_ln_print(void) {
  ln_stderr s;
  pp_pool *pool;
  char *said;

  ln_standin_init();
  ln_stderr_begin(&s, "ln-print");
  pool = ln_pool(ln_standin_exec, 2);
  ln_check_print(pool);
  ln_check_print(pool);
  ln_close(pool);
  said = ln_stderr_end(&s);
  /* What the task printed reached the launcher's stderr, all three ways, once each
   * task: the buffered line when the worker exited. */
  ASSERT_CONTAINS(said, LN_PRINTED "\n");
  ASSERT_CONTAINS(said, LN_PRINTED "-raw\n");
  ASSERT_CONTAINS(said, LN_PRINTED "-buffered\n");
  free(said);
  ln_standin_done();
}

void test_ln_crash(void) {
  pp_pool *pool;

  ln_standin_init();
  pool = ln_pool(ln_standin_wait, 2);
  ln_check_crash(pool);
  ln_check_runs(pool);
  ln_close(pool);
  ln_standin_done();
}

/* A launcher that cannot start its worker (a host it cannot reach, say): PP_ESPAWN that
 * names it and its exit status, after the bounded retries; its stderr reaches ours. */
void test_ln_launcher_fails(void) {
  static const char *const fails[] = {
    "/bin/sh", "-c", "echo 'ln: cannot reach the far side' >&2; exit 255", NULL
  };
  static const char *const missing[] = { "/nonexistent/pp-launcher", NULL };
  pp_pool_options o;
  pp_pool *pool;
  pp_pool_stats st;
  pp_result r;
  ln_stderr s;
  char *said;
  int err;

  ln_stderr_begin(&s, "ln-fails");
  pool = ln_pool(fails, 2);
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ln_close(pool);
  said = ln_stderr_end(&s);
  ASSERT_STATUS(r, PP_ESPAWN);
  ASSERT_CONTAINS(r.message, "launcher '/bin/sh'");
  ASSERT_CONTAINS(r.message, "exited with code 255");
  pp_result_free(&r);
  /* A few failures in a row (workers + 2), then the pool gave up: bounded, no hang. */
  ASSERT_LE_INT(st.workers_started, 2 * 2 + 4);
  ASSERT_CONTAINS(said, "ln: cannot reach the far side");
  free(said);

  /* A launcher that is not there fails pp_pool_new itself where the exec's error comes
   * back from posix_spawn; where it cannot (valgrind runs the child as a fork), the
   * child's exit 127 fails the starts instead. */
  pp_pool_options_init(&o);
  o.worker_launcher = missing;
  o.workers = 1;
  err = pp_pool_new(&pool, NULL, &o);
  if (err == 0) {
    APPLY(pool, "echo", "x", 1, &r);
    ASSERT_STATUS(r, PP_ESPAWN);
    ASSERT_CONTAINS(r.message, "launcher '/nonexistent/pp-launcher'");
    pp_result_free(&r);
    ln_close(pool);
  } else {
    ASSERT_EQ_INT(err, UV_ENOENT);
    ASSERT_NULL(pool);
  }
}

/* A launcher that prints a banner on stdout before the worker's greeting: PP_ESPAWN
 * saying so, never garbage in a result. */
void test_ln_banner(void) {
  static const char *const banner[] = {
    "/bin/sh", "-c", "echo 'Welcome to the far side'; exec \"$@\"", "sh", NULL
  };
  pp_pool *pool;
  pp_result r;

  pool = ln_pool(banner, 1);
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_STATUS(r, PP_ESPAWN);
  ASSERT_CONTAINS(r.message, "other than a procpool worker's greeting");
  pp_result_free(&r);
  ln_close(pool);
}

/* Reads the pid ln_park wrote into path, running loop meanwhile. */
static long ln_parked_pid(uv_loop_t *loop, const char *path, test_rec *rec) {
  uint64_t start = uv_hrtime();
  long pid = 0;

  while (pid == 0) {
    FILE *f = fopen(path, "r");
    if (f != NULL) {
      if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
      fclose(f);
    }
    ASSERT_EQ_INT(rec->calls, 0);
    ASSERT_TRUE(uv_hrtime() - start < 30000000000ull);
    if (pid == 0) {
      uv_run(loop, UV_RUN_NOWAIT);
      uv_sleep(10);
    }
  }
  remove(path);
  return pid;
}

/* Closing and terminating a pool whose workers are busy: close lets the running tasks
 * finish; terminate kills the launchers, and the workers behind them, busy, end by the
 * end of their stdin alone (the launcher here waits for its worker and is not the
 * worker itself, as ssh is not). Nothing is left behind. */
void test_ln_close_busy(void) {
  pp_pool_options o;
  pp_pool *pool;
  uv_loop_t loop;
  test_rec recs[4];
  char paths[2][256];
  long pids[2];
  uint32_t ms = 300;
  int i, closed = 0;

  ln_standin_init();
  memset(recs, 0, sizeof(recs));
  pp_pool_options_init(&o);
  o.workers = 2;
  o.pipeline_depth = 1;
  o.worker_launcher = ln_standin_wait;

  /* Close: both tasks finish, then everything ends. */
  pool = NEW_POOL(NULL, &o);
  ASSERT_EQ_INT(test_submit(pool, "sleep_ms", &ms, sizeof(ms), &recs[0]), 0);
  ASSERT_EQ_INT(test_submit(pool, "sleep_ms", &ms, sizeof(ms), &recs[1]), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  ASSERT_EQ_INT(closed, 1);
  for (i = 0; i < 2; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    pp_result_free(&recs[i].res);
  }

  /* Terminate: two workers parked for good, one each (pipeline_depth 1). */
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  pool = NEW_POOL(&loop, &o);
  for (i = 0; i < 2; i++) {
    test_marker_path(paths[i], sizeof(paths[i]), i == 0 ? "ln-park0" : "ln-park1");
    ASSERT_EQ_INT(test_submit(pool, "ln_park", paths[i], strlen(paths[i]), &recs[2 + i]),
                  0);
  }
  for (i = 0; i < 2; i++)
    pids[i] = ln_parked_pid(&loop, paths[i], &recs[2 + i]);
  ASSERT_NE_INT(pids[0], pids[1]);
  closed = 0;
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the terminate's callback");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  for (i = 0; i < 2; i++) {
    ASSERT_EQ_INT(recs[2 + i].calls, 1);
    ASSERT_STATUS(recs[2 + i].res, PP_ECANCELED);
    pp_result_free(&recs[2 + i].res);
    test_wait_process_gone(pids[i], "a busy worker whose launcher was killed");
  }
  ln_standin_done();
}

/* The option's rules: spawn only, a launcher with a program, an absolute worker path;
 * the default method means spawn. */
void test_ln_options(void) {
  static const char *const empty[] = { NULL };
  static const char *const sh[] = { "/bin/sh", "-c", "exec \"$@\"", "sh", NULL };
  pp_pool_options o;
  pp_pool *pool;

  test_unsetenv("PROCPOOL_START_METHOD");
  pp_pool_options_init(&o);
  o.worker_launcher = sh;
  o.start_method = PP_START_FORK;
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &o), PP_EINVAL);
  o.start_method = PP_START_FORKSERVER;
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &o), PP_EINVAL);
  o.start_method = PP_START_SPAWN;
  o.worker_executable = "build/test/run-tests";
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &o), PP_EINVAL);
  o.worker_executable = NULL;
  o.worker_launcher = empty;
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &o), PP_EINVAL);

  /* The default method with a launcher is spawn; the pool copied the launcher. */
  o.start_method = PP_START_DEFAULT;
  {
    const char *copy[5];
    memcpy(copy, sh, sizeof(copy));
    o.worker_launcher = copy;
    o.workers = 1;
    ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &o), 0);
    copy[0] = "/nonexistent";
    copy[2] = "exit 9";
  }
  ASSERT_EQ_INT(pp_pool_start_method(pool), PP_START_SPAWN);
  ln_echo(pool, "default is spawn");
  ln_check_crash(pool);
  ln_close(pool);

  /* PROCPOOL_START_METHOD=fork with a launcher: refused, naming the variable. */
  test_setenv("PROCPOOL_START_METHOD", "fork");
  o.worker_launcher = sh;
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &o), PP_EINVAL);
  test_unsetenv("PROCPOOL_START_METHOD");
}

/* ---- Real ssh, to an sshd of the test's own on 127.0.0.1 --------------------------- */

typedef struct ln_sshd {
  char dir[256];
  char key[300];
  char port[16];
  char dest[300];
  pid_t pid;
  const char *argv[24];
} ln_sshd;

static const char *ln_find(const char *env, const char *const *where) {
  const char *p = getenv(env);
  size_t i;

  if (p != NULL && p[0] != '\0')
    return access(p, X_OK) == 0 ? p : NULL;
  for (i = 0; where[i] != NULL; i++)
    if (access(where[i], X_OK) == 0)
      return where[i];
  return NULL;
}

static int ln_run(const char *cmd) {
  int st = system(cmd);

  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A port on 127.0.0.1 that nothing listens on now. */
static int ln_free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

  ASSERT_TRUE(fd >= 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ_INT(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
  ASSERT_EQ_INT(getsockname(fd, (struct sockaddr *) &a, &len), 0);
  port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static int ln_port_open(int port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t) port);
  ok = connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

static void ln_sshd_stop(ln_sshd *s) {
  char cmd[400];

  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    while (waitpid(s->pid, NULL, 0) == -1 && errno == EINTR)
      ;
    s->pid = 0;
  }
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
  ln_run(cmd);
}

/* Starts sshd on a free port of 127.0.0.1 with throw-away host and user keys, and makes
 * the ssh command line that logs in as this user; skips, saying why, where it cannot. */
static void ln_sshd_start(ln_sshd *s) {
  static const char *const sshd_at[] = { "/usr/sbin/sshd", "/usr/bin/sshd",
                                         "/usr/local/sbin/sshd", NULL };
  static const char *const keygen_at[] = { "/usr/bin/ssh-keygen",
                                           "/usr/local/bin/ssh-keygen", NULL };
  static const char *const ssh_at[] = { "/usr/bin/ssh", "/usr/local/bin/ssh", NULL };
  const char *sshd = ln_find("PP_TEST_SSHD", sshd_at);
  const char *keygen = ln_find("PP_TEST_SSH_KEYGEN", keygen_at);
  const char *ssh = ln_find("PP_TEST_SSH", ssh_at);
  struct passwd *me = getpwuid(getuid());
  char cmd[2048], conf[400], why[600];
  uint64_t start;
  FILE *f;
  int port, n = 0, status;

  memset(s, 0, sizeof(*s));
  if (sshd == NULL || keygen == NULL || ssh == NULL)
    test_skip("no sshd, ssh-keygen or ssh here (install openssh-server and "
              "openssh-client, or name them in PP_TEST_SSHD, PP_TEST_SSH_KEYGEN, "
              "PP_TEST_SSH)");
  if (me == NULL)
    test_skip("this user has no passwd entry for sshd to log in as");
  if (getuid() == 0) {
    /* As root, sshd separates privileges: it needs its user and its empty folder,
     * which installing openssh-server makes (the folder is the service's to make; a
     * machine without a service manager has none until then). */
    if (getpwnam("sshd") == NULL)
      test_skip("sshd runs as root here and needs its privilege separation user 'sshd', "
                "which installing openssh-server creates");
    mkdir("/run/sshd", 0755);
  }
  snprintf(s->dir, sizeof(s->dir), "/tmp/pp-ssh-%ld-XXXXXX", (long) getpid());
  ASSERT_NOT_NULL(mkdtemp(s->dir));
  chmod(s->dir, 0755);
  snprintf(cmd, sizeof(cmd),
           "'%s' -q -t ed25519 -N '' -f '%s/host' && '%s' -q -t ed25519 -N '' -f '%s/user' "
           "&& cp '%s/user.pub' '%s/authorized_keys'",
           keygen, s->dir, keygen, s->dir, s->dir, s->dir);
  if (ln_run(cmd) != 0) {
    ln_sshd_stop(s);
    test_skip("ssh-keygen could not make throw-away keys");
  }
  port = ln_free_port();
  snprintf(s->port, sizeof(s->port), "%d", port);
  snprintf(conf, sizeof(conf), "%s/sshd_config", s->dir);
  f = fopen(conf, "w");
  ASSERT_NOT_NULL(f);
  fprintf(f,
          "ListenAddress 127.0.0.1\nPort %d\nHostKey %s/host\n"
          "AuthorizedKeysFile %s/authorized_keys\nPasswordAuthentication no\n"
          "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
          "PermitRootLogin prohibit-password\nPidFile none\nLogLevel FATAL\n"
          "MaxStartups 100\nMaxSessions 100\n",
          port, s->dir, s->dir);
  fclose(f);
  s->pid = fork();
  ASSERT_TRUE(s->pid >= 0);
  if (s->pid == 0) {
    execl(sshd, sshd, "-D", "-e", "-f", conf, (char *) NULL);
    _exit(127);
  }
  start = uv_hrtime();
  while (!ln_port_open(port)) {
    if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
      s->pid = 0;
      ln_sshd_stop(s);
      snprintf(why, sizeof(why), "sshd (%s) could not start (status %d): see its "
               "message above", sshd, status);
      test_skip(why);
    }
    if (uv_hrtime() - start > 10000000000ull) {
      ln_sshd_stop(s);
      test_skip("sshd did not listen within 10 s");
    }
    uv_sleep(20);
  }
  snprintf(s->key, sizeof(s->key), "%s/user", s->dir);
  snprintf(s->dest, sizeof(s->dest), "%s@127.0.0.1", me->pw_name);
  s->argv[n++] = ssh;
  s->argv[n++] = "-F";
  s->argv[n++] = "/dev/null";
  s->argv[n++] = "-T";
  s->argv[n++] = "-i";
  s->argv[n++] = s->key;
  s->argv[n++] = "-p";
  s->argv[n++] = s->port;
  s->argv[n++] = "-o";
  s->argv[n++] = "BatchMode=yes";
  s->argv[n++] = "-o";
  s->argv[n++] = "StrictHostKeyChecking=no";
  s->argv[n++] = "-o";
  s->argv[n++] = "UserKnownHostsFile=/dev/null";
  s->argv[n++] = "-o";
  s->argv[n++] = "LogLevel=ERROR";
  s->argv[n++] = s->dest;
  s->argv[n] = NULL;
  /* One login first: a set-up that refuses us is a skip, not a failure of procpool. */
  snprintf(cmd, sizeof(cmd),
           "'%s' -F /dev/null -T -i '%s' -p %s -o BatchMode=yes -o StrictHostKeyChecking=no "
           "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR %s true </dev/null",
           ssh, s->key, s->port, s->dest);
  if (ln_run(cmd) != 0) {
    ln_sshd_stop(s);
    test_skip("ssh to the test's own sshd on 127.0.0.1 failed (its message is above)");
  }
}

static double ln_ms_since(uint64_t t0) { return (double) (uv_hrtime() - t0) / 1e6; }

static int ln_cmp_double(const void *a, const void *b) {
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

/* The median of n samples (sorts them). */
static double ln_median(double *v, size_t n) {
  qsort(v, n, sizeof(*v), ln_cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* What the channel costs through launcher (NULL: a local spawned worker): the time from
 * pp_pool_new to the first result of a 1-worker pool, and a 64-byte echo's round trip,
 * medians of several. Printed, never asserted. */
static void ln_cost(const char *what, const char *const *launcher) {
  enum { STARTS = 5, TRIPS = 400 };
  double start_ms[STARTS], trip_us[TRIPS];
  char arg[64];
  size_t i;

  memset(arg, 'x', sizeof(arg));
  for (i = 0; i < STARTS; i++) {
    uint64_t t0 = uv_hrtime();
    pp_pool *pool = ln_pool(launcher, 1);
    pp_result r;
    APPLY(pool, "echo", arg, sizeof(arg), &r);
    ASSERT_STATUS(r, 0);
    pp_result_free(&r);
    start_ms[i] = ln_ms_since(t0);
    if (i == STARTS - 1) {
      size_t j;
      for (j = 0; j < TRIPS; j++) {
        uint64_t t1 = uv_hrtime();
        APPLY(pool, "echo", arg, sizeof(arg), &r);
        trip_us[j] = ln_ms_since(t1) * 1000;
        ASSERT_STATUS(r, 0);
        pp_result_free(&r);
      }
    }
    ln_close(pool);
  }
  /* ln_median sorts: the best is first after it. */
  {
    double ms = ln_median(start_ms, STARTS), us = ln_median(trip_us, TRIPS);
    printf("launcher cost, %-24s pool start to first result: median %7.2f ms (best "
           "%7.2f, of %d); round trip of a 64-byte echo: median %6.1f us (best %6.1f, of "
           "%d)\n", what, ms, start_ms[0], STARTS, us, trip_us[0], TRIPS);
  }
  fflush(stdout);
}

void test_ln_ssh(void) {
  ln_sshd s;
  pp_pool *pool;
  pp_result r;
  const char *refused[32];
  char bad_port[16];
  size_t i;

  ln_sshd_start(&s);
  pool = ln_pool(s.argv, 2);
  ln_check_runs(pool);
  ln_check_print(pool);
  ln_check_crash(pool);
  ln_check_runs(pool);
  ln_close(pool);

  /* ssh that cannot connect exits with 255: PP_ESPAWN naming it, no hang. */
  for (i = 0; s.argv[i] != NULL; i++)
    refused[i] = s.argv[i] == s.port ? bad_port : s.argv[i];
  refused[i] = NULL;
  snprintf(bad_port, sizeof(bad_port), "%d", ln_free_port());
  pool = ln_pool(refused, 1);
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_STATUS(r, PP_ESPAWN);
  ASSERT_CONTAINS(r.message, "exited with code 255");
  pp_result_free(&r);
  ln_close(pool);

  ln_standin_init();
  ln_cost("local spawn:", NULL);
  ln_cost("sh stand-in launcher:", ln_standin_exec);
  ln_cost("ssh to 127.0.0.1:", s.argv);
  ln_standin_done();
  ln_sshd_stop(&s);
}

#else /* _WIN32: these need sh, sshd and fork */

static void ln_unix_only(void) { test_skip("needs sh and POSIX tools (Unix only)"); }
void test_ln_standin(void) { ln_unix_only(); }
void test_ln_print(void) { ln_unix_only(); }
void test_ln_crash(void) { ln_unix_only(); }
void test_ln_launcher_fails(void) { ln_unix_only(); }
void test_ln_banner(void) { ln_unix_only(); }
void test_ln_close_busy(void) { ln_unix_only(); }
void test_ln_options(void) { ln_unix_only(); }
void test_ln_ssh(void) { ln_unix_only(); }

#endif

/* The test program itself as the launcher: a program, on every OS. */
void test_ln_self_launcher(void) {
  const char *launcher[3];
  pp_pool *pool;

  launcher[0] = exe_path();
  launcher[1] = "@launch";
  launcher[2] = NULL;
  pool = ln_pool(launcher, 2);
  ln_check_runs(pool);
  ln_check_print(pool);
  ln_check_crash(pool);
  ln_close(pool);
}

/* A worker behind a launcher has no journal: a cancel that kills it cannot tell whether
 * it had started the tasks sent ahead to it, which then fail with PP_EWORKER and say why
 * (never run twice, never lost); with pipeline_depth 1 nothing is sent ahead, and they
 * all run. */
static void ln_cancel_ahead(unsigned depth) {
  const char *launcher[3];
  pp_pool_options o;
  pp_future *f[4];
  uint32_t ms = 60000;
  pp_pool *pool;
  int i;

  launcher[0] = exe_path();
  launcher[1] = "@launch";
  launcher[2] = NULL;
  pp_pool_options_init(&o);
  o.start_method = PP_START_SPAWN;
  o.workers = 1;
  o.pipeline_depth = depth;
  o.worker_launcher = launcher;
  pool = NEW_POOL(NULL, &o);
  ASSERT_EQ_INT(pp_submit_future(pool, "sleep_ms", &ms, sizeof(ms), &f[0]), 0);
  for (i = 1; i < 4; i++)
    ASSERT_EQ_INT(pp_submit_future(pool, "echo", "ab", 2, &f[i]), 0);
  /* Running, or about to: either way the cancel ends it. */
  uv_sleep(200);
  ASSERT_EQ_INT(pp_future_cancel(f[0]), 0);
  for (i = 0; i < 4; i++) {
    const pp_result *r;
    ASSERT_EQ_INT(pp_future_wait(f[i], -1) == PP_ETIMEDOUT, 0);
    r = pp_future_result(f[i]);
    ASSERT_NOT_NULL(r);
    if (i == 0) {
      ASSERT_STATUS(*r, PP_ECANCELED);
    } else if (depth == 1 || r->status == 0) {
      ASSERT_STATUS(*r, 0);
      ASSERT_EQ_MEM(r->data, r->len, "ab", 2);
    } else {
      ASSERT_STATUS(*r, PP_EWORKER);
      ASSERT_CONTAINS(r->message, "may have started");
    }
    pp_future_free(f[i]);
  }
  ln_close(pool);
}

void test_ln_cancel_ahead(void) {
  ln_cancel_ahead(4);
  ln_cancel_ahead(1);
}
