/* Windows as its users get it: the static library linked into an application's DLL, no
 * worker left behind by a parent killed while it starts workers, a worker's whole tree
 * ended through a launcher, Windows path forms, cmd.exe's special characters, a file
 * that is not a program. Elsewhere each test skips. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First: uv.h brings winsock2.h, which must come before windows.h. */
#include "test.h"

#ifndef _WIN32

void test_win_static_in_dll(void) { test_skip("Windows only"); }
void test_win_parent_dies_starting(void) { test_skip("Windows only"); }
void test_win_parent_dies_starting_nojl(void) { test_skip("Windows only"); }
void test_win_launcher_kills_tree(void) { test_skip("Windows only"); }
void test_win_path_forms(void) { test_skip("Windows only"); }
void test_win_not_a_program(void) { test_skip("Windows only"); }
void test_win_launcher_cmd_chars(void) { test_skip("Windows only"); }

#else

#  include <windows.h>

#  include <io.h>

/* src/win/spawn.c's switch to the way Windows before 10 starts workers. */
extern int pp__win_no_job_list;

/* How long the processes a killed parent leaves may take to end. A process left behind
 * never ends, so this only bounds the wait for one. */
#  define GONE_LIMIT_MS 30000

/* This program's directory, with a trailing backslash, in dir (of n WCHARs). */
static void own_dir(WCHAR *dir, size_t n) {
  DWORD len = GetModuleFileNameW(NULL, dir, (DWORD) n);
  WCHAR *slash;

  ASSERT_TRUE(len > 0 && len < n);
  slash = wcsrchr(dir, L'\\');
  ASSERT_NOT_NULL(slash);
  slash[1] = L'\0';
}

/* ---- win-static-in-dll: an application's DLL that links the static library exports
 * its own functions and none of procpool's ------------------------------------------ */

void test_win_static_in_dll(void) {
  WCHAR path[4096];
  HMODULE dll;
  FARPROC own;
  int (*fn)(void);

  own_dir(path, sizeof(path) / sizeof(path[0]) - 32);
  wcscat(path, L"pp-static-in-dll.dll");
  dll = LoadLibraryW(path);
  ASSERT_NOT_NULL(dll);
  own = GetProcAddress(dll, "pp_test_app_function");
  ASSERT_NOT_NULL(own);
  memcpy(&fn, &own, sizeof(fn));
  ASSERT_EQ_INT(fn(), 42);
  /* The static library's objects carry no dllexport mark: linked into a DLL, they add
   * nothing to its exports. */
  ASSERT_NULL(GetProcAddress(dll, "pp_errname"));
  ASSERT_NULL(GetProcAddress(dll, "pp_strerror"));
  ASSERT_NULL(GetProcAddress(dll, "pp_pool_new"));
  ASSERT_TRUE(FreeLibrary(dll));
}


/* ---- win-parent-dies-starting: a parent killed while it starts workers leaves none -- */

/* The helper role "@win-churn <how> <ms>": a pool whose every task runs in a new worker,
 * kept busy for good, so that a worker is always being started. It prints "go" once the
 * pool exists; with how "exit", a thread calls exit() ms milliseconds later; with "nojl",
 * workers start as before Windows 10 (no job list), and the parent kills it. */
static void churn_exit(void *arg) {
  uv_sleep(*(unsigned *) arg);
  exit(0);
}

int test_helper_win_churn(int argc, char **argv) {
  static unsigned ms;
  pp_pool_options opts;
  pp_pool *pool = NULL;
  pp_input in[8];
  pp_result out[8];
  uv_thread_t t;
  size_t i;
  int err;

  if (argc < 4)
    return 2;
  ms = (unsigned) strtoul(argv[3], NULL, 10);
  pp__win_no_job_list = strcmp(argv[2], "nojl") == 0;
  pp_pool_options_init(&opts);
  opts.start_method = PP_START_SPAWN;
  opts.workers = 4;
  opts.max_tasks_per_worker = 1;
  err = pp_pool_new(&pool, NULL, &opts);
  if (err != 0) {
    fprintf(stderr, "@win-churn: pp_pool_new: %s\n", pp_errname(err));
    return 3;
  }
  /* No newline: stdout is in text mode, and would make it two bytes. */
  fputs("go", stdout);
  fflush(stdout);
  if (strcmp(argv[2], "exit") == 0 && uv_thread_create(&t, churn_exit, &ms) != 0)
    return 4;
  memset(in, 0, sizeof(in));
  for (;;) {
    err = pp_map(pool, "pid", 8, in, out);
    if (err != 0) {
      fprintf(stderr, "@win-churn: pp_map: %s\n", pp_errname(err));
      return 5;
    }
    for (i = 0; i < 8; i++)
      pp_result_free(&out[i]);
  }
}

