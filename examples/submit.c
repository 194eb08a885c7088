/* pp_submit on the application's own libuv loop: tasks run while the loop serves other
 * handles (here a timer), and every task's result arrives in a callback, once, whatever
 * happens to its worker. One task crashes its worker on purpose: it fails alone, and the
 * pool goes on with a new worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

static int square(pp_call *call, const void *arg, size_t len) {
  long x;

  if (len != sizeof(x))
    return pp_fail(call, "square wants a long, got %zu bytes", len);
  memcpy(&x, arg, sizeof(x));
  if (x == 13)
    abort();  /* an unlucky number: the worker dies, and only this task fails */
  x *= x;
  return pp_reply(call, &x, sizeof(x));
}

static const pp_task tasks[] = { { "square", square }, { NULL, NULL } };

static int pending;

static void on_result(pp_pool *pool, pp_result *r, void *user) {
  long x = (long) (intptr_t) user, y;

  if (r->status == 0) {
    memcpy(&y, r->data, sizeof(y));
    printf("%ld squared is %ld\n", x, y);
  } else {
    printf("%ld: %s (%s)\n", x, r->message, pp_errname(r->status));
  }
  /* The last result closes the pool; its callback tells when everything is gone. */
  if (--pending == 0)
    pp_pool_close(pool, NULL, NULL);
}

static void on_tick(uv_timer_t *timer) {
  (void) timer;
  printf("(the loop keeps serving its other handles meanwhile)\n");
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  uv_timer_t timer;
  pp_pool *pool;
  long x;
  int err;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  err = pp_pool_new(&pool, loop, NULL);
  if (err != 0) {
    fprintf(stderr, "pp_pool_new: %s (%s)\n", pp_strerror(err), pp_errname(err));
    return 1;
  }
  printf("start method: %s, %u workers\n", pp_start_method_name(pp_pool_start_method(pool)),
         pp_pool_workers(pool));
  for (x = 10; x < 16; x++) {
    err = pp_submit(pool, "square", &x, sizeof(x), on_result, (void *) (intptr_t) x, NULL);
    if (err != 0)
      fprintf(stderr, "pp_submit: %s\n", pp_strerror(err));
    else
      pending++;
  }
  uv_timer_init(loop, &timer);
  uv_timer_start(&timer, on_tick, 0, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *) &timer, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 1;
}
