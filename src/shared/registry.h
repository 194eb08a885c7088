/* The process-wide record pp_main keeps (registry.c): the task table both sides read,
 * and whether this process is a worker. */
#ifndef PP_SHARED_REGISTRY_H
#define PP_SHARED_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "procpool.h"

/* Checks tasks and makes it this process's table, replacing any earlier one. 0, or
 * PP_EINVAL (or PP_ENOMEM) with what is wrong in why, e.g. "pp_main was given a
 * malformed task table: tasks 3 and 700 are both named 'x'"; the earlier table then
 * stays. */
int pp__table_set(const pp_task *tasks, char *why, size_t why_size);

/* 0 when tasks is a well-formed table (sets *count, when not NULL); else as
 * pp__table_set, and nothing is recorded. */
int pp__table_check(const pp_task *tasks, size_t *count, char *why, size_t why_size);

/* The table pp_main recorded, or NULL (count 0) when pp_main was not called. */
const pp_task *pp__table_get(size_t *count);

/* How many tasks the table has (0 without one). */
size_t pp__table_count(void);

/* The table's names, in its order (for the worker's HELLO). */
const char *const *pp__table_names(size_t *count);

/* The position of the task named by the len bytes at name, or -1. */
int pp__table_find(const char *name, size_t len);

/* This process serves tasks from now on, over channel (a descriptor or HANDLE). */
void pp__registry_serving(intptr_t channel);

/* Whether this process is serving tasks: a worker may not make or use pools (a pool a
 * fork worker inherited belongs to its parent). */
int pp__in_worker(void);

/* The worker's channel, or -1 outside a worker: for the tests that must break the
 * protocol on purpose. */
intptr_t pp__serve_channel(void);

#endif
