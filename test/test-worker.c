/* The worker side of the protocol: a batch's items each write their result before the
 * next starts, the initializer's argument is aligned, a table of 65535 tasks is cheap to
 * check, and a malformed table says exactly what is wrong, in the parent and in a
 * worker (through the pool). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First: uv.h brings winsock2.h, which must come before windows.h. */
#include "test.h"
#include "../src/shared/names.h"
#include "../src/shared/registry.h"

#ifdef _WIN32
#  include <windows.h>
#else
#  include <signal.h>
#  include <sys/resource.h>
#endif

/* The environment variable that makes main() give pp_main another table than
 * test_tasks: "big" (65535 tasks) or "dup" (the same, with task 65000 named as task 3).
 * Set by a test for the workers it starts; read before pp_main, in every process. */
#define TABLE_ENV "PP_TEST_TABLE"

/* A crash that leaves no core file and opens no dialog, and ends the process the plain
 * way rather than through a sanitizer's handler (as tasks.c's). */
static void quiet_crash(void) {
#ifdef _WIN32
  SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
#else
  struct rlimit rl = { 0, 0 };
  setrlimit(RLIMIT_CORE, &rl);
  signal(SIGABRT, SIG_DFL);
#endif
}

/* ---- Tables ------------------------------------------------------------------------- */

#define BIG_N 65535
#define BIG_INIT 40000   /* "big_init": far into the table, found by the worker's index */
#define BIG_LAST (BIG_N - 1)  /* "big_last" */
#define DUP_FIRST 3
#define DUP_SECOND 65000

static pp_task big_table[BIG_N + 1];
static char big_names[BIG_N][12];
static int big_inited;

static int big_echo(pp_call *call, const void *arg, size_t len) {
  return pp_reply(call, arg, len);
}

static int big_init(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  big_inited = 1;
  return 0;
}

/* Replies whether "big_init" ran in this worker. */
static int big_last(pp_call *call, const void *arg, size_t len) {
  uint32_t ran = (uint32_t) big_inited;

  (void) arg;
  (void) len;
  return pp_reply(call, &ran, sizeof(ran));
}

/* The big table; with dup, task DUP_SECOND is named as task DUP_FIRST. */
static const pp_task *make_big_table(int dup) {
  size_t i;

  for (i = 0; i < BIG_N; i++) {
    big_table[i].fn = big_echo;
    snprintf(big_names[i], sizeof(big_names[i]), "big%05u", (unsigned) i);
    big_table[i].name = big_names[i];
  }
  snprintf(big_names[BIG_INIT], sizeof(big_names[BIG_INIT]), "big_init");
  big_table[BIG_INIT].fn = big_init;
  snprintf(big_names[BIG_LAST], sizeof(big_names[BIG_LAST]), "big_last");
  big_table[BIG_LAST].fn = big_last;
  if (dup)
    big_table[DUP_SECOND].name = big_names[DUP_FIRST];
  big_table[BIG_N].name = NULL;
  big_table[BIG_N].fn = NULL;
  return big_table;
}

const pp_task *test_worker_table(void) {
  char buf[8];
  size_t size = sizeof(buf);

  if (uv_os_getenv(TABLE_ENV, buf, &size) != 0)
    return test_tasks;
  if (strcmp(buf, "big") == 0)
    return make_big_table(0);
  if (strcmp(buf, "dup") == 0)
    return make_big_table(1);
  return test_tasks;
}

/* ---- A crash in a batch -------------------------------------------------------------- */

#define RUN_ITEMS 100
#define RUN_CRASH 50

/* The argument of "count_run": where the counters are, which item this is, and whether
 * it crashes its worker. */
typedef struct run_arg {
  pp_shm_ref ref;
  uint32_t index;
  uint32_t crash;
} run_arg;

/* Adds one to the item's counter in the shared segment, then crashes its worker or
 * replies its index. The segment stays mapped from item to item. */
