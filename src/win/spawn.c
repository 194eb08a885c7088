/* The spawn start method on Windows. uv_spawn is not used: it calls CreateProcessW with
 * bInheritHandles and no list, so every worker inherited every inheritable handle of the
 * parent (an application's pipe never reached end-of-file, its files could not be deleted
 * while workers lived, and a worker started on one thread took the channel another thread
 * was handing to its own worker at that moment); and the job object it puts children in
 * lets their own children break away. Here a worker gets exactly four handles, through
 * PROC_THREAD_ATTRIBUTE_HANDLE_LIST: stdin on the null device, the parent's stdout and
 * stderr, and its end of a duplex named pipe, whose value follows procpool's mark on its
 * command line (src/win/channel.c reads it). It is born in a job object of its own (see
 * pp__win_job_new), so neither it nor anything it starts outlives the parent, and ending
 * the worker ends its whole tree. Behind a launcher (worker_launcher) the launcher is the
 * process started so, with the channel as its stdin and stdout instead, and the mark says
 * so: the launcher's worker is in the same job. A wait
 * on the system thread pool sees it end and wakes the loop through a uv_async_t: no
 * WaitForMultipleObjects, whose 64 handles would cap a pool. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "win.h"

#include "../os.h"
#include "../serve.h"
#include "../methods.h"

/* The exit code TerminateProcess gives a worker the pool kills. With the kill recorded, it
 * tells that end from an exit of the worker's own; 137 is what a Unix shell shows for a
 * process killed by SIGKILL. */
#define PP__WIN_KILLED 137u

/* Names tried for a worker's pipe before giving up, when another process holds each. */
#define PP__WIN_PIPE_TRIES 16

/* The handles a worker inherits, in this order. */
enum { PP__WIN_STDIN, PP__WIN_STDOUT, PP__WIN_STDERR, PP__WIN_CHANNEL, PP__WIN_NHANDLES };

/* Windows 10 and Server 2016 name this attribute; older SDK settings hide it. */
#ifndef PROC_THREAD_ATTRIBUTE_JOB_LIST
#  define PROC_THREAD_ATTRIBUTE_JOB_LIST ProcThreadAttributeValue(13, FALSE, TRUE, FALSE)
#endif

/* Set by a test only: start workers as Windows before 10 does, without a job list. */
int pp__win_no_job_list;

/* A worker's own job. Its one handle is this process's, never inherited nor handed out,
 * so it closes when the process ends, however it ends, and the job then kills the worker
 * and every process it started: no breakaway is allowed. Ending the worker ends the job
 * (TerminateJobObject), so a launcher's worker ends with the launcher. Windows 8 and
 * later nest jobs, so this works in a process that is itself in a job (a CI runner's, a
 * service manager's). An unhandled exception ends a worker at once rather than waiting on
 * Windows Error Reporting. Returns 0 or a Win32 error. */
static DWORD pp__win_job_new(HANDLE *out) {
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION info;
  HANDLE job;
  DWORD err;

  *out = NULL;
  job = CreateJobObjectW(NULL, NULL);
  if (job == NULL)
    return GetLastError();
  memset(&info, 0, sizeof(info));
  info.BasicLimitInformation.LimitFlags =
      JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION;
  if (!SetInformationJobObject(job, JobObjectExtendedLimitInformation, &info,
                               sizeof(info))) {
    err = GetLastError();
    CloseHandle(job);
    return err;
  }
  *out = job;
  return 0;
}

/* The worker's command line: "<app>" --procpool-worker=<handle>, or NULL when out of
 * memory. The CRT reads a program's name by a rule of its own: from an opening quote to
 * the next quote, backslashes included. Quoting the whole path is therefore exact for any
 * path without a quote, spaces and all; the caller refuses one with a quote (Windows
 * allows none in a file's name). The mark is ASCII and needs no quoting. */
