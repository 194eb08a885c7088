/* The assertions and the helpers every test file shares (see test.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#ifdef _WIN32
#  include <windows.h>
#else
#  include <dirent.h>
#  include <fcntl.h>
#  include <signal.h>
#  include <unistd.h>
#endif

#define TEST_WAIT_LIMIT_MS 30000

int test_in_submit;

void test_kill_self(void) {
#ifdef _WIN32
  TerminateProcess(GetCurrentProcess(), 9);
#else
  kill(getpid(), SIGKILL);
#endif
  for (;;)
    ;
}

/* ---- Assertions -------------------------------------------------------------------- */

static const char *base_name(const char *file) {
  const char *p = file, *s;

  for (s = file; *s != '\0'; s++)
    if (*s == '/' || *s == '\\')
      p = s + 1;
  return p;
}

static void test_fail(void) {
  fflush(stdout);
  fflush(stderr);
  exit(1);
}

/* A negative value is most likely an error code: show its name too. */
static void describe_int(char *buf, size_t size, long long v) {
  const char *name = v < 0 && v >= INT_MIN ? pp_errname((int) v) : "UNKNOWN";

  if (strcmp(name, "UNKNOWN") != 0)
    snprintf(buf, size, "%lld (%s)", v, name);
  else
    snprintf(buf, size, "%lld", v);
}

void test_check_int(const char *file, int line, const char *expr, long long a,
                    long long b, int want_equal, const char *message) {
  char da[64], db[64];

  if ((a == b) == (want_equal != 0))
    return;
  describe_int(da, sizeof(da), a);
  describe_int(db, sizeof(db), b);
  fprintf(stderr, "%s:%d: %s failed: %s vs %s%s%s\n", base_name(file), line, expr, da, db,
          message ? ": " : "", message ? message : "");
  test_fail();
}

void test_check_le(const char *file, int line, const char *expr, long long a,
                   long long b) {
  if (a <= b)
    return;
  fprintf(stderr, "%s:%d: %s failed: %lld vs %lld\n", base_name(file), line, expr, a, b);
  test_fail();
}

void test_check_u64(const char *file, int line, const char *expr, unsigned long long a,
                    unsigned long long b, int want_equal) {
  if ((a == b) == (want_equal != 0))
    return;
  fprintf(stderr, "%s:%d: %s failed: %llu vs %llu\n", base_name(file), line, expr, a, b);
  test_fail();
}

void test_check_true(const char *file, int line, const char *expr, int ok) {
  if (ok)
    return;
  fprintf(stderr, "%s:%d: %s failed\n", base_name(file), line, expr);
  test_fail();
}

void test_check_ptr(const char *file, int line, const char *expr, uintptr_t p,
                    int want_null) {
  if ((p == 0) == (want_null != 0))
    return;
  fprintf(stderr, "%s:%d: %s failed: %p\n", base_name(file), line, expr, (void *) p);
  test_fail();
}

void test_check_str(const char *file, int line, const char *expr, const char *a,
                    const char *b) {
  if (a != NULL && b != NULL && strcmp(a, b) == 0)
    return;
  fprintf(stderr, "%s:%d: %s failed: \"%s\" vs \"%s\"\n", base_name(file), line, expr,
          a ? a : "(null)", b ? b : "(null)");
  test_fail();
}

void test_check_contains(const char *file, int line, const char *expr, const char *s,
                         const char *sub) {
  if (s != NULL && strstr(s, sub) != NULL)
    return;
  fprintf(stderr, "%s:%d: %s failed: \"%s\" does not contain \"%s\"\n", base_name(file),
          line, expr, s ? s : "(null)", sub);
  test_fail();
}

void test_check_mem(const char *file, int line, const char *expr, const void *a,
                    size_t alen, const void *b, size_t blen) {
  const unsigned char *pa = (const unsigned char *) a, *pb = (const unsigned char *) b;
  size_t i, n = alen < blen ? alen : blen;

  if (alen == blen && (alen == 0 || memcmp(a, b, alen) == 0))
    return;
  for (i = 0; i < n; i++)
    if (pa[i] != pb[i])
      break;
  if (i < n)
    fprintf(stderr, "%s:%d: %s failed: %lu vs %lu bytes, first difference at byte %lu: "
                    "0x%02x vs 0x%02x\n", base_name(file), line, expr,
            (unsigned long) alen, (unsigned long) blen, (unsigned long) i, pa[i], pb[i]);
  else
    fprintf(stderr, "%s:%d: %s failed: %lu vs %lu bytes, equal up to the shorter\n",
            base_name(file), line, expr, (unsigned long) alen, (unsigned long) blen);
  test_fail();
}