/* Runs "<this program> @win-churn how ms" in job (its workers are born there too, in
 * procpool's jobs or not), its stdout the pipe end out; returns its process handle. */
static HANDLE start_churn(HANDLE job, HANDLE out, const char *how, unsigned ms) {
  WCHAR exe[4096], cmd[4300];
  STARTUPINFOEXW si;
  PROCESS_INFORMATION pi;
  SIZE_T size = 0;
  HANDLE list[2];

  ASSERT_NE_INT(GetModuleFileNameW(NULL, exe, sizeof(exe) / sizeof(exe[0])), 0);
  _snwprintf(cmd, sizeof(cmd) / sizeof(cmd[0]), L"\"%ls\" @win-churn %hs %u", exe, how, ms);
  cmd[sizeof(cmd) / sizeof(cmd[0]) - 1] = L'\0';
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
  /* Suspended until it is in job: the test's own start has the window procpool closes,
   * and this test does not kill itself. */
  ASSERT_TRUE(CreateProcessW(exe, cmd, NULL, NULL, TRUE,
                             CREATE_SUSPENDED | EXTENDED_STARTUPINFO_PRESENT, NULL, NULL,
                             &si.StartupInfo, &pi));
  DeleteProcThreadAttributeList(si.lpAttributeList);
  free(si.lpAttributeList);
  CloseHandle(list[1]);
  ASSERT_TRUE(AssignProcessToJobObject(job, pi.hProcess));
  ASSERT_NE_INT(ResumeThread(pi.hThread), (DWORD) -1);
  CloseHandle(pi.hThread);
  return pi.hProcess;
}

/* The processes of job still running. */
static DWORD job_active(HANDLE job) {
  JOBOBJECT_BASIC_ACCOUNTING_INFORMATION acct;

  ASSERT_TRUE(QueryInformationJobObject(job, JobObjectBasicAccountingInformation, &acct,
                                        sizeof(acct), NULL));
  return acct.ActiveProcesses;
}

/* Rounds of: a churning parent dies (killed, or by exit() on a thread of its own) at a
 * moment that moves from round to round; every process it left must end, and its stdout
 * reach end-of-file. Returns how many rounds left one behind. */
static unsigned churn_rounds(const char *how, unsigned rounds) {
  SECURITY_ATTRIBUTES sa = { sizeof(SECURITY_ATTRIBUTES), NULL, TRUE };
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION info;
  unsigned round, bad = 0;

  for (round = 0; round < rounds; round++) {
    HANDLE job, rd, wr, parent;
    unsigned ms = 37 * round % 400;
    char buf[256];
    DWORD got = 0, left;
    uint64_t start;
    int exits = strcmp(how, "exit") == 0;

    /* The test's own job, which kills what is left when it closes: survivors are
     * counted, then cleared, round by round. */
    job = CreateJobObjectW(NULL, NULL);
    ASSERT_NOT_NULL(job);
    memset(&info, 0, sizeof(info));
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    ASSERT_TRUE(SetInformationJobObject(job, JobObjectExtendedLimitInformation, &info,
                                        sizeof(info)));
    ASSERT_TRUE(CreatePipe(&rd, &wr, &sa, 0));
    ASSERT_TRUE(SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0));
    parent = start_churn(job, wr, how, ms);
    CloseHandle(wr);
    ASSERT_TRUE(ReadFile(rd, buf, 2, &got, NULL));
    ASSERT_EQ_MEM(buf, got, "go", 2);
    if (!exits) {
      uv_sleep(ms);
      ASSERT_TRUE(TerminateProcess(parent, 9));
    }
    ASSERT_EQ_INT(WaitForSingleObject(parent, GONE_LIMIT_MS), WAIT_OBJECT_0);
    start = uv_hrtime();
    while ((left = job_active(job)) > 0 &&
           uv_hrtime() - start < (uint64_t) GONE_LIMIT_MS * 1000000u)
      uv_sleep(20);
    if (left > 0) {
      fprintf(stderr, "round %u (%s after %u ms): %lu processes left behind\n", round,
              how, ms, (unsigned long) left);
      bad++;
    } else {
      /* None holds the parent's stdout any more: it reads to its end. */
      while (ReadFile(rd, buf, sizeof(buf), &got, NULL) && got > 0)
        ;
      ASSERT_EQ_INT(GetLastError(), ERROR_BROKEN_PIPE);
    }
    CloseHandle(rd);
    CloseHandle(parent);
    CloseHandle(job);
  }
  return bad;
}

