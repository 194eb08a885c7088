#!/usr/bin/env python3
"""bench/bench-array.c's work done with Python, for comparison.

2,000,000 items (--items N), each a uint64 that a worker squares (modulo 2**64), with 2
workers, as bench-array does:
  - multiprocessing.Pool(2).map over the ints, with the chunksize map itself picks
    (len / (4 * workers), rounded up; passed explicitly, and printed);
  - if numpy is importable, a numpy uint64 array in multiprocessing.shared_memory, each of
    the 2 workers squaring its half in place. Timed from the copy of the input into the
    shared array to the copy of the results out of it (pp_map_array, too, takes the
    caller's array and fills the caller's results), the pool already started.
Items/s, the median of --runs runs (5) after one warm-up each. Standard library only, but
for the optional numpy part.
"""

import argparse
import multiprocessing
import statistics
import sys
import time

MASK = (1 << 64) - 1


def item(i):
    return (i * 2654435761 + 7) & MASK


def square(x):
    return (x * x) & MASK


def square_half(args):
    """A worker's half of the shared array: squared in place."""
    from multiprocessing import shared_memory

    import numpy as np

    name, n, lo, hi = args
    shm = shared_memory.SharedMemory(name=name)
    try:
        a = np.ndarray((n,), dtype=np.uint64, buffer=shm.buf)
        np.multiply(a[lo:hi], a[lo:hi], out=a[lo:hi])
        del a
    finally:
        shm.close()
    return hi - lo


def median_rate(n, runs, once):
    once()  # the warm-up
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        once()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n, runs, workers = args.items, args.runs, 2
    method = multiprocessing.get_start_method()
    items = [item(i) for i in range(n)]
    want = [square(x) for x in items]
    chunk, extra = divmod(n, 4 * workers)
    chunk += 1 if extra else 0
    print(f"{n} items (a uint64, squared), {workers} workers, {method}; items/s, "
          f"median of {runs} runs after one warm-up")

    with multiprocessing.Pool(workers) as pool:
        def by_map():
            if pool.map(square, items, chunksize=chunk) != want:
                raise SystemExit("python_array: Pool.map gave a wrong result")
        print(f"Pool.map (chunksize {chunk})      {median_rate(n, runs, by_map):14.0f}")

        try:
            import numpy as np
            from multiprocessing import shared_memory
        except ImportError:
            print("numpy + shared_memory           skipped: numpy is not installed")
            return 0
        src = np.array(items, dtype=np.uint64)
        expect = src * src
        out = np.empty_like(src)
        shm = shared_memory.SharedMemory(create=True, size=max(src.nbytes, 1))
        try:
            shared = np.ndarray(src.shape, dtype=np.uint64, buffer=shm.buf)
            half = n // 2
            parts = [(shm.name, n, 0, half), (shm.name, n, half, n)]

            def by_numpy():
                shared[:] = src
                if sum(pool.map(square_half, parts)) != n:
                    raise SystemExit("python_array: a worker lost items")
                out[:] = shared
                if not np.array_equal(out, expect):
                    raise SystemExit("python_array: numpy gave a wrong result")
            rate = median_rate(n, runs, by_numpy)
            print(f"numpy + shared_memory           {rate:14.0f}")
            del shared
        finally:
            shm.close()
            shm.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