void test_check_status(const char *file, int line, const char *expr, const pp_result *r,
                       int want) {
  test_check_int(file, line, expr, r->status, want, 1, r->message);
  if (want == 0) {
    if (r->message != NULL) {
      fprintf(stderr, "%s:%d: %s: a success carries a message: %s\n", base_name(file),
              line, expr, r->message);
      test_fail();
    }
    if (r->len == 0 && r->data != NULL) {
      fprintf(stderr, "%s:%d: %s: an empty result has data %p, not NULL\n",
              base_name(file), line, expr, r->data);
      test_fail();
    }
  } else {
    if (r->message == NULL || r->message[0] == '\0') {
      fprintf(stderr, "%s:%d: %s: a failure without a message\n", base_name(file), line,
              expr);
      test_fail();
    }
    if (r->data != NULL || r->len != 0) {
      fprintf(stderr, "%s:%d: %s: a failure carries %lu bytes of data\n", base_name(file),
              line, expr, (unsigned long) r->len);
      test_fail();
    }
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

void test_check_distinct(const char *file, int line, const char *what, uint64_t *v,
                         size_t n) {
  size_t i;

  qsort(v, n, sizeof(*v), cmp_u64);
  for (i = 1; i < n; i++)
    if (v[i] == v[i - 1]) {
      fprintf(stderr, "%s:%d: the values of %s are not distinct: %llu appears twice\n",
              base_name(file), line, what, (unsigned long long) v[i]);
      test_fail();
    }
}

void test_skip(const char *why) {
  fprintf(stderr, "skipped: %s\n", why);
  fflush(stdout);
  exit(TEST_SKIP);
}

/* ---- Pools and tasks --------------------------------------------------------------- */

int test_valgrind(void) {
#ifdef _WIN32
  return 0;
#else
  const char *preload = getenv("LD_PRELOAD");
  return preload != NULL && strstr(preload, "valgrind") != NULL;
#endif
}

/* How many times slower than a plain native run this one may be: valgrind runs code tens
 * of times slower, wine starts processes slowly, and the sanitizers cost a few times. */
static unsigned test_slowness(void) {
#ifdef _WIN32
  HMODULE ntdll = GetModuleHandleA("ntdll.dll");
  if (ntdll != NULL && GetProcAddress(ntdll, "wine_get_version") != NULL)
    return 5;
#endif
  if (test_valgrind())
    return 10;
  return TEST_ASAN || TEST_TSAN ? 2 : 1;
}

uint64_t test_scale_ms(uint64_t ms) { return ms * test_slowness(); }

void test_options(pp_pool_options *opts) {
  pp_pool_options_init(opts);
  opts->start_method = test_method;
}

static int method_forced(void) {
  char buf[32];
  size_t size = sizeof(buf);
  int err = uv_os_getenv("PROCPOOL_START_METHOD", buf, &size);

  return err == UV_ENOBUFS || (err == 0 && buf[0] != '\0');
}

pp_pool *test_pool_new(const char *file, int line, uv_loop_t *loop,
                       const pp_pool_options *opts) {
  pp_pool *pool = NULL;
  int err = pp_pool_new(&pool, loop, opts);
  char why[128];

  if (err == PP_ENOTSUP) {
    test_check_ptr(file, line, "pool == NULL after PP_ENOTSUP", (uintptr_t) pool, 1);
    snprintf(why, sizeof(why), "the start method '%s' is not available here",
             pp_start_method_name(opts ? opts->start_method : PP_START_DEFAULT));
    test_skip(why);
  }
  test_check_int(file, line, "pp_pool_new(&pool, loop, opts) == 0", err, 0, 1, NULL);
  test_check_ptr(file, line, "pool != NULL", (uintptr_t) pool, 0);
  test_check_int(file, line, "pp_pool_start_method(pool) != PP_START_DEFAULT",
                 pp_pool_start_method(pool), PP_START_DEFAULT, 0, NULL);
  /* Unless PROCPOOL_START_METHOD overrides it, the pool uses the method asked for. */
  if (opts != NULL && opts->start_method != PP_START_DEFAULT && !method_forced())
    test_check_int(file, line, "pp_pool_start_method(pool) == opts->start_method",
                   pp_pool_start_method(pool), opts->start_method, 1, NULL);
  return pool;
}

int test_apply(const char *file, int line, pp_pool *pool, const char *task,
               const void *arg, size_t len, pp_result *out) {
  int err = pp_apply(pool, task, arg, len, out);

  test_check_int(file, line, "pp_apply(...) == out->status", err, out->status, 1,
                 out->message);
  return err;
}

int test_submit(pp_pool *pool, const char *task, const void *arg, size_t len,
                test_rec *rec) {
  int err;

  memset(rec, 0, sizeof(*rec));
  test_in_submit++;
  err = pp_submit(pool, task, arg, len, test_rec_cb, rec, &rec->id);
  test_in_submit--;
  if (err == 0)
    ASSERT_NE_U64(rec->id, 0);
  return err;
}

void test_rec_cb(pp_pool *pool, pp_result *r, void *user) {
  test_rec *rec = (test_rec *) user;

  (void) pool;
  ASSERT_EQ_INT(test_in_submit, 0);
  rec->calls++;
  ASSERT_EQ_INT_MSG(rec->calls, 1, r->message);
  ASSERT_EQ_U64(r->id, rec->id);
  rec->res = *r;
  r->data = NULL;
  r->message = NULL;
}

void test_submit_echoes(pp_pool *pool, test_rec *recs, size_t n) {
  size_t i;

  for (i = 0; i < n; i++) {
    char arg = (char) ('a' + i % 26);
    ASSERT_EQ_INT(test_submit(pool, "echo", &arg, 1, &recs[i]), 0);
  }
}

void test_check_echoes(test_rec *recs, size_t n) {
  size_t i;

  for (i = 0; i < n; i++) {
    char arg = (char) ('a' + i % 26);
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_STATUS(recs[i].res, 0);
    ASSERT_EQ_MEM(recs[i].res.data, recs[i].res.len, &arg, 1);
    pp_result_free(&recs[i].res);
  }
}

void test_count_cb(void *counter) { (*(int *) counter)++; }

static void print_handle(uv_handle_t *h, void *arg) {
  (void) arg;
  fprintf(stderr, "  open handle: %s%s%s\n", uv_handle_type_name(uv_handle_get_type(h)),
          uv_is_active(h) ? ", active" : "", uv_is_closing(h) ? ", closing" : "");
}

/* The watchdog: an unreferenced timer, so that it never keeps a loop alive by itself. */
static void watchdog_fire(uv_timer_t *timer) {
  fprintf(stderr, "still waiting for %s after %d ms; the loop's handles:\n",
          (const char *) timer->data, TEST_WAIT_LIMIT_MS);
  uv_walk(timer->loop, print_handle, NULL);
  test_fail();
}

static uv_timer_t *watchdog_start(uv_loop_t *loop, const char *what) {
  uv_timer_t *dog = (uv_timer_t *) malloc(sizeof(*dog));

  ASSERT_NOT_NULL(dog);
  ASSERT_EQ_INT(uv_timer_init(loop, dog), 0);
  dog->data = (void *) what;
  ASSERT_EQ_INT(uv_timer_start(dog, watchdog_fire, TEST_WAIT_LIMIT_MS, 0), 0);
  uv_unref((uv_handle_t *) dog);
  return dog;
}

static void free_handle(uv_handle_t *h) { free(h); }

void test_run_until(uv_loop_t *loop, const int *flag, int target, const char *what) {
  uv_timer_t *dog = watchdog_start(loop, what);

  while (*flag < target) {
    if (uv_run(loop, UV_RUN_ONCE) == 0 && *flag < target) {
      fprintf(stderr, "the loop ran out of work while waiting for %s\n", what);
      test_fail();
    }
  }
  uv_close((uv_handle_t *) dog, free_handle);
}

void test_run_loop(uv_loop_t *loop) {
  uv_timer_t *dog = watchdog_start(loop, "the loop to end (some handle stays open)");

  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *) dog, free_handle);
  uv_run(loop, UV_RUN_DEFAULT);
  /* Whatever is left makes uv_loop_close fail: say what it is. */
  uv_walk(loop, print_handle, NULL);
}

