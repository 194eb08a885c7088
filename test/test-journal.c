/* The results journal (src/shared/journal.c): a worker sends a batch's results in runs, and a
 * worker that dies in the middle of a batch leaves the results it has not sent in its
 * journal. Each item that finished runs exactly once, whether its result went over the
 * channel or only into the journal; the one that was running fails with PP_EWORKER; no
 * segment's name outlives its use. And the pool's reader of a journal takes any bytes
 * without harm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First: uv.h brings winsock2.h, which must come before windows.h. */
#include "test.h"
#include "../src/shared/journal.h"
#include "../src/shared/protocol.h"

#ifdef _WIN32
#  include <windows.h>
#else
#  include <signal.h>
#  include <sys/resource.h>
#  include <unistd.h>
#endif

/* What an item of "journal_run" does besides counting its run. */
enum {
  JR_OK = 0,      /* replies its index (4 bytes) */
  JR_FAIL,        /* fails with a message naming its index */
  JR_SIZED,       /* replies `size` bytes of its pattern */
  JR_ABORT,       /* crashes its worker */
  JR_KILL         /* kills its own worker at once: SIGKILL, or TerminateProcess */
};

typedef struct jrun_arg {
  pp_shm_ref ref;          /* the run counters, one uint32_t per item */
  uint32_t index;
  uint32_t mode;
  uint32_t size;
} jrun_arg;

static unsigned char jr_byte(uint32_t index, size_t j) {
  return (unsigned char) (index * 31u + j * 7u + (j >> 8));
}

/* Counts the item's run in the shared counters (mapped once per worker), then does what
 * its mode says. */
int test_task_journal_run(pp_call *call, const void *arg, size_t len) {
  static pp_shm *shm;
  static char name[sizeof(((pp_shm_ref *) 0)->name)];
  volatile uint32_t *counts;
  unsigned char *out;
  jrun_arg a;
  size_t j;
  int err;

  if (len != sizeof(a))
    return pp_fail(call, "journal_run: expected %u bytes, got %lu", (unsigned) sizeof(a),
                   (unsigned long) len);
  memcpy(&a, arg, sizeof(a));
  if (shm == NULL || strcmp(name, a.ref.name) != 0) {
    pp_shm_close(shm);
    shm = NULL;
    if ((err = pp_shm_open(&a.ref, &shm)) != 0)
      return pp_fail(call, "journal_run: pp_shm_open: %s", pp_strerror(err));
    memcpy(name, a.ref.name, sizeof(name));
  }
  if (a.index >= pp_shm_size(shm) / sizeof(uint32_t))
    return pp_fail(call, "journal_run: item %u is past the counters", (unsigned) a.index);
  counts = (volatile uint32_t *) pp_shm_data(shm);
  counts[a.index]++;
  switch (a.mode) {
    case JR_FAIL:
      return pp_fail(call, "item %u fails on purpose", (unsigned) a.index);
    case JR_SIZED:
      out = malloc(a.size ? a.size : 1);
      if (out == NULL)
        return pp_fail(call, "journal_run: no memory");
      for (j = 0; j < a.size; j++)
        out[j] = jr_byte(a.index, j);
      err = pp_reply(call, out, a.size);
      free(out);
      return err;
    case JR_ABORT:
#ifdef _WIN32
      SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
#else
      {
        struct rlimit rl = { 0, 0 };
        setrlimit(RLIMIT_CORE, &rl);
        signal(SIGABRT, SIG_DFL);
      }
#endif
      abort();
    case JR_KILL:
      test_kill_self();
    default:
      return pp_reply(call, &a.index, sizeof(a.index));
  }
}

/* Fails the test if a segment made by this process is still named. Only Linux shows
 * POSIX names as files, in /dev/shm. */
static void assert_no_names(void) {
#ifdef __linux__
  char prefix[64];
  const char *left = "";
  uv_fs_t req;
  uv_dirent_t ent;

  snprintf(prefix, sizeof(prefix), "procpool-%ld-", (long) uv_os_getpid());
  ASSERT_TRUE(uv_fs_scandir(NULL, &req, "/dev/shm", 0, NULL) >= 0);
  while (left[0] == '\0' && uv_fs_scandir_next(&req, &ent) == 0)
    if (strncmp(ent.name, prefix, strlen(prefix)) == 0)
      left = ent.name;
  ASSERT_EQ_STR(left, "");
  uv_fs_req_cleanup(&req);
#endif
}

