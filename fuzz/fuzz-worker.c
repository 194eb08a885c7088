/* libFuzzer target for what a worker decodes from bytes the pool sent: the worker's frame
 * reader (src/worker/reader.c), reading the input in pieces of varying sizes, and, on what it
 * yields, the decoding the worker's serving loop (pp__serve) does: INIT first, then TASK,
 * BATCH (its items walked, each argument copied to an aligned place when it is not in
 * one), JOURNAL frames, and the shared-memory references of TASK and SHM_OFFER frames; anything else ends the worker, as it would. A batch's results
 * (each item's argument echoed, or a message) are written to a results journal by the
 * worker's journal writer as pp__serve_batch writes them, and each run is read back by the
 * pool's journal reader: what comes back must be what went in. Anything but a clean
 * error is a bug: a crash, a read out of bounds, a leak, or an abort below. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../src/worker/journal.h"
#include "../src/shared/protocol.h"
#include "../src/worker/reader.h"
#include "procpool.h"

/* Larger frames than this are not worth their allocation here: the reader takes one
 * over half its buffer into a block of its own at 32 KiB already. */
#define FUZZ_LIMIT (256 * 1024)

static volatile uint8_t sink;

static void touch(const uint8_t *p, size_t n) {
  uint8_t x = 0;
  size_t i;

  for (i = 0; i < n; i++)
    x ^= p[i];
  sink = x;
}

typedef struct source {
  const uint8_t *p;
  size_t n;
  size_t chunk;
} source;

static int source_read(void *ctx, void *buf, size_t cap, size_t *got) {
  source *s = (source *) ctx;
  size_t k = s->n < s->chunk ? s->n : s->chunk;

  if (cap == 0)
    abort();
  if (s->n == 0)
    return UV_EOF;
  if (k > cap)
    k = cap;
  memcpy(buf, s->p, k);
  s->p += k;
  s->n -= k;
  /* The next piece another size, as reads of a pipe come. */
  s->chunk = s->chunk * 7 % 4099 + 1;
  *got = k;
  return 0;
}

/* A journal in plain memory, as the worker's mapping of it would be. */
typedef struct journal {
  pp__jw jw;
  size_t size;
  /* What the current run holds, to compare with what the pool's reader makes of it. */
  uint32_t kinds[PP__BATCH_MAX];
  const uint8_t *data[PP__BATCH_MAX];
  uint32_t lens[PP__BATCH_MAX];
} journal;

static journal jn;

static void journal_open(uint64_t size) {
  size_t data_off;
  uint32_t tcap;

  free(jn.jw.base);
  memset(&jn.jw, 0, sizeof(jn.jw));
  if (size > FUZZ_LIMIT || pp__journal_layout((size_t) size, &tcap, &data_off) != 0)
    return;
  jn.jw.base = calloc(1, (size_t) size);
  if (jn.jw.base == NULL)
    return;
  jn.size = (size_t) size;
  jn.jw.table = jn.jw.base + PP__JOURNAL_HDR;
  jn.jw.data = jn.jw.base + data_off;
  jn.jw.tcap = tcap;
  jn.jw.dcap = jn.size - data_off;
}

/* The pool reads the run back, from its first item, and must find it whole. */
static void journal_check_run(uint64_t id, uint32_t first, uint32_t nitems) {
  const char *why;
  uint8_t *out = NULL;
  pp__batch b;
  size_t off = 0;
  uint32_t i;

  if (jn.jw.count == 0)
    return;
  /* A run the worker would send in the fixed form is one of successes of one size. */
  for (i = 0; jn.jw.uniform && i < jn.jw.count; i++)
    if (jn.kinds[i] != PP__R_OK || jn.lens[i] != jn.jw.usize)
      abort();
  if (pp__journal_read(jn.jw.base, jn.size, id, first, nitems, &out, &b, &why) != 0 ||
      out == NULL || b.first != first || b.count != jn.jw.count)
    abort();
  for (i = 0; i < b.count; i++) {
    uint32_t kind = pp__get_u32(b.table + (size_t) i * 8);
    uint32_t n = pp__get_u32(b.table + (size_t) i * 8 + 4);
    if (kind != jn.kinds[i] || n != jn.lens[i] || n > b.data_len - off ||
        (n > 0 && memcmp(b.data + off, jn.data[i], n) != 0))
      abort();
    off += n;
  }
  if (off != b.data_len)
    abort();
  free(out);
}

/* What pp__serve_batch does with a batch, the task being "echo the argument, or fail
 * with it as the message when its first byte is odd". */
