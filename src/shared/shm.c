/* Shared memory segments: the checks, the handle, the reference and the names. What the
 * OS does is in unix/shm.c and win/shm.c. */
#include "../shm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define PP__SHM_PREFIX "procpool-"
#define PP__SHM_PREFIX_LEN (sizeof(PP__SHM_PREFIX) - 1)
/* The most random characters a name gets, 5 bits each. macOS's short names leave room
 * for fewer: 6 at the least, since its pids have at most 5 digits. */
#define PP__SHM_RANDOM_MAX 16

struct pp_shm {
  pp__shm_map map;
  size_t size;
  /* The process that created the segment; 0 when this one opened it. A child forked
   * from the creator inherits the struct, and its close must not remove the name. */
  uv_pid_t creator;
  char name[PP__SHM_NAME_MAX + 1];
};

/* "procpool-<pid>-<random>". The pid keeps the names of live processes apart, and the
 * random part (up to 80 bits) those of one process, of any thread, with no shared counter
 * to race on; it also keeps another program from guessing a name ahead, to squat it or
 * to read the segment. A name that exists after all fails creation, which tries again. */
static int pp__shm_make_name(char *name) {
  static const char digits[] = "0123456789abcdefghijklmnopqrstuv";
  unsigned char rnd[PP__SHM_RANDOM_MAX];
  size_t len, nrnd, i;
  int n, err;

  size_t max = pp__shm_os_name_max();

  n = snprintf(name, max + 1, PP__SHM_PREFIX "%lu-", (unsigned long) uv_os_getpid());
  len = (size_t) n < max ? (size_t) n : max;
  nrnd = max - len;
  if (nrnd > PP__SHM_RANDOM_MAX)
    nrnd = PP__SHM_RANDOM_MAX;
  err = uv_random(NULL, NULL, rnd, nrnd, 0, NULL);
  if (err != 0)
    return err;
  for (i = 0; i < nrnd; i++)
    name[len + i] = digits[rnd[i] & 31];
  name[len + nrnd] = '\0';
  return 0;
}

/* A name this file could have made: anything else could reach outside procpool's names
 * (a path, another object namespace on Windows). */
static int pp__shm_ref_valid(const pp_shm_ref *ref) {
  size_t i;

  if (ref->size == 0 || memcmp(ref->name, PP__SHM_PREFIX, PP__SHM_PREFIX_LEN) != 0)
    return 0;
  for (i = PP__SHM_PREFIX_LEN; i <= PP__SHM_NAME_MAX; i++) {
    char c = ref->name[i];
    if (c == '\0')
      return i > PP__SHM_PREFIX_LEN;
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-'))
      return 0;
  }
  return 0;
}

int pp_shm_create(pp_shm **shm, size_t size) {
  pp_shm *s;
  int err, tries = 0;

  if (shm == NULL)
    return PP_EINVAL;
  *shm = NULL;
  if (size == 0)
    return PP_EINVAL;
  s = (pp_shm *) calloc(1, sizeof(*s));
  if (s == NULL)
    return PP_ENOMEM;
  do {
    err = pp__shm_make_name(s->name);
    if (err == 0)
      err = pp__shm_os_create(s->name, size, &s->map);
  } while (err == UV_EEXIST && ++tries < 4);
  if (err != 0) {
    free(s);
    return err;
  }
  s->size = size;
  s->creator = uv_os_getpid();
  *shm = s;
  return 0;
}

int pp_shm_open(const pp_shm_ref *ref, pp_shm **shm) {
  pp_shm *s;
  int err;

  if (shm == NULL)
    return PP_EINVAL;
  *shm = NULL;
  if (ref == NULL || !pp__shm_ref_valid(ref))
    return PP_EINVAL;
  /* A 64-bit creator can make more than a 32-bit process can map. */
  if ((uint64_t) (size_t) ref->size != ref->size)
    return UV_ENOMEM;
  s = (pp_shm *) calloc(1, sizeof(*s));
  if (s == NULL)
    return PP_ENOMEM;
  memcpy(s->name, ref->name, strlen(ref->name) + 1);
  err = pp__shm_os_open(s->name, (size_t) ref->size, &s->map);
  if (err != 0) {
    free(s);
    return err;
  }
  s->size = (size_t) ref->size;
  *shm = s;
  return 0;
}

void *pp_shm_data(const pp_shm *shm) { return shm ? shm->map.data : NULL; }

size_t pp_shm_size(const pp_shm *shm) { return shm ? shm->size : 0; }

void pp_shm_ref_get(const pp_shm *shm, pp_shm_ref *ref) {
  if (ref == NULL)
    return;
  /* All of it, padding of the name included: the ref is copied as bytes into arguments,
   * which then hold nothing of this process's stack. A NULL shm gives a ref that
   * pp_shm_open refuses. */
  memset(ref, 0, sizeof(*ref));
  if (shm == NULL)
    return;
  ref->size = shm->size;
  memcpy(ref->name, shm->name, strlen(shm->name) + 1);
}

int pp_shm_close(pp_shm *shm) {
  int err, err2;

  if (shm == NULL)
    return 0;
  err = pp__shm_os_unmap(&shm->map, shm->size);
  if (shm->creator == uv_os_getpid()) {
    err2 = pp__shm_os_unlink(shm->name);
    if (err == 0)
      err = err2;
  }
  free(shm);
  return err;
}