/* A map of n "journal_run" items with the modes and sizes mode_of gives, and its
 * checks. */
typedef struct jmap {
  size_t n;
  jrun_arg *args;
  pp_input *in;
  pp_result *out;
  pp_shm *counters;
} jmap;

static void jmap_init(jmap *m, size_t n) {
  size_t i;

  m->n = n;
  m->args = calloc(n, sizeof(*m->args));
  m->in = calloc(n, sizeof(*m->in));
  m->out = calloc(n, sizeof(*m->out));
  ASSERT_NOT_NULL(m->args);
  ASSERT_NOT_NULL(m->in);
  ASSERT_NOT_NULL(m->out);
  ASSERT_EQ_INT(pp_shm_create(&m->counters, n * sizeof(uint32_t)), 0);
  for (i = 0; i < n; i++) {
    pp_shm_ref_get(m->counters, &m->args[i].ref);
    m->args[i].index = (uint32_t) i;
    m->in[i].data = &m->args[i];
    m->in[i].len = sizeof(m->args[i]);
  }
}

/* Every item ran exactly once and has the result its mode asks for; the crashing one
 * failed with PP_EWORKER. */
static void jmap_check(jmap *m) {
  const uint32_t *counts = (const uint32_t *) pp_shm_data(m->counters);
  char want[64];
  size_t i, j;

  for (i = 0; i < m->n; i++) {
    const jrun_arg *a = &m->args[i];
    const pp_result *r = &m->out[i];
    if (counts[i] != 1)
      fprintf(stderr, "item %lu ran %u times\n", (unsigned long) i, (unsigned) counts[i]);
    ASSERT_EQ_INT(counts[i], 1);
    switch (a->mode) {
      case JR_OK:
        ASSERT_STATUS(*r, 0);
        ASSERT_EQ_MEM(r->data, r->len, &a->index, sizeof(a->index));
        break;
      case JR_FAIL:
        ASSERT_STATUS(*r, PP_ETASK);
        snprintf(want, sizeof(want), "item %u fails on purpose", (unsigned) a->index);
        ASSERT_CONTAINS(r->message, want);
        break;
      case JR_SIZED:
        ASSERT_STATUS(*r, 0);
        ASSERT_EQ_INT(r->len, a->size);
        for (j = 0; j < a->size; j++)
          if (((const unsigned char *) r->data)[j] != jr_byte(a->index, j))
            break;
        ASSERT_EQ_INT(j, a->size);
        break;
      default:
        ASSERT_STATUS(*r, PP_EWORKER);
        break;
    }
  }
}

static void jmap_free(jmap *m) {
  size_t i;

  for (i = 0; i < m->n; i++)
    pp_result_free(&m->out[i]);
  ASSERT_EQ_INT(pp_shm_close(m->counters), 0);
  free(m->args);
  free(m->in);
  free(m->out);
}

/* n items on one worker (batches of n / 8), one of which, in the middle of a batch, ends
 * its worker by `how`; a few fail as tasks. The items of its batch before it were only in
 * the journal when it died. */
static void crash_mid_batch(uint32_t how) {
  const size_t n = 2000, crash = 1125;  /* the batch [1000, 1250) */
  pp_pool_options opts;
  pp_pool *pool;
  jmap m;
  size_t i;

  jmap_init(&m, n);
  for (i = 0; i < n; i++)
    if (i == crash)
      m.args[i].mode = how;
    else if (i % 97 == 5)
      m.args[i].mode = JR_FAIL;
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_NE_INT(pp_map(pool, "journal_run", n, m.in, m.out), 0);
  jmap_check(&m);
  ASSERT_CONTAINS(m.out[crash].message, "map item 1125");
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  jmap_free(&m);
  assert_no_names();
}

void test_journal_crash_mid_batch(void) { crash_mid_batch(JR_ABORT); }

void test_journal_sigkill_mid_batch(void) { crash_mid_batch(JR_KILL); }

/* Results of every size in a batch: small ones gather in the journal, 40 KiB ones fill it
 * (a run goes out in the middle of the batch), 200 KiB ones do not fit it at all (each
 * goes out on its own, after the run before it); then a crash. */
