/* procpool's benchmark. It is its own worker program: pp_main comes first.
 *
 * For every start method pp_pool_new accepts it measures pool start, the round trip of
 * a trivial task, submit and map throughput, a large echo and memory; next to them, in
 * the same run, the OS's own figures that bound them (fork, program start, round trip
 * and bandwidth of pipes and socket pairs, memcpy). Every figure is the median over
 * repetitions. It prints a table and, with --json, writes the figures for
 * bench/compare.py.
 *
 * --quick runs every measurement with tiny counts as a smoke test: the exit status is
 * non-zero if any procpool call failed or returned a wrong result. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

#ifdef __linux__
#include <sched.h>
#endif
#ifndef _WIN32
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
#endif

#define MAX_REPS 32
#define WORD_BYTES 8

/* ---- The worker's tasks -------------------------------------------------------------- */

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
  { NULL, NULL }
};

/* ---- Figures ------------------------------------------------------------------------- */

typedef struct figure {
  double samples[MAX_REPS];
  unsigned n;
} figure;

static void add(figure *f, double v) {
  if (f->n < MAX_REPS)
    f->samples[f->n++] = v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

static double median(const figure *f) {
  double s[MAX_REPS];

  memcpy(s, f->samples, f->n * sizeof(double));
  qsort(s, f->n, sizeof(double), cmp_double);
  return f->n % 2 ? s[f->n / 2] : (s[f->n / 2 - 1] + s[f->n / 2]) / 2;
}

static double secs_since(uint64_t t0) { return (double) (uv_hrtime() - t0) / 1e9; }

/* The keys are the JSON names shared with python_mp.py and read by compare.py. */
/* The _1cpu figures are taken again with every process on one CPU (see pin_one_cpu). */
enum {
  M_START, M_START_WARM, M_RT_APPLY, M_RT_SUBMIT, M_RT_APPLY_1CPU, M_RT_SUBMIT_1CPU,
  M_SUBMIT, M_MAP, M_STREAM, M_STREAM_UNORD, M_STREAM_RSS, M_ECHO, M_WORKER_RSS, M_WORKER_ANON, M_RSS_BEFORE, M_RSS_AFTER, M_COUNT
};
static const char *const method_keys[M_COUNT] = {
  "pool_start_ms", "pool_start_warm_ms", "rt_apply_us", "rt_submit_us", "rt_apply_1cpu_us",
  "rt_submit_1cpu_us", "submit_per_s", "map_per_s", "stream_per_s", "stream_unordered_per_s",
  "stream_peak_rss_growth_kib", "echo_mb_s", "worker_rss_kib",
  "worker_anon_kib", "parent_rss_before_kib", "parent_rss_after_kib"
};

enum {
  O_FORK, O_SPAWN, O_PIPE_PP, O_SOCK_PP, O_PIPE_PP_1CPU, O_SOCK_PP_1CPU, O_MEMCPY,
  O_PIPE_BW, O_SOCK_BW, O_COUNT
};
static const char *const os_keys[O_COUNT] = {
  "fork_wait_us", "spawn_child_us", "pipe_pingpong_us", "socketpair_pingpong_us",
  "pipe_pingpong_1cpu_us", "socketpair_pingpong_1cpu_us", "memcpy_gb_s", "pipe_gb_s",
  "socketpair_gb_s"
};

static const pp_start_method methods[] = { PP_START_FORK, PP_START_SPAWN,
                                           PP_START_FORKSERVER };
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

typedef struct method_result {
  int tried;      /* some case asked pp_pool_new for this method */
  int available;  /* pp_pool_new did not answer PP_ENOTSUP */
  figure fig[M_COUNT];
} method_result;

/* Bit i of config.cases selects case_names[i]; the first six are run_method's cases, in
 * its order. */
static const char *const case_names[] = { "start", "roundtrip", "memory", "submit", "map",
                                          "echo", "os" };
#define NCASES (sizeof(case_names) / sizeof(case_names[0]))
#define C_OS (1u << 6)

typedef struct config {
  int quick;
  const char *json;
  char child[4096];
  unsigned cases;
  unsigned methods;        /* bit i: methods[i] is measured */
  unsigned reps;
  unsigned start_reps;
  size_t rt_tasks;
  size_t submit_tasks;
  size_t map_items;
  size_t echo_bytes;
  size_t rss_warmup;
  size_t rss_tasks;
  size_t fork_ops;
  size_t spawn_ops;
  size_t pingpong_ops;
  size_t os_bytes;
} config;

/* ---- Failures ------------------------------------------------------------------------- */

static int failures;

static int bad(const char *fmt, ...) PP_PRINTF(1, 2);
static int bad(const char *fmt, ...) {
  va_list ap;

  /* A broken pool fails every task alike: the first reports say it all. */
  if (failures++ < 10) {
    fputs("bench: FAILED: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
  return -1;
}

static int fail(const char *what, int err, const char *message) {
  bad("%s: %s (%s)%s%s", what, pp_strerror(err), pp_errname(err), message ? ": " : "",
      message ? message : "");
  return err;
}

/* An unavailable method is an answer, not a failure. */
static int open_failed(int err) {
  return err == PP_ENOTSUP ? err : fail("pp_pool_new", err, NULL);
}

static int check_word(const pp_result *r, uint64_t want) {
  uint64_t got;

  if (r->status != 0)
    return fail("task", r->status, r->message);
  if (r->len != WORD_BYTES)
    return bad("task %llu returned %zu bytes, not %d", (unsigned long long) r->id, r->len,
               WORD_BYTES);
  memcpy(&got, r->data, sizeof(got));
  if (got != want)
    return bad("task %llu returned the wrong bytes", (unsigned long long) r->id);
  return 0;
}

static void progress(pp_start_method m, const char *what) {
  fprintf(stderr, "bench: %s: %s\n", m == PP_START_DEFAULT ? "os" : pp_start_method_name(m),
          what);
}

/* A round trip between processes on two CPUs also pays for waking the other CPU, which
 * on a VM can cost more than the work itself and comes and goes from run to run. With
 * this process, and so every process it starts meanwhile, on one CPU the round trip
 * figures measure the work alone and compare stably. Returns 0 when pinned (Linux). */
#ifdef __linux__
typedef cpu_set_t cpu_mask;

static int pin_one_cpu(cpu_mask *saved) {
  cpu_set_t one;
  int cpu;

  if (sched_getaffinity(0, sizeof(*saved), saved) != 0)
    return -1;
  for (cpu = 0; cpu < CPU_SETSIZE && !CPU_ISSET(cpu, saved); cpu++)
    ;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return sched_setaffinity(0, sizeof(one), &one);
}

static void unpin(const cpu_mask *saved) { sched_setaffinity(0, sizeof(*saved), saved); }
#else
typedef int cpu_mask;

static int pin_one_cpu(cpu_mask *saved) {
  (void) saved;
  return -1;
}

static void unpin(const cpu_mask *saved) { (void) saved; }
#endif

/* ---- Pools ---------------------------------------------------------------------------- */

static int pool_open(pp_pool **pool, pp_start_method m, unsigned workers, uv_loop_t *loop) {
  pp_pool_options o;

  pp_pool_options_init(&o);
  o.workers = workers;
  o.start_method = m;
  return pp_pool_new(pool, loop, &o);
}

static void pool_close(pp_pool *pool, uv_loop_t *loop) {
  int err = pp_pool_close(pool, NULL, NULL);

  if (err != 0) {
    fail("pp_pool_close", err, NULL);
    return;
  }
  if (loop != NULL) {
    uv_run(loop, UV_RUN_DEFAULT);
    err = uv_loop_close(loop);
    if (err != 0)
      fail("uv_loop_close after pp_pool_close", err, NULL);
  }
}

/* Tasks submitted from their predecessors' callbacks, at most `window` pending: the
 * submit-one-at-a-time round trip (window 1) and the long runs of the memory figure. */
typedef struct stream {
  pp_pool *pool;
  uint64_t word;
  size_t submitted;
  size_t target;
  int err;
} stream;

static void stream_cb(pp_pool *pool, pp_result *r, void *user);

static int stream_submit(stream *s) {
  int err = pp_submit(s->pool, "echo", &s->word, WORD_BYTES, stream_cb, s, NULL);

  if (err != 0)
    return s->err = fail("pp_submit", err, NULL);
  s->submitted++;
  return 0;
}

static void stream_cb(pp_pool *pool, pp_result *r, void *user) {
  stream *s = (stream *) user;

  (void) pool;
  if (check_word(r, s->word) != 0)
    s->err = -1;
  if (s->err == 0 && s->submitted < s->target)
    stream_submit(s);
}

/* *s must outlive the pool: after a failed wait, closing the pool still calls back. */
static int run_stream(stream *s, pp_pool *pool, size_t target, size_t window) {
  int err;

  s->pool = pool;
  s->word = 0x0123456789abcdefull;
  s->submitted = 0;
  s->target = target;
  s->err = 0;
  while (s->submitted < window && s->submitted < target && stream_submit(s) == 0)
    ;
  err = pp_pool_wait(pool);
  if (err != 0)
    return fail("pp_pool_wait", err, NULL);
  return s->err;
}

typedef struct pid_probe {
  uint64_t pid;
  int err;
} pid_probe;

static void pid_cb(pp_pool *pool, pp_result *r, void *user) {
  pid_probe *p = (pid_probe *) user;

  (void) pool;
  if (r->status != 0 || r->len != sizeof(p->pid))
    p->err = r->status ? fail("task 'pid'", r->status, r->message)
                       : bad("task 'pid' returned %zu bytes", r->len);
  else
    memcpy(&p->pid, r->data, sizeof(p->pid));
}

/* Workers start asynchronously; a throughput figure must not include their start. A pool
 * hands tasks to idle workers first, so once n tasks submitted together answer from n
 * distinct workers, all of them are serving. */
static int await_workers(pp_pool *pool, unsigned n) {
  uint64_t deadline = uv_hrtime() + (uint64_t) 60 * 1000000000;
  /* Static for the reason given at run_stream. */
  static pid_probe probes[8];
  unsigned i, j, distinct;
  int err;

  if (n > sizeof(probes) / sizeof(probes[0]))
    return bad("await_workers: too many workers");
  do {
    memset(probes, 0, sizeof(probes));
    for (i = 0; i < n; i++) {
      err = pp_submit(pool, "pid", NULL, 0, pid_cb, &probes[i], NULL);
      if (err != 0)
        return fail("pp_submit", err, NULL);
    }
    err = pp_pool_wait(pool);
    if (err != 0)
      return fail("pp_pool_wait", err, NULL);
    distinct = 0;
    for (i = 0; i < n; i++) {
      if (probes[i].err != 0)
        return probes[i].err;
      for (j = 0; j < i && probes[j].pid != probes[i].pid; j++)
        ;
      distinct += j == i;
    }
    if (distinct == n)
      return 0;
  } while (uv_hrtime() < deadline);
  return bad("not all %u workers were serving after 60 s", n);
}

/* ---- Memory --------------------------------------------------------------------------- */

/* A field of /proc/<pid>/status in KiB; -1 where there is no such file. */
static double proc_status_kib(uint64_t pid, const char *field) {
  char path[64], line[256];
  size_t flen = strlen(field);
  double v = -1;
  FILE *f;

  snprintf(path, sizeof(path), "/proc/%llu/status", (unsigned long long) pid);
  f = fopen(path, "r");
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
      v = strtod(line + flen + 1, NULL);
      break;
    }
  fclose(f);
  return v;
}

static double self_rss_kib(void) {
  size_t rss;

  return uv_resident_set_memory(&rss) == 0 ? (double) rss / 1024 : -1;
}

/* ---- The procpool figures ------------------------------------------------------------- */

static const uint64_t the_word = 0x5a5a5a5a01020304ull;

static int starts(const config *c, pp_start_method m, figure *f) {
  unsigned i;

  for (i = 0; i < c->start_reps; i++) {
    pp_pool *pool;
    pp_result r;
    uint64_t t0 = uv_hrtime();
    int err = pool_open(&pool, m, 2, NULL);

    if (err != 0)
      return open_failed(err);
    err = pp_apply(pool, "echo", &the_word, WORD_BYTES, &r);
    if (err == 0)
      add(f, secs_since(t0) * 1e3);
    else
      fail("pp_apply", err, r.message);
    if (err == 0 && check_word(&r, the_word) != 0)
      err = -1;
    pp_result_free(&r);
    pool_close(pool, NULL);
    if (err != 0)
      return err;
  }
  return 0;
}

/* Cold: the process has no other pool. Warm: another pool of the method is open, which
 * keeps a forkserver running between pools, as Python's runs for the program's life. */
static int case_start(const config *c, pp_start_method m, method_result *mr) {
  pp_pool *keeper;
  pp_result r;
  int err;

  progress(m, "pool start");
  err = starts(c, m, &mr->fig[M_START]);
  if (err != 0)
    return err;
  err = pool_open(&keeper, m, 1, NULL);
  if (err != 0)
    return open_failed(err);
  err = pp_apply(keeper, "echo", &the_word, WORD_BYTES, &r);
  if (err != 0)
    fail("pp_apply", err, r.message);
  pp_result_free(&r);
  if (err == 0)
    err = starts(c, m, &mr->fig[M_START_WARM]);
  pool_close(keeper, NULL);
  return err;
}

/* The round trip, by pp_apply and by pp_submit from the previous task's callback, into
 * apply and submit. */
static int roundtrips(const config *c, pp_start_method m, figure *apply, figure *submit) {
  pp_pool *pool;
  uv_loop_t loop;
  stream s;
  pp_result r;
  unsigned rep;
  size_t k;
  int err;

  err = pool_open(&pool, m, 1, NULL);
  if (err != 0)
    return open_failed(err);
  /* The first task waits for the worker's start. */
  for (rep = 0; rep <= c->reps && err == 0; rep++) {
    uint64_t t0 = uv_hrtime();
    for (k = 0; k < (rep ? c->rt_tasks : 1) && err == 0; k++) {
      err = pp_apply(pool, "echo", &the_word, WORD_BYTES, &r);
      if (err != 0)
        fail("pp_apply", err, r.message);
      else
        err = check_word(&r, the_word);
      pp_result_free(&r);
    }
    if (rep > 0 && err == 0)
      add(apply, secs_since(t0) * 1e6 / (double) c->rt_tasks);
  }
  pool_close(pool, NULL);
  if (err != 0)
    return err;

  err = uv_loop_init(&loop);
  if (err != 0)
    return fail("uv_loop_init", err, NULL);
  err = pool_open(&pool, m, 1, &loop);
  if (err != 0) {
    uv_loop_close(&loop);
    return open_failed(err);
  }
  err = run_stream(&s, pool, 1, 1);
  for (rep = 0; rep < c->reps && err == 0; rep++) {
    uint64_t t0 = uv_hrtime();
    err = run_stream(&s, pool, c->rt_tasks, 1);
    if (err == 0)
      add(submit, secs_since(t0) * 1e6 / (double) c->rt_tasks);
  }
  pool_close(pool, &loop);
  return err;
}

static int case_roundtrip(const config *c, pp_start_method m, method_result *mr) {
  cpu_mask saved;
  int err;

  progress(m, "round trip");
  err = roundtrips(c, m, &mr->fig[M_RT_APPLY], &mr->fig[M_RT_SUBMIT]);
  if (err != 0 || pin_one_cpu(&saved) != 0)
    return err;
  progress(m, "round trip on one CPU");
  err = roundtrips(c, m, &mr->fig[M_RT_APPLY_1CPU], &mr->fig[M_RT_SUBMIT_1CPU]);
  unpin(&saved);
  return err;
}

typedef struct burst {
  size_t done;
  int err;
} burst;

static void burst_cb(pp_pool *pool, pp_result *r, void *user) {
  burst *b = (burst *) user;

  (void) pool;
  b->done++;
  if (check_word(r, the_word) != 0)
    b->err = -1;
}

static int case_submit(const config *c, pp_start_method m, method_result *mr) {
  pp_pool *pool;
  uv_loop_t loop;
  burst b;
  unsigned rep;
  int err;

  progress(m, "submit throughput");
  err = uv_loop_init(&loop);
  if (err != 0)
    return fail("uv_loop_init", err, NULL);
  err = pool_open(&pool, m, 2, &loop);
  if (err != 0) {
    uv_loop_close(&loop);
    return open_failed(err);
  }
  err = await_workers(pool, 2);
  for (rep = 0; rep < c->reps && err == 0; rep++) {
    uint64_t t0 = uv_hrtime();
    size_t k;
    int werr;

    b.done = 0;
    b.err = 0;
    for (k = 0; k < c->submit_tasks && err == 0; k++) {
      err = pp_submit(pool, "echo", &the_word, WORD_BYTES, burst_cb, &b, NULL);
      if (err != 0)
        fail("pp_submit", err, NULL);
    }
    werr = pp_pool_wait(pool);
    if (werr != 0 && err == 0)
      err = fail("pp_pool_wait", werr, NULL);
    if (err == 0 && b.err == 0 && b.done == c->submit_tasks)
      add(&mr->fig[M_SUBMIT], (double) c->submit_tasks / secs_since(t0));
    else if (err == 0)
      err = b.err ? b.err : bad("%zu of %zu callbacks ran", b.done, c->submit_tasks);
  }
  pool_close(pool, &loop);
  return err;
}

/* pp_map_stream over the same words as pp_map: next() hands out one reused buffer. */
typedef struct bstream {
  const uint64_t *words;
  size_t n, i, bad;
  uint64_t buf;
} bstream;

static int bstream_next(void *user, pp_input *in) {
  bstream *b = (bstream *) user;

  if (b->i == b->n)
    return 0;
  b->buf = b->words[b->i++];
  in->data = &b->buf;
  in->len = WORD_BYTES;
  return 1;
}

static void bstream_each(void *user, size_t index, pp_result *r) {
  bstream *b = (bstream *) user;

  if (check_word(r, b->words[index]) != 0)
    b->bad++;
}

/* The process's peak resident memory, KiB; 0 where it is not known. */
static double peak_rss_kib(void) {
#if defined(_WIN32)
  return 0;
#else
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
#  if defined(__APPLE__)
  return (double) ru.ru_maxrss / 1024;
#  else
  return (double) ru.ru_maxrss;
#  endif
#endif
}

static size_t map_items_override;

static int case_map(const config *c, pp_start_method m, method_result *mr) {
  size_t n = c->map_items, i;
  pp_input *in = malloc(n * sizeof(*in));
  uint64_t *words = malloc(n * sizeof(*words));
  pp_result *out = malloc(n * sizeof(*out));
  pp_pool *pool = NULL;
  unsigned rep;
  int err = 0;

  progress(m, "map throughput");
  if (in == NULL || words == NULL || out == NULL) {
    err = bad("out of memory for %zu map items", n);
    goto done;
  }
  for (i = 0; i < n; i++) {
    words[i] = i;
    in[i].data = &words[i];
    in[i].len = WORD_BYTES;
  }
  err = pool_open(&pool, m, 2, NULL);
  if (err != 0) {
    pool = NULL;
    err = open_failed(err);
    goto done;
  }
  err = await_workers(pool, 2);
  for (rep = 0; rep < c->reps && err == 0; rep++) {
    uint64_t t0;
    int status;
    double secs;

    /* The same items as a stream, in order and not, in the same run; first, so that
     * the peak memory it adds is not hidden under pp_map's out[]. */
    for (i = 0; i < 2 && err == 0; i++) {
      bstream b;
      double rss0 = peak_rss_kib();
      memset(&b, 0, sizeof(b));
      b.words = words;
      b.n = n;
      t0 = uv_hrtime();
      status = pp_map_stream(pool, "echo", bstream_next, bstream_each, &b,
                             i ? PP_MAP_UNORDERED : 0);
      secs = secs_since(t0);
      if (status != 0)
        err = fail("pp_map_stream", status, NULL);
      else if (b.bad != 0 || b.i != n)
        err = bad("pp_map_stream: %zu wrong results, %zu of %zu items", b.bad, b.i, n);
      else
        add(&mr->fig[i ? M_STREAM_UNORD : M_STREAM], (double) n / secs);
      if (err == 0) {
        pp_pool_stats st;
        pp_pool_stats_get(pool, &st);
        if (st.done != st.submitted || st.queued != 0 || st.running != 0 || st.failed != 0)
          err = bad("counters after a stream: %llu submitted, %llu done, %llu queued, %llu "
                    "running", (unsigned long long) st.submitted,
                    (unsigned long long) st.done, (unsigned long long) st.queued,
                    (unsigned long long) st.running);
      }
      if (err == 0 && rep == 0 && i == 0)
        add(&mr->fig[M_STREAM_RSS], peak_rss_kib() - rss0);
    }
    if (err != 0)
      break;
    t0 = uv_hrtime();
    status = pp_map(pool, "echo", n, in, out);
    secs = secs_since(t0);

    if (status != 0)
      err = fail("pp_map", status, NULL);
    for (i = 0; i < n; i++) {
      if (err == 0 && check_word(&out[i], words[i]) != 0)
        err = -1;
      pp_result_free(&out[i]);
    }
    if (err == 0)
      add(&mr->fig[M_MAP], (double) n / secs);
  }
done:
  if (pool != NULL)
    pool_close(pool, NULL);
  free(in);
  free(words);
  free(out);
  return err;
}

static int case_echo(const config *c, pp_start_method m, method_result *mr) {
  unsigned char *buf = malloc(c->echo_bytes);
  pp_pool *pool = NULL;
  unsigned rep;
  size_t i;
  int err;

  progress(m, "large echo");
  if (buf == NULL)
    return bad("out of memory for %zu bytes", c->echo_bytes);
  for (i = 0; i < c->echo_bytes; i++)
    buf[i] = (unsigned char) (i * 7 + (i >> 12));
  err = pool_open(&pool, m, 1, NULL);
  if (err != 0) {
    free(buf);
    return open_failed(err);
  }
  /* Repetition 0 waits for the worker's start; it is not counted. */
  for (rep = 0; rep <= c->reps && err == 0; rep++) {
    pp_result r;
    uint64_t t0 = uv_hrtime();
    double secs;

    err = pp_apply(pool, "echo", buf, c->echo_bytes, &r);
    secs = secs_since(t0);
    if (err != 0)
      fail("pp_apply", err, r.message);
    else if (r.len != c->echo_bytes || memcmp(r.data, buf, c->echo_bytes) != 0)
      err = bad("the echo of %zu bytes came back different", c->echo_bytes);
    else if (rep > 0)
      add(&mr->fig[M_ECHO], (double) c->echo_bytes / secs / 1e6);
    pp_result_free(&r);
  }
  pool_close(pool, NULL);
  free(buf);
  return err;
}

static int case_memory(const config *c, pp_start_method m, method_result *mr) {
  pp_pool *pool;
  uv_loop_t loop;
  stream s;
  pp_result r;
  uint64_t pid;
  double before, after;
  int err;

  progress(m, "memory");
  err = pool_open(&pool, m, 1, NULL);
  if (err != 0)
    return open_failed(err);
  err = pp_apply(pool, "pid", NULL, 0, &r);
  if (err != 0) {
    fail("pp_apply", err, r.message);
  } else if (r.len != sizeof(pid)) {
    err = bad("task 'pid' returned %zu bytes", r.len);
  } else {
    double rss, anon;
    memcpy(&pid, r.data, sizeof(pid));
    rss = proc_status_kib(pid, "VmRSS");
    anon = proc_status_kib(pid, "RssAnon");
    if (rss >= 0)
      add(&mr->fig[M_WORKER_RSS], rss);
    if (anon >= 0)
      add(&mr->fig[M_WORKER_ANON], anon);
  }
  pp_result_free(&r);
  pool_close(pool, NULL);
  if (err != 0)
    return err;

  /* The parent's memory before and after many completed tasks, on one pool: the
   * warm-up lets the pool reach its working size first. */
  err = uv_loop_init(&loop);
  if (err != 0)
    return fail("uv_loop_init", err, NULL);
  err = pool_open(&pool, m, 2, &loop);
  if (err != 0) {
    uv_loop_close(&loop);
    return open_failed(err);
  }
  err = await_workers(pool, 2);
  if (err == 0)
    err = run_stream(&s, pool, c->rss_warmup, 64);
  before = self_rss_kib();
  if (err == 0)
    err = run_stream(&s, pool, c->rss_tasks, 64);
  after = self_rss_kib();
  if (err == 0 && before >= 0 && after >= 0) {
    add(&mr->fig[M_RSS_BEFORE], before);
    add(&mr->fig[M_RSS_AFTER], after);
  }
  pool_close(pool, &loop);
  return err;
}

typedef int (*case_fn)(const config *c, pp_start_method m, method_result *mr);

static void run_method(const config *c, pp_start_method m, method_result *mr) {
  /* Memory before the cases that leave this process's heap large: a forked worker's
   * resident size includes the pages it shares with the parent. */
  static const case_fn fns[] = { case_start, case_roundtrip, case_memory, case_submit,
                                 case_map, case_echo };
  size_t i;

  for (i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    if (!(c->cases & (1u << i)))
      continue;
    mr->tried = 1;
    mr->available = 1;
    if (fns[i](c, m, mr) == PP_ENOTSUP) {
      mr->available = 0;
      return;
    }
  }
}

/* ---- The OS figures ------------------------------------------------------------------- */

static void os_memcpy(const config *c, figure *f) {
  char *src = malloc(c->os_bytes), *dst = malloc(c->os_bytes);
  volatile char sink;
  unsigned rep;

  if (src == NULL || dst == NULL) {
    fprintf(stderr, "bench: warning: memcpy: out of memory\n");
  } else {
    /* Touch both first: the figure is the copy, not the page faults. */
    memset(src, 1, c->os_bytes);
    memset(dst, 2, c->os_bytes);
    for (rep = 0; rep < c->reps; rep++) {
      uint64_t t0 = uv_hrtime();
      memcpy(dst, src, c->os_bytes);
      add(f, (double) c->os_bytes / secs_since(t0) / 1e9);
      sink = dst[c->os_bytes / 2];
    }
    (void) sink;
  }
  free(src);
  free(dst);
}

#ifndef _WIN32

static void os_warn(const char *what) {
  fprintf(stderr, "bench: warning: %s: %s; its figure is left out\n", what, strerror(errno));
}

static int read_full(int fd, void *buf, size_t n) {
  char *p = (char *) buf;

  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    p += r;
    n -= (size_t) r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  const char *p = (const char *) buf;

  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -1;
    p += w;
    n -= (size_t) w;
  }
  return 0;
}

static void reap(pid_t pid) {
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

static void os_fork_wait(const config *c, figure *f) {
  unsigned rep;
  size_t k;

  for (rep = 0; rep < c->reps; rep++) {
    uint64_t t0 = uv_hrtime();
    for (k = 0; k < c->fork_ops; k++) {
      pid_t pid = fork();
      if (pid == 0)
        _exit(0);
      if (pid < 0) {
        os_warn("fork");
        return;
      }
      reap(pid);
    }
    add(f, secs_since(t0) * 1e6 / (double) c->fork_ops);
  }
}

static void os_spawn_child(const config *c, figure *f) {
  posix_spawn_file_actions_t fa;
  char *argv[2];
  int fds[2];
  unsigned rep;
  size_t k;

  argv[0] = (char *) c->child;
  argv[1] = NULL;
  if (pipe(fds) != 0) {
    os_warn("pipe");
    return;
  }
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  for (rep = 0; rep < c->reps; rep++) {
    uint64_t t0 = uv_hrtime();
    for (k = 0; k < c->spawn_ops; k++) {
      pid_t pid;
      char byte;
      int err = posix_spawn(&pid, c->child, &fa, NULL, argv, environ);
      if (err != 0) {
        errno = err;
        os_warn(c->child);
        goto done;
      }
      if (read_full(fds[0], &byte, 1) != 0) {
        os_warn("reading the child's byte");
        reap(pid);
        goto done;
      }
      reap(pid);
    }
    add(f, secs_since(t0) * 1e6 / (double) c->spawn_ops);
  }
done:
  posix_spawn_file_actions_destroy(&fa);
  close(fds[0]);
  close(fds[1]);
}

/* A channel to a child and one back, as two pipes or one socket pair (a pool's channel
 * is a socket pair). down[0] and up[1] are the child's ends. */
static int channel_pair(int use_socketpair, int down[2], int up[2]) {
  if (use_socketpair) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, down) != 0) {
      os_warn("socketpair");
      return -1;
    }
    up[0] = dup(down[1]);
    up[1] = dup(down[0]);
    return 0;
  }
  if (pipe(down) != 0) {
    os_warn("pipe");
    return -1;
  }
  if (pipe(up) != 0) {
    os_warn("pipe");
    close(down[0]);
    close(down[1]);
    return -1;
  }
  return 0;
}

