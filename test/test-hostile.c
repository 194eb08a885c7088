/* Workers that attack their parent on purpose (issue: isolation). A task may truncate
 * or grow the pool's segments, scribble over every shared mapping of its process, lie in
 * its journal about what it finished, die while idle with a task already written to it,
 * or outlive a killed parent. Whatever it does, the parent must not crash or hang, every
 * accepted task gets exactly one outcome, and nothing is left behind: no name in
 * /dev/shm, no process.
 *
 * The tasks find the pool's segments in /proc/self/maps (Linux: each is a mapping of a
 * memfd named "procpool"); elsewhere the tests that need them skip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "test.h"

#if defined(__linux__)
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>
#endif

/* The journal's size and the offsets of its control words (src/shared/journal.h), as a hostile
 * task would learn them from the source. */
#define HS_JOURNAL_SIZE (128 * 1024)
#define HS_STATE 24
#define HS_DONE 32

enum { HS_RETURN = 0, HS_CRASH, HS_HANG };

typedef struct hs_journal_arg {
  uint32_t how;      /* 0: impossible words; 1: "finished" (done = the running task) */
} hs_journal_arg;

typedef struct hs_scribble_arg {
  uint32_t seed;
  uint32_t then;     /* HS_RETURN, HS_CRASH or HS_HANG */
} hs_scribble_arg;

#if defined(__linux__)
/* Calls fn for every mapping of the pool's segments in this process; returns how many. */
static int hs_each_segment(void (*fn)(unsigned long lo, unsigned long hi, void *ctx),
                           void *ctx) {
  FILE *f = fopen("/proc/self/maps", "re");
  char line[512];
  int n = 0;

  while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && strstr(line, "/memfd:procpool") != NULL) {
      fn(lo, hi, ctx);
      n++;
    }
  }
  if (f != NULL)
    fclose(f);
  return n;
}

static void hs_find_journal(unsigned long lo, unsigned long hi, void *ctx) {
  if (hi - lo == HS_JOURNAL_SIZE)
    *(uint8_t **) ctx = (uint8_t *) lo;
}

static void hs_hang(void) __attribute__((noreturn));
static void hs_hang(void) {
  for (;;)
    uv_sleep(1000);
}
#endif

/* Writes lies into its journal's control words, then hangs. */
int test_task_hs_journal(pp_call *call, const void *arg, size_t len) {
#if defined(__linux__)
  hs_journal_arg a;
  uint8_t *j = NULL;

  if (len != sizeof(a))
    return pp_fail(call, "hs_journal: bad argument");
  memcpy(&a, arg, sizeof(a));
  hs_each_segment(hs_find_journal, &j);
  if (j == NULL)
    return pp_fail(call, "hs_journal: no journal mapped");
  if (a.how == 0) {
    uint64_t v = UINT64_MAX - 1;
    memcpy(j + HS_DONE, &v, 8);
    memcpy(j + HS_STATE, &v, 8);
  } else {
    uint64_t seq, zero = 0;
    memcpy(&seq, j + HS_STATE, 8);
    memcpy(j + HS_DONE, &seq, 8);
    memcpy(j + HS_STATE, &zero, 8);
  }
  hs_hang();
#else
  (void) arg;
  (void) len;
  return pp_fail(call, "hs_journal: Linux only");
#endif
}

#if defined(__linux__)
typedef struct hs_cut {
  int opened;
  int changed;
} hs_cut;

/* Opens the segment through /proc/self/map_files (root may) and tries to change its
 * size, as a task that found the descriptor would. */
static void hs_cut_one(unsigned long lo, unsigned long hi, void *ctx) {
  hs_cut *c = (hs_cut *) ctx;
  char path[128];
  int fd;

  snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", lo, hi);
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd == -1)
    return;
  c->opened++;
  if (ftruncate(fd, 0) == 0)
    c->changed++;
  if (ftruncate(fd, (off_t) (hi - lo) * 2) == 0)
    c->changed++;
  close(fd);
}
#endif

/* Tries to shrink and grow every segment it can reach; replies (opened, changed). */
int test_task_hs_truncate(pp_call *call, const void *arg, size_t len) {
  int32_t out[2] = { 0, 0 };
#if defined(__linux__)
  hs_cut c = { 0, 0 };

  hs_each_segment(hs_cut_one, &c);
  out[0] = c.opened;
  out[1] = c.changed;
#endif
  (void) arg;
  (void) len;
  return pp_reply(call, out, sizeof(out));
}

#if defined(__linux__)
static void hs_scribble_one(unsigned long lo, unsigned long hi, void *ctx) {
  uint32_t *x = (uint32_t *) ctx;
  unsigned long p;

  for (p = lo; p + 4 <= hi; p += 4) {
    *x = *x * 1664525u + 1013904223u;
    memcpy((void *) p, x, 4);
  }
}
#endif

