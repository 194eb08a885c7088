/* The worker side: pp_main and the blocking loop that serves tasks over the channel. The
 * same loop serves every start method; the table pp_main records is shared/registry.c's. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../shared/atomics.h"
#include "bigmsg.h"
#include "../channel.h"
#include "journal.h"
#include "../os.h"
#include "procpool.h"
#include "../shared/protocol.h"
#include "../shared/registry.h"
#include "../serve.h"
#include "reader.h"

/* The longest message a task can give pp_fail; the header promises it. */
#define PP__TASK_MSG_MAX 4000

struct pp_call {
  pp__chan *chan;
  const char *name;
  size_t max_message;
  void *data;
  size_t len;
  size_t cap;
  int kind;             /* a pp__result_kind: what the result frame will say */
  size_t msg_len;
  char msg[PP__TASK_MSG_MAX + 1];
  /* The shared-memory transport (bigmsg.h), for a single task's result: allowed, the
   * argument's segment when it came in one, and where the result was placed. */
  pp__wbig *big;
  int allow_shm;
  const uint8_t *shm_arg;
  size_t shm_arg_len;
  int in_shm;
  pp__shm_result res;
  /* A fixed-form batch's item (pp__serve_fixed): a result of direct_len bytes is written
   * straight into the journal at direct, and in_direct says the last pp_reply did so. */
  uint8_t *direct;
  size_t direct_len;
  int in_direct;
};

/* pp_reply but for a batch item's result of the run's size (pp__serve_fixed). Not inlined:
 * its registers and calls would otherwise cost that path, every item, what only this one
 * needs. */
static PP__NOINLINE int pp__reply_any(pp_call *call, const void *data, size_t len) {
  void *copy = NULL;

  if (call == NULL || (data == NULL && len > 0))
    return PP_EINVAL;
  call->in_direct = 0;
  if (len > call->max_message) {
    call->kind = PP__R_TOOBIG;
    call->msg_len = (size_t) snprintf(
        call->msg, sizeof(call->msg),
        "task '%s' made a result of %zu bytes, over the pool's max_message_bytes (%zu)",
        call->name, len, call->max_message);
    return PP_E2BIG;
  }
  if (call->in_shm) {
    pp__wbig_unreply(call->big, &call->res);
    call->in_shm = 0;
  }
  if (call->allow_shm && pp__wbig_reply(call->big, call->shm_arg, call->shm_arg_len, data,
                                        len, &call->res) == 0) {
    call->in_shm = 1;
    call->len = len;
    return 0;
  }
  /* The buffer is kept from task to task, so a small result costs no allocation. */
  if (len > call->cap) {
    copy = malloc(len);
    if (copy == NULL)
      return PP_ENOMEM;
    pp__os_advise_large(copy, len);
    memcpy(copy, data, len);
    free(call->data);
    call->data = copy;
    call->cap = len;
  } else if (len == 8) {
    /* A copy of a size the compiler knows goes through a register (map items' usual
     * size): cheaper than the call, and safe when data overlaps the buffer, as memmove
     * is. */
    uint64_t tmp;
    memcpy(&tmp, data, 8);
    memcpy(call->data, &tmp, 8);
  } else if (len > 0) {
    memmove(call->data, data, len);
  }
  call->len = len;
  return 0;
}

int pp_reply(pp_call *call, const void *data, size_t len) {
  if (call != NULL && call->direct != NULL && len == call->direct_len &&
      (data != NULL || len == 0)) {
    if (len > 0)
      pp__copy_small(call->direct, data, len);
    call->len = len;
    call->in_direct = 1;
    return 0;
  }
  return pp__reply_any(call, data, len);
}