/* Round trips of WORD_BYTES between this process and a child. */
static void os_pingpong(const config *c, figure *f, int use_socketpair) {
  int down[2], up[2];
  char buf[WORD_BYTES] = "pingpong";
  unsigned rep;
  pid_t pid;

  if (channel_pair(use_socketpair, down, up) != 0)
    return;
  pid = fork();
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    while (read_full(down[0], buf, sizeof(buf)) == 0 &&
           write_full(up[1], buf, sizeof(buf)) == 0)
      ;
    _exit(0);
  }
  close(down[0]);
  close(up[1]);
  if (pid < 0) {
    os_warn("fork");
  } else {
    for (rep = 0; rep < c->reps; rep++) {
      uint64_t t0 = uv_hrtime();
      size_t k;
      for (k = 0; k < c->pingpong_ops; k++)
        if (write_full(down[1], buf, sizeof(buf)) != 0 ||
            read_full(up[0], buf, sizeof(buf)) != 0) {
          os_warn("ping-pong");
          goto done;
        }
      add(f, secs_since(t0) * 1e6 / (double) c->pingpong_ops);
    }
  }
done:
  close(down[1]);
  close(up[0]);
  if (pid > 0)
    reap(pid);
}

/* One-way bandwidth: the child reads each repetition's bytes into a buffer it touched
 * beforehand, then answers with one byte. */