static WCHAR *pp__win_command_line(const WCHAR *app, uintptr_t channel) {
  char mark[sizeof(PP__WORKER_MARK) + 24];
  size_t alen = wcslen(app), mlen, i;
  WCHAR *cmd;

  snprintf(mark, sizeof(mark), " %s%llu", PP__WORKER_MARK, (unsigned long long) channel);
  mlen = strlen(mark);
  cmd = (WCHAR *) malloc((alen + mlen + 3) * sizeof(WCHAR));
  if (cmd == NULL)
    return NULL;
  cmd[0] = L'"';
  memcpy(cmd + 1, app, alen * sizeof(WCHAR));
  cmd[alen + 1] = L'"';
  for (i = 0; i <= mlen; i++)
    cmd[alen + 2 + i] = (WCHAR) mark[i];
  return cmd;
}

/* Appends arg to buf, quoted as the C runtime's argument parser reads it back (the
 * rules of CommandLineToArgvW: backslashes are literal except before a quote). Returns
 * the new length; the caller sized buf for the worst case, 2 * len + 3 per argument. */
static size_t pp__win_quote(char *buf, size_t used, const char *arg) {
  size_t slashes = 0;
  const char *p;

  if (used > 0)
    buf[used++] = ' ';
  if (arg[0] != '\0' && strpbrk(arg, " \t\n\v\"") == NULL) {
    memcpy(buf + used, arg, strlen(arg));
    return used + strlen(arg);
  }
  buf[used++] = '"';
  for (p = arg;; p++) {
    if (*p == '\\') {
      slashes++;
      continue;
    }
    /* Before a quote or the closing quote, each backslash is doubled. */
    if (*p == '"' || *p == '\0') {
      memset(buf + used, '\\', slashes * 2 + (*p == '"'));
      used += slashes * 2 + (*p == '"');
    } else {
      memset(buf + used, '\\', slashes);
      used += slashes;
    }
    slashes = 0;
    if (*p == '\0')
      break;
    buf[used++] = *p;
  }
  buf[used++] = '"';
  return used;
}

/* Whether the launcher is cmd.exe, which reads the rest of its line after /c or /k as a
 * command of its own: the argument that ends cmd's switches, or 0 when it is none. */
static size_t pp__win_cmd_switch(char *const *launcher) {
  const char *base = launcher[0], *p;
  size_t i;

  for (p = launcher[0]; *p != '\0'; p++)
    if (*p == '\\' || *p == '/' || *p == ':')
      base = p + 1;
  if (_stricmp(base, "cmd") != 0 && _stricmp(base, "cmd.exe") != 0)
    return 0;
  for (i = 1; launcher[i] != NULL; i++)
    if (_stricmp(launcher[i], "/c") == 0 || _stricmp(launcher[i], "/k") == 0)
      return i;
  return 0;
}

/* Escapes buf[from, used) in place for cmd.exe's reading of a command, so that it hands
 * the program exactly that text; the caller sized buf for 8 bytes per byte. A caret makes
 * cmd take the next character as it is, outside quotes, and the quotes are escaped too,
 * so that cmd sees no quoted part at all and every & | < > ( ) ^ ! stays the program's.
 * A caret cannot stop cmd from expanding %NAME% on a command line (wine's cmd expands
 * %NAME^% too): a % becomes "%%cd:~,%" instead, a % that starts no name followed by an
 * empty part of %cd%, which cmd expands to nothing. Returns the new length. */
static size_t pp__win_cmd_escape(char *buf, size_t from, size_t used) {
  static const char percent[] = "%%cd:~,%";
  size_t n = 0, i, at;

  for (i = from; i < used; i++)
    n += buf[i] == '%' ? sizeof(percent) - 1 : strchr("\"^&|<>()!", buf[i]) != NULL ? 2 : 1;
  at = from + n;
  /* From the end, so that nothing is overwritten before it is read. */
  for (i = used; i-- > from;) {
    if (buf[i] == '%') {
      at -= sizeof(percent) - 1;
      memcpy(buf + at, percent, sizeof(percent) - 1);
    } else if (strchr("\"^&|<>()!", buf[i]) != NULL) {
      at -= 2;
      buf[at + 1] = buf[i];
      buf[at] = '^';
    } else {
      buf[--at] = buf[i];
    }
  }
  return from + n;
}

