/* The tiny application every consumer build of scripts/test-consumers.sh makes: it
 * squares four numbers in a pool and checks the results. It is its own worker program.
 * APP_OWN_LOOP: the pool delivers on the application's libuv loop. APP_OWN_LIBUV: the
 * application runs a libuv loop of its own beside a pool on procpool's loop (the Windows
 * DLL, which carries its own libuv). Neither: procpool.h alone, no uv.h. It compiles as
 * C99 or later and as C++11 or later. */
#include <stdio.h>
#include <string.h>

#include <procpool.h>
#if defined(APP_OWN_LOOP) || defined(APP_OWN_LIBUV)
#include <uv.h>
#endif

static int square(pp_call *call, const void *arg, size_t len) {
  long long v;
  if (len != sizeof v)
    return pp_fail(call, "square wants %u bytes, got %u", (unsigned)sizeof v, (unsigned)len);
  memcpy(&v, arg, sizeof v);
  v *= v;
  return pp_reply(call, &v, sizeof v);
}

static const pp_task tasks[] = {{"square", square}, {NULL, NULL}};

#ifdef APP_OWN_LIBUV
static int ticks;
static void on_tick(uv_timer_t *t) {
  ticks++;
  uv_close((uv_handle_t *)t, NULL);
}
#endif

int main(int argc, char **argv) {
  long long xs[4] = {3, -4, 5, 100000};
  pp_input in[4];
  pp_result out[4];
  pp_pool_options opts;
  pp_pool *pool = NULL;
  struct uv_loop_s *loop = NULL;
  const char *method;
  int err, i, bad = 0;

  err = pp_main(argc, argv, tasks);
  if (err != 0) {
    fprintf(stderr, "app: pp_main: %s\n", pp_strerror(err));
    return 1;
  }
#ifdef APP_OWN_LOOP
  loop = uv_default_loop();
#endif
  pp_pool_options_init(&opts);
  opts.workers = 2;
  err = pp_pool_new(&pool, loop, &opts);
  if (err != 0) {
    fprintf(stderr, "app: pp_pool_new: %s\n", pp_strerror(err));
    return 1;
  }
  method = pp_start_method_name(pp_pool_start_method(pool));
  for (i = 0; i < 4; i++) {
    in[i].data = &xs[i];
    in[i].len = sizeof xs[i];
  }
  err = pp_map(pool, "square", 4, in, out);
  for (i = 0; i < 4; i++) {
    long long got = 0;
    if (out[i].status == 0 && out[i].len == sizeof got)
      memcpy(&got, out[i].data, sizeof got);
    if (out[i].status != 0 || got != xs[i] * xs[i]) {
      fprintf(stderr, "app: square(%lld): status %s (%s), result %lld\n", xs[i],
              pp_errname(out[i].status), out[i].message ? out[i].message : "", got);
      bad = 1;
    }
    pp_result_free(&out[i]);
  }
  if (err != 0 && !bad) {
    fprintf(stderr, "app: pp_map: %s\n", pp_strerror(err));
    bad = 1;
  }
  err = pp_pool_close(pool, NULL, NULL);
  if (err != 0) {
    fprintf(stderr, "app: pp_pool_close: %s\n", pp_strerror(err));
    return 1;
  }
#ifdef APP_OWN_LOOP
  uv_run(loop, UV_RUN_DEFAULT);
  err = uv_loop_close(loop);
  if (err != 0) {
    fprintf(stderr, "app: uv_loop_close: %s\n", uv_strerror(err));
    return 1;
  }
#endif
#ifdef APP_OWN_LIBUV
  {
    uv_loop_t own;
    uv_timer_t timer;
    if (uv_loop_init(&own) != 0 || uv_timer_init(&own, &timer) != 0 ||
        uv_timer_start(&timer, on_tick, 1, 0) != 0 || uv_run(&own, UV_RUN_DEFAULT) != 0 ||
        uv_loop_close(&own) != 0 || ticks != 1) {
      fprintf(stderr, "app: the application's own libuv loop failed (ticks %d)\n", ticks);
      return 1;
    }
  }
#endif
  if (bad)
    return 1;
  printf("app: 4 squares from a pool of 2 (%s)\n", method);
  return 0;
}
