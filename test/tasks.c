/* The worker side of the tests: every way a task can succeed, fail or misbehave. These
 * run in the worker processes; the parent only names them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First: uv.h brings winsock2.h, which must come before windows.h. */
#include "test.h"

#ifdef _WIN32
#  include <windows.h>
#else
#  include <fcntl.h>
#  include <signal.h>
#  include <sys/resource.h>
#  include <unistd.h>
#endif

int test_global = TEST_GLOBAL_INITIAL;

/* What the initializer received, for "init_get" to send back. */
static int init_ran;
static void *init_data;
static size_t init_len;

uint64_t test_mapf(uint32_t x) { return (uint64_t) x * 2654435761u + 12345u; }

/* A crash must not leave a core file in the build directory, nor, on Windows, open an
 * error dialog that waits for a click; and it must end the process the plain way: a
 * sanitizer's handler would turn the signal into an exit code. */
static void quiet_crash(void) {
#ifdef _WIN32
  SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
#else
  struct rlimit rl = { 0, 0 };
  setrlimit(RLIMIT_CORE, &rl);
  signal(SIGSEGV, SIG_DFL);
  signal(SIGABRT, SIG_DFL);
#endif
}

static int t_echo(pp_call *call, const void *arg, size_t len) {
  /* The header promises NULL for an empty argument and an argument aligned for any
   * type; every echo checks both. */
  if (len == 0 && arg != NULL)
    return pp_fail(call, "echo: an empty argument is not NULL");
  if (len > 0 && (uintptr_t) arg % TEST_MAX_ALIGN != 0)
    return pp_fail(call, "echo: the argument at %p is not aligned", arg);
  return pp_reply(call, arg, len);
}

static int t_nothing(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  return 0;
}

static int t_mapf(pp_call *call, const void *arg, size_t len) {
  uint32_t x;
  uint64_t y;

  if (len != sizeof(x))
    return pp_fail(call, "mapf: expected %u bytes, got %lu", (unsigned) sizeof(x),
                   (unsigned long) len);
  memcpy(&x, arg, sizeof(x));
  y = test_mapf(x);
  return pp_reply(call, &y, sizeof(y));
}

/* The first byte says what to do, the rest is the payload: 'k' replies the payload, 'f'
 * fails with it, 'x' ends the worker. One task, so that one pp_map can mix outcomes. */
static int t_act(pp_call *call, const void *arg, size_t len) {
  const char *p = (const char *) arg;

  if (len == 0)
    return pp_fail(call, "act: empty argument");
  switch (p[0]) {
    case 'k': return pp_reply(call, p + 1, len - 1);
    case 'f': return pp_fail(call, "act refuses: %.*s", (int) (len - 1), p + 1);
    case 'x': exit(3);
    default: return pp_fail(call, "act: unknown op '%c'", p[0]);
  }
}

static int t_failing_task(pp_call *call, const void *arg, size_t len) {
  return pp_fail(call, "deliberate failure: %.*s", (int) len, (const char *) arg);
}

static int t_fail_after_reply(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  pp_reply(call, "data", 4);
  return pp_fail(call, "failure after a reply");
}

static int t_reply_twice(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  pp_reply(call, "first", 5);
  return pp_reply(call, "second", 6);
}

static int t_return_seven(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  return 7;
}

/* Fails with a message of as many 'm' as the uint32 argument says. */
static int t_long_failure(pp_call *call, const void *arg, size_t len) {
  uint32_t n;
  char *msg;
  int r;

  if (len != sizeof(n))
    return pp_fail(call, "long_failure: expected a uint32");
  memcpy(&n, arg, sizeof(n));
  msg = (char *) malloc((size_t) n + 1);
  if (msg == NULL)
    return pp_fail(call, "long_failure: out of memory");
  memset(msg, 'm', n);
  msg[n] = '\0';
  r = pp_fail(call, "%s", msg);
  free(msg);
  return r;
}

static int t_global(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  return pp_reply(call, &test_global, sizeof(test_global));
}

static int t_pid(pp_call *call, const void *arg, size_t len) {
  uint64_t pid = (uint64_t) uv_os_getpid();

  (void) arg;
  (void) len;
  return pp_reply(call, &pid, sizeof(pid));
}

/* The pid, then the argument: which worker ran which input. */
static int t_pid_echo(pp_call *call, const void *arg, size_t len) {
  uint64_t pid = (uint64_t) uv_os_getpid();
  unsigned char *buf = malloc(sizeof(pid) + len);
  int r;

  if (buf == NULL)
    return pp_fail(call, "pid_echo: out of memory");
  memcpy(buf, &pid, sizeof(pid));
  if (len > 0)
    memcpy(buf + sizeof(pid), arg, len);
  r = pp_reply(call, buf, sizeof(pid) + len);
  free(buf);
  return r;
}

