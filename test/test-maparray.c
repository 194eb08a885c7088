/* pp_map_array (src/pool/maparray.c, the stream engine's array runs in src/pool/stream.c): every
 * item's result lands in its place, for batches of every shape; an item whose result has
 * the wrong size fails alone with PP_EPROTO and its place is zeroed; failures give the
 * right statuses and the first one's status back; a worker killed in the middle of a
 * batch fails only the item it ran, and every item runs exactly once (counted in shared
 * memory); misuse is refused with nothing touched; empty arguments and results; items one
 * by one; calls from other threads, on a private loop and on a caller's; a pool
 * terminated under a call. */
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

/* What an item of "ma_op" does. */
enum {
  MA_OK = 0,   /* replies value * value + index, 8 bytes */
  MA_FAIL,     /* fails, naming its index */
  MA_SHORT,    /* replies 4 bytes */
  MA_LONG,     /* replies 16 bytes */
  MA_KILL,     /* kills its own worker at once: SIGKILL, or TerminateProcess */
  MA_SLOW,     /* sleeps 20 ms, then replies as MA_OK */
  MA_HANG,     /* never ends (until its worker is killed) */
  MA_LONG_OK,  /* replies 16 bytes, then the right 8: succeeds */
  MA_OK_SHORT, /* replies the right 8 bytes, then 4: fails with PP_EPROTO */
  MA_OK_FAIL,  /* replies the right 8 bytes, then fails */
  MA_OK_RET,   /* replies the right 8 bytes, then returns 5 without a message */
  MA_OK_TWICE  /* replies garbage of 8 bytes, then the right 8: succeeds */
};

typedef struct ma_arg {
  uint32_t index;
  uint32_t mode;
  uint64_t value;
} ma_arg;

/* The run counters, one uint32_t per item, mapped by the initializer "ma_init" (whose
 * argument is their pp_shm_ref); NULL in a worker of a pool without them. */
static pp_shm *ma_shm;

int test_task_ma_init(pp_call *call, const void *arg, size_t len) {
  pp_shm_ref ref;
  int err;

  if (len != sizeof(ref))
    return pp_fail(call, "ma_init: expected a pp_shm_ref");
  memcpy(&ref, arg, sizeof(ref));
  pp_shm_close(ma_shm);
  ma_shm = NULL;
  if ((err = pp_shm_open(&ref, &ma_shm)) != 0)
    return pp_fail(call, "ma_init: pp_shm_open: %s", pp_strerror(err));
  return 0;
}

static uint64_t ma_value(const ma_arg *a) { return a->value * a->value + a->index; }

int test_task_ma_op(pp_call *call, const void *arg, size_t len) {
  uint64_t v[2];
  ma_arg a;

  if (len != sizeof(a))
    return pp_fail(call, "ma_op: expected %u bytes, got %lu", (unsigned) sizeof(a),
                   (unsigned long) len);
  if ((uintptr_t) arg % 16 != 0)
    return pp_fail(call, "ma_op: the argument at %p is not aligned", arg);
  memcpy(&a, arg, sizeof(a));
  if (ma_shm != NULL && a.index < pp_shm_size(ma_shm) / sizeof(uint32_t))
    ((volatile uint32_t *) pp_shm_data(ma_shm))[a.index]++;
  v[0] = ma_value(&a);
  v[1] = ~v[0];
  switch (a.mode) {
    case MA_FAIL:
      return pp_fail(call, "item %u fails on purpose", (unsigned) a.index);
    case MA_SHORT:
      return pp_reply(call, v, 4);
    case MA_LONG:
      return pp_reply(call, v, 16);
    case MA_KILL:
      test_kill_self();
    case MA_SLOW:
      uv_sleep(20);
      break;
    case MA_HANG:
      for (;;)
        uv_sleep(1000);
    case MA_LONG_OK:
      pp_reply(call, v, 16);
      break;
    case MA_OK_SHORT:
      pp_reply(call, v, 8);
      return pp_reply(call, v, 4);
    case MA_OK_FAIL:
      pp_reply(call, v, 8);
      return pp_fail(call, "item %u fails after its reply", (unsigned) a.index);
    case MA_OK_RET:
      pp_reply(call, v, 8);
      return 5;
    case MA_OK_TWICE:
      pp_reply(call, &v[1], 8);
      break;
    default:
      break;
  }
  return pp_reply(call, v, 8);
}

