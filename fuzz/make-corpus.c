/* Writes the fuzz targets' seed inputs, valid ones made with the library's own encoders
 * (and, where it has none, as doc/protocol.md lays frames out), so that the seeds follow
 * the protocol when it changes. Usage: make-corpus DIR: writes DIR/frames, DIR/worker and
 * DIR/fs (made if missing). Run by the build when fuzzing is on; its output for this
 * version is also checked in under fuzz/corpus/, beside the regression inputs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <sys/types.h>

#include "../src/worker/journal.h"
#include "../src/shared/protocol.h"
#include "../src/unix/fs.h"
#include "procpool.h"

typedef struct buf {
  uint8_t p[1 << 18];
  size_t n;
} buf;

static buf b;

static void put(const void *p, size_t n) {
  if (n == 0)
    return;
  if (n > sizeof(b.p) - b.n)
    abort();
  memcpy(b.p + b.n, p, n);
  b.n += n;
}

static void put_u8(uint8_t v) { put(&v, 1); }

static void frame_f(uint8_t type, uint8_t flags, uint16_t aux, uint64_t id,
                    const void *payload, size_t len) {
  uint8_t h[PP__HDR_SIZE];

  pp__hdr_encode(h, type, aux, id, (uint32_t) len);
  pp__hdr_set_flags(h, flags);
  put(h, sizeof(h));
  put(payload, len);
}

static void frame(uint8_t type, uint16_t aux, uint64_t id, const void *payload,
                  size_t len) {
  frame_f(type, 0, aux, id, payload, len);
}

static const char *dir;

static void save(const char *target, const char *name) {
  char path[1024];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
  f = fopen(path, "wb");
  if (f == NULL || fwrite(b.p, 1, b.n, f) != b.n || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
  b.n = 0;
}

/* ---- frames: [read size][pool's limit] then a worker's byte stream ---------------- */

static void hello(void) {
  static const char *names[] = { "square", "fail", "crash", "echo" };
  uint8_t p[256];
  size_t n = pp__hello_size(names, 4);

  pp__hello_encode(p, 4242, names, 4);
  frame(PP__F_HELLO, PP__HELLO_OK, 0, p, n);
}

/* A BATCH_RESULT of count items from first: item i is a result of i bytes, every third
 * a failure with a message. */
static void batch_result(uint64_t id, uint32_t first, uint32_t count) {
  uint8_t p[8 + 8 * 64 + 64 * 64];
  size_t n = 8 + (size_t) count * 8;
  uint32_t i;

  pp__put_u32(p, first);
  pp__put_u32(p + 4, count);
  for (i = 0; i < count; i++) {
    pp__put_u32(p + 8 + i * 8, i % 3 == 2 ? PP__R_FAIL : PP__R_OK);
    pp__put_u32(p + 8 + i * 8 + 4, i);
    memset(p + n, 'a' + (int) i, i);
    n += i;
  }
  frame(PP__F_BATCH_RESULT, 0, id, p, n);
}

/* The fixed form of a BATCH_RESULT: count successes of size bytes each, from first. */
static void batch_result_fixed(uint64_t id, uint32_t first, uint32_t count,
                               uint32_t size) {
  uint8_t p[PP__BATCH_FIXED_HDR + 64 * 16];
  size_t n = PP__BATCH_FIXED_HDR + (size_t) count * size;

  pp__put_u32(p, first);
  pp__put_u32(p + 4, count | PP__BATCH_FIXED);
  pp__put_u32(p + 8, size);
  pp__put_u32(p + 12, 0);
  memset(p + PP__BATCH_FIXED_HDR, 'r', n - PP__BATCH_FIXED_HDR);
  frame(PP__F_BATCH_RESULT, 0, id, p, n);
}

