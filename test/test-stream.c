/* pp_map_stream and the pool's counters (src/pool/stream.c, src/pool/stats.c): every item taken is
 * delivered once, in index order or as it completes; inputs are copied before next() is
 * called again; next() can end or stop a stream; failed items and dead workers fail only
 * their own item; the window stays bounded behind a slow item; and the counters agree
 * with each other at every moment they are read, under every fault. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First: uv.h brings winsock2.h, which must come before windows.h. */
#include "test.h"

#ifdef _WIN32
#  include <windows.h>
#else
#  include <signal.h>
#  include <unistd.h>
#endif

/* What an item of "stream_op" does. */
enum {
  SO_OK = 0,   /* replies index * 3 + 1 as a uint64 */
  SO_FAIL,     /* fails, naming its index */
  SO_EXIT,     /* ends its worker with exit code 3 */
  SO_KILL,     /* kills its own worker at once: SIGKILL, or TerminateProcess */
  SO_SLEEP     /* sleeps `ms`, then replies as SO_OK */
};

typedef struct so_arg {
  uint32_t index;
  uint32_t mode;
  uint32_t ms;
} so_arg;

int test_task_stream_op(pp_call *call, const void *arg, size_t len) {
  so_arg a;
  uint64_t v;

  if (len != sizeof(a))
    return pp_fail(call, "stream_op: expected %u bytes, got %lu", (unsigned) sizeof(a),
                   (unsigned long) len);
  memcpy(&a, arg, sizeof(a));
  switch (a.mode) {
    case SO_FAIL:
      return pp_fail(call, "item %u fails on purpose", (unsigned) a.index);
    case SO_EXIT:
      exit(3);
    case SO_KILL:
      test_kill_self();
    case SO_SLEEP:
      uv_sleep(a.ms);
      break;
    default:
      break;
  }
  v = (uint64_t) a.index * 3 + 1;
  return pp_reply(call, &v, sizeof(v));
}

/* ---- A stream's run, checked ----------------------------------------------------------- */

typedef struct srun {
  pp_pool *pool;
  size_t n;            /* inputs next() gives */
  size_t stop_at;      /* next() ends (or fails) after this many; n when not */
  int stop_err;        /* what next() returns at stop_at: 0 or an error */
  int ordered;
  uint32_t *modes;     /* per item, SO_OK when NULL */
  uint32_t slow_ms;    /* SO_SLEEP's ms */
  so_arg buf;          /* one buffer for every input: the pool must copy it */
  size_t given;        /* next()'s calls that gave an input */
  int calls_after_end; /* next() called after it said no more */
  int ended;
  size_t delivered;
  size_t max_window;   /* the most inputs given and not yet delivered */
  unsigned char *seen;
  int *status;
  int bad_value;       /* a success whose value is not its index's */
  int bad_order;
  int bad_counters;    /* a snapshot that did not add up */
} srun;

static void check_stats(srun *r) {
  pp_pool_stats st;

  if (pp_pool_stats_get(r->pool, &st) != 0 ||
      st.submitted != st.done + st.queued + st.running || st.failed > st.done ||
      st.workers_lost > st.workers_started)
    r->bad_counters++;
}

static int srun_next(void *user, pp_input *in) {
  srun *r = (srun *) user;
  size_t i = r->given;

  if (r->ended) {
    r->calls_after_end++;
    return 0;
  }
  check_stats(r);
  if (i == r->stop_at || i == r->n) {
    r->ended = 1;
    return i == r->stop_at ? r->stop_err : 0;
  }
  r->buf.index = (uint32_t) i;
  r->buf.mode = r->modes ? r->modes[i] : SO_OK;
  r->buf.ms = r->slow_ms;
  in->data = &r->buf;
  in->len = sizeof(r->buf);
  r->given++;
  if (r->given - r->delivered > r->max_window)
    r->max_window = r->given - r->delivered;
  return 1;
}

static void srun_each(void *user, size_t index, pp_result *res) {
  srun *r = (srun *) user;
  uint64_t v;

  check_stats(r);
  if (index >= r->given || r->seen[index]++) {
    r->bad_order++;
    return;
  }
  if (r->ordered && index != r->delivered)
    r->bad_order++;
  r->delivered++;
  r->status[index] = res->status;
  if (res->status == 0) {
    if (res->len != sizeof(v))
      r->bad_value++;
    else if (memcpy(&v, res->data, sizeof(v)), v != (uint64_t) index * 3 + 1)
      r->bad_value++;
  } else if (res->message == NULL || res->message[0] == '\0') {
    r->bad_value++;
  }
}