static void os_bandwidth(const config *c, figure *f, int use_socketpair) {
  int data[2], ack[2];
  char *buf;
  unsigned rep;
  pid_t pid;
  char byte = 0;

  if (channel_pair(use_socketpair, data, ack) != 0)
    return;
  pid = fork();
  if (pid == 0) {
    close(data[1]);
    close(ack[0]);
    buf = malloc(c->os_bytes);
    if (buf == NULL)
      _exit(1);
    /* Not zero: malloc and a zeroing memset may become calloc, which touches nothing. */
    memset(buf, 1, c->os_bytes);
    while (write_full(ack[1], &byte, 1) == 0 && read_full(data[0], buf, c->os_bytes) == 0)
      ;
    free(buf);
    _exit(0);
  }
  close(data[0]);
  close(ack[1]);
  buf = malloc(c->os_bytes);
  if (pid < 0 || buf == NULL) {
    os_warn(pid < 0 ? "fork" : "malloc");
  } else {
    memset(buf, 3, c->os_bytes);
    if (read_full(ack[0], &byte, 1) != 0)
      os_warn("bandwidth child");
    else
      for (rep = 0; rep < c->reps; rep++) {
        uint64_t t0 = uv_hrtime();
        if (write_full(data[1], buf, c->os_bytes) != 0 || read_full(ack[0], &byte, 1) != 0) {
          os_warn("bandwidth");
          break;
        }
        add(f, (double) c->os_bytes / secs_since(t0) / 1e9);
      }
  }
  free(buf);
  close(data[1]);
  close(ack[0]);
  if (pid > 0)
    reap(pid);
}