/* A launcher's command line: its arguments, the worker program and the mark, each
 * quoted; in *out (to free). Behind cmd /c (or /k), what cmd reads as the command is
 * escaped for cmd as well. Returns 0, UV_EINVAL (not UTF-8) or UV_ENOMEM. */
static int pp__win_launcher_line(const pp_pool *pool, WCHAR **out) {
  char mark[sizeof(PP__WORKER_MARK) + 8];
  size_t size = 0, used = 0, from, i, cmd_switch = pp__win_cmd_switch(pool->launcher);
  char *buf;
  int err;

  snprintf(mark, sizeof(mark), "%s%s", PP__WORKER_MARK, PP__CHAN_STDIO);
  for (i = 0; pool->launcher[i] != NULL; i++)
    size += 2 * strlen(pool->launcher[i]) + 3;
  size += 2 * strlen(pool->exe) + 3 + strlen(mark) + 1 + 1;
  /* cmd's escapes make at most 8 bytes of each. */
  if (cmd_switch != 0)
    size *= 8;
  buf = (char *) malloc(size);
  if (buf == NULL)
    return UV_ENOMEM;
  for (i = 0; pool->launcher[i] != NULL; i++) {
    from = used;
    used = pp__win_quote(buf, used, pool->launcher[i]);
    if (cmd_switch != 0 && i > cmd_switch)
      used = pp__win_cmd_escape(buf, from, used);
  }
  from = used;
  used = pp__win_quote(buf, used, pool->exe);
  used = pp__win_quote(buf, used, mark);
  if (cmd_switch != 0)
    used = pp__win_cmd_escape(buf, from, used);
  buf[used] = '\0';
  err = pp__win_widen(buf, out);
  free(buf);
  return err;
}

/* A connected duplex pipe: the parent's end overlapped, for libuv's completion port; the
 * worker's synchronous, for its plain blocking reads and writes. Neither is inheritable.
 * The name is unique to this process and call; the pipe takes one instance only, and the
 * worker's end is opened at once, so no other process can come between the two ends: if
 * one took the name or connected first, this fails with the name taken or busy, and the
 * next name is tried. Returns 0 or a Win32 error. */
static DWORD pp__win_pipe_pair(HANDLE *parent_end, HANDLE *worker_end) {
  static volatile LONG counter;
  char name[96];
  HANDLE server, client;
  DWORD err = ERROR_PIPE_BUSY;
  int i;

  for (i = 0; i < PP__WIN_PIPE_TRIES; i++) {
    snprintf(name, sizeof(name), "\\\\.\\pipe\\procpool-%lu-%ld",
             (unsigned long) GetCurrentProcessId(), (long) InterlockedIncrement(&counter));
    server = CreateNamedPipeA(name,
                              PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED |
                                  FILE_FLAG_FIRST_PIPE_INSTANCE,
                              PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT |
                                  PIPE_REJECT_REMOTE_CLIENTS,
                              1, 65536, 65536, 0, NULL);
    if (server == INVALID_HANDLE_VALUE) {
      err = GetLastError();
      if (err == ERROR_ACCESS_DENIED || err == ERROR_PIPE_BUSY)
        continue;
      return err;
    }
    client = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0,
                         NULL);
    if (client != INVALID_HANDLE_VALUE) {
      *parent_end = server;
      *worker_end = client;
      return 0;
    }
    err = GetLastError();
    CloseHandle(server);
    if (err != ERROR_PIPE_BUSY)
      return err;
  }
  return err;
}

/* A non-inheritable duplicate of the parent's stdout or stderr, as the C runtime's
 * descriptor fd names it (what uv_spawn handed down); the null device when there is none,
 * as in a program without a console. Returns 0 or a Win32 error (*out is then NULL). */
static DWORD pp__win_output(int fd, HANDLE *out) {
  HANDLE h = (HANDLE) uv_get_osfhandle(fd);

  if (h != INVALID_HANDLE_VALUE && h != NULL && (intptr_t) h != -2 &&
      DuplicateHandle(GetCurrentProcess(), h, GetCurrentProcess(), out, 0, FALSE,
                      DUPLICATE_SAME_ACCESS))
    return 0;
  *out = CreateFileW(L"NUL", GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                     OPEN_EXISTING, 0, NULL);
  if (*out != INVALID_HANDLE_VALUE)
    return 0;
  *out = NULL;
  return GetLastError();
}