void test_journal_result_sizes(void) {
  const size_t n = 400, crash = 137;  /* the batch [100, 150) */
  pp_pool_options opts;
  pp_pool *pool;
  jmap m;
  size_t i;

  jmap_init(&m, n);
  for (i = 0; i < n; i++) {
    if (i == crash) {
      m.args[i].mode = JR_ABORT;
    } else if (i % 10 == 3) {
      m.args[i].mode = JR_SIZED;
      m.args[i].size = 200 * 1024;
    } else if (i % 10 == 6 || i % 10 == 7) {
      m.args[i].mode = JR_SIZED;
      m.args[i].size = 40 * 1024 + (uint32_t) i;
    } else if (i % 10 == 9) {
      m.args[i].mode = JR_SIZED;
      m.args[i].size = 0;
    }
  }
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_map(pool, "journal_run", n, m.in, m.out), PP_EWORKER);
  jmap_check(&m);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  jmap_free(&m);
  assert_no_names();
}

/* A small max_message_bytes bounds a run's results below what the journal holds: 32 of
 * these 3000-byte results fit in the journal, but a frame of them would be over the
 * pool's limit for a BATCH_RESULT, a protocol error. */
void test_journal_run_limit(void) {
  const size_t n = 800, crash = 450;  /* the batch [400, 500) */
  pp_pool_options opts;
  pp_pool *pool;
  jmap m;
  size_t i;

  jmap_init(&m, n);
  for (i = 0; i < n; i++) {
    m.args[i].mode = i == crash ? JR_ABORT : JR_SIZED;
    m.args[i].size = 3000;
  }
  test_options(&opts);
  opts.workers = 1;
  opts.max_message_bytes = 32768;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_map(pool, "journal_run", n, m.in, m.out), PP_EWORKER);
  jmap_check(&m);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  jmap_free(&m);
  assert_no_names();
}

/* The journal's name goes once the worker has it mapped, while the pool lives: a worker
 * that served its first batch has mapped it, and its second batch finds that out. */
void test_journal_name_removed(void) {
  const size_t n = 2000;
  pp_pool_options opts;
  pp_pool *pool;
  pp_input *in = calloc(n, sizeof(*in));
  pp_result *out = calloc(n, sizeof(*out));
  uint32_t *x = calloc(n, sizeof(*x));
  size_t i;

  ASSERT_NOT_NULL(in);
  ASSERT_NOT_NULL(out);
  ASSERT_NOT_NULL(x);
  for (i = 0; i < n; i++) {
    x[i] = (uint32_t) i;
    in[i].data = &x[i];
    in[i].len = sizeof(x[i]);
  }
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  ASSERT_EQ_INT(pp_map(pool, "echo", n, in, out), 0);
  for (i = 0; i < n; i++) {
    ASSERT_EQ_MEM(out[i].data, out[i].len, &x[i], sizeof(x[i]));
    pp_result_free(&out[i]);
  }
  assert_no_names();
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(in);
  free(out);
  free(x);
}

/* ---- The reader, on journals a worker could leave ------------------------------------ */

#define J_SIZE 4096
#define J_ID 0x1122334455667788ull

/* A journal of batch J_ID whose results [first, first + count) are "r<i>" strings (kind
 * 0), except item 2's, a message (kind 1). */
static void journal_make(uint8_t *j, uint32_t first, uint32_t count) {
  uint32_t tcap, i;
  size_t off, used = 0;

  memset(j, 0, J_SIZE);
  ASSERT_EQ_INT(pp__journal_layout(J_SIZE, &tcap, &off), 0);
  ASSERT_TRUE(count <= tcap);
  for (i = 0; i < count; i++) {
    char s[16];
    int len = snprintf(s, sizeof(s), "r%u", (unsigned) (first + i));
    pp__put_u32(j + PP__JOURNAL_HDR + i * 8, first + i == 2 ? PP__R_FAIL : PP__R_OK);
    pp__put_u32(j + PP__JOURNAL_HDR + i * 8 + 4, (uint32_t) len);
    memcpy(j + off + used, s, (size_t) len);
    used += (size_t) len;
  }
  memcpy(j + PP__JOURNAL_COUNT, &count, 4);
  pp__put_u32(j + PP__JOURNAL_FIRST, first);
  pp__put_u64(j + PP__JOURNAL_ID, J_ID);
}

