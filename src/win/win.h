/* Small helpers the Windows files share: UTF-8 to UTF-16 and back, and Win32 errors as
 * the codes procpool returns. Implemented in src/win/os.c. */
#ifndef PP_WIN_H
#define PP_WIN_H

/* uv.h first: it brings winsock2.h, which must come before windows.h. */
#include <uv.h>

#include <windows.h>

/* s in UTF-16, in *out (to free). Returns 0, UV_EINVAL (s is not UTF-8) or UV_ENOMEM. */
int pp__win_widen(const char *s, WCHAR **out);

/* A Win32 error (GetLastError) as a libuv code. libuv 1.44 knows no code for a file that
 * is not a program (ERROR_BAD_EXE_FORMAT and its kin give UV_UNKNOWN): those are
 * UV_EFTYPE here, as later libuv releases make them. */
int pp__win_errcode(DWORD err);

#endif
