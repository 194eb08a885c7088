/* Shared memory segments: created, filled, handed to workers by reference and back,
 * outliving a crashed worker, and leaving no name behind. The tasks at the end run in
 * the workers; tasks.c lists them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#  include <windows.h>
#else
#  include <sys/resource.h>
#endif

#include "test.h"

#define BIG_SIZE ((size_t) 64 << 20)

/* The argument of "shm_fill" and "shm_crash". */
typedef struct shm_job {
  pp_shm_ref ref;
  uint64_t seed_in;   /* the pattern the segment holds */
  uint64_t seed_out;  /* the pattern "shm_fill" writes over it */
} shm_job;

/* The argument of "shm_make". */
typedef struct shm_make_arg {
  uint64_t size;
  uint64_t seed;
} shm_make_arg;

/* ---- Patterns ----------------------------------------------------------------------- */

/* splitmix64 of the word's index: every word differs, and a block that a bug shifts or
 * repeats matches nothing. */
static uint64_t pattern_word(uint64_t seed, size_t i) {
  uint64_t z = seed + (uint64_t) (i + 1) * 0x9E3779B97F4A7C15ull;

  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Fills n bytes (any n) with the pattern of seed; returns their checksum. */
static uint64_t pattern_fill(void *p, size_t n, uint64_t seed) {
  unsigned char *b = (unsigned char *) p;
  uint64_t sum = 0, w;
  size_t i;

  for (i = 0; i < n / 8; i++) {
    w = pattern_word(seed, i);
    memcpy(b + i * 8, &w, 8);
    sum = (sum ^ w) * 0x100000001B3ull;
  }
  if (n % 8 != 0) {
    w = pattern_word(seed, i);
    memcpy(b + i * 8, &w, n % 8);
    sum = (sum ^ (w & ((1ull << (n % 8 * 8)) - 1))) * 0x100000001B3ull;
  }
  return sum;
}

/* The offset of the first byte that is not the pattern of seed, or n. */
static size_t pattern_check(const void *p, size_t n, uint64_t seed) {
  const unsigned char *b = (const unsigned char *) p;
  unsigned char want[8];
  uint64_t w;
  size_t i, j, len;

  for (i = 0; i < n; i += 8) {
    w = pattern_word(seed, i / 8);
    memcpy(want, &w, 8);
    len = n - i < 8 ? n - i : 8;
    if (memcmp(b + i, want, len) != 0)
      for (j = 0; j < len; j++)
        if (b[i + j] != want[j])
          return i + j;
  }
  return n;
}

/* ---- Helpers ------------------------------------------------------------------------ */

static pp_pool *one_worker_pool(void) {
  pp_pool_options opts;

  test_options(&opts);
  opts.workers = 1;
  return NEW_POOL(NULL, &opts);
}

/* The test needs more shared memory than the machine has room for (a container's small
 * /dev/shm): that is no failure of procpool's. */
static pp_shm *create_or_skip(size_t size) {
  pp_shm *shm = NULL;
  int err = pp_shm_create(&shm, size);
  char why[128];

  if (err == UV_ENOSPC || err == UV_ENOMEM) {
    snprintf(why, sizeof(why), "no room for a shared segment of %lu bytes: %s",
             (unsigned long) size, pp_strerror(err));
    test_skip(why);
  }
  ASSERT_EQ_INT(err, 0);
  ASSERT_NOT_NULL(shm);
  return shm;
}

/* Fails the test if a segment of the process pid is left behind. Only Linux shows POSIX
 * names as files, in /dev/shm; elsewhere the tests check their own refs instead. */
static void assert_no_names(long pid) {
#ifdef __linux__
  char prefix[64];
  const char *left = "";
  uv_fs_t req;
  uv_dirent_t ent;

  uv_timespec_t born;

  /* A name left by an earlier process that had the same pid (a crashed run's) is older
   * than this process: only names made since it started count. */
  ASSERT_EQ_INT(uv_fs_stat(NULL, &req, "/proc/self", NULL), 0);
  born = req.statbuf.st_ctim;
  uv_fs_req_cleanup(&req);
  snprintf(prefix, sizeof(prefix), "procpool-%ld-", pid);
  ASSERT_TRUE(uv_fs_scandir(NULL, &req, "/dev/shm", 0, NULL) >= 0);
  while (left[0] == '\0' && uv_fs_scandir_next(&req, &ent) == 0) {
    char path[300];
    uv_fs_t st;
    int old = 0;
    if (strncmp(ent.name, prefix, strlen(prefix)) != 0)
      continue;
    snprintf(path, sizeof(path), "/dev/shm/%s", ent.name);
    if (uv_fs_stat(NULL, &st, path, NULL) == 0)
      old = st.statbuf.st_mtim.tv_sec < born.tv_sec ||
            (st.statbuf.st_mtim.tv_sec == born.tv_sec &&
             st.statbuf.st_mtim.tv_nsec < born.tv_nsec);
    uv_fs_req_cleanup(&st);
    if (!old)
      left = ent.name;
  }
  ASSERT_EQ_STR(left, "");
  uv_fs_req_cleanup(&req);
#else
  (void) pid;
#endif
}

/* The segment of ref no longer has a name. */
static void assert_gone(const pp_shm_ref *ref) {
  pp_shm *shm = NULL;

  ASSERT_EQ_INT(pp_shm_open(ref, &shm), UV_ENOENT);
  ASSERT_NULL(shm);
}

/* Runs "shm_fill" on shm (which holds the pattern of seed_in) and checks that the
 * worker's pattern replaced it. */
static void fill_in_worker(pp_pool *pool, pp_shm *shm, uint64_t seed_in,
                           uint64_t seed_out) {
  unsigned char *data = (unsigned char *) pp_shm_data(shm);
  size_t size = pp_shm_size(shm);
  shm_job job;
  pp_result r;
  uint64_t sum, want;

  memset(&job, 0, sizeof(job));
  pp_shm_ref_get(shm, &job.ref);
  job.seed_in = seed_in;
  job.seed_out = seed_out;
  APPLY(pool, "shm_fill", &job, sizeof(job), &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(sum));
  memcpy(&sum, r.data, sizeof(sum));
  pp_result_free(&r);
  ASSERT_EQ_INT(pattern_check(data, size, seed_out), size);
  /* The checksum of what the worker wrote is that of what the parent now reads. */
  want = pattern_fill(data, size, seed_out);
  ASSERT_EQ_U64(sum, want);
}

/* ---- Tests -------------------------------------------------------------------------- */

void test_shm_basic(void) {
  const size_t size = 1000;  /* not a whole page */
  long pid = (long) uv_os_getpid();
  pp_shm *a = NULL, *b = NULL, *c = NULL;
  pp_shm_ref ra, rb, rc;
  unsigned char *pa, *pb;
  char prefix[64];
  size_t i;

  ASSERT_EQ_INT(pp_shm_create(&a, size), 0);
  ASSERT_NOT_NULL(a);
  pa = (unsigned char *) pp_shm_data(a);
  ASSERT_NOT_NULL(pa);
  ASSERT_EQ_INT((uintptr_t) pa % TEST_MAX_ALIGN, 0);
  ASSERT_EQ_INT(pp_shm_size(a), size);
  for (i = 0; i < size; i++)
    ASSERT_EQ_INT(pa[i], 0);
  pattern_fill(pa, size, 1);

  /* The ref: the size, and a name after procpool and this process, NUL-padded. */
  memset(&ra, 0xAA, sizeof(ra));
  pp_shm_ref_get(a, &ra);
  ASSERT_EQ_U64(ra.size, size);
  snprintf(prefix, sizeof(prefix), "procpool-%ld-", pid);
  ASSERT_EQ_INT(strncmp(ra.name, prefix, strlen(prefix)), 0);
  for (i = strlen(ra.name); i < sizeof(ra.name); i++)
    ASSERT_EQ_INT(ra.name[i], 0);

  /* Names never repeat. */
  ASSERT_EQ_INT(pp_shm_create(&c, 1), 0);
  pp_shm_ref_get(c, &rc);
  ASSERT_TRUE(strcmp(ra.name, rc.name) != 0);
  ASSERT_EQ_INT(pp_shm_close(c), 0);
  assert_gone(&rc);

  /* A second mapping of the same memory, in the same process: a write through one shows
   * through the other. */
  ASSERT_EQ_INT(pp_shm_open(&ra, &b), 0);
  ASSERT_NOT_NULL(b);
  pb = (unsigned char *) pp_shm_data(b);
  ASSERT_TRUE(pb != pa);
  ASSERT_EQ_INT(pp_shm_size(b), size);
  ASSERT_EQ_INT(pattern_check(pb, size, 1), size);
  pb[size - 1] ^= 0xFF;
  ASSERT_EQ_INT(pa[size - 1], pb[size - 1]);
  pp_shm_ref_get(b, &rb);
  ASSERT_EQ_MEM(&rb, sizeof(rb), &ra, sizeof(ra));

  ASSERT_EQ_INT(pp_shm_close(b), 0);
  ASSERT_EQ_INT(pp_shm_close(a), 0);
  assert_gone(&ra);
  assert_no_names(pid);

  /* NULL is fine where the header says so. */
  ASSERT_EQ_INT(pp_shm_close(NULL), 0);
  ASSERT_NULL(pp_shm_data(NULL));
  ASSERT_EQ_INT(pp_shm_size(NULL), 0);
  pp_shm_ref_get(NULL, NULL);
}

void test_shm_open_after_close(void) {
  pp_shm *creator = NULL, *other = NULL, *late = (pp_shm *) &late;
  pp_shm_ref ref;
  unsigned char *p;

  ASSERT_EQ_INT(pp_shm_create(&creator, 4096), 0);
  pattern_fill(pp_shm_data(creator), 4096, 7);
  pp_shm_ref_get(creator, &ref);
  ASSERT_EQ_INT(pp_shm_open(&ref, &other), 0);
  /* The creator's close removes the name even while another mapping lives (on Windows,
   * where a name lasts as long as any handle, this is the openers' doing), and the memory
   * stays for that mapping. */
  ASSERT_EQ_INT(pp_shm_close(creator), 0);
  ASSERT_EQ_INT(pp_shm_open(&ref, &late), UV_ENOENT);
  ASSERT_NULL(late);
  p = (unsigned char *) pp_shm_data(other);
  ASSERT_EQ_INT(pattern_check(p, 4096, 7), 4096);
  pattern_fill(p, 4096, 8);
  ASSERT_EQ_INT(pattern_check(p, 4096, 8), 4096);
  /* Only the creator removes the name: the opener's close has nothing to remove. */
  ASSERT_EQ_INT(pp_shm_close(other), 0);
  assert_gone(&ref);
  assert_no_names((long) uv_os_getpid());
}

/* A ref with name (at most 55 bytes, or 56 without NUL) and size. */
static void make_ref(pp_shm_ref *ref, const char *name, size_t n, uint64_t size) {
  memset(ref, 0, sizeof(*ref));
  memcpy(ref->name, name, n);
  ref->size = size;
}

void test_shm_invalid(void) {
  static const char *const bad_names[] = {
    "",
    "procpool-",
    "procpool",
    "/procpool-1-1-abc",
    "procpool-1/../x",
    "procpool-1-1-ABC",
    "procpool-1-1-a.b",
    "procpool-1-1-a b",
    "Local\\procpool-1",
    "Global\\procpool-1",
    "other-1-1-abc",
  };
  pp_shm *shm = (pp_shm *) &shm, *real = NULL;
  pp_shm_ref ref, good;
  char full[sizeof(ref.name)];
  size_t i;

  ASSERT_EQ_INT(pp_shm_create(NULL, 1), PP_EINVAL);
  ASSERT_EQ_INT(pp_shm_create(&shm, 0), PP_EINVAL);
  ASSERT_NULL(shm);
  /* Sizes no OS can describe: over off_t, over a section's LARGE_INTEGER. */
  shm = (pp_shm *) &shm;
  ASSERT_EQ_INT(pp_shm_create(&shm, SIZE_MAX), PP_EINVAL);
  ASSERT_NULL(shm);
  if (SIZE_MAX > (uint64_t) INT64_MAX) {
    ASSERT_EQ_INT(pp_shm_create(&shm, (size_t) ((uint64_t) INT64_MAX + 1)), PP_EINVAL);
    ASSERT_NULL(shm);
  }

  ASSERT_EQ_INT(pp_shm_create(&real, 4096), 0);
  pp_shm_ref_get(real, &good);
  ASSERT_EQ_INT(pp_shm_open(NULL, &shm), PP_EINVAL);
  ASSERT_EQ_INT(pp_shm_open(&good, NULL), PP_EINVAL);

  /* Refs that no pp_shm_ref_get of a segment made. */
  shm = (pp_shm *) &shm;
  pp_shm_ref_get(NULL, &ref);
  ASSERT_EQ_INT(pp_shm_open(&ref, &shm), PP_EINVAL);
  ASSERT_NULL(shm);
  for (i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
    make_ref(&ref, bad_names[i], strlen(bad_names[i]), 4096);
    shm = (pp_shm *) &shm;
    ASSERT_EQ_INT_MSG(pp_shm_open(&ref, &shm), PP_EINVAL, bad_names[i]);
    ASSERT_NULL(shm);
  }
  /* No NUL in the whole name. */
  memset(full, 'a', sizeof(full));
  memcpy(full, "procpool-", 9);
  make_ref(&ref, full, sizeof(full), 4096);
  ASSERT_EQ_INT(pp_shm_open(&ref, &shm), PP_EINVAL);
  /* A real name with size 0, or with more than the segment holds. */
  ref = good;
  ref.size = 0;
  ASSERT_EQ_INT(pp_shm_open(&ref, &shm), PP_EINVAL);
  ref.size = (uint64_t) 1 << 20;
  ASSERT_EQ_INT(pp_shm_open(&ref, &shm), PP_EINVAL);
  ASSERT_NULL(shm);
  /* Well formed, but no such segment. */
  ref = good;
  ref.name[strlen(ref.name) - 1] = ref.name[strlen(ref.name) - 1] == 'a' ? 'b' : 'a';
  ASSERT_EQ_INT(pp_shm_open(&ref, &shm), UV_ENOENT);

  /* The real one still opens. */
  ASSERT_EQ_INT(pp_shm_open(&good, &shm), 0);
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  ASSERT_EQ_INT(pp_shm_close(real), 0);
  assert_gone(&good);
  assert_no_names((long) uv_os_getpid());
}

/* 64 MiB filled by the parent, checked and overwritten by a worker, seen by the parent;
 * twice, so that a worker maps a segment a second time. */
void test_shm_roundtrip(void) {
  pp_pool *pool = one_worker_pool();
  pp_shm *shm = create_or_skip(BIG_SIZE + 3);
  pp_shm_ref ref;

  pattern_fill(pp_shm_data(shm), pp_shm_size(shm), 11);
  fill_in_worker(pool, shm, 11, 12);
  fill_in_worker(pool, shm, 12, 13);
  pp_shm_ref_get(shm, &ref);
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  assert_gone(&ref);
  assert_no_names((long) uv_os_getpid());
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* A worker creates a segment and returns its ref; the parent maps it, changes it, and the
 * worker sees the change before it closes its segment. */
void test_shm_from_worker(void) {
  pp_pool *pool = one_worker_pool();
  uint64_t worker = test_worker_pid(pool);
  shm_make_arg make;
  pp_shm_ref ref;
  pp_shm *shm = NULL;
  unsigned char *p;
  uint64_t seed;
  pp_result r;
  char prefix[64];

  make.size = BIG_SIZE;
  make.seed = 21;
  APPLY(pool, "shm_make", &make, sizeof(make), &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(ref));
  memcpy(&ref, r.data, sizeof(ref));
  pp_result_free(&r);
  snprintf(prefix, sizeof(prefix), "procpool-%llu-", (unsigned long long) worker);
  ASSERT_EQ_INT(strncmp(ref.name, prefix, strlen(prefix)), 0);
  ASSERT_EQ_U64(ref.size, BIG_SIZE);

  ASSERT_EQ_INT(pp_shm_open(&ref, &shm), 0);
  p = (unsigned char *) pp_shm_data(shm);
  ASSERT_EQ_INT(pp_shm_size(shm), BIG_SIZE);
  ASSERT_EQ_INT(pattern_check(p, BIG_SIZE, 21), BIG_SIZE);
  pattern_fill(p, BIG_SIZE, 22);

  /* "shm_release" checks the parent's pattern and closes the worker's segment: its
   * creator's close, which removes the name while the parent still maps it. */
  seed = 22;
  APPLY(pool, "shm_release", &seed, sizeof(seed), &r);
  ASSERT_STATUS(r, 0);
  pp_result_free(&r);
  assert_gone(&ref);
  ASSERT_EQ_INT(pattern_check(p, BIG_SIZE, 22), BIG_SIZE);
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  assert_no_names((long) worker);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* A worker maps the parent's segment and crashes: the parent's memory and name are
 * intact, and a new worker maps the segment again. */
void test_shm_worker_crash(void) {
  pp_pool *pool = one_worker_pool();
  pp_shm *shm = create_or_skip((size_t) 1 << 20);
  unsigned char *p = (unsigned char *) pp_shm_data(shm);
  shm_job job;
  pp_result r;

  pattern_fill(p, pp_shm_size(shm), 31);
  memset(&job, 0, sizeof(job));
  pp_shm_ref_get(shm, &job.ref);
  job.seed_in = 31;
  APPLY(pool, "shm_crash", &job, sizeof(job), &r);
  ASSERT_STATUS(r, PP_EWORKER);
  pp_result_free(&r);
  ASSERT_EQ_INT(pattern_check(p, pp_shm_size(shm), 31), pp_shm_size(shm));
  fill_in_worker(pool, shm, 31, 32);
  ASSERT_EQ_INT(pp_shm_close(shm), 0);
  assert_gone(&job.ref);
  assert_no_names((long) uv_os_getpid());
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Made by the parent before its pool starts: under fork, its workers inherit it. */
static pp_shm *before_pool;

/* A forked worker inherits the parent's mapping and struct; its close of them unmaps its
 * copy and leaves the parent's name alone. Under the other methods a worker has neither,
 * and "shm_close_inherited" says so. */
void test_shm_fork_inherited(void) {
  pp_shm *other = NULL;
  pp_shm_ref ref;
  pp_pool *pool;
  pp_result r;
  uint32_t closed;

  ASSERT_EQ_INT(pp_shm_create(&before_pool, 4096), 0);
  pattern_fill(pp_shm_data(before_pool), 4096, 41);
  pp_shm_ref_get(before_pool, &ref);
  pool = one_worker_pool();
  APPLY(pool, "shm_close_inherited", NULL, 0, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_INT(r.len, sizeof(closed));
  memcpy(&closed, r.data, sizeof(closed));
  pp_result_free(&r);
  ASSERT_EQ_INT(closed, pp_pool_start_method(pool) == PP_START_FORK);
  ASSERT_EQ_INT(pp_shm_open(&ref, &other), 0);
  ASSERT_EQ_INT(pattern_check(pp_shm_data(other), 4096, 41), 4096);
  ASSERT_EQ_INT(pp_shm_close(other), 0);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  ASSERT_EQ_INT(pp_shm_close(before_pool), 0);
  before_pool = NULL;
  assert_gone(&ref);
  assert_no_names((long) uv_os_getpid());
}

/* ---- Tasks (worker side) ------------------------------------------------------------ */

static int open_job(pp_call *call, const void *arg, size_t len, shm_job *job,
                    pp_shm **shm) {
  int err;

  if (len != sizeof(*job))
    return pp_fail(call, "expected a shm_job of %lu bytes, got %lu",
                   (unsigned long) sizeof(*job), (unsigned long) len);
  memcpy(job, arg, sizeof(*job));
  err = pp_shm_open(&job->ref, shm);
  if (err != 0)
    return pp_fail(call, "pp_shm_open(%s) failed: %s (%s)", job->ref.name,
                   pp_strerror(err), pp_errname(err));
  return 0;
}

/* Checks that the segment holds the pattern of seed_in, writes that of seed_out, and
 * replies the checksum of what it wrote. */
int test_task_shm_fill(pp_call *call, const void *arg, size_t len) {
  shm_job job;
  pp_shm *shm = NULL;
  size_t size, bad;
  uint64_t sum;
  int err;

  if ((err = open_job(call, arg, len, &job, &shm)) != 0)
    return err;
  size = pp_shm_size(shm);
  bad = pattern_check(pp_shm_data(shm), size, job.seed_in);
  if (bad != size) {
    pp_shm_close(shm);
    return pp_fail(call, "shm_fill: byte %lu of %lu is not the parent's pattern",
                   (unsigned long) bad, (unsigned long) size);
  }
  sum = pattern_fill(pp_shm_data(shm), size, job.seed_out);
  err = pp_shm_close(shm);
  if (err != 0)
    return pp_fail(call, "shm_fill: pp_shm_close failed: %s", pp_errname(err));
  return pp_reply(call, &sum, sizeof(sum));
}

/* Maps the segment, reads all of it, and crashes. */
int test_task_shm_crash(pp_call *call, const void *arg, size_t len) {
  shm_job job;
  pp_shm *shm = NULL;
  size_t size;
  int err;

  if ((err = open_job(call, arg, len, &job, &shm)) != 0)
    return err;
  size = pp_shm_size(shm);
  if (pattern_check(pp_shm_data(shm), size, job.seed_in) != size) {
    pp_shm_close(shm);
    return pp_fail(call, "shm_crash: the segment does not hold the parent's pattern");
  }
#ifdef _WIN32
  SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
#else
  {
    struct rlimit rl = { 0, 0 };
    setrlimit(RLIMIT_CORE, &rl);
  }
#endif
  abort();
}

/* The segment "shm_make" made, until "shm_release" closes it. */
static pp_shm *made;

/* Creates a segment of the given size with the pattern of seed, keeps it open, and
 * replies its ref. */
int test_task_shm_make(pp_call *call, const void *arg, size_t len) {
  shm_make_arg a;
  pp_shm_ref ref;
  int err;

  if (len != sizeof(a))
    return pp_fail(call, "shm_make: expected %lu bytes", (unsigned long) sizeof(a));
  if (made != NULL)
    return pp_fail(call, "shm_make: this worker holds a segment already");
  memcpy(&a, arg, sizeof(a));
  err = pp_shm_create(&made, (size_t) a.size);
  if (err != 0)
    return pp_fail(call, "shm_make: pp_shm_create failed: %s (%s)", pp_strerror(err),
                   pp_errname(err));
  pattern_fill(pp_shm_data(made), pp_shm_size(made), a.seed);
  pp_shm_ref_get(made, &ref);
  return pp_reply(call, &ref, sizeof(ref));
}

/* Checks that the segment of "shm_make" holds the pattern of the uint64 argument, and
 * closes it. */
int test_task_shm_release(pp_call *call, const void *arg, size_t len) {
  uint64_t seed;
  size_t size, bad;
  int err;

  if (len != sizeof(seed) || made == NULL)
    return pp_fail(call, "shm_release: expected a seed, and a segment made by shm_make");
  memcpy(&seed, arg, sizeof(seed));
  size = pp_shm_size(made);
  bad = pattern_check(pp_shm_data(made), size, seed);
  err = pp_shm_close(made);
  made = NULL;
  if (bad != size)
    return pp_fail(call, "shm_release: byte %lu of %lu is not the parent's pattern",
                   (unsigned long) bad, (unsigned long) size);
  if (err != 0)
    return pp_fail(call, "shm_release: pp_shm_close failed: %s", pp_errname(err));
  return 0;
}

/* Closes the segment this worker inherited from the parent, if any, after checking that
 * the mapping came with it; replies a uint32: 1 if it closed one, else 0. */
int test_task_shm_close_inherited(pp_call *call, const void *arg, size_t len) {
  uint32_t closed = before_pool != NULL;
  int err;

  (void) arg;
  (void) len;
  if (before_pool != NULL) {
    if (pattern_check(pp_shm_data(before_pool), 4096, 41) != 4096)
      return pp_fail(call, "shm_close_inherited: the inherited mapping is not the "
                           "parent's");
    err = pp_shm_close(before_pool);
    before_pool = NULL;
    if (err != 0)
      return pp_fail(call, "shm_close_inherited: pp_shm_close failed: %s",
                     pp_errname(err));
  }
  return pp_reply(call, &closed, sizeof(closed));
}
