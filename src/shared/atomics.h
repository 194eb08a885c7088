/* Atomic operations on words in shared memory (the results journal, the transport's
 * segments), which another process reads and writes. Compiler intrinsics, not OS calls:
 * on MSVC every interlocked operation is a full barrier (and the memory is writable).
 * The 32-bit words: a release store, a store followed by a full fence, an acquire load,
 * and a load after a full fence. The 64-bit words: sequentially consistent load, store
 * and compare-and-swap. */
#ifndef PP_ATOMICS_H
#define PP_ATOMICS_H

#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static inline void pp__store_release(uint8_t *p, uint32_t v) {
  _InterlockedExchange((volatile long *) p, (long) v);
}
static inline void pp__store_fence(uint8_t *p, uint32_t v) {
  _InterlockedExchange((volatile long *) p, (long) v);
}
static inline uint32_t pp__load_acquire(const uint8_t *p) {
  return (uint32_t) _InterlockedOr((volatile long *) p, 0);
}
static inline uint32_t pp__fence_load(const uint8_t *p) {
  return (uint32_t) _InterlockedOr((volatile long *) p, 0);
}
#else
static inline void pp__store_release(uint8_t *p, uint32_t v) {
  __atomic_store_n((uint32_t *) (void *) p, v, __ATOMIC_RELEASE);
}
static inline void pp__store_fence(uint8_t *p, uint32_t v) {
  __atomic_store_n((uint32_t *) (void *) p, v, __ATOMIC_SEQ_CST);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
static inline uint32_t pp__load_acquire(const uint8_t *p) {
  return __atomic_load_n((const uint32_t *) (const void *) p, __ATOMIC_ACQUIRE);
}
static inline uint32_t pp__fence_load(const uint8_t *p) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return __atomic_load_n((const uint32_t *) (const void *) p, __ATOMIC_ACQUIRE);
}
#endif

#if defined(_MSC_VER) && !defined(__clang__)
static inline uint64_t pp__load64(const uint8_t *p) {
  return (uint64_t) _InterlockedCompareExchange64((volatile __int64 *) p, 0, 0);
}
static inline void pp__store64(uint8_t *p, uint64_t v) {
  _InterlockedExchange64((volatile __int64 *) p, (__int64) v);
}
static inline int pp__cas64(uint8_t *p, uint64_t from, uint64_t to) {
  return (uint64_t) _InterlockedCompareExchange64((volatile __int64 *) p, (__int64) to,
                                                  (__int64) from) == from;
}
#else
static inline uint64_t pp__load64(const uint8_t *p) {
  return __atomic_load_n((const uint64_t *) (const void *) p, __ATOMIC_SEQ_CST);
}
static inline void pp__store64(uint8_t *p, uint64_t v) {
  __atomic_store_n((uint64_t *) (void *) p, v, __ATOMIC_SEQ_CST);
}
static inline int pp__cas64(uint8_t *p, uint64_t from, uint64_t to) {
  return __atomic_compare_exchange_n((uint64_t *) (void *) p, &from, to, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST);
}
#endif

#endif
