/* What every test file shares: the assertions, the pool helpers and the task table.
 *
 * A failed assertion prints where, what and both values, then ends the test process with
 * status 1; a test skips with TEST_SKIP, which meson counts as skipped. */
#ifndef PP_TEST_H
#define PP_TEST_H

#include <stddef.h>
#include <stdint.h>

#include <procpool.h>
#include <uv.h>

#include "procstat.h"

#define TEST_SKIP 77

/* 1 under AddressSanitizer, whose allocator differs from the C library's: freed blocks
 * wait in a quarantine (so the resident size does not come back), and it is not locked
 * around fork(). */
#if defined(__SANITIZE_ADDRESS__)
#  define TEST_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define TEST_ASAN 1
#  endif
#endif
#ifndef TEST_ASAN
#  define TEST_ASAN 0
#endif
/* 1 under ThreadSanitizer. */
#if defined(__SANITIZE_THREAD__)
#  define TEST_TSAN 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define TEST_TSAN 1
#  endif
#endif
#ifndef TEST_TSAN
#  define TEST_TSAN 0
#endif

/* Declares test_<name>(void) for every entry of test-list.h. */
#define TEST_EACH(name) void test_##name(void);
#define TEST_ONCE(name) void test_##name(void);
#include "test-list.h"
#undef TEST_EACH
#undef TEST_ONCE

/* The method named on the command line of a TEST_EACH test; PP_START_DEFAULT in a
 * TEST_ONCE test. */
extern pp_start_method test_method;

/* The worker side: the task table (tasks.c), and the global that spawn-global changes
 * in the parent. */
extern const pp_task test_tasks[];
extern int test_global;
#define TEST_GLOBAL_INITIAL 1

/* Tasks defined beside the tests that use them. */
int test_task_send_garbage(pp_call *call, const void *arg, size_t len);
int test_task_ks_work(pp_call *call, const void *arg, size_t len);
int test_task_signals_default(pp_call *call, const void *arg, size_t len);
int test_task_matrix_init(pp_call *call, const void *arg, size_t len);
int test_task_matrix_read(pp_call *call, const void *arg, size_t len);
int test_task_shm_fill(pp_call *call, const void *arg, size_t len);
int test_task_shm_crash(pp_call *call, const void *arg, size_t len);
int test_task_shm_make(pp_call *call, const void *arg, size_t len);
int test_task_shm_release(pp_call *call, const void *arg, size_t len);
int test_task_shm_close_inherited(pp_call *call, const void *arg, size_t len);
int test_task_bm_copy(pp_call *call, const void *arg, size_t len);
int test_task_bm_sub(pp_call *call, const void *arg, size_t len);
int test_task_bm_where(pp_call *call, const void *arg, size_t len);
int test_task_bm_make(pp_call *call, const void *arg, size_t len);
int test_task_bm_nofile(pp_call *call, const void *arg, size_t len);
int test_task_rendezvous(pp_call *call, const void *arg, size_t len);
int test_task_use_parent_pool(pp_call *call, const void *arg, size_t len);
int test_task_sleep_ms(pp_call *call, const void *arg, size_t len);
int test_task_fs_print(pp_call *call, const void *arg, size_t len);
int test_task_count_run(pp_call *call, const void *arg, size_t len);
int test_task_init_aligned(pp_call *call, const void *arg, size_t len);
int test_task_init_aligned_count(pp_call *call, const void *arg, size_t len);
int test_task_sp_fd_open(pp_call *call, const void *arg, size_t len);
int test_task_sp_signals(pp_call *call, const void *arg, size_t len);
int test_task_journal_run(pp_call *call, const void *arg, size_t len);
int test_task_hs_journal(pp_call *call, const void *arg, size_t len);
int test_task_hs_truncate(pp_call *call, const void *arg, size_t len);
int test_task_hs_scribble(pp_call *call, const void *arg, size_t len);
int test_task_hs_ppid(pp_call *call, const void *arg, size_t len);
int test_task_stream_op(pp_call *call, const void *arg, size_t len);
int test_task_memcap_leak(pp_call *call, const void *arg, size_t len);
int test_task_fh_state(pp_call *call, const void *arg, size_t len);
int test_task_ln_print(pp_call *call, const void *arg, size_t len);
int test_task_ln_where(pp_call *call, const void *arg, size_t len);
int test_task_ln_stdin(pp_call *call, const void *arg, size_t len);
int test_task_ln_park(pp_call *call, const void *arg, size_t len);
int test_task_ma_init(pp_call *call, const void *arg, size_t len);
int test_task_ma_op(pp_call *call, const void *arg, size_t len);
int test_task_ma_noarg(pp_call *call, const void *arg, size_t len);
int test_task_ma_wide(pp_call *call, const void *arg, size_t len);
int test_task_ma_quiet(pp_call *call, const void *arg, size_t len);
int test_task_ma_in_worker(pp_call *call, const void *arg, size_t len);
int test_task_xw_parent(pp_call *call, const void *arg, size_t len);

