#include "../os.h"
#include "unix.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#if defined(__linux__)
#include <malloc.h>
#elif defined(__APPLE__)
#include <malloc/malloc.h>
#elif defined(__FreeBSD__)
#include <malloc_np.h>
#endif

void pp__os_parent_init(void) {
  struct sigaction sa;

  /* A worker that dies leaves a socket whose next write raises SIGPIPE, and libuv writes
   * with plain write(2). Ignoring it turns that into EPIPE; an application that installed
   * its own handler keeps it. */
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
      !(sa.sa_flags & SA_SIGINFO)) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

static const char *pp__signal_name(int sig) {
  switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    case SIGSYS: return "SIGSYS";
    default: return NULL;
  }
}

void pp__os_describe_exit(int64_t exit_status, int term_signal, char *buf, size_t size) {
  const char *name;

  if (term_signal == 0 && exit_status == -1) {
    snprintf(buf, size, "ended, but its exit status was collected elsewhere (a waitpid(-1) "
                        "or wait() in the program?)");
    return;
  }
  if (term_signal == 0 && exit_status == PP__EXIT_FORKSERVER_GONE) {
    snprintf(buf, size, "ended with its forkserver (its exit status is unknown)");
    return;
  }
  if (term_signal == 0 && exit_status == PP__EXIT_HELPER_GONE) {
    snprintf(buf, size, "ended with its pool's fork helper (its exit status is unknown)");
    return;
  }
  if (term_signal == 0) {
    snprintf(buf, size, "exited with code %lld", (long long) exit_status);
    return;
  }
  name = pp__signal_name(term_signal);
  if (name != NULL)
    snprintf(buf, size, "killed by signal %d (%s)", term_signal, name);
  else
    snprintf(buf, size, "killed by signal %d", term_signal);
}

/* fork is unsafe under macOS's system frameworks, so spawn is its default; elsewhere a
 * forkserver gives cheap starts and the same fresh state as spawn. */
pp_start_method pp__os_default_method(void) {
#if defined(__APPLE__)
  return PP_START_SPAWN;
#else
  return PP_START_FORKSERVER;
#endif
}

int pp__os_method_supported(pp_start_method m) {
  return m == PP_START_SPAWN || m == PP_START_FORK || m == PP_START_FORKSERVER ? 0
                                                                               : PP_ENOTSUP;
}

int pp__os_kill_signal(void) { return SIGKILL; }

void pp__os_advise_large(void *p, size_t len) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = (uintptr_t) 2 << 20;
  uintptr_t start = ((uintptr_t) p + huge - 1) & ~(huge - 1);
  uintptr_t end = ((uintptr_t) p + len) & ~(huge - 1);

  /* Only whole huge pages inside the block; a small block is not worth a system call. */
  if (len >= (size_t) 4 << 20 && end > start)
    madvise((void *) start, end - start, MADV_HUGEPAGE);
#else
  (void) p;
  (void) len;
#endif
}

size_t pp__os_alloc_size(void *p) {
#if defined(__linux__) || defined(__FreeBSD__)
  return malloc_usable_size(p);
#elif defined(__APPLE__)
  return malloc_size(p);
#else
  (void) p;
  return 0;
#endif
}

int pp__os_path_is_absolute(const char *path) { return path[0] == '/'; }

int pp__os_full_path(const char *path, char *buf, size_t size) {
  size_t len = size;
  int err;

  if (path[0] == '/') {
    buf[0] = '\0';
  } else {
    err = uv_cwd(buf, &len);
    if (err != 0)
      return err;
  }
  len = strlen(buf);
  if (snprintf(buf + len, size - len, "%s%s", len > 0 ? "/" : "", path) >=
      (int) (size - len))
    return UV_ENAMETOOLONG;
  return 0;
}
