/* The stress test of the fault issue: thousands of tasks while workers are killed from
 * outside at random moments. Every task must get exactly one result; every success must
 * be the right one; a failure may only be the death of the worker that ran it. Its
 * counts go to stdout, for the record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define KS_TASKS 4000
#define KS_KILLS 40

typedef struct ks_state {
  int calls[KS_TASKS];
  int status[KS_TASKS];
  uint64_t pids[64];        /* recent worker pids, from the results */
  size_t npids;
  uint64_t killed[KS_KILLS]; /* the pids killed so far */
  int done;
  int kills;
  unsigned rng;
} ks_state;

static ks_state ks;

/* A task that takes a millisecond, so that kills land in the middle of tasks. */
int test_task_ks_work(pp_call *call, const void *arg, size_t len) {
  uint64_t pid = (uint64_t) uv_os_getpid();
  unsigned char buf[sizeof(uint64_t) + sizeof(uint32_t)];

  if (len != sizeof(uint32_t))
    return pp_fail(call, "ks_work wants a 4-byte index");
  uv_sleep(1);
  memcpy(buf, &pid, sizeof(pid));
  memcpy(buf + sizeof(pid), arg, len);
  return pp_reply(call, buf, sizeof(buf));
}

static void ks_cb(pp_pool *pool, pp_result *r, void *user) {
  size_t i = (size_t) (uintptr_t) user;
  uint32_t echoed;
  uint64_t pid;

  (void) pool;
  ks.calls[i]++;
  ks.status[i] = r->status;
  ks.done++;
  if (r->status != 0) {
    /* Only the death of its worker may fail a task here. */
    ASSERT_EQ_INT_MSG(r->status, PP_EWORKER, r->message);
    return;
  }
  ASSERT_EQ_INT(r->len, sizeof(pid) + sizeof(echoed));
  memcpy(&pid, r->data, sizeof(pid));
  memcpy(&echoed, (char *) r->data + sizeof(pid), sizeof(echoed));
  ASSERT_EQ_U64(echoed, i);
  ks.pids[ks.npids++ % 64] = pid;
}

/* A pid is killed once at most. Results its worker sent before it died still bring it
 * back into the list, and once the pool has reaped that worker the OS may give its pid
 * to any new process: wine does within milliseconds, and a second kill took down the
 * test that ran beside this one. Nothing else ends a worker here, so every pid never
 * killed is a live worker's, and the pool has not reaped it. */
static int ks_was_killed(uint64_t pid) {
  int i;

  for (i = 0; i < ks.kills; i++)
    if (ks.killed[i] == pid)
      return 1;
  return 0;
}

static void ks_kill(uv_timer_t *t) {
  uint64_t pid;

  if (ks.kills >= KS_KILLS || ks.done == KS_TASKS) {
    uv_timer_stop(t);
    return;
  }
  if (ks.npids == 0)
    return;
  ks.rng = ks.rng * 1103515245u + 12345u;
  pid = ks.pids[(ks.rng >> 8) % (ks.npids < 64 ? ks.npids : 64)];
  if (ks_was_killed(pid))
    return;
  ASSERT_EQ_INT(uv_kill((int) pid, SIGKILL), 0);
  ks.killed[ks.kills++] = pid;
}

void test_kill_stress(void) {
  uv_loop_t loop;
  uv_timer_t killer;
  pp_pool_options opts;
  pp_pool *pool;
  uint64_t t0;
  size_t i;
  int ok = 0, died = 0, closes = 0;

  memset(&ks, 0, sizeof(ks));
  ks.rng = 12345;
  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 3;
  pool = NEW_POOL(&loop, &opts);
  t0 = uv_hrtime();
  for (i = 0; i < KS_TASKS; i++) {
    uint32_t arg = (uint32_t) i;
    ASSERT_EQ_INT(pp_submit(pool, "ks_work", &arg, sizeof(arg), ks_cb, (void *) (uintptr_t) i,
                            NULL), 0);
  }
  ASSERT_EQ_INT(uv_timer_init(&loop, &killer), 0);
  ASSERT_EQ_INT(uv_timer_start(&killer, ks_kill, 5, 5), 0);
  test_run_until(&loop, &ks.done, KS_TASKS, "every task's result");
  uv_close((uv_handle_t *) &killer, NULL);
  for (i = 0; i < KS_TASKS; i++) {
    /* Exactly once: none lost, none doubled. */
    ASSERT_EQ_INT(ks.calls[i], 1);
    if (ks.status[i] == 0)
      ok++;
    else
      died++;
  }
  printf("kill-stress %s: %d tasks, %d workers killed from outside, %d succeeded, %d failed "
         "with their worker, 0 lost, 0 doubled, %.0f ms\n",
         pp_start_method_name(pp_pool_start_method(pool)), KS_TASKS, ks.kills, ok, died,
         (double) (uv_hrtime() - t0) / 1e6);
  ASSERT_EQ_INT(pp_pool_close(pool, test_count_cb, &closes), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(closes, 1);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
}