/* Fills every shared mapping of its process with noise, then returns, crashes or hangs. */
int test_task_hs_scribble(pp_call *call, const void *arg, size_t len) {
  hs_scribble_arg a;

  if (len < sizeof(a))
    return pp_fail(call, "hs_scribble: bad argument");
  memcpy(&a, arg, sizeof(a));
#if defined(__linux__)
  hs_each_segment(hs_scribble_one, &a.seed);
  if (a.then == HS_CRASH)
    test_kill_self();
  if (a.then == HS_HANG)
    hs_hang();
#endif
  return pp_reply(call, &a.then, sizeof(a.then));
}

/* Its parent's pid: the pool itself under spawn, the fork helper or the forkserver. */
int test_task_hs_ppid(pp_call *call, const void *arg, size_t len) {
  uint64_t pid = 0;

  (void) arg;
  (void) len;
#if defined(__linux__)
  pid = (uint64_t) getppid();
#endif
  return pp_reply(call, &pid, sizeof(pid));
}

static void hs_linux_only(void) {
#if !defined(__linux__)
  test_skip("the tasks find the pool's segments in Linux's /proc/self/maps");
#endif
}

static void hs_map_echo(pp_pool *pool, size_t n) {
  pp_input *in = (pp_input *) calloc(n, sizeof(*in));
  pp_result *out = (pp_result *) calloc(n, sizeof(*out));
  uint32_t *v = (uint32_t *) calloc(n, sizeof(*v));
  size_t i;

  ASSERT_NOT_NULL(in);
  ASSERT_NOT_NULL(out);
  ASSERT_NOT_NULL(v);
  for (i = 0; i < n; i++) {
    v[i] = (uint32_t) i * 7u;
    in[i].data = &v[i];
    in[i].len = sizeof(v[i]);
  }
  ASSERT_EQ_INT(pp_map(pool, "echo", n, in, out), 0);
  for (i = 0; i < n; i++) {
    ASSERT_EQ_MEM(out[i].data, out[i].len, &v[i], sizeof(v[i]));
    pp_result_free(&out[i]);
  }
  free(in);
  free(out);
  free(v);
}

static void hs_big_echo(pp_pool *pool, size_t len) {
  unsigned char *buf = (unsigned char *) malloc(len);
  pp_result r;
  size_t i;

  ASSERT_NOT_NULL(buf);
  for (i = 0; i < len; i++)
    buf[i] = (unsigned char) (i * 31u);
  APPLY(pool, "echo", buf, len, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, buf, len);
  pp_result_free(&r);
  free(buf);
}

/* Closes pool, runs loop until the close is done and the loop is empty, and closes it. */
static void hs_close(pp_pool *pool, uv_loop_t *loop, const char *what) {
  int closed = 0;

  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  test_run_until(loop, &closed, 1, what);
  test_run_loop(loop);
  ASSERT_EQ_INT(uv_loop_close(loop), 0);
}

/* ---- hostile-truncate: no segment can change size under the parent ----------------- */

void test_hostile_truncate(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int32_t got[2];

  hs_linux_only();
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(&loop, &opts);
  /* A journal and large-message segments exist once each has been used. */
  hs_map_echo(pool, 300);
  hs_big_echo(pool, 3u << 20);
  APPLY(pool, "hs_truncate", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(got));
  memcpy(got, r.data, sizeof(got));
  pp_result_free(&r);
  /* Sealed: every segment the task could open keeps its size. */
  ASSERT_EQ_INT(got[1], 0);
  /* The parent reads those same segments again, which would fault had one shrunk. */
  hs_big_echo(pool, 3u << 20);
  hs_map_echo(pool, 300);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  if (got[0] == 0)
    test_skip("the task could open no segment (/proc/self/map_files needs root)");
}

/* ---- hostile-journal-lie: a journal's words cannot switch off a timeout ------------- */

