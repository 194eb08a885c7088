/* Workers that break the protocol: a task writes a malformed frame straight into its
 * channel, then waits. The pool must kill that worker, fail that task with PP_EPROTO and
 * a message that says what was wrong, and go on with a new worker. */
#include <string.h>

#include "test.h"
#include "../src/shared/protocol.h"
#include "../src/shared/registry.h"

#ifndef _WIN32
#  include <unistd.h>
#endif

enum { BAD_TYPE, BAD_FLAGS, BAD_LENGTH, BAD_ID, BAD_KIND, BAD_HELLO_LATE, BAD_SHM_LEN,
       BAD_SHM_ARG, BAD_SHM_BOUNDS };

int test_task_send_garbage(pp_call *call, const void *arg, size_t len) {
#ifdef _WIN32
  (void) arg;
  (void) len;
  return pp_fail(call, "send_garbage is for Unix");
#else
  uint8_t frame[PP__HDR_SIZE + PP__SHM_RESULT_SIZE];
  size_t flen = PP__HDR_SIZE + 4;
  pp__shm_result sr;
  int how;
  ssize_t r;

  if (len != sizeof(how))
    return pp_fail(call, "send_garbage wants an int");
  memcpy(&how, arg, sizeof(how));
  memset(frame, 0, sizeof(frame));
  switch (how) {
    case BAD_TYPE: pp__hdr_encode(frame, 99, 0, 0, 4); break;
    case BAD_FLAGS: pp__hdr_encode(frame, PP__F_RESULT, 0, 0, 4); frame[5] = 0x80; break;
    case BAD_SHM_LEN:
      pp__hdr_encode(frame, PP__F_RESULT, 0, 1, 4);
      pp__hdr_set_flags(frame, PP__FL_SHM);
      break;
    case BAD_SHM_ARG:
    case BAD_SHM_BOUNDS:
      /* A result "in shared memory": in an argument segment the task never had, or past
       * the end of a result segment. */
      memset(&sr, 0, sizeof(sr));
      sr.where = how == BAD_SHM_ARG ? 0 : 1;
      sr.size = (uint64_t) 1 << 20;
      sr.off = how == BAD_SHM_BOUNDS ? 0 : PP__SHM_RESULT_HDR;
      sr.len = how == BAD_SHM_BOUNDS ? sr.size : 16;
      pp__hdr_encode(frame, PP__F_RESULT, 0, 1, PP__SHM_RESULT_SIZE);
      pp__hdr_set_flags(frame, PP__FL_SHM);
      pp__shm_result_encode(frame + PP__HDR_SIZE, &sr);
      flen = sizeof(frame);
      break;
    case BAD_LENGTH: pp__hdr_encode(frame, PP__F_RESULT, 0, 0, 0xFFFFFFF0u); break;
    case BAD_ID: pp__hdr_encode(frame, PP__F_RESULT, 0, 999999, 4); break;
    case BAD_KIND: pp__hdr_encode(frame, PP__F_RESULT, 77, 1, 4); break;
    default: pp__hdr_encode(frame, PP__F_HELLO, 0, 0, 4); break;
  }
  /* A task has no way to learn its id, but these tests run it first in a new pool,
   * whose first id is 1: BAD_KIND names it, BAD_ID does not. */
  r = write((int) pp__serve_channel(), frame, flen);
  (void) r;
  for (;;)
    uv_sleep(1000);
#endif
}

static void garbage(int how, const char *what) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;

#ifdef _WIN32
  test_skip("the test writes to the channel with write(2)");
#endif
  test_options(&opts);
  opts.workers = 1;
  pool = NEW_POOL(NULL, &opts);
  APPLY(pool, "send_garbage", &how, sizeof(how), &r);
  ASSERT_STATUS(r, PP_EPROTO);
  ASSERT_CONTAINS(r.message, "malformed");
  ASSERT_CONTAINS(r.message, what);
  pp_result_free(&r);
  /* The pool goes on, with a new worker. */
  APPLY(pool, "echo", "ok", 3, &r);
  ASSERT_STATUS(r, 0);
  ASSERT_EQ_STR((const char *) r.data, "ok");
  pp_result_free(&r);
  ASSERT_EQ_INT(pp_pool_close(pool, NULL, NULL), 0);
}

void test_proto_bad_type(void) { garbage(BAD_TYPE, "unknown type"); }
void test_proto_bad_flags(void) { garbage(BAD_FLAGS, "unknown flags"); }
void test_proto_bad_length(void) { garbage(BAD_LENGTH, "longer than the limit"); }
void test_proto_bad_id(void) { garbage(BAD_ID, "not given"); }
void test_proto_bad_kind(void) { garbage(BAD_KIND, "unknown kind"); }
void test_proto_late_hello(void) { garbage(BAD_HELLO_LATE, "out of order"); }
void test_proto_bad_shm(void) {
  garbage(BAD_SHM_LEN, "shared memory of the wrong kind or length");
  garbage(BAD_SHM_ARG, "out of the argument's bounds");
  garbage(BAD_SHM_BOUNDS, "out of its segment's bounds");
}