static void frames(void) {
  static uint8_t big[40000];
  uint8_t sq[8] = { 1, 0, 0, 0, 0, 0, 0, 0 };
  const char *msg = "task 'fail' failed: as asked";
  const char *bad = "pp_main was given a malformed task table: task 1's name is empty";
  unsigned chunk;

  /* A worker's whole life, read in pieces of several sizes. */
  for (chunk = 0; chunk < 3; chunk++) {
    char name[32];
    put_u8((uint8_t) (chunk == 0 ? 0 : chunk == 1 ? 3 : 255));
    put_u8(1);
    hello();
    frame(PP__F_READY, 0, 0, NULL, 0);
    frame(PP__F_RESULT, PP__R_OK, 1, sq, sizeof(sq));
    frame(PP__F_RESULT, PP__R_FAIL, 2, msg, strlen(msg));
    frame(PP__F_RESULT, PP__R_NOTASK, 3, "no such task", 12);
    frame(PP__F_RESULT, PP__R_TOOBIG, 4, "too big", 7);
    batch_result(5, 0, 4);
    batch_result(5, 4, 3);
    batch_result_fixed(13, 0, 5, 8);
    batch_result_fixed(13, 5, 2, 0);
    snprintf(name, sizeof(name), "life-%u", chunk);
    save("frames", name);
  }
  /* A worker that cannot serve; one whose initializer failed. */
  put_u8(0);
  put_u8(1);
  frame(PP__F_HELLO, PP__HELLO_FAILED, 0, bad, strlen(bad));
  save("frames", "hello-failed");
  put_u8(9);
  put_u8(1);
  hello();
  frame(PP__F_READY, 1, 0, "init failed", 11);
  save("frames", "init-failed");
  /* A result larger than the reader's buffer, read into a block of its own. */
  put_u8(200);
  put_u8(3);
  hello();
  frame(PP__F_READY, 0, 0, NULL, 0);
  memset(big, 'x', sizeof(big));
  frame(PP__F_RESULT, PP__R_OK, 1, big, sizeof(big));
  frame(PP__F_RESULT, PP__R_OK, 2, sq, sizeof(sq));
  save("frames", "big-result");
  /* Results in shared memory: in the task's argument, and in a result segment. */
  {
    uint8_t ref[PP__SHM_RESULT_SIZE];
    pp__shm_result sr;
    put_u8(0);
    put_u8(1);
    hello();
    frame(PP__F_READY, 0, 0, NULL, 0);
    memset(&sr, 0, sizeof(sr));
    sr.size = 1 << 20;
    sr.len = 4096;
    pp__shm_result_encode(ref, &sr);
    frame_f(PP__F_RESULT, PP__FL_SHM, PP__R_OK, 1, ref, sizeof(ref));
    sr.where = 2;
    sr.off = PP__SHM_RESULT_HDR;
    pp__shm_result_encode(ref, &sr);
    frame_f(PP__F_RESULT, PP__FL_SHM, PP__R_OK, 2, ref, sizeof(ref));
    frame(PP__F_SHM_FAILED, 0, 3, "could not map", 13);
    save("frames", "shm-results");
  }
  /* The frames the pool sends, read as a worker's: every decoder sees its own kind. */
  {
    uint8_t init[PP__INIT_FIXED + 5 + 3];
    pp__put_u16(init, PP__PROTO_VERSION);
    pp__put_u16(init + 2, 0);
    pp__put_u64(init + 4, 1 << 20);
    init[12] = 5;
    memcpy(init + PP__INIT_FIXED, "setup", 5);
    memcpy(init + PP__INIT_FIXED + 5, "arg", 3);
    put_u8(1);
    put_u8(3);
    frame(PP__F_INIT, 0, 0, init, sizeof(init));
    {
      uint8_t j[4 + 18];
      pp__put_u32(j, 131072);
      memcpy(j + 4, "procpool-123-j-abc", 18);
      frame(PP__F_JOURNAL, 0, 0, j, sizeof(j));
    }
    {
      uint8_t bt[4 + 3 * 4 + 6];
      pp__put_u32(bt, 3);
      pp__put_u32(bt + 4, 1);
      pp__put_u32(bt + 8, 2);
      pp__put_u32(bt + 12, 3);
      memcpy(bt + 16, "abbccc", 6);
      frame(PP__F_BATCH, 0, 7, bt, sizeof(bt));
    }
    {
      uint8_t bt[PP__BATCH_FIXED_HDR + 3 * 8];
      memset(bt, 0, sizeof(bt));
      pp__put_u32(bt, 3 | PP__BATCH_FIXED);
      pp__put_u32(bt + 4, 8);
      memcpy(bt + PP__BATCH_FIXED_HDR, "aaaaaaaabbbbbbbbcccccccc", 24);
      frame(PP__F_BATCH, 0, 11, bt, sizeof(bt));
    }
    save("frames", "pool-frames");
  }
  /* The input as a worker's journal after a crash: a run of results of batch 9 from
   * item 0; bytes 20 and 24 of the header (unused by the journal) say from which item the
   * pool reads and how many the batch has. */
  {
    static uint8_t j[2048] __attribute__((aligned(16)));
    pp__jw w;
    size_t data_off;
    uint32_t tcap, i;
    memset(&w, 0, sizeof(w));
    if (pp__journal_layout(sizeof(j), &tcap, &data_off) != 0)
      abort();
    w.base = j;
    w.table = w.base + PP__JOURNAL_HDR;
    w.data = w.base + data_off;
    w.tcap = tcap;
    w.dcap = sizeof(j) - data_off;
    pp__jw_begin(&w, 9, 0);
    for (i = 0; i < 6; i++)
      pp__jw_add(&w, i == 3 ? PP__R_FAIL : PP__R_OK, "resultsresults", i * 2);
    pp__put_u32(w.base + 20, 2);
    pp__put_u32(w.base + 24, 10);
    /* The input's first two bytes; as a stream, the journal is an impossible header. */
    put_u8(255);
    put_u8(0);
    put(j, sizeof(j));
    save("frames", "journal");
  }
}

