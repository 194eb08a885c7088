/* Large messages through shared memory (bigmsg.h): every path a large argument or result
 * can take gives the same bytes as the channel; the cap and the switch are obeyed; a
 * worker that dies with a large message in flight loses nothing, doubles nothing, and
 * leaves no segment behind in /dev/shm nor memory in the parent; a worker that cannot
 * map shared memory costs nothing but the transport. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#if defined(__GLIBC__)
#  include <malloc.h>
#endif
#ifndef _WIN32
#  include <dirent.h>
#  include <signal.h>
#  include <sys/resource.h>
#  include <unistd.h>
#endif

#define MIB ((size_t) 1 << 20)

/* ---- Tasks ------------------------------------------------------------------------ */

/* Replies from a buffer of its own: a result segment of the worker's. */
int test_task_bm_copy(pp_call *call, const void *arg, size_t len) {
  void *copy = malloc(len ? len : 1);
  int err;

  if (copy == NULL)
    return pp_fail(call, "bm_copy: out of memory");
  if (len > 0)
    memcpy(copy, arg, len);
  err = pp_reply(call, copy, len);
  free(copy);
  return err;
}

/* Replies with its argument but its first and last bytes: a result that stays where the
 * pool put the argument. */
int test_task_bm_sub(pp_call *call, const void *arg, size_t len) {
  if (len < 2)
    return pp_fail(call, "bm_sub wants 2 bytes or more");
  return pp_reply(call, (const unsigned char *) arg + 1, len - 2);
}

/* One byte: 1 when its argument lies in a shared-memory segment of procpool's (an
 * anonymous memfd of that name), 0 when not, 2 where this cannot be told (only Linux
 * says, in /proc/self/maps). */
int test_task_bm_where(pp_call *call, const void *arg, size_t len) {
  unsigned char in = 2;
#if defined(__linux__)
  FILE *f = fopen("/proc/self/maps", "re");
  char line[512];
  uintptr_t a = (uintptr_t) arg;

  (void) len;
  in = 0;
  while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi &&
        strstr(line, "/memfd:procpool") != NULL)
      in = 1;
  }
  if (f != NULL)
    fclose(f);
#else
  (void) arg;
  (void) len;
#endif
  return pp_reply(call, &in, 1);
}

static void bm_pattern(unsigned char *p, size_t len, unsigned seed) {
  size_t i;

  for (i = 0; i < len; i++)
    p[i] = (unsigned char) ((i * 131 + (i >> 12) * 7 + seed) & 0xff);
}

/* Argument: u64 size, u32 seed. Replies size bytes of bm_pattern. */
typedef struct bm_make_arg {
  uint64_t size;
  uint32_t seed;
  uint32_t then;           /* 0: return; 1: crash after the reply; 2: hang after it */
} bm_make_arg;

int test_task_bm_make(pp_call *call, const void *arg, size_t len) {
  bm_make_arg a;
  unsigned char *p;
  int err;

  if (len != sizeof(a))
    return pp_fail(call, "bm_make wants a bm_make_arg");
  memcpy(&a, arg, sizeof(a));
  p = (unsigned char *) malloc(a.size ? (size_t) a.size : 1);
  if (p == NULL)
    return pp_fail(call, "bm_make: out of memory");
  bm_pattern(p, (size_t) a.size, a.seed);
  err = pp_reply(call, p, (size_t) a.size);
  free(p);
  if (a.then == 1) {
#ifndef _WIN32
    struct rlimit rl = { 0, 0 };
    setrlimit(RLIMIT_CORE, &rl);
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
#endif
    abort();
  }
  while (a.then == 2)
    uv_sleep(1000);
  return err;
}

/* An initializer that leaves the worker no descriptor to spare: shm_open then fails
 * (EMFILE), as it would in a sandbox without /dev/shm. The limit is lowered to what is
 * open; where that is refused (valgrind keeps the limit to itself), descriptors are
 * taken until none is left. */
int test_task_bm_nofile(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
#ifndef _WIN32
  {
    struct rlimit rl;
    int fd = dup(0), n;
    if (fd < 0)
      return pp_fail(call, "bm_nofile: dup failed");
    close(fd);
    rl.rlim_cur = (rlim_t) fd;
    rl.rlim_max = (rlim_t) fd;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      for (n = 0; n < 65536 && dup(0) >= 0; n++)
        ;
      if (dup(0) >= 0)
        return pp_fail(call, "bm_nofile: descriptors did not run out");
    }
  }
#endif
  (void) call;
  return 0;
}

/* ---- Helpers ---------------------------------------------------------------------- */