static void srun_init(srun *r, pp_pool *pool, size_t n, int ordered) {
  memset(r, 0, sizeof(*r));
  r->pool = pool;
  r->n = n;
  r->stop_at = n;
  r->ordered = ordered;
  r->seen = calloc(n ? n : 1, 1);
  r->status = calloc(n ? n : 1, sizeof(int));
  ASSERT_NOT_NULL(r->seen);
  ASSERT_NOT_NULL(r->status);
}

static int srun_go(srun *r) {
  return pp_map_stream(r->pool, "stream_op", srun_next, srun_each, r,
                       r->ordered ? 0 : PP_MAP_UNORDERED);
}

/* Every input given was delivered once; nothing asked of next() after its end. */
static void srun_check(srun *r) {
  size_t i;

  ASSERT_EQ_U64(r->delivered, r->given);
  for (i = 0; i < r->given; i++)
    ASSERT_EQ_INT(r->seen[i], 1);
  ASSERT_EQ_INT(r->bad_order, 0);
  ASSERT_EQ_INT(r->bad_value, 0);
  ASSERT_EQ_INT(r->bad_counters, 0);
  ASSERT_EQ_INT(r->calls_after_end, 0);
}

static void srun_free(srun *r) {
  free(r->seen);
  free(r->status);
  free(r->modes);
}

/* After everything is delivered: done == submitted, nothing queued or running. */
static void check_settled(pp_pool *pool, uint64_t submitted, uint64_t failed) {
  pp_pool_stats st;

  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.submitted, submitted);
  ASSERT_EQ_U64(st.done, submitted);
  ASSERT_EQ_U64(st.failed, failed);
  ASSERT_EQ_U64(st.queued, 0);
  ASSERT_EQ_U64(st.running, 0);
  ASSERT_TRUE(st.workers_lost <= st.workers_started);
}

static pp_pool *two_workers(void) {
  pp_pool_options opts;

  test_options(&opts);
  opts.workers = 2;
  return NEW_POOL(NULL, &opts);
}

