/* A soak with faults (issue 16): for --seconds N (default 600), pool after pool under
 * every start method, each with random options and a random mix of work: tasks that
 * succeed (some with arguments and results of megabytes), fail, crash their worker or
 * hang past task_timeout_ms; pp_cancel of random tasks; futures submitted, canceled and
 * waited for (pp_future_wait_any) from other threads; pp_map and pp_map_stream; workers
 * killed from outside (SIGKILL, Unix); max_tasks_per_worker recycling; and the pool ended
 * by pp_pool_close after its work, by pp_pool_close at once or by pp_pool_terminate in
 * the middle. It counts every task's outcomes (one each: none is lost, two is doubled),
 * outcomes the header rules out (a crashing task that succeeds, a result that is not its
 * task's), descriptors (/proc/self/fd) and /dev/shm/procpool-<pid>-* names left after each
 * pool, and prints the parent's resident memory every --report seconds. Exits 1 if
 * anything was lost, doubled, wrong or leaked, or the memory grew by over 64 MiB after
 * the first minute. --quick: a few pools per method, a smoke test for the test suite.
 * Not a test of speed; its own worker program. Linux for the descriptor, memory and kill
 * figures (elsewhere they are skipped). */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <procpool.h>
#include <uv.h>

#include "../test/procstat.h"

enum { K_OK, K_FAIL, K_CRASH, K_HANG, K_BIG, K_KINDS };
static const char *kind_names[K_KINDS] = { "ok", "fail", "crash", "hang", "big" };

/* Every argument starts with this; the result of K_OK and K_BIG is the tag and a sum of
 * the argument's bytes, then (K_BIG) the argument itself. */
typedef struct head {
  uint64_t tag;
  uint32_t kind;
  uint32_t pad;
} head;

static uint64_t sum_bytes(const uint8_t *p, size_t n) {
  uint64_t s = 1469598103934665603ull;
  size_t i;

  for (i = 0; i < n; i++)
    s = (s ^ p[i]) * 1099511628211ull;
  return s;
}

static int task_do(pp_call *call, const void *arg, size_t len) {
  head h;
  uint64_t out[2];

  if (len < sizeof(h))
    return pp_fail(call, "short argument");
  memcpy(&h, arg, sizeof(h));
  switch (h.kind) {
  case K_FAIL:
    return pp_fail(call, "soak task %llu fails as asked", (unsigned long long) h.tag);
  case K_CRASH:
    if (h.tag % 2)
      abort();
    _exit(3);
  case K_HANG:
    for (;;)
      uv_sleep(1000);
  case K_BIG: {
    uint8_t *r = malloc(16 + len);
    int err;
    if (r == NULL)
      return pp_fail(call, "no memory");
    out[0] = h.tag;
    out[1] = sum_bytes(arg, len);
    memcpy(r, out, 16);
    memcpy(r + 16, arg, len);
    err = pp_reply(call, r, 16 + len);
    free(r);
    return err;
  }
  default:
    out[0] = h.tag;
    out[1] = sum_bytes(arg, len);
    return pp_reply(call, out, sizeof(out));
  }
}

static const pp_task tasks[] = { { "do", task_do }, { NULL, NULL } };

/* ---- Figures ------------------------------------------------------------------------ */

typedef struct figures {
  uint64_t pools, closes, close_now, terminates, tasks, outcomes, lost, doubled, wrong,
      just_finished, kills, fd_leaks, shm_leaks, by_status[16], map_items, stream_items,
      futures;
} figures;

static figures fig[3];
static uv_mutex_t lock;
static int verbose_wrong = 20;

/* One task's record: its kind, and what happened to it. */
typedef struct rec {
  uint32_t kind;
  size_t len;
  uint64_t sum;
  int canceled;      /* pp_cancel said 0: its outcome must be PP_ECANCELED */
  int outcomes;
  int status;        /* the first outcome's */
  int raced;         /* the first outcome was the cancel race's PP_EWORKER */
} rec;