static void serve_batch(uint64_t id, const pp__batch *b, size_t max_message) {
  static uint8_t aligned[FUZZ_LIMIT] __attribute__((aligned(16)));
  const uint8_t *next = b->data;
  uint32_t i, first = 0;

  if (jn.jw.base != NULL)
    pp__jw_begin(&jn.jw, id, 0);
  for (i = 0; i < b->count; i++) {
    uint32_t alen = b->table != NULL ? pp__get_u32(b->table + (size_t) i * 4) : b->size;
    const uint8_t *p = next;
    uint32_t kind = PP__R_OK;
    size_t n = alen;

    if (next < b->data || alen > b->data_len - (size_t) (next - b->data))
      abort();
    if (alen > 0 && (uintptr_t) next % PP__ALIGN != 0) {
      memcpy(aligned, next, alen);
      p = aligned;
    }
    next += alen;
    touch(p, alen);
    if (alen > 0 && (p[0] & 1)) {
      kind = PP__R_FAIL;
      if (n > 4000)
        n = 4000;
    }
    if (jn.jw.base == NULL)
      continue;
    /* serve.c's path for a success of the run's size, when it fits. */
    if (kind == PP__R_OK) {
      uint32_t c = jn.jw.count;
      if (pp__jw_add_same(&jn.jw, p, n, max_message)) {
        jn.kinds[c] = kind;
        jn.data[c] = next - alen;
        jn.lens[c] = (uint32_t) n;
        continue;
      }
    }
    if (jn.jw.count > 0 && !pp__jw_fits(&jn.jw, n, max_message)) {
      journal_check_run(id, first, b->count);
      pp__jw_begin(&jn.jw, id, i);
      first = i;
    }
    if (pp__jw_fits(&jn.jw, n, max_message)) {
      jn.kinds[jn.jw.count] = kind;
      jn.data[jn.jw.count] = next - alen;
      jn.lens[jn.jw.count] = (uint32_t) n;
      pp__jw_add(&jn.jw, kind, p, n);
    } else {
      first = i + 1;
      pp__jw_begin(&jn.jw, id, first);
    }
  }
  if (next != b->data + b->data_len)
    abort();
  if (jn.jw.base != NULL)
    journal_check_run(id, first, b->count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pp__reader r;
  source src;
  size_t max_message = 0;
  int inited = 0;

  if (size < 1)
    return 0;
  src.chunk = 1 + data[0] * 31u;
  src.p = data + 1;
  src.n = size - 1;
  memset(&r, 0, sizeof(r));
  memset(&jn.jw, 0, sizeof(jn.jw));
  r.read = source_read;
  r.read_ctx = &src;
  r.buf = malloc(PP__RX_CAP);
  if (r.buf == NULL)
    return 0;
  for (;;) {
    pp__hdr h;
    const uint8_t *payload;
    const char *why = NULL;
    size_t limit = inited ? max_message
                          : PP__MAX_MESSAGE_LIMIT + PP__INIT_FIXED + 8 + PP__MAX_NAME;
    int err;

    if (limit > FUZZ_LIMIT)
      limit = FUZZ_LIMIT;
    err = pp__reader_next(&r, &h, &payload, limit, &why);
    if (err != 0) {
      if (why == NULL || (err != UV_EOF && err != PP_EPROTO))
        abort();
      break;
    }
    if ((h.flags != 0 && !(h.flags == PP__FL_SHM && h.type == PP__F_TASK)) ||
        h.len > limit || (h.len > 0 && payload == NULL))
      abort();
    if (h.len > 0 && (uintptr_t) payload % PP__ALIGN != 0)
      abort();
    touch(payload, h.len);
    if (h.type == PP__F_INIT && !inited) {
      pp__init init;
      if (pp__init_decode(payload, h.len, &init, &why) != 0)
        break;
      size_t cap = ((pp__get_u16(payload + 2) & PP__INIT_MEMCAP) ? 8 : 0) +
                   ((pp__get_u16(payload + 2) & PP__INIT_SHM) ? 8 : 0);
      if (init.initializer_len > PP__MAX_NAME ||
          PP__INIT_FIXED + cap + init.initializer_len + init.initarg_len != h.len)
        abort();
      if (init.initializer != NULL)
        touch((const uint8_t *) init.initializer, init.initializer_len);
      touch(init.initarg, init.initarg_len);
      max_message = (size_t) init.max_message;
      inited = 1;
    } else if ((h.type == PP__F_TASK && h.flags == PP__FL_SHM) || h.type == PP__F_SHM_OFFER) {
      /* Where a large argument is, or a result segment: decoded, not mapped. */
      pp__shm_task st;
      if (!inited || pp__shm_task_decode(payload, h.len, &st, &why) != 0)
        break;
      if (st.slot >= PP__SHM_SLOTS || st.len > st.size || st.size == 0 ||
          h.len != PP__SHM_TASK_SIZE)
        abort();
    } else if (h.type == PP__F_TASK && inited) {
      continue;
    } else if (h.type == PP__F_BATCH && inited) {
      pp__batch b;
      if (pp__batch_decode(payload, h.len, &b, &why) != 0)
        break;
      serve_batch(h.id, &b, max_message);
    } else if (h.type == PP__F_JOURNAL) {
      uint64_t jsize, token;
      if (pp__journal_decode(payload, h.len, &jsize, &token, &why) != 0)
        break;
      if (h.len != PP__JOURNAL_FRAME)
        abort();
      journal_open(jsize);
    } else {
      break;
    }
  }
  free(jn.jw.base);
  memset(&jn.jw, 0, sizeof(jn.jw));
  free(r.big);
  free(r.scratch);
  free(r.buf);
  return 0;
}