/* For a result wider than the argument: replies its 8-byte argument 8 times over. */
int test_task_ma_wide(pp_call *call, const void *arg, size_t len) {
  unsigned char out[64];
  size_t i;

  if (len != 8)
    return pp_fail(call, "ma_wide: expected 8 bytes, got %lu", (unsigned long) len);
  for (i = 0; i < sizeof(out); i += 8)
    memcpy(out + i, arg, 8);
  return pp_reply(call, out, sizeof(out));
}

/* For arg_size 0: checks it got nothing, replies 8 fixed bytes. */
int test_task_ma_noarg(pp_call *call, const void *arg, size_t len) {
  static const uint64_t v = 0x0123456789abcdefull;

  if (arg != NULL || len != 0)
    return pp_fail(call, "ma_noarg: got %lu bytes at %p", (unsigned long) len, arg);
  return pp_reply(call, &v, sizeof(v));
}

/* For result_size 0: replies nothing, unless its one byte of argument is 'x'. */
int test_task_ma_quiet(pp_call *call, const void *arg, size_t len) {
  if (len == 1 && *(const char *) arg == 'x')
    return pp_reply(call, "x", 1);
  return 0;
}

/* Under fork, the pool its parent made before this worker's: pp_map_array must refuse it
 * in a worker (PP_EINVAL) without touching it. */
static pp_pool *ma_parent_pool;

int test_task_ma_in_worker(pp_call *call, const void *arg, size_t len) {
  uint64_t in = 1, out = 0;
  int status = 5, e;

  (void) arg;
  (void) len;
  if (ma_parent_pool == NULL)
    return pp_reply(call, "ok", 2);
  e = pp_map_array(ma_parent_pool, "ma_op", 1, &in, sizeof(in), &out, sizeof(out),
                   &status);
  if (e != PP_EINVAL || status != 5 || out != 0)
    return pp_fail(call, "pp_map_array in a worker returned %s, status %d", pp_errname(e),
                   status);
  return pp_reply(call, "ok", 2);
}

/* ---- Helpers ------------------------------------------------------------------------ */

static pp_pool *ma_pool(unsigned workers, pp_shm *counters, uint64_t timeout_ms) {
  pp_pool_options opts;
  pp_shm_ref ref;

  test_options(&opts);
  opts.workers = workers;
  opts.task_timeout_ms = timeout_ms;
  if (counters != NULL) {
    pp_shm_ref_get(counters, &ref);
    opts.initializer = "ma_init";
    opts.initarg = &ref;
    opts.initarg_len = sizeof(ref);
  }
  return NEW_POOL(NULL, &opts);
}

/* n items for "ma_op": item i has value i * 7 + 3 and mode modes[i] (MA_OK when NULL). */
static ma_arg *ma_args(size_t n, const uint32_t *modes) {
  ma_arg *a = calloc(n ? n : 1, sizeof(*a));
  size_t i;

  ASSERT_NOT_NULL(a);
  for (i = 0; i < n; i++) {
    a[i].index = (uint32_t) i;
    a[i].mode = modes ? modes[i] : MA_OK;
    a[i].value = (uint64_t) i * 7 + 3;
  }
  return a;
}

/* What item i's status and result must be for its mode; results of 8 bytes. */
static int ma_want_status(uint32_t mode) {
  switch (mode) {
    case MA_FAIL:
    case MA_OK_FAIL:
    case MA_OK_RET: return PP_ETASK;
    case MA_SHORT:
    case MA_LONG:
    case MA_OK_SHORT: return PP_EPROTO;
    case MA_KILL: return PP_EWORKER;
    default: return 0;
  }
}