static int t_init_store(pp_call *call, const void *arg, size_t len) {
  if (len > 0) {
    init_data = malloc(len);
    if (init_data == NULL)
      return pp_fail(call, "init_store: out of memory");
    memcpy(init_data, arg, len);
  }
  init_len = len;
  init_ran = 1;
  return 0;
}

static int t_init_get(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  if (!init_ran)
    return pp_fail(call, "init_get: the initializer did not run in this worker");
  return pp_reply(call, init_data, init_len);
}

static int t_init_fail(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  return pp_fail(call, "initializer refuses on purpose");
}

static int t_crash_abort(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  quiet_crash();
  abort();
}

static int t_crash_segv(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  quiet_crash();
#ifdef _WIN32
  *(volatile int *) 0 = 0;
#else
  raise(SIGSEGV);
#endif
  return pp_fail(call, "crash_segv: still alive after the fault");
}

static int t_exit3(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  exit(3);
}

/* Sleeps forever. With an argument, first creates the file it names: the parent sees
 * the file and knows the task is running. */
static int t_sleep_forever(pp_call *call, const void *arg, size_t len) {
  char path[1024];
  FILE *f;

  if (len >= sizeof(path))
    return pp_fail(call, "sleep_forever: path of %lu bytes", (unsigned long) len);
  if (len > 0) {
    memcpy(path, arg, len);
    path[len] = '\0';
    f = fopen(path, "w");
    if (f == NULL)
      return pp_fail(call, "sleep_forever: cannot create %s", path);
    fclose(f);
  }
  for (;;)
    uv_sleep(1000);
}

/* The first byte is 'm' or 'x', the rest a path: creates the file "<path>.<pid>", which
 * must not exist yet, then ('x') ends the worker. One file per run of the task, so that
 * the parent can count the runs, whether or not they ended well. */