int pp_fail(pp_call *call, const char *fmt, ...) {
  va_list ap;
  int n;

  if (call == NULL)
    return PP_ETASK;
  /* An oversize result is the more precise diagnosis; keep it. */
  if (call->kind == PP__R_TOOBIG)
    return PP_ETASK;
  call->kind = PP__R_FAIL;
  if (fmt == NULL)
    fmt = "(no message)";
  va_start(ap, fmt);
  n = vsnprintf(call->msg, sizeof(call->msg), fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  call->msg_len = (size_t) n < sizeof(call->msg) ? (size_t) n : sizeof(call->msg) - 1;
  return PP_ETASK;
}

/* Whether this process's resident memory is over max (max_worker_memory); *rss gets it.
 * A worker that cannot tell goes on. */
static int pp__over_memory(uint64_t max, uint64_t *rss) {
  size_t now;

  if (uv_resident_set_memory(&now) != 0)
    return 0;
  *rss = (uint64_t) now;
  return *rss > max;
}

static PP__NORETURN void pp__worker_die(pp__serve_ctx *ctx, int code, const char *what,
                                        int err) {
  if (err != 0)
    fprintf(stderr, "procpool worker %lu: %s: %s (%s)\n", (unsigned long) uv_os_getpid(),
            what, pp_strerror(err), pp_errname(err));
  else
    fprintf(stderr, "procpool worker %lu: %s\n", (unsigned long) uv_os_getpid(), what);
  ctx->exit(code);
  abort();
}

/* Each result is written before the next task starts (or, for a batch's items, kept in the
 * journal): a worker that dies in a task must leave every earlier result to the pool, so
 * that the pool blames the right task and never runs a finished one again. The writer
 * only joins a frame's parts into one call. */
#define PP__TX_CAP (64 * 1024)

typedef struct pp__writer {
  pp__chan *chan;
  uint8_t *buf;
  size_t len;
} pp__writer;

static int pp__writer_flush(pp__writer *w) {
  pp__iov iov;
  int err;

  if (w->len == 0)
    return 0;
  iov.base = w->buf;
  iov.len = w->len;
  err = pp__chan_write(w->chan, &iov, 1);
  w->len = 0;
  return err;
}

static int pp__writer_frame_f(pp__writer *w, uint8_t type, uint8_t flags, uint16_t aux,
                              uint64_t id, const void *data, size_t len) {
  if (PP__HDR_SIZE + len > PP__TX_CAP - w->len) {
    if (PP__HDR_SIZE + len > PP__TX_CAP / 2) {
      /* Large: out at once, behind what is gathered, in one call and with no copy. */
      uint8_t hdr[PP__HDR_SIZE];
      pp__iov iov[3];
      int err;
      pp__hdr_encode(hdr, type, aux, id, (uint32_t) len);
      pp__hdr_set_flags(hdr, flags);
      iov[0].base = w->buf;
      iov[0].len = w->len;
      iov[1].base = hdr;
      iov[1].len = sizeof(hdr);
      iov[2].base = data;
      iov[2].len = len;
      err = pp__chan_write(w->chan, iov, 3);
      w->len = 0;
      return err;
    } else {
      int err = pp__writer_flush(w);
      if (err != 0)
        return err;
    }
  }
  pp__hdr_encode(w->buf + w->len, type, aux, id, (uint32_t) len);
  pp__hdr_set_flags(w->buf + w->len, flags);
  if (len > 0)
    memcpy(w->buf + w->len + PP__HDR_SIZE, data, len);
  w->len += PP__HDR_SIZE + len;
  return 0;
}

static int pp__writer_frame(pp__writer *w, uint8_t type, uint16_t aux, uint64_t id,
                            const void *data, size_t len) {
  return pp__writer_frame_f(w, type, 0, aux, id, data, len);
}

static int pp__send(pp__chan *chan, uint8_t type, uint16_t aux, uint64_t id,
                    const void *data, size_t len) {
  uint8_t hdr[PP__HDR_SIZE];
  pp__iov iov[2];

  pp__hdr_encode(hdr, type, aux, id, (uint32_t) len);
  iov[0].base = hdr;
  iov[0].len = sizeof(hdr);
  iov[1].base = data;
  iov[1].len = len;
  return pp__chan_write(chan, iov, 2);
}

static int pp__send_hello(pp__chan *chan) {
  uint8_t *buf;
  size_t size, n;
  int err;

  const char *const *names = pp__table_names(&n);

  size = pp__hello_size(names, n);
  buf = malloc(size);
  if (buf == NULL)
    return PP_ENOMEM;
  pp__hello_encode(buf, (uint32_t) uv_os_getpid(), names, n);
  err = pp__send(chan, PP__F_HELLO, PP__HELLO_OK, 0, buf, size);
  free(buf);
  return err;
}

/* Runs task `index` and returns the frame kind; *call holds the result or message. */
static void pp__run(pp_call *call, size_t index, const void *arg, size_t len) {
  size_t n;
  const pp_task *table = pp__table_get(&n);
  int r;

  call->name = table[index].name;
  pp__chan_busy(call->chan, 1);
  r = table[index].fn(call, len ? arg : NULL, len);
  pp__chan_busy(call->chan, 0);
  if (r != 0 && call->kind == PP__R_OK) {
    call->kind = PP__R_FAIL;
    call->msg_len = (size_t) snprintf(call->msg, sizeof(call->msg),
                                      "task '%s' returned %d (%s) without a message",
                                      call->name, r, pp_errname(r));
  }
}

/* Readies call for the next task; max_message 0 releases everything. A large result's
 * buffer is not kept: one big task must not pin its memory in an idle worker. */
#define PP__KEEP_REPLY (64 * 1024)

static void pp__call_reset(pp_call *call, size_t max_message) {
  if (call->in_shm)
    pp__wbig_unreply(call->big, &call->res);
  call->in_shm = 0;
  call->allow_shm = 0;
  call->direct = NULL;
  call->in_direct = 0;
  call->shm_arg = NULL;
  call->shm_arg_len = 0;
  if (max_message == 0 || call->cap > PP__KEEP_REPLY) {
    free(call->data);
    call->data = NULL;
    call->cap = 0;
  }
  call->len = 0;
  call->kind = PP__R_OK;
  call->msg_len = 0;
  call->msg[0] = '\0';
  call->max_message = max_message;
}

static int pp__send_result(pp__writer *w, uint8_t type, uint64_t id, pp_call *call) {
  if (call->kind == PP__R_OK && call->in_shm) {
    uint8_t ref[PP__SHM_RESULT_SIZE];
    /* From here the segment is the pool's until it gives it back. */
    call->in_shm = 0;
    pp__shm_result_encode(ref, &call->res);
    return pp__writer_frame_f(w, type, PP__FL_SHM, PP__R_OK, id, ref, sizeof(ref));
  }
  if (call->kind == PP__R_OK)
    return pp__writer_frame(w, type, PP__R_OK, id, call->data, call->len);
  return pp__writer_frame(w, type, (uint16_t) call->kind, id, call->msg, call->msg_len);
}

/* A byte buffer kept from batch to batch, for the items' arguments that need an aligned
 * place. */
typedef struct pp__buf {
  uint8_t *p;
  size_t cap;
} pp__buf;

static int pp__buf_reserve(pp__buf *b, size_t len) {
  uint8_t *p;

  if (len <= b->cap)
    return 0;
  /* The old contents are not needed, so free and malloc rather than realloc's copy. */
  p = malloc(len);
  if (p == NULL)
    return PP_ENOMEM;
  free(b->p);
  b->p = p;
  b->cap = len;
  return 0;
}

/* Like a large result's buffer, a large argument's place is not kept. */
static void pp__buf_trim(pp__buf *b) {
  if (b->cap > PP__KEEP_REPLY) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
  }
}

