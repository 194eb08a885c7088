/* The reader of /proc/<pid>/stat that the tests (test.h) and the soak (bench/soak.c)
 * share. */
#ifndef PP_TEST_PROCSTAT_H
#define PP_TEST_PROCSTAT_H

/* From /proc (Linux): process pid's parent, and its state letter in *state (may be
 * NULL); -1 when it cannot be read (gone, or not Linux). */
long test_proc_stat(long pid, char *state);

#endif
