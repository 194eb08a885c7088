/* Any thread, safely (issue 22): commands from other threads run only at the top of the
 * loop, never inside a callback; a call that began before the pool's end finds it still
 * there; a callback never waits for another loop; a close lets a batch's unstarted items
 * run elsewhere. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* What an item of "xt_item" is: it replies index * 3 + 1, or, with kill, waits until the
 * file at path exists and then ends its worker at once. */
typedef struct xt_arg {
  uint32_t index;
  uint32_t kill;
  char path[512];
} xt_arg;

int test_task_xt_item(pp_call *call, const void *arg, size_t len) {
  xt_arg a;
  uint64_t v;
  unsigned i;

  if (len != sizeof(a))
    return pp_fail(call, "xt_item: expected %u bytes, got %lu", (unsigned) sizeof(a),
                   (unsigned long) len);
  memcpy(&a, arg, sizeof(a));
  if (a.kill) {
    /* Bounded, so that a parent that never opens the gate fails the test, not hangs it. */
    for (i = 0; i < 60000; i++) {
      uv_fs_t req;
      int found = uv_fs_stat(NULL, &req, a.path, NULL) == 0;
      uv_fs_req_cleanup(&req);
      if (found)
        test_kill_self();
      uv_sleep(1);
    }
    return pp_fail(call, "xt_item: the gate %s never opened", a.path);
  }
  v = (uint64_t) a.index * 3 + 1;
  return pp_reply(call, &v, sizeof(v));
}

static void xt_touch(const char *path) {
  FILE *f = fopen(path, "w");

  ASSERT_NOT_NULL(f);
  fclose(f);
}

/* A stream's run: every index delivered once, with its status. */
typedef struct xt_run {
  pp_pool *pool;
  size_t n;
  size_t given;
  size_t kill_at;          /* the item that kills its worker; n: none */
  char gate[512];
  xt_arg buf;
  unsigned char *seen;
  int *status;
  size_t delivered;
  int bad;
  size_t act_at;           /* each() for the first index at or after this acts once */
  int acted;
  int cancel_rc;
  int closed;
  uv_thread_t helper;
  void (*at_act)(struct xt_run *r);  /* next() for item act_at: before it is given */
} xt_run;

static int xt_next(void *user, pp_input *in) {
  xt_run *r = (xt_run *) user;

  if (r->given == r->n)
    return 0;
  if (r->given == r->act_at && r->at_act != NULL)
    r->at_act(r);
  memset(&r->buf, 0, sizeof(r->buf));
  r->buf.index = (uint32_t) r->given;
  r->buf.kill = r->given == r->kill_at;
  memcpy(r->buf.path, r->gate, sizeof(r->gate));
  in->data = &r->buf;
  in->len = sizeof(r->buf);
  r->given++;
  return 1;
}

static void xt_record(xt_run *r, size_t index, pp_result *res) {
  uint64_t v;

  if (index >= r->given || r->seen[index]++) {
    r->bad++;
    return;
  }
  r->delivered++;
  r->status[index] = res->status;
  if (res->status == 0 &&
      (res->len != sizeof(v) || (memcpy(&v, res->data, sizeof(v)), v != index * 3 + 1)))
    r->bad++;
}

static void xt_run_init(xt_run *r, pp_pool *pool, size_t n) {
  memset(r, 0, sizeof(*r));
  r->pool = pool;
  r->n = n;
  r->kill_at = n;
  r->act_at = n;
  r->seen = calloc(n, 1);
  r->status = calloc(n, sizeof(int));
  ASSERT_NOT_NULL(r->seen);
  ASSERT_NOT_NULL(r->status);
}

static void xt_run_free(xt_run *r) {
  free(r->seen);
  free(r->status);
}

/* ---- 1: no command runs inside a callback --------------------------------------------- */

static void xt_terminate_main(void *arg) {
  xt_run *r = (xt_run *) arg;

  ASSERT_EQ_INT(pp_pool_terminate(r->pool, test_count_cb, &r->closed), 0);
}

/* each() of a batch's item, once: another thread posts a terminate (on a caller's loop
 * it returns once posted), then each() cancels an id that is not pending. The cancel must
 * not run the terminate here, which would end the batch being delivered under its feet. */
static void xt_each_terminate(void *user, size_t index, pp_result *res) {
  xt_run *r = (xt_run *) user;

  xt_record(r, index, res);
  if (r->acted || index < r->act_at)
    return;
  r->acted = 1;
  ASSERT_EQ_INT(uv_thread_create(&r->helper, xt_terminate_main, r), 0);
  ASSERT_EQ_INT(uv_thread_join(&r->helper), 0);
  r->cancel_rc = pp_cancel(r->pool, ((uint64_t) 1 << 62) + 12345);
}

