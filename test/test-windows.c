/* Windows: what a spawned worker inherits from its parent (its stdio and its channel,
 * nothing else), the job that ends it and its own children with the parent, how a worker's
 * end is described, and a worker given a bad channel on its command line. Elsewhere each
 * test skips. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First: uv.h brings winsock2.h, which must come before windows.h. */
#include "test.h"
#include "../src/serve.h"

#ifndef _WIN32

void test_win_inherited_pipe(void) { test_skip("Windows only"); }
void test_win_inherited_file(void) { test_skip("Windows only"); }
void test_win_two_threads(void) { test_skip("Windows only"); }
void test_win_job(void) { test_skip("Windows only"); }
void test_win_exception_code(void) { test_skip("Windows only"); }
void test_win_exit_process(void) { test_skip("Windows only"); }
void test_win_bad_channel(void) { test_skip("Windows only"); }

#else

#  include <windows.h>

/* Handles at most this value are looked at: a test process holds a few hundred at most,
 * and Windows hands out the lowest free values first. */
#  define HANDLE_SCAN_LIMIT 16384

/* How many inherited handles "win_inherited" reports by value. */
#  define INHERITED_SHOWN 8

/* ---- Tasks -------------------------------------------------------------------------- */

/* The inheritable handles this worker holds beside its stdin, stdout and stderr: a
 * uint32 count, then up to INHERITED_SHOWN of their values. Such a handle came from the
 * parent (a worker makes none at start-up, and pp_main makes its channel
 * non-inheritable): a worker must hold none. */
int test_task_win_inherited(pp_call *call, const void *arg, size_t len) {
  uint32_t out[1 + INHERITED_SHOWN];
  HANDLE in = GetStdHandle(STD_INPUT_HANDLE);
  HANDLE so = GetStdHandle(STD_OUTPUT_HANDLE);
  HANDLE se = GetStdHandle(STD_ERROR_HANDLE);
  uint32_t n = 0;
  uintptr_t v;

  (void) arg;
  (void) len;
  for (v = 4; v <= HANDLE_SCAN_LIMIT; v += 4) {
    HANDLE h = (HANDLE) v;
    DWORD flags;

    if (h == in || h == so || h == se)
      continue;
    if (GetHandleInformation(h, &flags) && (flags & HANDLE_FLAG_INHERIT)) {
      if (n < INHERITED_SHOWN)
        out[1 + n] = (uint32_t) v;
      n++;
    }
  }
  out[0] = n;
  return pp_reply(call, out, (1 + (n < INHERITED_SHOWN ? n : INHERITED_SHOWN)) * 4);
}

static void quiet_crash(void) {
  SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
}

/* An exception code of the program's own, which nothing handles. */
int test_task_win_raise(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  quiet_crash();
  RaiseException(0xE0000001u, EXCEPTION_NONCONTINUABLE, 0, NULL);
  return pp_fail(call, "win_raise: still alive after RaiseException");
}

int test_task_win_exit_process(pp_call *call, const void *arg, size_t len) {
  (void) call;
  (void) arg;
  (void) len;
  ExitProcess(3);
}

/* Starts a child of the worker that never ends by itself (this program, stuck before
 * pp_main) and replies { the worker's pid, the child's pid } as two uint64. */
int test_task_win_grandchild(pp_call *call, const void *arg, size_t len) {
  WCHAR exe[4096];
  STARTUPINFOW si;
  PROCESS_INFORMATION pi;
  uint64_t pids[2];
  DWORD n;
  BOOL ok;

  (void) arg;
  (void) len;
  n = GetModuleFileNameW(NULL, exe, sizeof(exe) / sizeof(exe[0]));
  if (n == 0 || n >= sizeof(exe) / sizeof(exe[0]))
    return pp_fail(call, "win_grandchild: GetModuleFileNameW failed: %lu",
                   (unsigned long) GetLastError());
  memset(&si, 0, sizeof(si));
  si.cb = sizeof(si);
  SetEnvironmentVariableW(L"PP_TEST_HANG_BEFORE_MAIN", L"1");
  ok = CreateProcessW(exe, NULL, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi);
  SetEnvironmentVariableW(L"PP_TEST_HANG_BEFORE_MAIN", NULL);
  if (!ok)
    return pp_fail(call, "win_grandchild: CreateProcessW failed: %lu",
                   (unsigned long) GetLastError());
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
  pids[0] = GetCurrentProcessId();
  pids[1] = pi.dwProcessId;
  return pp_reply(call, pids, sizeof(pids));
}