/* Writes item i's result as a BATCH_RESULT of that one item: one write call, and the
 * result is not copied. */
static int pp__send_batch_item(pp__chan *chan, uint64_t id, uint32_t i, const pp_call *call) {
  uint8_t head[PP__HDR_SIZE + 16];
  pp__iov iov[2];
  size_t n = call->kind == PP__R_OK ? call->len : call->msg_len;

  pp__hdr_encode(head, PP__F_BATCH_RESULT, 0, id, (uint32_t) (16 + n));
  pp__put_u32(head + PP__HDR_SIZE, i);
  pp__put_u32(head + PP__HDR_SIZE + 4, 1);
  pp__put_u32(head + PP__HDR_SIZE + 8, (uint32_t) call->kind);
  pp__put_u32(head + PP__HDR_SIZE + 12, (uint32_t) n);
  iov[0].base = head;
  iov[0].len = sizeof(head);
  iov[1].base = call->kind == PP__R_OK ? (const void *) call->data : (const void *) call->msg;
  iov[1].len = n;
  return pp__chan_write(chan, iov, 2);
}

/* Writes the journal's run as one BATCH_RESULT, straight from the journal, then starts
 * the next run at item next. The frame goes out before the journal forgets the run: a
 * worker that dies in between leaves its results in both places, and the pool takes from
 * the journal only the items it has not filed. */
