/* Several tasks in flight per worker, and pp_map's batches: what the pipelining and the
 * batching code paths must keep exact, whatever the sizes of the frames around them. */
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* Between half the worker's read buffer and all of it: such a frame, with others read
 * along with it, once made the worker's reader overrun. */
#define MID_ARG 40000
#define MID_N 64

static void fill(unsigned char *p, size_t len, unsigned seed) {
  size_t i;

  for (i = 0; i < len; i++)
    p[i] = (unsigned char) (seed * 31u + i * 7u);
}

void test_pipeline_mid_args(void) {
  pp_pool_options opts;
  pp_pool *pool;
  uv_loop_t loop;
  unsigned char *args;
  test_rec recs[MID_N];
  size_t i;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  test_options(&opts);
  opts.workers = 1;
  opts.pipeline_depth = 32;
  pool = NEW_POOL(&loop, &opts);
  args = (unsigned char *) malloc((size_t) MID_N * MID_ARG);
  ASSERT_NOT_NULL(args);
  for (i = 0; i < MID_N; i++) {
    /* Sizes around the boundary, so frames land at every offset in the buffer. */
    size_t len = MID_ARG - i * 97;
    fill(args + i * MID_ARG, len, (unsigned) i);
    ASSERT_EQ_INT(test_submit(pool, "echo", args + i * MID_ARG, len, &recs[i]), 0);
  }
  for (i = 0; i < MID_N; i++) {
    size_t len = MID_ARG - i * 97;
    test_run_until(&loop, &recs[i].calls, 1, "a pipelined echo");
    ASSERT_STATUS(recs[i].res, 0);
    ASSERT_EQ_MEM(recs[i].res.data, recs[i].res.len, args + i * MID_ARG, len);
    pp_result_free(&recs[i].res);
  }
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  free(args);
}

#define MAP_MIXED 3000

/* A map big enough to be batched, with items of every size, a few over a batch's byte
 * budget, and some that fail: each result lands at its own index, with its own id. */
void test_map_batches(void) {
  pp_pool *pool;
  pp_pool_options opts;
  pp_input *in;
  pp_result *out;
  unsigned char *buf;
  size_t *lens, off = 0, i;
  uint64_t *ids;

  test_options(&opts);
  opts.workers = 2;
  pool = NEW_POOL(NULL, &opts);
  in = (pp_input *) malloc(MAP_MIXED * sizeof(*in));
  out = (pp_result *) malloc(MAP_MIXED * sizeof(*out));
  lens = (size_t *) malloc(MAP_MIXED * sizeof(*lens));
  ids = (uint64_t *) malloc(MAP_MIXED * sizeof(*ids));
  ASSERT_TRUE(in != NULL && out != NULL && lens != NULL && ids != NULL);
  for (i = 0; i < MAP_MIXED; i++) {
    lens[i] = i % 500 == 7 ? 300000 : i % 13 == 0 ? 0 : (i * 37) % 2000;
    off += lens[i];
  }
  buf = (unsigned char *) malloc(off);
  ASSERT_NOT_NULL(buf);
  off = 0;
  for (i = 0; i < MAP_MIXED; i++) {
    fill(buf + off, lens[i], (unsigned) i);
    in[i].data = lens[i] ? buf + off : NULL;
    in[i].len = lens[i];
    off += lens[i];
  }
  ASSERT_EQ_INT(pp_map(pool, "echo", MAP_MIXED, in, out), 0);
  for (i = 0; i < MAP_MIXED; i++) {
    ASSERT_STATUS(out[i], 0);
    ASSERT_EQ_MEM(out[i].data, out[i].len, in[i].data, in[i].len);
    ids[i] = out[i].id;
    pp_result_free(&out[i]);
  }
  ASSERT_DISTINCT(ids, MAP_MIXED);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
  free(buf);
  free(ids);
  free(lens);
  free(out);
  free(in);
}
