/* Shared memory segments: what the platform-neutral part (shared/shm.c) needs of the OS.
 * Implemented in src/unix/shm.c (POSIX shm_open) and src/win/shm.c (file mappings backed
 * by the page file). Names reach this layer checked: "procpool-" and then only lowercase
 * letters, digits and dashes, at most PP__SHM_NAME_MAX bytes. */
#ifndef PP_SHM_H
#define PP_SHM_H

#include <stddef.h>

#include "procpool.h"

/* The longest name, without its NUL: what pp_shm_ref.name holds. */
#define PP__SHM_NAME_MAX (sizeof(((pp_shm_ref *) 0)->name) - 1)

/* The longest name this OS takes, at most PP__SHM_NAME_MAX: the names made here are no
 * longer (macOS's shm_open refuses names over 31 bytes, its leading slash included). */
size_t pp__shm_os_name_max(void);

/* A segment as this process maps it. */
typedef struct pp__shm_map {
  void *data;
  /* Windows: the creator's handle on the file mapping, which keeps the name alive.
   * NULL on Unix, and in a process that opened the segment. */
  void *handle;
} pp__shm_map;

/* Creates the segment `name`, which must not exist yet (UV_EEXIST), of size bytes,
 * zero-filled, and maps it read-write. Returns 0, PP_EINVAL (size over what the OS can
 * describe) or the OS's error as a UV_E* code; on failure nothing is left behind. */
int pp__shm_os_create(const char *name, size_t size, pp__shm_map *map);

/* Maps the existing segment `name` read-write, size bytes of it. Returns 0, UV_ENOENT
 * (no such name), PP_EINVAL (the segment is smaller than size) or another UV_E* code. */
int pp__shm_os_open(const char *name, size_t size, pp__shm_map *map);

/* Unmaps what create or open mapped and releases any handle. Returns 0 or a UV_E* code;
 * the mapping is gone either way. */
int pp__shm_os_unmap(pp__shm_map *map, size_t size);

/* Removes the name, so that pp__shm_os_open no longer finds it; the memory lives on
 * while mapped. Called by the creator, after pp__shm_os_unmap, and by the transport
 * (pool/bigmsg.c, worker/bigmsg.c) as soon as the one process that opens a segment has
 * it mapped. UV_ENOENT when there is no such name; nothing on Windows, where a segment lives as
 * long as a handle to it. */
int pp__shm_os_unlink(const char *name);

#endif