#endif /* !_WIN32 */

static void run_os(const config *c, figure *os) {
#ifndef _WIN32
  cpu_mask saved;

  /* First, while this process is small: fork's cost grows with the parent's memory. */
  fflush(NULL);
  progress(PP_START_DEFAULT, "fork");
  os_fork_wait(c, &os[O_FORK]);
  progress(PP_START_DEFAULT, "program start");
  os_spawn_child(c, &os[O_SPAWN]);
  progress(PP_START_DEFAULT, "ping-pong");
  os_pingpong(c, &os[O_PIPE_PP], 0);
  os_pingpong(c, &os[O_SOCK_PP], 1);
  if (pin_one_cpu(&saved) == 0) {
    os_pingpong(c, &os[O_PIPE_PP_1CPU], 0);
    os_pingpong(c, &os[O_SOCK_PP_1CPU], 1);
    unpin(&saved);
  }
  progress(PP_START_DEFAULT, "bandwidth");
  os_bandwidth(c, &os[O_PIPE_BW], 0);
  os_bandwidth(c, &os[O_SOCK_BW], 1);
#endif
  os_memcpy(c, &os[O_MEMCPY]);
}

/* ---- Output --------------------------------------------------------------------------- */

static void method_label(int i, const config *c, char *buf, size_t size) {
  switch (i) {
    case M_START: snprintf(buf, size, "pool of 2 created until first result, ms"); break;
    case M_START_WARM: snprintf(buf, size, "the same, another pool open, ms"); break;
    case M_RT_APPLY: snprintf(buf, size, "round trip, pp_apply, 1 worker, us"); break;
    case M_RT_SUBMIT: snprintf(buf, size, "round trip, pp_submit+callback, us"); break;
    case M_RT_APPLY_1CPU: snprintf(buf, size, "round trip, pp_apply, one CPU, us"); break;
    case M_RT_SUBMIT_1CPU: snprintf(buf, size, "round trip, pp_submit+cb, one CPU, us"); break;
    case M_SUBMIT:
      snprintf(buf, size, "%zu pp_submit, 2 workers, tasks/s", c->submit_tasks);
      break;
    case M_MAP:
      snprintf(buf, size, "pp_map %zu x 8 B, 2 workers, items/s", c->map_items);
      break;
    case M_STREAM:
      snprintf(buf, size, "pp_map_stream, in order, items/s");
      break;
    case M_STREAM_UNORD:
      snprintf(buf, size, "pp_map_stream, unordered, items/s");
      break;
    case M_STREAM_RSS:
      snprintf(buf, size, "peak RSS growth of the first stream, KiB");
      break;
    case M_ECHO: snprintf(buf, size, "echo %zu MiB, MB/s", c->echo_bytes >> 20); break;
    case M_WORKER_RSS: snprintf(buf, size, "idle worker VmRSS, KiB"); break;
    case M_WORKER_ANON: snprintf(buf, size, "idle worker RssAnon, KiB"); break;
    case M_RSS_BEFORE:
      snprintf(buf, size, "parent RSS before %zu tasks, KiB", c->rss_tasks);
      break;
    default: snprintf(buf, size, "parent RSS after, KiB"); break;
  }
}