/* ---- worker: [read size] then the pool's byte stream to a worker ------------------- */

static void init(const char *initializer, uint64_t max_message) {
  uint8_t p[PP__INIT_FIXED + 255 + 16];
  size_t nlen = initializer ? strlen(initializer) : 0;

  pp__put_u16(p, PP__PROTO_VERSION);
  pp__put_u16(p + 2, 0);
  pp__put_u64(p + 4, max_message);
  p[12] = (uint8_t) nlen;
  memcpy(p + PP__INIT_FIXED, initializer ? initializer : "", nlen);
  memcpy(p + PP__INIT_FIXED + nlen, "initarg", 7);
  frame(PP__F_INIT, 0, 0, p, PP__INIT_FIXED + nlen + (initializer ? 7 : 0));
}

static void journal(uint32_t size) {
  uint8_t p[PP__JOURNAL_FRAME];

  pp__put_u64(p, size);
  pp__put_u64(p + PP__JOURNAL_TOKEN, 0);
  frame(PP__F_JOURNAL, 0, 0, p, sizeof(p));
}

/* A batch of count items; item i's argument is i * step bytes, its first byte odd for
 * every third (the fuzz target's task then fails with it). */
static void batch(uint64_t id, uint16_t task, uint32_t count, uint32_t step) {
  static uint8_t p[4 + 4 * 256 + 256 * 256];
  size_t n = 4 + (size_t) count * 4;
  uint32_t i;

  pp__put_u32(p, count);
  for (i = 0; i < count; i++) {
    uint32_t len = i * step;
    pp__put_u32(p + 4 + i * 4, len);
    memset(p + n, i % 3 == 1 ? 'a' : 'b', len);
    n += len;
  }
  frame(PP__F_BATCH, task, id, p, n);
}

/* A batch of the fixed form: count items of size bytes (pp_map_array's), every third's
 * first byte odd. */
static void batch_fixed(uint64_t id, uint16_t task, uint32_t count, uint32_t size) {
  static uint8_t p[PP__BATCH_FIXED_HDR + 256 * 64];
  uint32_t i;

  memset(p, 0, PP__BATCH_FIXED_HDR);
  pp__put_u32(p, count | PP__BATCH_FIXED);
  pp__put_u32(p + 4, size);
  for (i = 0; i < count; i++)
    memset(p + PP__BATCH_FIXED_HDR + (size_t) i * size, i % 3 == 1 ? 'a' : 'b', size);
  frame(PP__F_BATCH, task, id, p, PP__BATCH_FIXED_HDR + (size_t) count * size);
}