static void hs_journal_lie(unsigned how) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  hs_journal_arg a;
  test_rec liar, behind[3];
  int closed = 0, i;

  hs_linux_only();
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  memset(behind, 0, sizeof(behind));
  memset(&liar, 0, sizeof(liar));
  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 4;
  opts.task_timeout_ms = test_scale_ms(300);
  pool = NEW_POOL(&loop, &opts);
  a.how = how;
  ASSERT_EQ_INT(test_submit(pool, "hs_journal", &a, sizeof(a), &liar), 0);
  for (i = 0; i < 3; i++)
    ASSERT_EQ_INT(test_submit(pool, "echo", "abc", 3, &behind[i]), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
  test_run_until(&loop, &closed, 1, "the close of a pool whose worker lies in its journal");
  test_run_loop(&loop);
  ASSERT_EQ_INT(liar.calls, 1);
  ASSERT_STATUS(liar.res, PP_ETIMEDOUT);
  pp_result_free(&liar.res);
  for (i = 0; i < 3; i++) {
    ASSERT_EQ_INT(behind[i].calls, 1);
    /* Run elsewhere, or (with a journal that lied, nothing to believe) failed as
     * possibly started by the killed worker; never lost, never hung. */
    if (behind[i].res.status != 0)
      ASSERT_STATUS(behind[i].res, PP_EWORKER);
    pp_result_free(&behind[i].res);
  }
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_hostile_journal_lie(void) { hs_journal_lie(0); }

void test_hostile_journal_finished(void) { hs_journal_lie(1); }

/* ---- hostile-scribble: noise over every shared mapping, then anything --------------- */

void test_hostile_scribble(void) {
  enum { ROUNDS = 3, ITEMS = 120 };
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  unsigned round;
  uint32_t rnd = 12345;

  hs_linux_only();
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  /* Short: any task may time out here (a scribbled journal stops its worker), and each
   * hanging one costs a time-out. */
  opts.task_timeout_ms = 300;
  pool = NEW_POOL(&loop, &opts);
  for (round = 0; round < ROUNDS; round++) {
    test_rec recs[ITEMS];
    hs_scribble_arg args[ITEMS];
    unsigned char *big = (unsigned char *) calloc(1, 2u << 20);
    int i;
    ASSERT_NOT_NULL(big);
    memset(recs, 0, sizeof(recs));
    for (i = 0; i < ITEMS; i++) {
      rnd = rnd * 1103515245u + 12345u;
      args[i].seed = rnd;
      args[i].then = (rnd >> 16) % 3;
      /* Most are plain echoes, some of them large (through the segments); every
       * ninth scribbles. */
      if (i % 9 == 4)
        ASSERT_EQ_INT(test_submit(pool, "hs_scribble", &args[i], sizeof(args[i]), &recs[i]), 0);
      else if (i % 7 == 0)
        ASSERT_EQ_INT(test_submit(pool, "echo", big, 2u << 20, &recs[i]), 0);
      else
        ASSERT_EQ_INT(test_submit(pool, "echo", &args[i], sizeof(args[i]), &recs[i]), 0);
    }
    ASSERT_EQ_INT(pp_pool_wait(pool), 0);
    for (i = 0; i < ITEMS; i++) {
      ASSERT_EQ_INT(recs[i].calls, 1);
      /* A success, a crash, a time-out, or data the pool refused: each once. */
      if (recs[i].res.status != 0 && recs[i].res.status != PP_EWORKER &&
          recs[i].res.status != PP_ETIMEDOUT && recs[i].res.status != PP_EPROTO)
        ASSERT_STATUS(recs[i].res, 0);
      pp_result_free(&recs[i].res);
    }
    free(big);
  }
  hs_close(pool, &loop, "the close after scribbling tasks");
}

/* ---- idle-death-reruns: a task written to a worker that had died runs elsewhere ------ */

void test_idle_death_reruns(void) {
  enum { ROUNDS = 20 };
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  int round;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(&loop, &opts);
  for (round = 0; round < ROUNDS; round++) {
    uint64_t pid = test_worker_pid(pool);
    test_rec rec;
    memset(&rec, 0, sizeof(rec));
    /* The worker is idle when it dies; the task goes to it before the pool has seen the
     * death, and the write may well succeed. */
    ASSERT_EQ_INT(uv_kill((int) pid, SIGKILL), 0);
    ASSERT_EQ_INT(test_submit(pool, "echo", "x", 1, &rec), 0);
    test_run_until(&loop, &rec.calls, 1, "the task sent to a dead worker");
    ASSERT_EQ_INT(rec.calls, 1);
    ASSERT_STATUS(rec.res, 0);
    pp_result_free(&rec.res);
  }
  hs_close(pool, &loop, "the close");
}

/* ---- retire-cancel: a worker over its memory cap, its finished task canceled --------- */

static void hs_cancel_cb(pp_pool *pool, pp_result *r, void *user) {
  test_rec *rec = (test_rec *) user;

  (void) pool;
  rec->calls++;
  rec->res = *r;
  r->data = NULL;
  r->message = NULL;
}

void test_retire_cancel(void) {
  enum { ROUNDS = 60 };
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  int round;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  /* Every worker is over it after its first task: each result comes with a RETIRE. */
  opts.max_worker_memory = 1;
  pool = NEW_POOL(&loop, &opts);
  for (round = 0; round < ROUNDS; round++) {
    test_rec a, b;
    uint64_t ida, idb;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    ASSERT_EQ_INT(pp_submit(pool, "echo", "a", 1, hs_cancel_cb, &a, &ida), 0);
    ASSERT_EQ_INT(pp_submit(pool, "echo", "b", 1, hs_cancel_cb, &b, &idb), 0);
    /* Let the first run, more or less: the cancel then finds it finished, running, or
     * with its result and the RETIRE still unread. */
    uv_run(&loop, (round % 3) ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    pp_cancel(pool, ida);
    test_run_until(&loop, &b.calls, 1, "the task behind the canceled one");
    test_run_until(&loop, &a.calls, 1, "the canceled task");
    if (a.res.status != 0)
      ASSERT_STATUS(a.res, PP_ECANCELED);
    /* The one behind never started in a doomed worker, or ran: never blamed. */
    ASSERT_STATUS(b.res, 0);
    pp_result_free(&a.res);
    pp_result_free(&b.res);
  }
  hs_close(pool, &loop, "the close");
}