/* The table main() gives pp_main: test_tasks, unless the environment asks for a big or
 * a malformed one (test-worker.c). */
const pp_task *test_worker_table(void);
#ifdef _WIN32
int test_task_win_inherited(pp_call *call, const void *arg, size_t len);
int test_task_win_raise(pp_call *call, const void *arg, size_t len);
int test_task_win_exit_process(pp_call *call, const void *arg, size_t len);
int test_task_win_grandchild(pp_call *call, const void *arg, size_t len);
#endif
int test_task_model(pp_call *call, const void *arg, size_t len);
int test_task_model_init(pp_call *call, const void *arg, size_t len);
int test_task_xt_item(pp_call *call, const void *arg, size_t len);

/* test-model.c's "model" task, for the model tests (test-model.c, test-xmodel.c). Its
 * argument, made by test_model_arg: kind, param (a slow task's milliseconds), nonce (the
 * task's own number, never 0) and plen bytes of payload. An ok or slow task replies
 * TEST_MODEL_REPLY_HDR + plen bytes (nonce, pid, payload changed), fail fails with
 * "nonce=<n>" in its message, the others crash, exit, are killed or hang. Every run
 * first appends (nonce, pid) to a file of the run log, the directory that the
 * initializer "model_init" gets as its argument. */
enum { TEST_MK_OK, TEST_MK_SLOW, TEST_MK_FAIL, TEST_MK_ABORT, TEST_MK_SEGV, TEST_MK_EXIT,
       TEST_MK_SELFKILL, TEST_MK_HANG, TEST_MK_N };
extern const char *const test_model_kind_names[TEST_MK_N];
#define TEST_MODEL_HDR 16
#define TEST_MODEL_REPLY_HDR 16
size_t test_model_arg(unsigned kind, uint32_t param, uint64_t nonce, size_t plen,
                      unsigned char *buf);
/* NULL when data is the reply of an ok or slow task of that nonce and payload size
 * (then *pid is the worker's), else what is wrong with it. */
const char *test_model_check_reply(uint64_t nonce, size_t plen, const void *data,
                                   size_t len, uint64_t *pid);
/* The run log, read as it grows: add gets every run's record once, fail what went wrong
 * reading it (it should end the test). */
typedef struct test_model_log {
  char path[1024];
  struct test_model_logfile *files;
  size_t nfiles;
  void (*add)(void *user, uint64_t nonce, uint64_t pid);
  void (*fail)(void *user, const char *what);
  void *user;
} test_model_log;
/* Makes the log's directory, unique to this process and tag (ending in XXXXXX). */
int test_model_log_init(test_model_log *log, const char *tag);
void test_model_log_update(test_model_log *log);
/* Removes the directory and frees what the log holds. */
void test_model_log_remove(test_model_log *log);
#ifdef __linux__
/* pid is a worker of this process's (its child, or its forkserver's or fork helper's). */
int test_model_is_worker(long pid);
#endif

/* What the "mapf" task computes: distinct inputs give distinct outputs. */
uint64_t test_mapf(uint32_t x);

/* The alignment "suitable for any type" that the header promises for arguments and shared
 * memory: that of the most demanding scalar types. max_align_t would say it, but MSVC's C
 * <stddef.h> has none (C2065). */
typedef union test_max_align {
  long long ll;
  long double ld;
  double d;
  void *p;
  void (*fn)(void);
} test_max_align;
#define TEST_MAX_ALIGN _Alignof(test_max_align)

/* ---- Assertions -------------------------------------------------------------------- */

void test_check_int(const char *file, int line, const char *expr, long long a,
                    long long b, int want_equal, const char *message);
void test_check_le(const char *file, int line, const char *expr, long long a,
                   long long b);
void test_check_u64(const char *file, int line, const char *expr, unsigned long long a,
                    unsigned long long b, int want_equal);