void test_marker_path(char *buf, size_t size, const char *tag) {
  char dir[1024];
  size_t n = sizeof(dir);

  ASSERT_EQ_INT(uv_os_tmpdir(dir, &n), 0);
  snprintf(buf, size, "%s/procpool-test-%ld-%s", dir, (long) uv_os_getpid(), tag);
  remove(buf);
}

typedef struct marker_wait {
  uv_timer_t timer;  /* first: the close callback frees the whole struct */
  const char *path;
  const test_rec *rec;
  int seen;
} marker_wait;

static void marker_poll(uv_timer_t *timer) {
  marker_wait *mw = (marker_wait *) timer->data;
  uv_fs_t req;

  if (uv_fs_stat(NULL, &req, mw->path, NULL) == 0 || mw->rec->calls > 0) {
    mw->seen = 1;
    uv_timer_stop(timer);
  }
  uv_fs_req_cleanup(&req);
}

void test_wait_marker(uv_loop_t *loop, const char *path, const test_rec *rec) {
  marker_wait *mw = (marker_wait *) malloc(sizeof(*mw));

  ASSERT_NOT_NULL(mw);
  mw->path = path;
  mw->rec = rec;
  mw->seen = 0;
  ASSERT_EQ_INT(uv_timer_init(loop, &mw->timer), 0);
  mw->timer.data = mw;
  ASSERT_EQ_INT(uv_timer_start(&mw->timer, marker_poll, 0, 10), 0);
  test_run_until(loop, &mw->seen, 1, path);
  uv_close((uv_handle_t *) &mw->timer, free_handle);
  remove(path);
  /* The task ended instead of sleeping: say how. */
  ASSERT_EQ_INT_MSG(rec->calls, 0, rec->res.message);
}

