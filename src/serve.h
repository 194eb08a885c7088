/* The worker side's contract with the start methods: every method ends up calling
 * pp__serve with an open channel, and says how the process must end. */
#ifndef PP_SERVE_H
#define PP_SERVE_H

#include <stddef.h>

#include "channel.h"
#include "procpool.h"

#if defined(_MSC_VER)
#  define PP__NORETURN __declspec(noreturn)
#  define PP__NOINLINE __declspec(noinline)
#elif defined(__GNUC__) || defined(__clang__)
#  define PP__NORETURN __attribute__((noreturn))
#  define PP__NOINLINE __attribute__((noinline))
#else
#  define PP__NORETURN
#  define PP__NOINLINE
#endif

/* The mark on a spawned worker's command line, followed by the channel's spec; and the
 * mark of a forkserver, where there is one. */
#define PP__WORKER_MARK "--procpool-worker="
#define PP__FORKSERVER_MARK "--procpool-forkserver="

/* Exit codes of a worker that gives up; the pool reports them in its messages. */
#define PP__EXIT_SETUP 121   /* a malformed task table, or could not open its channel or
                              * greet the pool */
#define PP__EXIT_PROTO 122   /* the pool sent something it cannot read */

typedef struct pp__serve_ctx {
  pp__chan chan;
  /* How the process ends: exit() for a spawned program, _exit() for a forked one. Not
   * marked noreturn: MSVC's __declspec(noreturn) is refused on a function pointer, and
   * every call is followed by abort(). */
  void (*exit)(int code);
} pp__serve_ctx;

/* Serves tasks until the pool closes the channel, then ends the process. */
PP__NORETURN void pp__serve(pp__serve_ctx *ctx);

/* Runs the forkserver on the inherited connection that spec names; never returns where
 * forkservers exist (src/unix/forkserver.c). Elsewhere it returns PP_ENOTSUP. */
int pp__forkserver_main(const char *spec);

#endif
