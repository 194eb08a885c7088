#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "procpool.h"

typedef struct pp__errdesc {
  int code;
  const char *name;
  const char *text;
} pp__errdesc;

static const pp__errdesc pp__errors[] = {
  { PP_EINVAL, "PP_EINVAL", "invalid argument, option or call" },
  { PP_ENOMEM, "PP_ENOMEM", "out of memory" },
  { PP_ENOTSUP, "PP_ENOTSUP", "start method not available on this OS" },
  { PP_ENOTASK, "PP_ENOTASK", "no task of that name in the task table" },
  { PP_ETASK, "PP_ETASK", "the task failed" },
  { PP_EWORKER, "PP_EWORKER", "the worker died while running the task" },
  { PP_ETIMEDOUT, "PP_ETIMEDOUT", "the task timed out" },
  { PP_ECANCELED, "PP_ECANCELED", "the task was canceled" },
  { PP_ECLOSED, "PP_ECLOSED", "the pool is closing or closed" },
  { PP_EPROTO, "PP_EPROTO", "a worker sent malformed data" },
  { PP_E2BIG, "PP_E2BIG", "message larger than max_message_bytes" },
  { PP_EINIT, "PP_EINIT", "the pool's initializer failed" },
  { PP_ESPAWN, "PP_ESPAWN", "a worker could not be started" },
  { PP_ENOENT, "PP_ENOENT", "no pending task has that id" },
};

static const pp__errdesc *pp__find_error(int err) {
  size_t i;

  for (i = 0; i < sizeof(pp__errors) / sizeof(pp__errors[0]); i++)
    if (pp__errors[i].code == err)
      return &pp__errors[i];
  return NULL;
}

/* libuv's uv_strerror and uv_err_name allocate (and leak) a string for a code they do not
 * know, so ask the reentrant variant first whether the code is one of theirs. */
static int pp__is_uv_error(int err) {
  char buf[64];

  if (err >= 0 || err < -4096)
    return 0;
  uv_err_name_r(err, buf, sizeof(buf));
  return strncmp(buf, "Unknown", 7) != 0;
}

const char *pp_strerror(int err) {
  const pp__errdesc *d;

  if (err == 0)
    return "success";
  d = pp__find_error(err);
  if (d != NULL)
    return d->text;
  if (pp__is_uv_error(err))
    return uv_strerror(err);
  return "unknown error";
}

const char *pp_errname(int err) {
  const pp__errdesc *d;

  if (err == 0)
    return "OK";
  d = pp__find_error(err);
  if (d != NULL)
    return d->name;
  if (pp__is_uv_error(err))
    return uv_err_name(err);
  return "UNKNOWN";
}