/* One pool's work. */
typedef struct round {
  int m;
  rec *recs;
  size_t nrecs, cap;
  int kills;          /* workers may be killed from outside */
  int timeout;        /* task_timeout_ms is set */
  int ended;          /* terminated: any pending task may be canceled */
  uint64_t tag_base;
} round_t;

static int status_slot(int status) {
  if (status == 0)
    return 0;
  if (status <= PP_EINVAL && status >= PP_ENOENT)
    return (int) (PP_EINVAL - status) + 1;
  return 15;
}

static void wrong(round_t *r, size_t i, int status, const char *why, const char *message) {
  fig[r->m].wrong++;
  if (verbose_wrong-- > 0)
    fprintf(stderr, "WRONG: %s task %zu (%s): status %s: %s (%s)\n",
            pp_start_method_name((pp_start_method) (r->m + 1)), i,
            kind_names[r->recs[i].kind], pp_errname(status), why,
            message ? message : "no message");
}

/* Files an outcome of task i, and checks it against what the header promises. */
static void outcome(round_t *r, uint64_t tag, int status, const void *data, size_t len,
                    const char *message) {
  size_t i = (size_t) (tag - r->tag_base);
  rec *t;

  uv_mutex_lock(&lock);
  fig[r->m].outcomes++;
  fig[r->m].by_status[status_slot(status)]++;
  if (tag < r->tag_base || i >= r->nrecs) {
    fig[r->m].wrong++;
    fprintf(stderr, "WRONG: an outcome for no task (tag %llu)\n", (unsigned long long) tag);
    uv_mutex_unlock(&lock);
    return;
  }
  t = &r->recs[i];
  if (++t->outcomes > 1) {
    fig[r->m].doubled++;
    uv_mutex_unlock(&lock);
    return;
  }
  t->status = status;
  if (status == PP_EWORKER && message && strstr(message, "which it had just finished")) {
    /* The race that pp_cancel's documentation names (being fixed): counted apart. */
    fig[r->m].just_finished++;
    t->raced = 1;
  } else if (status == PP_ECANCELED) {
    /* Checked once the pool is done: pp_cancel's 0 comes after the callback. */
  } else if (status == 0) {
    uint64_t h[2];
    if (t->kind == K_FAIL || t->kind == K_CRASH || t->kind == K_HANG)
      wrong(r, i, status, "a success for a task that cannot succeed", message);
    else if (len < 16 || (t->kind == K_OK && len != 16) ||
             (t->kind == K_BIG && len != 16 + t->len))
      wrong(r, i, status, "a result of the wrong length", message);
    else if (memcpy(h, data, 16), h[0] != tag || h[1] != t->sum)
      wrong(r, i, status, "a result that is not this task's", message);
  } else if (status == PP_ETASK) {
    if (t->kind != K_FAIL)
      wrong(r, i, status, "a task failure from a task that does not fail", message);
  } else if (status == PP_EWORKER) {
    if (t->kind != K_CRASH && !r->kills && t->kind != K_HANG)
      wrong(r, i, status, "a worker death with nothing to kill it", message);
  } else if (status == PP_ETIMEDOUT) {
    if (!r->timeout || (t->kind != K_HANG && !r->kills))
      wrong(r, i, status, "a timeout for a task that does not hang", message);
  } else if (status == PP_ESPAWN && r->kills) {
    /* Workers killed as they start, time after time: the pool may give up. */
  } else {
    wrong(r, i, status, "an outcome the header does not give for this task", message);
  }
  uv_mutex_unlock(&lock);
}

/* ---- Making work -------------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void) {
  uint64_t x;

  uv_mutex_lock(&lock);
  x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  rng_state = x;
  uv_mutex_unlock(&lock);
  return x;
}

static unsigned pick(unsigned n) { return (unsigned) (rnd() % n); }

/* A new task of a random kind (hangs only where a timeout ends them), its argument in
 * *arg (malloc'd). Returns its tag. */