void test_win_parent_dies_starting(void) {
  ASSERT_EQ_INT(churn_rounds("kill", 12), 0);
  ASSERT_EQ_INT(churn_rounds("exit", 12), 0);
}

/* The same as Windows before 10 starts workers: as debuggees until they are in their job. */
void test_win_parent_dies_starting_nojl(void) {
  ASSERT_EQ_INT(churn_rounds("nojl", 12), 0);
}

/* ---- win-launcher-kills-tree: a worker behind a launcher ends with it on every kill -- */

/* The pid ln_park wrote into path, running loop meanwhile; 0 if rec got its result
 * first (it says why). */
static long parked_pid(uv_loop_t *loop, const char *path, const test_rec *rec) {
  uint64_t start = uv_hrtime();
  long pid = 0;

  while (pid == 0) {
    FILE *f = fopen(path, "r");
    if (f != NULL) {
      if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
      fclose(f);
    }
    ASSERT_EQ_INT_MSG(rec->calls, 0, rec->res.message);
    ASSERT_TRUE(uv_hrtime() - start < (uint64_t) GONE_LIMIT_MS * 1000000u);
    if (pid == 0) {
      uv_run(loop, UV_RUN_NOWAIT);
      uv_sleep(10);
    }
  }
  remove(path);
  return pid;
}

/* A worker behind the suite's launcher ("@launch", which waits for its worker, as ssh
 * does), parked in a task for good, so it never reads its stdin's end: a timeout, a cancel
 * and pp_pool_terminate each end the worker, not only the launcher. */
void test_win_launcher_kills_tree(void) {
  static const char *const modes[] = { "timeout", "cancel", "terminate" };
  char exe[4096], path[256];
  const char *launcher[3];
  size_t size = sizeof(exe), m;

  ASSERT_EQ_INT(uv_exepath(exe, &size), 0);
  launcher[0] = exe;
  launcher[1] = "@launch";
  launcher[2] = NULL;
  for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
    pp_pool_options o;
    pp_pool *pool;
    uv_loop_t loop;
    test_rec rec;
    long pid;
    int closed = 0;

    memset(&rec, 0, sizeof(rec));
    pp_pool_options_init(&o);
    o.start_method = PP_START_SPAWN;
    o.workers = 1;
    o.worker_launcher = launcher;
    /* Long enough for the task to say its pid first, even under wine. */
    o.task_timeout_ms = m == 0 ? 3000 : 0;
    ASSERT_EQ_INT(uv_loop_init(&loop), 0);
    pool = NEW_POOL(&loop, &o);
    test_marker_path(path, sizeof(path), modes[m]);
    ASSERT_EQ_INT(test_submit(pool, "ln_park", path, strlen(path), &rec), 0);
    pid = parked_pid(&loop, path, &rec);
    if (m == 1)
      ASSERT_EQ_INT(pp_cancel(pool, rec.id), 0);
    if (m == 2) {
      ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &closed), 0);
      test_run_until(&loop, &closed, 1, "the terminate's callback");
    } else {
      test_run_until(&loop, &rec.calls, 1, modes[m]);
    }
    ASSERT_EQ_INT(rec.calls, 1);
    ASSERT_STATUS(rec.res, m == 0 ? PP_ETIMEDOUT : PP_ECANCELED);
    pp_result_free(&rec.res);
    /* Ended with its launcher, not when this process ends. */
    test_wait_process_gone(pid, modes[m]);
    if (m != 2) {
      ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closed), 0);
      test_run_until(&loop, &closed, 1, "the close's callback");
    }
    test_run_loop(&loop);
    ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  }
}