/* pp__journal_read's verdict: -1 inconsistent, else the items it gives (checked). */
static int journal_take(const uint8_t *j, size_t size, uint32_t from, uint32_t nitems) {
  const char *why = NULL;
  uint8_t *p = NULL;
  pp__batch b;
  const uint8_t *data;
  uint32_t i;
  int err = pp__journal_read(j, size, J_ID, from, nitems, &p, &b, &why);

  if (err != 0) {
    ASSERT_EQ_INT(err, PP_EPROTO);
    ASSERT_NULL(p);
    ASSERT_NOT_NULL(why);
    return -1;
  }
  if (p == NULL)
    return 0;
  ASSERT_EQ_INT(b.first, from);
  data = b.data;
  for (i = 0; i < b.count; i++) {
    char s[16];
    int len = snprintf(s, sizeof(s), "r%u", (unsigned) (from + i));
    ASSERT_EQ_INT(pp__get_u32(b.table + i * 8), from + i == 2 ? PP__R_FAIL : PP__R_OK);
    ASSERT_EQ_MEM(data, pp__get_u32(b.table + i * 8 + 4), s, (size_t) len);
    data += len;
  }
  free(p);
  return (int) b.count;
}

void test_journal_read_untrusted(void) {
  uint8_t *j = malloc(J_SIZE);
  uint32_t tcap, v;
  size_t off;
  uint64_t jsize, token;
  const char *why;
  uint8_t frame[80];

  ASSERT_NOT_NULL(j);
  ASSERT_EQ_INT(pp__journal_layout(J_SIZE, &tcap, &off), 0);
  /* Consistent: whatever lies at or past `from`, and nothing twice. */
  journal_make(j, 0, 0);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 0, 10), 0);
  journal_make(j, 0, 5);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 0, 10), 5);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 3, 10), 2);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 5, 10), 0);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 9, 10), 0);
  journal_make(j, 4, 6);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 4, 10), 6);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 7, 10), 3);
  /* A gap: results 2 and 3 are lost, so 4 on cannot be placed. */
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 2, 10), -1);
  /* More items than the batch has. */
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 4, 9), -1);
  /* Another batch's journal. */
  pp__put_u64(j + PP__JOURNAL_ID, J_ID + 1);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 4, 10), -1);
  /* A count past the table; more items than the batch has, near the top of the range. */
  journal_make(j, 0, 5);
  v = tcap + 1;
  memcpy(j + PP__JOURNAL_COUNT, &v, 4);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 0, 0xFFFFFFFFu), -1);
  journal_make(j, 0, 5);
  pp__put_u32(j + PP__JOURNAL_FIRST, 0xFFFFFFF0u);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 0xFFFFFFF0u, 0xFFFFFFF2u), -1);
  /* Lengths that overrun the journal, alone or added up. */
  journal_make(j, 0, 5);
  pp__put_u32(j + PP__JOURNAL_HDR + 4, 0xFFFFFFFFu);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 0, 10), -1);
  journal_make(j, 0, 5);
  pp__put_u32(j + PP__JOURNAL_HDR + 4, (uint32_t) (J_SIZE - off - 3));
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 1, 10), -1);
  /* An unknown kind. */
  journal_make(j, 0, 5);
  pp__put_u32(j + PP__JOURNAL_HDR + 8 * 3, 7);
  ASSERT_EQ_INT(journal_take(j, J_SIZE, 0, 10), -1);
  /* A size no journal has. */
  journal_make(j, 0, 5);
  ASSERT_EQ_INT(journal_take(j, PP__JOURNAL_HDR, 0, 10), -1);

  /* The JOURNAL frame's payload: a size and a token, 16 bytes, no more and no less. */
  pp__put_u64(frame, 131072);
  pp__put_u64(frame + 8, 42);
  ASSERT_EQ_INT(pp__journal_decode(frame, 16, &jsize, &token, &why), 0);
  ASSERT_EQ_U64(jsize, 131072);
  ASSERT_EQ_U64(token, 42);
  ASSERT_EQ_INT(pp__journal_decode(frame, 4, &jsize, &token, &why), PP_EPROTO);
  ASSERT_EQ_INT(pp__journal_decode(frame, 20, &jsize, &token, &why), PP_EPROTO);
  free(j);
}
