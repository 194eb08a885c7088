/* The model test (issue 17): random sequences of the public API's calls, checked against
 * what include/procpool.h promises, whatever the timing.
 *
 * A run draws a pool (workers, timeout, retirement, pipeline depth) and a sequence of
 * steps from one seed: submits with callbacks, pp_map, pp_apply, pp_cancel of queued,
 * sent-ahead, running and finished tasks, pp_pool_wait, outside kills of workers,
 * pp_pool_close and pp_pool_terminate (from outside and from result callbacks where the
 * header allows it). Tasks succeed, fail, crash, exit, kill themselves or hang past
 * task_timeout_ms. Then it checks:
 *   - every accepted task gets exactly one outcome, of a status that the header allows
 *     for what the task did and what was done to it, and a success carries its bytes;
 *   - every task ran at most once: each run appends a record (nonce, pid) to a file,
 *     and no nonce appears twice, nor one that was refused;
 *   - every call returns (a watchdog names the seed, the step and the call);
 *   - nothing is left: descriptors, child processes, workers, /dev/shm names, and
 *     uv_loop_close succeeds on the caller's loop.
 * A failure prints the seed, the step, what was violated, the last steps, and the
 * command that replays it. Fixed seeds run by default. By hand: PROCPOOL_MODEL_SEED (one
 * seed, or the first of PROCPOOL_MODEL_RUNS consecutive ones), PROCPOOL_MODEL_STEPS,
 * PROCPOOL_MODEL_VERBOSE=1 (print every step), PROCPOOL_MODEL_KEEP_GOING=1 (report every
 * broken promise the run can go on after, and fail at the end of all runs) and
 * PROCPOOL_MODEL_WATCHDOG_S (how long a call may take, 30 s, and 1 s more, scaled for
 * the run, for each task without its outcome yet: see M_TASK_ALLOW_MS). The calls are
 * the seed's; which task a cancel or a kill finds pending can vary with timing. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First: uv.h brings winsock2.h, which must come before windows.h. */
#include "test.h"

#ifdef _WIN32
#  include <windows.h>
#else
#  include <dirent.h>
#  include <fcntl.h>
#  include <signal.h>
#  include <sys/resource.h>
#  include <unistd.h>
#endif

/* ---- The worker side ----------------------------------------------------------------- */

/* What a model task does: the first byte of its argument. */
enum { K_OK = TEST_MK_OK, K_SLOW = TEST_MK_SLOW, K_FAIL = TEST_MK_FAIL,
       K_ABORT = TEST_MK_ABORT, K_SEGV = TEST_MK_SEGV, K_EXIT = TEST_MK_EXIT,
       K_SELFKILL = TEST_MK_SELFKILL, K_HANG = TEST_MK_HANG, K_N = TEST_MK_N };

const char *const test_model_kind_names[TEST_MK_N] = { "ok", "slow", "fail", "abort", "segv",
                                                       "exit", "selfkill", "hang" };
#define kind_names test_model_kind_names

/* The argument: kind (1 byte), 3 zero bytes, param (u32: a slow task's milliseconds),
 * nonce (u64), then a payload that an ok or slow task returns with every byte xor 0x5a,
 * after its nonce and its pid. */
#define M_HDR TEST_MODEL_HDR
#define M_REPLY_HDR TEST_MODEL_REPLY_HDR
#define M_RECORD 16

/* The run log: a directory per run, whose path the initializer gives every worker, and
 * in it a file per worker, named by its pid. One writer per file: appends of several
 * processes to one file may interleave or overwrite each other on some systems (wine's
 * appends are a seek and a write). */
static char *model_log;
static uint64_t model_instance;   /* this process's, for its run log's name */

int test_task_model_init(pp_call *call, const void *arg, size_t len) {
  char *p;

  if (len == 0 || len > 4096)
    return pp_fail(call, "model_init: a path of %lu bytes", (unsigned long) len);
  p = (char *) malloc(len + 1);
  if (p == NULL)
    return pp_fail(call, "model_init: out of memory");
  memcpy(p, arg, len);
  p[len] = '\0';
  free(model_log);
  model_log = p;
  return 0;
}

/* One record per run, written before the task does anything else: one written just before
 * a crash stays. */
static int model_record(uint64_t nonce) {
  unsigned char rec[M_RECORD];
  uint64_t pid = (uint64_t) uv_os_getpid();
  char path[4200];
  uv_buf_t buf;
  uv_fs_t req;
  int fd, n;

  memcpy(rec, &nonce, 8);
  memcpy(rec + 8, &pid, 8);
  /* A file per process, not per pid: Windows (and wine) hand a pid out again at once,
   * and two workers that shared a file would look like one that ran both's tasks. */
  if (model_instance == 0)
    model_instance = uv_hrtime();
  snprintf(path, sizeof(path), "%s/%llu-%llx", model_log, (unsigned long long) pid,
           (unsigned long long) model_instance);
  fd = uv_fs_open(NULL, &req, path, UV_FS_O_WRONLY | UV_FS_O_APPEND | UV_FS_O_CREAT,
                  0644, NULL);
  uv_fs_req_cleanup(&req);
  if (fd < 0)
    return fd;
  buf = uv_buf_init((char *) rec, sizeof(rec));
  n = uv_fs_write(NULL, &req, fd, &buf, 1, -1, NULL);
  uv_fs_req_cleanup(&req);
  uv_fs_close(NULL, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
  return n == (int) sizeof(rec) ? 0 : n < 0 ? n : UV_EIO;
}

/* No core file, no error dialog, and no sanitizer's handler: the plain death. */
static void model_quiet_crash(void) {
#ifdef _WIN32
  SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
#else
  struct rlimit rl = { 0, 0 };
  setrlimit(RLIMIT_CORE, &rl);
  signal(SIGSEGV, SIG_DFL);
  signal(SIGABRT, SIG_DFL);
#endif
}

static int model_reply(pp_call *call, uint64_t nonce, const unsigned char *payload,
                       size_t n) {
  uint64_t pid = (uint64_t) uv_os_getpid();
  unsigned char *buf = (unsigned char *) malloc(M_REPLY_HDR + n);
  size_t i;
  int r;

  if (buf == NULL)
    return pp_fail(call, "model: out of memory");
  memcpy(buf, &nonce, 8);
  memcpy(buf + 8, &pid, 8);
  for (i = 0; i < n; i++)
    buf[M_REPLY_HDR + i] = (unsigned char) (payload[i] ^ 0x5a);
  r = pp_reply(call, buf, M_REPLY_HDR + n);
  free(buf);
  return r;
}

int test_task_model(pp_call *call, const void *arg, size_t len) {
  const unsigned char *p = (const unsigned char *) arg;
  unsigned long long n;
  uint64_t nonce;
  uint32_t param;
  int err;

  if (len < M_HDR)
    return pp_fail(call, "model: an argument of %lu bytes", (unsigned long) len);
  if (model_log == NULL)
    return pp_fail(call, "model: the initializer did not run in this worker");
  memcpy(&param, p + 4, 4);
  memcpy(&nonce, p + 8, 8);
  n = (unsigned long long) nonce;
  err = model_record(nonce);
  if (err != 0)
    return pp_fail(call, "model: cannot record the run of nonce %llu in %s: %s", n,
                   model_log, uv_strerror(err));
  switch (p[0]) {
    case K_SLOW:
      uv_sleep(param);
      return model_reply(call, nonce, p + M_HDR, len - M_HDR);
    case K_OK:
      return model_reply(call, nonce, p + M_HDR, len - M_HDR);
    case K_FAIL:
      return pp_fail(call, "model fail nonce=%llu", n);
    case K_ABORT:
      model_quiet_crash();
      abort();
    case K_SEGV:
      model_quiet_crash();
#ifdef _WIN32
      *(volatile int *) 0 = 0;
#else
      raise(SIGSEGV);
#endif
      return pp_fail(call, "model: still alive after SIGSEGV");
    case K_EXIT:
      exit(3);
    case K_SELFKILL:
      test_kill_self();
    case K_HANG:
      for (;;)
        uv_sleep(1000);
    default:
      return pp_fail(call, "model: unknown kind %u", (unsigned) p[0]);
  }
}

/* ---- The parent side: state ---------------------------------------------------------- */

/* Where a task came from. A refused one (a submit error) must never run. */
enum { O_SUBMIT, O_APPLY, O_MAP, O_REFUSED };
static const char *const origin_names[] = { "submit", "apply", "map item", "refused" };

/* What a submitted task's callback does after checking its result. */
enum { A_NONE, A_SUBMIT, A_CANCEL_RANDOM, A_CANCEL_TARGET, A_BLOCKING, A_CLOSE,
       A_TERMINATE, A_KILL };

typedef struct m_task {
  uint64_t id;
  uint64_t nonce;          /* its index + 1 */
  uint64_t reply_pid;      /* from a success */
  uint32_t plen;           /* payload bytes */
  uint32_t param;          /* a slow task's milliseconds */
  uint32_t kills_at_submit;
  uint32_t target;         /* A_CANCEL_TARGET: the target's index */
  int status;
  int calls;
  int step;
  unsigned char kind;
  unsigned char origin;
  unsigned char action;
  unsigned char pending_at_terminate;  /* pending when a terminate was called */
  unsigned char killwin;               /* an outside kill happened while it was pending */
  unsigned char poolkill;              /* the pool killed a worker while it was pending */
  unsigned char ewk_if_started;        /* its PP_EWORKER holds only if it had started */
} m_task;

#define M_MAX_TASKS 60000
#define M_MAX_PAYLOAD 65536
#define M_TIMEOUT_MS 500
#define M_HANG_BUDGET 3
#define M_TICK_MAX 25
#define M_TRACE 40
#define M_WAIT_S 30       /* the watchdog's default; PROCPOOL_MODEL_WATCHDOG_S sets it */
/* The watchdog's allowance for each task a call may wait for, on top of M_WAIT_S and
 * scaled for the run: each may end its worker (max_tasks_per_worker = 1, a crash, a
 * timeout) and so wait for a new one to start, which takes about 0.5 s under wine on a
 * loaded machine; a pp_map of 54 items through one worker starts 54 in a row. */
#define M_TASK_ALLOW_MS 1000
#define M_PIDS 32

typedef struct m_stats {
  unsigned long accepted, refused, maps, map_items, applies, cb_submits, tick_actions;
  unsigned long cancel_waiting, cancel_running, cancel_done, cancel_bogus;
  unsigned long kills, kill_skipped, killed_tasks, poolkilled_tasks, late_timeouts;
  unsigned long by_status[8];  /* ok, etask, eworker, etimedout, ecanceled, eclosed, other */
  unsigned long runs_logged;
  unsigned long max_runs_per_pid;
  unsigned long npids;
} m_stats;

typedef struct test_model_logfile {
  char name[48];           /* a worker's pid and its process's own number */
  uint64_t off;            /* bytes read */
  size_t tail;             /* bytes of a record not yet whole */
  unsigned long runs;      /* the records read */
} m_logfile;

typedef struct model {
  /* The run's parameters. */
  uint64_t seed;
  int steps;
  int caller;              /* the pool is on the test's own loop */
  pp_pool_options opts;
  int close_step;          /* caller's loop: the step whose task closes the pool, or 0 */
  int close_kind;          /* A_CLOSE or A_TERMINATE */
  /* Progress. */
  uint64_t rng, tick_rng;
  int step;
  const char *op;
  pp_pool *pool;
  uv_loop_t loop;
  uv_timer_t ticker;
  int tick_actions;
  int in_timer;            /* inside the ticker's callback */
  m_task *t;
  size_t nt;
  uint32_t kills;
  uint32_t poolkills;      /* cancels and timeouts: the pool may have killed a worker */
  int hangs;
  int must_cancel;         /* hangs without a timeout that a callback is to cancel */
  /* What is going on, for the checks. */
  int in_submit;
  uint64_t cancel_target;  /* the nonce whose pp_cancel is running */
  int blocking;            /* inside pp_apply, pp_map, pp_pool_wait */
  int call_saw_close, call_saw_term;  /* during the blocking call */
  int closing, terminating;
  int close_ok, term_ok;   /* close / terminate returned 0 */
  int close_cbs, term_cbs;
  int pool_gone;           /* a close callback ran: the pool pointer is invalid */
  uint64_t pids[M_PIDS];   /* recent workers, from results */
  size_t npids;
  test_model_log log;      /* its path is the initializer's argument */
  uint32_t *runs;          /* by nonce: runs in the log */
  uint64_t *pid_of;        /* by nonce: the worker of its first run */
  uint64_t *rec_pids;      /* the worker of every run */
  size_t nrec, rec_cap;
  int keep_going;          /* report violations of the contract and go on */
  int violations;
  m_stats st;
  char trace[M_TRACE][160];
  int trace_next;
  int verbose;
} model;

static model g;
static unsigned wait_s = M_WAIT_S;
static unsigned wd_limit_s;  /* the armed call's limit: wait_s and its tasks' allowance */
static int model_violations;  /* of every run, with PROCPOOL_MODEL_KEEP_GOING */
static unsigned char argbuf[M_HDR + M_MAX_PAYLOAD];

/* ---- Randomness: splitmix64, one stream per purpose ---------------------------------- */

static uint64_t sm64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static unsigned rnd(uint64_t *s, unsigned n) { return (unsigned) (sm64(s) % n); }

static void gen_payload(uint64_t nonce, unsigned char *p, size_t n) {
  uint64_t s = nonce * 0xD1B54A32D192ED03ull, x = 0;
  size_t i;

  for (i = 0; i < n; i++) {
    if (i % 8 == 0)
      x = sm64(&s);
    p[i] = (unsigned char) (x >> (8 * (i % 8)));
  }
}

/* ---- Reporting ----------------------------------------------------------------------- */

static const char *test_name(void) { return g.caller ? "model_caller_loop" : "model_private"; }

static void wd_refresh(void);

static void trace(const char *fmt, ...) PP_PRINTF(1, 2);
static void trace(const char *fmt, ...) {
  char *line = g.trace[g.trace_next % M_TRACE];
  int n;
  va_list ap;

  n = snprintf(line, sizeof(g.trace[0]), "step %d: %s", g.step, g.in_timer ? "timer: " : "");
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof(g.trace[0]) - (size_t) n, fmt, ap);
  va_end(ap);
  g.trace_next++;
  wd_refresh();
  if (g.verbose)
    printf("  %s\n", line), fflush(stdout);
}