int test_task_count_run(pp_call *call, const void *arg, size_t len) {
  static pp_shm *shm;
  static char name[sizeof(((pp_shm_ref *) 0)->name)];
  run_arg a;
  volatile uint32_t *counts;
  int err;

  if (len != sizeof(a))
    return pp_fail(call, "count_run: expected %u bytes, got %lu", (unsigned) sizeof(a),
                   (unsigned long) len);
  memcpy(&a, arg, sizeof(a));
  if (shm == NULL || strcmp(name, a.ref.name) != 0) {
    pp_shm_close(shm);
    shm = NULL;
    if ((err = pp_shm_open(&a.ref, &shm)) != 0)
      return pp_fail(call, "count_run: pp_shm_open: %s", pp_strerror(err));
    memcpy(name, a.ref.name, sizeof(name));
  }
  if (a.index >= pp_shm_size(shm) / sizeof(uint32_t))
    return pp_fail(call, "count_run: item %u is past the counters", (unsigned) a.index);
  counts = (volatile uint32_t *) pp_shm_data(shm);
  counts[a.index]++;
  if (a.crash) {
    quiet_crash();
    abort();
  }
  return pp_reply(call, &a.index, sizeof(a.index));
}

/* A worker dies in item RUN_CRASH of a batch. Every item before it in the batch had
 * finished: each runs once and succeeds; the one that crashed runs once and fails with
 * PP_EWORKER; the items after it run once, elsewhere. (The worker writes each item's
 * result before the next; the pool fails only the item that was running.) */
void test_map_crash_runs_once(void) {
  run_arg *args = calloc(RUN_ITEMS, sizeof(*args));
  pp_input in[RUN_ITEMS];
  pp_result out[RUN_ITEMS];
  pp_pool_options opts;
  pp_shm *shm = NULL;
  pp_pool *pool;
  uint32_t *counts;
  size_t i;
  int status;

  ASSERT_NOT_NULL(args);
  ASSERT_EQ_INT(pp_shm_create(&shm, RUN_ITEMS * sizeof(uint32_t)), 0);
  counts = (uint32_t *) pp_shm_data(shm);
  for (i = 0; i < RUN_ITEMS; i++) {
    pp_shm_ref_get(shm, &args[i].ref);
    args[i].index = (uint32_t) i;
    args[i].crash = i == RUN_CRASH;
    in[i].data = &args[i];
    in[i].len = sizeof(args[i]);
  }
  /* Two workers: pp_map makes batches of 100 / (2 * 8) = 6 items, so item 50 is the
   * third of the batch [48, 54) and two items of its batch finish before it. */
  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  status = pp_map(pool, "count_run", RUN_ITEMS, in, out);
  ASSERT_EQ_INT(status, PP_EWORKER);
  for (i = 0; i < RUN_ITEMS; i++) {
    if (i == RUN_CRASH)
      continue;
    ASSERT_STATUS(out[i], 0);
    ASSERT_EQ_MEM(out[i].data, out[i].len, &args[i].index, sizeof(args[i].index));
    if (counts[i] != 1)
      fprintf(stderr, "item %u ran %u times\n", (unsigned) i, (unsigned) counts[i]);
    ASSERT_EQ_INT(counts[i], 1);
  }
  ASSERT_STATUS(out[RUN_CRASH], PP_EWORKER);
  ASSERT_EQ_INT(counts[RUN_CRASH], 1);
  for (i = 0; i < RUN_ITEMS; i++)
    pp_result_free(&out[i]);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  free(args);
}

/* ---- The initializer's argument ------------------------------------------------------ */

static int align_inited;

/* The initializer: its argument must be aligned for any type and hold the pattern of
 * its length (init_pattern). */
static unsigned char init_pattern(size_t j, size_t len) {
  return (unsigned char) (j * 7 + len);
}

