/* Start costs from a big parent (issue 10): for every start method, from a small parent
 * and then, in the same run, from the same process after it touched a big heap (malloc
 * + memset, 2 GiB unless --heap-mib says otherwise):
 *   start    a pool of 2 made until its first result (pp_pool_new + pp_apply);
 *   replace  a pool of 1 whose worker is SIGKILLed: the kill until the next result, which
 *            only the replacement can give;
 *   stall    the loop's longest iteration while that replacement starts, on a caller's
 *            loop kept turning (an idle handle) so that every gap between two turns is
 *            time the loop stood still.
 * Each figure is the best and the median of --reps runs (5). --quick: a 64 MiB heap and
 * 2 runs, as a smoke test. It is its own worker program. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

#include "figure.h"

static int task_echo(pp_call *call, const void *arg, size_t len) {
  return pp_reply(call, arg, len);
}

static int task_pid(pp_call *call, const void *arg, size_t len) {
  uint64_t pid = (uint64_t) uv_os_getpid();

  (void) arg;
  (void) len;
  return pp_reply(call, &pid, sizeof(pid));
}

static const pp_task tasks[] = {
  { "echo", task_echo },
  { "pid", task_pid },
  { NULL, NULL },
};

static int failed;

static int check(int err, const char *what, const pp_result *r) {
  if (err == 0 && (r == NULL || r->status == 0))
    return 0;
  fprintf(stderr, "bench-big: %s: %s %s\n", what, pp_errname(err),
          r != NULL && r->message ? r->message : "");
  failed = 1;
  return -1;
}

static pp_pool *open_pool(pp_start_method m, unsigned n, uv_loop_t *loop) {
  pp_pool_options opts;
  pp_pool *pool = NULL;
  int err;

  pp_pool_options_init(&opts);
  opts.start_method = m;
  opts.workers = n;
  err = pp_pool_new(&pool, loop, &opts);
  /* A method this OS does not have (fork and forkserver on Windows) is no failure. */
  if (err == PP_ENOTSUP || check(err, "pp_pool_new", NULL) != 0)
    return NULL;
  return pool;
}

/* A pool of 2 until its first result. */
static void measure_start(pp_start_method m, figure *f) {
  pp_result r;
  uint64_t t0 = uv_hrtime();
  pp_pool *pool = open_pool(m, 2, NULL);
  int err;

  if (pool == NULL)
    return;
  err = pp_apply(pool, "echo", "x", 1, &r);
  if (check(err, "start: echo", &r) == 0)
    f->v[f->n++] = ms_since(t0);
  pp_result_free(&r);
  pp_pool_close(pool, NULL, NULL);
}

/* The loop's turns: the longest gap between two check callbacks. */
typedef struct stall {
  uv_idle_t idle;
  uv_check_t check;
  uint64_t last, longest;
} stall;

static void on_idle(uv_idle_t *h) { (void) h; }

static void on_check(uv_check_t *h) {
  stall *s = (stall *) h->data;
  uint64_t now = uv_hrtime();

  if (s->last != 0 && now - s->last > s->longest)
    s->longest = now - s->last;
  s->last = now;
}

typedef struct answer {
  int done;
  int status;
  int tries;
  uint64_t at;
} answer;

/* An echo sent right after the kill may reach the dying worker and fail with it: it is
 * sent again, until the replacement answers. */
static void on_result(pp_pool *pool, pp_result *r, void *user) {
  answer *a = (answer *) user;

  a->status = r->status;
  a->at = uv_hrtime();
  pp_result_free(r);
  if (a->status != 0 && ++a->tries < 10 &&
      pp_submit(pool, "echo", "y", 1, on_result, a, NULL) == 0)
    return;
  a->done = 1;
}

/* A pool of 1 on a loop of ours: SIGKILL its worker, then time until an echo is answered
 * (by the replacement: there is no other worker), and the loop's longest turn
 * meanwhile. */
