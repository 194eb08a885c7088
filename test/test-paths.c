/* A program whose path has spaces and non-ASCII characters in it still re-executes
 * itself as its workers (spawn, and the forkserver), and a worker_executable such as that
 * works too: libuv hands the path over in UTF-8 (UTF-16 on Windows), quoted. The test
 * copies itself into such a place and runs the copy, which makes a pool and uses it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#ifdef _WIN32
#  define EXE_SUFFIX ".exe"
#else
#  define EXE_SUFFIX ""
#endif

/* "procpool dir é ü" and "run tests ñ": UTF-8 spelled out, whatever the source's
 * encoding. */
#define ODD_DIR "procpool dir \xc3\xa9 \xc3\xbc"
#define ODD_EXE "run tests \xc3\xb1" EXE_SUFFIX

/* The copy's part: a pool of the method named by argv[2], one task, exit 0 on success.
 * The worker program is this one, or the one PP_TEST_ODD_WORKER names: the environment,
 * not argv, because Windows hands main() its arguments in the ANSI code page, not in
 * UTF-8, and the path must arrive intact. */
int test_helper_odd_path(int argc, char **argv) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  char worker[4096];
  size_t wsize = sizeof(worker);
  int err;

  if (argc != 3)
    return 2;
  pp_pool_options_init(&opts);
  opts.workers = 1;
  opts.start_method = strcmp(argv[2], "fork") == 0         ? PP_START_FORK
                      : strcmp(argv[2], "forkserver") == 0 ? PP_START_FORKSERVER
                                                           : PP_START_SPAWN;
  if (uv_os_getenv("PP_TEST_ODD_WORKER", worker, &wsize) == 0)
    opts.worker_executable = worker;
  err = pp_pool_new(&pool, NULL, &opts);
  if (err == PP_ENOTSUP)
    return 77;
  if (err != 0) {
    fprintf(stderr, "odd path: pp_pool_new: %s\n", pp_errname(err));
    return 3;
  }
  err = pp_apply(pool, "echo", "odd", 3, &r);
  if (err != 0 || r.len != 3 || memcmp(r.data, "odd", 3) != 0) {
    fprintf(stderr, "odd path: %s: %s\n", pp_errname(err), r.message ? r.message : "");
    return 4;
  }
  pp_result_free(&r);
  return pp_pool_close(pool, NULL, NULL) == 0 ? 0 : 5;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  int *out = (int *) p->data;
  *out = sig ? 128 + sig : (int) status;
  uv_close((uv_handle_t *) p, NULL);
}

/* Runs copy with the helper role, its workers being worker (NULL: itself); returns its
 * exit status. */
static int run_copy(const char *copy, const char *worker) {
  uv_loop_t loop;
  uv_process_t proc;
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  char *args[4];
  int status = -1;

  ASSERT_EQ_INT(uv_loop_init(&loop), 0);
  args[0] = (char *) copy;
  args[1] = (char *) "@odd-path";
  args[2] = (char *) pp_start_method_name(test_method);
  args[3] = NULL;
  if (worker != NULL)
    test_setenv("PP_TEST_ODD_WORKER", worker);
  else
    uv_os_unsetenv("PP_TEST_ODD_WORKER");
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  memset(&po, 0, sizeof(po));
  po.file = copy;
  po.args = args;
  po.exit_cb = on_exit_cb;
  po.stdio = stdio;
  po.stdio_count = 3;
  proc.data = &status;
  ASSERT_EQ_INT(uv_spawn(&loop, &proc, &po), 0);
  uv_os_unsetenv("PP_TEST_ODD_WORKER");
  test_run_loop(&loop);
  ASSERT_EQ_INT(uv_loop_close(&loop), 0);
  return status;
}

void test_odd_path(void) {
  char self[4096], dir[4096], copy[4200];
  size_t size = sizeof(self);
  uv_fs_t req;
  int status;

  if (test_method == PP_START_FORK)
    test_skip("fork does not execute the program again");
  ASSERT_EQ_INT(uv_exepath(self, &size), 0);
  size = sizeof(dir);
  ASSERT_EQ_INT(uv_os_tmpdir(dir, &size), 0);
  snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/" ODD_DIR " %ld",
           (long) uv_os_getpid());
  /* A run that failed half-way may have left the directory (pids repeat under wine). */
  status = uv_fs_mkdir(NULL, &req, dir, 0700, NULL);
  uv_fs_req_cleanup(&req);
  if (status != UV_EEXIST)
    ASSERT_EQ_INT(status, 0);
  snprintf(copy, sizeof(copy), "%s/" ODD_EXE, dir);
  ASSERT_EQ_INT(uv_fs_copyfile(NULL, &req, self, copy, 0, NULL), 0);
  uv_fs_req_cleanup(&req);

  /* The copy re-executes itself as its workers... */
  status = run_copy(copy, NULL);
  if (status != 77)
    ASSERT_EQ_INT(status, 0);
  /* ...and this program's copy serves as another's worker_executable. */
  status = run_copy(self, copy);
  if (status != 77)
    ASSERT_EQ_INT(status, 0);

  uv_fs_unlink(NULL, &req, copy, NULL);
  uv_fs_req_cleanup(&req);
  uv_fs_rmdir(NULL, &req, dir, NULL);
  uv_fs_req_cleanup(&req);
}