static uint64_t new_task(round_t *r, int allow_hang, uint8_t **arg, size_t *len) {
  unsigned k;
  size_t n = sizeof(head) + pick(64);
  head h;
  rec *t;
  uint64_t tag;

  k = pick(100);
  k = k < 55 ? K_OK : k < 70 ? K_FAIL : k < 80 ? K_CRASH : k < 88 ? K_BIG : K_HANG;
  if (k == K_HANG && !(allow_hang && r->timeout))
    k = K_OK;
  if (k == K_BIG)
    n = sizeof(head) + 1 + pick(3u << 20);
  *arg = malloc(n);
  if (*arg == NULL)
    abort();
  memset(*arg, (int) pick(256), n);
  (*arg)[n - 1] = (uint8_t) pick(256);
  uv_mutex_lock(&lock);
  if (r->nrecs == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 256;
    r->recs = realloc(r->recs, r->cap * sizeof(*r->recs));
    if (r->recs == NULL)
      abort();
  }
  tag = r->tag_base + r->nrecs;
  t = &r->recs[r->nrecs++];
  memset(t, 0, sizeof(*t));
  t->kind = k;
  t->len = n;
  fig[r->m].tasks++;
  uv_mutex_unlock(&lock);
  h.tag = tag;
  h.kind = k;
  h.pad = 0;
  memcpy(*arg, &h, sizeof(h));
  uv_mutex_lock(&lock);
  r->recs[tag - r->tag_base].sum = sum_bytes(*arg, n);
  uv_mutex_unlock(&lock);
  *len = n;
  return tag;
}

/* A task that was never accepted has no outcome to wait for. */
static void not_accepted(round_t *r, uint64_t tag) {
  uv_mutex_lock(&lock);
  r->recs[tag - r->tag_base].outcomes = -1000;
  fig[r->m].tasks--;
  uv_mutex_unlock(&lock);
}

typedef struct sub {
  round_t *r;
  uint64_t tag;
} sub;

static void on_result(pp_pool *pool, pp_result *res, void *user) {
  sub *s = (sub *) user;

  (void) pool;
  outcome(s->r, s->tag, res->status, res->data, res->len, res->message);
  free(s);
}

/* ---- Futures from threads ---------------------------------------------------------- */

typedef struct fthread {
  uv_thread_t t;
  round_t *r;
  pp_pool *pool;
  uv_sem_t submitted;
  unsigned n;
} fthread;

static void futures_thread(void *arg) {
  fthread *ft = (fthread *) arg;
  pp_future **fs = calloc(ft->n, sizeof(*fs));
  uint64_t *tags = calloc(ft->n, sizeof(*tags));
  size_t nf = 0, i;

  if (fs == NULL || tags == NULL)
    abort();
  for (i = 0; i < ft->n; i++) {
    uint8_t *a;
    size_t len;
    uint64_t tag = new_task(ft->r, 1, &a, &len);
    int err = pp_submit_future(ft->pool, "do", a, len, &fs[nf]);
    free(a);
    if (err != 0) {
      not_accepted(ft->r, tag);
      continue;
    }
    tags[nf++] = tag;
    if (pick(10) == 0 && pp_future_cancel(fs[nf - 1]) == 0) {
      uv_mutex_lock(&lock);
      ft->r->recs[tag - ft->r->tag_base].canceled = 1;
      uv_mutex_unlock(&lock);
    }
  }
  uv_mutex_lock(&lock);
  fig[ft->r->m].futures += nf;
  uv_mutex_unlock(&lock);
  /* No call on the pool after this: it may be closed from here on. */
  uv_sem_post(&ft->submitted);
  while (nf > 0) {
    size_t at;
    const pp_result *res;
    if (pp_future_wait_any(fs, nf, -1, &at) != 0)
      abort();
    res = pp_future_result(fs[at]);
    outcome(ft->r, tags[at], res->status, res->data, res->len, res->message);
    pp_future_free(fs[at]);
    fs[at] = fs[nf - 1];
    tags[at] = tags[nf - 1];
    nf--;
  }
  free(fs);
  free(tags);
}

