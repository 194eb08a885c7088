/* The README's example, built so that it stays true. */
#include <stdio.h>
#include <string.h>

#include <procpool.h>

static int square(pp_call *call, const void *arg, size_t len) {
  int x;
  if (len != sizeof(x))
    return pp_fail(call, "square wants an int, got %zu bytes", len);
  memcpy(&x, arg, sizeof(x));
  x *= x;
  return pp_reply(call, &x, sizeof(x));
}

static const pp_task tasks[] = { { "square", square }, { NULL, NULL } };

int main(int argc, char **argv) {
  pp_pool *pool;
  pp_result r;
  int x = 7;

  pp_main(argc, argv, tasks);            /* first: in a worker, this never returns */
  pp_pool_new(&pool, NULL, NULL);        /* default method, one worker per CPU */
  if (pp_apply(pool, "square", &x, sizeof(x), &r) == 0)
    printf("%d\n", *(int *) r.data);
  else
    fprintf(stderr, "%s\n", r.message);  /* names the task, the worker, the cause */
  pp_result_free(&r);
  return pp_pool_close(pool, NULL, NULL);
}
