/* The problem procpool exists for, in one screen: what a worker sees of its parent's
 * state under each start method. The parent changes a global and fills a heap block
 * after the program started; a fork worker inherits both, a spawned one (Windows' only
 * way) starts from the program's initial state. The initializer is the portable way to
 * hand state to workers: it arrives the same way under every method.
 *
 * Run it as is, then with PROCPOOL_START_METHOD=spawn to see Windows' behaviour on this
 * OS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <procpool.h>
#include <uv.h>

static int level = 1;              /* the program's initial value */
static char *note = NULL;          /* the parent fills it on the heap */
static int shipped = 0;            /* what the initializer received */

static int init(pp_call *call, const void *arg, size_t len) {
  if (len != sizeof(shipped))
    return pp_fail(call, "initializer: expected %zu bytes, got %zu", sizeof(shipped), len);
  memcpy(&shipped, arg, len);
  return 0;
}

static int read_level(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  return pp_reply(call, &level, sizeof(level));
}

static int read_shipped(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  return pp_reply(call, &shipped, sizeof(shipped));
}

static int read_ppid(pp_call *call, const void *arg, size_t len) {
  uv_pid_t ppid = uv_os_getppid();
  (void) arg;
  (void) len;
  return pp_reply(call, &ppid, sizeof(ppid));
}

static int read_note(pp_call *call, const void *arg, size_t len) {
  (void) arg;
  (void) len;
  return note ? pp_reply(call, note, strlen(note) + 1) : pp_reply(call, "(NULL)", 7);
}

static const pp_task tasks[] = {
  { "init", init },
  { "read_level", read_level },
  { "read_shipped", read_shipped },
  { "read_ppid", read_ppid },
  { "read_note", read_note },
  { NULL, NULL },
};

#define NROWS 5
#define NMETHODS 3

static const char *const row_names[NROWS] = {
  "global the parent changed",
  "initializer's argument",
  "worker's parent is this process",
  "heap block via a global pointer",
  "replacement sees later changes",
};

static int get_int(pp_pool *pool, const char *task, int *value, char *cell, size_t size) {
  pp_result r;
  int err = pp_apply(pool, task, NULL, 0, &r);

  if (err == 0 && r.len == sizeof(int))
    memcpy(value, r.data, sizeof(int));
  else if (err == 0)
    err = PP_EPROTO;
  if (err != 0)
    snprintf(cell, size, "%s", pp_errname(err));
  if (err != 0 && r.message != NULL)
    fprintf(stderr, "demo: %s\n", r.message);
  pp_result_free(&r);
  return err;
}

/* Fills one column: the cells for one start method. */
static void run_method(pp_start_method m, char cells[NROWS][32], char *used, size_t used_size) {
  pp_pool_options opts;
  pp_pool *pool;
  pp_result r;
  int value, err, before;
  uv_pid_t ppid;
  int i;

  pp_pool_options_init(&opts);
  opts.workers = 1;
  opts.start_method = m;
  opts.initializer = "init";
  opts.initarg = &level;
  opts.initarg_len = sizeof(level);
  /* One task per worker, so the last row's second task runs in a new worker. */
  opts.max_tasks_per_worker = 1;
  err = pp_pool_new(&pool, NULL, &opts);
  if (err != 0) {
    for (i = 0; i < NROWS; i++)
      snprintf(cells[i], sizeof(cells[i]), "n/a");
    snprintf(used, used_size, "%s: %s", pp_start_method_name(m), pp_errname(err));
    return;
  }
  snprintf(used, used_size, "%s", pp_start_method_name(pp_pool_start_method(pool)));

  if (get_int(pool, "read_level", &value, cells[0], sizeof(cells[0])) == 0)
    snprintf(cells[0], sizeof(cells[0]), "%d", value);
  if (get_int(pool, "read_shipped", &value, cells[1], sizeof(cells[1])) == 0)
    snprintf(cells[1], sizeof(cells[1]), "%d", value);

  err = pp_apply(pool, "read_ppid", NULL, 0, &r);
  if (err == 0 && r.len == sizeof(ppid)) {
    memcpy(&ppid, r.data, sizeof(ppid));
    snprintf(cells[2], sizeof(cells[2]), "%s", ppid == uv_os_getpid() ? "yes" : "no");
  } else {
    snprintf(cells[2], sizeof(cells[2]), "%s", pp_errname(err));
  }
  pp_result_free(&r);

  err = pp_apply(pool, "read_note", NULL, 0, &r);
  if (err == 0)
    snprintf(cells[3], sizeof(cells[3]), "%s",
             strcmp((char *) r.data, "(NULL)") == 0 ? "NULL" : "a copy");
  else
    snprintf(cells[3], sizeof(cells[3]), "%s", pp_errname(err));
  pp_result_free(&r);

  /* The parent changes the global again. The worker that runs the next task was started
   * before the change; the one after it is its replacement, started after. */
  before = level;
  level = 43;
  if (get_int(pool, "read_level", &value, cells[4], sizeof(cells[4])) == 0 &&
      get_int(pool, "read_level", &value, cells[4], sizeof(cells[4])) == 0)
    snprintf(cells[4], sizeof(cells[4]), "%s (%d)", value == 43 ? "yes" : "no", value);
  level = before;

  pp_pool_close(pool, NULL, NULL);
}

int main(int argc, char **argv) {
  static const pp_start_method methods[NMETHODS] = { PP_START_FORK, PP_START_FORKSERVER,
                                                     PP_START_SPAWN };
  char cells[NMETHODS][NROWS][32];
  char used[NMETHODS][64];
  char env[64];
  size_t size = sizeof(env);
  int i, j;

  /* First, before anything else: in a worker this never returns. */
  if (pp_main(argc, argv, tasks) != 0) {
    fprintf(stderr, "demo: bad task table\n");
    return 1;
  }

  level = 42;
  note = malloc(32);
  if (note == NULL)
    return 1;
  snprintf(note, 32, "filled by the parent");

  for (i = 0; i < NMETHODS; i++)
    run_method(methods[i], cells[i], used[i], sizeof(used[i]));

  printf("What a worker sees. The parent set the global 'level' from 1 to 42 and\n"
         "filled a heap block before starting each pool; the initializer ships 42.\n");
  if (uv_os_getenv("PROCPOOL_START_METHOD", env, &size) == 0)
    printf("PROCPOOL_START_METHOD=%s overrides every pool (the header row shows the\n"
           "method asked for -> the method used).\n", env);
  printf("\n%-34s", "");
  for (i = 0; i < NMETHODS; i++) {
    char head[40];
    if (strcmp(used[i], pp_start_method_name(methods[i])) == 0)
      snprintf(head, sizeof(head), "%.16s", used[i]);
    else if (strchr(used[i], ':') != NULL)
      snprintf(head, sizeof(head), "%.16s", pp_start_method_name(methods[i]));
    else
      snprintf(head, sizeof(head), "%.12s->%.12s", pp_start_method_name(methods[i]), used[i]);
    printf("%-20s", head);
  }
  printf("\n");
  for (j = 0; j < NROWS; j++) {
    printf("%-34s", row_names[j]);
    for (i = 0; i < NMETHODS; i++)
      printf("%-20s", cells[i][j]);
    printf("\n");
  }
  for (i = 0; i < NMETHODS; i++)
    if (strchr(used[i], ':') != NULL)
      printf("\n%s: not available here (%s).", pp_start_method_name(methods[i]),
             strchr(used[i], ':') + 2);
  printf("\n");
  free(note);
  return 0;
}
