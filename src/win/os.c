#include "../os.h"

#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* Through uv.h: SIGKILL, which Windows's signal.h lacks (uv/win.h). */
#include "win.h"


/* Nothing to do. Windows has no SIGPIPE: a write to a worker that went away fails with an
 * error. The two things a Windows parent might want for its workers the spawn method does
 * (src/win/spawn.c): its job object ends a crashed worker at once (no Windows Error
 * Reporting dialog holding it), and kills every worker when the parent goes. */
void pp__os_parent_init(void) {}

typedef struct pp__status_name {
  uint32_t code;
  const char *text;
} pp__status_name;

/* Codes that a process ends with when an exception or a fatal error ends it: Windows'
 * NTSTATUS codes, and the one the Microsoft C++ runtime raises for a throw. */
static const pp__status_name pp__statuses[] = {
  { 0x40010004u, "terminated by a debugger, or by Windows at logoff or shutdown" },
  { 0x80000002u, "datatype misalignment" },
  { 0x80000003u, "breakpoint" },
  { 0xC0000005u, "access violation" },
  { 0xC0000006u, "in-page error: the file behind mapped memory became unreadable" },
  { 0xC0000017u, "out of memory" },
  { 0xC000001Du, "illegal instruction" },
  { 0xC0000025u, "noncontinuable exception" },
  { 0xC000008Cu, "array bounds exceeded" },
  { 0xC000008Du, "floating-point denormal operand" },
  { 0xC000008Eu, "floating-point division by zero" },
  { 0xC000008Fu, "floating-point inexact result" },
  { 0xC0000090u, "floating-point invalid operation" },
  { 0xC0000091u, "floating-point overflow" },
  { 0xC0000092u, "floating-point stack check" },
  { 0xC0000093u, "floating-point underflow" },
  { 0xC0000094u, "integer division by zero" },
  { 0xC0000095u, "integer overflow" },
  { 0xC0000096u, "privileged instruction" },
  { 0xC00000FDu, "stack overflow" },
  { 0xC0000135u, "a DLL the program needs was not found" },
  { 0xC0000139u, "an entry point was not found in a DLL" },
  { 0xC0000142u, "a DLL failed to initialize" },
  { 0xC000013Au, "Ctrl+C" },
  { 0xC0000374u, "heap corruption" },
  { 0xC0000409u, "stack buffer overrun or fast fail: a security check failed, or abort()" },
  { 0xC0000417u, "invalid parameter to a C runtime function" },
  { 0xC0000420u, "assertion failure" },
  { 0xE06D7363u, "a C++ exception that nothing caught" },
};

static const char *pp__status_text(uint32_t code) {
  size_t i;

  for (i = 0; i < sizeof(pp__statuses) / sizeof(pp__statuses[0]); i++)
    if (pp__statuses[i].code == code)
      return pp__statuses[i].text;
  return NULL;
}

static const char *pp__signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    default: return NULL;
  }
}

void pp__os_describe_exit(int64_t exit_status, int term_signal, char *buf, size_t size) {
  /* The process's exit code, a DWORD: reported as a non-negative number, and a cast
   * brings back its 32 bits whatever the sign on the way. */
  uint32_t code = (uint32_t) exit_status;
  const char *text;

  if (term_signal != 0) {
    /* The pool ended it with TerminateProcess (src/win/spawn.c), reported as the signal
     * that does so on Unix. */
    const char *name = pp__signal_name(term_signal);
    if (name != NULL)
      snprintf(buf, size, "killed by signal %d (%s: TerminateProcess)", term_signal, name);
    else
      snprintf(buf, size, "killed by signal %d (TerminateProcess)", term_signal);
    return;
  }
  text = pp__status_text(code);
  if (text != NULL) {
    snprintf(buf, size, "ended with exception 0x%08lX (%s)", (unsigned long) code, text);
  } else if ((code & 0x80000000u) != 0 && (code & 0x10000000u) == 0) {
    /* Shaped as an NTSTATUS: severity warning or error, reserved bit clear. An unhandled
     * exception ends a process with its code. The customer bit marks one a program
     * defined (RaiseException), not Windows. */
    if ((code & 0x20000000u) != 0)
      snprintf(buf, size, "ended with exception 0x%08lX (a code the program defined)",
               (unsigned long) code);
    else
      snprintf(buf, size, "ended with exception 0x%08lX", (unsigned long) code);
  } else if ((code & 0x80000000u) != 0) {
    /* The reserved bit set: no NTSTATUS but a negative int given to exit(); every one
     * from -1 down to -2^28 is so. The program's int, as it was given. */
    snprintf(buf, size, "exited with code %ld (0x%08lX)",
             (long) ((int64_t) code - 0x100000000), (unsigned long) code);
  } else if (code == 3) {
    /* The C runtime's abort() and raise() of a signal left at its default exit with 3
     * (the UCRT's abort() fast-fails instead where it can): which of those, or exit(3),
     * cannot be told from the code. */
    snprintf(buf, size, "exited with code 3 (exit(3), or abort() or raise() in the C "
                        "runtime)");
  } else {
    snprintf(buf, size, "exited with code %lu", (unsigned long) code);
  }
}

