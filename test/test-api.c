/* The contract of the header that holds whatever the method: error codes and names,
 * option checks, NULL arguments, PROCPOOL_START_METHOD, SIGPIPE. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* These tests choose the method themselves. */
static void no_method_override(void) { test_unsetenv("PROCPOOL_START_METHOD"); }

/* ---- Errors ------------------------------------------------------------------------ */

typedef struct code_name {
  int code;
  const char *name;
} code_name;

#define CODE(c) { c, #c }
static const code_name pp_codes[] = {
  CODE(PP_EINVAL), CODE(PP_ENOMEM), CODE(PP_ENOTSUP), CODE(PP_ENOTASK),
  CODE(PP_ETASK), CODE(PP_EWORKER), CODE(PP_ETIMEDOUT), CODE(PP_ECANCELED),
  CODE(PP_ECLOSED), CODE(PP_EPROTO), CODE(PP_E2BIG), CODE(PP_EINIT),
  CODE(PP_ESPAWN), CODE(PP_ENOENT),
};
#undef CODE

void test_errors(void) {
  /* Below libuv's range and around procpool's, and positive ones. */
  static const int unknown[] = { 1, 12345, INT_MAX, -5000, -30000, -30015, -99999,
                                 INT_MIN };
  size_t n = sizeof(pp_codes) / sizeof(pp_codes[0]), i, j;
  char buf[64];

  for (i = 0; i < n; i++) {
    ASSERT_EQ_STR(pp_errname(pp_codes[i].code), pp_codes[i].name);
    ASSERT_NOT_NULL(pp_strerror(pp_codes[i].code));
    ASSERT_TRUE(pp_strerror(pp_codes[i].code)[0] != '\0');
    ASSERT_TRUE(strcmp(pp_strerror(pp_codes[i].code), "unknown error") != 0);
    /* The header: never a libuv code. */
    ASSERT_TRUE(pp_codes[i].code < -4096);
    uv_err_name_r(pp_codes[i].code, buf, sizeof(buf));
    ASSERT_TRUE(strncmp(buf, "Unknown", 7) == 0);
    for (j = 0; j < i; j++) {
      const char *other = pp_strerror(pp_codes[j].code);
      ASSERT_NE_INT(pp_codes[i].code, pp_codes[j].code);
      ASSERT_TRUE(strcmp(pp_strerror(pp_codes[i].code), other) != 0);
    }
  }
  ASSERT_EQ_STR(pp_errname(0), "OK");
  ASSERT_NOT_NULL(pp_strerror(0));
  ASSERT_TRUE(strcmp(pp_strerror(0), "unknown error") != 0);
  ASSERT_EQ_STR(pp_errname(UV_ENOENT), "ENOENT");
  ASSERT_EQ_STR(pp_strerror(UV_ENOENT), uv_strerror(UV_ENOENT));
  ASSERT_EQ_STR(pp_errname(UV_EOF), "EOF");
  for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    ASSERT_EQ_STR(pp_errname(unknown[i]), "UNKNOWN");
    ASSERT_EQ_STR(pp_strerror(unknown[i]), "unknown error");
  }
}

void test_method_names(void) {
  ASSERT_EQ_STR(pp_start_method_name(PP_START_DEFAULT), "default");
  ASSERT_EQ_STR(pp_start_method_name(PP_START_FORK), "fork");
  ASSERT_EQ_STR(pp_start_method_name(PP_START_SPAWN), "spawn");
  ASSERT_EQ_STR(pp_start_method_name(PP_START_FORKSERVER), "forkserver");
  ASSERT_EQ_STR(pp_start_method_name((pp_start_method) 99), "unknown");
  ASSERT_EQ_STR(pp_start_method_name((pp_start_method) -1), "unknown");
}

void test_result_free(void) {
  pp_result r;

  pp_result_free(NULL);
  memset(&r, 0, sizeof(r));
  pp_result_free(&r);
  r.id = 7;
  r.status = PP_ETASK;
  r.data = malloc(10);
  r.len = 10;
  r.message = (char *) malloc(10);
  ASSERT_TRUE(r.data != NULL && r.message != NULL);
  pp_result_free(&r);
  ASSERT_NULL(r.data);
  ASSERT_NULL(r.message);
  ASSERT_EQ_INT(r.len, 0);
  ASSERT_EQ_INT(r.status, 0);
  ASSERT_EQ_U64(r.id, 0);
  /* Already freed. */
  pp_result_free(&r);
}

