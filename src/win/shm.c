#include "../shm.h"

#include <stdint.h>
#include <string.h>

/* uv.h first: it brings winsock2.h, which must come before windows.h. */
#include <uv.h>

#include <windows.h>

/* The session's namespace: Global\ needs a privilege, and workers run in their parent's
 * session. */
#define PP__SHM_NAMESPACE L"Local\\"
#define PP__SHM_NAMESPACE_LEN (sizeof(PP__SHM_NAMESPACE) / sizeof(WCHAR) - 1)
#define PP__SHM_WNAME_SIZE (PP__SHM_NAMESPACE_LEN + PP__SHM_NAME_MAX + 1)

static void pp__shm_wname(WCHAR *wname, const char *name) {
  size_t i;

  memcpy(wname, PP__SHM_NAMESPACE, PP__SHM_NAMESPACE_LEN * sizeof(WCHAR));
  /* Names are ASCII (shm.h), which widens by a cast. */
  for (i = 0; name[i] != '\0'; i++)
    wname[PP__SHM_NAMESPACE_LEN + i] = (WCHAR) name[i];
  wname[PP__SHM_NAMESPACE_LEN + i] = 0;
}

static int pp__shm_win_error(DWORD err) {
  /* What a page file too full to back the section gives; libuv does not know it. */
  if (err == ERROR_COMMITMENT_LIMIT)
    return UV_ENOSPC;
  return uv_translate_sys_error((int) err);
}

int pp__shm_os_create(const char *name, size_t size, pp__shm_map *map) {
  WCHAR wname[PP__SHM_WNAME_SIZE];
  uint64_t len = (uint64_t) size;
  HANDLE h;
  void *data;
  DWORD err;

  /* A section's size is a LARGE_INTEGER, signed. */
  if (len > (uint64_t) INT64_MAX)
    return PP_EINVAL;
  pp__shm_wname(wname, name);
  /* Backed by the page file, zero-filled, and committed whole now: a page file with no
   * room for it fails here rather than at a first touch. */
  h = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, (DWORD) (len >> 32),
                         (DWORD) (len & 0xFFFFFFFFu), wname);
  if (h == NULL)
    return pp__shm_win_error(GetLastError());
  /* A mapping of that name that already exists is opened, not refused: O_EXCL by hand. */
  if (GetLastError() == ERROR_ALREADY_EXISTS) {
    CloseHandle(h);
    return UV_EEXIST;
  }
  data = MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, size);
  if (data == NULL) {
    err = GetLastError();
    CloseHandle(h);
    return pp__shm_win_error(err);
  }
  map->data = data;
  map->handle = h;
  return 0;
}

int pp__shm_os_open(const char *name, size_t size, pp__shm_map *map) {
  WCHAR wname[PP__SHM_WNAME_SIZE];
  MEMORY_BASIC_INFORMATION mbi;
  HANDLE h;
  void *data;
  DWORD err;
  int r = 0;

  pp__shm_wname(wname, name);
  h = OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, FALSE, wname);
  if (h == NULL)
    return pp__shm_win_error(GetLastError());
  /* The whole section: its size can only be learnt from a view of it, and a view larger
   * than the section fails with a misleading error. */
  data = MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0);
  err = data == NULL ? GetLastError() : 0;
  /* The view alone keeps the memory, and a name lives as long as some handle on it: the
   * creator's must be the only one that lasts, so that its close removes the name as
   * shm_unlink does. */
  CloseHandle(h);
  if (data == NULL)
    return pp__shm_win_error(err);
  if (VirtualQuery(data, &mbi, sizeof(mbi)) == 0)
    r = pp__shm_win_error(GetLastError());
  else if (mbi.RegionSize < size)
    r = PP_EINVAL;
  if (r != 0) {
    UnmapViewOfFile(data);
    return r;
  }
  map->data = data;
  map->handle = NULL;
  return 0;
}

int pp__shm_os_unmap(pp__shm_map *map, size_t size) {
  int err = 0;

  (void) size;
  if (!UnmapViewOfFile(map->data))
    err = pp__shm_win_error(GetLastError());
  if (map->handle != NULL && !CloseHandle((HANDLE) map->handle) && err == 0)
    err = pp__shm_win_error(GetLastError());
  map->data = NULL;
  map->handle = NULL;
  return err;
}

/* The name went with the creator's handle, which pp__shm_os_unmap closed. */
int pp__shm_os_unlink(const char *name) {
  (void) name;
  return 0;
}

size_t pp__shm_os_name_max(void) { return PP__SHM_NAME_MAX; }
