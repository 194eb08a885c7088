/* procpool.h on its own in strict ISO C with no feature macros: built as C99 and as C11
 * with -Wpedantic (test/meson.build), where uv.h cannot be included (on Unix it needs
 * POSIX types that strict ISO C hides). Nothing here runs; it only has to compile. */
#include <procpool.h>

int pp__header_strict(void);

int pp__header_strict(void) {
  pp_pool_options opts;
  pp_pool_options_init(&opts);
  return pp_pool_new(NULL, NULL, &opts);
}
