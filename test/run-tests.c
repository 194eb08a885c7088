/* The test program, and the worker program of every pool it makes: main() hands it to
 * pp_main first. Then it runs what its command line names:
 *   run-tests <test> spawn|fork|forkserver   a TEST_EACH test of test-list.h
 *   run-tests <test>                         a TEST_ONCE test
 *   run-tests @<role> ...                    a helper process that a test starts
 * A test passes by returning, fails with status 1, skips with 77; a command line that
 * names nothing known is status 99, which meson reports as an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define TEST_USAGE_ERROR 99

pp_start_method test_method = PP_START_DEFAULT;

typedef struct test_entry {
  const char *name;
  void (*fn)(void);
  int each;
} test_entry;

static const test_entry tests[] = {
#define TEST_EACH(name) { #name, test_##name, 1 },
#define TEST_ONCE(name) { #name, test_##name, 0 },
#include "test-list.h"
#undef TEST_EACH
#undef TEST_ONCE
};

typedef struct helper_entry {
  const char *name;
  int (*fn)(int argc, char **argv);
} helper_entry;

/* A child of the test's own, for foreign-child: its exit status must reach the test. */
static int helper_exit7(int argc, char **argv) {
  (void) argc;
  (void) argv;
  return 7;
}

static const helper_entry helpers[] = {
  { "@exit7", helper_exit7 },
  { "@orphan-parent", test_helper_orphan_parent },
  { "@orphan-busy", test_helper_orphan_busy },
  { "@odd-path", test_helper_odd_path },
  { "@fs-kept", test_helper_fs_kept },
  { "@launch", test_helper_launch },
#ifdef _WIN32
  { "@win-job-parent", test_helper_win_job_parent },
  { "@win-churn", test_helper_win_churn },
#endif
};

/* The parent sets these for the workers it is about to start. They stand for a program
 * whose start-up misbehaves before it reaches pp_main, so they are read before it. */
static int env_is_1(const char *name) {
  char buf[4];
  size_t size = sizeof(buf);

  return uv_os_getenv(name, buf, &size) == 0 && strcmp(buf, "1") == 0;
}

/* Stuck for good, as far as the pool can tell; but a pool that fails to kill it must not
 * leave it behind once the test is over: it ends when its parent does. */
static void hang(void) {
  uv_pid_t parent = uv_os_getppid();

  while (uv_os_getppid() == parent)
    uv_sleep(100);
  exit(6);
}

static int usage(const char *why) {
  size_t i;

  fprintf(stderr, "run-tests: %s\nusage: run-tests <test> [spawn|fork|forkserver]\n"
                  "tests (* once per start method):\n", why);
  for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
    fprintf(stderr, "  %s%s\n", tests[i].name, tests[i].each ? " *" : "");
  return TEST_USAGE_ERROR;
}

static int parse_method(const char *s, pp_start_method *m) {
  static const pp_start_method methods[] = { PP_START_SPAWN, PP_START_FORK,
                                             PP_START_FORKSERVER };
  size_t i;

  for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
    if (strcmp(s, pp_start_method_name(methods[i])) == 0) {
      *m = methods[i];
      return 0;
    }
  return -1;
}

int main(int argc, char **argv) {
  char name[64];
  size_t i;
  int err;

  if (env_is_1("PP_TEST_HANG_BEFORE_MAIN"))
    hang();
  if (env_is_1("PP_TEST_EXIT_BEFORE_MAIN"))
    exit(5);
  err = pp_main(argc, argv, test_worker_table());
  if (err != 0) {
    fprintf(stderr, "run-tests: pp_main failed: %s (%s)\n", pp_strerror(err),
            pp_errname(err));
    return 1;
  }

  if (argc < 2)
    return usage("no test named");
  for (i = 0; i < sizeof(helpers) / sizeof(helpers[0]); i++)
    if (strcmp(argv[1], helpers[i].name) == 0)
      return helpers[i].fn(argc, argv);

  /* meson's names have dashes where the C names have underscores; take either. */
  if (strlen(argv[1]) >= sizeof(name))
    return usage("test name too long");
  for (i = 0; argv[1][i] != '\0'; i++)
    name[i] = argv[1][i] == '-' ? '_' : argv[1][i];
  name[i] = '\0';
  for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
    if (strcmp(name, tests[i].name) == 0)
      break;
  if (i == sizeof(tests) / sizeof(tests[0]))
    return usage("unknown test");
  if (tests[i].each) {
    if (argc != 3 || parse_method(argv[2], &test_method) != 0)
      return usage("this test needs a start method: spawn, fork or forkserver");
  } else if (argc != 2) {
    return usage("this test takes no start method");
  }

  tests[i].fn();
  return 0;
}