/* ---- Options ----------------------------------------------------------------------- */

void test_defaults(void) {
  pp_pool_options opts, zero;
  pp_pool *pool = NULL;
  pp_result r;

  no_method_override();
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_workers(pool), uv_available_parallelism());
  ASSERT_NE_INT(pp_pool_start_method(pool), PP_START_DEFAULT);
  APPLY(pool, "echo", "d", 1, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  /* "All zero", whatever fields a later version adds. */
  memset(&zero, 0, sizeof(zero));
  memset(&opts, 0x5A, sizeof(opts));
  pp_pool_options_init(&opts);
  ASSERT_TRUE(memcmp(&opts, &zero, sizeof(opts)) == 0);
}

/* pp_pool_new refuses opts with PP_EINVAL and leaves *pool NULL. */
#define ASSERT_REFUSED(opts) assert_refused(__FILE__, __LINE__, (opts))
static void assert_refused(const char *file, int line, const pp_pool_options *opts) {
  int not_a_pool;
  pp_pool *pool = (pp_pool *) &not_a_pool;  /* anything but NULL, to see it reset */

  test_check_int(file, line, "pp_pool_new(&pool, NULL, opts) == PP_EINVAL",
                 pp_pool_new(&pool, NULL, opts), PP_EINVAL, 1, NULL);
  test_check_ptr(file, line, "pool == NULL", (uintptr_t) pool, 1);
}

void test_options_invalid(void) {
  pp_pool_options opts;

  no_method_override();
  ASSERT_EQ_INT(pp_pool_new(NULL, NULL, NULL), PP_EINVAL);
  pp_pool_options_init(&opts);
  opts.start_method = (pp_start_method) 99;
  ASSERT_REFUSED(&opts);
  opts.start_method = (pp_start_method) -1;
  ASSERT_REFUSED(&opts);
  pp_pool_options_init(&opts);
  opts.workers = 4097;
  ASSERT_REFUSED(&opts);
  opts.workers = UINT_MAX;
  ASSERT_REFUSED(&opts);
  pp_pool_options_init(&opts);
  opts.initializer = "init_store";
  opts.initarg_len = 1;
  ASSERT_REFUSED(&opts);
  pp_pool_options_init(&opts);
  /* Over 4 GiB - 1 MiB, whatever the width of size_t. */
  opts.max_message_bytes = (size_t) -1;
  ASSERT_REFUSED(&opts);
  pp_pool_options_init(&opts);
  opts.pipeline_depth = 1025;
  ASSERT_REFUSED(&opts);
}

void test_initarg_too_big(void) {
  pp_pool_options opts;
  pp_pool *pool = NULL;
  char initarg[65];

  no_method_override();
  memset(initarg, 'i', sizeof(initarg));
  pp_pool_options_init(&opts);
  opts.initializer = "init_store";
  opts.initarg = initarg;
  opts.initarg_len = sizeof(initarg);
  opts.max_message_bytes = 64;
  ASSERT_EQ_INT(pp_pool_new(&pool, NULL, &opts), PP_E2BIG);
  ASSERT_NULL(pool);
}

/* ---- NULL arguments ---------------------------------------------------------------- */

