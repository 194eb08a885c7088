/* What pp_main records in every process, the pool's and the workers' alike: the program's
 * task table (checked, with its names indexed), and whether this process serves tasks.
 * The worker reads it to run tasks and greet the pool; the pool reads it to turn names
 * into numbers and to refuse pools made inside a worker. */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "protocol.h"

/* The program's task table, recorded by pp_main in every process, with its names in one
 * array (for the HELLO) and their index (for the initializer's lookup). */
static const pp_task *pp__table;
static size_t pp__ntasks;
static const char **pp__table_names_arr;
static pp__names pp__table_index;
static int pp__serving;

static intptr_t pp__channel = -1;

int pp__in_worker(void) { return pp__serving; }

intptr_t pp__serve_channel(void) { return pp__channel; }

void pp__registry_serving(intptr_t channel) {
  pp__serving = 1;
  pp__channel = channel;
}


/* What every message about a bad table starts with (but a NULL table's). */
#define PP__TABLE_BAD "pp_main was given a malformed task table: "

/* Checks the table and indexes its names. On success *names (malloc'd) and *ix are the
 * caller's; on failure nothing is left and why says what is wrong, in words a person can
 * act on. */
static int pp__table_load(const pp_task *tasks, size_t *count, const char ***names,
                          pp__names *ix, char *why, size_t why_size) {
  const char **arr;
  size_t n, i, first = 0, second = 0;
  int err;

  if (tasks == NULL) {
    snprintf(why, why_size, "pp_main was given no task table (NULL)");
    return PP_EINVAL;
  }
  for (n = 0; tasks[n].name != NULL; n++) {
    size_t len;
    if (n == PP__MAX_TASKS) {
      snprintf(why, why_size, PP__TABLE_BAD "it has more than %d tasks", PP__MAX_TASKS);
      return PP_EINVAL;
    }
    len = strlen(tasks[n].name);
    if (len == 0) {
      snprintf(why, why_size, PP__TABLE_BAD "task %zu's name is empty", n);
      return PP_EINVAL;
    }
    if (len > PP__MAX_NAME) {
      snprintf(why, why_size,
               PP__TABLE_BAD "task %zu's name is longer than %d bytes (%zu: '%.32s...')", n,
               PP__MAX_NAME, len, tasks[n].name);
      return PP_EINVAL;
    }
    if (tasks[n].fn == NULL) {
      snprintf(why, why_size, PP__TABLE_BAD "task %zu ('%s') has no function", n,
               tasks[n].name);
      return PP_EINVAL;
    }
  }
  arr = malloc((n + 1) * sizeof(*arr));
  if (arr == NULL) {
    snprintf(why, why_size, "pp_main: out of memory for a task table of %zu tasks", n);
    return PP_ENOMEM;
  }
  for (i = 0; i < n; i++)
    arr[i] = tasks[i].name;
  err = pp__names_init(ix, arr, n, &first, &second);
  if (err != 0) {
    if (err == PP_EINVAL)
      snprintf(why, why_size, PP__TABLE_BAD "tasks %zu and %zu are both named '%s'", first,
               second, tasks[first].name);
    else
      snprintf(why, why_size, "pp_main: out of memory for a task table of %zu tasks", n);
    free(arr);
    return err;
  }
  *count = n;
  *names = arr;
  return 0;
}

int pp__table_check(const pp_task *tasks, size_t *count, char *why, size_t why_size) {
  const char **names;
  pp__names ix;
  size_t n;
  int err = pp__table_load(tasks, &n, &names, &ix, why, why_size);

  if (err != 0)
    return err;
  pp__names_free(&ix);
  free(names);
  if (count != NULL)
    *count = n;
  return 0;
}

const pp_task *pp__table_get(size_t *count) {
  *count = pp__ntasks;
  return pp__table;
}

int pp__table_find(const char *name, size_t len) {
  uint32_t index;

  return pp__names_find(&pp__table_index, name, len, &index) == 0 ? (int) index : -1;
}

size_t pp__table_count(void) { return pp__ntasks; }

const char *const *pp__table_names(size_t *count) {
  *count = pp__ntasks;
  return pp__table_names_arr;
}

int pp__table_set(const pp_task *tasks, char *why, size_t why_size) {
  const char **names;
  pp__names ix;
  size_t n;
  int err = pp__table_load(tasks, &n, &names, &ix, why, why_size);

  if (err != 0)
    return err;
  /* A second call replaces the table; pools made since the first keep their own copy
   * of the names. */
  pp__names_free(&pp__table_index);
  free(pp__table_names_arr);
  pp__table = tasks;
  pp__ntasks = n;
  pp__table_names_arr = names;
  pp__table_index = ix;
  return 0;
}

