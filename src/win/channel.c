#include "../channel.h"

#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* uv.h first: it brings winsock2.h, which must come before windows.h. */
#include <uv.h>

#include <windows.h>

/* The worker's end of the named pipe the pool made for it (src/win/spawn.c): a client
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

/* The channel is stdin and stdout (a worker behind a launcher). The OS's handles move to
 * non-inheritable duplicates; then the C runtime's descriptors 0 and 1 are pointed at the
 * null device and at stderr (_dup2 closes the old ones), and the process's standard
 * handles at the same, so that neither printf, _write(1) nor WriteFile on
 * GetStdHandle(STD_OUTPUT_HANDLE) reaches the channel, and a child a task starts does
 * not inherit it as its stdio. */
static int pp__chan_open_stdio(pp__chan *chan) {
  HANDLE self = GetCurrentProcess();
  HANDLE in = NULL, out = NULL;
  HANDLE std_in = GetStdHandle(STD_INPUT_HANDLE), std_out = GetStdHandle(STD_OUTPUT_HANDLE);
  int fd, err = 0;

  if (std_in == NULL || std_in == INVALID_HANDLE_VALUE || std_out == NULL ||
      std_out == INVALID_HANDLE_VALUE)
    return UV_EBADF;
  if (!DuplicateHandle(self, std_in, self, &in, 0, FALSE, DUPLICATE_SAME_ACCESS) ||
      !DuplicateHandle(self, std_out, self, &out, 0, FALSE, DUPLICATE_SAME_ACCESS)) {
    err = pp__win_error(GetLastError(), 0);
    goto done;
  }
  fd = _open("NUL", _O_RDONLY | _O_NOINHERIT);
  if (fd == -1 || _dup2(fd, 0) != 0) {
    err = UV_EIO;
    if (fd != -1)
      _close(fd);
    goto done;
  }
  _close(fd);
  if ((intptr_t) _get_osfhandle(2) < 0) {
    fd = _open("NUL", _O_WRONLY | _O_NOINHERIT);
    if (fd == -1 || _dup2(fd, 2) != 0)
      err = UV_EIO;
    if (fd != -1)
      _close(fd);
    if (err != 0)
      goto done;
  }
  if (_dup2(2, 1) != 0) {
    err = UV_EIO;
    goto done;
  }
  SetStdHandle(STD_INPUT_HANDLE, (HANDLE) _get_osfhandle(0));
  SetStdHandle(STD_OUTPUT_HANDLE, (HANDLE) _get_osfhandle(1));
  SetStdHandle(STD_ERROR_HANDLE, (HANDLE) _get_osfhandle(2));

done:
  if (err != 0) {
    if (in != NULL)
      CloseHandle(in);
    if (out != NULL)
      CloseHandle(out);
    return err;
  }
  chan->h = (intptr_t) in;
  chan->out = (intptr_t) out;
  return 0;
}

int pp__chan_open(const char *spec, pp__chan *chan) {
  char *end;
  unsigned long long v;
  HANDLE h;
  DWORD flags;

  memset(chan, 0, sizeof(*chan));
  /* The pool puts the value of the channel's handle on the command line (src/win/spawn.c),
   * and the handle list gave the worker that handle with that same value. A wrong number
   * is refused here, before any use: no C runtime call that a bad descriptor would make
   * end the process, and no I/O on some other object. */
  if (strcmp(spec, PP__CHAN_STDIO) == 0)
    return pp__chan_open_stdio(chan);
  if (spec[0] < '0' || spec[0] > '9')
    return UV_EINVAL;
  errno = 0;
  v = strtoull(spec, &end, 10);
  /* A handle's value fits in 32 bits, even in a 64-bit process: Windows keeps it so, for
   * handles shared with 32-bit processes. */
  if (errno != 0 || *end != '\0' || v == 0 || v > 0xFFFFFFFFu)
    return UV_EINVAL;
  h = (HANDLE) (uintptr_t) v;
  if (!GetHandleInformation(h, &flags) || GetFileType(h) != FILE_TYPE_PIPE)
    return UV_EBADF;
  /* CreateProcess with bInheritHandles and no handle list, as most launchers call it,
   * would otherwise give the channel to every process a task starts, and the pool would
   * not see its end while any of them lives. */
  if (!SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0))
    return pp__win_error(GetLastError(), 0);
  chan->h = (intptr_t) h;
  chan->out = (intptr_t) h;
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
  HANDLE h = (HANDLE) chan->out;
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

void pp__chan_close(pp__chan *chan) {
  if (chan->out != -1 && chan->out != chan->h)
    CloseHandle((HANDLE) chan->out);
  if (chan->h != -1)
    CloseHandle((HANDLE) chan->h);
  chan->h = -1;
  chan->out = -1;
}

/* The pool starts every worker in a job object that kills it when the parent goes, busy
 * or not (src/win/spawn.c), so there is nothing to watch here. */
int pp__chan_watch(pp__chan *chan) {
  (void) chan;
  return 0;
}

void pp__chan_busy(pp__chan *chan, int busy) {
  (void) chan;
  (void) busy;
}
