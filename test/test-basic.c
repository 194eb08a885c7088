/* Round trips: arguments in, results out, byte-exact and in order, under every method. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static pp_pool *private_pool(unsigned workers) {
  pp_pool_options opts;

  test_options(&opts);
  opts.workers = workers;
  return NEW_POOL(NULL, &opts);
}

void test_roundtrip(void) {
  pp_pool *pool = private_pool(2);
  pp_result r;

  ASSERT_EQ_INT(pp_pool_workers(pool), 2);
  ASSERT_NULL(pp_pool_error(pool));
  APPLY(pool, "echo", "hello", 5, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "hello", 5);
  ASSERT_NE_U64(r.id, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_empty(void) {
  pp_pool *pool = private_pool(1);
  pp_result r;

  APPLY(pool, "echo", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, 0);
  pp_result_free(&r);
  /* A pointer with length 0 is an empty argument too: the task must get NULL. */
  APPLY(pool, "echo", "unused", 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, 0);
  pp_result_free(&r);
  APPLY(pool, "nothing", "abc", 3, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_big_arg(void) {
  const size_t len = (size_t) 64 << 20;
  unsigned char *arg = (unsigned char *) malloc(len);
  pp_pool *pool = private_pool(1);
  uint32_t x = 2463534242u;
  pp_result r;
  size_t i;

  ASSERT_NOT_NULL(arg);
  /* xorshift32: no runs or period that a bug shifting or repeating blocks could match. */
  for (i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    arg[i] = (unsigned char) x;
  }
  APPLY(pool, "echo", arg, len, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, arg, len);
  pp_result_free(&r);
  /* The frames after a large one must still be read from the right place. */
  APPLY(pool, "echo", "after", 5, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "after", 5);
  pp_result_free(&r);
  free(arg);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

#define MAP_N 1000

void test_map_order(void) {
  pp_pool *pool = private_pool(2);
  uint32_t *xs = (uint32_t *) malloc(MAP_N * sizeof(*xs));
  pp_input *in = (pp_input *) malloc(MAP_N * sizeof(*in));
  pp_result *out = (pp_result *) malloc(MAP_N * sizeof(*out));
  uint64_t *ids = (uint64_t *) malloc(MAP_N * sizeof(*ids));
  uint64_t y;
  size_t i;

  ASSERT_TRUE(xs != NULL && in != NULL && out != NULL && ids != NULL);
  for (i = 0; i < MAP_N; i++) {
    xs[i] = (uint32_t) (i * 7919u + 13u);
    in[i].data = &xs[i];
    in[i].len = sizeof(xs[i]);
  }
  ASSERT_EQ_INT(pp_map(pool, "mapf", MAP_N, in, out), 0);
  for (i = 0; i < MAP_N; i++) {
    ASSERT_STATUS(out[i], 0);
    ASSERT_EQ_INT(out[i].len, sizeof(y));
    memcpy(&y, out[i].data, sizeof(y));
    ASSERT_EQ_U64(y, test_mapf(xs[i]));
    ASSERT_NE_U64(out[i].id, 0);
    ids[i] = out[i].id;
    pp_result_free(&out[i]);
  }
  ASSERT_DISTINCT(ids, MAP_N);
  ASSERT_EQ_INT(pp_map(pool, "mapf", 0, NULL, NULL), 0);
  free(ids);
  free(out);
  free(in);
  free(xs);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Maps "act" over one item per character of plan (k: succeeds, f: fails, x: its worker
 * exits with code 3) and checks every item's result and pp_map's return. */
static void map_plan(pp_pool *pool, const char *plan, int want) {
  size_t n = strlen(plan), i;
  char(*args)[16] = (char(*)[16]) malloc(n * sizeof(*args));
  pp_input *in = (pp_input *) malloc(n * sizeof(*in));
  pp_result *out = (pp_result *) malloc(n * sizeof(*out));
  char text[32];

  ASSERT_TRUE(args != NULL && in != NULL && out != NULL);
  for (i = 0; i < n; i++) {
    snprintf(args[i], sizeof(args[i]), "%citem%02u", plan[i], (unsigned) i);
    in[i].data = args[i];
    in[i].len = strlen(args[i]);
  }
  ASSERT_EQ_INT(pp_map(pool, "act", n, in, out), want);
  for (i = 0; i < n; i++) {
    snprintf(text, sizeof(text), "item%02u", (unsigned) i);
    ASSERT_NE_U64(out[i].id, 0);
    if (plan[i] == 'k') {
      ASSERT_STATUS(out[i], 0);
      ASSERT_EQ_MEM(out[i].data, out[i].len, text, strlen(text));
    } else if (plan[i] == 'f') {
      ASSERT_STATUS(out[i], PP_ETASK);
      ASSERT_CONTAINS(out[i].message, text);
    } else {
      ASSERT_STATUS(out[i], PP_EWORKER);
      ASSERT_CONTAINS(out[i].message, "code 3");
    }
    pp_result_free(&out[i]);
  }
  free(out);
  free(in);
  free(args);
}

void test_map_failures(void) {
  pp_pool *pool = private_pool(2);

  /* The return is the status of the lowest failing index, not of the first to fail in
   * time nor the most serious. */
  map_plan(pool, "kkkkkxkkkkkfkkkxkkkk", PP_EWORKER);
  map_plan(pool, "kkkfkkkkxkkkfk", PP_ETASK);
  map_plan(pool, "kkkkkkkkk", 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

#define SUBMIT_N 100

void test_submit_callbacks(void) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  test_rec recs[SUBMIT_N];
  uint32_t xs[SUBMIT_N];
  uint64_t ids[SUBMIT_N], y;
  int closes = 0;
  size_t i;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(&loop, &opts);
  for (i = 0; i < SUBMIT_N; i++) {
    xs[i] = (uint32_t) (i * 31u + 1u);
    ASSERT_EQ_INT(test_submit(pool, "mapf", &xs[i], sizeof(xs[i]), &recs[i]), 0);
  }
  /* Results come on the loop, and the loop has not run yet. */
  for (i = 0; i < SUBMIT_N; i++)
    ASSERT_EQ_INT(recs[i].calls, 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  for (i = 0; i < SUBMIT_N; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    ASSERT_EQ_INT(recs[i].res.len, sizeof(y));
    memcpy(&y, recs[i].res.data, sizeof(y));
    ASSERT_EQ_U64(y, test_mapf(xs[i]));
    ids[i] = recs[i].id;
    pp_result_free(&recs[i].res);
  }
  ASSERT_DISTINCT(ids, SUBMIT_N);
  /* Nothing pending: returns at once. */
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}

void test_unknown_task(void) {
  pp_pool *pool = private_pool(1);
  char longname[300];
  pp_input in[3] = { { "a", 1 }, { "b", 1 }, { "c", 1 } };
  pp_result out[3], r;
  test_rec rec;
  size_t i;

  ASSERT_EQ_INT(test_submit(pool, "no_such_task", NULL, 0, &rec), PP_ENOTASK);
  ASSERT_EQ_INT(test_submit(pool, "", NULL, 0, &rec), PP_ENOTASK);
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  ASSERT_EQ_INT(test_submit(pool, longname, NULL, 0, &rec), PP_ENOTASK);
  APPLY(pool, "no_such_task", "x", 1, &r);
  ASSERT_STATUS(r, PP_ENOTASK);
  ASSERT_CONTAINS(r.message, "no_such_task");
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_map(pool, "no_such_task", 3, in, out), PP_ENOTASK);
  for (i = 0; i < 3; i++) {
    ASSERT_STATUS(out[i], PP_ENOTASK);
    pp_result_free(&out[i]);
  }
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(rec.calls, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_task_fail(void) {
  pp_pool *pool = private_pool(1);
  pp_result r;

  APPLY(pool, "failing_task", "xyzzy", 5, &r);
  ASSERT_STATUS(r, PP_ETASK);
  ASSERT_CONTAINS(r.message, "deliberate failure: xyzzy");
  ASSERT_CONTAINS(r.message, "failing_task");
  pp_result_free(&r);
  /* A failure wins over a reply made before it. */
  APPLY(pool, "fail_after_reply", NULL, 0, &r);
  ASSERT_STATUS(r, PP_ETASK);
  ASSERT_CONTAINS(r.message, "failure after a reply");
  pp_result_free(&r);
  /* A later reply replaces an earlier one. */
  APPLY(pool, "reply_twice", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "second", 6);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* The header: pp_fail's message is truncated to 4000 bytes. */
void test_fail_truncated(void) {
  pp_pool *pool = private_pool(1);
  uint32_t asked = 6000;
  size_t run = 0, longest = 0;
  const char *p;
  pp_result r;

  APPLY(pool, "long_failure", &asked, sizeof(asked), &r);
  ASSERT_STATUS(r, PP_ETASK);
  for (p = r.message; *p != '\0'; p++) {
    run = *p == 'm' ? run + 1 : 0;
    if (run > longest)
      longest = run;
  }
  ASSERT_LE_INT(1000, longest);
  ASSERT_LE_INT(longest, 4000);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_task_nonzero(void) {
  pp_pool *pool = private_pool(1);
  pp_result r;

  APPLY(pool, "return_seven", NULL, 0, &r);
  ASSERT_STATUS(r, PP_ETASK);
  ASSERT_CONTAINS(r.message, "return_seven");
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_worker_api_misuse(void) {
  pp_pool *pool = private_pool(1);
  pp_result r;

  APPLY(pool, "api_misuse", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "ok", 2);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_submit_in_worker(void) {
  pp_pool *pool = private_pool(1);
  pp_result r;
  int errs[2];

  APPLY(pool, "nested_submit", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(errs));
  memcpy(errs, r.data, sizeof(errs));
  pp_result_free(&r);
  /* pp_submit refuses to run in a worker; refusing the pool itself is as good. */
  if (errs[0] != 0)
    ASSERT_EQ_INT(errs[0], PP_EINVAL);
  else
    ASSERT_EQ_INT(errs[1], PP_EINVAL);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

#define E2BIG_MAX 64

void test_e2big_arg(void) {
  pp_pool_options opts;
  pp_pool *pool;
  unsigned char buf[E2BIG_MAX + 1];
  pp_input in[3];
  pp_result out[3], r;
  test_rec rec;
  size_t i;

  test_options(&opts);
  opts.workers = 1;
  opts.max_message_bytes = E2BIG_MAX;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < sizeof(buf); i++)
    buf[i] = (unsigned char) (i * 37u + 1u);
  ASSERT_EQ_INT(test_submit(pool, "echo", buf, E2BIG_MAX + 1, &rec), PP_E2BIG);
  APPLY(pool, "echo", buf, E2BIG_MAX + 1, &r);
  ASSERT_STATUS(r, PP_E2BIG);
  pp_result_free(&r);
  APPLY(pool, "echo", buf, E2BIG_MAX, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, buf, E2BIG_MAX);
  pp_result_free(&r);
  for (i = 0; i < 3; i++) {
    in[i].data = buf;
    in[i].len = i == 1 ? E2BIG_MAX + 1 : E2BIG_MAX;
  }
  ASSERT_EQ_INT(pp_map(pool, "echo", 3, in, out), PP_E2BIG);
  ASSERT_STATUS(out[0], 0);
  ASSERT_STATUS(out[1], PP_E2BIG);
  ASSERT_STATUS(out[2], 0);
  for (i = 0; i < 3; i++)
    pp_result_free(&out[i]);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(rec.calls, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_e2big_result(void) {
  pp_pool_options opts;
  pp_pool *pool;
  uint64_t pid, n;
  uint32_t message_len = E2BIG_MAX * 3;
  pp_result r;

  test_options(&opts);
  opts.workers = 1;
  opts.max_message_bytes = E2BIG_MAX;
  pool = NEW_POOL(NULL, &opts);
  pid = test_worker_pid(pool);
  n = E2BIG_MAX + 1;
  APPLY(pool, "reply_size", &n, sizeof(n), &r);
  ASSERT_STATUS(r, PP_E2BIG);
  pp_result_free(&r);
  /* The header: an oversize result fails its task and leaves the worker serving. */
  ASSERT_EQ_U64(test_worker_pid(pool), pid);
  n = E2BIG_MAX;
  APPLY(pool, "reply_size", &n, sizeof(n), &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, E2BIG_MAX);
  pp_result_free(&r);
  /* An error message is not a result: one longer than max_message_bytes still arrives
   * whole. */
  APPLY(pool, "long_failure", &message_len, sizeof(message_len), &r);
  ASSERT_STATUS(r, PP_ETASK);
  ASSERT_LE_INT(message_len, strlen(r.message));
  pp_result_free(&r);
  ASSERT_EQ_U64(test_worker_pid(pool), pid);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* n small tasks at once on a caller's loop: each gets exactly one, correct result. */
static void stress(size_t n, unsigned max_tasks) {
  uv_loop_t loop;
  pp_pool_options opts;
  pp_pool *pool;
  test_rec *recs = (test_rec *) malloc(n * sizeof(*recs));
  uint32_t *xs = (uint32_t *) malloc(n * sizeof(*xs));
  uint64_t *ids = (uint64_t *) malloc(n * sizeof(*ids));
  uint64_t y;
  int closes = 0;
  size_t i;

  ASSERT_TRUE(recs != NULL && xs != NULL && ids != NULL);
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 2;
  opts.max_tasks_per_worker = max_tasks;
  pool = NEW_POOL(&loop, &opts);
  for (i = 0; i < n; i++) {
    xs[i] = (uint32_t) (i ^ 0x5a5a5a5au);
    ASSERT_EQ_INT(test_submit(pool, "mapf", &xs[i], sizeof(xs[i]), &recs[i]), 0);
  }
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  for (i = 0; i < n; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    ASSERT_EQ_INT(recs[i].res.len, sizeof(y));
    memcpy(&y, recs[i].res.data, sizeof(y));
    ASSERT_EQ_U64(y, test_mapf(xs[i]));
    ids[i] = recs[i].id;
    pp_result_free(&recs[i].res);
  }
  ASSERT_DISTINCT(ids, n);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  free(ids);
  free(xs);
  free(recs);
}

void test_stress(void) { stress(2000, 0); }

/* A worker retired every 3 tasks, 100 times over, while tasks keep coming. */
void test_recycle_stress(void) { stress(300, 3); }

#define RUNS_N 40

/* Every task runs exactly once, in one worker, even while other workers die (every 7th
 * task ends its worker): each run leaves a file named after the task and the worker, and
 * the parent counts them. */
void test_runs_once(void) {
  pp_pool *pool = private_pool(4);
  char dir[1024], prefix[64], (*args)[1100] = NULL;
  size_t size = sizeof(dir), i, plen;
  pp_input in[RUNS_N];
  pp_result out[RUNS_N];
  int runs[RUNS_N], found = 0, want;
  char what[32];
  uv_fs_t req;
  uv_dirent_t ent;

  args = (char(*)[1100]) malloc(RUNS_N * sizeof(*args));
  ASSERT_NOT_NULL(args);
  ASSERT_EQ_INT(uv_os_tmpdir(dir, &size), 0);
  snprintf(prefix, sizeof(prefix), "procpool-test-%ld-run", (long) uv_os_getpid());
  plen = strlen(prefix);
  for (i = 0; i < RUNS_N; i++) {
    snprintf(args[i], sizeof(args[i]), "%c%s/%s%u", i % 7 == 3 ? 'x' : 'm', dir, prefix,
             (unsigned) i);
    in[i].data = args[i];
    in[i].len = strlen(args[i]);
    runs[i] = 0;
  }
  pp_map(pool, "mark_run", RUNS_N, in, out);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  ASSERT_LE_INT(0, uv_fs_scandir(NULL, &req, dir, 0, NULL));
  while (uv_fs_scandir_next(&req, &ent) == 0) {
    char *end;
    unsigned long k;
    char path[1200];

    if (strncmp(ent.name, prefix, plen) != 0)
      continue;
    k = strtoul(ent.name + plen, &end, 10);
    ASSERT_TRUE(*end == '.' && k < RUNS_N);
    runs[k]++;
    found++;
    snprintf(path, sizeof(path), "%s/%s", dir, ent.name);
    remove(path);
  }
  uv_fs_req_cleanup(&req);
  for (i = 0; i < RUNS_N; i++) {
    snprintf(what, sizeof(what), "runs of task %u (%c)", (unsigned) i, args[i][0]);
    ASSERT_EQ_INT_MSG(runs[i], 1, what);
  }
  ASSERT_EQ_INT(found, RUNS_N);
  for (i = 0; i < RUNS_N; i++) {
    want = args[i][0] == 'x' ? PP_EWORKER : 0;
    ASSERT_STATUS(out[i], want);
    pp_result_free(&out[i]);
  }
  free(args);
}

void test_workers_64(void) {
  pp_pool *pool = private_pool(64);
  pp_input in[256];
  pp_result out[256];
  size_t i;

  ASSERT_EQ_INT(pp_pool_workers(pool), 64);
  for (i = 0; i < 256; i++) {
    in[i].data = NULL;
    in[i].len = 0;
  }
  ASSERT_EQ_INT(pp_map(pool, "pid", 256, in, out), 0);
  for (i = 0; i < 256; i++) {
    ASSERT_STATUS(out[i], 0);
    pp_result_free(&out[i]);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_worker_executable(void) {
  pp_pool_options opts;
  pp_pool *pool;
  char path[4096];
  size_t size = sizeof(path);
  pp_result r;

  ASSERT_EQ_INT(uv_exepath(path, &size), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.worker_executable = path;
  pool = NEW_POOL(NULL, &opts);
  /* Copied by pp_pool_new: the pool must not read this buffer again. */
  memset(path, 0, sizeof(path));
  APPLY(pool, "echo", "exe", 3, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, "exe", 3);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}
