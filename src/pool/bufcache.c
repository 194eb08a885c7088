/* Large result blocks kept for reuse (bufcache.h). */
#include "bufcache.h"

#include <stdlib.h>

#include <uv.h>

#include "../os.h"

#define PP__BUFCACHE_SLOTS 4
#define PP__BUFCACHE_MAX ((size_t) 512 << 20)

static uv_once_t pp__bufcache_once = UV_ONCE_INIT;
static uv_mutex_t pp__bufcache_mu;
static void *pp__bufcache_block[PP__BUFCACHE_SLOTS];
static size_t pp__bufcache_size[PP__BUFCACHE_SLOTS];
static size_t pp__bufcache_bytes;
static int pp__bufcache_npools;

static void pp__bufcache_init(void) {
  if (uv_mutex_init(&pp__bufcache_mu) != 0)
    abort();
}

void *pp__bufcache_get(size_t len) {
  void *p = NULL;
  size_t i, best = PP__BUFCACHE_SLOTS;

  if (len >= PP__BUFCACHE_MIN) {
    uv_once(&pp__bufcache_once, pp__bufcache_init);
    uv_mutex_lock(&pp__bufcache_mu);
    /* The smallest that fits, and not one so large that the result would waste most of
     * it while a smaller result could use it. */
    for (i = 0; i < PP__BUFCACHE_SLOTS; i++)
      if (pp__bufcache_block[i] != NULL && pp__bufcache_size[i] >= len &&
          pp__bufcache_size[i] / 2 <= len &&
          (best == PP__BUFCACHE_SLOTS || pp__bufcache_size[i] < pp__bufcache_size[best]))
        best = i;
    if (best < PP__BUFCACHE_SLOTS) {
      p = pp__bufcache_block[best];
      pp__bufcache_bytes -= pp__bufcache_size[best];
      pp__bufcache_block[best] = NULL;
    }
    uv_mutex_unlock(&pp__bufcache_mu);
    if (p != NULL)
      return p;
  }
  p = malloc(len > 0 ? len : 1);
  if (p != NULL)
    pp__os_advise_large(p, len);
  return p;
}

void pp__bufcache_put(void *p) {
  size_t size, i;

  if (p == NULL)
    return;
  /* The block's real size: it may have come from anywhere, and only malloc knows. */
  size = pp__os_alloc_size(p);
  if (size >= PP__BUFCACHE_MIN && size <= PP__BUFCACHE_MAX) {
    uv_once(&pp__bufcache_once, pp__bufcache_init);
    uv_mutex_lock(&pp__bufcache_mu);
    for (i = 0; i < PP__BUFCACHE_SLOTS; i++) {
      if (pp__bufcache_npools > 0 && pp__bufcache_block[i] == NULL &&
          pp__bufcache_bytes + size <= PP__BUFCACHE_MAX) {
        pp__bufcache_block[i] = p;
        pp__bufcache_size[i] = size;
        pp__bufcache_bytes += size;
        p = NULL;
        break;
      }
    }
    uv_mutex_unlock(&pp__bufcache_mu);
  }
  free(p);
}

void pp__bufcache_pools(int delta) {
  void *drop[PP__BUFCACHE_SLOTS];
  size_t i, n = 0;

  uv_once(&pp__bufcache_once, pp__bufcache_init);
  uv_mutex_lock(&pp__bufcache_mu);
  pp__bufcache_npools += delta;
  if (pp__bufcache_npools == 0) {
    for (i = 0; i < PP__BUFCACHE_SLOTS; i++) {
      if (pp__bufcache_block[i] != NULL)
        drop[n++] = pp__bufcache_block[i];
      pp__bufcache_block[i] = NULL;
    }
    pp__bufcache_bytes = 0;
  }
  uv_mutex_unlock(&pp__bufcache_mu);
  for (i = 0; i < n; i++)
    free(drop[i]);
}