/* Before Windows 10: puts pi's process, created suspended as this thread's debuggee, in
 * job, then lets it go. Until it is let go, this process's end kills it; once in its job,
 * the job's end does. It ran nothing yet, so it made no debug event and started nothing.
 * Returns 0 or a Win32 error (the caller then terminates it, which also lets it go). */
static DWORD pp__win_attach_job(HANDLE job, const PROCESS_INFORMATION *pi) {
  if (!AssignProcessToJobObject(job, pi->hProcess))
    return GetLastError();
  if (!DebugActiveProcessStop(pi->dwProcessId))
    return GetLastError();
  return 0;
}

/* On a thread of the system's pool, once the process has ended. */
static VOID CALLBACK pp__win_on_signalled(PVOID data, BOOLEAN timed_out) {
  pp__worker *w = (pp__worker *) data;

  (void) timed_out;
  uv_async_send(&w->m.win.ended);
}

static void pp__win_on_ended(uv_async_t *async) {
  pp__worker *w = (pp__worker *) async->data;
  DWORD code = 0;
  int sig = 0;
  BOOL ok;

  if (w->m.win.reported)
    return;
  w->m.win.reported = 1;
  ok = GetExitCodeProcess((HANDLE) w->m.win.process, &code);
  assert(ok);
  (void) ok;
  if (w->m.win.killed && code == PP__WIN_KILLED)
    sig = pp__os_kill_signal();
  pp__worker_on_exit(w, (int64_t) code, sig);
}

