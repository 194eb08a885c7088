/* max_worker_memory: a worker over the cap after a task is retired, nothing fails, and no
 * worker starts a task while over it (issue 16). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define MIB ((uint64_t) 1 << 20)
#define MEMCAP_TASKS 40
#define MEMCAP_LEAK_MIB 40
#define MEMCAP_CAP (200 * MIB)

/* The blocks a worker leaked, kept reachable so that a leak checker in the worker says
 * nothing: the growth is the point. Volatile: a compiler that sees the blocks never read
 * may drop the malloc and the memset altogether. */
static void *volatile memcap_kept[64];
static unsigned memcap_runs;

typedef struct memcap_reply {
  uint64_t rss_before, rss_after, pid, runs;
} memcap_reply;

/* Leaks (and touches) as many MiB as its u32 argument says; replies what it measured. */
int test_task_memcap_leak(pp_call *call, const void *arg, size_t len) {
  memcap_reply rep;
  size_t now = 0;
  uint32_t mib;
  void *p;

  if (len != sizeof(mib))
    return pp_fail(call, "memcap_leak: want a u32");
  memcpy(&mib, arg, sizeof(mib));
  uv_resident_set_memory(&now);
  rep.rss_before = now;
  p = malloc((size_t) mib * MIB);
  if (p == NULL)
    return pp_fail(call, "memcap_leak: out of memory");
  memset(p, 1, (size_t) mib * MIB);
  if (memcap_runs < sizeof(memcap_kept) / sizeof(memcap_kept[0]))
    memcap_kept[memcap_runs] = p;
  rep.runs = ++memcap_runs;
  uv_resident_set_memory(&now);
  rep.rss_after = now;
  rep.pid = (uint64_t) uv_os_getpid();
  return pp_reply(call, &rep, sizeof(rep));
}

static void memcap_run(int depth) {
  pp_pool_options opts;
  pp_pool_stats st;
  pp_input in[MEMCAP_TASKS];
  pp_result out[MEMCAP_TASKS];
  uint32_t mib = MEMCAP_LEAK_MIB;
  uint64_t max_after = 0;
  pp_pool *pool;
  int i, recycled_runs = 0;

  test_options(&opts);
  opts.workers = 2;
  opts.pipeline_depth = (unsigned) depth;
  opts.max_worker_memory = (size_t) MEMCAP_CAP;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < MEMCAP_TASKS; i++) {
    in[i].data = &mib;
    in[i].len = sizeof(mib);
  }
  ASSERT_EQ_INT(pp_map(pool, "memcap_leak", MEMCAP_TASKS, in, out), 0);
  for (i = 0; i < MEMCAP_TASKS; i++) {
    memcap_reply rep;
    ASSERT_STATUS(out[i], 0);
    ASSERT_EQ_INT(out[i].len, sizeof(rep));
    memcpy(&rep, out[i].data, sizeof(rep));
    /* A worker's first task may start over the cap (a sanitizer's own memory); after
     * that, none starts while its worker is over it. */
    if (rep.runs > 1)
      ASSERT_LE_INT((long long) (rep.rss_before / MIB), (long long) (MEMCAP_CAP / MIB));
    if (rep.rss_after > max_after)
      max_after = rep.rss_after;
    if (rep.runs == 1 && i >= 2)
      recycled_runs++;
    pp_result_free(&out[i]);
  }
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.failed, 0);
  ASSERT_EQ_U64(st.workers_lost, 0);
  /* 40 tasks of 40 MiB each under a 200 MiB cap: workers were recycled. */
  ASSERT_TRUE(st.workers_started > 2);
  ASSERT_TRUE(recycled_runs > 0);
  printf("depth %d: %d tasks of %d MiB, cap %llu MiB: %llu workers started, none lost; "
         "the largest worker reached %llu MiB\n", depth, MEMCAP_TASKS, MEMCAP_LEAK_MIB,
         (unsigned long long) (MEMCAP_CAP / MIB), (unsigned long long) st.workers_started,
         (unsigned long long) (max_after / MIB));
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

/* Items one by one, each checked. */
void test_memcap_recycles(void) { memcap_run(0); }

/* Tasks sent ahead to a worker that goes over the cap run elsewhere, once. */
void test_memcap_sent_ahead(void) {
  pp_pool_options opts;
  pp_future *f[MEMCAP_TASKS];
  uint32_t mib = MEMCAP_LEAK_MIB;
  pp_pool_stats st;
  pp_pool *pool;
  int i;

  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 8;
  opts.max_worker_memory = (size_t) MEMCAP_CAP;
  pool = NEW_POOL(NULL, &opts);
  for (i = 0; i < 16; i++)
    ASSERT_EQ_INT(pp_submit_future(pool, "memcap_leak", &mib, sizeof(mib), &f[i]), 0);
  for (i = 0; i < 16; i++) {
    memcap_reply rep;
    const pp_result *r;
    ASSERT_EQ_INT(pp_future_wait(f[i], -1), 0);
    r = pp_future_result(f[i]);
    ASSERT_STATUS(*r, 0);
    memcpy(&rep, r->data, sizeof(rep));
    if (rep.runs > 1)
      ASSERT_LE_INT((long long) (rep.rss_before / MIB), (long long) (MEMCAP_CAP / MIB));
    pp_future_free(f[i]);
  }
  ASSERT_EQ_INT(pp_pool_stats_get(pool, &st), 0);
  ASSERT_EQ_U64(st.done, 16);
  ASSERT_EQ_U64(st.failed, 0);
  ASSERT_EQ_U64(st.workers_lost, 0);
  ASSERT_TRUE(st.workers_started > 1);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}