static int pp__send_run(pp__chan *chan, pp__jw *j, uint64_t id, uint32_t first,
                        uint32_t next) {
  uint8_t head[PP__HDR_SIZE + PP__BATCH_FIXED_HDR];
  pp__iov iov[3];
  int err;

  pp__put_u32(head + PP__HDR_SIZE, first);
  if (j->uniform) {
    /* Every result a success of one size: the fixed form, without the table. */
    pp__hdr_encode(head, PP__F_BATCH_RESULT, 0, id,
                   (uint32_t) (PP__BATCH_FIXED_HDR + j->used));
    pp__put_u32(head + PP__HDR_SIZE + 4, j->count | PP__BATCH_FIXED);
    pp__put_u32(head + PP__HDR_SIZE + 8, j->usize);
    pp__put_u32(head + PP__HDR_SIZE + 12, 0);
    iov[0].base = head;
    iov[0].len = sizeof(head);
    iov[1].base = j->data;
    iov[1].len = j->used;
    err = pp__chan_write(chan, iov, 2);
  } else {
    pp__hdr_encode(head, PP__F_BATCH_RESULT, 0, id,
                   (uint32_t) (8 + (size_t) j->count * 8 + j->used));
    pp__put_u32(head + PP__HDR_SIZE + 4, j->count);
    iov[0].base = head;
    iov[0].len = PP__HDR_SIZE + 8;
    iov[1].base = j->table;
    iov[1].len = (size_t) j->count * 8;
    iov[2].base = j->data;
    iov[2].len = j->used;
    err = pp__chan_write(chan, iov, 3);
  }
  pp__jw_begin(j, id, next);
  return err;
}

/* A task that returned r, not 0, without pp_fail: its failure says so. */
static void pp__run_fail(pp_call *call, int r) {
  call->kind = PP__R_FAIL;
  call->msg_len = (size_t) snprintf(call->msg, sizeof(call->msg),
                                    "task '%s' returned %d (%s) without a message",
                                    call->name, r, pp_errname(r));
}

/* Runs one item of a batch: pp__run without the busy mark, which the batch sets once,
 * and with the task's function and name found once for the batch. */
static void pp__run_item(pp_call *call, pp_task_fn fn, const void *arg, size_t len) {
  int r = fn(call, len ? arg : NULL, len);

  if (r != 0 && call->kind == PP__R_OK)
    pp__run_fail(call, r);
}

/* Files item i's result (in call) in the journal's run, or sends it, as the comment of
 * pp__serve_batch says; *first is the run's first item. */
static int pp__file_item(pp__chan *chan, pp_call *call, uint64_t id, uint32_t i,
                         uint32_t *first, size_t max_message, pp__jw *j) {
  const void *out;
  size_t n;
  int err = 0;

  if (j->base == NULL)
    return pp__send_batch_item(chan, id, i, call);
  out = call->kind == PP__R_OK ? (const void *) call->data : (const void *) call->msg;
  n = call->kind == PP__R_OK ? call->len : call->msg_len;
  if (call->kind == PP__R_OK && pp__jw_add_same(j, out, n, max_message))
    return 0;
  if (j->count > 0 && !pp__jw_fits(j, n, max_message)) {
    err = pp__send_run(chan, j, id, *first, i);
    *first = i;
  }
  if (err != 0)
    return err;
  if (pp__jw_fits(j, n, max_message)) {
    pp__jw_add(j, (uint32_t) call->kind, out, n);
  } else {
    err = pp__send_batch_item(chan, id, i, call);
    *first = i + 1;
    pp__jw_begin(j, id, *first);
  }
  return err;
}

/* Runs items of a fixed-form batch from *pi while the journal's run is uniform and has
 * room (for room more, at least one), each task's pp_reply writing its result straight into the journal (call->direct):
 * pp_map_array's path, where an item costs little more than the task's own call. It
 * keeps in registers what the general loop keeps in j and call, which the task's call
 * makes the compiler read again for every item. The first item whose outcome is anything
 * but a success of the run's size is filed as the general loop files it, and ends the
 * stretch; so does the run's room. *pi is then the next item to run. */