static int pp__win_spawn_start(pp__worker *w, char *why, size_t why_size) {
  pp_pool *pool = w->pool;
  HANDLE inherit[PP__WIN_NHANDLES] = { NULL, NULL, NULL, NULL };
  HANDLE server = NULL, job = NULL, waiter;
  STARTUPINFOEXW si;
  PROCESS_INFORMATION pi;
  SIZE_T attr_size = 0;
  WCHAR *app = NULL, *cmd = NULL;
  const char *step;
  DWORD syserr = 0;
  uv_fs_t req;
  size_t nhandles = PP__WIN_NHANDLES;
  DWORD flags = CREATE_SUSPENDED | EXTENDED_STARTUPINFO_PRESENT;
  int err, fd, i, job_list = 0;

  memset(&si, 0, sizeof(si));
  memset(&pi, 0, sizeof(pi));
  step = "cannot watch it";
  err = uv_async_init(pool->loop, &w->m.win.ended, pp__win_on_ended);
  if (err != 0)
    goto done;
  w->m.win.ended.data = w;
  w->open_handles++;

  step = "its path has a quote in it, or is not UTF-8";
  if (strchr(pool->exe, '"') != NULL) {
    err = UV_EINVAL;
    goto done;
  }
  /* A launcher is found as a shell would find it (CreateProcessW searches PATH when it is
   * given no application name). */
  if (pool->launcher == NULL)
    err = pp__win_widen(pool->exe, &app);
  else
    err = pp__win_launcher_line(pool, &cmd);
  if (err != 0)
    goto done;

  step = "cannot make its job object";
  syserr = pp__win_job_new(&job);
  if (syserr != 0)
    goto done;
  w->m.win.job = job;

  step = "cannot make its channel";
  syserr = pp__win_pipe_pair(&server, &inherit[PP__WIN_CHANNEL]);
  if (syserr != 0)
    goto done;
  fd = uv_open_osfhandle(server);
  if (fd < 0) {
    err = UV_EMFILE;
    goto done;
  }
  /* From here the descriptor owns the parent's end; once open, w->pipe closes it. */
  server = NULL;
  err = uv_pipe_open(&w->pipe, fd);
  if (err != 0) {
    uv_fs_close(NULL, &req, fd, NULL);
    uv_fs_req_cleanup(&req);
    goto done;
  }
  if (pool->launcher != NULL) {
    /* The launcher's stdin and stdout are the channel, as two handles: a handle list
     * takes each handle once. */
    step = "cannot give it its channel as stdin and stdout";
    inherit[PP__WIN_STDIN] = inherit[PP__WIN_CHANNEL];
    inherit[PP__WIN_CHANNEL] = NULL;
    nhandles = PP__WIN_CHANNEL;
    if (!DuplicateHandle(GetCurrentProcess(), inherit[PP__WIN_STDIN], GetCurrentProcess(),
                         &inherit[PP__WIN_STDOUT], 0, FALSE, DUPLICATE_SAME_ACCESS)) {
      inherit[PP__WIN_STDOUT] = NULL;
      syserr = GetLastError();
      goto done;
    }
  } else {
    cmd = pp__win_command_line(app, (uintptr_t) inherit[PP__WIN_CHANNEL]);
    if (cmd == NULL) {
      err = UV_ENOMEM;
      goto done;
    }
  }

  step = "cannot open the null device or the parent's stdout and stderr for it";
  if (inherit[PP__WIN_STDIN] == NULL) {
    inherit[PP__WIN_STDIN] = CreateFileW(L"NUL", GENERIC_READ,
                                         FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                                         OPEN_EXISTING, 0, NULL);
    if (inherit[PP__WIN_STDIN] == INVALID_HANDLE_VALUE) {
      inherit[PP__WIN_STDIN] = NULL;
      syserr = GetLastError();
      goto done;
    }
  }
  if (inherit[PP__WIN_STDOUT] == NULL)
    syserr = pp__win_output(1, &inherit[PP__WIN_STDOUT]);
  if (syserr == 0)
    syserr = pp__win_output(2, &inherit[PP__WIN_STDERR]);
  if (syserr != 0)
    goto done;

  step = "cannot list the handles it inherits";
  /* The first call only sizes the list, and fails saying so. */
  InitializeProcThreadAttributeList(NULL, 2, 0, &attr_size);
  si.lpAttributeList = (LPPROC_THREAD_ATTRIBUTE_LIST) malloc(attr_size);
  if (si.lpAttributeList == NULL) {
    err = UV_ENOMEM;
    goto done;
  }
  if (!InitializeProcThreadAttributeList(si.lpAttributeList, 2, 0, &attr_size)) {
    syserr = GetLastError();
    free(si.lpAttributeList);
    si.lpAttributeList = NULL;
    goto done;
  }
  if (!UpdateProcThreadAttribute(si.lpAttributeList, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
                                 inherit, nhandles * sizeof(inherit[0]), NULL, NULL)) {
    syserr = GetLastError();
    goto done;
  }
  /* A child that lives outside its job for a moment is left behind, suspended for good,
   * by a parent that dies in that moment (TerminateProcess, or exit() on another thread):
   * so it is never outside. Windows 10 and later (and wine 8, where the test
   * win-parent-dies-starting finds none left) put it in its job as they create it.
   * Windows 8 and 8.1 reject the attribute: there it is created as this thread's debuggee
   * instead, which dies with its debugger's debug object, closed when this process ends,
   * until it joins its job and is let go (pp__win_attach_job). */
  job_list = !pp__win_no_job_list &&
             UpdateProcThreadAttribute(si.lpAttributeList, 0, PROC_THREAD_ATTRIBUTE_JOB_LIST,
                                       &job, sizeof(job), NULL, NULL);
  if (!job_list)
    flags |= DEBUG_ONLY_THIS_PROCESS;
  /* A handle list takes only inheritable handles. These become so at the last moment and
   * are closed right after: a process that another thread starts meanwhile without a list
   * of its own (system(), uv_spawn) inherits them, and should have as little time for it
   * as can be. */
  for (i = 0; i < (int) nhandles; i++)
    if (!SetHandleInformation(inherit[i], HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT)) {
      syserr = GetLastError();
      goto done;
    }

  step = "cannot start it";
  si.StartupInfo.cb = sizeof(si);
  si.StartupInfo.dwFlags = STARTF_USESTDHANDLES | STARTF_USESHOWWINDOW;
  /* A console window the worker may get (when its parent has none) stays hidden. */
  si.StartupInfo.wShowWindow = SW_HIDE;
  si.StartupInfo.hStdInput = inherit[PP__WIN_STDIN];
  si.StartupInfo.hStdOutput = inherit[PP__WIN_STDOUT];
  si.StartupInfo.hStdError = inherit[PP__WIN_STDERR];
  if (!CreateProcessW(app, cmd, NULL, NULL, TRUE, flags, NULL, NULL, &si.StartupInfo,
                      &pi)) {
    syserr = GetLastError();
    if (pp__win_errcode(syserr) == UV_EFTYPE)
      step = "it is not a program Windows can run (an .exe for this machine)";
    goto done;
  }
  w->m.win.process = pi.hProcess;
  w->pid = (long) pi.dwProcessId;
  if (!job_list) {
    step = "cannot put it in its job object";
    syserr = pp__win_attach_job(job, &pi);
    if (syserr != 0)
      goto done;
  }
  step = "cannot watch it";
  if (!RegisterWaitForSingleObject(&waiter, pi.hProcess, pp__win_on_signalled, w, INFINITE,
                                   WT_EXECUTEINWAITTHREAD | WT_EXECUTEONLYONCE)) {
    syserr = GetLastError();
    goto done;
  }
  w->m.win.wait = waiter;
  step = "cannot resume it";
  if (ResumeThread(pi.hThread) == (DWORD) -1)
    syserr = GetLastError();

done:
  for (i = 0; i < PP__WIN_NHANDLES; i++)
    if (inherit[i] != NULL)
      CloseHandle(inherit[i]);
  if (server != NULL)
    CloseHandle(server);
  if (si.lpAttributeList != NULL) {
    DeleteProcThreadAttributeList(si.lpAttributeList);
    free(si.lpAttributeList);
  }
  if (pi.hThread != NULL)
    CloseHandle(pi.hThread);
  free(app);
  free(cmd);
  if (err == 0 && syserr != 0)
    err = pp__win_errcode(syserr);
  if (err != 0) {
    /* Never resumed, it ran nothing: the core reports a failed start, not an exit. The
     * process handle and the wait are close()'s to release. */
    w->m.win.reported = 1;
    if (pi.hProcess != NULL) {
      TerminateProcess(pi.hProcess, PP__WIN_KILLED);
      if (!job_list)
        DebugActiveProcessStop(pi.dwProcessId);
    }
    if (pool->launcher != NULL)
      snprintf(why, why_size, "cannot start the launcher '%s' for the worker program "
               "'%s': %s: %s (%s)", pool->launcher[0], pool->exe, step, uv_strerror(err),
               uv_err_name(err));
    else
      snprintf(why, why_size, "cannot start the worker program '%s': %s: %s (%s)",
               pool->exe, step, uv_strerror(err), uv_err_name(err));
  }
  return err;
}

