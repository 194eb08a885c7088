/* An application's own DLL that links procpool's static library (Windows only; test
 * win-static-in-dll in test-win2.c loads it). It exports one function of its own, marked
 * as an MSVC or MinGW project marks its exports; none of procpool's functions may appear
 * beside it. */
#include <procpool.h>

__declspec(dllexport) int pp_test_app_function(void);

__declspec(dllexport) int pp_test_app_function(void) {
  /* A call into the library, so that its objects are linked in. */
  return pp_errname(PP_EINVAL)[0] == 'P' ? 42 : -1;
}