static void assert_no_shm_left(void) {
  int n = test_shm_names_of((long) uv_os_getpid());

  if (n >= 0)
    ASSERT_EQ_INT(n, 0);
}

/* Mappings of this process's pools' segments in its address space, or -1 where that cannot
 * be told. */
static int shm_maps_held(void) {
#if defined(__linux__)
  char line[512];
  FILE *f = fopen("/proc/self/maps", "r");
  int n = 0;

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strstr(line, "/memfd:procpool") != NULL)
      n++;
  fclose(f);
  return n;
#else
  return -1;
#endif
}

/* Gives the allocator's free pages back to the OS where it keeps them (glibc keeps the
 * freed 2 MiB blocks of a round in its heap, behind any small block allocated after them:
 * tens of MiB that are no leak), so that the resident set counts what is in use. */
static void release_free_memory(void) {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

/* This process's resident set, once the allocator's free pages are given back. */
static size_t resident(void) {
  size_t rss;

  release_free_memory();
  ASSERT_EQ_INT(uv_resident_set_memory(&rss), 0);
  return rss;
}

/* This process's resident memory less what its pools' segments count there, or 0 where
 * the OS does not tell them apart (Linux's RssAnon does). The pages of the live workers'
 * segments that the last round happened to touch, up to 2 workers x 8 segments of 2 MiB
 * and more here, would hide a leak. */
static size_t own_resident(void) {
  size_t rss = 0;
#if defined(__linux__)
  char line[256];
  unsigned long kib;
  FILE *f;

  release_free_memory();
  f = fopen("/proc/self/status", "r");
  if (f != NULL) {
    while (fgets(line, sizeof(line), f) != NULL)
      if (sscanf(line, "RssAnon: %lu kB", &kib) == 1) {
        rss = (size_t) kib * 1024;
        break;
      }
    fclose(f);
  }
#endif
  return rss;
}

static unsigned char where(pp_pool *pool, size_t len) {
  unsigned char *arg = (unsigned char *) calloc(1, len);
  unsigned char in;
  pp_result r;

  ASSERT_NOT_NULL(arg);
  APPLY(pool, "bm_where", arg, len, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, 1);
  in = *(unsigned char *) r.data;
  pp_result_free(&r);
  free(arg);
  return in;
}

/* Whether the task saw its argument in shared memory, where that can be told. */
static void assert_where(pp_pool *pool, size_t len, int want) {
  unsigned char in = where(pool, len);

  if (in != 2)
    ASSERT_EQ_INT(in, want);
}

/* Every task: its result is the bytes expected. */
static void check_apply(pp_pool *pool, const char *task, const unsigned char *arg,
                        size_t len, const unsigned char *want, size_t want_len) {
  pp_result r;

  APPLY(pool, task, arg, len, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, want, want_len);
  pp_result_free(&r);
}

static void check_make(pp_pool *pool, size_t size, unsigned seed) {
  bm_make_arg a;
  unsigned char *want = (unsigned char *) malloc(size ? size : 1);
  pp_result r;

  ASSERT_NOT_NULL(want);
  memset(&a, 0, sizeof(a));
  a.size = size;
  a.seed = seed;
  bm_pattern(want, size, seed);
  APPLY(pool, "bm_make", &a, sizeof(a), &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_MEM(r.data, r.len, want, size);
  pp_result_free(&r);
  free(want);
}

/* ---- Tests ------------------------------------------------------------------------ */

/* Each path gives the bytes the channel gives: below and at the threshold, replies in
 * place (the whole argument, a part of it), from the worker's own buffer, and results
 * larger than their argument; the switch turns the transport off. */
void test_bm_paths(void) {
  size_t sizes[] = { MIB - 1, MIB, 3 * MIB + 5 };
  pp_pool_options opts;
  pp_pool *pool;
  size_t i;

  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    size_t n = sizes[i];
    unsigned char *arg = (unsigned char *) malloc(n);
    ASSERT_NOT_NULL(arg);
    bm_pattern(arg, n, (unsigned) i);
    check_apply(pool, "echo", arg, n, arg, n);
    check_apply(pool, "bm_copy", arg, n, arg, n);
    check_apply(pool, "bm_sub", arg, n, arg + 1, n - 2);
    check_make(pool, n, (unsigned) i + 7);
    /* Again: the segments are reused, and must not hand back a previous message. */
    bm_pattern(arg, n, (unsigned) i + 100);
    check_apply(pool, "bm_copy", arg, n, arg, n);
    check_apply(pool, "echo", arg, n, arg, n);
    free(arg);
  }
  assert_where(pool, 2 * MIB, 1);
  assert_where(pool, 1000, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  opts.shm_threshold = PP_SHM_OFF;
  pool = NEW_POOL(NULL, &opts);
  assert_where(pool, 2 * MIB, 0);
  check_make(pool, 2 * MIB, 3);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);

  /* A threshold of its own: 64 KiB goes through shared memory. */
  opts.shm_threshold = 64 * 1024;
  pool = NEW_POOL(NULL, &opts);
  assert_where(pool, 64 * 1024, 1);
  assert_where(pool, 64 * 1024 - 1, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  assert_no_shm_left();
}

/* The largest messages the default options take: a 256 MiB argument comes back intact,
 * and a 256 MiB result arrives intact. */
void test_bm_256mib(void) {
  const size_t n = (size_t) 256 << 20;
  unsigned char *arg;
  pp_pool_options opts;
  pp_pool *pool;
  size_t i;

  const char *preload = getenv("LD_PRELOAD");

  if (sizeof(size_t) < 8)
    test_skip("a 32-bit process");
  /* Valgrind runs every byte of 256 MiB copied and compared through its own code, for
   * minutes; the smaller tests here take the same paths under it. */
  if (preload != NULL && strstr(preload, "valgrind") != NULL)
    test_skip("under valgrind: too slow at this size");
  /* ThreadSanitizer checks every byte of each 256 MiB copy: minutes. The 2 to 8 MiB bm-
   * tests take the same paths. */
  if (TEST_TSAN)
    test_skip("under ThreadSanitizer: too slow at this size");
  arg = (unsigned char *) malloc(n);
  ASSERT_NOT_NULL(arg);
  /* Cheap but position-dependent: a block shifted or repeated would not match. */
  for (i = 0; i < n / 8; i++)
    memcpy(arg + i * 8, &i, 8);
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  check_apply(pool, "echo", arg, n, arg, n);
  check_make(pool, n, 5);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(arg);
  assert_no_shm_left();
}

/* shm_max_bytes is obeyed: what does not fit goes through the channel, intact. */
void test_bm_cap(void) {
  pp_pool_options opts;
  pp_pool *pool;
  unsigned char *arg = (unsigned char *) malloc(8 * MIB);

  ASSERT_NOT_NULL(arg);
  bm_pattern(arg, 8 * MIB, 9);
  test_options(&opts);
  opts.workers = 1;
  /* Room for one 4 MiB segment, or a 2 MiB one and a little. */
  opts.shm_max_bytes = 5 * MIB;
  pool = NEW_POOL(NULL, &opts);
  assert_where(pool, 2 * MIB, 1);
  /* No room for a second segment: the first is made anew, larger. */
  assert_where(pool, 4 * MIB, 1);
  assert_where(pool, 8 * MIB, 0);
  check_apply(pool, "echo", arg, 8 * MIB, arg, 8 * MIB);
  check_apply(pool, "bm_copy", arg, 2 * MIB, arg, 2 * MIB);
  check_make(pool, 5 * MIB, 1);
  check_make(pool, 2 * MIB, 2);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(arg);
  assert_no_shm_left();
}

/* Many large messages at once, pipelined, more than the segments: some wait for a
 * segment, some take the channel; every one arrives once and intact. */
#define BM_MANY 400
typedef struct bm_many {
  int calls[BM_MANY];
  int bad;
  int done;
} bm_many;

static void bm_many_cb(pp_pool *pool, pp_result *r, void *user) {
  bm_many *m = (bm_many *) user;
  size_t i = (size_t) (r->id - 1);
  unsigned char want[80 * 1024];

  (void) pool;
  m->done++;
  if (i >= BM_MANY) {
    m->bad++;
    return;
  }
  m->calls[i]++;
  bm_pattern(want, sizeof(want), (unsigned) i);
  if (r->status != 0 || r->len != sizeof(want) - (i % 2 ? 2 : 0) ||
      memcmp(r->data, want + (i % 2 ? 1 : 0), r->len) != 0)
    m->bad++;
}

void test_bm_many(void) {
  pp_pool_options opts;
  pp_pool *pool;
  bm_many *m = (bm_many *) calloc(1, sizeof(*m));
  unsigned char arg[80 * 1024];
  size_t i;

  ASSERT_NOT_NULL(m);
  test_options(&opts);
  opts.workers = 2;
  opts.shm_threshold = 64 * 1024;
  opts.pipeline_depth = 8;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < BM_MANY; i++) {
    uint64_t id;
    bm_pattern(arg, sizeof(arg), (unsigned) i);
    ASSERT_EQ_INT(pp_submit(pool, i % 2 ? "bm_sub" : "bm_copy", arg, sizeof(arg), bm_many_cb,
                            m, &id), 0);
    ASSERT_EQ_U64(id, i + 1);
  }
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(m->done, BM_MANY);
  ASSERT_EQ_INT(m->bad, 0);
  for (i = 0; i < BM_MANY; i++)
    ASSERT_EQ_INT(m->calls[i], 1);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(m);
  assert_no_shm_left();
}

/* Workers die with large messages in flight: in an argument's segment (a crash with a
 * large argument, with more sent ahead behind it), in a result's segment written but
 * never sent (a crash, and a hang ended by the task timeout). Each task's outcome comes
 * once: the crashing ones fail with PP_EWORKER (PP_ETIMEDOUT), the others succeed
 * intact, wherever they ran. No segment is left in /dev/shm, and three rounds leave the
 * parent's memory where one left it. */
#define BM_FAULT_N 16
typedef struct bm_fault {
  int calls[BM_FAULT_N];
  int status[BM_FAULT_N];
  int bad;
  int done;
} bm_fault;

static int bm_fault_kind(size_t i) { return (int) (i % 4); }

static void bm_fault_cb(pp_pool *pool, pp_result *r, void *user) {
  bm_fault *f = (bm_fault *) user;
  size_t i;
  unsigned char *want;

  (void) pool;
  f->done++;
  for (i = 0; i < BM_FAULT_N; i++)
    if (f->calls[i] == -(int) r->id)
      break;
  if (i == BM_FAULT_N) {
    f->bad++;
    return;
  }
  f->calls[i] = 1;
  f->status[i] = r->status;
  if (r->status != 0)
    return;
  want = (unsigned char *) malloc(2 * MIB);
  bm_pattern(want, 2 * MIB, (unsigned) i);
  if (want == NULL || r->len != 2 * MIB || memcmp(r->data, want, 2 * MIB) != 0)
    f->bad++;
  free(want);
}

static void bm_fault_round(pp_pool *pool) {
  bm_fault f;
  unsigned char *arg = (unsigned char *) malloc(2 * MIB);
  size_t i;

  ASSERT_NOT_NULL(arg);
  memset(&f, 0, sizeof(f));
  for (i = 0; i < BM_FAULT_N; i++) {
    uint64_t id;
    bm_make_arg a;
    int kind = bm_fault_kind(i);
    memset(&a, 0, sizeof(a));
    a.size = 2 * MIB;
    a.seed = (uint32_t) i;
    bm_pattern(arg, 2 * MIB, (unsigned) i);
    if (kind == 0)
      ASSERT_EQ_INT(pp_submit(pool, "echo", arg, 2 * MIB, bm_fault_cb, &f, &id), 0);
    else if (kind == 1)
      ASSERT_EQ_INT(pp_submit(pool, "crash_segv", arg, 2 * MIB, bm_fault_cb, &f, &id), 0);
    else if (kind == 2)
      ASSERT_EQ_INT(pp_submit(pool, "bm_copy", arg, 2 * MIB, bm_fault_cb, &f, &id), 0);
    else {
      a.then = i % 8 == 3 ? 1 : 2;
      ASSERT_EQ_INT(pp_submit(pool, "bm_make", &a, sizeof(a), bm_fault_cb, &f, &id), 0);
    }
    f.calls[i] = -(int) id;
  }
  ASSERT_EQ_INT(pp_pool_wait(pool), 0);
  ASSERT_EQ_INT(f.done, BM_FAULT_N);
  ASSERT_EQ_INT(f.bad, 0);
  for (i = 0; i < BM_FAULT_N; i++) {
    int kind = bm_fault_kind(i);
    ASSERT_EQ_INT(f.calls[i], 1);
    if (kind == 0 || kind == 2)
      ASSERT_EQ_INT(f.status[i], 0);
    else if (kind == 1 || i % 8 == 3)
      ASSERT_EQ_INT(f.status[i], PP_EWORKER);
    else
      ASSERT_EQ_INT(f.status[i], PP_ETIMEDOUT);
  }
  free(arg);
}

void test_bm_faults(void) {
  pp_pool_options opts;
  pp_pool *pool;
  size_t own1, own5, rss1, rss5;
  int round;
  int maps;

  test_options(&opts);
  opts.workers = 2;
  opts.pipeline_depth = 4;
  /* Ends the tasks that hang after their reply: a kill, whatever the time it takes. The
   * 2 MiB echoes run under it too, and must not reach it under valgrind on a busy machine;
   * each round waits it out twice, so it is not made longer than that needs. */
  opts.task_timeout_ms = test_scale_ms(1000);

  /* Memory is compared twice: in an open pool, between its first round and its fifth
   * (where the OS counts the segments apart), and with no pool, after a pool of one round
   * and after a pool of five. */
  pool = NEW_POOL(NULL, &opts);
  bm_fault_round(pool);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  rss1 = resident();

  pool = NEW_POOL(NULL, &opts);
  bm_fault_round(pool);
  own1 = own_resident();
  for (round = 0; round < 4; round++)
    bm_fault_round(pool);
  own5 = own_resident();
  /* The segments still mapped are the two live workers' alone: PP__SHM_SLOTS (4) for
   * arguments and as many for results each. The dead workers' were unmapped. */
  maps = shm_maps_held();
  if (maps >= 0)
    ASSERT_LE_INT(maps, 2 * 2 * 4);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  rss5 = resident();

  /* Four more rounds, each through some 40 MiB of messages and 8 dead workers' segments:
   * a leak of a fraction of one round's would show. ASan keeps freed blocks in its
   * quarantine, so its resident size says nothing of leaks (its own leak check does). */
  if (!TEST_ASAN) {
    if (own1 > 0)
      ASSERT_LE_INT((long long) own5, (long long) own1 + 16 * (long long) MIB);
    ASSERT_LE_INT((long long) rss5, (long long) rss1 + 16 * (long long) MIB);
  }
  assert_no_shm_left();
}

/* A worker that cannot map shared memory: the task it could not read runs elsewhere, over
 * a channel, in its turn; the pool says so once and sends its large messages over the
 * channels from then on. */
static char bm_warning[1024];

static void bm_warn(const char *message, void *user) {
  (void) user;
  if (bm_warning[0] == '\0')
    snprintf(bm_warning, sizeof(bm_warning), "%s", message);
}

void test_bm_cannot_map(void) {
  pp_pool_options opts;
  pp_pool *pool;
  unsigned char *arg = (unsigned char *) malloc(2 * MIB);
  size_t i;

#ifdef _WIN32
  test_skip("the worker is kept from mapping by RLIMIT_NOFILE, a Unix limit");
#endif
  /* Valgrind keeps a process's descriptor limit itself, for the calls it sees: the
   * descriptors that come with a message (SCM_RIGHTS) arrive regardless. */
  if (test_valgrind() && test_method == PP_START_FORK)
    test_skip("a forked worker runs under valgrind, whose RLIMIT_NOFILE does not hold back "
              "received descriptors");
  ASSERT_NOT_NULL(arg);
  pp_set_warning_handler(bm_warn, NULL);
  test_options(&opts);
  opts.workers = 1;
  opts.initializer = "bm_nofile";
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 4; i++) {
    bm_pattern(arg, 2 * MIB, (unsigned) i);
    check_apply(pool, "echo", arg, 2 * MIB, arg, 2 * MIB);
  }
  assert_where(pool, 2 * MIB, 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  pp_set_warning_handler(NULL, NULL);
  ASSERT_CONTAINS(bm_warning, "could not map a large argument's shared memory");
  free(arg);
  assert_no_shm_left();
}

/* Large messages from several threads at once, on a private pool no thread runs a loop
 * for: each thread's results are its own, intact. */
typedef struct bm_thread {
  pp_pool *pool;
  unsigned seed;
  int bad;
} bm_thread;

static void bm_thread_run(void *arg) {
  bm_thread *t = (bm_thread *) arg;
  unsigned char *buf = (unsigned char *) malloc(2 * MIB);
  int i;

  if (buf == NULL) {
    t->bad++;
    return;
  }
  for (i = 0; i < 8; i++) {
    pp_result r;
    bm_pattern(buf, 2 * MIB, t->seed + (unsigned) i);
    if (pp_apply(t->pool, i % 2 ? "bm_copy" : "echo", buf, 2 * MIB, &r) != 0 ||
        r.len != 2 * MIB || memcmp(r.data, buf, 2 * MIB) != 0)
      t->bad++;
    pp_result_free(&r);
  }
  free(buf);
}

void test_bm_threads(void) {
  bm_thread t[4];
  uv_thread_t tid[4];
  pp_pool_options opts;
  pp_pool *pool;
  int i;

  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 4; i++) {
    t[i].pool = pool;
    t[i].seed = (unsigned) i * 100;
    t[i].bad = 0;
    ASSERT_EQ_INT(uv_thread_create(&tid[i], bm_thread_run, &t[i]), 0);
  }
  for (i = 0; i < 4; i++) {
    ASSERT_EQ_INT(uv_thread_join(&tid[i]), 0);
    ASSERT_EQ_INT(t[i].bad, 0);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  assert_no_shm_left();
}