static void ma_check(const ma_arg *a, size_t n, const uint64_t *results,
                     const int *statuses) {
  size_t i;

  for (i = 0; i < n; i++) {
    int want = ma_want_status(a[i].mode);
    ASSERT_EQ_INT(statuses[i], want);
    ASSERT_EQ_U64(results[i], want == 0 ? ma_value(&a[i]) : 0);
  }
}

/* After everything: done == submitted, the failures counted, nothing queued or
 * running. */
static void ma_settled(pp_pool *pool, uint64_t submitted, uint64_t failed) {
  pp_pool_stats st;

  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.submitted, submitted);
  ASSERT_EQ_U64(st.done, submitted);
  ASSERT_EQ_U64(st.failed, failed);
  ASSERT_EQ_U64(st.queued, 0);
  ASSERT_EQ_U64(st.running, 0);
}

/* The results and statuses of n items, filled with what no item can leave. */
static void ma_out(size_t n, uint64_t **results, int **statuses) {
  size_t i;

  *results = malloc((n ? n : 1) * sizeof(**results));
  *statuses = malloc((n ? n : 1) * sizeof(**statuses));
  ASSERT_NOT_NULL(*results);
  ASSERT_NOT_NULL(*statuses);
  for (i = 0; i < n; i++) {
    (*results)[i] = 0x5555555555555555ull;
    (*statuses)[i] = 12345;
  }
}

/* ---- Tests -------------------------------------------------------------------------- */

/* Every result in its place, for counts around a batch's size (4096) and beyond: one item
 * alone, batches shorter than the largest, exactly one, one more, many. */
void test_ma_results(void) {
  static const size_t counts[] = { 1, 4095, 4096, 4097, 100000 };
  pp_pool *pool = ma_pool(2, NULL, 0);
  uint64_t submitted = 0;
  size_t k;

  for (k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
    size_t n = counts[k];
    ma_arg *a = ma_args(n, NULL);
    uint64_t *results;
    int *statuses;
    ma_out(n, &results, &statuses);
    ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                               statuses), 0);
    ma_check(a, n, results, statuses);
    submitted += n;
    ma_settled(pool, submitted, 0);
    /* statuses may be NULL. */
    memset(results, 0, n * sizeof(*results));
    ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                               NULL), 0);
    ASSERT_EQ_U64(results[n - 1], ma_value(&a[n - 1]));
    submitted += n;
    free(a);
    free(results);
    free(statuses);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Items of several sizes through "echo" (which checks that its argument is aligned as the
 * header promises): each comes back as it went, whatever its place in the batch; and
 * under a small max_message_bytes, which a batch must not pass. */
