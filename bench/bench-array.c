/* pp_map_array against pp_map (issue 13): 2,000,000 items (--items N) of 8 bytes, each a
 * uint64 that the task squares, through a pool of 2 workers (--method, default the
 * platform's default), in the same run: one warm-up run of each, then --runs runs of each
 * (5 by default), alternated so that a change in the machine's load falls on both. Prints
 * each run's items/s, the medians and their ratio. pp_map's time covers the call only:
 * its inputs are made before, its results checked and freed after (and the freed blocks
 * consolidated, see run_map). Exits 1 on any wrong result. --array-only leaves pp_map
 * out (to profile pp_map_array alone). Its own worker program. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

static int task_square(pp_call *call, const void *arg, size_t len) {
  uint64_t v;

  if (len != sizeof(v))
    return pp_fail(call, "want 8 bytes");
  memcpy(&v, arg, sizeof(v));
  v *= v;
  return pp_reply(call, &v, sizeof(v));
}

static const pp_task tasks[] = { { "square", task_square }, { NULL, NULL } };

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
  qsort(v, n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Volatile: a compiler may drop a malloc whose block is freed unused. */
static void *volatile consolidate;

static uint64_t item(size_t i) { return (uint64_t) i * 2654435761u + 7; }

/* One pp_map over the items: items/s, or 0 on a wrong result. */
static double run_map(pp_pool *pool, size_t n, const uint64_t *args, pp_input *in,
                      pp_result *out) {
  size_t i;
  uint64_t t0, t1, v;
  int status, bad = 0;

  for (i = 0; i < n; i++) {
    in[i].data = &args[i];
    in[i].len = sizeof(args[i]);
  }
  t0 = uv_hrtime();
  status = pp_map(pool, "square", n, in, out);
  t1 = uv_hrtime();
  for (i = 0; i < n; i++) {
    if (out[i].status != 0 || out[i].len != sizeof(v))
      bad = 1;
    else if (memcpy(&v, out[i].data, sizeof(v)), v != args[i] * args[i])
      bad = 1;
    pp_result_free(&out[i]);
  }
  /* Two million small results freed sit in glibc's fast bins until the next allocation
   * of a kilobyte or more consolidates them: some 15 ms, which would otherwise land in the
   * pp_map_array run that follows (its first batch's allocation). They are the cost of
   * freeing pp_map's results, which neither time covers, so they are paid here. */
  consolidate = malloc(64 * 1024);
  free(consolidate);
  if (status != 0 || bad) {
    fprintf(stderr, "bench-array: pp_map gave a wrong result (status %s)\n",
            pp_errname(status));
    return 0;
  }
  return (double) n / ((double) (t1 - t0) / 1e9);
}

/* One pp_map_array over the items: items/s, or 0 on a wrong result. */
static double run_array(pp_pool *pool, size_t n, const uint64_t *args, uint64_t *results,
                        int *statuses) {
  size_t i;
  uint64_t t0, t1;
  int status, bad = 0;

  memset(results, 0xff, n * sizeof(*results));
  memset(statuses, 0x55, n * sizeof(*statuses));
  t0 = uv_hrtime();
  status = pp_map_array(pool, "square", n, args, sizeof(*args), results, sizeof(*results),
                        statuses);
  t1 = uv_hrtime();
  for (i = 0; i < n; i++)
    if (statuses[i] != 0 || results[i] != args[i] * args[i])
      bad = 1;
  if (status != 0 || bad) {
    fprintf(stderr, "bench-array: pp_map_array gave a wrong result (status %s)\n",
            pp_errname(status));
    return 0;
  }
  return (double) n / ((double) (t1 - t0) / 1e9);
}