static int pp__serve_fixed(pp__chan *chan, pp_call *call, pp_task_fn fn, uint64_t id,
                           const pp__batch *b, pp__buf *arg, uint32_t *pi, uint32_t room,
                           uint32_t *first, size_t max_message, pp__jw *j) {
  const size_t size = b->size, usize = j->usize;
  const uint8_t *items = b->data;
  uint32_t i = *pi, end = b->count;
  uint32_t count = j->count;
  uint8_t *slot = j->data + j->used;
  uint8_t *entry = j->table + (size_t) count * 8;
  uint8_t *published = j->base + PP__JOURNAL_COUNT;
  uint64_t e;
  int copy, r, err = 0;

  /* Every item is aligned, or every one is copied to arg (an 8-byte item's copy is one
   * move): one test for the stretch, not one for each item. */
  copy = size > 0 && (((uintptr_t) items | size) % PP__ALIGN) != 0;
  if (copy && size > arg->cap && (err = pp__buf_reserve(arg, size)) != 0)
    return err;
  if (end - i > room)
    end = i + room;
  memcpy(&e, j->entry, 8);
  call->direct_len = usize;
  for (; i < end; i++) {
    const void *p = size > 0 ? items + (size_t) i * size : NULL;

    if (copy) {
      pp__copy_small(arg->p, p, size);
      p = arg->p;
    }
    call->direct = slot;
    call->in_direct = 0;
    call->len = 0;
    r = fn(call, p, size);
    if (r != 0 || !call->in_direct || call->kind != PP__R_OK)
      break;
    memcpy(entry, &e, 8);
    entry += 8;
    slot += usize;
    count++;
    /* Published after what it counts, as pp__jw_add does. */
    pp__store_release(published, count);
  }
  call->direct = NULL;
  j->used += (size_t) (count - j->count) * usize;
  j->count = count;
  j->same_left = 0;
  if (i < end) {
    /* Item i ran and its outcome is not a success of the run's size. */
    if (r != 0 && call->kind == PP__R_OK)
      pp__run_fail(call, r);
    err = pp__file_item(chan, call, id, i, first, max_message, j);
    i++;
  }
  *pi = i;
  return err;
}

/* Runs each item of a batch as a task of its own. Before an item starts, every earlier
 * item's result is on the wire or in the journal, so a worker that dies in item k leaves
 * the results of the items before k to the pool, which fails item k alone and runs again
 * only the items that never started (doc/design.md). The journal's results go out in runs
 * of as many as it holds, each run's results within max_message like any frame's (one
 * result alone may be an error message over it); a result too large for the journal goes
 * out on its own at once, after the run before it. Without a journal, every result goes
 * out on its own before the next item starts. The arguments lie end to end in the batch;
 * one that is not aligned as the header promises is copied to `arg` first. The worker is
 * marked busy once for the whole batch (pp__chan_busy is an atomic store that would cost
 * more than a small item twice over). */
static int pp__serve_batch(pp__chan *chan, pp_call *call, size_t index, uint64_t id,
                           const pp__batch *b, size_t max_message, pp__buf *arg,
                           pp__jw *j) {
  const uint8_t *next = b->data;
  size_t ntasks;
  const pp_task *table = pp__table_get(&ntasks);
  pp_task_fn fn = index < ntasks ? table[index].fn : NULL;
  const char *name = fn != NULL ? table[index].name : NULL;
  uint32_t i = 0, first = 0, room;
  int err = 0;

  if (j->base != NULL)
    pp__jw_begin(j, id, 0);
  pp__chan_busy(chan, 1);
  pp__call_reset(call, max_message);
  while (i < b->count && err == 0) {
    uint32_t alen = b->table != NULL ? pp__get_u32(b->table + (size_t) i * 4) : b->size;
    const void *p;

    /* After a success of a small result the call is as a reset leaves it but for its
     * length (only a failure writes the message, only a large result grows the buffer). */
    if (call->kind != PP__R_OK || call->cap > PP__KEEP_REPLY)
      pp__call_reset(call, max_message);
    call->name = name;
    /* A full run goes out through the general path, which starts the next. */
    if (fn != NULL && b->table == NULL && j->base != NULL && j->uniform && j->count > 0 &&
        (room = pp__jw_room_same(j, max_message)) > 0) {
      err = pp__serve_fixed(chan, call, fn, id, b, arg, &i, room, &first, max_message, j);
      continue;
    }
    if (b->table == NULL)
      next = b->data + (size_t) i * b->size;
    p = next;
    if (alen > 0 && (uintptr_t) next % PP__ALIGN != 0) {
      err = alen <= arg->cap ? 0 : pp__buf_reserve(arg, alen);
      if (err != 0)
        break;
      pp__copy_small(arg->p, next, alen);
      p = arg->p;
    }
    next += alen;
    call->len = 0;
    if (fn != NULL) {
      pp__run_item(call, fn, p, alen);
    } else {
      call->kind = PP__R_NOTASK;
      call->msg_len = (size_t) snprintf(call->msg, sizeof(call->msg),
                                        "task number %u is not in the worker's table",
                                        (unsigned) index);
    }
    err = pp__file_item(chan, call, id, i, &first, max_message, j);
    i++;
  }
  pp__chan_busy(chan, 0);
  if (err == 0 && j->base != NULL && j->count > 0)
    err = pp__send_run(chan, j, id, first, b->count);
  pp__buf_trim(arg);
  return err;
}