pp_start_method pp__os_default_method(void) { return PP_START_SPAWN; }

int pp__os_method_supported(pp_start_method m) {
  return m == PP_START_SPAWN ? 0 : PP_ENOTSUP;
}

/* src/win/spawn.c kills with TerminateProcess, and reports a worker it killed so as this
 * signal. */
int pp__os_kill_signal(void) { return SIGKILL; }

/* Windows commits large allocations in bulk already; there is no cheaper hint to give. */
void pp__os_advise_large(void *p, size_t len) {
  (void) p;
  (void) len;
}

size_t pp__os_alloc_size(void *p) { return _msize(p); }

int pp__os_path_is_absolute(const char *path) {
  if ((path[0] == '\\' || path[0] == '/') && (path[1] == '\\' || path[1] == '/'))
    return 1;
  return path[0] != '\0' && path[1] == ':' && (path[2] == '\\' || path[2] == '/');
}

/* Windows resolves every form itself, as it would for the program's own file calls: a
 * root-relative "\dir\app.exe" (or with slashes) on the current directory's drive, a
 * drive-relative "Z:app.exe" in that drive's current directory, "." and ".." parts.
 * The first call gets room for any path a program is likely to have, and a longer one
 * is asked again with the room the call said it needs (another thread's chdir() may
 * change that in between, hence a few tries). Not a call with no buffer first, to learn
 * the size: wine 8 answers that one wrongly for a drive-relative path whose drive has a
 * current directory of its own, and fails too for a buffer of 32768 characters. */
int pp__os_full_path(const char *path, char *buf, size_t size) {
  WCHAR *wide, *full = NULL;
  DWORD n, room = 4096;
  int err, tries;

  err = pp__win_widen(path, &wide);
  if (err != 0)
    return err;
  for (tries = 0;; tries++) {
    free(full);
    full = (WCHAR *) malloc((size_t) room * sizeof(WCHAR));
    if (full == NULL) {
      err = UV_ENOMEM;
      goto done;
    }
    n = GetFullPathNameW(wide, room, full, NULL);
    if (n == 0) {
      err = pp__win_errcode(GetLastError());
      goto done;
    }
    if (n < room)
      break;
    if (tries == 3) {
      err = UV_EAGAIN;
      goto done;
    }
    room = n;
  }
  if (size > (size_t) INT_MAX)
    size = INT_MAX;
  if (WideCharToMultiByte(CP_UTF8, 0, full, -1, buf, (int) size, NULL, NULL) == 0)
    err = UV_ENAMETOOLONG;

done:
  free(full);
  free(wide);
  return err;
}

int pp__win_widen(const char *s, WCHAR **out) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);

  *out = NULL;
  if (n <= 0)
    return UV_EINVAL;
  *out = (WCHAR *) malloc((size_t) n * sizeof(WCHAR));
  if (*out == NULL)
    return UV_ENOMEM;
  MultiByteToWideChar(CP_UTF8, 0, s, -1, *out, n);
  return 0;
}

int pp__win_errcode(DWORD err) {
  switch (err) {
  case ERROR_BAD_EXE_FORMAT:
  case ERROR_EXE_MACHINE_TYPE_MISMATCH:
  case ERROR_EXE_MARKED_INVALID:
  case ERROR_INVALID_EXE_SIGNATURE:
  case ERROR_BAD_FORMAT:
    return UV_EFTYPE;
  default:
    return uv_translate_sys_error((int) err);
  }
}