/* ---- pp_map_stream ---------------------------------------------------------------- */

typedef struct stream {
  round_t *r;
  size_t n, given;
  uint64_t *tags;
  uint8_t *arg;
} stream;

static int stream_next(void *user, pp_input *in) {
  stream *s = (stream *) user;
  size_t len;

  if (s->given == s->n)
    return 0;
  free(s->arg);
  s->tags[s->given] = new_task(s->r, 0, &s->arg, &len);
  s->given++;
  in->data = s->arg;
  in->len = len;
  return 1;
}

static void stream_each(void *user, size_t index, pp_result *res) {
  stream *s = (stream *) user;

  if (index >= s->given) {
    uv_mutex_lock(&lock);
    fig[s->r->m].wrong++;
    uv_mutex_unlock(&lock);
    return;
  }
  outcome(s->r, s->tags[index], res->status, res->data, res->len, res->message);
}

/* ---- Outside kills, and what is left behind (Linux) ------------------------------- */

/* The killer thread's scans of /proc hold descriptors of their own for a moment: a count
 * of this process's descriptors waits for a scan to end, and no scan starts during it. */
static uv_mutex_t scan_lock;

/* Shared with the killer thread, under lock. */
static int kill_method = -1;   /* the round's method while kills are on */
static int soak_done;

static int shared_get(const int *v) {
  int x;

  uv_mutex_lock(&lock);
  x = *v;
  uv_mutex_unlock(&lock);
  return x;
}

static void shared_set(int *v, int x) {
  uv_mutex_lock(&lock);
  *v = x;
  uv_mutex_unlock(&lock);
}

static int is_worker_cmd(long pid) {
  char path[64], buf[4096];
  FILE *f;
  size_t n, i;

  snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
  f = fopen(path, "r");
  if (f == NULL)
    return 0;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  for (i = 0; i < n; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  buf[n] = '\0';
  return strstr(buf, "--procpool-worker=") != NULL;
}

/* A random worker of this process: a child (spawn) or a grandchild (fork, forkserver:
 * the helper's or the server's children). 0 when none. */
static long some_worker(int m) {
  long found[256], mine = (long) getpid();
  size_t n = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;

  if (d == NULL)
    return 0;
  while ((e = readdir(d)) != NULL && n < 256) {
    long pid = strtol(e->d_name, NULL, 10), pp;
    if (pid <= 0)
      continue;
    pp = test_proc_stat(pid, NULL);
    if (pp <= 0)
      continue;
    if (m == 1 ? (pp == mine && is_worker_cmd(pid)) : test_proc_stat(pp, NULL) == mine)
      found[n++] = pid;
  }
  closedir(d);
  return n ? found[pick((unsigned) n)] : 0;
}

static void killer_thread(void *arg) {
  (void) arg;
  while (!shared_get(&soak_done)) {
    int m = shared_get(&kill_method);
    uv_sleep(50 + pick(400));
    if (m >= 0 && m == shared_get(&kill_method)) {
      long pid;
      uv_mutex_lock(&scan_lock);
      pid = some_worker(m);
      uv_mutex_unlock(&scan_lock);
      if (pid > 0 && kill((pid_t) pid, SIGKILL) == 0) {
        uv_mutex_lock(&lock);
        fig[m].kills++;
        uv_mutex_unlock(&lock);
      }
    }
  }
}

static int count_dir(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;

  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      n++;
  closedir(d);
  return n;
}

static int count_fds(void) {
  int n;

  uv_mutex_lock(&scan_lock);
  n = count_dir("/proc/self/fd", "");
  uv_mutex_unlock(&scan_lock);
  return n;
}

static char shm_prefix[64];

static int count_shm(void) { return count_dir("/dev/shm", shm_prefix); }

static long rss_kib(void) {
  char line[256];
  long kib = -1;
  FILE *f = fopen("/proc/self/status", "r");

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, "VmRSS:", 6) == 0)
      kib = strtol(line + 6, NULL, 10);
  fclose(f);
  return kib;
}