/* Runs the initializer. In the INIT frame its argument follows the initializer's name, at
 * an offset that the name's length decides; the header promises an argument aligned for
 * any type, so it is copied to an aligned place unless it happens to be in one. */
static void pp__run_init(pp_call *call, size_t index, const pp__init *init, pp__buf *arg) {
  const void *p = init->initarg;

  if (init->initarg_len > 0 && (uintptr_t) p % PP__ALIGN != 0) {
    if (pp__buf_reserve(arg, init->initarg_len) != 0) {
      call->kind = PP__R_FAIL;
      call->msg_len = (size_t) snprintf(call->msg, sizeof(call->msg),
                                        "no memory in the worker for the initializer's "
                                        "argument of %zu bytes", init->initarg_len);
      return;
    }
    memcpy(arg->p, p, init->initarg_len);
    p = arg->p;
  }
  pp__run(call, index, p, init->initarg_len);
  pp__buf_trim(arg);
}

void pp__serve(pp__serve_ctx *ctx) {
  pp__reader r;
  pp__writer wr;
  pp__buf arg = { NULL, 0 };
  pp__jw journal;
  pp_call call;
  pp__wbig *big = NULL;
  size_t max_message = 0;
  uint64_t seq = 0;        /* the tasks and batches read, numbered as the pool does */
  uint64_t max_memory = 0, rss = 0;
  pp__hdr h_doomed;
  const uint8_t *payload_doomed;
  const char *why_doomed;
  int inited = 0;
  int err;

  pp__registry_serving(ctx->chan.h);
  memset(&r, 0, sizeof(r));
  memset(&call, 0, sizeof(call));
  memset(&journal, 0, sizeof(journal));
  call.chan = &ctx->chan;
  r.chan = &ctx->chan;
  r.buf = malloc(PP__RX_CAP);
  wr.chan = &ctx->chan;
  wr.len = 0;
  wr.buf = malloc(PP__TX_CAP);
  if (r.buf == NULL || wr.buf == NULL)
    pp__worker_die(ctx, PP__EXIT_SETUP, "out of memory", 0);
  /* Without the watcher a worker still ends when it next reads: serve on regardless. */
  pp__chan_watch(&ctx->chan);
  err = pp__send_hello(&ctx->chan);
  if (err == UV_EPIPE || err == UV_ECONNRESET)
    ctx->exit(0);  /* The pool let this worker go before it was ready: nothing to say. */
  if (err != 0)
    pp__worker_die(ctx, PP__EXIT_SETUP, "could not greet the pool", err);

  for (;;) {
    pp__hdr h;
    const uint8_t *payload;
    const char *why = NULL;
    size_t limit = inited ? max_message : PP__MAX_MESSAGE_LIMIT + PP__INIT_FIXED + 8 + PP__MAX_NAME;

    err = pp__reader_next(&r, &h, &payload, limit, &why);
    if (err == UV_EOF || err == UV_ECONNRESET)
      break;  /* The pool closed the channel, or died: either way, the end. */
    if (err != 0)
      pp__worker_die(ctx, PP__EXIT_PROTO, why, err);

    if (h.type == PP__F_INIT && !inited) {
      pp__init init;
      int index = -1;
      if (pp__init_decode(payload, h.len, &init, &why) != 0)
        pp__worker_die(ctx, PP__EXIT_PROTO, why, 0);
      max_message = (size_t) init.max_message;
      max_memory = init.max_memory;
      big = pp__wbig_new(&init);
      call.big = big;
      inited = 1;
      pp__call_reset(&call, max_message);
      if (init.initializer != NULL) {
        index = pp__table_find(init.initializer, init.initializer_len);
        if (index < 0) {
          call.kind = PP__R_NOTASK;
          call.msg_len = (size_t) snprintf(call.msg, sizeof(call.msg),
                                           "the initializer '%.*s' is not in the worker's "
                                           "task table",
                                           (int) init.initializer_len, init.initializer);
        } else {
          pp__run_init(&call, (size_t) index, &init, &arg);
        }
      }
      err = pp__send_result(&wr, PP__F_READY, 0, &call);
    } else if (h.type == PP__F_TASK && inited) {
      const uint8_t *arg = payload;
      size_t alen = h.len;
      int in_shm = (h.flags & PP__FL_SHM) != 0;
      if (in_shm) {
        pp__shm_task st;
        char why_shm[256];
        if (pp__shm_task_decode(payload, h.len, &st, &why) != 0)
          pp__worker_die(ctx, PP__EXIT_PROTO, why, 0);
        if (st.len > max_message)
          pp__worker_die(ctx, PP__EXIT_PROTO, "the pool sent a shared-memory argument over "
                         "max_message", 0);
        err = pp__wbig_arg(big, &st, &arg, why_shm, sizeof(why_shm));
        if (err == PP_EPROTO)
          pp__worker_die(ctx, PP__EXIT_PROTO, why_shm, 0);
        if (err != 0) {
          /* The task never ran: the pool runs it elsewhere, over a channel, and this
           * worker starts nothing more (as a retired one), so that nothing it holds
           * behind it runs out of order. */
          err = pp__writer_frame(&wr, PP__F_SHM_FAILED, 0, h.id, why_shm, strlen(why_shm));
          if (err == 0)
            err = pp__writer_flush(&wr);
          if (err == 0 || err == UV_EPIPE || err == UV_ECONNRESET)
            break;
          pp__worker_die(ctx, PP__EXIT_PROTO, "could not send a result", err);
        }
        alen = (size_t) st.len;
      }
      if (pp__jw_start(&journal, ++seq) != 0)
        break;
      pp__call_reset(&call, max_message);
      call.allow_shm = 1;
      if (in_shm) {
        call.shm_arg = arg;
        call.shm_arg_len = alen;
      }
      if (h.aux < pp__table_count()) {
        pp__run(&call, h.aux, arg, alen);
      } else {
        call.kind = PP__R_NOTASK;
        call.msg_len = (size_t) snprintf(call.msg, sizeof(call.msg),
                                         "task number %u is not in the worker's table",
                                         (unsigned) h.aux);
      }
      if (pp__jw_finish(&journal, seq) != 0)
        break;
      err = pp__send_result(&wr, PP__F_RESULT, h.id, &call);
      if (err == 0 && max_memory != 0 && pp__over_memory(max_memory, &rss)) {
        /* Retired for its size: it says so behind the result, then starts nothing more
         * and waits for the pool to close its channel (below). */
        uint8_t b[8];
        pp__put_u64(b, rss);
        err = pp__writer_frame(&wr, PP__F_RETIRE, 0, h.id, b, sizeof(b));
        if (err == 0)
          err = pp__writer_flush(&wr);
        if (err == 0)
          break;
      }
    } else if (h.type == PP__F_BATCH && inited) {
      pp__batch b;
      if (pp__batch_decode(payload, h.len, &b, &why) != 0)
        pp__worker_die(ctx, PP__EXIT_PROTO, why, 0);
      if (pp__jw_start(&journal, ++seq) != 0)
        break;
      err = pp__writer_flush(&wr);
      if (err == 0)
        err = pp__serve_batch(&ctx->chan, &call, h.aux, h.id, &b, max_message, &arg,
                              &journal);
      if (err == 0 && pp__jw_finish(&journal, seq) != 0)
        break;
    } else if (h.type == PP__F_SHM_OFFER && inited) {
      pp__shm_task st;
      char why_shm[256];
      if (pp__shm_task_decode(payload, h.len, &st, &why) != 0)
        pp__worker_die(ctx, PP__EXIT_PROTO, why, 0);
      /* One it cannot map is only not used: its results go over the channel, and an
       * argument the pool puts there is refused (SHM_FAILED). */
      if (pp__wbig_offer(big, &ctx->chan, h.aux, &st, why_shm, sizeof(why_shm)) == PP_EPROTO)
        pp__worker_die(ctx, PP__EXIT_PROTO, why_shm, 0);
    } else if (h.type == PP__F_JOURNAL && journal.base == NULL) {
      uint64_t jsize, token;
      if (pp__journal_decode(payload, h.len, &jsize, &token, &why) != 0)
        pp__worker_die(ctx, PP__EXIT_PROTO, why, 0);
      /* It comes first, before or after INIT. Without it, batches are served all the
       * same, each result written on its own; the pool is told, so that it never takes
       * this worker for one that obeys the journal's state word (journal.h). */
      if (pp__jw_open(&journal, &ctx->chan, jsize, token) != 0)
        err = pp__writer_frame(&wr, PP__F_JOURNAL_FAILED, 0, 0, NULL, 0);
    } else {
      pp__worker_die(ctx, PP__EXIT_PROTO, "the pool sent an unexpected frame", 0);
    }
    if (err == 0)
      err = pp__writer_flush(&wr);
    if (err != 0) {
      if (err == UV_EPIPE || err == UV_ECONNRESET)
        break;
      pp__worker_die(ctx, PP__EXIT_PROTO, "could not send a result", err);
    }
  }
  /* A break with the channel open is a worker the pool claimed for a kill (journal.h):
   * it starts and sends nothing more, and waits for its end, which the kill brings, or
   * the channel's end if the pool died first. */
  while (pp__reader_next(&r, &h_doomed, &payload_doomed, PP__MAX_MESSAGE_LIMIT,
                         &why_doomed) == 0)
    ;
  pp__call_reset(&call, 0);
  pp__wbig_free(big);
  pp__jw_close(&journal);
  free(arg.p);
  free(r.big);
  free(r.scratch);
  free(r.buf);
  free(wr.buf);
  pp__chan_close(&ctx->chan);
  ctx->exit(0);
  abort();
}

