// The consumers' application as C++ (-std=c++11 -Wpedantic -Werror), with a check that
// pp_pool_new is still the function it was when procpool.h included uv.h.
#include <type_traits>

#include <procpool.h>
#include <uv.h>

static_assert(std::is_same<decltype(&pp_pool_new),
                           int (*)(pp_pool **, uv_loop_t *, const pp_pool_options *)>::value,
              "pp_pool_new's signature changed");

#include "app.c"
