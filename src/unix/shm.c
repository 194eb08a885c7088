#include "../shm.h"
#include "unix.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

/* POSIX leaves names without a leading slash to the implementation. */
static void pp__shm_path(char *path, const char *name) {
  size_t n = strlen(name);

  path[0] = '/';
  memcpy(path + 1, name, n + 1);
}

int pp__shm_os_create(const char *name, size_t size, pp__shm_map *map) {
  char path[PP__SHM_NAME_MAX + 2];
  off_t len = (off_t) size;
  void *data = MAP_FAILED;
  int fd, err;

  /* ftruncate's off_t is signed, and 32 bits wide on some systems. */
  if (len <= 0 || (uint64_t) len != (uint64_t) size)
    return PP_EINVAL;
  pp__shm_path(path, name);
  fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd == -1)
    return uv_translate_sys_error(errno);
  err = pp__unix_shm_allocate(fd, len);
  if (err == 0) {
    data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED)
      err = uv_translate_sys_error(errno);
  }
  /* The mapping keeps the segment; the descriptor is no longer needed. */
  close(fd);
  if (err != 0) {
    shm_unlink(path);
    return err;
  }
  map->data = data;
  map->handle = NULL;
  return 0;
}

int pp__shm_os_open(const char *name, size_t size, pp__shm_map *map) {
  char path[PP__SHM_NAME_MAX + 2];
  struct stat st;
  void *data = MAP_FAILED;
  int fd, err = 0;

  pp__shm_path(path, name);
  fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
  if (fd == -1)
    return uv_translate_sys_error(errno);
  /* Pages mapped past the end of the object fault with SIGBUS when touched, so a ref
   * that claims more than there is must fail here. macOS rounds the object's size up to
   * whole pages, hence no equality. */
  if (fstat(fd, &st) != 0)
    err = uv_translate_sys_error(errno);
  else if (st.st_size < 0 || (uint64_t) st.st_size < (uint64_t) size)
    err = PP_EINVAL;
  else {
    data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED)
      err = uv_translate_sys_error(errno);
  }
  close(fd);
  if (err != 0)
    return err;
  map->data = data;
  map->handle = NULL;
  return 0;
}

int pp__shm_os_unmap(pp__shm_map *map, size_t size) {
  int err = munmap(map->data, size) == 0 ? 0 : uv_translate_sys_error(errno);

  map->data = NULL;
  return err;
}

int pp__shm_os_unlink(const char *name) {
  char path[PP__SHM_NAME_MAX + 2];

  pp__shm_path(path, name);
  return shm_unlink(path) == 0 ? 0 : uv_translate_sys_error(errno);
}

size_t pp__shm_os_name_max(void) {
#if defined(__APPLE__)
  return 30;
#else
  return PP__SHM_NAME_MAX;
#endif
}