static PP__NORETURN void pp__spawned_exit(int code) {
  /* A spawned worker is a program of its own: a normal exit flushes what its tasks
   * printed and runs its own atexit handlers. */
  fflush(NULL);
  exit(code);
}

/* The mark that makes this process a worker or a forkserver, or NULL. */
static const char *pp__find_mark(int argc, char **argv, const char *mark) {
  size_t mlen = strlen(mark);
  int i;

  for (i = 1; i < argc; i++)
    if (argv[i] != NULL && strncmp(argv[i], mark, mlen) == 0)
      return argv[i] + mlen;
  return NULL;
}

/* A worker whose program gave pp_main a malformed table cannot serve. Rather than end
 * in silence (the pool would see a worker that never reached pp_main), it tells the pool
 * why, in a HELLO of its own kind, and exits. */
static PP__NORETURN void pp__refuse(pp__chan *chan, const char *why) {
  size_t len = strlen(why);

  fprintf(stderr, "procpool worker %lu: %s\n", (unsigned long) uv_os_getpid(), why);
  pp__send(chan, PP__F_HELLO, PP__HELLO_FAILED, 0, why,
           len < PP__MAX_ERRMSG ? len : PP__MAX_ERRMSG);
  pp__chan_close(chan);
  pp__spawned_exit(PP__EXIT_SETUP);
}

