/* The pool's segments on Windows (seg.h): unnamed sections backed by the page file. No
 * other process can open one; the pool duplicates its handle into the one worker that
 * is to map it, with only the rights to map it (not SECTION_EXTEND_SIZE), and the frame
 * that introduces it carries the handle's value in that process. A section lives as
 * long as a handle or a view of it, so it ends with the last process that maps it. */
#include "../seg.h"

#include <string.h>

/* uv.h first: it brings winsock2.h, which must come before windows.h. */
#include <uv.h>

#include <windows.h>

#include "../methods.h"
#include "../shared/protocol.h"

static int pp__seg_win_error(DWORD err) {
  /* What a page file too full to back the section gives; libuv does not know it. */
  if (err == ERROR_COMMITMENT_LIMIT)
    return UV_ENOSPC;
  return uv_translate_sys_error((int) err);
}

int pp__seg_create(pp__seg *s, size_t size) {
  uint64_t len = (uint64_t) size;
  HANDLE h;
  void *data;
  DWORD err;

  memset(s, 0, sizeof(*s));
  /* A section's size is a LARGE_INTEGER, signed. */
  if (size == 0 || len > (uint64_t) INT64_MAX)
    return PP_EINVAL;
  /* Zero-filled and committed whole now: a page file with no room for it fails here
   * rather than at a first touch. */
  h = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, (DWORD) (len >> 32),
                         (DWORD) (len & 0xFFFFFFFFu), NULL);
  if (h == NULL)
    return pp__seg_win_error(GetLastError());
  data = MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, size);
  if (data == NULL) {
    err = GetLastError();
    CloseHandle(h);
    return pp__seg_win_error(err);
  }
  s->data = (uint8_t *) data;
  s->size = size;
  s->h = (intptr_t) h;
  s->held = 1;
  return 0;
}

void pp__seg_free(pp__seg *s) {
  if (s->data != NULL)
    UnmapViewOfFile(s->data);
  if (s->held)
    CloseHandle((HANDLE) s->h);
  memset(s, 0, sizeof(*s));
}

int pp__seg_give(struct pp__worker *w, pp__seg *s, uint8_t *frame, size_t len,
                 size_t token_off) {
  HANDLE process = (HANDLE) w->m.win.process;
  HANDLE dup = NULL;
  int err;

  if (!s->held || process == NULL)
    return PP_EINVAL;
  if (!DuplicateHandle(GetCurrentProcess(), (HANDLE) s->h, process, &dup,
                       FILE_MAP_READ | FILE_MAP_WRITE, FALSE, 0))
    return pp__seg_win_error(GetLastError());
  pp__put_u64(frame + token_off, (uint64_t) (uintptr_t) dup);
  err = pp__wbatch_send(w, frame, len);
  if (err != 0) {
    /* The worker will never hear of the handle: it is closed there, from here. */
    DuplicateHandle(process, dup, NULL, NULL, 0, FALSE, DUPLICATE_CLOSE_SOURCE);
    return err;
  }
  CloseHandle((HANDLE) s->h);
  s->held = 0;
  return 0;
}

int pp__seg_take(pp__chan *chan, uint64_t token, size_t size, pp__seg *s) {
  HANDLE h = (HANDLE) (uintptr_t) token;
  MEMORY_BASIC_INFORMATION mbi;
  void *data = NULL;
  int err = 0;

  (void) chan;
  memset(s, 0, sizeof(*s));
  if (token == 0 || (uint64_t) (uintptr_t) h != token)
    return PP_EPROTO;
  if (size == 0)
    err = PP_EPROTO;
  else if ((data = MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, size)) == NULL)
    err = pp__seg_win_error(GetLastError());
  else if (VirtualQuery(data, &mbi, sizeof(mbi)) == 0 || mbi.RegionSize < size)
    err = PP_EPROTO;
  if (err != 0 && data != NULL)
    UnmapViewOfFile(data);
  /* The view alone keeps the section. */
  CloseHandle(h);
  if (err != 0)
    return err;
  s->data = (uint8_t *) data;
  s->size = size;
  return 0;
}
