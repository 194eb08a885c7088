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

#else

#  include <windows.h>

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

#endif