/* ---- win-path-forms: every form of a Windows path names the worker program ----------- */

/* s in UTF-8, in buf (of size bytes). */
static void narrow(const WCHAR *s, char *buf, size_t size) {
  ASSERT_TRUE(WideCharToMultiByte(CP_UTF8, 0, s, -1, buf, (int) size, NULL, NULL) > 0);
}

/* A pool whose worker program is exe, as given, made in the current directory; its two
 * tasks run in two workers, the second started after the current directory changed to
 * later_dir: the path was resolved once, when the pool was made. */
static void run_from(const char *exe, const WCHAR *later_dir) {
  pp_pool_options o;
  pp_pool *pool;
  pp_result r;
  int i, err;

  pp_pool_options_init(&o);
  o.start_method = PP_START_SPAWN;
  o.workers = 1;
  o.max_tasks_per_worker = 1;
  o.worker_executable = exe;
  err = pp_pool_new(&pool, NULL, &o);
  ASSERT_EQ_INT_MSG(err, 0, exe);
  ASSERT_TRUE(SetCurrentDirectoryW(later_dir));
  for (i = 0; i < 2; i++) {
    ASSERT_EQ_INT_MSG(APPLY(pool, "echo", "form", 4, &r), 0, exe);
    ASSERT_EQ_MEM(r.data, r.len, "form", 4);
    pp_result_free(&r);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* worker_executable root-relative ("\dir\app.exe", "/dir/app.exe"), drive-relative
 * ("Z:app.exe", in Z:'s current directory, also while the current directory is on
 * another drive), relative ("app.exe", ".\app.exe", "..\dir\app.exe") and absolute: each
 * names this program, as Windows resolves it. */
void test_win_path_forms(void) {
  WCHAR wexe[4096], wdir[4096], saved[4096], drive_var[4] = L"=?:";
  char exe[4096], form[4096], *name, *slash;
  size_t i;

  ASSERT_TRUE(GetCurrentDirectoryW(4096, saved) > 0);
  ASSERT_TRUE(GetModuleFileNameW(NULL, wexe, 4096) > 0);
  narrow(wexe, exe, sizeof(exe));
  own_dir(wdir, 4096);
  ASSERT_TRUE(exe[1] == ':' && exe[2] == '\\');
  name = strrchr(exe, '\\') + 1;

  run_from(exe, saved);
  ASSERT_TRUE(SetCurrentDirectoryW(wdir));
  run_from(exe + 2, saved);

  snprintf(form, sizeof(form), "%s", exe + 2);
  for (i = 0; form[i] != '\0'; i++)
    if (form[i] == '\\')
      form[i] = '/';
  ASSERT_TRUE(SetCurrentDirectoryW(wdir));
  run_from(form, saved);

  snprintf(form, sizeof(form), "%c:%s", exe[0], name);
  ASSERT_TRUE(SetCurrentDirectoryW(wdir));
  run_from(form, saved);

  ASSERT_TRUE(SetCurrentDirectoryW(wdir));
  run_from(name, saved);
  snprintf(form, sizeof(form), ".\\%s", name);
  ASSERT_TRUE(SetCurrentDirectoryW(wdir));
  run_from(form, saved);
  /* "..\test\run-tests.exe" from the program's own folder. */
  *(name - 1) = '\0';
  slash = strrchr(exe, '\\');
  snprintf(form, sizeof(form), "..\\%s\\%s", slash + 1, name);
  ASSERT_TRUE(SetCurrentDirectoryW(wdir));
  run_from(form, saved);

  /* Drive-relative while the current directory is on another drive: the drive's own
   * current directory is the one its "=Z:" variable names, as cmd.exe keeps them. */
  if (exe[0] != 'C' && exe[0] != 'c' && SetCurrentDirectoryW(L"C:\\")) {
    drive_var[1] = (WCHAR) exe[0];
    ASSERT_TRUE(SetEnvironmentVariableW(drive_var, wdir));
    snprintf(form, sizeof(form), "%c:%s", exe[0], name);
    run_from(form, saved);
    ASSERT_TRUE(SetEnvironmentVariableW(drive_var, NULL));
  }
}

/* ---- win-not-a-program: a worker_executable that is not a program -------------------- */

/* pp_pool_new, with what it printed on stderr in said. */
static int pool_new_said(pp_pool **pool, const pp_pool_options *o, const char *log,
                         char *said, size_t size) {
  int saved, fd, err;
  FILE *f;
  size_t n;

  fflush(stderr);
  saved = _dup(2);
  ASSERT_TRUE(saved >= 0);
  f = fopen(log, "w");
  ASSERT_NOT_NULL(f);
  fd = _fileno(f);
  ASSERT_EQ_INT(_dup2(fd, 2), 0);
  err = pp_pool_new(pool, NULL, o);
  fflush(stderr);
  ASSERT_EQ_INT(_dup2(saved, 2), 0);
  _close(saved);
  fclose(f);
  f = fopen(log, "r");
  ASSERT_NOT_NULL(f);
  n = fread(said, 1, size - 1, f);
  said[n] = '\0';
  fclose(f);
  remove(log);
  fprintf(stderr, "pp_pool_new said: %s", said);
  return err;
}

/* A text file given as the worker program fails pp_pool_new with UV_EFTYPE, saying that
 * it is not a program, where libuv 1.44 gives UNKNOWN. */
void test_win_not_a_program(void) {
  char path[256], log[256], said[2048];
  pp_pool_options o;
  pp_pool *pool = NULL;
  FILE *f;

  test_marker_path(path, sizeof(path), "not-a-program.txt");
  test_marker_path(log, sizeof(log), "not-a-program.log");
  f = fopen(path, "w");
  ASSERT_NOT_NULL(f);
  fputs("This is a text file, not a program.\n", f);
  fclose(f);
  pp_pool_options_init(&o);
  o.start_method = PP_START_SPAWN;
  o.workers = 1;
  o.worker_executable = path;
  ASSERT_EQ_INT(pool_new_said(&pool, &o, log, said, sizeof(said)), UV_EFTYPE);
  ASSERT_NULL(pool);
  ASSERT_CONTAINS(said, strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path);
  ASSERT_CONTAINS(said, "is not a program");
  remove(path);
}

/* ---- win-launcher-cmd-chars: cmd /c runs a worker program whose path has every
 * character cmd.exe reads as its own ------------------------------------------------- */

/* A copy of this program in a folder whose name has & ( ) ^ ! % and a %NAME% of a set
 * variable, run through cmd /c: cmd runs it, and hands it its mark, untouched. */
void test_win_launcher_cmd_chars(void) {
  static const char *const launcher[] = { "cmd", "/c", NULL };
  char self[4096], dir[4096], copy[4200];
  size_t size = sizeof(self);
  pp_pool_options o;
  pp_pool *pool;
  pp_result r;
  uv_fs_t req;
  int err;

  ASSERT_EQ_INT(uv_exepath(self, &size), 0);
  size = sizeof(dir);
  ASSERT_EQ_INT(uv_os_tmpdir(dir, &size), 0);
  snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir),
           "\\pp & (x) ^ 50%%PATH%% !y %% %ld", (long) uv_os_getpid());
  /* A run that failed half-way may have left the directory (pids repeat under wine). */
  err = uv_fs_mkdir(NULL, &req, dir, 0700, NULL);
  uv_fs_req_cleanup(&req);
  if (err != UV_EEXIST)
    ASSERT_EQ_INT(err, 0);
  snprintf(copy, sizeof(copy), "%s\\run tests & ^%%.exe", dir);
  ASSERT_EQ_INT(uv_fs_copyfile(NULL, &req, self, copy, 0, NULL), 0);
  uv_fs_req_cleanup(&req);

  pp_pool_options_init(&o);
  o.start_method = PP_START_SPAWN;
  o.workers = 1;
  o.worker_launcher = launcher;
  o.worker_executable = copy;
  pool = NEW_POOL(NULL, &o);
  ASSERT_EQ_INT(APPLY(pool, "echo", "cmd", 3, &r), 0);
  ASSERT_EQ_MEM(r.data, r.len, "cmd", 3);
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  uv_fs_unlink(NULL, &req, copy, NULL);
  uv_fs_req_cleanup(&req);
  uv_fs_rmdir(NULL, &req, dir, NULL);
  uv_fs_req_cleanup(&req);
}

#endif
