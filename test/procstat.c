/* See procstat.h. */
#include <stdio.h>
#include <string.h>

#include "procstat.h"

long test_proc_stat(long pid, char *state) {
#ifdef __linux__
  char path[64], buf[1024], st;
  FILE *f;
  size_t n;
  const char *p;
  long ppid;

  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  f = fopen(path, "re");
  if (f == NULL)
    return -1;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The name in parentheses may hold anything: the fields follow the last ')'. */
  p = strrchr(buf, ')');
  if (p == NULL || sscanf(p + 1, " %c %ld", &st, &ppid) != 2)
    return -1;
  if (state != NULL)
    *state = st;
  return ppid;
#else
  (void) pid;
  (void) state;
  return -1;
#endif
}