int test_task_init_aligned(pp_call *call, const void *arg, size_t len) {
  const unsigned char *p = (const unsigned char *) arg;
  size_t j;

  if (len == 0 || arg == NULL)
    return pp_fail(call, "init_aligned: no argument");
  if ((uintptr_t) arg % 16 != 0)
    return pp_fail(call, "init_aligned: the argument at %p is not 16-byte aligned", arg);
  for (j = 0; j < len; j++)
    if (p[j] != init_pattern(j, len))
      return pp_fail(call, "init_aligned: byte %lu of %lu is wrong", (unsigned long) j,
                     (unsigned long) len);
  align_inited++;
  return 0;
}

/* How many times the initializer ran in this worker. */
int test_task_init_aligned_count(pp_call *call, const void *arg, size_t len) {
  uint32_t n = (uint32_t) align_inited;

  (void) arg;
  (void) len;
  return pp_reply(call, &n, sizeof(n));
}

/* The INIT frame puts the argument after the initializer's name: names of every length
 * modulo 16 that matters here (the argument lands at 13 + length). Each is in
 * test_tasks with the same function. */
static const char *const align_names[] = {
  "i", "ia", "ia3", "ia_4", "ia_init", "ia_init8", "ia_init_aligned", "ia_init_aligned6",
};

void test_init_arg_aligned(void) {
  static const size_t sizes[] = { 40, 100000 };
  size_t k, s, j;

  for (k = 0; k < sizeof(align_names) / sizeof(align_names[0]); k++) {
    for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
      unsigned char *initarg = malloc(sizes[s]);
      pp_pool_options opts;
      pp_pool *pool;
      pp_result r;
      uint32_t once = 1;

      ASSERT_NOT_NULL(initarg);
      for (j = 0; j < sizes[s]; j++)
        initarg[j] = init_pattern(j, sizes[s]);
      test_options(&opts);
      opts.workers = 1;
      opts.initializer = align_names[k];
      opts.initarg = initarg;
      opts.initarg_len = sizes[s];
      pool = NEW_POOL(NULL, &opts);
      free(initarg);
      APPLY(pool, "init_aligned_count", NULL, 0, &r);
      if (r.status != 0)
        fprintf(stderr, "initializer '%s', argument of %lu bytes\n", align_names[k],
                (unsigned long) sizes[s]);
      ASSERT_STATUS(r, 0);
      ASSERT_EQ_MEM(r.data, r.len, &once, sizeof(once));
      pp_result_free(&r);
      ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
    }
  }
}

/* ---- Big and malformed tables -------------------------------------------------------- */

/* 65535 tasks: pp_main takes them (in O(n): no timing is asserted, the test's timeout is
 * the bound), and a pool runs the last one and finds an initializer far in. */
void test_big_table(void) {
  char prog[] = "run-tests";
  char *argv[2];
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  uint32_t ran = 1;
  int i;

  argv[0] = prog;
  argv[1] = NULL;
  /* The workers (and the forkserver) read it in main(); this process makes its table
   * the same way, and records it in place of test_tasks. */
  test_setenv(TABLE_ENV, "big");
  /* Every process of a program checks its table: the parent, the forkserver, each
   * spawned worker. Ten checks here stand for them, so that a check that is quadratic
   * (seconds each for this table) cannot fit in the test's timeout. */
  for (i = 0; i < 10; i++)
    ASSERT_EQ_INT(pp_main(1, argv, test_worker_table()), 0);
  test_options(&opts);
  opts.workers = 2;
  opts.initializer = "big_init";
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, "big_last", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, &ran, sizeof(ran));
  pp_result_free(&r);
  APPLY(pool, "big00000", "first", 5, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "first", 5);
  pp_result_free(&r);
  APPLY(pool, "big65533", "end", 3, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "end", 3);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* The index finds every name of a big table by its bytes and length, and nothing else:
 * not a prefix, not a name with more after it, not one with a NUL inside. */
