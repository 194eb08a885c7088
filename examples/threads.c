/* Threads that share one pool through futures, in a program that never runs a loop.
 *
 * Eight threads each submit 1000 tasks as futures, cancel some, and collect half of
 * the rest with pp_future_wait_any and half with pp_future_wait; two more threads call
 * pp_apply. The main thread only makes the pool, starts the threads and closes the pool;
 * a few futures are read after the pool is gone. Every outcome is checked: the program
 * exits 1 on the first wrong one.
 *
 *   ./threads [spawn|fork|forkserver]   (default: the OS's default method) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

#define SUBMITTERS 8
#define PER_THREAD 1000
#define APPLIERS 2
#define PER_APPLIER 250
#define WINDOW 32
#define KEPT 4

static uint64_t hash(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static int work(pp_call *call, const void *arg, size_t len) {
  uint64_t x;

  if (len != sizeof(x))
    return pp_fail(call, "work wants 8 bytes, got %zu", len);
  memcpy(&x, arg, sizeof(x));
  x = hash(x);
  return pp_reply(call, &x, sizeof(x));
}

static const pp_task tasks[] = { { "work", work }, { NULL, NULL } };

static void die(const char *what, const char *why) {
  fprintf(stderr, "threads: %s: %s\n", what, why);
  exit(1);
}

/* A future's outcome is right if it is its input's hash, or PP_ECANCELED when its cancel
 * said 0. A cancel kills a worker, but never a task of someone else's. */
static int check(const pp_result *r, uint64_t x, int canceled) {
  uint64_t want = hash(x);

  if (canceled)
    return r->status == PP_ECANCELED ? 'c' : 0;
  if (r->status != 0 || r->len != sizeof(want) || memcmp(r->data, &want, sizeof(want)))
    return 0;
  return 'o';
}

typedef struct worker_thread {
  pp_pool *pool;
  unsigned id;
  unsigned ok, canceled;
  pp_future *kept[KEPT];   /* left for main to read once the pool is gone */
  uint64_t kept_x[KEPT];
  uv_thread_t tid;
} worker_thread;

static void tally(worker_thread *t, pp_future *f, uint64_t x, int canceled) {
  switch (check(pp_future_result(f), x, canceled)) {
    case 'o': t->ok++; break;
    case 'c': t->canceled++; break;
    default: die("a wrong outcome", pp_future_result(f)->message
                                        ? pp_future_result(f)->message : "wrong bytes");
  }
}

static void submitter(void *arg) {
  worker_thread *t = (worker_thread *) arg;
  pp_future *win[WINDOW];
  uint64_t xs[WINDOW];
  int canceled[WINDOW];
  size_t n = 0, k, at;
  unsigned i;
  int err;

  for (i = 0; i < PER_THREAD; i++) {
    uint64_t x = ((uint64_t) t->id << 32) | i;
    err = pp_submit_future(t->pool, "work", &x, sizeof(x), &win[n]);
    if (err != 0)
      die("pp_submit_future", pp_strerror(err));
    xs[n] = x;
    canceled[n] = i % 10 == 5 && pp_future_cancel(win[n]) == 0;
    if (i >= PER_THREAD - KEPT) {
      /* Kept for later: main reads them after the pool is gone. */
      t->kept[i - (PER_THREAD - KEPT)] = win[n];
      t->kept_x[i - (PER_THREAD - KEPT)] = x;
      continue;
    }
    n++;
    if (n < WINDOW)
      continue;
    /* Half the window as they come, with wait_any; then the rest in order. */
    while (n > WINDOW / 2) {
      if ((err = pp_future_wait_any(win, n, -1, &at)) != 0)
        die("pp_future_wait_any", pp_strerror(err));
      tally(t, win[at], xs[at], canceled[at]);
      pp_future_free(win[at]);
      win[at] = win[n - 1];
      xs[at] = xs[n - 1];
      canceled[at] = canceled[n - 1];
      n--;
    }
    for (k = 0; k < n; k++) {
      if ((err = pp_future_wait(win[k], -1)) != 0)
        die("pp_future_wait", pp_strerror(err));
      tally(t, win[k], xs[k], canceled[k]);
      pp_future_free(win[k]);
    }
    n = 0;
  }
  for (k = 0; k < n; k++) {
    pp_future_wait(win[k], -1);
    tally(t, win[k], xs[k], canceled[k]);
    pp_future_free(win[k]);
  }
}