static void measure_replace(pp_start_method m, figure *rep, figure *stalls) {
  uv_loop_t loop;
  pp_pool *pool;
  pp_result r;
  uint64_t pid = 0, t0;
  answer a;
  stall s;
  int err;

  if (uv_loop_init(&loop) != 0)
    return;
  pool = open_pool(m, 1, &loop);
  if (pool == NULL) {
    uv_loop_close(&loop);
    return;
  }
  err = pp_apply(pool, "pid", NULL, 0, &r);
  if (check(err, "replace: pid", &r) == 0 && r.len == sizeof(pid))
    memcpy(&pid, r.data, sizeof(pid));
  pp_result_free(&r);
  memset(&s, 0, sizeof(s));
  memset(&a, 0, sizeof(a));
  uv_idle_init(&loop, &s.idle);
  uv_check_init(&loop, &s.check);
  s.check.data = &s;
  uv_idle_start(&s.idle, on_idle);
  uv_check_start(&s.check, on_check);
  t0 = uv_hrtime();
  if (pid != 0 && uv_kill((int) pid, SIGKILL) == 0 &&
      check(pp_submit(pool, "echo", "y", 1, on_result, &a, NULL), "replace: submit",
            NULL) == 0) {
    while (!a.done)
      uv_run(&loop, UV_RUN_ONCE);
    if (a.status == 0) {
      rep->v[rep->n++] = (double) (a.at - t0) / 1e6;
      stalls->v[stalls->n++] = (double) s.longest / 1e6;
    } else {
      fprintf(stderr, "bench-big: no answer after the kill: %s\n", pp_errname(a.status));
      failed = 1;
    }
  }
  uv_idle_stop(&s.idle);
  uv_check_stop(&s.check);
  uv_close((uv_handle_t *) &s.idle, NULL);
  uv_close((uv_handle_t *) &s.check, NULL);
  pp_pool_close(pool, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

static const pp_start_method methods[] = { PP_START_SPAWN, PP_START_FORKSERVER,
                                           PP_START_FORK };
#define NMETHODS 3

typedef struct row {
  figure start, replace, stall;
} row;

static void run_all(row *rows, int reps) {
  int i, k;

  for (i = 0; i < NMETHODS; i++)
    for (k = 0; k < reps; k++) {
      measure_start(methods[i], &rows[i].start);
      measure_replace(methods[i], &rows[i].replace, &rows[i].stall);
    }
}

static void print_fig(const char *what, figure *small, figure *big) {
  double sb = best(small), bb = best(big), sm = median(small), bm = median(big);

  if (small->n == 0 && big->n == 0) {
    printf("  %-8s not available here\n", what);
    return;
  }

  printf("  %-8s small %8.2f ms (median %8.2f)   big %8.2f ms (median %8.2f)   "
         "big/small %5.2fx (medians %5.2fx)\n",
         what, sb, sm, bb, bm, sb > 0 ? bb / sb : 0, sm > 0 ? bm / sm : 0);
}

int main(int argc, char **argv) {
  size_t heap_mib = 2048;
  int reps = 5, i;
  row small[NMETHODS], big[NMETHODS];
  char *heap;
  uint64_t t0;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      heap_mib = 64;
      reps = 2;
    } else if (strcmp(argv[i], "--heap-mib") == 0 && i + 1 < argc) {
      heap_mib = (size_t) strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: bench-big [--quick] [--heap-mib N] [--reps N]\n");
      return 2;
    }
  }
  if (reps < 1 || reps > MAX_REPS)
    reps = 5;
  memset(small, 0, sizeof(small));
  memset(big, 0, sizeof(big));

  run_all(small, reps);
  t0 = uv_hrtime();
  heap = malloc(heap_mib << 20);
  if (heap == NULL) {
    fprintf(stderr, "bench-big: cannot allocate %zu MiB\n", heap_mib);
    return 1;
  }
  memset(heap, 1, heap_mib << 20);
  printf("heap: %zu MiB touched in %.0f ms; best and median of %d runs\n", heap_mib,
         ms_since(t0), reps);
  run_all(big, reps);

  for (i = 0; i < NMETHODS; i++) {
    printf("%s\n", pp_start_method_name(methods[i]));
    print_fig("start", &small[i].start, &big[i].start);
    print_fig("replace", &small[i].replace, &big[i].replace);
    print_fig("stall", &small[i].stall, &big[i].stall);
  }
  /* Kept live to the end, so the heap is not freed (or optimised away) early. */
  printf("(heap check %d)\n", heap[(heap_mib << 20) - 1]);
  free(heap);
  return failed;
}
