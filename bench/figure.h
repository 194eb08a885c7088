/* A benchmark's figure: up to FIGURE_MAX_REPS timings, and their best and median. Shared by
 * the benchmarks that report both (bench-big.c, bench-data.c). */
#ifndef PP_BENCH_FIGURE_H
#define PP_BENCH_FIGURE_H

#include <stdint.h>
#include <stdlib.h>

#include <uv.h>

#define MAX_REPS 32

typedef struct figure {
  double v[MAX_REPS];
  int n;
} figure;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static double best(figure *f) {
  qsort(f->v, (size_t) f->n, sizeof(double), cmp_double);
  return f->n ? f->v[0] : -1;
}

static double median(figure *f) {
  qsort(f->v, (size_t) f->n, sizeof(double), cmp_double);
  return f->n ? (f->n % 2 ? f->v[f->n / 2] : (f->v[f->n / 2 - 1] + f->v[f->n / 2]) / 2) : -1;
}

static double ms_since(uint64_t t0) { return (double) (uv_hrtime() - t0) / 1e6; }

#endif