void test_xt_each_cancel_terminate(void) {
  const size_t n = 20000;
  pp_pool_options opts;
  uv_loop_t loop;
  pp_pool *pool;
  xt_run r;
  size_t i;
  int ordered, rc;

  for (ordered = 0; ordered < 2; ordered++) {
    ASSERT_EQ_INT(uv_loop_init(&loop), 0);
    test_options(&opts);
    opts.workers = 2;
    pool = NEW_POOL(&loop, &opts);
    xt_run_init(&r, pool, n);
    /* Far enough in that items go in batches (once the pool has timed some). */
    r.act_at = 5000;
    rc = pp_map_stream(pool, "xt_item", xt_next, xt_each_terminate, &r,
                       ordered ? 0 : PP_MAP_UNORDERED);
    ASSERT_TRUE(rc == PP_ECANCELED || rc == PP_ECLOSED);
    ASSERT_EQ_INT(r.acted, 1);
    ASSERT_EQ_INT(r.cancel_rc, PP_ENOENT);
    ASSERT_EQ_INT(r.bad, 0);
    ASSERT_EQ_U64(r.delivered, r.given);
    for (i = 0; i < r.given; i++)
      ASSERT_TRUE(r.status[i] == 0 || r.status[i] == PP_ECANCELED ||
                  r.status[i] == PP_ECLOSED);
    test_run_until(&loop, &r.closed, 1, "the terminated pool's end");
    test_run_loop(&loop);
    ASSERT_EQ_INT(uv_loop_close(&loop), 0);
    ASSERT_EQ_INT(r.closed, 1);
    xt_run_free(&r);
  }
}

/* A result callback cancels an id that is not pending, then the id of a task another
 * thread submitted just before: the first answer must come without running that submit
 * (the counters do not see it), the second takes it out of the inbox, canceled. */
typedef struct xt_cbrun {
  pp_pool *pool;
  uint64_t other_id;
  int other_rc;
  int other_status;
  int other_calls;
  int rc_missing, rc_other;
  uint64_t submitted_before, submitted_after;
  int done;
  int closed;
} xt_cbrun;

static void xt_other_cb(pp_pool *pool, pp_result *res, void *user) {
  xt_cbrun *c = (xt_cbrun *) user;

  (void) pool;
  c->other_calls++;
  c->other_status = res->status;
}

static void xt_submit_main(void *arg) {
  xt_cbrun *c = (xt_cbrun *) arg;

  c->other_rc = pp_submit(c->pool, "echo", "y", 1, xt_other_cb, c, &c->other_id);
}

static void xt_first_cb(pp_pool *pool, pp_result *res, void *user) {
  xt_cbrun *c = (xt_cbrun *) user;
  pp_pool_stats st;
  uv_thread_t t;

  ASSERT_STATUS(*res, 0);
  ASSERT_EQ_INT(uv_thread_create(&t, xt_submit_main, c), 0);
  ASSERT_EQ_INT(uv_thread_join(&t), 0);
  ASSERT_EQ_INT(c->other_rc, 0);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  c->submitted_before = st.submitted;
  c->rc_missing = pp_cancel(pool, ((uint64_t) 1 << 62) + 777);
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  c->submitted_after = st.submitted;
  c->rc_other = pp_cancel(pool, c->other_id);
  c->done = 1;
}