static void os_label(int i, const config *c, char *buf, size_t size) {
  switch (i) {
    case O_FORK: snprintf(buf, size, "fork + waitpid, us"); break;
    case O_SPAWN: snprintf(buf, size, "posix_spawn child + read its byte, us"); break;
    case O_PIPE_PP: snprintf(buf, size, "pipe ping-pong 8 B, round trip us"); break;
    case O_SOCK_PP: snprintf(buf, size, "socketpair ping-pong 8 B, round trip us"); break;
    case O_PIPE_PP_1CPU: snprintf(buf, size, "pipe ping-pong, one CPU, us"); break;
    case O_SOCK_PP_1CPU: snprintf(buf, size, "socketpair ping-pong, one CPU, us"); break;
    case O_MEMCPY: snprintf(buf, size, "memcpy %zu MiB, GB/s", c->os_bytes >> 20); break;
    case O_PIPE_BW:
      snprintf(buf, size, "pipe one-way %zu MiB, GB/s", c->os_bytes >> 20);
      break;
    default: snprintf(buf, size, "socketpair one-way %zu MiB, GB/s", c->os_bytes >> 20); break;
  }
}

static void format_value(const figure *f, char *buf, size_t size) {
  double v;

  if (f->n == 0) {
    snprintf(buf, size, "-");
    return;
  }
  v = median(f);
  snprintf(buf, size, v >= 1000 ? "%.0f" : v >= 10 ? "%.1f" : "%.3g", v);
}

