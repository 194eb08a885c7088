/* Small OS details the core needs, behind neutral names. Implemented in src/unix/os.c
 * and src/win/os.c. */
#ifndef PP_OS_H
#define PP_OS_H

#include <stddef.h>
#include <stdint.h>

#include "procpool.h"

/* Once per pool, in the parent: on Unix, SIGPIPE to SIG_IGN if it is SIG_DFL. */
void pp__os_parent_init(void);

/* Describes how a process ended, as libuv reports it, in words: "exited with code 3",
 * "killed by signal 11 (SIGSEGV)", on Windows "ended with 0xC0000005 (access
 * violation)". */
void pp__os_describe_exit(int64_t exit_status, int term_signal, char *buf, size_t size);

/* The method PP_START_DEFAULT means on this OS. */
pp_start_method pp__os_default_method(void);

/* 0 when the method can be used here, else PP_ENOTSUP. */
int pp__os_method_supported(pp_start_method m);

/* A hint that [p, p + len) is a large buffer about to be filled: on Linux, transparent
 * huge pages, which spare a 64 MiB message some 16000 page faults. */
void pp__os_advise_large(void *p, size_t len);

/* The usable size of a block malloc returned (at least what was asked), or 0 where the
 * C library cannot tell. */
size_t pp__os_alloc_size(void *p);

/* Whether path is absolute: "/..." on Unix; a drive ("C:\...") or a share on Windows. */
int pp__os_path_is_absolute(const char *path);

/* path as an absolute path, in buf (of size bytes), resolved against the current
 * directory as the OS resolves it for a file call. Returns 0, UV_EINVAL (on Windows: not
 * UTF-8), UV_ENAMETOOLONG, or the OS's error. */
int pp__os_full_path(const char *path, char *buf, size_t size);

/* The signal that kills a worker at once (SIGKILL; TerminateProcess on Windows). */
int pp__os_kill_signal(void);

#endif