void test_check_true(const char *file, int line, const char *expr, int ok);
void test_check_ptr(const char *file, int line, const char *expr, uintptr_t p,
                    int want_null);
void test_check_str(const char *file, int line, const char *expr, const char *a,
                    const char *b);
void test_check_contains(const char *file, int line, const char *expr, const char *s,
                         const char *sub);
void test_check_mem(const char *file, int line, const char *expr, const void *a,
                    size_t alen, const void *b, size_t blen);
void test_check_status(const char *file, int line, const char *expr, const pp_result *r,
                       int want);

#define ASSERT_EQ_INT(a, b) \
  test_check_int(__FILE__, __LINE__, #a " == " #b, (long long) (a), (long long) (b), 1, \
                 NULL)
#define ASSERT_NE_INT(a, b) \
  test_check_int(__FILE__, __LINE__, #a " != " #b, (long long) (a), (long long) (b), 0, \
                 NULL)
/* Like ASSERT_EQ_INT, and prints msg (a result's message) when it fails. */
#define ASSERT_EQ_INT_MSG(a, b, msg) \
  test_check_int(__FILE__, __LINE__, #a " == " #b, (long long) (a), (long long) (b), 1, \
                 (msg))
#define ASSERT_LE_INT(a, b) \
  test_check_le(__FILE__, __LINE__, #a " <= " #b, (long long) (a), (long long) (b))
#define ASSERT_EQ_U64(a, b) \
  test_check_u64(__FILE__, __LINE__, #a " == " #b, (unsigned long long) (a), \
                 (unsigned long long) (b), 1)
#define ASSERT_NE_U64(a, b) \
  test_check_u64(__FILE__, __LINE__, #a " != " #b, (unsigned long long) (a), \
                 (unsigned long long) (b), 0)
#define ASSERT_TRUE(cond) test_check_true(__FILE__, __LINE__, #cond, (cond) ? 1 : 0)
/* The pointer goes as a number: gcc would otherwise take a fresh malloc block passed
 * to a const void * for a read of uninitialised memory. */
#define ASSERT_NULL(p) \
  test_check_ptr(__FILE__, __LINE__, #p " == NULL", (uintptr_t) (const void *) (p), 1)
#define ASSERT_NOT_NULL(p) \
  test_check_ptr(__FILE__, __LINE__, #p " != NULL", (uintptr_t) (const void *) (p), 0)
#define ASSERT_EQ_STR(a, b) test_check_str(__FILE__, __LINE__, #a " == " #b, (a), (b))
#define ASSERT_CONTAINS(s, sub) \
  test_check_contains(__FILE__, __LINE__, #s " contains " #sub, (s), (sub))
#define ASSERT_EQ_MEM(a, alen, b, blen) \
  test_check_mem(__FILE__, __LINE__, #a " == " #b, (a), (alen), (b), (blen))
/* r.status == want, and the result is shaped as the header says: a success has no
 * message, a failure has a non-empty one and no data. Prints r.message when it fails. */
#define ASSERT_STATUS(r, want) \
  test_check_status(__FILE__, __LINE__, #r ".status == " #want, &(r), (want))

/* The n values are pairwise distinct (sorts them). */
#define ASSERT_DISTINCT(v, n) test_check_distinct(__FILE__, __LINE__, #v, (v), (n))
void test_check_distinct(const char *file, int line, const char *what, uint64_t *v,
                         size_t n);

/* In a worker: ends this process at once, as an outside SIGKILL (TerminateProcess on
 * Windows) would. */
#if defined(_MSC_VER)
__declspec(noreturn) void test_kill_self(void);
#else
void test_kill_self(void) __attribute__((noreturn));
#endif

/* Names in /dev/shm that process pid's pools made (they carry its pid), printed on stderr,
 * or -1 where there is no /dev/shm to look in. */
int test_shm_names_of(long pid);

/* 1 when this process runs under valgrind (so does a worker forked from it). */
int test_valgrind(void);

/* Ends the test as skipped, saying why. */
void test_skip(const char *why);

/* ---- Pools and tasks --------------------------------------------------------------- */

/* Options with every field at its default, except the start method: test_method. */
void test_options(pp_pool_options *opts);

/* ms scaled by how much slower this run may be (valgrind, wine, the sanitizers). For a
 * task_timeout_ms that tasks which must succeed run under: a timeout that a loaded machine
 * could reach would make the test's outcome depend on its speed. */
uint64_t test_scale_ms(uint64_t ms);

/* pp_pool_new that must succeed; the test skips when the method does not exist here. */
#define NEW_POOL(loop, opts) test_pool_new(__FILE__, __LINE__, (loop), (opts))
pp_pool *test_pool_new(const char *file, int line, uv_loop_t *loop,
                       const pp_pool_options *opts);

/* pp_apply, checking that it returns out->status as the header says. */
#define APPLY(pool, task, arg, len, out) \
  test_apply(__FILE__, __LINE__, (pool), (task), (arg), (len), (out))
int test_apply(const char *file, int line, pp_pool *pool, const char *task,
               const void *arg, size_t len, pp_result *out);

/* One submitted task's record: its id and every call of its callback. */
typedef struct test_rec {
  uint64_t id;
  int calls;
  pp_result res;  /* taken from the callback; free with pp_result_free */
} test_rec;

/* pp_submit with test_rec_cb; the callback fails the test if pp_submit calls it. */
int test_submit(pp_pool *pool, const char *task, const void *arg, size_t len,
                test_rec *rec);
/* Counts the call, checks the id and that no pp_submit is on the stack, takes the
 * result. */
void test_rec_cb(pp_pool *pool, pp_result *r, void *rec);
/* > 0 while test_submit is inside pp_submit. */
extern int test_in_submit;

/* n "echo" tasks, each of one byte that tells it from the others; then the check that
 * each got its own byte back, once. For the tasks that wait behind one that a worker
 * never finishes: the header has them run elsewhere. */
void test_submit_echoes(pp_pool *pool, test_rec *recs, size_t n);
void test_check_echoes(test_rec *recs, size_t n);

/* A pp_close_cb that counts its calls in the int user points to. */
void test_count_cb(void *counter);

/* Runs loop until *flag >= target; fails the test, naming `what`, if the loop runs dry
 * first or after 30 s (an upper bound a correct run never reaches). */
void test_run_until(uv_loop_t *loop, const int *flag, int target, const char *what);
/* Runs loop until it has nothing left to do (failing the test if that takes over 30 s),
 * then lists on stderr the handles it still knows, which would make uv_loop_close fail.
 * The test then asserts uv_loop_close(loop) == 0. */
void test_run_loop(uv_loop_t *loop);

/* Marker files: the task "sleep_forever" creates the file its argument names, then sleeps
 * forever, so that the parent knows for sure that the task reached its worker.
 * test_marker_path makes a path unique to this process and tag (and removes any stale
 * file there); test_wait_marker runs loop until the file exists (up to 30 s), removes
 * it, and fails the test if the task, submitted with rec, ended instead. */
void test_marker_path(char *buf, size_t size, const char *tag);
void test_wait_marker(uv_loop_t *loop, const char *path, const test_rec *rec);

/* Unix: pp_pool_new with stderr going to a pipe; said gets what it printed (also echoed
 * to stderr). */
int test_pool_new_said(pp_pool **pool, uv_loop_t *loop, const pp_pool_options *opts,
                       char *said, size_t size);

/* 1 once the process has ended (gone, or a zombie nobody reaped yet), else 0. */
int test_process_gone(long pid);
/* Waits, up to 30 s, for the process to end; fails the test if it does not. */
void test_wait_process_gone(long pid, const char *what);

/* The helper role "@orphan-parent" of parent-death (test-faults.c). */
int test_helper_orphan_parent(int argc, char **argv);
int test_helper_orphan_busy(int argc, char **argv);
/* The helper role "@odd-path" of odd-path (test-paths.c). */
int test_helper_odd_path(int argc, char **argv);
/* The helper role "@fs-kept" of sp-fs-kept (test-spawnpath.c). */
int test_helper_fs_kept(int argc, char **argv);
/* The helper role "@launch" of the launcher tests (test-launcher.c): runs its arguments
 * with its own stdio and exits with their status. */
int test_helper_launch(int argc, char **argv);
#ifdef _WIN32
/* The helper role "@win-job-parent" of win-job (test-windows.c). */
int test_helper_win_job_parent(int argc, char **argv);
/* The helper role "@win-churn" of win-parent-dies-starting (test-win2.c). */
int test_helper_win_churn(int argc, char **argv);
#endif

/* uv_os_setenv / uv_os_unsetenv that must succeed. */
void test_setenv(const char *name, const char *value);
void test_unsetenv(const char *name);

/* The task "pid" on pool: the pid of the worker that ran it. */
uint64_t test_worker_pid(pp_pool *pool);

#endif