static void applier(void *arg) {
  worker_thread *t = (worker_thread *) arg;
  unsigned i;

  for (i = 0; i < PER_APPLIER; i++) {
    uint64_t x = ((uint64_t) t->id << 32) | i;
    pp_result r;
    pp_apply(t->pool, "work", &x, sizeof(x), &r);
    switch (check(&r, x, 0)) {
      case 'o': t->ok++; break;
      default: die("a wrong pp_apply result", r.message ? r.message : "wrong bytes");
    }
    pp_result_free(&r);
  }
}

int main(int argc, char **argv) {
  worker_thread ts[SUBMITTERS + APPLIERS];
  pp_pool_options opts;
  pp_pool_stats st;
  unsigned ok = 0, canceled = 0, i, k;
  pp_pool *pool;
  int err;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  pp_pool_options_init(&opts);
  opts.workers = 2;
  if (argc > 1) {
    if (strcmp(argv[1], "spawn") == 0)
      opts.start_method = PP_START_SPAWN;
    else if (strcmp(argv[1], "fork") == 0)
      opts.start_method = PP_START_FORK;
    else if (strcmp(argv[1], "forkserver") == 0)
      opts.start_method = PP_START_FORKSERVER;
    else
      die("usage", "threads [spawn|fork|forkserver]");
  }
  /* A private loop: the pool runs it on a thread of its own once the threads use it. */
  err = pp_pool_new(&pool, NULL, &opts);
  if (err == PP_ENOTSUP) {
    printf("threads: %s is not available here\n", argv[1]);
    return 77;
  }
  if (err != 0)
    die("pp_pool_new", pp_strerror(err));
  for (i = 0; i < SUBMITTERS + APPLIERS; i++) {
    memset(&ts[i], 0, sizeof(ts[i]));
    ts[i].pool = pool;
    ts[i].id = i + 1;
    if (uv_thread_create(&ts[i].tid, i < SUBMITTERS ? submitter : applier, &ts[i]) != 0)
      die("uv_thread_create", "failed");
  }
  for (i = 0; i < SUBMITTERS + APPLIERS; i++) {
    uv_thread_join(&ts[i].tid);
    ok += ts[i].ok;
    canceled += ts[i].canceled;
  }
  pp_pool_stats_get(pool, &st);
  /* The pool is closed with futures still out: they outlive it. */
  if ((err = pp_pool_close(pool, NULL, NULL)) != 0)
    die("pp_pool_close", pp_strerror(err));
  for (i = 0; i < SUBMITTERS; i++)
    for (k = 0; k < KEPT; k++) {
      if (pp_future_wait(ts[i].kept[k], 0) != 0)
        die("a kept future", "no outcome after the pool's close");
      switch (check(pp_future_result(ts[i].kept[k]), ts[i].kept_x[k], 0)) {
        case 'o': ok++; break;
        default: die("a kept future", "a wrong outcome");
      }
      pp_future_free(ts[i].kept[k]);
    }
  /* The kept futures' tasks may still be running when the counters are read. */
  if (ok + canceled != SUBMITTERS * PER_THREAD + APPLIERS * PER_APPLIER ||
      st.submitted != st.done + st.queued + st.running)
    die("the counts", "a task without its one outcome");
  printf("threads (%s): %u futures and %u applies from %u threads: %u results, %u "
         "canceled, nothing else failed; the main thread ran no loop\n",
         pp_start_method_name(opts.start_method), SUBMITTERS * PER_THREAD,
         APPLIERS * PER_APPLIER, SUBMITTERS + APPLIERS, ok, canceled);
  return 0;
}