void test_api_null(void) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_input in[2] = { { "a", 1 }, { "b", 1 } };
  pp_result out[2], r, sentinel;
  test_rec rec;

  no_method_override();
  pp_pool_options_init(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);

  ASSERT_EQ_INT(test_submit(NULL, "echo", NULL, 0, &rec), PP_EINVAL);
  ASSERT_EQ_INT(test_submit(pool, NULL, NULL, 0, &rec), PP_EINVAL);
  ASSERT_EQ_INT(test_submit(pool, "echo", NULL, 3, &rec), PP_EINVAL);
  /* No callback, no id: allowed. */
  ASSERT_EQ_INT(pp_submit(pool, "echo", "n", 1, NULL, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);

  /* "out untouched" when pool or out is NULL. */
  memset(&sentinel, 0xA5, sizeof(sentinel));
  memcpy(&r, &sentinel, sizeof(r));
  ASSERT_EQ_INT(pp_apply(NULL, "echo", NULL, 0, &r), PP_EINVAL);
  ASSERT_TRUE(memcmp(&r, &sentinel, sizeof(r)) == 0);
  ASSERT_EQ_INT(pp_apply(pool, "echo", NULL, 0, NULL), PP_EINVAL);
  /* Otherwise a submit error, and the message says why. */
  APPLY(pool, NULL, NULL, 0, &r);
  ASSERT_STATUS(r, PP_EINVAL);
  pp_result_free(&r);
  APPLY(pool, "echo", NULL, 3, &r);
  ASSERT_STATUS(r, PP_EINVAL);
  pp_result_free(&r);

  memcpy(&out[0], &sentinel, sizeof(out[0]));
  memcpy(&out[1], &sentinel, sizeof(out[1]));
  ASSERT_EQ_INT(pp_map(NULL, "echo", 2, in, out), PP_EINVAL);
  ASSERT_EQ_INT(pp_map(pool, NULL, 2, in, out), PP_EINVAL);
  ASSERT_EQ_INT(pp_map(pool, "echo", 2, NULL, out), PP_EINVAL);
  ASSERT_TRUE(memcmp(&out[0], &sentinel, sizeof(out[0])) == 0);
  ASSERT_TRUE(memcmp(&out[1], &sentinel, sizeof(out[1])) == 0);
  ASSERT_EQ_INT(pp_map(pool, "echo", 2, in, NULL), PP_EINVAL);
  ASSERT_EQ_INT(pp_map(pool, "echo", 0, NULL, NULL), 0);

  ASSERT_EQ_INT(pp_cancel(NULL, 1), PP_EINVAL);
  ASSERT_EQ_INT(pp_pool_wait(NULL), PP_EINVAL);
  ASSERT_EQ_INT(pp_pool_close(NULL, NULL, NULL), PP_EINVAL);
  ASSERT_EQ_INT(pp_pool_terminate(NULL, NULL, NULL), PP_EINVAL);
  ASSERT_EQ_INT(rec.calls, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

static int noop_task(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  return 0;
}

/* pp_main refuses malformed tables, and keeps the table it recorded first. */
void test_pp_main_invalid(void) {
  char long_name[257];
  char prog[] = "run-tests";
  char *argv[2];
  pp_task no_fn[] = { { "a", NULL }, { NULL, NULL } };
  pp_task duplicate[] = { { "a", noop_task }, { "a", noop_task }, { NULL, NULL } };
  pp_task empty_name[] = { { "", noop_task }, { NULL, NULL } };
  pp_task too_long[] = { { long_name, noop_task }, { NULL, NULL } };
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;

  no_method_override();
  memset(long_name, 'n', sizeof(long_name) - 1);
  long_name[sizeof(long_name) - 1] = '\0';
  argv[0] = prog;
  argv[1] = NULL;
  ASSERT_EQ_INT(pp_main(1, argv, NULL), PP_EINVAL);
  ASSERT_EQ_INT(pp_main(1, argv, no_fn), PP_EINVAL);
  ASSERT_EQ_INT(pp_main(1, argv, duplicate), PP_EINVAL);
  ASSERT_EQ_INT(pp_main(1, argv, empty_name), PP_EINVAL);
  ASSERT_EQ_INT(pp_main(1, argv, too_long), PP_EINVAL);

  pp_pool_options_init(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, "echo", "t", 1, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- PROCPOOL_START_METHOD --------------------------------------------------------- */

/* pp_pool_new with method m; 0 and the method m, or PP_ENOTSUP (m is not here). */
static void new_either(pp_start_method m, pp_start_method reported) {
  pp_pool_options opts;
  pp_pool *pool = NULL;
  pp_result r;
  int err;

  pp_pool_options_init(&opts);
  opts.workers = 1;
  opts.start_method = m;
  err = pp_pool_new(&pool, NULL, &opts);
  if (err == PP_ENOTSUP) {
    ASSERT_NULL(pool);
    return;
  }
  ASSERT_EQ_INT(err, 0);
  ASSERT_EQ_INT(pp_pool_start_method(pool), reported);
  APPLY(pool, "echo", "m", 1, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_start_method_env(void) {
  pp_pool_options opts;
  pp_pool *pool;

  test_setenv("PROCPOOL_START_METHOD", "spawn");
  pp_pool_options_init(&opts);
  opts.workers = 1;
  opts.start_method = PP_START_FORK;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_pool_start_method(pool), PP_START_SPAWN);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  opts.start_method = PP_START_FORKSERVER;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_pool_start_method(pool), PP_START_SPAWN);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  /* The variable overrides a valid method; an invalid option stays invalid. */
  opts.start_method = (pp_start_method) 99;
  ASSERT_REFUSED(&opts);

  /* fork from the variable: available, or PP_ENOTSUP; never silently another. */
  test_setenv("PROCPOOL_START_METHOD", "fork");
  new_either(PP_START_SPAWN, PP_START_FORK);
  test_setenv("PROCPOOL_START_METHOD", "forkserver");
  new_either(PP_START_SPAWN, PP_START_FORKSERVER);
  test_unsetenv("PROCPOOL_START_METHOD");
}

void test_start_method_bogus(void) {
  pp_pool_options opts;

  test_setenv("PROCPOOL_START_METHOD", "bogus");
  pp_pool_options_init(&opts);
  opts.workers = 1;
  ASSERT_REFUSED(&opts);
  opts.start_method = PP_START_SPAWN;
  ASSERT_REFUSED(&opts);
  test_unsetenv("PROCPOOL_START_METHOD");
}

void test_start_method_default(void) {
  static const char *const values[] = { NULL, "" };
  pp_pool_options opts;
  pp_pool *pool;
  pp_start_method m;
  size_t i;

  pp_pool_options_init(&opts);
  opts.workers = 1;
  /* Unset or empty, the variable is not there. */
  for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    if (values[i] == NULL)
      test_unsetenv("PROCPOOL_START_METHOD");
    else
      test_setenv("PROCPOOL_START_METHOD", values[i]);
    opts.start_method = PP_START_DEFAULT;
    pool = NEW_POOL(NULL, &opts);
    m = pp_pool_start_method(pool);
    ASSERT_TRUE(m == PP_START_FORK || m == PP_START_SPAWN || m == PP_START_FORKSERVER);
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
    opts.start_method = PP_START_SPAWN;
    pool = NEW_POOL(NULL, &opts);
    ASSERT_EQ_INT(pp_pool_start_method(pool), PP_START_SPAWN);
    ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  }
  test_unsetenv("PROCPOOL_START_METHOD");
}

void test_start_method_unsupported(void) {
  no_method_override();
  new_either(PP_START_FORK, PP_START_FORK);
  new_either(PP_START_FORKSERVER, PP_START_FORKSERVER);
}

/* ---- SIGPIPE ----------------------------------------------------------------------- */

#ifndef _WIN32
static void sigpipe_handler(int sig) { (void) sig; }

static void sigpipe_after_pool(void (*before)(int), void (*want)(int)) {
  struct sigaction sa;
  pp_pool_options opts;
  pp_pool *pool;

  no_method_override();
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = before;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ_INT(sigaction(SIGPIPE, &sa, NULL), 0);
  pp_pool_options_init(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(sigaction(SIGPIPE, NULL, &sa), 0);
  ASSERT_TRUE(sa.sa_handler == want);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}
#endif

void test_sigpipe_default(void) {
#ifdef _WIN32
  test_skip("no SIGPIPE on Windows");
#else
  sigpipe_after_pool(SIG_DFL, SIG_IGN);
#endif
}

void test_sigpipe_handler(void) {
#ifdef _WIN32
  test_skip("no SIGPIPE on Windows");
#else
  /* The application's own handler is left alone. */
  sigpipe_after_pool(sigpipe_handler, sigpipe_handler);
#endif
}