int test_process_gone(long pid) {
  char state;

  if (uv_kill((int) pid, 0) == UV_ESRCH)
    return 1;
  /* An orphan's new parent may be slow to reap it, or (PID 1 of a container) never
   * reap it at all: a zombie has ended all the same. */
  return test_proc_stat(pid, &state) >= 0 && (state == 'Z' || state == 'X');
}

#ifndef _WIN32
int test_pool_new_said(pp_pool **pool, uv_loop_t *loop, const pp_pool_options *opts,
                       char *said, size_t size) {
  int p[2], saved, err;
  ssize_t n;
  size_t have = 0;

  ASSERT_EQ_INT(pipe(p), 0);
  fflush(stderr);
  saved = dup(2);
  ASSERT_TRUE(saved >= 0);
  ASSERT_EQ_INT(dup2(p[1], 2), 2);
  close(p[1]);
  err = pp_pool_new(pool, loop, opts);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  /* Every copy of the write end is closed now, but those of workers this pool may have
   * started: read what is there, without waiting for the end. */
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  while (have + 1 < size && (n = read(p[0], said + have, size - 1 - have)) > 0)
    have += (size_t) n;
  said[have] = '\0';
  close(p[0]);
  fprintf(stderr, "pp_pool_new said: %s", said);
  return err;
}
#endif

void test_wait_process_gone(long pid, const char *what) {
  uint64_t start = uv_hrtime();

  while (!test_process_gone(pid)) {
    if (uv_hrtime() - start > (uint64_t) TEST_WAIT_LIMIT_MS * 1000000u) {
      fprintf(stderr, "%s: process %ld still runs after %d ms\n", what, pid,
              TEST_WAIT_LIMIT_MS);
      test_fail();
    }
    uv_sleep(20);
  }
}

void test_setenv(const char *name, const char *value) {
  ASSERT_EQ_INT(uv_os_setenv(name, value), 0);
}

void test_unsetenv(const char *name) { ASSERT_EQ_INT(uv_os_unsetenv(name), 0); }

uint64_t test_worker_pid(pp_pool *pool) {
  pp_result r;
  uint64_t pid;

  APPLY(pool, "pid", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(pid));
  memcpy(&pid, r.data, sizeof(pid));
  pp_result_free(&r);
  return pid;
}

int test_shm_names_of(long pid) {
#if defined(__linux__)
  char prefix[64];
  struct dirent *e;
  DIR *d = opendir("/dev/shm");
  int n = 0;

  if (d == NULL)
    return -1;
  snprintf(prefix, sizeof(prefix), "procpool-%ld-", pid);
  while ((e = readdir(d)) != NULL)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
      fprintf(stderr, "left in /dev/shm: %s\n", e->d_name);
      n++;
    }
  closedir(d);
  return n;
#else
  (void) pid;
  return -1;
#endif
}
