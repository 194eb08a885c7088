/* Futures from threads (issue 11): how many tasks per second a pool takes and answers
 * when T threads each submit futures and collect them with pp_future_wait_any, against
 * one thread doing the same, and against one thread's pp_submit with callbacks on a
 * private loop. Tiny tasks (an 8-byte echo), 2 workers, under each start method.
 *
 *   bench-threads [--tasks N] [--threads T] [--runs R] [--quick]
 *
 * Prints, for each case, the median and the best of R runs, in tasks per second. Exits 1
 * on any wrong result. Its own worker program. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

static int task_echo(pp_call *call, const void *arg, size_t len) {
  return pp_reply(call, arg, len);
}

static const pp_task tasks[] = { { "echo", task_echo }, { NULL, NULL } };

#define WINDOW 64

typedef struct job {
  pp_pool *pool;
  unsigned id;
  size_t n;
  int bad;
  uv_thread_t tid;
} job;

static void futures_thread(void *arg) {
  job *j = (job *) arg;
  pp_future *win[WINDOW];
  uint64_t xs[WINDOW];
  size_t nwin = 0, sent = 0, got = 0, at;

  while (got < j->n) {
    while (nwin < WINDOW && sent < j->n) {
      uint64_t x = ((uint64_t) j->id << 40) | sent++;
      if (pp_submit_future(j->pool, "echo", &x, sizeof(x), &win[nwin]) != 0) {
        j->bad = 1;
        return;
      }
      xs[nwin++] = x;
    }
    if (pp_future_wait_any(win, nwin, -1, &at) != 0) {
      j->bad = 1;
      return;
    }
    {
      const pp_result *r = pp_future_result(win[at]);
      if (r->status != 0 || r->len != sizeof(uint64_t) || memcmp(r->data, &xs[at], 8) != 0)
        j->bad = 1;
    }
    pp_future_free(win[at]);
    win[at] = win[nwin - 1];
    xs[at] = xs[nwin - 1];
    nwin--;
    got++;
  }
}

/* T threads of futures, n tasks each: tasks per second. */
static double run_futures(pp_start_method m, unsigned threads, size_t n, int *bad) {
  pp_pool_options opts;
  job *jobs = (job *) calloc(threads, sizeof(job));
  pp_pool *pool;
  uint64_t t0;
  unsigned i;

  pp_pool_options_init(&opts);
  opts.workers = 2;
  opts.start_method = m;
  if (jobs == NULL || pp_pool_new(&pool, NULL, &opts) != 0) {
    free(jobs);
    *bad = 1;
    return 0;
  }
  /* Warm: the pool's own thread and both workers are up before the clock starts. */
  {
    pp_future *f;
    uint64_t x = 0;
    if (pp_submit_future(pool, "echo", &x, 8, &f) == 0) {
      pp_future_wait(f, -1);
      pp_future_free(f);
    }
  }
  t0 = uv_hrtime();
  for (i = 0; i < threads; i++) {
    jobs[i].pool = pool;
    jobs[i].id = i + 1;
    jobs[i].n = n;
    uv_thread_create(&jobs[i].tid, futures_thread, &jobs[i]);
  }
  for (i = 0; i < threads; i++) {
    uv_thread_join(&jobs[i].tid);
    *bad |= jobs[i].bad;
  }
  t0 = uv_hrtime() - t0;
  pp_pool_close(pool, NULL, NULL);
  free(jobs);
  return (double) n * threads / ((double) t0 / 1e9);
}

static void count_cb(pp_pool *pool, pp_result *r, void *user) {
  (void) pool;
  if (r->status != 0)
    *(int *) user = 1;
}

/* One thread, pp_submit with a callback, pp_pool_wait: tasks per second. */
static double run_submit(pp_start_method m, size_t n, int *bad) {
  pp_pool_options opts;
  pp_pool *pool;
  uint64_t t0, x = 0;
  size_t i;

  pp_pool_options_init(&opts);
  opts.workers = 2;
  opts.start_method = m;
  if (pp_pool_new(&pool, NULL, &opts) != 0) {
    *bad = 1;
    return 0;
  }
  pp_submit(pool, "echo", &x, 8, count_cb, bad, NULL);
  pp_pool_wait(pool);
  t0 = uv_hrtime();
  for (i = 0; i < n; i++) {
    x = i;
    if (pp_submit(pool, "echo", &x, 8, count_cb, bad, NULL) != 0)
      *bad = 1;
  }
  pp_pool_wait(pool);
  t0 = uv_hrtime() - t0;
  pp_pool_close(pool, NULL, NULL);
  return (double) n / ((double) t0 / 1e9);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  static const pp_start_method methods[] = { PP_START_SPAWN, PP_START_FORK,
                                             PP_START_FORKSERVER };
  size_t n = 20000;
  unsigned threads = 8, runs = 5, r, c, mi;
  int bad = 0, i;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--tasks") == 0 && i + 1 < argc)
      n = (size_t) strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = (unsigned) strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = (unsigned) strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--quick") == 0)
      n = 500, runs = 1;
    else {
      fprintf(stderr, "usage: bench-threads [--tasks N] [--threads T] [--runs R] [--quick]\n");
      return 2;
    }
  }
  if (runs == 0 || runs > 100 || threads == 0 || threads > 256 || n == 0)
    return 2;
  printf("tasks per second, 8-byte echo, 2 workers; median (best) of %u runs\n", runs);
  for (mi = 0; mi < sizeof(methods) / sizeof(methods[0]); mi++) {
    double v[3][100];
    pp_pool *probe;
    pp_pool_options o;
    pp_pool_options_init(&o);
    o.workers = 1;
    o.start_method = methods[mi];
    if (pp_pool_new(&probe, NULL, &o) != 0)
      continue;
    pp_pool_close(probe, NULL, NULL);
    for (r = 0; r < runs; r++) {
      v[0][r] = run_submit(methods[mi], n * threads, &bad);
      v[1][r] = run_futures(methods[mi], 1, n * threads, &bad);
      v[2][r] = run_futures(methods[mi], threads, n, &bad);
    }
    for (c = 0; c < 3; c++)
      qsort(v[c], runs, sizeof(double), cmp_double);
    printf("%-10s pp_submit, 1 thread: %9.0f (%9.0f)   futures, 1 thread: %9.0f (%9.0f)   "
           "futures, %u threads: %9.0f (%9.0f)\n", pp_start_method_name(methods[mi]),
           v[0][runs / 2], v[0][runs - 1], v[1][runs / 2], v[1][runs - 1], threads,
           v[2][runs / 2], v[2][runs - 1]);
  }
  if (bad)
    fprintf(stderr, "bench-threads: a wrong result\n");
  return bad ? 1 : 0;
}