void test_names_index(void) {
  static const char *names[BIG_N];
  const char *dup[] = { "x", "y", "z", "y" };
  /* "big00001" with its fifth byte a NUL. */
  static const char with_nul[8] = { 'b', 'i', 'g', '0', '\0', '0', '0', '1' };
  pp__names ix;
  uint32_t at = 0;
  size_t i, first = 0, second = 0;

  make_big_table(0);
  for (i = 0; i < BIG_N; i++)
    names[i] = big_names[i];
  ASSERT_EQ_INT(pp__names_init(&ix, names, BIG_N, &first, &second), 0);
  for (i = 0; i < BIG_N; i++) {
    ASSERT_EQ_INT(pp__names_find(&ix, names[i], strlen(names[i]), &at), 0);
    ASSERT_EQ_INT(at, i);
  }
  ASSERT_EQ_INT(pp__names_find(&ix, "big0000", 7, &at), PP_ENOTASK);
  ASSERT_EQ_INT(pp__names_find(&ix, "big000001", 9, &at), PP_ENOTASK);
  ASSERT_EQ_INT(pp__names_find(&ix, "big00001", 7, &at), PP_ENOTASK);
  ASSERT_EQ_INT(pp__names_find(&ix, with_nul, sizeof(with_nul), &at), PP_ENOTASK);
  ASSERT_EQ_INT(pp__names_find(&ix, "", 0, &at), PP_ENOTASK);
  pp__names_free(&ix);
  pp__names_free(&ix);

  ASSERT_EQ_INT(pp__names_init(&ix, names, 0, NULL, NULL), 0);
  ASSERT_EQ_INT(pp__names_find(&ix, "big00000", 8, &at), PP_ENOTASK);
  pp__names_free(&ix);

  ASSERT_EQ_INT(pp__names_init(&ix, dup, 4, &first, &second), PP_EINVAL);
  ASSERT_EQ_INT(first, 1);
  ASSERT_EQ_INT(second, 3);
  pp__names_free(&ix);
}

static void check_refused(const pp_task *tasks, const char *reason) {
  char why[512];

  why[0] = '\0';
  ASSERT_EQ_INT(pp__table_check(tasks, NULL, why, sizeof(why)), PP_EINVAL);
  ASSERT_CONTAINS(why, reason);
}

/* A child's stderr, read to its end, and its exit status. */
typedef struct child_out {
  char buf[8192];
  size_t len;
  int64_t status;
} child_out;

static void child_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  child_out *c = (child_out *) h->data;

  (void) suggested;
  *buf = uv_buf_init(c->buf + c->len, (unsigned int) (sizeof(c->buf) - 1 - c->len));
}

static void child_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  child_out *c = (child_out *) s->data;

  (void) buf;
  if (nread > 0)
    c->len += (size_t) nread;
  if (nread < 0 || c->len == sizeof(c->buf) - 1)
    uv_close((uv_handle_t *) s, NULL);
}

static void child_exit(uv_process_t *p, int64_t status, int signal) {
  child_out *c = (child_out *) p->data;

  (void) signal;
  c->status = status;
  uv_close((uv_handle_t *) p, NULL);
}

/* Runs this program with TABLE_ENV=dup: its main() gives pp_main the duplicate table and
 * stops there, whatever the command line says. */
