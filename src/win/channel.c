#include "../channel.h"

#include <errno.h>
#include <io.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* uv.h first: it brings winsock2.h, which must come before windows.h. */
#include <uv.h>

#include <windows.h>

/* The worker's end of a pipe that libuv made for UV_CREATE_PIPE: a named pipe client
 * opened for synchronous I/O, so plain blocking ReadFile and WriteFile serve. */

/* Bounds one ReadFile or WriteFile: their counts are DWORDs while a message may come close
 * to 4 GiB, and libuv's pipes pass data through a 64 KiB buffer anyway, so larger calls
 * would gain nothing. */
#define PP__WIN_IO_MAX ((DWORD) 1 << 20)

/* Small buffers are gathered into one WriteFile: each write to a pipe is a system call and
 * a completion on the pool's side, and a frame's header is always a small buffer. */
#define PP__WIN_GATHER 4096

/* The one place where a Win32 error becomes a UV_E* code. The pool closing its end, or
 * dying, shows up as several errors depending on timing (closed before, during or after
 * the call); all of them mean the end of the channel. */
static int pp__win_error(DWORD err, int writing) {
  switch (err) {
    case ERROR_BROKEN_PIPE:
    case ERROR_NO_DATA:
    case ERROR_PIPE_NOT_CONNECTED:
    case ERROR_HANDLE_EOF:
      return writing ? UV_EPIPE : UV_EOF;
    default:
      return uv_translate_sys_error((int) err);
  }
}

int pp__chan_open(const char *spec, pp__chan *chan) {
  char *end;
  long fd;
  intptr_t h;

  errno = 0;
  fd = strtol(spec, &end, 10);
  if (errno != 0 || end == spec || *end != '\0' || fd < 0 || fd > INT_MAX)
    return UV_EINVAL;
  /* libuv hands extra stdio slots to the child in the CRT's inherited-handle block
   * (STARTUPINFO.lpReserved2), which the CRT turns into descriptors at start-up. An
   * absent slot is -1, or -2 when the CRT knows the descriptor but it has no handle. */
  h = _get_osfhandle((int) fd);
  if (h == -1 || h == -2)
    return UV_EBADF;
  /* CreateProcess with bInheritHandles, as libuv and most launchers call it, would
   * otherwise give the channel to every process a task starts, and the pool would not see
   * its end while any of them lives. */
  if (!SetHandleInformation((HANDLE) h, HANDLE_FLAG_INHERIT, 0))
    return pp__win_error(GetLastError(), 0);
  chan->h = h;
  return 0;
}

int pp__chan_read(pp__chan *chan, void *buf, size_t cap, size_t *got) {
  DWORD want = cap > PP__WIN_IO_MAX ? PP__WIN_IO_MAX : (DWORD) cap;
  DWORD n;

  for (;;) {
    if (!ReadFile((HANDLE) chan->h, buf, want, &n, NULL))
      return pp__win_error(GetLastError(), 0);
    if (n > 0)
      break;
    /* A byte-mode pipe completes a read with 0 bytes when the other side wrote 0 bytes;
     * its end is ERROR_BROKEN_PIPE. Only a file ends with a 0-byte read. */
    if (GetFileType((HANDLE) chan->h) != FILE_TYPE_PIPE)
      return UV_EOF;
  }
  *got = n;
  return 0;
}

static int pp__write_all(HANDLE h, const char *p, size_t len) {
  while (len > 0) {
    DWORD n;

    if (!WriteFile(h, p, len > PP__WIN_IO_MAX ? PP__WIN_IO_MAX : (DWORD) len, &n, NULL))
      return pp__win_error(GetLastError(), 1);
    p += n;
    len -= n;
  }
  return 0;
}

int pp__chan_write(pp__chan *chan, const pp__iov *iov, size_t n) {
  HANDLE h = (HANDLE) chan->h;
  char gather[PP__WIN_GATHER];
  size_t used = 0;
  size_t i;
  int err;

  if (n > PP__CHAN_MAX_IOV)
    return UV_EINVAL;
  for (i = 0; i < n; i++) {
    if (iov[i].len <= sizeof(gather) - used) {
      if (iov[i].len > 0)
        memcpy(gather + used, iov[i].base, iov[i].len);
      used += iov[i].len;
      continue;
    }
    if (used > 0) {
      err = pp__write_all(h, gather, used);
      if (err != 0)
        return err;
      used = 0;
    }
    if (iov[i].len <= sizeof(gather)) {
      memcpy(gather, iov[i].base, iov[i].len);
      used = iov[i].len;
    } else {
      err = pp__write_all(h, (const char *) iov[i].base, iov[i].len);
      if (err != 0)
        return err;
    }
  }
  return used > 0 ? pp__write_all(h, gather, used) : 0;
}

/* The CRT's descriptor for the channel still names the closed handle: the CRT has no way to
 * give up a descriptor without closing its handle, and the worker ends right after. */
void pp__chan_close(pp__chan *chan) {
  if (chan->h != -1)
    CloseHandle((HANDLE) chan->h);
  chan->h = -1;
}

/* libuv starts every child in a job object that kills it when the parent goes, busy or
 * not, so there is nothing to watch here. */
int pp__chan_watch(pp__chan *chan) {
  (void) chan;
  return 0;
}

void pp__chan_busy(pp__chan *chan, int busy) {
  (void) chan;
  (void) busy;
}