void test_ma_item_sizes(void) {
  static const size_t sizes[] = { 1, 3, 8, 12, 16, 24, 100, 70000 };
  pp_pool *pool = ma_pool(2, NULL, 0);
  size_t k, i;

  for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    size_t size = sizes[k], n = size > 1000 ? 9 : 3000;
    unsigned char *args = malloc(n * size), *results = malloc(n * size);
    int *statuses = malloc(n * sizeof(int));
    ASSERT_NOT_NULL(args);
    ASSERT_NOT_NULL(results);
    ASSERT_NOT_NULL(statuses);
    for (i = 0; i < n * size; i++)
      args[i] = (unsigned char) (i * 131 + k);
    memset(results, 0xee, n * size);
    ASSERT_EQ_INT(pp_map_array(pool, "echo", n, args, size, results, size, statuses), 0);
    for (i = 0; i < n; i++)
      ASSERT_EQ_INT(statuses[i], 0);
    ASSERT_EQ_MEM(results, n * size, args, n * size);
    free(args);
    free(results);
    free(statuses);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  /* A small max_message_bytes: batches stay within it, results come in several runs. */
  {
    pp_pool_options opts;
    test_options(&opts);
    opts.workers = 2;
    opts.max_message_bytes = 30000;
    pool = NEW_POOL(NULL, &opts);
  }
  {
    const size_t n = 500, size = 1000;
    unsigned char *args = malloc(n * size), *results = malloc(n * size);
    ASSERT_NOT_NULL(args);
    ASSERT_NOT_NULL(results);
    for (i = 0; i < n * size; i++)
      args[i] = (unsigned char) (i * 7);
    memset(results, 0, n * size);
    ASSERT_EQ_INT(pp_map_array(pool, "echo", n, args, size, results, size, NULL), 0);
    ASSERT_EQ_MEM(results, n * size, args, n * size);
    free(args);
    free(results);
  }
  /* Results 8 times as wide as the arguments: a batch's results fill a run (within
   * max_message_bytes) several times over, and each full run goes out in the middle of a
   * batch, between two items whose results go straight into the journal. */
  {
    const size_t n = 20000;
    uint64_t *args = malloc(n * 8);
    unsigned char *results = malloc(n * 64);
    ASSERT_NOT_NULL(args);
    ASSERT_NOT_NULL(results);
    for (i = 0; i < n; i++)
      args[i] = (uint64_t) i * 0x9e3779b97f4a7c15ull;
    memset(results, 0, n * 64);
    ASSERT_EQ_INT(pp_map_array(pool, "ma_wide", n, args, 8, results, 64, NULL), 0);
    for (i = 0; i < n * 8; i++)
      ASSERT_EQ_MEM(results + i * 8, 8, &args[i / 8], 8);
    free(args);
    free(results);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* A task that fails some items, and replies the wrong size for others (shorter, longer,
 * and a whole batch of one wrong size, which comes back in the fixed form): each fails
 * alone with its status, its result zeroed; the others succeed; the first failure's
 * status is returned; the counters count every failure. */
void test_ma_failures(void) {
  const size_t n = 20000;
  pp_pool *pool = ma_pool(2, NULL, 0);
  uint32_t *modes = calloc(n, sizeof(uint32_t));
  uint64_t *results, per_call = 0, failed = 0, submitted = 0;
  int *statuses;
  ma_arg *a;
  size_t i;

  ASSERT_NOT_NULL(modes);
  for (i = 100; i < n; i += 997)
    modes[i] = MA_FAIL;
  for (i = 50; i < n; i += 1777)
    modes[i] = MA_SHORT;
  modes[7000] = MA_LONG;
  modes[n - 1] = MA_SHORT;
  for (i = 0; i < n; i++)
    per_call += modes[i] != MA_OK;
  a = ma_args(n, modes);
  ma_out(n, &results, &statuses);
  /* Item 50 is the first to fail: with PP_EPROTO. */
  ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                             statuses), PP_EPROTO);
  ma_check(a, n, results, statuses);
  submitted += n;
  failed += per_call;
  ma_settled(pool, submitted, failed);

  /* Now the first failure is a task's (as many fail). */
  modes[50] = MA_OK;
  modes[20] = MA_FAIL;
  free(a);
  a = ma_args(n, modes);
  ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                             statuses), PP_ETASK);
  ma_check(a, n, results, statuses);
  submitted += n;
  failed += per_call;
  ma_settled(pool, submitted, failed);

  /* Every item replies 16 bytes where 8 are asked for: all fail, none is written. */
  for (i = 0; i < n; i++)
    modes[i] = MA_LONG;
  free(a);
  a = ma_args(n, modes);
  ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                             statuses), PP_EPROTO);
  ma_check(a, n, results, statuses);
  submitted += n;
  failed += n;
  ma_settled(pool, submitted, failed);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(a);
  free(modes);
  free(results);
  free(statuses);
}

/* A task may reply more than once (the last reply counts) and fail after replying: in a
 * batch whose results go straight into the journal, every such sequence leaves what it
 * leaves for a task of its own, in long stretches of successes and between them. */