int main(int argc, char **argv) {
  size_t n = 2000000, runs = 5, i;
  unsigned workers = 2;
  pp_start_method method = PP_START_DEFAULT;
  pp_pool_options opts;
  pp_pool *pool;
  uint64_t *args, *results;
  int *statuses;
  pp_input *in;
  pp_result *out;
  double *rmap, *rarr, mmap, marr;
  int a, bad = 0, array_only = 0;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  for (a = 1; a < argc; a++) {
    if (strcmp(argv[a], "--items") == 0 && a + 1 < argc) {
      n = (size_t) strtoul(argv[++a], NULL, 10);
    } else if (strcmp(argv[a], "--runs") == 0 && a + 1 < argc) {
      runs = (size_t) strtoul(argv[++a], NULL, 10);
    } else if (strcmp(argv[a], "--workers") == 0 && a + 1 < argc) {
      workers = (unsigned) strtoul(argv[++a], NULL, 10);
    } else if (strcmp(argv[a], "--array-only") == 0) {
      array_only = 1;
    } else if (strcmp(argv[a], "--method") == 0 && a + 1 < argc) {
      a++;
      method = strcmp(argv[a], "fork") == 0 ? PP_START_FORK
               : strcmp(argv[a], "spawn") == 0 ? PP_START_SPAWN
               : strcmp(argv[a], "forkserver") == 0 ? PP_START_FORKSERVER
                                                     : PP_START_DEFAULT;
    } else {
      fprintf(stderr, "usage: bench-array [--items N] [--runs R] "
              "[--method fork|spawn|forkserver] [--workers W] [--array-only]\n");
      return 2;
    }
  }
  if (n == 0 || runs == 0)
    return 2;
  args = malloc(n * sizeof(*args));
  results = malloc(n * sizeof(*results));
  statuses = malloc(n * sizeof(*statuses));
  in = malloc(n * sizeof(*in));
  out = malloc(n * sizeof(*out));
  rmap = malloc(runs * sizeof(*rmap));
  rarr = malloc(runs * sizeof(*rarr));
  if (args == NULL || results == NULL || statuses == NULL || in == NULL || out == NULL ||
      rmap == NULL || rarr == NULL)
    return 1;
  for (i = 0; i < n; i++)
    args[i] = item(i);

  pp_pool_options_init(&opts);
  opts.start_method = method;
  opts.workers = workers;
  if (pp_pool_new(&pool, NULL, &opts) != 0) {
    fprintf(stderr, "bench-array: no pool\n");
    return 1;
  }
  printf("%zu items of 8 bytes (a uint64, squared), %u workers, %s; items/s, median of "
         "%zu runs each after one warm-up, pp_map and pp_map_array alternated\n", n, workers,
         pp_start_method_name(pp_pool_start_method(pool)), runs);
  /* The warm-up: workers started, pages touched, the pool's average task time known. */
  if ((!array_only && run_map(pool, n, args, in, out) == 0) ||
      run_array(pool, n, args, results, statuses) == 0)
    bad = 1;
  for (i = 0; i < runs && !bad; i++) {
    rmap[i] = array_only ? 1 : run_map(pool, n, args, in, out);
    rarr[i] = run_array(pool, n, args, results, statuses);
    if (rmap[i] == 0 || rarr[i] == 0)
      bad = 1;
    else if (array_only)
      printf("run %zu: pp_map_array %12.0f\n", i + 1, rarr[i]);
    else
      printf("run %zu: pp_map %12.0f   pp_map_array %12.0f\n", i + 1, rmap[i], rarr[i]);
  }
  pp_pool_close(pool, NULL, NULL);
  if (!bad) {
    mmap = median(rmap, runs);
    marr = median(rarr, runs);
    if (!array_only)
      printf("pp_map        %12.0f items/s (median)\n", mmap);
    printf("pp_map_array  %12.0f items/s (median)\n", marr);
    if (!array_only)
      printf("ratio         %12.2fx\n", marr / mmap);
  }
  free(args);
  free(results);
  free(statuses);
  free(in);
  free(out);
  free(rmap);
  free(rarr);
  return bad;
}