/* ---- One pool --------------------------------------------------------------------- */

static uint64_t next_tag = 1;
static int warming;  /* the first pools: what they leave is the process's for good */

static void one_pool(int m, int quick) {
  static const pp_start_method methods[3] = { PP_START_FORK, PP_START_SPAWN,
                                              PP_START_FORKSERVER };
  pp_pool_options opts;
  pp_pool *pool;
  round_t r;
  fthread ft[3];
  unsigned nthreads, i, nsubmit, how;
  uint64_t *ids, *tags;
  int fds0, fds, shm0, err;

  memset(&r, 0, sizeof(r));
  r.m = m;
  r.tag_base = next_tag;
  next_tag += 1u << 20;
  pp_pool_options_init(&opts);
  opts.start_method = methods[m];
  opts.workers = 1 + pick(4);
  opts.max_tasks_per_worker = pick(3) == 0 ? 1 + pick(5) : 0;
  opts.pipeline_depth = pick(3) == 0 ? 1 : pick(2) ? 0 : 4;
  if (pick(2)) {
    opts.task_timeout_ms = 700;
    r.timeout = 1;
  }
  r.kills = pick(3) == 0;
  fds0 = count_fds();
  shm0 = count_shm();
  err = pp_pool_new(&pool, NULL, &opts);
  if (err != 0) {
    fprintf(stderr, "soak: pp_pool_new (%s): %s\n", pp_start_method_name(methods[m]),
            pp_strerror(err));
    exit(2);
  }
  fig[m].pools++;
  if (r.kills)
    shared_set(&kill_method, m);

  nthreads = pick(3);
  for (i = 0; i < nthreads; i++) {
    ft[i].r = &r;
    ft[i].pool = pool;
    ft[i].n = 5 + pick(30);
    uv_sem_init(&ft[i].submitted, 0);
    if (uv_thread_create(&ft[i].t, futures_thread, &ft[i]) != 0)
      abort();
  }

  /* Callbacks, and cancels of tasks submitted earlier (finished, running or queued). */
  nsubmit = 10 + pick(60);
  ids = calloc(nsubmit, sizeof(*ids));
  tags = calloc(nsubmit, sizeof(*tags));
  if (ids == NULL || tags == NULL)
    abort();
  for (i = 0; i < nsubmit; i++) {
    uint8_t *a;
    size_t len;
    sub *s = malloc(sizeof(*s));
    if (s == NULL)
      abort();
    s->r = &r;
    s->tag = tags[i] = new_task(&r, 1, &a, &len);
    if (pp_submit(pool, "do", a, len, on_result, s, &ids[i]) != 0) {
      not_accepted(&r, s->tag);
      free(s);
      ids[i] = 0;
    }
    free(a);
    if (pick(8) == 0) {
      unsigned j = pick(i + 1);
      if (ids[j] != 0 && pp_cancel(pool, ids[j]) == 0) {
        uv_mutex_lock(&lock);
        r.recs[tags[j] - r.tag_base].canceled = 1;
        uv_mutex_unlock(&lock);
      }
    }
  }

  /* pp_map and pp_map_stream, on this thread. */
  if (pick(2)) {
    size_t n = pick(quick ? 10 : 40), k;
    pp_input *in = calloc(n + 1, sizeof(*in));
    pp_result *out = calloc(n + 1, sizeof(*out));
    uint64_t *tags = calloc(n + 1, sizeof(*tags));
    for (k = 0; k < n; k++) {
      uint8_t *a;
      tags[k] = new_task(&r, 0, &a, &in[k].len);
      in[k].data = a;
    }
    pp_map(pool, "do", n, in, out);
    for (k = 0; k < n; k++) {
      outcome(&r, tags[k], out[k].status, out[k].data, out[k].len, out[k].message);
      pp_result_free(&out[k]);
      free((void *) in[k].data);
    }
    fig[m].map_items += n;
    free(in);
    free(out);
    free(tags);
  }
  if (pick(2)) {
    stream s;
    memset(&s, 0, sizeof(s));
    s.r = &r;
    s.n = pick(quick ? 30 : 300);
    s.tags = calloc(s.n + 1, sizeof(*s.tags));
    pp_map_stream(pool, "do", stream_next, stream_each, &s,
                  pick(2) ? PP_MAP_UNORDERED : 0);
    fig[m].stream_items += s.given;
    free(s.arg);
    free(s.tags);
  }

  for (i = 0; i < nthreads; i++)
    uv_sem_wait(&ft[i].submitted);
  how = pick(4);
  if (how == 0) {
    fig[m].terminates++;
    r.ended = 1;
    pp_pool_terminate(pool, NULL, NULL);
  } else if (how == 1) {
    fig[m].close_now++;
    pp_pool_close(pool, NULL, NULL);
  } else {
    fig[m].closes++;
    pp_pool_wait(pool);
    pp_pool_close(pool, NULL, NULL);
  }
  shared_set(&kill_method, -1);
  for (i = 0; i < nthreads; i++) {
    uv_thread_join(&ft[i].t);
    uv_sem_destroy(&ft[i].submitted);
  }
  free(ids);
  free(tags);

  for (i = 0; i < r.nrecs; i++) {
    rec *t = &r.recs[i];
    if (t->outcomes == 0) {
      fig[m].lost++;
      fprintf(stderr, "LOST: %s task %u (%s)\n", pp_start_method_name(methods[m]), i,
              kind_names[t->kind]);
    } else if (t->outcomes > 0 && !t->raced) {
      if (t->canceled && t->status != PP_ECANCELED)
        wrong(&r, i, t->status, "pp_cancel said it canceled this task", NULL);
      else if (!t->canceled && !r.ended && t->status == PP_ECANCELED)
        wrong(&r, i, t->status, "canceled, but no one canceled it", NULL);
    }
  }
  if (warming) {
    free(r.recs);
    return;
  }
  fds = count_fds();
  if (fds != fds0) {
    fig[m].fd_leaks += (uint64_t) (fds - fds0);
    fprintf(stderr, "LEAK: %d descriptors after a %s pool\n", fds - fds0,
            pp_start_method_name(methods[m]));
  }
  if (count_shm() != shm0) {
    fig[m].shm_leaks += (uint64_t) (count_shm() - shm0);
    fprintf(stderr, "LEAK: %d /dev/shm names after a %s pool\n", count_shm() - shm0,
            pp_start_method_name(methods[m]));
  }
  free(r.recs);
}

