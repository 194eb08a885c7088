/* procpool.h names libuv's loop by its struct tag instead of including uv.h. These
 * declarations are the API as it was when the header included uv.h and took a
 * uv_loop_t *: C refuses a redeclaration whose type differs, so this file stops
 * compiling if the two ever part. uv.h comes second, as in a program that includes it
 * after procpool.h. */
#include <procpool.h>
#include <uv.h>

PP_EXTERN int pp_pool_new(pp_pool **pool, uv_loop_t *loop, const pp_pool_options *opts);

int pp__header_abi(uv_loop_t *loop);

/* A program's own uv_loop_t passes without a cast. */
int pp__header_abi(uv_loop_t *loop) {
  return pp_pool_new(NULL, loop, NULL);
}