static void run_with_dup_table(child_out *c) {
  char self[4096];
  size_t size = sizeof(self);
  uv_loop_t loop;
  uv_process_t proc;
  uv_pipe_t err_pipe;
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  char *args[3];

  ASSERT_EQ_INT(uv_exepath(self, &size), 0);
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  ASSERT_EQ_INT(uv_pipe_init(&loop, &err_pipe, 0), 0);
  memset(c, 0, sizeof(*c));
  c->status = -1;
  err_pipe.data = c;
  proc.data = c;
  args[0] = self;
  args[1] = (char *) "@exit7";
  args[2] = NULL;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = (uv_stdio_flags) (UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[2].data.stream = (uv_stream_t *) &err_pipe;
  memset(&po, 0, sizeof(po));
  po.file = self;
  po.args = args;
  po.exit_cb = child_exit;
  po.stdio = stdio;
  po.stdio_count = 3;
  test_setenv(TABLE_ENV, "dup");
  ASSERT_EQ_INT(uv_spawn(&loop, &proc, &po), 0);
  test_unsetenv(TABLE_ENV);
  ASSERT_EQ_INT(uv_read_start((uv_stream_t *) &err_pipe, child_alloc, child_read), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  c->buf[c->len] = '\0';
}

/* Each defect of a table is refused with a message that names it; a duplicate is found
 * however far apart its two names are, and both are named; the program's own pp_main
 * says so on stderr and returns PP_EINVAL. */
void test_table_refused(void) {
  char long_name[300];
  char prog[] = "run-tests";
  char *argv[2];
  pp_task no_fn[] = { { "a", big_echo }, { "b", NULL }, { NULL, NULL } };
  pp_task empty[] = { { "a", big_echo }, { "", big_echo }, { NULL, NULL } };
  pp_task too_long[] = { { long_name, big_echo }, { NULL, NULL } };
  pp_task two_a[] = { { "a", big_echo }, { "b", big_echo }, { "a", big_echo },
                     { NULL, NULL } };
  pp_task *too_many;
  size_t n = 0;
  char why[512];
  child_out c;

  memset(long_name, 'n', 256);
  long_name[256] = '\0';
  argv[0] = prog;
  argv[1] = NULL;
  check_refused(NULL, "no task table");
  check_refused(no_fn, "task 1 ('b') has no function");
  check_refused(empty, "task 1's name is empty");
  check_refused(too_long, "task 0's name is longer than 255 bytes");
  check_refused(two_a, "tasks 0 and 2 are both named 'a'");
  check_refused(make_big_table(1), "tasks 3 and 65000 are both named 'big00003'");
  ASSERT_EQ_INT(pp_main(1, argv, make_big_table(1)), PP_EINVAL);

  ASSERT_EQ_INT(pp__table_check(make_big_table(0), &n, why, sizeof(why)), 0);
  ASSERT_EQ_INT(n, BIG_N);
  too_many = malloc((BIG_N + 2) * sizeof(*too_many));
  ASSERT_NOT_NULL(too_many);
  memcpy(too_many, big_table, BIG_N * sizeof(*too_many));
  too_many[BIG_N].name = "one_more";
  too_many[BIG_N].fn = big_echo;
  too_many[BIG_N + 1].name = NULL;
  too_many[BIG_N + 1].fn = NULL;
  check_refused(too_many, "more than 65535 tasks");
  free(too_many);
  ASSERT_EQ_INT(pp__table_check(test_tasks, NULL, why, sizeof(why)), 0);

  run_with_dup_table(&c);
  ASSERT_EQ_INT(c.status, 1);
  ASSERT_CONTAINS(c.buf, "pp_main was given a malformed task table: tasks 3 and 65000 are "
                         "both named 'big00003'");
}

/* A worker whose program gives pp_main a malformed table tells the pool why: pools
 * fail to start with PP_ESPAWN and that reason, not "did not reach pp_main". Spawn only:
 * a forked worker has its parent's table, and a forkserver's own start is another
 * matter. */
void test_worker_bad_table(void) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;

  test_unsetenv("PROCPOOL_START_METHOD");
  pp_pool_options_init(&opts);
  opts.start_method = PP_START_SPAWN;
  opts.workers = 1;
  test_setenv(TABLE_ENV, "dup");
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_STATUS(r, PP_ESPAWN);
  ASSERT_CONTAINS(r.message, "tasks 3 and 65000 are both named 'big00003'");
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  test_unsetenv(TABLE_ENV);
}
