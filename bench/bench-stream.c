/* The stream at scale (issue 12): 2,000,000 items (--items N) through pp_map_stream, in
 * order and unordered, with one item in the middle that fails, under every start method;
 * then pp_map over the same items, in the same run. For each, it checks that every index
 * came once, that only the failing item failed, and that the counters add up, and prints
 * the rate and the growth of the process's peak resident memory (Linux; measured around
 * the first stream, before anything else made the process big). Exits 1 on any wrong
 * result. Its own worker program. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

#define BAD_ITEM 0xFFFFFFFFu

static int task_check(pp_call *call, const void *arg, size_t len) {
  uint32_t v;

  if (len != sizeof(v))
    return pp_fail(call, "want 4 bytes");
  memcpy(&v, arg, sizeof(v));
  if (v == BAD_ITEM)
    return pp_fail(call, "the one item that fails");
  v ^= 0x5a5a5a5au;
  return pp_reply(call, &v, sizeof(v));
}

static const pp_task tasks[] = { { "check", task_check }, { NULL, NULL } };

typedef struct run {
  size_t n, next, bad_at, wrong, failed;
  uint8_t *seen;
  uint32_t word;
} run;

static int on_next(void *user, pp_input *in) {
  run *r = (run *) user;

  if (r->next == r->n)
    return 0;
  r->word = r->next == r->bad_at ? BAD_ITEM : (uint32_t) r->next;
  r->next++;
  in->data = &r->word;
  in->len = sizeof(r->word);
  return 1;
}

static void on_each(void *user, size_t index, pp_result *res) {
  run *r = (run *) user;
  uint32_t v;

  if (index >= r->n || r->seen[index]++) {
    r->wrong++;
    return;
  }
  if (index == r->bad_at) {
    if (res->status != PP_ETASK)
      r->wrong++;
    r->failed++;
    return;
  }
  if (res->status != 0 || res->len != sizeof(v)) {
    r->wrong++;
    return;
  }
  memcpy(&v, res->data, sizeof(v));
  if (v != ((uint32_t) index ^ 0x5a5a5a5au))
    r->wrong++;
}

static long peak_kib(void) {
  uv_rusage_t ru;

  return uv_getrusage(&ru) == 0 ? (long) ru.ru_maxrss : 0;
}

int main(int argc, char **argv) {
  static const pp_start_method methods[] = { PP_START_FORK, PP_START_SPAWN,
                                             PP_START_FORKSERVER };
  size_t n = 2000000, i, k;
  int bad = 0;

  if (pp_main(argc, argv, tasks) != 0)
    return 1;
  if (argc > 2 && strcmp(argv[1], "--items") == 0)
    n = (size_t) strtoul(argv[2], NULL, 10);
  printf("%zu items of 4 bytes, 2 workers, item %zu fails; items/s\n", n, n / 2);
  printf("%-11s %14s %14s %14s %9s %13s\n", "method", "in order", "unordered", "pp_map",
         "order/map", "peak growth");
  for (k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
    pp_pool_options opts;
    pp_pool *pool;
    pp_pool_stats st;
    double rate[3];
    long before = 0, growth = 0;
    int flags;

    pp_pool_options_init(&opts);
    opts.start_method = methods[k];
    opts.workers = 2;
    if (pp_pool_new(&pool, NULL, &opts) != 0) {
      printf("%-11s not available here\n", pp_start_method_name(methods[k]));
      continue;
    }
    for (flags = 0; flags < 2; flags++) {
      run r;
      uint64_t t0;
      int status;
      memset(&r, 0, sizeof(r));
      r.n = n;
      r.bad_at = n / 2;
      r.seen = calloc(n, 1);
      if (r.seen == NULL)
        return 1;
      if (k == 0 && flags == 0)
        before = peak_kib();
      t0 = uv_hrtime();
      status = pp_map_stream(pool, "check", on_next, on_each, &r,
                             flags ? PP_MAP_UNORDERED : 0);
      rate[flags] = (double) n / ((double) (uv_hrtime() - t0) / 1e9);
      if (k == 0 && flags == 0)
        growth = peak_kib() - before;
      for (i = 0; i < n; i++)
        if (r.seen[i] != 1)
          r.wrong++;
      if (status != PP_ETASK || r.wrong != 0 || r.failed != 1) {
        fprintf(stderr, "bench-stream: %s %s: status %s, %zu wrong, %zu failed\n",
                pp_start_method_name(methods[k]), flags ? "unordered" : "in order",
                pp_errname(status), r.wrong, r.failed);
        bad = 1;
      }
      free(r.seen);
    }
    {
      pp_input *in = malloc(n * sizeof(*in));
      uint32_t *words = malloc(n * sizeof(*words));
      pp_result *out = malloc(n * sizeof(*out));
      uint64_t t0;
      if (in == NULL || words == NULL || out == NULL)
        return 1;
      for (i = 0; i < n; i++) {
        words[i] = i == n / 2 ? BAD_ITEM : (uint32_t) i;
        in[i].data = &words[i];
        in[i].len = sizeof(words[i]);
      }
      t0 = uv_hrtime();
      if (pp_map(pool, "check", n, in, out) != PP_ETASK) {
        fprintf(stderr, "bench-stream: pp_map did not report the failing item\n");
        bad = 1;
      }
      rate[2] = (double) n / ((double) (uv_hrtime() - t0) / 1e9);
      for (i = 0; i < n; i++)
        pp_result_free(&out[i]);
      free(in);
      free(words);
      free(out);
    }
    if (pp_pool_stats_get(pool, &st) != 0 || st.submitted != 3 * (uint64_t) n ||
        st.done != st.submitted || st.failed != 3 || st.queued != 0 || st.running != 0) {
      fprintf(stderr, "bench-stream: %s: counters do not add up: %llu submitted, %llu done, "
              "%llu failed, %llu queued, %llu running\n", pp_start_method_name(methods[k]),
              (unsigned long long) st.submitted, (unsigned long long) st.done,
              (unsigned long long) st.failed, (unsigned long long) st.queued,
              (unsigned long long) st.running);
      bad = 1;
    }
    pp_pool_close(pool, NULL, NULL);
    printf("%-11s %14.0f %14.0f %14.0f %8.2fx", pp_start_method_name(methods[k]), rate[0],
           rate[1], rate[2], rate[0] / rate[2]);
    if (k == 0)
      printf(" %10ld KiB", growth);
    printf("\n");
  }
  return bad;
}