static void plain(int ordered) {
  const size_t n = 20000;
  pp_pool *pool = two_workers();
  srun r;

  srun_init(&r, pool, n, ordered);
  ASSERT_EQ_INT(srun_go(&r), 0);
  srun_check(&r);
  ASSERT_EQ_U64(r.given, n);
  check_settled(pool, n, 0);
  /* A second stream on the same pool adds up. */
  srun_free(&r);
  srun_init(&r, pool, 100, ordered);
  ASSERT_EQ_INT(srun_go(&r), 0);
  srun_check(&r);
  check_settled(pool, n + 100, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  srun_free(&r);
}

void test_stream_ordered(void) { plain(1); }

void test_stream_unordered(void) { plain(0); }

/* next() ends early, or stops the stream with an error: what it gave is delivered, and it
 * is not asked again. */
void test_stream_next_stops(void) {
  pp_pool *pool = two_workers();
  srun r;
  int ordered;

  for (ordered = 0; ordered < 2; ordered++) {
    srun_init(&r, pool, 5000, ordered);
    r.stop_at = 1234;
    ASSERT_EQ_INT(srun_go(&r), 0);
    srun_check(&r);
    ASSERT_EQ_U64(r.given, 1234);
    srun_free(&r);

    srun_init(&r, pool, 5000, ordered);
    r.stop_at = 777;
    r.stop_err = UV_EIO;
    ASSERT_EQ_INT(srun_go(&r), UV_EIO);
    srun_check(&r);
    ASSERT_EQ_U64(r.given, 777);
    srun_free(&r);

    srun_init(&r, pool, 0, ordered);
    ASSERT_EQ_INT(srun_go(&r), 0);
    ASSERT_EQ_U64(r.given, 0);
    srun_free(&r);
  }
  check_settled(pool, 2 * (1234 + 777), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Failing items in the middle: each fails alone with its message, the stream goes on,
 * and the lowest failed index's status is returned. */
void test_stream_failures(void) {
  const size_t n = 6000;
  pp_pool *pool = two_workers();
  size_t i, nfail, total = 0;
  srun r;
  int ordered;

  for (ordered = 0; ordered < 2; ordered++) {
    srun_init(&r, pool, n, ordered);
    r.modes = calloc(n, sizeof(uint32_t));
    ASSERT_NOT_NULL(r.modes);
    nfail = 0;
    for (i = 1000; i < n; i += 997, nfail++)
      r.modes[i] = SO_FAIL;
    ASSERT_EQ_INT(srun_go(&r), PP_ETASK);
    srun_check(&r);
    for (i = 0; i < n; i++)
      ASSERT_EQ_INT(r.status[i], r.modes[i] == SO_FAIL ? PP_ETASK : 0);
    total += nfail;
    check_settled(pool, (ordered + 1) * n, total);
    srun_free(&r);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Workers killed and crashed in the middle of the stream (in the middle of batches, once
 * items have been timed): only the item that ran fails, with PP_EWORKER; every other
 * item runs once; the counters count the lost workers. */
void test_stream_worker_killed(void) {
  const size_t n = 30000;
  pp_pool *pool = two_workers();
  pp_pool_stats st;
  size_t i;
  srun r;
  int ordered;

  for (ordered = 0; ordered < 2; ordered++) {
    srun_init(&r, pool, n, ordered);
    r.modes = calloc(n, sizeof(uint32_t));
    ASSERT_NOT_NULL(r.modes);
    r.modes[12345] = SO_KILL;
    r.modes[23456] = SO_EXIT;
    ASSERT_EQ_INT(srun_go(&r), PP_EWORKER);
    srun_check(&r);
    for (i = 0; i < n; i++)
      ASSERT_EQ_INT(r.status[i], r.modes[i] == SO_OK ? 0 : PP_EWORKER);
    check_settled(pool, (ordered + 1) * n, 2 * (ordered + 1));
    srun_free(&r);
  }
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  /* The four the items ended, each replaced: never more, which a batch run again would
   * make (its worker read its frame whole before the pool saw the write complete, and
   * the kill ran twice). */
  ASSERT_EQ_U64(st.workers_lost, 4);
  ASSERT_EQ_U64(st.workers_started, st.workers_lost + 2);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* In order, a slow item holds back what comes after it, but no more than the window:
 * next() is not asked for more meanwhile. */
void test_stream_window_bounded(void) {
  const size_t n = 150000;
  pp_pool *pool = two_workers();
  srun r;

  srun_init(&r, pool, n, 1);
  r.modes = calloc(n, sizeof(uint32_t));
  ASSERT_NOT_NULL(r.modes);
  r.modes[5000] = SO_SLEEP;
  r.slow_ms = 1000;
  ASSERT_EQ_INT(srun_go(&r), 0);
  srun_check(&r);
  ASSERT_TRUE(r.max_window <= 65536);
  check_settled(pool, n, 0);
  srun_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Items that cannot be sent fail alone; misuse is refused before next() is called. */
static int never_next(void *user, pp_input *in) {
  (void) in;
  (*(int *) user)++;
  return 0;
}

static void never_each(void *user, size_t index, pp_result *r) {
  (void) index;
  (void) r;
  (*(int *) user)++;
}

typedef struct bad_inputs {
  size_t i;
  int status[4];
} bad_inputs;

static int bad_next(void *user, pp_input *in) {
  bad_inputs *b = (bad_inputs *) user;
  static so_arg a;

  if (b->i == 4)
    return 0;
  a.index = (uint32_t) b->i;
  a.mode = SO_OK;
  in->data = b->i == 1 ? NULL : &a;
  in->len = b->i == 2 ? (size_t) 1 << 20 : sizeof(a);
  if (b->i == 1)
    in->len = 3;
  b->i++;
  return 1;
}

static void bad_each(void *user, size_t index, pp_result *r) {
  bad_inputs *b = (bad_inputs *) user;

  b->status[index] = r->status;
}

typedef struct nested {
  pp_pool *pool;
  int left;
  int refused;
  int inner_calls;
} nested;

/* A blocking call from next() or each() is refused. */
static void try_nested(nested *x) {
  if (pp_map_stream(x->pool, "stream_op", never_next, never_each, &x->inner_calls, 0) ==
      PP_EINVAL)
    x->refused++;
}

static void nested_each(void *user, size_t index, pp_result *r) {
  (void) index;
  (void) r;
  try_nested((nested *) user);
}

static int nested_next(void *user, pp_input *in) {
  static so_arg a;
  nested *x = (nested *) user;

  try_nested(x);
  if (x->left == 0)
    return 0;
  x->left--;
  in->data = &a;
  in->len = sizeof(a);
  return 1;
}

void test_stream_api(void) {
  pp_pool_options opts;
  pp_pool *pool;
  bad_inputs b;
  nested x;
  int calls = 0;

  test_options(&opts);
  opts.workers = 1;
  opts.max_message_bytes = 64 * 1024;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_map_stream(NULL, "stream_op", never_next, never_each, &calls, 0),
                PP_EINVAL);
  ASSERT_EQ_INT(pp_map_stream(pool, NULL, never_next, never_each, &calls, 0), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_stream(pool, "stream_op", NULL, never_each, &calls, 0), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_stream(pool, "stream_op", never_next, NULL, &calls, 0), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_stream(pool, "stream_op", never_next, never_each, &calls, 2),
                PP_EINVAL);
  ASSERT_EQ_INT(pp_map_stream(pool, "no_such_task", never_next, never_each, &calls, 0),
                PP_ENOTASK);
  ASSERT_EQ_INT(calls, 0);
  ASSERT_EQ_INT(pp_pool_stats_get(NULL, NULL), PP_EINVAL);

  memset(&b, 0, sizeof(b));
  ASSERT_EQ_INT(pp_map_stream(pool, "stream_op", bad_next, bad_each, &b, 0), PP_EINVAL);
  ASSERT_EQ_INT(b.status[0], 0);
  ASSERT_EQ_INT(b.status[1], PP_EINVAL);
  ASSERT_EQ_INT(b.status[2], PP_E2BIG);
  ASSERT_EQ_INT(b.status[3], 0);

  memset(&x, 0, sizeof(x));
  x.pool = pool;
  x.left = 3;
  ASSERT_EQ_INT(pp_map_stream(pool, "stream_op", nested_next, nested_each, &x, 0), 0);
  ASSERT_EQ_INT(x.refused, 4 + 3);
  ASSERT_EQ_INT(x.inner_calls, 0);
  check_settled(pool, 2 + 3, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- The counters under the suite's faults --------------------------------------------- */

typedef struct fault_rec {
  pp_pool *pool;
  int calls;
  int bad;
} fault_rec;

static void fault_cb(pp_pool *pool, pp_result *r, void *user) {
  fault_rec *f = (fault_rec *) user;
  pp_pool_stats st;

  (void) r;
  f->calls++;
  if (pp_pool_stats_get(pool, &st) != 0 || st.submitted != st.done + st.queued + st.running)
    f->bad++;
}

/* Crashes, a kill, a timeout, a cancel, pp_map over a crash, then terminate with work
 * queued: the counters add up in every callback and at the end, failures and lost
 * workers counted. */
void test_stream_counters_faults(void) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_pool_stats st;
  fault_rec f;
  so_arg a[6];
  pp_input in[6];
  pp_result out[6];
  uint64_t id, sleeper;
  int i, closed = 0;

  test_options(&opts);
  opts.workers = 2;
  /* Only the sleepers may reach it: the other tasks must succeed on a loaded machine. */
  opts.task_timeout_ms = test_scale_ms(3000);
  pool = NEW_POOL(NULL, &opts);
  memset(&f, 0, sizeof(f));
  f.pool = pool;
  memset(a, 0, sizeof(a));
  a[0].mode = SO_EXIT;
  a[1].mode = SO_KILL;
  a[2].mode = SO_FAIL;
  a[3].mode = SO_OK;
  for (i = 0; i < 4; i++)
    ASSERT_EQ_INT(pp_submit(pool, "stream_op", &a[i], sizeof(a[i]), fault_cb, &f, &id), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(f.calls, 4);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.failed, 3);
  ASSERT_EQ_U64(st.workers_lost, 2);
  check_settled(pool, 4, 3);

  /* A timeout. */
  a[4].mode = SO_SLEEP;
  a[4].ms = (uint32_t) (opts.task_timeout_ms * 10);
  ASSERT_EQ_INT(pp_submit(pool, "stream_op", &a[4], sizeof(a[4]), fault_cb, &f, &id), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  check_settled(pool, 5, 4);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.workers_lost, 3);

  /* A cancel, queued or running: the counters agree either way. */
  ASSERT_EQ_INT(pp_submit(pool, "stream_op", &a[4], sizeof(a[4]), fault_cb, &f, &sleeper),
                0);
  ASSERT_EQ_INT(pp_cancel(pool, sleeper), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  check_settled(pool, 6, 5);

  /* pp_map over a crash: items count one each, whether batched or not. */
  for (i = 0; i < 6; i++) {
    a[i].index = (uint32_t) i;
    a[i].mode = i == 2 ? SO_EXIT : SO_OK;
    in[i].data = &a[i];
    in[i].len = sizeof(a[i]);
  }
  ASSERT_EQ_INT(pp_map(pool, "stream_op", 6, in, out), PP_EWORKER);
  for (i = 0; i < 6; i++)
    pp_result_free(&out[i]);
  check_settled(pool, 12, 6);

  /* Terminate with work running and queued: all of it is canceled and counted. */
  a[0].mode = SO_SLEEP;
  a[0].ms = 30000;
  for (i = 0; i < 5; i++)
    ASSERT_EQ_INT(pp_submit(pool, "stream_op", &a[0], sizeof(a[0]), fault_cb, &f, &id), 0);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.submitted, 17);
  ASSERT_EQ_U64(st.queued + st.running, 5);
  ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &closed), 0);
  ASSERT_EQ_INT(closed, 1);
  ASSERT_EQ_INT(f.bad, 0);
  ASSERT_EQ_INT(f.calls, 4 + 1 + 1 + 5);
}