static int t_mark_run(pp_call *call, const void *arg, size_t len) {
  const char *p = (const char *) arg;
  char path[1024];
  uv_fs_t req;
  int fd;

  if (len < 2 || len + 24 >= sizeof(path))
    return pp_fail(call, "mark_run: argument of %lu bytes", (unsigned long) len);
  memcpy(path, p + 1, len - 1);
  snprintf(path + len - 1, sizeof(path) - (len - 1), ".%ld", (long) uv_os_getpid());
  fd = uv_fs_open(NULL, &req, path, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_EXCL, 0644,
                  NULL);
  uv_fs_req_cleanup(&req);
  if (fd < 0)
    return pp_fail(call, "mark_run: cannot create %s: %s", path, uv_strerror(fd));
  uv_fs_close(NULL, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
  if (p[0] == 'x') {
    quiet_crash();
    exit(3);
  }
  return 0;
}

/* Replies as many bytes as the uint64 argument says. pp_reply must refuse a result over
 * max_message_bytes with PP_E2BIG, and then the header says the task fails with PP_E2BIG
 * whatever it returns: so it returns 0. */
static int t_reply_size(pp_call *call, const void *arg, size_t len) {
  uint64_t n;
  unsigned char *buf;
  int r;

  if (len != sizeof(n))
    return pp_fail(call, "reply_size: expected a uint64");
  memcpy(&n, arg, sizeof(n));
  buf = calloc((size_t) n + 1, 1);
  if (buf == NULL)
    return pp_fail(call, "reply_size: out of memory");
  r = pp_reply(call, buf, (size_t) n);
  free(buf);
  return r == PP_E2BIG ? 0 : r;
}

/* pp_reply's documented refusals, checked where they can only be checked: in a task. */
static int t_api_misuse(pp_call *call, const void *arg, size_t len) {
  int r;

  (void) arg;
  (void) len;
  if ((r = pp_reply(NULL, "x", 1)) != PP_EINVAL)
    return pp_fail(call, "pp_reply(NULL, \"x\", 1) returned %d (%s)", r, pp_errname(r));
  if ((r = pp_reply(call, NULL, 1)) != PP_EINVAL)
    return pp_fail(call, "pp_reply(call, NULL, 1) returned %d (%s)", r, pp_errname(r));
  if ((r = pp_reply(call, NULL, 0)) != 0)
    return pp_fail(call, "pp_reply(call, NULL, 0) returned %d (%s)", r, pp_errname(r));
  return pp_reply(call, "ok", 2);
}

/* The header says pp_submit is PP_EINVAL when called from a worker. A worker may still
 * make a pool (nothing forbids it); replies {pp_pool_new's error, pp_submit's error}. */
static int t_nested_submit(pp_call *call, const void *arg, size_t len) {
  pp_pool_options opts;
  pp_pool *pool = NULL;
  int errs[2] = { 0, 0 };

  (void) arg;
  (void) len;
  pp_pool_options_init(&opts);
  opts.workers = 1;
  errs[0] = pp_pool_new(&pool, NULL, &opts);
  if (errs[0] == 0) {
    errs[1] = pp_submit(pool, "echo", "x", 1, NULL, NULL, NULL);
    if (errs[1] == 0)
      pp_pool_wait(pool);
    pp_pool_close(pool, NULL, NULL);
  }
  return pp_reply(call, errs, sizeof(errs));
}

#ifndef _WIN32
/* The descriptors above stderr that this worker holds. */
static int t_count_fds(pp_call *call, const void *arg, size_t len) {
  uint32_t n = 0;
  long max = sysconf(_SC_OPEN_MAX);
  int fd;

  (void) arg;
  (void) len;
  if (max < 0 || max > 65536)
    max = 65536;
  for (fd = 3; fd < max; fd++)
    if (fcntl(fd, F_GETFD) != -1)
      n++;
  return pp_reply(call, &n, sizeof(n));
}
#endif

const pp_task test_tasks[] = {
  { "echo", t_echo },
  { "nothing", t_nothing },
  { "mapf", t_mapf },
  { "act", t_act },
  { "failing_task", t_failing_task },
  { "fail_after_reply", t_fail_after_reply },
  { "reply_twice", t_reply_twice },
  { "return_seven", t_return_seven },
  { "long_failure", t_long_failure },
  { "global", t_global },
  { "pid", t_pid },
  { "pid_echo", t_pid_echo },
  { "init_store", t_init_store },
  { "init_get", t_init_get },
  { "init_fail", t_init_fail },
  { "crash_abort", t_crash_abort },
  { "crash_segv", t_crash_segv },
  { "exit3", t_exit3 },
  { "sleep_forever", t_sleep_forever },
  { "mark_run", t_mark_run },
  { "reply_size", t_reply_size },
  { "api_misuse", t_api_misuse },
  { "nested_submit", t_nested_submit },
  { "ks_work", test_task_ks_work },
  { "send_garbage", test_task_send_garbage },
  { "matrix_init", test_task_matrix_init },
  { "signals_default", test_task_signals_default },
  { "matrix_read", test_task_matrix_read },
  { "shm_fill", test_task_shm_fill },
  { "shm_crash", test_task_shm_crash },
  { "shm_make", test_task_shm_make },
  { "shm_release", test_task_shm_release },
  { "shm_close_inherited", test_task_shm_close_inherited },
  { "bm_copy", test_task_bm_copy },
  { "bm_sub", test_task_bm_sub },
  { "bm_where", test_task_bm_where },
  { "bm_make", test_task_bm_make },
  { "bm_nofile", test_task_bm_nofile },
  { "rendezvous", test_task_rendezvous },
  { "use_parent_pool", test_task_use_parent_pool },
  { "sleep_ms", test_task_sleep_ms },
  { "fs_print", test_task_fs_print },
  { "count_run", test_task_count_run },
  { "init_aligned_count", test_task_init_aligned_count },
  { "journal_run", test_task_journal_run },
  { "hs_journal", test_task_hs_journal },
  { "hs_truncate", test_task_hs_truncate },
  { "hs_scribble", test_task_hs_scribble },
  { "hs_ppid", test_task_hs_ppid },
  { "stream_op", test_task_stream_op },
  { "memcap_leak", test_task_memcap_leak },
  { "fh_state", test_task_fh_state },
  { "ln_print", test_task_ln_print },
  { "ln_where", test_task_ln_where },
  { "ln_stdin", test_task_ln_stdin },
  { "ln_park", test_task_ln_park },
  { "ma_init", test_task_ma_init },
  { "ma_op", test_task_ma_op },
  { "ma_noarg", test_task_ma_noarg },
  { "ma_wide", test_task_ma_wide },
  { "ma_quiet", test_task_ma_quiet },
  { "ma_in_worker", test_task_ma_in_worker },
  { "xw_parent", test_task_xw_parent },
  /* The same initializer under names of many lengths (test-worker.c). */
  { "i", test_task_init_aligned },
  { "ia", test_task_init_aligned },
  { "ia3", test_task_init_aligned },
  { "ia_4", test_task_init_aligned },
  { "ia_init", test_task_init_aligned },
  { "ia_init8", test_task_init_aligned },
  { "ia_init_aligned", test_task_init_aligned },
  { "ia_init_aligned6", test_task_init_aligned },
#ifndef _WIN32
  { "count_fds", t_count_fds },
  { "sp_fd_open", test_task_sp_fd_open },
  { "sp_signals", test_task_sp_signals },
#else
  { "win_inherited", test_task_win_inherited },
  { "win_raise", test_task_win_raise },
  { "win_exit_process", test_task_win_exit_process },
  { "win_grandchild", test_task_win_grandchild },
#endif
  { "model", test_task_model },
  { "model_init", test_task_model_init },
  { "xt_item", test_task_xt_item },
  { NULL, NULL },
};