/* ---- Helpers ------------------------------------------------------------------------ */

static pp_pool *spawn_pool(uv_loop_t *loop, unsigned workers, unsigned max_tasks) {
  pp_pool_options opts;

  test_options(&opts);
  opts.start_method = PP_START_SPAWN;
  opts.workers = workers;
  opts.max_tasks_per_worker = max_tasks;
  return NEW_POOL(loop, &opts);
}

/* Every one of n results of "win_inherited" says no inherited handle. */
static void check_none_inherited(pp_result *out, size_t n) {
  char msg[160];
  uint32_t v[1 + INHERITED_SHOWN];
  size_t i, k;

  for (i = 0; i < n; i++) {
    ASSERT_STATUS(out[i], 0);
    ASSERT_TRUE(out[i].len >= 4 && out[i].len <= sizeof(v));
    memcpy(v, out[i].data, out[i].len);
    snprintf(msg, sizeof(msg), "result %u: inherited handles:", (unsigned) i);
    for (k = 1; k < out[i].len / 4; k++)
      snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), " 0x%lx",
               (unsigned long) v[k]);
    ASSERT_EQ_INT_MSG(v[0], 0, msg);
  }
}

/* The pids of the pool's workers after n "pid" tasks (at least one; all started by then:
 * a pool starts every worker on its loop's first turn). */
static void worker_pids(pp_pool *pool, uint64_t *pids, size_t n) {
  pp_input in[8];
  pp_result out[8];
  size_t i;

  ASSERT_LE_INT(n, 8);
  for (i = 0; i < n; i++) {
    in[i].data = NULL;
    in[i].len = 0;
  }
  ASSERT_EQ_INT(pp_map(pool, "pid", n, in, out), 0);
  for (i = 0; i < n; i++) {
    ASSERT_STATUS(out[i], 0);
    ASSERT_EQ_INT(out[i].len, sizeof(pids[i]));
    memcpy(&pids[i], out[i].data, sizeof(pids[i]));
    pp_result_free(&out[i]);
  }
}

static void check_alive(const uint64_t *pids, size_t n) {
  size_t i;

  for (i = 0; i < n; i++)
    ASSERT_EQ_INT(test_process_gone((long) pids[i]), 0);
}

/* ---- win-inherited-pipe: an application's pipe reaches end-of-file while workers live */