int pp_main(int argc, char **argv, const pp_task *tasks) {
  const char *worker = pp__find_mark(argc, argv, PP__WORKER_MARK);
  const char *server = pp__find_mark(argc, argv, PP__FORKSERVER_MARK);
  pp__serve_ctx ctx;
  char why[512];
  int err;

  /* The channel first, before anything can print: behind a launcher it is stdout, which
   * the first byte of anyone's output would corrupt. */
  if (worker != NULL) {
    err = pp__chan_open(worker, &ctx.chan);
    if (err != 0) {
      fprintf(stderr, "procpool worker: cannot open the channel '%s': %s\n", worker,
              pp_strerror(err));
      exit(PP__EXIT_SETUP);
    }
  }
  err = pp__table_set(tasks, why, sizeof(why));
  if (err != 0) {
    if (worker != NULL)
      pp__refuse(&ctx.chan, why);
    if (server != NULL) {
      fprintf(stderr, "procpool forkserver %lu: %s\n", (unsigned long) uv_os_getpid(), why);
      exit(PP__EXIT_SETUP);
    }
    fprintf(stderr, "procpool: %s\n", why);
    return err;
  }

  if (server != NULL) {
    pp__forkserver_main(server);
    fprintf(stderr, "procpool: this OS has no forkserver\n");
    exit(PP__EXIT_SETUP);
  }
  if (worker != NULL) {
    ctx.exit = pp__spawned_exit;
    pp__serve(&ctx);
  }
  return 0;
}