void test_ma_reply_sequences(void) {
  static const uint32_t seq[] = { MA_LONG_OK, MA_OK_SHORT, MA_OK_FAIL, MA_OK_RET,
                                  MA_OK_TWICE };
  const size_t n = 30000;
  const size_t nseq = sizeof(seq) / sizeof(seq[0]);
  pp_pool *pool = ma_pool(2, NULL, 0);
  uint32_t *modes = calloc(n, sizeof(uint32_t));
  uint64_t *results, failed = 0;
  int *statuses, first = 0;
  ma_arg *a;
  size_t i;

  ASSERT_NOT_NULL(modes);
  /* Alone among successes, then several in a row, then one at a batch's first item (2
   * workers: batches of n / 16 items), where the run has no size yet. */
  for (i = 300; i < n / 2; i += 1231)
    modes[i] = seq[(i / 1231) % nseq];
  for (i = n / 2; i < n / 2 + 40; i++)
    modes[i] = seq[i % nseq];
  modes[4 * (n / 16)] = MA_OK_TWICE;
  modes[n - 1] = MA_OK_FAIL;
  for (i = 0; i < n; i++) {
    int want = ma_want_status(modes[i]);
    failed += want != 0;
    if (first == 0)
      first = want;
  }
  a = ma_args(n, modes);
  ma_out(n, &results, &statuses);
  ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                             statuses), first);
  ma_check(a, n, results, statuses);
  ma_settled(pool, n, failed);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(a);
  free(modes);
  free(results);
  free(statuses);
}

/* Workers killed in the middle of batches: only the item each ran fails (PP_EWORKER);
 * every other item has its result, and every item ran exactly once, the killed ones
 * included (the counters are in shared memory, counted before the kill). */
void test_ma_worker_killed(void) {
  const size_t n = 30000;
  pp_shm *shm;
  pp_pool *pool;
  pp_pool_stats st;
  uint32_t *modes = calloc(n, sizeof(uint32_t));
  const volatile uint32_t *runs;
  uint64_t *results;
  int *statuses;
  ma_arg *a;
  size_t i;

  ASSERT_NOT_NULL(modes);
  ASSERT_EQ_INT(pp_shm_create(&shm, n * sizeof(uint32_t)), 0);
  runs = (const volatile uint32_t *) pp_shm_data(shm);
  pool = ma_pool(2, shm, 0);
  modes[5000] = MA_KILL;
  modes[5001] = MA_FAIL;
  modes[17777] = MA_KILL;
  modes[n - 1] = MA_KILL;
  a = ma_args(n, modes);
  ma_out(n, &results, &statuses);
  ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                             statuses), PP_EWORKER);
  ma_check(a, n, results, statuses);
  for (i = 0; i < n; i++)
    ASSERT_EQ_INT(runs[i], 1);
  ma_settled(pool, n, 4);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.workers_lost, 3);
  ASSERT_EQ_U64(st.workers_started, st.workers_lost + 2);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  free(a);
  free(modes);
  free(results);
  free(statuses);
}