void test_win_inherited_pipe(void) {
  SECURITY_ATTRIBUTES sa = { sizeof(SECURITY_ATTRIBUTES), NULL, TRUE };
  HANDLE rd, wr;
  pp_pool *pool;
  uint64_t pids[4];
  DWORD avail = 0, got = 0;
  char byte;

  /* Both ends inheritable, as a program that hands a pipe to a child of its own makes
   * it: the workers must not get it all the same. */
  ASSERT_TRUE(CreatePipe(&rd, &wr, &sa, 0));
  pool = spawn_pool(NULL, 2, 0);
  worker_pids(pool, pids, 4);
  ASSERT_TRUE(CloseHandle(wr));
  /* PeekNamedPipe tells the end of the pipe without blocking: with a write end left in a
   * worker, it would report an empty pipe, and a read would wait forever. */
  ASSERT_EQ_INT(PeekNamedPipe(rd, NULL, 0, NULL, &avail, NULL), 0);
  ASSERT_EQ_INT(GetLastError(), ERROR_BROKEN_PIPE);
  ASSERT_EQ_INT(ReadFile(rd, &byte, 1, &got, NULL), 0);
  ASSERT_EQ_INT(GetLastError(), ERROR_BROKEN_PIPE);
  check_alive(pids, 4);
  CloseHandle(rd);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- win-inherited-file: a file the parent closed can be deleted while workers live - */

void test_win_inherited_file(void) {
  SECURITY_ATTRIBUTES sa = { sizeof(SECURITY_ATTRIBUTES), NULL, TRUE };
  char dir[4096], path[4200];
  WCHAR wpath[4200];
  size_t size = sizeof(dir);
  HANDLE h;
  pp_pool *pool;
  uint64_t pids[4];

  ASSERT_EQ_INT(uv_os_tmpdir(dir, &size), 0);
  snprintf(path, sizeof(path), "%s\\procpool-inherited-%ld.tmp", dir,
           (long) uv_os_getpid());
  ASSERT_NE_INT(MultiByteToWideChar(CP_UTF8, 0, path, -1, wpath,
                                    (int) (sizeof(wpath) / sizeof(wpath[0]))), 0);
  /* Inheritable, and shared for reading and writing but not deleting, as a C runtime's
   * fopen opens a file. */
  h = CreateFileW(wpath, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &sa,
                  CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
  ASSERT_TRUE(h != INVALID_HANDLE_VALUE);
  pool = spawn_pool(NULL, 2, 0);
  worker_pids(pool, pids, 4);
  ASSERT_TRUE(CloseHandle(h));
  /* A file cannot be deleted while a handle that does not share deletion is open on it:
   * one left in a worker makes this a sharing violation. */
  if (!DeleteFileW(wpath))
    ASSERT_EQ_INT(GetLastError(), 0);
  check_alive(pids, 4);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* ---- win-two-threads: pools started from two threads do not hand each other's
 * channels to their workers -------------------------------------------------------- */

#  define TWO_WORKERS 4
#  define TWO_TASKS 24

typedef struct two_arg {
  uv_barrier_t *start;
  int err;                    /* pp_pool_new's, pp_map's, or pp_pool_close's */
  pp_result out[TWO_TASKS];
} two_arg;

/* A pool of its own whose every task runs in a new worker: while one thread starts a
 * worker, the other is starting its own, again and again. A channel handed to one of them
 * would reach the other's worker if that worker inherited more than its list. */
static void two_run(void *data) {
  two_arg *a = (two_arg *) data;
  pp_pool_options opts;
  pp_pool *pool = NULL;
  pp_input in[TWO_TASKS];
  size_t i;

  for (i = 0; i < TWO_TASKS; i++) {
    in[i].data = NULL;
    in[i].len = 0;
  }
  pp_pool_options_init(&opts);
  opts.start_method = PP_START_SPAWN;
  opts.workers = TWO_WORKERS;
  opts.max_tasks_per_worker = 1;
  uv_barrier_wait(a->start);
  a->err = pp_pool_new(&pool, NULL, &opts);
  if (a->err != 0)
    return;
  a->err = pp_map(pool, "win_inherited", TWO_TASKS, in, a->out);
  if (a->err == 0)
    a->err = pp_pool_close(pool, NULL, NULL);
  else
    pp_pool_close(pool, NULL, NULL);
}

void test_win_two_threads(void) {
  uv_barrier_t start;
  uv_thread_t threads[2];
  two_arg args[2];
  size_t i, k;

  memset(args, 0, sizeof(args));
  ASSERT_EQ_INT(uv_barrier_init(&start, 2), 0);
  for (i = 0; i < 2; i++) {
    args[i].start = &start;
    ASSERT_EQ_INT(uv_thread_create(&threads[i], two_run, &args[i]), 0);
  }
  for (i = 0; i < 2; i++)
    ASSERT_EQ_INT(uv_thread_join(&threads[i]), 0);
  uv_barrier_destroy(&start);
  for (i = 0; i < 2; i++) {
    ASSERT_EQ_INT(args[i].err, 0);
    check_none_inherited(args[i].out, TWO_TASKS);
    for (k = 0; k < TWO_TASKS; k++)
      pp_result_free(&args[i].out[k]);
  }
}

/* ---- win-job: a pool's parent in a job of its own is killed; its worker and the worker's
 * own child end with it --------------------------------------------------------------- */

/* The helper role "@win-job-parent": a pool of one worker that starts a child of its own;
 * prints "<worker pid> <its child's pid>", then waits to be killed. */
int test_helper_win_job_parent(int argc, char **argv) {
  pp_pool_options opts;
  pp_pool *pool = NULL;
  pp_result r;
  uint64_t pids[2];
  int err;

  (void) argc;
  (void) argv;
  pp_pool_options_init(&opts);
  opts.start_method = PP_START_SPAWN;
  opts.workers = 1;
  err = pp_pool_new(&pool, NULL, &opts);
  if (err != 0) {
    fprintf(stderr, "@win-job-parent: pp_pool_new: %s\n", pp_errname(err));
    return 2;
  }
  err = pp_apply(pool, "win_grandchild", NULL, 0, &r);
  if (err != 0 || r.len != sizeof(pids)) {
    fprintf(stderr, "@win-job-parent: %s: %s\n", pp_errname(err),
            r.message ? r.message : "");
    return 3;
  }
  memcpy(pids, r.data, sizeof(pids));
  pp_result_free(&r);
  printf("%llu %llu\n", (unsigned long long) pids[0], (unsigned long long) pids[1]);
  fflush(stdout);
  for (;;)
    Sleep(1000);
}

/* Starts "<this program> @win-job-parent" suspended, its stdout the pipe end out, its
 * stderr this one's; nothing else inherited. */
static void start_job_parent(HANDLE out, PROCESS_INFORMATION *pi) {
  WCHAR exe[4096], cmd[4200];
  STARTUPINFOEXW si;
  SIZE_T size = 0;
  HANDLE list[2];
  DWORD n;

  n = GetModuleFileNameW(NULL, exe, sizeof(exe) / sizeof(exe[0]));
  ASSERT_TRUE(n > 0 && n < sizeof(exe) / sizeof(exe[0]));
  ASSERT_TRUE(wcslen(exe) + 32 < sizeof(cmd) / sizeof(cmd[0]));
  wcscpy(cmd, L"\"");
  wcscat(cmd, exe);
  wcscat(cmd, L"\" @win-job-parent");
  list[0] = out;
  ASSERT_TRUE(DuplicateHandle(GetCurrentProcess(), GetStdHandle(STD_ERROR_HANDLE),
                              GetCurrentProcess(), &list[1], 0, TRUE,
                              DUPLICATE_SAME_ACCESS));
  memset(&si, 0, sizeof(si));
  si.StartupInfo.cb = sizeof(si);
  si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
  si.StartupInfo.hStdOutput = out;
  si.StartupInfo.hStdError = list[1];
  InitializeProcThreadAttributeList(NULL, 1, 0, &size);
  si.lpAttributeList = (LPPROC_THREAD_ATTRIBUTE_LIST) malloc(size);
  ASSERT_NOT_NULL(si.lpAttributeList);
  ASSERT_TRUE(InitializeProcThreadAttributeList(si.lpAttributeList, 1, 0, &size));
  ASSERT_TRUE(UpdateProcThreadAttribute(si.lpAttributeList, 0,
                                        PROC_THREAD_ATTRIBUTE_HANDLE_LIST, list,
                                        sizeof(list), NULL, NULL));
  ASSERT_TRUE(CreateProcessW(exe, cmd, NULL, NULL, TRUE,
                             CREATE_SUSPENDED | EXTENDED_STARTUPINFO_PRESENT, NULL, NULL,
                             &si.StartupInfo, pi));
  DeleteProcThreadAttributeList(si.lpAttributeList);
  free(si.lpAttributeList);
  CloseHandle(list[1]);
}

void test_win_job(void) {
  SECURITY_ATTRIBUTES sa = { sizeof(SECURITY_ATTRIBUTES), NULL, TRUE };
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION info;
  PROCESS_INFORMATION pi;
  HANDLE job, rd, wr;
  char line[64];
  size_t len = 0;
  unsigned long long worker = 0, grandchild = 0;

  /* The helper runs in a job that allows no breakaway, as under a CI runner: its worker
   * is born in that job and must join procpool's too (nested jobs, Windows 8 and later).
   * Killing the job on close ends what a failed run leaves behind. */
  job = CreateJobObjectW(NULL, NULL);
  ASSERT_NOT_NULL(job);
  memset(&info, 0, sizeof(info));
  info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
  ASSERT_TRUE(SetInformationJobObject(job, JobObjectExtendedLimitInformation, &info,
                                      sizeof(info)));
  ASSERT_TRUE(CreatePipe(&rd, &wr, &sa, 0));
  ASSERT_TRUE(SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0));
  start_job_parent(wr, &pi);
  CloseHandle(wr);
  ASSERT_TRUE(AssignProcessToJobObject(job, pi.hProcess));
  ASSERT_NE_INT(ResumeThread(pi.hThread), (DWORD) -1);
  CloseHandle(pi.hThread);

  /* Up to the end of the line, or of the pipe if the helper failed (it says why). */
  while (len < sizeof(line) - 1 && memchr(line, '\n', len) == NULL) {
    DWORD got = 0;
    if (!ReadFile(rd, line + len, (DWORD) (sizeof(line) - 1 - len), &got, NULL) || got == 0)
      break;
    len += got;
  }
  line[len] = '\0';
  CloseHandle(rd);
  ASSERT_TRUE(sscanf(line, "%llu %llu", &worker, &grandchild) == 2);
  ASSERT_EQ_INT(test_process_gone((long) grandchild), 0);

  ASSERT_TRUE(TerminateProcess(pi.hProcess, 1));
  ASSERT_EQ_INT(WaitForSingleObject(pi.hProcess, INFINITE), WAIT_OBJECT_0);
  CloseHandle(pi.hProcess);
  test_wait_process_gone((long) worker, "the worker of a parent that was killed");
  test_wait_process_gone((long) grandchild,
                         "the child of a worker whose parent was killed");
  CloseHandle(job);
}

/* ---- How a worker's end is told ----------------------------------------------------- */

/* The task ends its worker; its result's message must contain want, and not wrong (or
 * NULL). */
static void worker_end_says(const char *task, const char *want, const char *wrong) {
  pp_pool *pool = spawn_pool(NULL, 1, 0);
  pp_result r;

  APPLY(pool, task, NULL, 0, &r);
  ASSERT_STATUS(r, PP_EWORKER);
  ASSERT_CONTAINS(r.message, want);
  if (wrong != NULL)
    ASSERT_EQ_INT_MSG(strstr(r.message, wrong) != NULL, 0, r.message);
  pp_result_free(&r);
  APPLY(pool, "echo", "x", 1, &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* An exception code is an NTSTATUS-like number, in hex, not a negative decimal. */
void test_win_exception_code(void) {
  worker_end_says("win_raise", "exception 0xE0000001", NULL);
}

/* Code 3 is exit(3) as much as abort(): the message must not claim either. */
void test_win_exit_process(void) {
  worker_end_says("win_exit_process", "code 3", "abort() was called");
}

/* ---- win-bad-channel: a worker whose command line names no channel says so and exits */

static DWORD run_worker_with(const char *spec) {
  WCHAR exe[4096], cmd[4400];
  STARTUPINFOW si;
  PROCESS_INFORMATION pi;
  DWORD n, code = 0;
  size_t i, at;

  n = GetModuleFileNameW(NULL, exe, sizeof(exe) / sizeof(exe[0]));
  ASSERT_TRUE(n > 0 && n < sizeof(exe) / sizeof(exe[0]));
  wcscpy(cmd, L"\"");
  wcscat(cmd, exe);
  wcscat(cmd, L"\" ");
  at = wcslen(cmd);
  for (i = 0; PP__WORKER_MARK[i] != '\0'; i++)
    cmd[at++] = (WCHAR) PP__WORKER_MARK[i];
  for (i = 0; spec[i] != '\0'; i++)
    cmd[at++] = (WCHAR) spec[i];
  cmd[at] = 0;
  memset(&si, 0, sizeof(si));
  si.cb = sizeof(si);
  ASSERT_TRUE(CreateProcessW(exe, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi));
  CloseHandle(pi.hThread);
  ASSERT_EQ_INT(WaitForSingleObject(pi.hProcess, 30000), WAIT_OBJECT_0);
  ASSERT_TRUE(GetExitCodeProcess(pi.hProcess, &code));
  CloseHandle(pi.hProcess);
  return code;
}

void test_win_bad_channel(void) {
  /* Nothing; not a number; no handle; the C runtime descriptor that the channel once
   * was; a handle value far above any this process has; more than 32 bits. Each is
   * refused before any use, with the exit code of a set-up failure, not a crash. */
  static const char *const specs[] = { "", "x4", "0", "3", "4294967292", "99999999999" };
  size_t i;

  for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
    DWORD code = run_worker_with(specs[i]);
    if (code != PP__EXIT_SETUP)
      fprintf(stderr, "%s%s\n", PP__WORKER_MARK, specs[i]);
    ASSERT_EQ_INT(code, PP__EXIT_SETUP);
  }
}

#endif