static void print_table(void) {
  static const char *names[3] = { "fork", "spawn", "forkserver" };
  int m;

  printf("%-11s %6s %7s %7s %6s %6s %6s %7s %6s %5s %6s %5s %5s %6s %5s %5s\n", "method",
         "pools", "tasks", "ok", "ETASK", "EWORK", "ETIME", "ECANCEL", "other", "lost",
         "double", "wrong", "justf", "kills", "fdlk", "shmlk");
  for (m = 0; m < 3; m++) {
    figures *f = &fig[m];
    uint64_t other = f->outcomes - f->by_status[0] - f->by_status[status_slot(PP_ETASK)] -
                     f->by_status[status_slot(PP_EWORKER)] -
                     f->by_status[status_slot(PP_ETIMEDOUT)] -
                     f->by_status[status_slot(PP_ECANCELED)];
    printf("%-11s %6llu %7llu %7llu %6llu %6llu %6llu %7llu %6llu %5llu %6llu %5llu %5llu "
           "%6llu %5llu %5llu\n",
           names[m], (unsigned long long) f->pools, (unsigned long long) f->tasks,
           (unsigned long long) f->by_status[0],
           (unsigned long long) f->by_status[status_slot(PP_ETASK)],
           (unsigned long long) f->by_status[status_slot(PP_EWORKER)],
           (unsigned long long) f->by_status[status_slot(PP_ETIMEDOUT)],
           (unsigned long long) f->by_status[status_slot(PP_ECANCELED)],
           (unsigned long long) other, (unsigned long long) f->lost,
           (unsigned long long) f->doubled, (unsigned long long) f->wrong,
           (unsigned long long) f->just_finished, (unsigned long long) f->kills,
           (unsigned long long) f->fd_leaks, (unsigned long long) f->shm_leaks);
    printf("%-11s closes after the work %llu, at once %llu, terminates %llu; "
           "pp_map items %llu, stream items %llu, futures %llu\n", "",
           (unsigned long long) f->closes, (unsigned long long) f->close_now,
           (unsigned long long) f->terminates, (unsigned long long) f->map_items,
           (unsigned long long) f->stream_items, (unsigned long long) f->futures);
  }
}