/* The whole job: behind a launcher, the worker it started ends with it (a worker stuck
 * in a task would never see its stdin end). */
static void pp__win_spawn_kill(pp__worker *w) {
  if (w->m.win.job != NULL && !w->m.win.reported &&
      TerminateJobObject((HANDLE) w->m.win.job, PP__WIN_KILLED))
    w->m.win.killed = 1;
}

static void pp__win_spawn_close(pp__worker *w) {
  /* Waits for a callback under way: it must not reach the async handle once closed. */
  if (w->m.win.wait != NULL)
    UnregisterWaitEx((HANDLE) w->m.win.wait, INVALID_HANDLE_VALUE);
  w->m.win.wait = NULL;
  if (w->m.win.process != NULL)
    CloseHandle((HANDLE) w->m.win.process);
  w->m.win.process = NULL;
  /* What the worker started and left running ends here with its job. */
  if (w->m.win.job != NULL)
    CloseHandle((HANDLE) w->m.win.job);
  w->m.win.job = NULL;
  if (w->m.handle.type == UV_ASYNC && !uv_is_closing(&w->m.handle))
    uv_close(&w->m.handle, pp__worker_on_handle_closed);
}

const pp__method_ops pp__spawn_ops = { NULL, NULL, pp__win_spawn_start, pp__win_spawn_kill,
                                       pp__win_spawn_close };