void test_xt_no_drain_in_callback(void) {
  pp_pool_options opts;
  uv_loop_t loop;
  xt_cbrun c;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  memset(&c, 0, sizeof(c));
  c.pool = NEW_POOL(&loop, &opts);
  ASSERT_EQ_INT(pp_submit(c.pool, "echo", "x", 1, xt_first_cb, &c, NULL), 0);
  test_run_until(&loop, &c.done, 1, "the first task's callback");
  ASSERT_EQ_INT(c.rc_missing, PP_ENOENT);
  ASSERT_EQ_U64(c.submitted_after, c.submitted_before);
  ASSERT_EQ_INT(c.rc_other, 0);
  ASSERT_EQ_INT(c.other_calls, 1);
  ASSERT_EQ_INT(c.other_status, PP_ECANCELED);
  ASSERT_EQ_INT(pp_pool_close(c.pool, test_count_cb, &c.closed), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  ASSERT_EQ_INT(c.closed, 1);
}

/* ---- 2: a call that began before the end ------------------------------------------------ */

enum { XT_LATE_KINDS = 8, XT_LATE_BIG = 16 << 20 };

typedef struct xt_late {
  pp_pool *pool;
  uv_barrier_t *start;
  unsigned kind;
  int rc;
  int calls;               /* the submitted task's callback */
  uv_mutex_t *mu;
  uv_cond_t *cond;
  unsigned *returned;      /* threads of the quick kinds whose call returned, under mu */
  void *big;
} xt_late;

/* The kinds whose call returns at once (the others wait for a task of theirs). */
static int xt_late_quick(unsigned kind) { return kind != 5 && kind != 6; }

static void xt_late_cb(pp_pool *pool, pp_result *res, void *user) {
  xt_late *l = (xt_late *) user;

  (void) pool;
  (void) res;
  uv_mutex_lock(l->mu);
  l->calls++;
  uv_mutex_unlock(l->mu);
}

/* Long enough to be running or queued when the pool ends under the calls that wait. */
static uint32_t xt_late_ms = 60000;

static void xt_late_main(void *arg) {
  xt_late *l = (xt_late *) arg;
  pp_pool_stats st;
  pp_future *f;
  pp_result out;

  uv_barrier_wait(l->start);
  switch (l->kind) {
    case 0:
      /* Copies 16 MiB while the pool ends. */
      l->rc = pp_submit(l->pool, "echo", l->big, XT_LATE_BIG, xt_late_cb, l, NULL);
      break;
    case 1: l->rc = pp_pool_stats_get(l->pool, &st); break;
    case 2: l->rc = pp_cancel(l->pool, ((uint64_t) 1 << 62) + 5); break;
    case 3: l->rc = pp_pool_workers(l->pool) == 1 ? 0 : -1; break;
    case 4: l->rc = pp_pool_error(l->pool) == NULL ? 0 : -1; break;
    case 5:
      l->rc = pp_submit_future(l->pool, "sleep_ms", &xt_late_ms, sizeof(xt_late_ms), &f);
      if (l->rc == 0) {
        ASSERT_EQ_INT(pp_future_wait(f, -1), 0);
        l->rc = pp_future_result(f)->status;
        pp_future_free(f);
      }
      break;
    case 6:
      l->rc = pp_apply(l->pool, "sleep_ms", &xt_late_ms, sizeof(xt_late_ms), &out);
      pp_result_free(&out);
      break;
    default:
      l->rc = pp_submit(l->pool, "echo", "v", 1, xt_late_cb, l, NULL);
      break;
  }
  if (xt_late_quick(l->kind)) {
    uv_mutex_lock(l->mu);
    (*l->returned)++;
    uv_cond_signal(l->cond);
    uv_mutex_unlock(l->mu);
  }
}

static void xt_late_check(xt_late *l) {
  switch (l->kind) {
    case 0:
    case 7:
      ASSERT_TRUE(l->rc == 0 || l->rc == PP_ECLOSED);
      ASSERT_EQ_INT(l->calls, l->rc == 0 ? 1 : 0);
      break;
    case 2: ASSERT_EQ_INT(l->rc, PP_ENOENT); break;
    case 5:
    case 6: ASSERT_TRUE(l->rc == PP_ECLOSED || l->rc == PP_ECANCELED); break;
    default: ASSERT_EQ_INT(l->rc, 0); break;
  }
}

void test_xt_late_calls(void) {
  xt_late late[XT_LATE_KINDS];
  uv_thread_t tid[XT_LATE_KINDS];
  pp_pool_options opts;
  uv_barrier_t start;
  uv_mutex_t mu;
  uv_cond_t cond;
  unsigned returned;
  uv_loop_t loop;
  pp_pool *pool;
  void *big = calloc(1, XT_LATE_BIG);
  int own, closed, round;
  unsigned i;

  ASSERT_NOT_NULL(big);
  ASSERT_EQ_INT(uv_mutex_init(&mu), 0);
  ASSERT_EQ_INT(uv_cond_init(&cond), 0);
  for (round = 0; round < 6; round++) {
    own = round % 2;
    closed = 0;
    test_options(&opts);
    opts.workers = 1;
    if (!own)
      ASSERT_EQ_INT(uv_loop_init(&loop), 0);
    pool = NEW_POOL(own ? NULL : &loop, &opts);
    ASSERT_EQ_INT(uv_barrier_init(&start, XT_LATE_KINDS + 1), 0);
    returned = 0;
    for (i = 0; i < XT_LATE_KINDS; i++) {
      memset(&late[i], 0, sizeof(late[i]));
      late[i].pool = pool;
      late[i].start = &start;
      late[i].kind = i;
      late[i].mu = &mu;
      late[i].cond = &cond;
      late[i].returned = &returned;
      late[i].big = big;
      ASSERT_EQ_INT(uv_thread_create(&tid[i], xt_late_main, &late[i]), 0);
    }
    /* The pool ends under the calls that wait for a task (a future's wait, pp_apply),
     * once both tasks are in: those calls began before the end, as the header requires,
     * and are still in it. The quick calls have returned by then: one that began later
     * would be a call after the end, which no pool can survive. */
    uv_barrier_wait(&start);
    for (;;) {
      pp_pool_stats st;
      unsigned back;
      uv_mutex_lock(&mu);
      back = returned;
      uv_mutex_unlock(&mu);
      ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
      /* The two echo submits and the two waiting calls' tasks. */
      if (back == XT_LATE_KINDS - 2 && st.submitted == 4)
        break;
      if (!own)
        uv_run(&loop, UV_RUN_NOWAIT);
      else
        uv_sleep(1);
    }
    if (own) {
      ASSERT_TRUE(pp_pool_terminate(pool, test_count_cb, &closed) == 0);
    } else {
      ASSERT_EQ_INT(pp_pool_terminate(pool, test_count_cb, &closed), 0);
      test_run_until(&loop, &closed, 1, "the pool's end");
    }
    for (i = 0; i < XT_LATE_KINDS; i++)
      ASSERT_EQ_INT(uv_thread_join(&tid[i]), 0);
    ASSERT_EQ_INT(closed, 1);
    for (i = 0; i < XT_LATE_KINDS; i++)
      xt_late_check(&late[i]);
    uv_barrier_destroy(&start);
    if (!own) {
      test_run_loop(&loop);
      ASSERT_EQ_INT(uv_loop_close(&loop), 0);
    }
  }
  uv_cond_destroy(&cond);
  uv_mutex_destroy(&mu);
  free(big);
}

/* ---- 3: two pools' callbacks that call each other ------------------------------------ */

typedef struct xt_pair {
  pp_pool *pool[2];
  pp_future *pending[2];   /* a task of each pool that never ends by itself */
  uv_barrier_t both;       /* both callbacks are running */
  uv_sem_t done;
  int rc[2][6];
} xt_pair;

typedef struct xt_side {
  xt_pair *p;
  int me;
} xt_side;

static void xt_cross_cb(pp_pool *pool, pp_result *res, void *user) {
  xt_side *s = (xt_side *) user;
  xt_pair *p = s->p;
  pp_pool *other = p->pool[1 - s->me];
  pp_pool_stats st;
  pp_result out;
  pp_input in;

  (void) pool;
  ASSERT_STATUS(*res, 0);
  /* Each waits for the other: were either call to wait for the other's loop, both
   * would wait for ever. */
  uv_barrier_wait(&p->both);
  p->rc[s->me][0] = pp_cancel(other, ((uint64_t) 1 << 62) + 9);
  p->rc[s->me][1] = pp_pool_stats_get(other, &st);
  p->rc[s->me][2] = pp_future_cancel(p->pending[1 - s->me]);
  p->rc[s->me][3] = pp_pool_wait(other);
  p->rc[s->me][4] = pp_apply(other, "echo", "a", 1, &out);
  pp_result_free(&out);
  in.data = "b";
  in.len = 1;
  p->rc[s->me][5] = pp_map(other, "echo", 1, &in, &out);
  pp_result_free(&out);
  uv_sem_post(&p->done);
}

void test_xt_cross_pool_callbacks(void) {
  pp_pool_options opts;
  xt_side side[2];
  xt_pair p;
  pp_future *f;
  int i, k;

  memset(&p, 0, sizeof(p));
  ASSERT_EQ_INT(uv_barrier_init(&p.both, 2), 0);
  ASSERT_EQ_INT(uv_sem_init(&p.done, 0), 0);
  for (i = 0; i < 2; i++) {
    test_options(&opts);
    opts.workers = 2;
    p.pool[i] = NEW_POOL(NULL, &opts);
    /* A future hands each pool's loop to a thread of its own. */
    ASSERT_EQ_INT(pp_submit_future(p.pool[i], "echo", "f", 1, &f), 0);
    ASSERT_EQ_INT(pp_future_wait(f, -1), 0);
    pp_future_free(f);
    ASSERT_EQ_INT(pp_submit_future(p.pool[i], "sleep_forever", NULL, 0, &p.pending[i]), 0);
    side[i].p = &p;
    side[i].me = i;
  }
  for (i = 0; i < 2; i++)
    ASSERT_EQ_INT(pp_submit(p.pool[i], "echo", "c", 1, xt_cross_cb, &side[i], NULL), 0);
  uv_sem_wait(&p.done);
  uv_sem_wait(&p.done);
  for (i = 0; i < 2; i++)
    for (k = 0; k < 6; k++)
      ASSERT_EQ_INT(p.rc[i][k], PP_EINVAL);
  /* From a thread in no callback, the same calls go through. */
  for (i = 0; i < 2; i++) {
    ASSERT_EQ_INT(pp_future_cancel(p.pending[i]), 0);
    ASSERT_STATUS(*pp_future_result(p.pending[i]), PP_ECANCELED);
    pp_future_free(p.pending[i]);
  }
  for (i = 0; i < 2; i++)
    ASSERT_EQ_INT(pp_pool_close(p.pool[i], NULL, NULL), 0);
  uv_sem_destroy(&p.done);
  uv_barrier_destroy(&p.both);
}

/* ---- 12: a close from another thread, then a worker killed mid-batch ------------------ */

static void xt_close_main(void *arg) {
  xt_run *r = (xt_run *) arg;

  ASSERT_EQ_INT(pp_pool_close(r->pool, test_count_cb, &r->closed), 0);
}

/* Once the batch of the item that kills its worker has been sent (next() is asked for an
 * item more than a batch past it), another thread closes the pool (on a caller's loop
 * that returns once posted), and only then that item is let go. */
static void xt_close_then_kill(xt_run *r) {
  r->acted = 1;
  ASSERT_EQ_INT(uv_thread_create(&r->helper, xt_close_main, r), 0);
  ASSERT_EQ_INT(uv_thread_join(&r->helper), 0);
  xt_touch(r->gate);
}

static void xt_each_record(void *user, size_t index, pp_result *res) {
  xt_record((xt_run *) user, index, res);
}

/* The most items a batch holds (the protocol's PP__BATCH_MAX). */
#define XT_BATCH_MAX 4096

void test_xt_close_stream_kill(void) {
  const size_t n = 20000;
  pp_pool_options opts;
  uv_loop_t loop;
  pp_pool *pool;
  xt_run r;
  size_t i, sure, closed_from;
  int ordered;

  for (ordered = 0; ordered < 2; ordered++) {
    ASSERT_EQ_INT(uv_loop_init(&loop), 0);
    test_options(&opts);
    opts.workers = 2;
    /* The worker that waits at the gate holds one batch, not the whole window. */
    opts.pipeline_depth = 1;
    pool = NEW_POOL(&loop, &opts);
    xt_run_init(&r, pool, n);
    r.kill_at = 3000;
    r.act_at = r.kill_at + 2 * XT_BATCH_MAX;
    r.at_act = xt_close_then_kill;
    test_marker_path(r.gate, sizeof(r.gate), ordered ? "xt-gate-o" : "xt-gate-u");
    ASSERT_EQ_INT(pp_map_stream(pool, "xt_item", xt_next, xt_each_record, &r,
                                ordered ? 0 : PP_MAP_UNORDERED), PP_EWORKER);
    ASSERT_EQ_INT(r.acted, 1);
    ASSERT_EQ_INT(r.bad, 0);
    ASSERT_TRUE(r.given > r.act_at);
    ASSERT_EQ_U64(r.delivered, r.given);
    /* Every item of a batch sent before the close runs (the killed one's batch among
     * them: those after it run elsewhere); the batch being filled at the close, and what
     * would come after, is refused, as one piece at the end. */
    sure = r.act_at - XT_BATCH_MAX;
    closed_from = r.given;
    for (i = 0; i < r.given; i++) {
      if (i == r.kill_at)
        ASSERT_EQ_INT(r.status[i], PP_EWORKER);
      else if (i < sure)
        ASSERT_EQ_INT(r.status[i], 0);
      else if (r.status[i] == PP_ECLOSED && closed_from == r.given)
        closed_from = i;
      else
        ASSERT_EQ_INT(r.status[i], closed_from < i ? PP_ECLOSED : 0);
    }
    test_run_until(&loop, &r.closed, 1, "the closed pool's end");
    test_run_loop(&loop);
    ASSERT_EQ_INT(uv_loop_close(&loop), 0);
    remove(r.gate);
    xt_run_free(&r);
  }
}
