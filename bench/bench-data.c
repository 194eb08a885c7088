/* Data at memory speed (issue 13): large messages against memcpy, in the same process and
 * run, for every start method (or the one given with --method):
 *   memcpy      one memcpy of the size, between two buffers touched before (warm);
 *   echo        pp_apply of a task that replies with its own argument, the result freed
 *               before the next call (as a caller that processes each result would);
 *   echo-copy   the same with a task that first copies its argument into a buffer of its
 *               own and replies from there, so that the result is a new message;
 *   channel     echo with the transport off (shm_threshold PP_SHM_OFF): the socket path.
 * Each figure is the best and the median of --reps timed calls (5) after one not counted.
 * Sizes: 64 MiB and 1 GiB; --quick: 4 MiB and 2 reps, a smoke test. Each result
 * is checked against its argument. The ratio column is the figure over memcpy's best.
 * It is its own worker program. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

#include "figure.h"

static int task_echo(pp_call *call, const void *arg, size_t len) {
  return pp_reply(call, arg, len);
}

/* The worker's own buffer, kept between calls as a real task's working memory would be. */
static unsigned char *copy_buf;
static size_t copy_cap;

static int task_echo_copy(pp_call *call, const void *arg, size_t len) {
  if (len > copy_cap) {
    free(copy_buf);
    copy_buf = (unsigned char *) malloc(len);
    copy_cap = copy_buf ? len : 0;
    if (copy_buf == NULL)
      return pp_fail(call, "out of memory");
  }
  memcpy(copy_buf, arg, len);
  return pp_reply(call, copy_buf, len);
}

static const pp_task tasks[] = {
  { "echo", task_echo },
  { "echo_copy", task_echo_copy },
  { NULL, NULL },
};

static int reps = 5;

static void fill(unsigned char *p, size_t len) {
  uint32_t x = 2463534242u;
  size_t i;

  for (i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (unsigned char) x;
  }
}

static void report(const char *what, size_t size, figure *f, double base) {
  double b = best(f), m = median(f);

  printf("  %-10s %6lu MiB  best %8.2f ms  median %8.2f ms  %6.2fx memcpy  %6.2f GB/s\n",
         what, (unsigned long) (size >> 20), b, m, base > 0 ? b / base : 0,
         (double) size / (b / 1e3) / 1e9);
}

/* One call not counted, then reps timed; every result checked. Returns 0 or 1. */
static int time_apply(pp_pool *pool, const char *task, const unsigned char *arg,
                      size_t size, figure *f) {
  int i;

  f->n = 0;
  for (i = 0; i <= reps; i++) {
    pp_result r;
    uint64_t t0 = uv_hrtime();
    int err = pp_apply(pool, task, arg, size, &r);
    double ms = ms_since(t0);
    if (err != 0 || r.len != size || memcmp(r.data, arg, size) != 0) {
      fprintf(stderr, "bench-data: %s of %lu bytes: %s %s\n", task, (unsigned long) size,
              pp_errname(err), r.message ? r.message : "(wrong result)");
      pp_result_free(&r);
      return 1;
    }
    pp_result_free(&r);
    if (i > 0)
      f->v[f->n++] = ms;
  }
  return 0;
}

static int run_method(pp_start_method m, size_t size, double base, int channel_too) {
  pp_pool_options o;
  pp_pool *pool;
  unsigned char *arg = (unsigned char *) malloc(size);
  figure f;
  int bad = 0, err;

  if (arg == NULL)
    return 1;
  fill(arg, size);
  pp_pool_options_init(&o);
  o.workers = 1;
  o.start_method = m;
  o.max_message_bytes = size + ((size_t) 1 << 20);
  o.shm_max_bytes = 4 * size + ((size_t) 64 << 20);
  err = pp_pool_new(&pool, NULL, &o);
  if (err != 0) {
    fprintf(stderr, "bench-data: pp_pool_new: %s\n", pp_errname(err));
    free(arg);
    return 1;
  }
  bad |= time_apply(pool, "echo", arg, size, &f);
  if (!bad)
    report("echo", size, &f, base);
  bad |= time_apply(pool, "echo_copy", arg, size, &f);
  if (!bad)
    report("echo-copy", size, &f, base);
  pp_pool_close(pool, NULL, NULL);
  if (channel_too && !bad) {
    o.shm_threshold = PP_SHM_OFF;
    err = pp_pool_new(&pool, NULL, &o);
    if (err == 0) {
      bad |= time_apply(pool, "echo", arg, size, &f);
      if (!bad)
        report("channel", size, &f, base);
      pp_pool_close(pool, NULL, NULL);
    }
  }
  free(arg);
  return bad;
}

static double time_memcpy(size_t size) {
  unsigned char *a = (unsigned char *) malloc(size), *b = (unsigned char *) malloc(size);
  figure f;
  int i;

  if (a == NULL || b == NULL) {
    free(a);
    free(b);
    return -1;
  }
  memset(a, 1, size);
  memset(b, 2, size);
  f.n = 0;
  for (i = 0; i <= reps; i++) {
    uint64_t t0 = uv_hrtime();
    memcpy(b, a, size);
    if (i > 0)
      f.v[f.n++] = ms_since(t0);
    a[i] = b[size - 1 - (size_t) i];  /* the copy is used: not optimised away */
  }
  printf("  %-10s %6lu MiB  best %8.2f ms  median %8.2f ms\n", "memcpy",
         (unsigned long) (size >> 20), best(&f), median(&f));
  free(a);
  free(b);
  return best(&f);
}

int main(int argc, char **argv) {
  pp_start_method methods[] = { PP_START_SPAWN, PP_START_FORK, PP_START_FORKSERVER };
  size_t sizes[2] = { (size_t) 64 << 20, (size_t) 1 << 30 };
  size_t nsizes = sizeof(size_t) >= 8 ? 2 : 1, s, k;
  const char *only = NULL;
  int bad = 0, i, err;

  err = pp_main(argc, argv, tasks);
  if (err != 0)
    return 1;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      reps = 2;
      nsizes = 1;
      sizes[0] = (size_t) 4 << 20;
    } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = atoi(argv[++i]);
      if (reps < 1 || reps >= MAX_REPS)
        reps = 5;
    } else if (strcmp(argv[i], "--method") == 0 && i + 1 < argc) {
      only = argv[++i];
    }
  }
  printf("bench-data: best and median of %d calls after one not counted\n", reps);
  for (s = 0; s < nsizes; s++) {
    double base;
    printf("size %lu MiB\n", (unsigned long) (sizes[s] >> 20));
    base = time_memcpy(sizes[s]);
    for (k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
      pp_pool_options probe;
      pp_start_method m = methods[k];
      if (only != NULL && strcmp(only, pp_start_method_name(m)) != 0)
        continue;
      pp_pool_options_init(&probe);
      if (m != PP_START_SPAWN && pp_start_method_name(m) != NULL) {
        /* Fork and forkserver exist on Unix only. */
#ifdef _WIN32
        continue;
#endif
      }
      printf(" %s\n", pp_start_method_name(m));
      bad |= run_method(m, sizes[s], base, s == 0);
    }
  }
  return bad;
}