static void print_table(const config *c, const method_result *mr, const figure *os) {
  char label[96], cell[32];
  size_t i, j;

  printf("%-46s", "procpool");
  for (j = 0; j < NMETHODS; j++)
    printf(" %11s", pp_start_method_name(methods[j]));
  printf("\n");
  for (i = 0; i < M_COUNT; i++) {
    method_label((int) i, c, label, sizeof(label));
    printf("%-46s", label);
    for (j = 0; j < NMETHODS; j++) {
      if (mr[j].tried && !mr[j].available)
        snprintf(cell, sizeof(cell), "n/a");
      else
        format_value(&mr[j].fig[i], cell, sizeof(cell));
      printf(" %11s", cell);
    }
    printf("\n");
  }
  printf("\nOS, same run\n");
  for (i = 0; i < O_COUNT; i++) {
    os_label((int) i, c, label, sizeof(label));
#ifdef _WIN32
    if (i != O_MEMCPY)
      snprintf(cell, sizeof(cell), "n/a");
    else
#endif
      format_value(&os[i], cell, sizeof(cell));
    printf("%-46s %11s\n", label, cell);
  }
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f);
    if ((unsigned char) *s >= 0x20)
      fputc(*s, f);
  }
  fputc('"', f);
}

static void json_figures(FILE *f, const char *const *keys, const figure *figs, size_t n) {
  size_t i, k;

  for (i = 0; i < n; i++) {
    fprintf(f, "\"%s\": ", keys[i]);
    if (figs[i].n == 0)
      fprintf(f, "null, ");
    else
      fprintf(f, "%.6g, ", median(&figs[i]));
  }
  fprintf(f, "\"samples\": {");
  for (i = 0; i < n; i++) {
    fprintf(f, "%s\"%s\": [", i ? ", " : "", keys[i]);
    for (k = 0; k < figs[i].n; k++)
      fprintf(f, "%s%.6g", k ? ", " : "", figs[i].samples[k]);
    fprintf(f, "]");
  }
  fprintf(f, "}");
}