static void quiet(const char *message, void *user) {
  (void) message;
  (void) user;
}

int main(int argc, char **argv) {
  double seconds = 600, report = 30;
  int quick = 0, i, m, bad = 0;
  uint64_t start, last;
  long rss0 = -1, rss_max = 0, rss;
  uv_thread_t killer;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0)
      quick = 1;
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--report") == 0 && i + 1 < argc)
      report = atof(argv[++i]);
    else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
      rng_state = strtoull(argv[++i], NULL, 0) | 1;
    else {
      fprintf(stderr, "usage: soak [--quick] [--seconds N] [--report N] [--seed N]\n");
      return 2;
    }
  }
  if (quick)
    seconds = 0;
  uv_mutex_init(&lock);
  uv_mutex_init(&scan_lock);
  /* The warnings (a fork pool in a threaded process, a lost server) are expected here. */
  pp_set_warning_handler(quiet, NULL);
  snprintf(shm_prefix, sizeof(shm_prefix), "procpool-%lu-", (unsigned long) getpid());
  printf("soak: %.0f s, seed %llu; resident memory every %.0f s\n", seconds,
         (unsigned long long) rng_state, report);
  fflush(stdout);
  /* The forkserver's server outlives its pools, with a descriptor of its own here: one
   * pool of each method first, so that the count after each pool is the steady one. */
  warming = 1;
  for (m = 0; m < 3; m++)
    one_pool(m, 1);
  warming = 0;
  memset(fig, 0, sizeof(fig));
  if (uv_thread_create(&killer, killer_thread, NULL) != 0)
    abort();
  start = last = uv_hrtime();
  i = 0;
  do {
    for (m = 0; m < 3; m++)
      one_pool(m, quick);
    if ((uv_hrtime() - last) / 1e9 >= report || (quick && ++i == 2)) {
      rss = rss_kib();
      last = uv_hrtime();
      if ((last - start) / 1e9 >= 60 && rss0 < 0)
        rss0 = rss;
      if (rss > rss_max)
        rss_max = rss;
      printf("%6.0f s: rss %ld KiB, tasks %llu\n", (last - start) / 1e9, rss,
             (unsigned long long) (fig[0].tasks + fig[1].tasks + fig[2].tasks));
      fflush(stdout);
    }
  } while (quick ? i < 2 : (uv_hrtime() - start) / 1e9 < seconds);
  shared_set(&soak_done, 1);
  uv_thread_join(&killer);
  rss = rss_kib();
  print_table();
  printf("resident memory: %ld KiB at the end", rss);
  if (rss0 > 0)
    printf(", %ld KiB after the first minute, %ld KiB at most", rss0, rss_max);
  printf("\n");
  for (m = 0; m < 3; m++)
    if (fig[m].lost || fig[m].doubled || fig[m].wrong || fig[m].fd_leaks ||
        fig[m].shm_leaks)
      bad = 1;
  if (rss0 > 0 && rss > rss0 + 64 * 1024) {
    printf("resident memory grew by %ld KiB after the first minute\n", rss - rss0);
    bad = 1;
  }
  printf("%s\n", bad ? "FAILED" : "ok");
  return bad;
}
