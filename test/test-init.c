/* What a worker knows: the initializer's argument under every method, a fresh worker per
 * task with max_tasks_per_worker, and (spawn) none of the parent's later changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* Every one of n "init_get" calls returns exactly the initarg. */
static void check_initarg(pp_pool *pool, const void *initarg, size_t len, size_t n) {
  size_t i;
  pp_result r;

  for (i = 0; i < n; i++) {
    APPLY(pool, "init_get", NULL, 0, &r);
    ASSERT_STATUS(r, 0);
    ASSERT_EQ_MEM(r.data, r.len, initarg, len);
    pp_result_free(&r);
  }
}

void test_initializer(void) {
  pp_pool_options opts;
  pp_pool *pool;
  unsigned char expected[300], given[300];
  size_t i;

  /* Binary, with NUL bytes: the argument is bytes, not a string. */
  for (i = 0; i < sizeof(expected); i++)
    expected[i] = (unsigned char) (i * 7u);
  memcpy(given, expected, sizeof(given));
  test_options(&opts);
  opts.workers = 2;
  opts.initializer = "init_store";
  opts.initarg = given;
  opts.initarg_len = sizeof(given);
  pool = NEW_POOL(NULL, &opts);
  check_initarg(pool, expected, sizeof(expected), 6);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  /* Every replacement worker runs the initializer too, with pp_pool_new's copy of the
   * argument: the caller's buffer may change or go. */
  opts.workers = 1;
  opts.max_tasks_per_worker = 1;
  pool = NEW_POOL(NULL, &opts);
  memset(given, 0xEE, sizeof(given));
  check_initarg(pool, expected, sizeof(expected), 4);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  /* No initarg: the initializer runs with an empty argument. */
  opts.max_tasks_per_worker = 0;
  opts.initarg = NULL;
  opts.initarg_len = 0;
  pool = NEW_POOL(NULL, &opts);
  check_initarg(pool, NULL, 0, 1);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_init_fails(void) {
  pp_pool_options opts;
  pp_pool *pool;
  test_rec recs[3];
  pp_result r;
  size_t i;

  test_options(&opts);
  opts.workers = 1;
  opts.initializer = "init_fail";
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 3; i++)
    ASSERT_EQ_INT(test_submit(pool, "echo", "q", 1, &recs[i]), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  for (i = 0; i < 3; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, PP_EINIT);
    ASSERT_CONTAINS(recs[i].res.message, "initializer refuses on purpose");
    pp_result_free(&recs[i].res);
  }
  ASSERT_NOT_NULL(pp_pool_error(pool));
  ASSERT_CONTAINS(pp_pool_error(pool), "initializer refuses on purpose");
  /* The pool gave up: new work fails at once, with the same reason. */
  ASSERT_EQ_INT(test_submit(pool, "echo", "q", 1, &recs[0]), PP_EINIT);
  APPLY(pool, "echo", "q", 1, &r);
  ASSERT_STATUS(r, PP_EINIT);
  ASSERT_CONTAINS(r.message, "initializer refuses on purpose");
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_init_unknown(void) {
  pp_pool_options opts;
  pp_pool *pool = NULL;
  int err;

  test_options(&opts);
  opts.workers = 1;
  opts.initializer = "no_such_initializer";
  err = pp_pool_new(&pool, NULL, &opts);
  if (err == PP_ENOTSUP)
    test_skip("the start method is not available here");
  ASSERT_EQ_INT(err, PP_ENOTASK);
  ASSERT_NULL(pool);
}

#define MAX_TASKS_N 8

void test_max_tasks(void) {
  pp_pool_options opts;
  pp_pool *pool;
  char args[MAX_TASKS_N][8];
  pp_input in[MAX_TASKS_N];
  pp_result out[MAX_TASKS_N];
  uint64_t pids[MAX_TASKS_N];
  size_t i;

  test_options(&opts);
  opts.workers = 2;
  opts.max_tasks_per_worker = 1;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < MAX_TASKS_N; i++) {
    snprintf(args[i], sizeof(args[i]), "arg%u", (unsigned) i);
    in[i].data = args[i];
    in[i].len = strlen(args[i]);
  }
  ASSERT_EQ_INT(pp_map(pool, "pid_echo", MAX_TASKS_N, in, out), 0);
  for (i = 0; i < MAX_TASKS_N; i++) {
    ASSERT_STATUS(out[i], 0);
    ASSERT_EQ_INT(out[i].len, sizeof(pids[i]) + in[i].len);
    memcpy(&pids[i], out[i].data, sizeof(pids[i]));
    ASSERT_EQ_MEM((char *) out[i].data + sizeof(pids[i]), in[i].len, args[i], in[i].len);
    pp_result_free(&out[i]);
  }
  ASSERT_DISTINCT(pids, MAX_TASKS_N);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_spawn_global(void) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int value;

  pp_pool_options_init(&opts);
  opts.start_method = PP_START_SPAWN;
  opts.workers = 1;
  test_global = TEST_GLOBAL_INITIAL + 41;
  pool = NEW_POOL(NULL, &opts);
  if (pp_pool_start_method(pool) != PP_START_SPAWN) {
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
    test_skip("PROCPOOL_START_METHOD chose another method than spawn");
  }
  APPLY(pool, "global", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(value));
  memcpy(&value, r.data, sizeof(value));
  /* A spawned worker is the program afresh: the parent's change is not there. */
  ASSERT_EQ_INT(value, TEST_GLOBAL_INITIAL);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}