/* Misuse is refused before anything runs, with results and statuses untouched. */
void test_ma_api(void) {
  pp_pool_options opts;
  pp_pool *pool;
  uint64_t in[4] = { 1, 2, 3, 4 }, out[4] = { 9, 9, 9, 9 };
  int st[4] = { 7, 7, 7, 7 };
  size_t i;

  test_options(&opts);
  opts.workers = 1;
  opts.max_message_bytes = 65536;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_map_array(NULL, "echo", 4, in, 8, out, 8, st), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_array(pool, NULL, 4, in, 8, out, 8, st), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_array(pool, "echo", 4, NULL, 8, out, 8, st), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_array(pool, "echo", 4, in, 8, NULL, 8, st), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_array(pool, "echo", SIZE_MAX / 4, in, 8, out, 1, st), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_array(pool, "echo", SIZE_MAX / 4, in, 1, out, 8, st), PP_EINVAL);
  ASSERT_EQ_INT(pp_map_array(pool, "echo", 4, in, 65537, out, 8, st), PP_E2BIG);
  ASSERT_EQ_INT(pp_map_array(pool, "echo", 4, in, 8, out, 65537, st), PP_E2BIG);
  for (i = 0; i < 4; i++) {
    ASSERT_EQ_U64(out[i], 9);
    ASSERT_EQ_INT(st[i], 7);
  }
  /* n == 0 touches nothing, whatever the pointers. */
  ASSERT_EQ_INT(pp_map_array(pool, "echo", 0, NULL, 8, NULL, 8, NULL), 0);
  /* A task the table lacks: each item fails with PP_ENOTASK. */
  ASSERT_EQ_INT(pp_map_array(pool, "no-such-task", 4, in, 8, out, 8, st), PP_ENOTASK);
  for (i = 0; i < 4; i++) {
    ASSERT_EQ_U64(out[i], 0);
    ASSERT_EQ_INT(st[i], PP_ENOTASK);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* From a result callback: PP_EINVAL, nothing run. */
typedef struct ma_cb_state {
  int called;
  int err;
} ma_cb_state;

static void ma_from_cb(pp_pool *pool, pp_result *r, void *user) {
  ma_cb_state *s = (ma_cb_state *) user;
  uint64_t in = 5, out = 0;

  (void) r;
  s->called++;
  s->err = pp_map_array(pool, "echo", 1, &in, sizeof(in), &out, sizeof(out), NULL);
}

void test_ma_misuse_places(void) {
  pp_pool *pool, *used;
  ma_cb_state s = { 0, 0 };
  pp_result r;

  /* Under fork, the second pool's workers are copies of this process with the first
   * pool in ma_parent_pool. */
  pool = ma_pool(1, NULL, 0);
  ma_parent_pool = pool;
  used = ma_pool(1, NULL, 0);
  ASSERT_EQ_INT(pp_submit(used, "echo", "x", 1, ma_from_cb, &s, NULL), 0);
  ASSERT_EQ_INT(pp_pool_wait(used), 0);
  ASSERT_EQ_INT(s.called, 1);
  ASSERT_EQ_INT(s.err, PP_EINVAL);
  ASSERT_EQ_INT(APPLY(used, "ma_in_worker", NULL, 0, &r), 0);
  pp_result_free(&r);
  ma_parent_pool = NULL;
  ASSERT_EQ_INT(pp_pool_close(used, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* arg_size 0 (args NULL): every item gets an empty argument. result_size 0 (results
 * NULL): every item must reply nothing; one that replies something fails (PP_EPROTO). */
void test_ma_empty(void) {
  const size_t n = 10000;
  pp_pool *pool = ma_pool(2, NULL, 0);
  uint64_t *results;
  int *statuses;
  char *bytes = malloc(n);
  size_t i;

  ASSERT_NOT_NULL(bytes);
  ma_out(n, &results, &statuses);
  ASSERT_EQ_INT(pp_map_array(pool, "ma_noarg", n, NULL, 0, results, sizeof(*results),
                             statuses), 0);
  for (i = 0; i < n; i++) {
    ASSERT_EQ_INT(statuses[i], 0);
    ASSERT_EQ_U64(results[i], 0x0123456789abcdefull);
  }
  memset(bytes, '.', n);
  ASSERT_EQ_INT(pp_map_array(pool, "ma_quiet", n, bytes, 1, NULL, 0, statuses), 0);
  for (i = 0; i < n; i++)
    ASSERT_EQ_INT(statuses[i], 0);
  bytes[3] = 'x';
  bytes[n - 2] = 'x';
  ASSERT_EQ_INT(pp_map_array(pool, "ma_quiet", n, bytes, 1, NULL, 0, statuses),
                PP_EPROTO);
  for (i = 0; i < n; i++)
    ASSERT_EQ_INT(statuses[i], bytes[i] == 'x' ? PP_EPROTO : 0);
  /* Both empty: every item of "nothing" succeeds. */
  ASSERT_EQ_INT(pp_map_array(pool, "nothing", n, NULL, 0, NULL, 0, statuses), 0);
  for (i = 0; i < n; i++)
    ASSERT_EQ_INT(statuses[i], 0);
  ma_settled(pool, 4 * (uint64_t) n, 2);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(bytes);
  free(results);
  free(statuses);
}

/* Under task_timeout_ms items go one by one, each a task of its own: the same outcomes,
 * and a wrong size counted as a failure there too. */
void test_ma_one_by_one(void) {
  const size_t n = 300;
  pp_pool *pool = ma_pool(2, NULL, 60000);
  uint32_t *modes = calloc(n, sizeof(uint32_t));
  uint64_t *results;
  int *statuses;
  ma_arg *a;

  ASSERT_NOT_NULL(modes);
  modes[10] = MA_FAIL;
  modes[20] = MA_SHORT;
  modes[30] = MA_LONG;
  modes[40] = MA_SLOW;
  a = ma_args(n, modes);
  ma_out(n, &results, &statuses);
  ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, a, sizeof(*a), results, sizeof(*results),
                             statuses), PP_ETASK);
  ma_check(a, n, results, statuses);
  ma_settled(pool, n, 3);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(a);
  free(modes);
  free(results);
  free(statuses);
}

/* From threads that do not run the pool's loop: the same results, a killed worker's item
 * alone failing, every item run once; two threads at once on one pool. */
typedef struct ma_thread {
  pp_pool *pool;
  size_t n;
  ma_arg *a;
  uint64_t *results;
  int *statuses;
  int ret;
} ma_thread;

static void ma_thread_main(void *arg) {
  ma_thread *t = (ma_thread *) arg;

  t->ret = pp_map_array(t->pool, "ma_op", t->n, t->a, sizeof(*t->a), t->results,
                        sizeof(*t->results), t->statuses);
}

void test_ma_threads(void) {
  const size_t n = 50000;
  pp_shm *shm;
  pp_pool *pool;
  uv_thread_t th[2];
  ma_thread t[2];
  uint32_t *modes = calloc(n, sizeof(uint32_t));
  const volatile uint32_t *runs;
  size_t i, k;

  ASSERT_NOT_NULL(modes);
  ASSERT_EQ_INT(pp_shm_create(&shm, 2 * n * sizeof(uint32_t)), 0);
  runs = (const volatile uint32_t *) pp_shm_data(shm);
  pool = ma_pool(2, shm, 0);
  modes[1234] = MA_FAIL;
  modes[20000] = MA_KILL;
  for (k = 0; k < 2; k++) {
    t[k].pool = pool;
    t[k].n = n;
    t[k].a = ma_args(n, k == 0 ? modes : NULL);
    /* The second thread's items count in the second half of the counters. */
    for (i = 0; i < n; i++)
      t[k].a[i].index += (uint32_t) (k * n);
    ma_out(n, &t[k].results, &t[k].statuses);
  }
  /* One alone, then two at once. */
  ASSERT_EQ_INT(uv_thread_create(&th[0], ma_thread_main, &t[0]), 0);
  ASSERT_EQ_INT(uv_thread_join(&th[0]), 0);
  ASSERT_EQ_INT(t[0].ret, PP_ETASK);
  ma_check(t[0].a, n, t[0].results, t[0].statuses);
  for (i = 0; i < n; i++)
    ASSERT_EQ_INT(runs[i], 1);
  for (k = 0; k < 2; k++)
    ASSERT_EQ_INT(uv_thread_create(&th[k], ma_thread_main, &t[k]), 0);
  for (k = 0; k < 2; k++)
    ASSERT_EQ_INT(uv_thread_join(&th[k]), 0);
  ASSERT_EQ_INT(t[0].ret, PP_ETASK);
  ASSERT_EQ_INT(t[1].ret, 0);
  for (k = 0; k < 2; k++)
    ma_check(t[k].a, n, t[k].results, t[k].statuses);
  for (i = 0; i < n; i++)
    ASSERT_EQ_INT(runs[i], 2);
  for (i = n; i < 2 * n; i++)
    ASSERT_EQ_INT(runs[i], 1);
  ma_settled(pool, 3 * (uint64_t) n, 4);
  /* And from this thread again, now that the pool's own thread runs its loop. */
  ASSERT_EQ_INT(pp_map_array(pool, "ma_op", n, t[1].a, sizeof(*t[1].a), t[1].results,
                             sizeof(*t[1].results), t[1].statuses), 0);
  ma_check(t[1].a, n, t[1].results, t[1].statuses);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  for (k = 0; k < 2; k++) {
    free(t[k].a);
    free(t[k].results);
    free(t[k].statuses);
  }
  free(modes);
}

/* A pool terminated from another thread while a call is under way (its first item
 * never ends): the call returns; every item either succeeded with its result or failed
 * with PP_ECANCELED (in flight) or PP_ECLOSED (never taken), its result zeroed; the
 * status returned is the first failure's, item 0's. */
void test_ma_terminated(void) {
  const size_t n = 400000;
  pp_shm *shm;
  pp_pool *pool;
  const volatile uint32_t *runs;
  uv_thread_t th;
  ma_thread t;
  uint64_t waited = 0;
  size_t i;

  ASSERT_EQ_INT(pp_shm_create(&shm, sizeof(uint32_t)), 0);
  runs = (const volatile uint32_t *) pp_shm_data(shm);
  pool = ma_pool(2, shm, 0);
  t.pool = pool;
  t.n = n;
  t.a = ma_args(n, NULL);
  t.a[0].mode = MA_HANG;
  ma_out(n, &t.results, &t.statuses);
  ASSERT_EQ_INT(uv_thread_create(&th, ma_thread_main, &t), 0);
  /* Item 0 has started: the call is under way, and cannot end by itself. */
  while (runs[0] == 0 && waited < 30000) {
    uv_sleep(5);
    waited += 5;
  }
  ASSERT_EQ_U64(runs[0], 1);
  ASSERT_EQ_INT(pp_pool_terminate(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(uv_thread_join(&th), 0);
  ASSERT_EQ_INT(t.ret, PP_ECANCELED);
  ASSERT_EQ_INT(t.statuses[0], PP_ECANCELED);
  for (i = 0; i < n; i++) {
    if (t.statuses[i] == 0) {
      ASSERT_EQ_U64(t.results[i], ma_value(&t.a[i]));
      continue;
    }
    if (t.statuses[i] != PP_ECLOSED)
      ASSERT_EQ_INT(t.statuses[i], PP_ECANCELED);
    ASSERT_EQ_U64(t.results[i], 0);
  }
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  free(t.a);
  free(t.results);
  free(t.statuses);
}

/* On a caller's loop: from the loop's thread (which runs the loop inside the call), then
 * from another thread while the loop's thread runs its loop (the call is a job in the
 * pool's inbox); that thread then closes the pool. */
typedef struct ma_cl {
  ma_thread t;
  int closed;
} ma_cl;

static void ma_cl_other(void *arg) {
  ma_cl *c = (ma_cl *) arg;

  ma_thread_main(&c->t);
  ASSERT_EQ_INT(pp_pool_close(c->t.pool, test_count_cb, &c->closed), 0);
}

void test_ma_caller_loop(void) {
  const size_t n = 20000;
  pp_pool_options opts;
  uv_loop_t loop;
  uv_thread_t th;
  uint32_t *modes = calloc(n, sizeof(uint32_t));
  ma_cl c;

  ASSERT_NOT_NULL(modes);
  modes[3333] = MA_FAIL;
  memset(&c, 0, sizeof(c));
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  c.t.pool = NEW_POOL(&loop, &opts);
  c.t.n = n;
  c.t.a = ma_args(n, modes);
  ma_out(n, &c.t.results, &c.t.statuses);
  ma_thread_main(&c.t);
  ASSERT_EQ_INT(c.t.ret, PP_ETASK);
  ma_check(c.t.a, n, c.t.results, c.t.statuses);
  free(c.t.results);
  free(c.t.statuses);
  ma_out(n, &c.t.results, &c.t.statuses);
  ASSERT_EQ_INT(uv_thread_create(&th, ma_cl_other, &c), 0);
  test_run_until(&loop, &c.closed, 1, "the close from the other thread");
  ASSERT_EQ_INT(uv_thread_join(&th), 0);
  ASSERT_EQ_INT(c.t.ret, PP_ETASK);
  ma_check(c.t.a, n, c.t.results, c.t.statuses);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  free(c.t.a);
  free(c.t.results);
  free(c.t.statuses);
  free(modes);
}