static int write_json(const config *c, const method_result *mr, const figure *os) {
  uv_utsname_t u;
  uv_cpu_info_t *cpus = NULL;
  int ncpus = 0;
  size_t j;
  FILE *f = fopen(c->json, "w");

  if (f == NULL) {
    fprintf(stderr, "bench: cannot write %s: %s\n", c->json, strerror(errno));
    return -1;
  }
  if (uv_os_uname(&u) != 0)
    memset(&u, 0, sizeof(u));
  uv_cpu_info(&cpus, &ncpus);
  fprintf(f, "{\n  \"implementation\": \"procpool\",\n  \"version\": \"%d.%d.%d\",\n",
          PP_VERSION_MAJOR, PP_VERSION_MINOR, PP_VERSION_PATCH);
  fprintf(f, "  \"mode\": \"%s\",\n  \"host\": {\"os\": ", c->quick ? "quick" : "full");
  json_string(f, u.sysname);
  fprintf(f, ", \"release\": ");
  json_string(f, u.release);
  fprintf(f, ", \"machine\": ");
  json_string(f, u.machine);
  fprintf(f, ", \"cpus\": %u, \"cpu_model\": ", uv_available_parallelism());
  json_string(f, ncpus > 0 ? cpus[0].model : "");
  fprintf(f, "},\n");
  uv_free_cpu_info(cpus, ncpus);
  fprintf(f, "  \"params\": {\"repetitions\": %u, \"start_repetitions\": %u, "
             "\"rt_tasks\": %zu, \"submit_tasks\": %zu, \"map_items\": %zu, "
             "\"echo_bytes\": %zu, \"rss_tasks\": %zu, \"os_bytes\": %zu},\n",
          c->reps, c->start_reps, c->rt_tasks, c->submit_tasks, c->map_items,
          c->echo_bytes, c->rss_tasks, c->os_bytes);
  fprintf(f, "  \"methods\": {\n");
  for (j = 0; j < NMETHODS; j++) {
    fprintf(f, "    \"%s\": {\"available\": %s", pp_start_method_name(methods[j]),
            !mr[j].tried ? "null" : mr[j].available ? "true" : "false");
    if (mr[j].available) {
      fprintf(f, ", ");
      json_figures(f, method_keys, mr[j].fig, M_COUNT);
    }
    fprintf(f, "}%s\n", j + 1 < NMETHODS ? "," : "");
  }
  fprintf(f, "  },\n  \"os\": {");
  json_figures(f, os_keys, os, O_COUNT);
  fprintf(f, "}\n}\n");
  if (fclose(f) != 0) {
    fprintf(stderr, "bench: cannot write %s: %s\n", c->json, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---- main ----------------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: bench [--quick] [--json PATH] [--child PATH] [--only CASE,...]\n"
          "             [--method fork|spawn|forkserver]\n"
          "  --quick        tiny counts: a smoke test; exits 1 if a procpool call fails\n"
          "  --json PATH    also write the figures as JSON (read by bench/compare.py)\n"
          "  --child PATH   the program for the OS start figure (default: bench-child\n"
          "                 next to this program)\n"
          "  --only CASES   a comma-separated subset of: start, roundtrip, memory, submit,\n"
          "                 map, echo, os (for profiling one case)\n"
          "  --method NAME  measure that start method only\n"
          "  --map-items N  items of the map and stream case (the 2,000,000-item check)\n");
}

static int parse_cases(const char *list, unsigned *cases) {
  const char *p = list;

  *cases = 0;
  while (*p) {
    size_t len = strcspn(p, ","), i;
    for (i = 0; i < NCASES; i++)
      if (strlen(case_names[i]) == len && strncmp(p, case_names[i], len) == 0)
        break;
    if (i == NCASES)
      return -1;
    *cases |= 1u << i;
    p += len + (p[len] == ',');
  }
  return *cases ? 0 : -1;
}

static void default_child(char *buf, size_t size) {
  size_t len = size;
  char *slash;

  if (uv_exepath(buf, &len) != 0) {
    snprintf(buf, size, "bench-child");
    return;
  }
  slash = strrchr(buf, '/');
  snprintf(slash ? slash + 1 : buf, size - (size_t) (slash ? slash + 1 - buf : 0),
           "bench-child");
}

static void set_counts(config *c) {
  if (c->quick) {
    c->reps = 2;
    c->start_reps = 2;
    c->rt_tasks = 20;
    c->submit_tasks = 200;
    c->map_items = 500;
    c->echo_bytes = (size_t) 1 << 20;
    c->rss_warmup = 100;
    c->rss_tasks = 500;
    c->fork_ops = 5;
    c->spawn_ops = 3;
    c->pingpong_ops = 200;
    c->os_bytes = (size_t) 1 << 20;
  } else {
    c->reps = 5;
    c->start_reps = 11;
    c->rt_tasks = 5000;
    c->submit_tasks = 50000;
    c->map_items = 200000;
    c->echo_bytes = (size_t) 64 << 20;
    c->rss_warmup = 10000;
    c->rss_tasks = 200000;
    c->fork_ops = 200;
    c->spawn_ops = 50;
    c->pingpong_ops = 20000;
    c->os_bytes = (size_t) 64 << 20;
  }
}

int main(int argc, char **argv) {
  static method_result mr[NMETHODS];
  static figure os[O_COUNT];
  config c;
  char env[64];
  size_t envlen = sizeof(env);
  size_t j;
  int i, err;

  err = pp_main(argc, argv, tasks);
  if (err != 0) {
    fprintf(stderr, "bench: pp_main: %s\n", pp_strerror(err));
    return 1;
  }
  memset(&c, 0, sizeof(c));
  c.cases = (1u << NCASES) - 1;
  c.methods = (1u << NMETHODS) - 1;
  default_child(c.child, sizeof(c.child));
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      c.quick = 1;
    } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      c.json = argv[++i];
    } else if (strcmp(argv[i], "--child") == 0 && i + 1 < argc) {
      snprintf(c.child, sizeof(c.child), "%s", argv[++i]);
    } else if (strcmp(argv[i], "--method") == 0 && i + 1 < argc) {
      i++;
      for (j = 0; j < NMETHODS && strcmp(argv[i], pp_start_method_name(methods[j])) != 0; j++)
        ;
      if (j == NMETHODS) {
        usage(stderr);
        return 2;
      }
      c.methods = 1u << j;
    } else if (strcmp(argv[i], "--map-items") == 0 && i + 1 < argc) {
      map_items_override = (size_t) strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      if (parse_cases(argv[++i], &c.cases) != 0) {
        usage(stderr);
        return 2;
      }
    } else {
      usage(strcmp(argv[i], "--help") == 0 ? stdout : stderr);
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  set_counts(&c);
  if (map_items_override != 0)
    c.map_items = map_items_override;

  /* The variable would run every method's figures on one method, under the wrong name. */
  err = uv_os_getenv("PROCPOOL_START_METHOD", env, &envlen);
  if (err == UV_ENOBUFS || (err == 0 && env[0] != '\0')) {
    fprintf(stderr, "bench: ignoring PROCPOOL_START_METHOD: every method is measured\n");
    uv_os_unsetenv("PROCPOOL_START_METHOD");
  }

  if (c.cases & C_OS)
    run_os(&c, os);
  for (j = 0; j < NMETHODS; j++)
    if (c.methods & (1u << j))
      run_method(&c, methods[j], &mr[j]);

  printf("procpool %d.%d.%d bench, %s mode, %u CPUs; medians of %u runs (pool start: %u)\n\n",
         PP_VERSION_MAJOR, PP_VERSION_MINOR, PP_VERSION_PATCH, c.quick ? "quick" : "full",
         uv_available_parallelism(), c.reps, c.start_reps);
  print_table(&c, mr, os);
  if (c.json != NULL && write_json(&c, mr, os) != 0)
    failures++;
  if (failures > 0) {
    fprintf(stderr, "bench: %d failure%s\n", failures, failures == 1 ? "" : "s");
    return 1;
  }
  return 0;
}