/* Into buf: what a failure must say beyond its own text. */
static size_t describe_run(char *buf, size_t size) {
  char exe[1024];
  size_t n = sizeof(exe), len;
  int i, first;

  if (uv_exepath(exe, &n) != 0)
    snprintf(exe, sizeof(exe), "run-tests");
  len = (size_t) snprintf(buf, size,
                          "  run: seed=0x%llx method=%s loop=%s workers=%u timeout=%llu "
                          "max_tasks=%u depth=%u step=%d/%d op=%s\n  last steps:\n",
                          (unsigned long long) g.seed, pp_start_method_name(test_method),
                          g.caller ? "caller" : "private", g.opts.workers,
                          (unsigned long long) g.opts.task_timeout_ms,
                          g.opts.max_tasks_per_worker, g.opts.pipeline_depth, g.step,
                          g.steps, g.op ? g.op : "-");
  first = g.trace_next > M_TRACE ? g.trace_next - M_TRACE : 0;
  for (i = first; i < g.trace_next && len < size; i++)
    len += (size_t) snprintf(buf + len, size - len, "    %s\n", g.trace[i % M_TRACE]);
  if (len < size)
    len += (size_t) snprintf(buf + len, size - len,
                             "  run log (kept): %s\n"
                             "  replay: PROCPOOL_MODEL_SEED=0x%llx PROCPOOL_MODEL_STEPS=%d "
                             "%s %s %s\n", g.log.path, (unsigned long long) g.seed, g.steps,
                             exe, test_name(), pp_start_method_name(test_method));
  return len < size ? len : size - 1;
}