static void worker(void) {
  static uint8_t big[40000];
  uint8_t arg[8] = { 7, 0, 0, 0, 0, 0, 0, 0 };

  put_u8(0);
  init(NULL, 1 << 20);
  frame(PP__F_TASK, 0, 1, arg, sizeof(arg));
  frame(PP__F_TASK, 1, 2, NULL, 0);
  journal(4096);
  batch(3, 0, 5, 3);
  batch(4, 2, 9, 1);
  batch_fixed(14, 0, 7, 8);
  batch_fixed(22, 1, 3, 0);
  batch_fixed(26, 0, 5, 12);
  save("worker", "life");

  put_u8(5);
  init("setup", 1 << 16);
  batch(1, 0, 4, 5);
  frame(PP__F_TASK, 3, 2, arg, 3);
  save("worker", "init-no-journal");

  put_u8(77);
  init(NULL, 1 << 20);
  memset(big, 'y', sizeof(big));
  frame(PP__F_TASK, 0, 1, big, sizeof(big));
  frame(PP__F_TASK, 0, 2, arg, 5);
  save("worker", "big-task");

  /* The shared-memory transport: INIT with its threshold, a result segment offered, and
   * an argument in a segment (decoded, not mapped). */
  {
    uint8_t p[PP__INIT_FIXED + 8];
    uint8_t ref[PP__SHM_TASK_SIZE];
    pp__shm_task st;
    put_u8(3);
    pp__put_u16(p, PP__PROTO_VERSION);
    pp__put_u16(p + 2, PP__INIT_SHM);
    pp__put_u64(p + 4, 1 << 20);
    pp__put_u64(p + 12, 4096);
    p[20] = 0;
    frame(PP__F_INIT, 0, 0, p, sizeof(p));
    memset(&st, 0, sizeof(st));
    st.slot = 1;
    st.size = 1 << 20;
    pp__shm_task_encode(ref, &st);
    frame(PP__F_SHM_OFFER, PP__SEG_RESULT, 0, ref, sizeof(ref));
    st.slot = 0;
    st.len = 8192;
    pp__shm_task_encode(ref, &st);
    frame_f(PP__F_TASK, PP__FL_SHM, 0, 1, ref, sizeof(ref));
    frame(PP__F_TASK, 0, 2, arg, 5);
    save("worker", "shm");
  }

  /* A small journal and a small limit: a batch's results go out in several runs, and
   * one too large for the journal goes on its own. */
  put_u8(1);
  init(NULL, 100);
  journal(160);
  batch(5, 0, 8, 12);
  batch(6, 0, 3, 60);
  save("worker", "runs");
}

/* ---- fs: pieces of [descriptors][length - 1][bytes] ------------------------------- */

static void piece(int nfds, const void *p, size_t n) {
  if (n == 0 || n > 64)
    abort();
  put_u8((uint8_t) nfds);
  put_u8((uint8_t) (n - 1));
  put(p, n);
}

static void msg(int nfds, uint32_t type, int32_t value, uint64_t token) {
  pp__fs_msg m;

  memset(&m, 0, sizeof(m));
  m.type = type;
  m.value = value;
  m.token = token;
  piece(nfds, &m, sizeof(m));
}

static void fs(void) {
  pp__fs_msg m;

  /* A pool's requests. */
  msg(3, PP__FS_FORK, PP__FS_STDOUT | PP__FS_STDERR, 1);
  msg(2, PP__FS_FORK, PP__FS_STDERR, 2);
  msg(1, PP__FS_FORK, 0, 3);
  msg(0, PP__FS_KILL, 0, 2);
  msg(1, PP__FS_ADD, 0, 0);
  save("fs", "requests");
  /* A server's reports. */
  msg(0, PP__FS_HELLO, 4242, 0);
  msg(0, PP__FS_FORKED, 4243, 1);
  msg(0, PP__FS_FAILED, 24, 2);
  msg(0, PP__FS_EXITED, 3 << 8, 1);
  msg(0, PP__FS_EXITED, 9, 3);
  msg(0, PP__FS_REFUSED, 0, 0);
  save("fs", "reports");
  /* A message in two pieces, its descriptors with the first; more descriptors than a
   * message takes. */
  memset(&m, 0, sizeof(m));
  m.type = PP__FS_FORK;
  m.value = PP__FS_STDOUT;
  m.token = 5;
  piece(2, &m, 5);
  piece(0, (const uint8_t *) &m + 5, sizeof(m) - 5);
  msg(5, PP__FS_FORK, PP__FS_STDOUT | PP__FS_STDERR, 6);
  save("fs", "split");
}

int main(int argc, char **argv) {
  static const char *targets[] = { "frames", "worker", "fs" };
  char path[1024];
  size_t i;

  if (argc != 2) {
    fprintf(stderr, "usage: make-corpus DIR\n");
    return 2;
  }
  dir = argv[1];
  mkdir(dir, 0777);
  for (i = 0; i < 3; i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, targets[i]);
    mkdir(path, 0777);
  }
  frames();
  worker();
  fs();
  return 0;
}