static void violation(const char *fmt, ...) PP_PRINTF(1, 2);
static void violation(const char *fmt, ...) {
  static char buf[8192];
  va_list ap;

  fflush(stdout);
  fprintf(stderr, "model: VIOLATION: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  describe_run(buf, sizeof(buf));
  fputs(buf, stderr);
  fflush(stderr);
  exit(1);
}

/* A broken promise that leaves the test able to go on: with PROCPOOL_MODEL_KEEP_GOING=1
 * the run reports it and continues, to show all that a seed finds; it fails at its end. */
static void soft_violation(const char *fmt, ...) PP_PRINTF(1, 2);
static void soft_violation(const char *fmt, ...) {
  static char buf[8192];
  va_list ap;

  fflush(stdout);
  fprintf(stderr, "model: VIOLATION: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  describe_run(buf, sizeof(buf));
  fputs(buf, stderr);
  fflush(stderr);
  if (!g.keep_going)
    exit(1);
  g.violations++;
}

static const char *task_desc(const m_task *t) {
  static char buf[2][160];
  static int k;
  char *b = buf[k++ % 2];

  snprintf(b, sizeof(buf[0]), "%s task (%s, nonce %llu, id %llu, from step %d)",
           kind_names[t->kind], origin_names[t->origin], (unsigned long long) t->nonce,
           (unsigned long long) t->id, t->step);
  return b;
}

/* ---- The watchdog: every call must return -----------------------------------------------
 * Armed around each call of the API and each run of the loop, far above what a correct
 * call takes; when it fires it prints the run's description and ends the process. */

static char wd_msg[10000];
static size_t wd_len;
static const char *wd_what;  /* the call the watchdog is armed for, or NULL */

/* How long the call about to be made may take: wait_s, and the allowance for every task
 * without its outcome yet (those it makes are made before it is armed), which it may wait
 * for. A bound on a hang, never a measure of speed. */
static unsigned wd_limit(void) {
  uint64_t open = 0, ms;
  size_t i;

  for (i = 0; i < g.nt; i++)
    open += g.t[i].calls == 0;
  ms = (uint64_t) wait_s * 1000 + test_scale_ms(open * M_TASK_ALLOW_MS);
  return (unsigned) ((ms + 999) / 1000);
}

static void wd_format(const char *what) {
  int n = snprintf(wd_msg, sizeof(wd_msg),
                   "model: VIOLATION: %s did not return within %u s (a hang)\n", what,
                   wd_limit_s);
  wd_len = (size_t) n;
  wd_len += describe_run(wd_msg + wd_len, sizeof(wd_msg) - wd_len);
}

#ifdef _WIN32
static uv_thread_t wd_thread;
static uv_mutex_t wd_mutex;
static uv_cond_t wd_cond;
static uint64_t wd_deadline;
static int wd_stop;

static void wd_main(void *arg) {
  (void) arg;
  uv_mutex_lock(&wd_mutex);
  while (!wd_stop) {
    if (wd_deadline != 0 && uv_hrtime() > wd_deadline) {
      fwrite(wd_msg, 1, wd_len, stderr);
      fflush(stderr);
      _exit(1);
    }
    uv_cond_timedwait(&wd_cond, &wd_mutex, 200 * 1000000ull);
  }
  uv_mutex_unlock(&wd_mutex);
}

static void wd_init(void) {
  ASSERT_EQ_INT(uv_mutex_init(&wd_mutex), 0);
  ASSERT_EQ_INT(uv_cond_init(&wd_cond), 0);
  ASSERT_EQ_INT(uv_thread_create(&wd_thread, wd_main, NULL), 0);
}

static void wd_end(void) {
  uv_mutex_lock(&wd_mutex);
  wd_stop = 1;
  uv_cond_signal(&wd_cond);
  uv_mutex_unlock(&wd_mutex);
  ASSERT_EQ_INT(uv_thread_join(&wd_thread), 0);
  uv_cond_destroy(&wd_cond);
  uv_mutex_destroy(&wd_mutex);
}

static void wd_arm(const char *what) {
  uv_mutex_lock(&wd_mutex);
  wd_what = what;
  wd_limit_s = wd_limit();
  wd_format(what);
  wd_deadline = uv_hrtime() + (uint64_t) wd_limit_s * 1000000000ull;
  uv_mutex_unlock(&wd_mutex);
}

static void wd_disarm(void) {
  uv_mutex_lock(&wd_mutex);
  wd_what = NULL;
  wd_deadline = 0;
  uv_mutex_unlock(&wd_mutex);
}

/* The steps traced while a call runs belong in the message too. */
static void wd_refresh(void) {
  if (wd_stop || wd_what == NULL)
    return;
  uv_mutex_lock(&wd_mutex);
  if (wd_what != NULL)
    wd_format(wd_what);
  uv_mutex_unlock(&wd_mutex);
}
#else
/* alarm(), not a thread: a thread would make the fork method warn, and alarms are not
 * inherited by forked or spawned workers. */
static void wd_fire(int sig) {
  ssize_t r;

  (void) sig;
  r = write(2, wd_msg, wd_len);
  (void) r;
  _exit(1);
}

static void wd_init(void) {
  struct sigaction sa;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = wd_fire;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ_INT(sigaction(SIGALRM, &sa, NULL), 0);
}

static void wd_end(void) {
  alarm(0);
  signal(SIGALRM, SIG_DFL);
}

static void wd_arm(const char *what) {
  wd_what = what;
  wd_limit_s = wd_limit();
  wd_format(what);
  alarm(wd_limit_s);
}

static void wd_disarm(void) {
  alarm(0);
  wd_what = NULL;
}

/* The steps traced while a call runs belong in the message too. The alarm is held off
 * meanwhile, so that the handler never sees a message half made. */
static void wd_refresh(void) {
  unsigned left;

  if (wd_what == NULL)
    return;
  left = alarm(0);
  wd_format(wd_what);
  alarm(left > 0 ? left : 1);
}
#endif

/* ---- Processes (Linux) --------------------------------------------------------------- */

#ifdef __linux__

/* A worker of ours: its parent is this process, or the forkserver that this process
 * started. Never a process of another test that runs the same program. */
int test_model_is_worker(long pid) {
  long p = pid, self = (long) getpid();
  char state;
  int i;

  for (i = 0; i < 3 && p > 1; i++) {
    p = test_proc_stat(p, &state);
    if (p == self)
      return 1;
  }
  return 0;
}

static int is_forkserver(long pid) {
  char path[64], buf[512];
  FILE *f;
  size_t n, i;

  snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
  f = fopen(path, "re");
  if (f == NULL)
    return 0;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  for (i = 0; i < n; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  buf[n] = '\0';
  return strstr(buf, "--procpool-forkserver=") != NULL;
}

static size_t list_children(long *pids, char *states, size_t max) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  long self = (long) getpid();
  size_t n = 0;

  if (d == NULL)
    return 0;
  while ((e = readdir(d)) != NULL) {
    char *end, state = '?';
    long pid = strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0)
      continue;
    /* The forkserver's server lives as long as this process (the header says so): it is
     * no leftover of a pool. */
    if (test_proc_stat(pid, &state) == self && n < max && !is_forkserver(pid)) {
      pids[n] = pid;
      states[n] = state;
      n++;
    }
  }
  closedir(d);
  return n;
}

static void print_cmdline(long pid) {
  char path[64], buf[512];
  FILE *f;
  size_t n, i;

  snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
  f = fopen(path, "re");
  if (f == NULL)
    return;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  for (i = 0; i < n; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  buf[n] = '\0';
  fprintf(stderr, "    pid %ld: %s\n", pid, buf);
}
#endif

#ifdef __linux__
/* Its descriptors are closed: the process is gone, or a zombie whose other threads are
 * gone too. A zombie leader alone is not enough: the worker's other threads may still
 * hold its descriptors, its channel among them, for a moment. */
static int fully_dead(long pid) {
  char path[64], state = '?';
  DIR *d;
  struct dirent *e;
  int threads = 0;

  if (uv_kill((int) pid, 0) == UV_ESRCH)
    return 1;
  if (test_proc_stat(pid, &state) < 0)
    return 1;
  if (state != 'Z' && state != 'X')
    return 0;
  snprintf(path, sizeof(path), "/proc/%ld/task", pid);
  d = opendir(path);
  if (d == NULL)
    return 1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      threads++;
  closedir(d);
  return threads <= 1;
}

/* Waits, up to wait_s, for the process to end. */
static void wait_gone(long pid, const char *what) {
  uint64_t start = uv_hrtime();

  while (!fully_dead(pid)) {
    if (uv_hrtime() - start > (uint64_t) wait_s * 1000000000ull)
      violation("%s: pid %ld still runs after %u s", what, pid, wait_s);
    uv_sleep(5);
  }
}
#endif

static void remember_pid(uint64_t pid) {
  size_t i;

  for (i = 0; i < g.npids && i < M_PIDS; i++)
    if (g.pids[i] == pid)
      return;
  g.pids[g.npids++ % M_PIDS] = pid;
}

/* ---- The run log ------------------------------------------------------------------------
 * Read as it grows: runs[nonce] counts each task's runs, and a second run is reported at
 * the step that finds it. */

static void log_add(void *user, uint64_t nonce, uint64_t pid) {
  (void) user;
  if (nonce == 0 || nonce > g.nt)
    violation("the run log names nonce %llu, which no task had", (unsigned long long) nonce);
  if (g.nrec == g.rec_cap) {
    g.rec_cap = g.rec_cap * 2 + 1024;
    g.rec_pids = (uint64_t *) realloc(g.rec_pids, g.rec_cap * sizeof(uint64_t));
    ASSERT_NOT_NULL(g.rec_pids);
  }
  g.rec_pids[g.nrec++] = pid;
  if (g.runs[nonce]++ == 0) {
    g.pid_of[nonce] = pid;
    return;
  }
  soft_violation("%s ran %u times: in worker pid %llu, then in worker pid %llu (its "
                 "outcome so far: %s)", task_desc(&g.t[nonce - 1]), g.runs[nonce],
                 (unsigned long long) g.pid_of[nonce], (unsigned long long) pid,
                 g.t[nonce - 1].calls ? pp_errname(g.t[nonce - 1].status) : "none yet");
}

static void log_fail(void *user, const char *what) {
  (void) user;
  violation("%s", what);
}

static void log_read(test_model_log *log, m_logfile *f) {
  unsigned char chunk[M_RECORD * 256];
  char path[1100], why[1300];
  uv_fs_t req;
  uv_buf_t buf;
  size_t whole, i;
  int fd, n;

  snprintf(path, sizeof(path), "%s/%s", log->path, f->name);
  fd = uv_fs_open(NULL, &req, path, UV_FS_O_RDONLY, 0, NULL);
  uv_fs_req_cleanup(&req);
  if (fd < 0) {
    snprintf(why, sizeof(why), "cannot open the run log %s: %s", path, uv_strerror(fd));
    log->fail(log->user, why);
    return;
  }
  do {
    buf = uv_buf_init((char *) chunk, sizeof(chunk));
    n = uv_fs_read(NULL, &req, fd, &buf, 1, (int64_t) f->off, NULL);
    uv_fs_req_cleanup(&req);
    if (n < 0) {
      snprintf(why, sizeof(why), "cannot read the run log %s: %s", path, uv_strerror(n));
      log->fail(log->user, why);
      break;
    }
    /* A record is written in one write; part of one is one still being written. */
    whole = (size_t) n / M_RECORD;
    f->tail = (size_t) n % M_RECORD;
    for (i = 0; i < whole; i++) {
      uint64_t nonce, pid;
      memcpy(&nonce, chunk + i * M_RECORD, 8);
      memcpy(&pid, chunk + i * M_RECORD + 8, 8);
      log->add(log->user, nonce, pid);
    }
    f->runs += whole;
    f->off += whole * M_RECORD;
  } while (whole > 0);
  uv_fs_close(NULL, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
}

int test_model_log_init(test_model_log *log, const char *tag) {
  uv_fs_t req;
  int err;

  test_marker_path(log->path, sizeof(log->path), tag);
  /* A unique name, not the pid alone: Windows (and wine) hand out small pids again at
   * once, and a run that was skipped or kept its log leaves the directory behind. */
  err = uv_fs_mkdtemp(NULL, &req, log->path, NULL);
  if (err == 0)
    snprintf(log->path, sizeof(log->path), "%s", req.path);
  uv_fs_req_cleanup(&req);
  return err;
}

void test_model_log_update(test_model_log *log) {
  char why[1200];
  uv_fs_t req;
  uv_dirent_t ent;
  size_t i;
  int n;

  n = uv_fs_scandir(NULL, &req, log->path, 0, NULL);
  if (n < 0) {
    uv_fs_req_cleanup(&req);
    snprintf(why, sizeof(why), "cannot list the run log %s: %s", log->path, uv_strerror(n));
    log->fail(log->user, why);
    return;
  }
  while (uv_fs_scandir_next(&req, &ent) == 0) {
    for (i = 0; i < log->nfiles; i++)
      if (strcmp(log->files[i].name, ent.name) == 0)
        break;
    if (i == log->nfiles) {
      log->files = (m_logfile *) realloc(log->files, (log->nfiles + 1) * sizeof(m_logfile));
      ASSERT_NOT_NULL(log->files);
      memset(&log->files[i], 0, sizeof(log->files[i]));
      snprintf(log->files[i].name, sizeof(log->files[i].name), "%s", ent.name);
      log->nfiles++;
    }
  }
  uv_fs_req_cleanup(&req);
  for (i = 0; i < log->nfiles; i++)
    log_read(log, &log->files[i]);
}

static void log_update(void) { test_model_log_update(&g.log); }

static int log_has(uint64_t nonce) {
  log_update();
  return g.runs[nonce] > 0;
}

void test_model_log_remove(test_model_log *log) {
  char path[1100];
  uv_fs_t req, un;
  uv_dirent_t ent;

  if (uv_fs_scandir(NULL, &req, log->path, 0, NULL) >= 0)
    while (uv_fs_scandir_next(&req, &ent) == 0) {
      snprintf(path, sizeof(path), "%s/%s", log->path, ent.name);
      uv_fs_unlink(NULL, &un, path, NULL);
      uv_fs_req_cleanup(&un);
    }
  uv_fs_req_cleanup(&req);
  uv_fs_rmdir(NULL, &req, log->path, NULL);
  uv_fs_req_cleanup(&req);
  free(log->files);
  log->files = NULL;
  log->nfiles = 0;
}

/* ---- Tasks --------------------------------------------------------------------------- */

static int hang_allowed(void) {
  return g.opts.task_timeout_ms > 0 && g.hangs < M_HANG_BUDGET;
}

/* Kinds by weight, for a task of the given origin; big: an item of a big map. */
static int pick_kind(uint64_t *rng, int origin, int big) {
  static const int w_any[K_N] = { 40, 10, 15, 4, 4, 4, 4, 4 };
  static const int w_map[K_N] = { 60, 5, 15, 3, 3, 3, 3, 2 };
  static const int w_big[K_N] = { 920, 0, 60, 5, 5, 5, 5, 0 };
  const int *w = origin == O_MAP ? (big ? w_big : w_map) : w_any;
  int total = 0, k, r;

  for (k = 0; k < K_N; k++)
    total += w[k];
  r = (int) rnd(rng, (unsigned) total);
  for (k = 0; k < K_N; k++) {
    if (r < w[k])
      break;
    r -= w[k];
  }
  if (k == K_HANG) {
    if (!hang_allowed())
      return K_OK;
    g.hangs++;
  }
  return k;
}

static m_task *new_task(uint64_t *rng, int kind, int origin) {
  m_task *t;
  unsigned r = rnd(rng, 100);

  if (g.nt >= M_MAX_TASKS)
    violation("the model made over %d tasks (a bug of the test)", M_MAX_TASKS);
  t = &g.t[g.nt];
  memset(t, 0, sizeof(*t));
  t->nonce = g.nt + 1;
  g.nt++;
  t->kind = (unsigned char) kind;
  t->origin = (unsigned char) origin;
  t->step = g.step;
  t->kills_at_submit = g.kills;
  t->plen = r < 3 ? 16384 + rnd(rng, M_MAX_PAYLOAD - 16384 + 1) : rnd(rng, 65);
  if (kind == K_SLOW)
    t->param = 5 + rnd(rng, 56);
  return t;
}

size_t test_model_arg(unsigned kind, uint32_t param, uint64_t nonce, size_t plen,
                      unsigned char *buf) {
  memset(buf, 0, M_HDR);
  buf[0] = (unsigned char) kind;
  memcpy(buf + 4, &param, 4);
  memcpy(buf + 8, &nonce, 8);
  gen_payload(nonce, buf + M_HDR, plen);
  return M_HDR + plen;
}

static size_t build_arg(const m_task *t, unsigned char *buf) {
  return test_model_arg(t->kind, t->param, t->nonce, t->plen, buf);
}

const char *test_model_check_reply(uint64_t nonce, size_t plen, const void *data,
                                   size_t len, uint64_t *pid) {
  static const char *const what[] = { "a result of the wrong size",
                                      "the result of another task", "wrong result bytes" };
  unsigned char *want;
  size_t i;
  int bad;

  if (len != M_REPLY_HDR + plen)
    return what[0];
  if (memcmp(data, &nonce, 8) != 0)
    return what[1];
  memcpy(pid, (const unsigned char *) data + 8, 8);
  if (plen == 0)
    return NULL;
  want = (unsigned char *) malloc(plen);
  ASSERT_NOT_NULL(want);
  gen_payload(nonce, want, plen);
  for (i = 0; i < plen; i++)
    want[i] ^= 0x5a;
  bad = memcmp((const unsigned char *) data + M_REPLY_HDR, want, plen) != 0;
  free(want);
  return bad ? what[2] : NULL;
}

static void count_status(int s) {
  int k = s == 0 ? 0 : s == PP_ETASK ? 1 : s == PP_EWORKER ? 2 : s == PP_ETIMEDOUT ? 3
        : s == PP_ECANCELED ? 4 : s == PP_ECLOSED ? 5 : 6;

  g.st.by_status[k]++;
}

#ifdef __linux__
/* Every outside kill makes the tasks pending at that moment candidates for PP_EWORKER. */
static void mark_killwin(void) {
  size_t i;

  for (i = 0; i < g.nt; i++)
    if (g.t[i].origin == O_SUBMIT && g.t[i].calls == 0)
      g.t[i].killwin = 1;
}
#endif

/* So does a kill by the pool (a cancel or a timeout), for the tasks that had started. */
static void mark_poolkill(void) {
  size_t i;

  g.poolkills++;
  for (i = 0; i < g.nt; i++)
    if (g.t[i].origin == O_SUBMIT && g.t[i].calls == 0)
      g.t[i].poolkill = 1;
}

/* The outcome r of t is one the header allows.
 *   must_cancel: a pp_cancel of t, or a pp_pool_terminate, is deciding it now;
 *   canceled_ok: a terminate ran during the pp_map or pp_apply that ran it;
 *   closed_ok:   the pool closed during that call, so items may be refused. */
static void check_outcome(m_task *t, const pp_result *r, int must_cancel, int canceled_ok,
                          int closed_ok) {
  int s = r->status;
  const char *m = r->message ? r->message : "(no message)";
  uint64_t pid;

  count_status(s);
  if (s == PP_ETIMEDOUT)
    mark_poolkill();
  if (s > 0)
    violation("%s: a positive status %d", task_desc(t), s);
  if (s == 0) {
    if (r->message != NULL)
      violation("%s: a success carries a message: %s", task_desc(t), r->message);
    if ((r->len == 0) != (r->data == NULL))
      violation("%s: a success of %lu bytes with data %p", task_desc(t),
                (unsigned long) r->len, r->data);
  } else {
    if (r->message == NULL || r->message[0] == '\0')
      violation("%s: a failure (%s) without a message", task_desc(t), pp_errname(s));
    if (r->data != NULL || r->len != 0)
      violation("%s: a failure (%s) carries %lu bytes", task_desc(t), pp_errname(s),
                (unsigned long) r->len);
  }
  if (must_cancel) {
    if (s != PP_ECANCELED)
      violation("%s: ended with %s (%s) by a pp_cancel or pp_pool_terminate that must "
                "cancel it", task_desc(t), pp_errname(s), m);
    return;
  }
  if (s == PP_ECANCELED) {
    if (!canceled_ok)
      violation("%s: PP_ECANCELED, though no pp_cancel of it and no pp_pool_terminate "
                "was running: %s", task_desc(t), m);
    return;
  }
  if (s == PP_ECLOSED) {
    if (!closed_ok)
      violation("%s: PP_ECLOSED for a task the pool had accepted: %s", task_desc(t), m);
    return;
  }
  if (s == PP_EWORKER && t->killwin) {
    g.st.killed_tasks++;
    return;
  }
  /* The pool kills a worker to cancel or time out its running task. If that task had
   * finished, its result on the way, the next may have started: then it dies with the
   * worker, and may not run again. One that had not started runs elsewhere. */
  if (s == PP_EWORKER && t->poolkill) {
    t->ewk_if_started = 1;
    g.st.poolkilled_tasks++;
    return;
  }
  switch (t->kind) {
    case K_OK:
    case K_SLOW:
      if (s != 0)
        break;
      {
        const char *bad = test_model_check_reply(t->nonce, t->plen, r->data, r->len, &pid);
        if (bad != NULL)
          violation("%s: %s (%lu bytes, want %lu)", task_desc(t), bad,
                    (unsigned long) r->len, (unsigned long) (M_REPLY_HDR + t->plen));
      }
      t->reply_pid = pid;
      remember_pid(pid);
      return;
    case K_FAIL: {
      char want[64];
      if (s != PP_ETASK)
        break;
      snprintf(want, sizeof(want), "nonce=%llu", (unsigned long long) t->nonce);
      if (strstr(m, want) == NULL)
        violation("%s: PP_ETASK without its pp_fail text \"%s\": %s", task_desc(t), want, m);
      return;
    }
    case K_ABORT:
    case K_SEGV:
    case K_EXIT:
    case K_SELFKILL:
      if (s == PP_EWORKER)
        return;
      break;
    case K_HANG:
      if (s == PP_ETIMEDOUT && g.opts.task_timeout_ms > 0)
        return;
      break;
  }
  /* The header: a task still running task_timeout_ms after it started times out,
   * whatever it does; so may one that a loaded machine did not schedule in time. */
  if (s == PP_ETIMEDOUT && g.opts.task_timeout_ms > 0 && t->kind != K_HANG) {
    g.st.late_timeouts++;
    return;
  }
  log_update();
  soft_violation("%s: ended with %s, not an outcome the header allows for it (%s; "
                 "%u runs of it in the log so far): %s", task_desc(t), pp_errname(s),
                 t->killwin ? "an outside kill happened while it was pending"
                 : t->poolkill ? "only the pool killed workers while it was pending"
                 : "no worker was killed while it was pending", g.runs[t->nonce], m);
}

/* ---- Calls, each with what the header says it returns -------------------------------- */

static void m_cb(pp_pool *pool, pp_result *r, void *user);
static void do_close(int from_cb);
static void do_terminate(int from_cb);
static void kill_pid(uint64_t pid, const char *why);

static m_task *submit_task(uint64_t *rng, int kind, int action) {
  m_task *t = new_task(rng, kind, O_SUBMIT);
  size_t len = build_arg(t, argbuf);
  int want = g.closing ? PP_ECLOSED : 0, err;

  t->action = (unsigned char) action;
  g.in_submit++;
  err = pp_submit(g.pool, "model", argbuf, len, m_cb, (void *) (uintptr_t) (t - g.t), &t->id);
  g.in_submit--;
  trace("submit %s -> %s", task_desc(t), pp_errname(err));
  if (err != want)
    violation("pp_submit of %s returned %s, want %s", task_desc(t), pp_errname(err),
              pp_errname(want));
  if (err != 0) {
    t->origin = O_REFUSED;
    g.st.refused++;
    return t;
  }
  g.st.accepted++;
  if (t->id == 0)
    violation("pp_submit accepted %s with id 0", task_desc(t));
  if (t->calls != 0)
    violation("%s: its callback ran within pp_submit", task_desc(t));
  return t;
}

/* pp_cancel of t: 0 with its PP_ECANCELED callback run before it returns if t was
 * pending, PP_ENOENT if it was not (finished, a map item, an apply, refused). */
static void do_cancel(m_task *t) {
  int pending = t->origin == O_SUBMIT && t->calls == 0;
  int calls = t->calls, started = pending ? log_has(t->nonce) : 0, err;
  uint64_t saved = g.cancel_target;

  g.cancel_target = pending ? t->nonce : 0;
  err = pp_cancel(g.pool, t->id);
  g.cancel_target = saved;
  trace("cancel %s (%s) -> %s", task_desc(t),
        !pending ? "not pending" : started ? "running" : "queued or sent ahead",
        pp_errname(err));
  if (pending) {
    if (err != 0)
      violation("pp_cancel of pending %s returned %s, want 0", task_desc(t), pp_errname(err));
    if (t->calls != 1)
      violation("pp_cancel of %s returned 0 before its callback ran", task_desc(t));
    mark_poolkill();
    if (started)
      g.st.cancel_running++;
    else
      g.st.cancel_waiting++;
  } else {
    if (err != PP_ENOENT)
      violation("pp_cancel of %s, which is not pending, returned %s, want PP_ENOENT",
                task_desc(t), pp_errname(err));
    if (t->calls != calls)
      violation("pp_cancel of %s, which is not pending, ran its callback", task_desc(t));
    g.st.cancel_done++;
  }
}

static void cancel_random(uint64_t *rng) {
  unsigned r = rnd(rng, 100), start = (unsigned) sm64(rng);
  size_t i;
  int err;

  if (g.nt > 0 && r < 80) {
    /* Mostly a pending task; else any: finished, refused, a map item, an apply. */
    for (i = 0; r < 55 && i < g.nt; i++) {
      m_task *t = &g.t[(start + i) % g.nt];
      if (t->origin == O_SUBMIT && t->calls == 0) {
        do_cancel(t);
        return;
      }
    }
    do_cancel(&g.t[start % g.nt]);
    return;
  }
  /* An id that never existed. */
  {
    uint64_t id = r < 90 ? UINT64_MAX - (start % 1000) : 0;
    err = pp_cancel(g.pool, id);
    trace("cancel of id %llu, which never existed -> %s", (unsigned long long) id,
          pp_errname(err));
    if (err != PP_ENOENT)
      violation("pp_cancel of id %llu, which never existed, returned %s, want PP_ENOENT",
                (unsigned long long) id, pp_errname(err));
    g.st.cancel_bogus++;
  }
}

/* From a result callback: the blocking calls refuse with PP_EINVAL, as do, on a private
 * loop, pp_pool_close and (but to hurry a close) pp_pool_terminate. */
static void blocking_refusals(uint64_t *rng) {
  unsigned which = rnd(rng, 5);
  m_task *t;
  size_t len;
  int err;

  switch (which) {
    case 0: {
      pp_result out;
      t = new_task(rng, K_OK, O_REFUSED);
      len = build_arg(t, argbuf);
      memset(&out, 0, sizeof(out));
      err = pp_apply(g.pool, "model", argbuf, len, &out);
      trace("pp_apply from a callback -> %s", pp_errname(err));
      if (err != PP_EINVAL || out.status != PP_EINVAL || out.message == NULL)
        violation("pp_apply from a result callback returned %s with out.status %s and "
                  "message %s, want PP_EINVAL twice and a message", pp_errname(err),
                  pp_errname(out.status), out.message ? out.message : "NULL");
      pp_result_free(&out);
      break;
    }
    case 1: {
      pp_input in[2];
      pp_result out[2], sentinel[2];
      t = new_task(rng, K_OK, O_REFUSED);
      len = build_arg(t, argbuf);
      in[0].data = argbuf;
      in[0].len = len;
      in[1] = in[0];
      memset(sentinel, 0x6b, sizeof(sentinel));
      memcpy(out, sentinel, sizeof(out));
      err = pp_map(g.pool, "model", 2, in, out);
      trace("pp_map from a callback -> %s", pp_errname(err));
      if (err != PP_EINVAL)
        violation("pp_map from a result callback returned %s, want PP_EINVAL",
                  pp_errname(err));
      if (memcmp(out, sentinel, sizeof(out)) != 0)
        violation("pp_map from a result callback wrote to out[], which the header says "
                  "it leaves untouched");
      break;
    }
    case 2:
      err = pp_pool_wait(g.pool);
      trace("pp_pool_wait from a callback -> %s", pp_errname(err));
      if (err != PP_EINVAL)
        violation("pp_pool_wait from a result callback returned %s, want PP_EINVAL",
                  pp_errname(err));
      break;
    case 3:
      if (!g.caller)
        do_close(1);
      break;
    default:
      if (!g.caller && !g.closing)
        do_terminate(1);
      break;
  }
}

static void run_action(m_task *t, const pp_result *r) {
  uint64_t s = g.seed ^ (t->nonce * 0xD1B54A32D192ED03ull);
  unsigned i, n;

  switch (t->action) {
    case A_SUBMIT:
      n = 1 + rnd(&s, 2);
      for (i = 0; i < n && g.nt < M_MAX_TASKS - 1000; i++) {
        int kind = pick_kind(&s, O_SUBMIT, 0);
        g.st.cb_submits++;
        submit_task(&s, kind, rnd(&s, 10) == 0 ? A_CANCEL_RANDOM : A_NONE);
      }
      break;
    case A_CANCEL_RANDOM:
      cancel_random(&s);
      break;
    case A_CANCEL_TARGET:
      do_cancel(&g.t[t->target]);
      break;
    case A_BLOCKING:
      blocking_refusals(&s);
      break;
    case A_CLOSE:
      do_close(1);
      break;
    case A_TERMINATE:
      do_terminate(1);
      break;
    case A_KILL:
      if (r->status == 0 && t->reply_pid != 0)
        kill_pid(t->reply_pid, "from the callback of the task it ran");
      break;
  }
}

static void m_cb(pp_pool *pool, pp_result *r, void *user) {
  m_task *t = &g.t[(size_t) (uintptr_t) user];
  int must = g.cancel_target == t->nonce || t->pending_at_terminate;

  if (pool != g.pool)
    violation("%s: its callback got pool %p, not %p", task_desc(t), (void *) pool,
              (void *) g.pool);
  if (g.pool_gone)
    violation("%s: its callback ran after the pool's close callback", task_desc(t));
  if (g.in_submit > 0)
    violation("%s: its callback ran within a pp_submit", task_desc(t));
  if (t->origin != O_SUBMIT)
    violation("%s: a callback for a task that was not accepted", task_desc(t));
  t->calls++;
  if (t->calls > 1)
    violation("%s: a second callback (%s after %s)", task_desc(t), pp_errname(r->status),
              pp_errname(t->status));
  if (r->id != t->id)
    violation("%s: its callback got id %llu", task_desc(t), (unsigned long long) r->id);
  t->status = r->status;
  trace("  outcome of %s: %s", task_desc(t), pp_errname(r->status));
  check_outcome(t, r, must, 0, 0);
  if (t->action != A_NONE)
    run_action(t, r);
}

/* The callback of a call that was refused: it must never run. */
static void refused_cb(pp_pool *pool, pp_result *r, void *user) {
  (void) pool;
  (void) user;
  violation("a callback (%s: %s) for a pp_submit that was refused", pp_errname(r->status),
            r->message ? r->message : "no message");
}

static void all_done(const char *when) {
  size_t i;

  for (i = 0; i < g.nt; i++)
    if (g.t[i].origin == O_SUBMIT && g.t[i].calls == 0)
      violation("%s, but %s has had no callback", when, task_desc(&g.t[i]));
}

static void on_pool_end(void) {
  if (!g.pool_gone)
    all_done("the pool's close callback ran");
  g.pool_gone = 1;
}

static void close_cb(void *user) {
  (void) user;
  g.close_cbs++;
  if (g.close_cbs > 1 || !g.close_ok)
    violation("the close callback ran %d times (pp_pool_close returned %s)", g.close_cbs,
              g.close_ok ? "0" : "an error");
  on_pool_end();
}

static void term_cb(void *user) {
  (void) user;
  g.term_cbs++;
  if (g.term_cbs > 1 || !g.term_ok)
    violation("the terminate callback ran %d times (pp_pool_terminate returned %s)",
              g.term_cbs, g.term_ok ? "0" : "an error");
  on_pool_end();
}

/* pp_pool_close: 0, or PP_ECLOSED when closing already; PP_EINVAL from a result callback
 * on a private loop (which of the two when both apply, the header does not say). */
static void do_close(int from_cb) {
  int want = g.closing ? PP_ECLOSED : (!g.caller && from_cb) ? PP_EINVAL : 0;
  int alt = (!g.caller && from_cb) ? PP_EINVAL : want;
  int err;

  if (want == 0) {
    g.closing = 1;
    g.close_ok = 1;
    if (g.blocking)
      g.call_saw_close = 1;
  }
  trace("pp_pool_close%s", from_cb ? " from a callback" : "");
  err = pp_pool_close(g.pool, close_cb, NULL);
  trace("pp_pool_close -> %s", pp_errname(err));
  if (err != want && err != alt)
    violation("pp_pool_close%s returned %s, want %s", from_cb ? " from a result callback"
              : "", pp_errname(err), pp_errname(want));
  if (want == 0 && !g.caller) {
    /* The header: on a private loop it runs until done, calls cb, and returns. */
    if (g.close_cbs != 1)
      violation("pp_pool_close returned with its callback run %d times", g.close_cbs);
    if (g.term_ok && g.term_cbs != 1)
      violation("pp_pool_close, hurried by a terminate, returned with the terminate's "
                "callback run %d times", g.term_cbs);
    g.pool_gone = 1;
  }
}

/* pp_pool_terminate: 0, or PP_ECLOSED when terminating already; on a private loop from a
 * result callback PP_EINVAL, unless a pp_pool_close is running (then it hurries it).
 * Every task pending when it is called ends at once with PP_ECANCELED. */
static void do_terminate(int from_cb) {
  int want = g.terminating ? PP_ECLOSED : (!g.caller && from_cb && !g.closing) ? PP_EINVAL : 0;
  size_t i;
  int err;

  if (want == 0) {
    for (i = 0; i < g.nt; i++)
      if (g.t[i].origin == O_SUBMIT && g.t[i].calls == 0)
        g.t[i].pending_at_terminate = 1;
    g.closing = 1;
    g.terminating = 1;
    g.term_ok = 1;
    if (g.blocking)
      g.call_saw_term = 1;
  }
  trace("pp_pool_terminate%s", from_cb ? " from a callback" : "");
  err = pp_pool_terminate(g.pool, term_cb, NULL);
  trace("pp_pool_terminate -> %s", pp_errname(err));
  if (err != want)
    violation("pp_pool_terminate%s returned %s, want %s", from_cb ? " from a result callback"
              : "", pp_errname(err), pp_errname(want));
  if (want != 0)
    return;
  all_done("pp_pool_terminate returned (its tasks end at once)");
  if (!g.caller && !from_cb) {
    if (g.term_cbs != 1)
      violation("pp_pool_terminate on a private loop returned with its callback run %d "
                "times", g.term_cbs);
    g.pool_gone = 1;
  }
}

/* Kills a worker from outside, as a user or the OOM killer would; pid comes from a task's
 * result. Linux only: there the pid can be checked to be ours first. */
static void kill_pid(uint64_t pid, const char *why) {
#ifdef __linux__
  if (!test_model_is_worker((long) pid)) {
    trace("kill of worker %llu skipped: gone", (unsigned long long) pid);
    g.st.kill_skipped++;
    return;
  }
  g.kills++;
  mark_killwin();
  trace("SIGKILL worker pid %llu (%s)", (unsigned long long) pid, why);
  if (kill((pid_t) pid, SIGKILL) != 0) {
    g.st.kill_skipped++;
    return;
  }
  /* Until it is gone its channel is open, and a task given to it now could be lost to
   * it: only the tasks pending at the kill may fail with it. */
  wait_gone((long) pid, "a worker killed with SIGKILL");
  g.st.kills++;
#else
  (void) pid;
  (void) why;
#endif
}

/* pp_apply of one task of the given kind. */
static void do_apply(uint64_t *rng, int kind) {
  m_task *t = new_task(rng, kind, O_APPLY);
  /* Its own buffer: the argument must stay as it is while pp_apply runs the loop, and
   * callbacks meanwhile build theirs in argbuf. */
  unsigned char *arg = (unsigned char *) malloc(M_HDR + t->plen);
  size_t len;
  int closed = g.closing, err;
  uint32_t poolkills0 = g.poolkills;
  pp_result out;

  ASSERT_NOT_NULL(arg);
  len = build_arg(t, arg);
  memset(&out, 0x6b, sizeof(out));
  g.call_saw_close = g.call_saw_term = 0;
  if (g.opts.task_timeout_ms > 0)
    mark_poolkill();
  g.st.applies++;
  trace("pp_apply %s", task_desc(t));
  wd_arm("pp_apply");
  g.blocking++;
  err = pp_apply(g.pool, "model", arg, len, &out);
  g.blocking--;
  wd_disarm();
  t->id = out.id;
  t->status = out.status;
  t->calls = 1;
  trace("pp_apply -> %s", pp_errname(err));
  if (err != out.status)
    violation("pp_apply of %s returned %s but out.status is %s", task_desc(t),
              pp_errname(err), pp_errname(out.status));
  if (g.kills > t->kills_at_submit)
    t->killwin = 1;
  if (g.poolkills > poolkills0 || g.opts.task_timeout_ms > 0)
    t->poolkill = 1;
  if (closed) {
    if (err != PP_ECLOSED)
      violation("pp_apply on a closing pool returned %s, want PP_ECLOSED", pp_errname(err));
  } else {
    check_outcome(t, &out, 0, g.call_saw_term, g.call_saw_close || g.call_saw_term);
  }
  if (out.status == PP_ECLOSED)
    t->origin = O_REFUSED;
  pp_result_free(&out);
  free(arg);
}

/* pp_map of n items: every out[i] filled, each with its own outcome; the return is the
 * status of the first that failed. */
static void do_map(uint64_t *rng, size_t n, int big) {
  pp_input *in = NULL;
  pp_result *out = NULL;
  unsigned char *args = NULL;
  size_t first = g.nt, total = 0, i, off = 0;
  int closed = g.closing, err, want = 0;
  uint32_t kills0 = g.kills, poolkills0 = g.poolkills;

  if (n > 0) {
    in = (pp_input *) calloc(n, sizeof(*in));
    out = (pp_result *) malloc(n * sizeof(*out));
    ASSERT_NOT_NULL(in);
    ASSERT_NOT_NULL(out);
    for (i = 0; i < n; i++) {
      m_task *t = new_task(rng, pick_kind(rng, O_MAP, big), O_MAP);
      if (big && t->plen > 64)
        t->plen = 64;
      total += M_HDR + t->plen;
    }
    args = (unsigned char *) malloc(total);
    ASSERT_NOT_NULL(args);
    for (i = 0; i < n; i++) {
      in[i].data = args + off;
      in[i].len = build_arg(&g.t[first + i], args + off);
      off += in[i].len;
    }
    memset(out, 0x6b, n * sizeof(*out));
  }
  g.call_saw_close = g.call_saw_term = 0;
  /* Its items' timeouts are seen only once it returns. */
  if (g.opts.task_timeout_ms > 0)
    mark_poolkill();
  g.st.maps++;
  g.st.map_items += n;
  trace("pp_map of %lu items (nonces %llu..)", (unsigned long) n,
        (unsigned long long) (n > 0 ? g.t[first].nonce : 0));
  wd_arm("pp_map");
  g.blocking++;
  err = pp_map(g.pool, "model", n, in, out);
  g.blocking--;
  wd_disarm();
  trace("pp_map -> %s", pp_errname(err));
  for (i = 0; i < n; i++) {
    m_task *t = &g.t[first + i];
    if (out[i].status == (int) 0x6b6b6b6b)
      violation("pp_map left out[%lu] (%s) unfilled", (unsigned long) i, task_desc(t));
    t->id = out[i].id;
    t->status = out[i].status;
    t->calls = 1;
    if (g.kills > kills0)
      t->killwin = 1;
    if (g.poolkills > poolkills0 || g.opts.task_timeout_ms > 0)
      t->poolkill = 1;
    if (want == 0 && out[i].status != 0)
      want = out[i].status;
    if (closed) {
      if (out[i].status != PP_ECLOSED)
        violation("pp_map on a closing pool: out[%lu] is %s, want PP_ECLOSED",
                  (unsigned long) i, pp_errname(out[i].status));
    } else {
      check_outcome(t, &out[i], 0, g.call_saw_term, g.call_saw_close || g.call_saw_term);
    }
    if (out[i].status == PP_ECLOSED)
      t->origin = O_REFUSED;
    pp_result_free(&out[i]);
  }
  if (err != want)
    violation("pp_map returned %s, but its first failed item says %s", pp_errname(err),
              pp_errname(want));
  free(args);
  free(out);
  free(in);
}

static void do_wait(void) {
  int err;

  trace("pp_pool_wait");
  wd_arm("pp_pool_wait");
  g.blocking++;
  err = pp_pool_wait(g.pool);
  g.blocking--;
  wd_disarm();
  trace("pp_pool_wait -> %s", pp_errname(err));
  if (err != 0)
    violation("pp_pool_wait returned %s, want 0", pp_errname(err));
  all_done("pp_pool_wait returned");
}

/* Caller's loop: runs it until t has its outcome or, with until_started, has started. The
 * ticker's timer makes each turn end within milliseconds. */
static void spin_until(m_task *t, int until_started, const char *what) {
  wd_arm(what);
  while (!g.pool_gone && t->calls == 0 && !(until_started && log_has(t->nonce)))
    uv_run(&g.loop, UV_RUN_ONCE);
  wd_disarm();
}

/* A task that hangs, canceled while it runs; tasks behind it, some canceled while they
 * wait (queued, or sent ahead to its worker). Without a timeout, only where the hang
 * cannot hold up what must cancel it. */
static void hang_cancel(void) {
  m_task *h, *behind[3];
  int private_ok = g.opts.task_timeout_ms > 0 ||
                   (g.opts.pipeline_depth == 1 && g.opts.workers >= 2 &&
                    g.must_cancel < (int) g.opts.workers - 1);
  unsigned i, nb = rnd(&g.rng, 4);

  if ((g.opts.task_timeout_ms > 0 && !hang_allowed()) || (!g.caller && !private_ok) ||
      g.closing) {
    submit_task(&g.rng, K_OK, A_NONE);
    return;
  }
  g.hangs++;
  h = submit_task(&g.rng, K_HANG, A_NONE);
  for (i = 0; i < nb; i++)
    behind[i] = submit_task(&g.rng, K_OK, A_NONE);
  if (g.caller) {
    spin_until(h, 1, "running the loop until a hanging task starts");
    /* A callback may have ended the pool meanwhile. */
    if (g.pool_gone)
      return;
    do_cancel(h);
    for (i = 0; i < nb; i++)
      if (rnd(&g.rng, 2) == 0)
        do_cancel(behind[i]);
  } else {
    /* The private loop runs only inside the blocking calls: another task's callback
     * cancels the hang, in whatever state it then is. */
    m_task *c = submit_task(&g.rng, K_OK, A_CANCEL_TARGET);
    c->target = (uint32_t) (h - g.t);
    if (g.opts.task_timeout_ms == 0)
      g.must_cancel++;
  }
}

/* Refused calls: an unknown task, a NULL argument with a length, and an empty pp_map. */
static void refusals(void) {
  m_task *t = new_task(&g.rng, K_OK, O_REFUSED);
  size_t len = build_arg(t, argbuf);
  int err;

  g.in_submit++;
  err = pp_submit(g.pool, "model_no_such_task", argbuf, len, refused_cb, NULL, NULL);
  g.in_submit--;
  trace("pp_submit of an unknown task -> %s", pp_errname(err));
  if (err != (g.closing ? PP_ECLOSED : PP_ENOTASK) && err != PP_ENOTASK)
    violation("pp_submit of an unknown task returned %s, want PP_ENOTASK", pp_errname(err));
  g.in_submit++;
  err = pp_submit(g.pool, "model", NULL, 5, refused_cb, NULL, NULL);
  g.in_submit--;
  if (err != PP_EINVAL && !(g.closing && err == PP_ECLOSED))
    violation("pp_submit with a NULL argument of 5 bytes returned %s, want PP_EINVAL",
              pp_errname(err));
  wd_arm("pp_map of 0 items");
  err = pp_map(g.pool, "model", 0, NULL, NULL);
  wd_disarm();
  if (err != 0)
    violation("pp_map of 0 items returned %s, want 0", pp_errname(err));
}

static void ticker_cb(uv_timer_t *timer) {
  unsigned r;

  (void) timer;
  if (g.pool_gone || g.tick_actions >= M_TICK_MAX)
    return;
  r = rnd(&g.tick_rng, 100);
  g.in_timer = 1;
  if (r < 5) {
    int kind = pick_kind(&g.tick_rng, O_SUBMIT, 0);
    g.tick_actions++;
    g.st.tick_actions++;
    submit_task(&g.tick_rng, kind, A_NONE);
  } else if (r < 9) {
    g.tick_actions++;
    g.st.tick_actions++;
    cancel_random(&g.tick_rng);
  }
  g.in_timer = 0;
}

/* ---- Leaks --------------------------------------------------------------------------- */

#ifndef _WIN32
#define FD_SCAN 1024

static void fd_snapshot(unsigned char *open) {
  int fd;

  for (fd = 0; fd < FD_SCAN; fd++)
    open[fd] = fcntl(fd, F_GETFD) != -1;
}

static void fd_compare(const unsigned char *before) {
  unsigned char after[FD_SCAN];
  int fd, bad = 0;

  fd_snapshot(after);
  for (fd = 0; fd < FD_SCAN; fd++)
    if (after[fd] != before[fd]) {
      char path[64], target[512];
      ssize_t n;
      snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
      n = readlink(path, target, sizeof(target) - 1);
      target[n > 0 ? n : 0] = '\0';
      fprintf(stderr, "model: descriptor %d was %s before the run, is %s after (%s)\n", fd,
              before[fd] ? "open" : "closed", after[fd] ? "open" : "closed", target);
      bad = 1;
    }
  if (bad)
    violation("descriptors differ after the pool ended");
}
#endif

#ifdef __linux__
/* Names in /dev/shm that procpool made for this process or one of its workers. */
static int shm_ours(const char *name, const uint64_t *pids, size_t npids) {
  char *end;
  long pid;
  size_t i;

  if (strncmp(name, "procpool-", 9) != 0)
    return 0;
  pid = strtol(name + 9, &end, 10);
  if (*end != '-')
    return 0;
  if (pid == (long) getpid())
    return 1;
  for (i = 0; i < npids; i++)
    if ((long) pids[i] == pid)
      return 1;
  return 0;
}

/* The names in /dev/shm that look like procpool's, one after the other; stale ones of
 * other processes whose pids ours reuse are there before the run. */
static char *shm_names(void) {
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  char *names = NULL;
  size_t len = 0;

  if (d != NULL) {
    while ((e = readdir(d)) != NULL) {
      size_t n = strlen(e->d_name);
      if (strncmp(e->d_name, "procpool-", 9) != 0)
        continue;
      names = (char *) realloc(names, len + n + 2);
      ASSERT_NOT_NULL(names);
      memcpy(names + len, e->d_name, n);
      names[len + n] = '\n';
      len += n + 1;
    }
    closedir(d);
  }
  names = (char *) realloc(names, len + 1);
  ASSERT_NOT_NULL(names);
  names[len] = '\0';
  return names;
}

static int shm_listed(const char *names, const char *name) {
  size_t n = strlen(name);
  const char *p;

  for (p = names; (p = strstr(p, name)) != NULL; p++)
    if ((p == names || p[-1] == '\n') && p[n] == '\n')
      return 1;
  return 0;
}

static void shm_check(const char *before, const uint64_t *pids, size_t npids) {
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  int bad = 0;

  if (d == NULL)
    return;
  while ((e = readdir(d)) != NULL)
    if (shm_ours(e->d_name, pids, npids) && !shm_listed(before, e->d_name)) {
      fprintf(stderr, "model: /dev/shm/%s is left\n", e->d_name);
      bad = 1;
    }
  closedir(d);
  if (bad)
    violation("shared memory names are left after the pool ended");
}

static void children_check(void) {
  long pids[64];
  char states[64];
  uint64_t start = uv_hrtime();
  size_t n, i;

  /* The pool has ended: its processes must be ending or gone. Waits for them to go. */
  while ((n = list_children(pids, states, 64)) > 0) {
    if (uv_hrtime() - start > (uint64_t) wait_s * 1000000000ull) {
      for (i = 0; i < n; i++) {
        fprintf(stderr, "model: child pid %ld (state %c) is left:\n", pids[i], states[i]);
        print_cmdline(pids[i]);
      }
      violation("%lu child processes are left %u s after the pool ended",
                (unsigned long) n, wait_s);
    }
    uv_sleep(5);
  }
}
#endif

/* ---- The checks of the run log ------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

static void check_log(uint64_t **pids_out, size_t *npids_out) {
  uint64_t *pids, *ids = (uint64_t *) malloc((g.nt + 1) * sizeof(uint64_t));
  size_t nids = 0, nrec, i, runs;

  ASSERT_NOT_NULL(ids);
  log_update();
  for (i = 0; i < g.log.nfiles; i++)
    if (g.log.files[i].tail != 0)
      violation("the run log of worker %s ends with %lu bytes of a record",
                g.log.files[i].name, (unsigned long) g.log.files[i].tail);
  g.st.runs_logged = g.nrec;
  for (i = 0; i < g.nt; i++) {
    m_task *t = &g.t[i];
    uint32_t c = g.runs[t->nonce];
    if (t->origin == O_REFUSED) {
      if (c > 0)
        soft_violation("%s ran, though its call refused it", task_desc(t));
      continue;
    }
    if (t->calls != 1)
      violation("%s: %d outcomes at the end, want 1", task_desc(t), t->calls);
    ids[nids++] = t->id;
    if ((t->status == 0 || t->status == PP_ETASK) && c == 0)
      soft_violation("%s: %s, but the run log has no run of it", task_desc(t),
                     pp_errname(t->status));
    if (t->status == 0 && c == 1 && t->reply_pid != g.pid_of[t->nonce])
      soft_violation("%s: its result says worker pid %llu, the run log pid %llu",
                     task_desc(t), (unsigned long long) t->reply_pid,
                     (unsigned long long) g.pid_of[t->nonce]);
    if (t->status == PP_EWORKER && t->kind != K_OK && t->kind != K_SLOW &&
        t->kind != K_FAIL && t->kind != K_HANG && !t->killwin && c == 0)
      soft_violation("%s: PP_EWORKER, but it never ran, and no outside kill happened "
                     "while it was pending", task_desc(t));
    if (t->ewk_if_started && c == 0)
      soft_violation("%s: PP_EWORKER, but it never started: only a kill by the pool (a "
                     "cancel or a timeout of another task) happened while it was "
                     "pending, after which a task that had not started runs elsewhere",
                     task_desc(t));
  }
  /* Ids: never 0, and each outcome its own. */
  qsort(ids, nids, sizeof(*ids), cmp_u64);
  for (i = 0; i < nids; i++)
    if (ids[i] == 0 || (i > 0 && ids[i] == ids[i - 1]))
      soft_violation("two outcomes share id %llu (or an outcome has id 0)",
                     (unsigned long long) ids[i]);
  /* Retirement: no worker ran more tasks than max_tasks_per_worker. */
  nrec = g.nrec;
  pids = (uint64_t *) malloc((nrec + 1) * sizeof(uint64_t));
  ASSERT_NOT_NULL(pids);
  if (nrec > 0)
    memcpy(pids, g.rec_pids, nrec * sizeof(uint64_t));
  qsort(pids, nrec, sizeof(*pids), cmp_u64);
  g.st.npids = 0;
  for (i = 0; i < nrec; i += runs) {
    runs = 1;
    while (i + runs < nrec && pids[i + runs] == pids[i])
      runs++;
    g.st.npids++;
    if (runs > g.st.max_runs_per_pid)
      g.st.max_runs_per_pid = runs;
  }
  /* Each run log file is one worker process. */
  for (i = 0; i < g.log.nfiles; i++)
    if (g.opts.max_tasks_per_worker > 0 && g.log.files[i].runs > g.opts.max_tasks_per_worker)
      soft_violation("worker %s ran %lu tasks; max_tasks_per_worker is %u",
                     g.log.files[i].name, (unsigned long) g.log.files[i].runs, g.opts.max_tasks_per_worker);
  /* Distinct pids, for the leak checks. */
  *npids_out = 0;
  for (i = 0; i < nrec; i++)
    if (i == 0 || pids[i] != pids[i - 1])
      pids[(*npids_out)++] = pids[i];
  *pids_out = pids;
  free(ids);
}

/* ---- One run ------------------------------------------------------------------------- */

static void pick_config(void) {
  uint64_t *r = &g.rng;
  unsigned d;

  test_options(&g.opts);
  g.opts.workers = 1 + rnd(r, 3);
  if (rnd(r, 100) < 40) {
    /* No timeout and no retirement: pp_map sends batches. */
    g.opts.task_timeout_ms = 0;
    g.opts.max_tasks_per_worker = 0;
  } else {
    g.opts.task_timeout_ms = M_TIMEOUT_MS;
    g.opts.max_tasks_per_worker = rnd(r, 2) == 0 ? 0 : 1 + rnd(r, 4);
  }
  d = rnd(r, 10);
  g.opts.pipeline_depth = d < 6 ? 0 : d < 8 ? 1 : 2 + rnd(r, 7);
  g.opts.initializer = "model_init";
  g.opts.initarg = g.log.path;
  g.opts.initarg_len = strlen(g.log.path);
  if (g.caller && rnd(r, 100) < 35) {
    g.close_step = g.steps / 2 + 1 + (int) rnd(r, (unsigned) (g.steps / 2 + 1));
    g.close_kind = rnd(r, 5) < 3 ? A_CLOSE : A_TERMINATE;
  }
}

static int pick_action(uint64_t *r) {
  unsigned a = rnd(r, 100);

  if (a < 6)
    return A_SUBMIT;
  if (a < 12)
    return A_CANCEL_RANDOM;
  if (a < 16)
    return A_BLOCKING;
#ifdef __linux__
  if (a < 18)
    return A_KILL;
#endif
  return A_NONE;
}

static void step_once(void) {
  unsigned r = rnd(&g.rng, 100), i, n;

  if (g.caller && g.step == g.close_step && !g.closing) {
    g.op = g.close_kind == A_CLOSE ? "submit (its callback closes)"
                                   : "submit (its callback terminates)";
    submit_task(&g.rng, K_OK, g.close_kind);
    return;
  }
  if (r < 28) {
    g.op = "submit";
    n = 1 + rnd(&g.rng, 4);
    for (i = 0; i < n; i++) {
      int kind = pick_kind(&g.rng, O_SUBMIT, 0);
      submit_task(&g.rng, kind, pick_action(&g.rng));
    }
  } else if (r < 38) {
    unsigned big = rnd(&g.rng, 10) < 3;
    g.op = "pp_map";
    n = big ? (16 + rnd(&g.rng, 49)) * g.opts.workers : 1 + rnd(&g.rng, 12);
    do_map(&g.rng, n, (int) big);
  } else if (r < 46) {
    g.op = "pp_apply";
    do_apply(&g.rng, pick_kind(&g.rng, O_APPLY, 0));
  } else if (r < 58) {
    g.op = "pp_cancel";
    cancel_random(&g.rng);
  } else if (r < 64) {
    g.op = "cancel a hang";
    hang_cancel();
  } else if (r < 72) {
    g.op = "pp_pool_wait";
    do_wait();
  } else if (r < 84) {
    g.op = "run the loop";
    if (g.caller) {
      unsigned start = (unsigned) sm64(&g.rng);
      for (i = 0; i < g.nt; i++) {
        m_task *t = &g.t[(start + i) % g.nt];
        if (t->origin == O_SUBMIT && t->calls == 0) {
          trace("run the loop until %s ends", task_desc(t));
          spin_until(t, 0, "running the loop until a task ends");
          break;
        }
      }
    } else {
      do_apply(&g.rng, K_OK);
    }
  } else if (r < 90) {
    g.op = "kill a worker";
    if (g.npids > 0) {
      uint64_t pid = g.pids[rnd(&g.rng, (unsigned) (g.npids < M_PIDS ? g.npids : M_PIDS))];
      kill_pid(pid, "from the test, between calls");
    }
  } else if (r < 94) {
    g.op = "refused calls";
    refusals();
  } else {
    g.op = "submit slow tasks";
    n = 1 + rnd(&g.rng, 3);
    for (i = 0; i < n; i++)
      submit_task(&g.rng, K_SLOW, A_NONE);
  }
}

/* The end: close, terminate, or a close that a terminate hurries (from a callback, or on
 * the caller's loop from outside too). Then the caller's loop runs until the pool is done
 * and must close. */
static void finish(void) {
  unsigned e = rnd(&g.rng, 10);
  pp_result out;
  int err;

  g.step = g.steps + 1;
  if (!g.closing) {
    /* Work of every kind still queued or running as the pool ends: crashes and exits
     * during a close included. */
    unsigned i, n = rnd(&g.rng, 5);
    g.op = "submit before the end";
    for (i = 0; i < n; i++) {
      int kind = pick_kind(&g.rng, O_SUBMIT, 0);
      submit_task(&g.rng, kind, A_NONE);
    }
    if (e < 5) {
      g.op = "pp_pool_close";
      wd_arm("pp_pool_close");
      do_close(0);
      wd_disarm();
    } else if (e < 7) {
      g.op = "pp_pool_terminate";
      wd_arm("pp_pool_terminate");
      do_terminate(0);
      wd_disarm();
    } else {
      g.op = "pp_pool_close, hurried by a terminate from a callback";
      submit_task(&g.rng, K_OK, A_TERMINATE);
      for (i = 0; i < 2; i++)
        submit_task(&g.rng, K_SLOW, A_NONE);
      wd_arm(g.op);
      do_close(0);
      wd_disarm();
      if (g.caller && e == 9) {
        g.op = "pp_pool_terminate after pp_pool_close";
        do_terminate(0);
      }
    }
  }
  if (!g.caller)
    return;
  if (!g.pool_gone) {
    /* Closing: the pool still refuses work, and says so. */
    g.op = "calls on a closing pool";
    submit_task(&g.rng, K_OK, A_NONE);
    err = pp_pool_close(g.pool, close_cb, NULL);
    if (err != PP_ECLOSED)
      violation("a second pp_pool_close returned %s, want PP_ECLOSED", pp_errname(err));
    memset(&out, 0, sizeof(out));
    err = pp_apply(g.pool, "model", NULL, 0, &out);
    if (err != PP_ECLOSED || out.status != PP_ECLOSED)
      violation("pp_apply on a closing pool returned %s, want PP_ECLOSED", pp_errname(err));
    pp_result_free(&out);
  }
  g.op = "run the caller's loop until the pool's close callback";
  wd_arm(g.op);
  while (!g.pool_gone)
    if (uv_run(&g.loop, UV_RUN_ONCE) == 0 && !g.pool_gone)
      violation("the loop ran out of work before the pool's close callback ran");
  uv_close((uv_handle_t *) &g.ticker, NULL);
  uv_run(&g.loop, UV_RUN_DEFAULT);
  wd_disarm();
  err = uv_loop_close(&g.loop);
  if (err != 0) {
    test_run_loop(&g.loop);
    violation("uv_loop_close of the caller's loop returned %s after the pool ended: the "
              "pool left a handle on it", uv_err_name(err));
  }
}

static void run_one(uint64_t seed, int steps, int caller, int index) {
  char tag[64];
  uint64_t t0 = uv_hrtime(), *pids = NULL;
  size_t npids = 0;
#ifndef _WIN32
  unsigned char fds[FD_SCAN];
#endif
#ifdef __linux__
  char *shm_before;
#endif
  int verbose = g.verbose, keep_going = g.keep_going;

  memset(&g, 0, sizeof(g));
  g.verbose = verbose;
  g.seed = seed;
  g.steps = steps;
  g.caller = caller;
  g.rng = seed;
  g.tick_rng = seed ^ 0x5851F42D4C957F2Dull;
  g.keep_going = keep_going;
  g.t = (m_task *) calloc(M_MAX_TASKS, sizeof(m_task));
  g.runs = (uint32_t *) calloc(M_MAX_TASKS + 1, sizeof(uint32_t));
  g.pid_of = (uint64_t *) calloc(M_MAX_TASKS + 1, sizeof(uint64_t));
  ASSERT_NOT_NULL(g.t);
  ASSERT_NOT_NULL(g.runs);
  ASSERT_NOT_NULL(g.pid_of);
  snprintf(tag, sizeof(tag), "model-%d-XXXXXX", index);
  g.log.add = log_add;
  g.log.fail = log_fail;
  {
    int err = test_model_log_init(&g.log, tag);
    if (err != 0)
      violation("cannot make the run log's directory %s: %s", g.log.path, uv_strerror(err));
  }
  pick_config();
#ifdef __linux__
  shm_before = shm_names();
#endif
#ifndef _WIN32
  fd_snapshot(fds);
#endif
  g.op = "pp_pool_new";
  trace("pp_pool_new");
  if (caller) {
    ASSERT_EQ_INT(uv_loop_init(&g.loop), 0);
    ASSERT_EQ_INT(uv_timer_init(&g.loop, &g.ticker), 0);
    ASSERT_EQ_INT(uv_timer_start(&g.ticker, ticker_cb, 2, 2), 0);
  }
  wd_arm("pp_pool_new");
  g.pool = NEW_POOL(caller ? &g.loop : NULL, &g.opts);
  wd_disarm();
  if (pp_pool_workers(g.pool) != g.opts.workers)
    violation("pp_pool_workers is %u, want %u", pp_pool_workers(g.pool), g.opts.workers);

  for (g.step = 1; g.step <= g.steps && !g.pool_gone; g.step++) {
    if (pp_pool_error(g.pool) != NULL)
      violation("the pool gave up: %s", pp_pool_error(g.pool));
    step_once();
    log_update();
  }
  finish();
  g.op = "checks after the end";
  if (g.close_cbs != g.close_ok || g.term_cbs != g.term_ok)
    violation("close callbacks: %d (want %d), terminate callbacks: %d (want %d)",
              g.close_cbs, g.close_ok, g.term_cbs, g.term_ok);
  all_done("the pool ended");
  check_log(&pids, &npids);
#ifdef __linux__
  children_check();
  {
    size_t i;
    for (i = 0; i < npids; i++)
      wait_gone((long) pids[i], "a worker of a pool that ended");
  }
  shm_check(shm_before, pids, npids);
  free(shm_before);
#endif
#ifndef _WIN32
  fd_compare(fds);
#endif
  if (g.violations == 0)
    test_model_log_remove(&g.log);
  printf("model %s %s seed=0x%llx: workers=%u timeout=%llu max_tasks=%u depth=%u steps=%d; "
         "%lu submitted (%lu from callbacks, %lu from the timer), %lu refused, %lu maps of "
         "%lu items, %lu applies; outcomes ok=%lu etask=%lu eworker=%lu etimedout=%lu "
         "(%lu of tasks that do not hang) ecanceled=%lu eclosed=%lu; cancels: %lu waiting, "
         "%lu running, %lu finished, %lu unknown; %lu outside kills (%lu tasks hit, %lu "
         "skipped); %lu started tasks died with a worker the pool killed; "
         "%lu runs in %lu workers (at most %lu each); %s; %.0f ms\n",
         test_name(), pp_start_method_name(test_method), (unsigned long long) seed,
         g.opts.workers, (unsigned long long) g.opts.task_timeout_ms,
         g.opts.max_tasks_per_worker, g.opts.pipeline_depth, steps, g.st.accepted,
         g.st.cb_submits, g.st.tick_actions, g.st.refused, g.st.maps, g.st.map_items,
         g.st.applies, g.st.by_status[0], g.st.by_status[1], g.st.by_status[2],
         g.st.by_status[3], g.st.late_timeouts, g.st.by_status[4], g.st.by_status[5],
         g.st.cancel_waiting, g.st.cancel_running, g.st.cancel_done, g.st.cancel_bogus,
         g.st.kills, g.st.killed_tasks, g.st.kill_skipped, g.st.poolkilled_tasks,
         g.st.runs_logged, g.st.npids,
         g.st.max_runs_per_pid,
         g.term_ok && g.close_ok ? "closed, hurried by terminate"
         : g.term_ok ? "terminated" : "closed",
         (double) (uv_hrtime() - t0) / 1e6);
  fflush(stdout);
  free(pids);
  free(g.rec_pids);
  free(g.pid_of);
  free(g.runs);
  free(g.t);
  g.t = NULL;
  if (g.violations > 0)
    fprintf(stderr, "model: %d violations in the run of seed 0x%llx\n", g.violations,
            (unsigned long long) seed);
  model_violations += g.violations;
}

/* ---- The tests ----------------------------------------------------------------------- */

static const uint64_t model_seeds[] = { 0x1, 0x3, 0x4, 0x5, 0xb };
#define MODEL_STEPS 40

static int env_u64(const char *name, uint64_t *v) {
  char buf[64];
  size_t size = sizeof(buf);

  if (uv_os_getenv(name, buf, &size) != 0 || buf[0] == '\0')
    return 0;
  *v = (uint64_t) strtoull(buf, NULL, 0);
  return 1;
}

static void run_model(int caller) {
  uint64_t seed, steps = MODEL_STEPS, runs = 1, verbose = 0, keep_going = 0, wd, i;

  env_u64("PROCPOOL_MODEL_STEPS", &steps);
  env_u64("PROCPOOL_MODEL_VERBOSE", &verbose);
  env_u64("PROCPOOL_MODEL_KEEP_GOING", &keep_going);
  if (env_u64("PROCPOOL_MODEL_WATCHDOG_S", &wd) && wd > 0 && wd < 100000)
    wait_s = (unsigned) wd;
  g.verbose = verbose != 0;
  g.keep_going = keep_going != 0;
  if (steps == 0 || steps > 100000)
    test_skip("PROCPOOL_MODEL_STEPS must be between 1 and 100000");
#ifndef _WIN32
  {
    /* libuv opens a process-wide pipe for signals on first use: before the first
     * snapshot of descriptors, so that it does not count as a leak. */
    uv_loop_t loop;
    uv_signal_t sig;
    ASSERT_EQ_INT(uv_loop_init(&loop), 0);
    ASSERT_EQ_INT(uv_signal_init(&loop, &sig), 0);
    uv_close((uv_handle_t *) &sig, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  }
#endif
  if (test_method != PP_START_SPAWN) {
    /* Likewise the forkserver's server and this process's connection to it, which live
     * as long as the process once the first forkserver pool made them. And a method this
     * OS lacks skips the test here, before a run leaves anything behind. */
    pp_pool_options opts;
    pp_pool *pool;
    pp_result r;
    test_options(&opts);
    opts.workers = 1;
    pool = NEW_POOL(NULL, &opts);
    APPLY(pool, "echo", "w", 1, &r);
    pp_result_free(&r);
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  }
  wd_init();
  if (env_u64("PROCPOOL_MODEL_SEED", &seed)) {
    env_u64("PROCPOOL_MODEL_RUNS", &runs);
    for (i = 0; i < runs; i++)
      run_one(seed + i, (int) steps, caller, (int) i);
  } else {
    for (i = 0; i < sizeof(model_seeds) / sizeof(model_seeds[0]); i++)
      run_one(model_seeds[i], (int) steps, caller, (int) i);
  }
  wd_end();
  if (model_violations > 0) {
    fprintf(stderr, "model: %d violations in all\n", model_violations);
    exit(1);
  }
}

void test_model_private(void) { run_model(0); }

void test_model_caller_loop(void) { run_model(1); }
