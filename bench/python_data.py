#!/usr/bin/env python3
"""bench/bench-data.c's large messages done with Python, for comparison.

For every start method: pool.apply of a function that returns its argument, 64 MiB and
1 GiB of bytes (pickled through the pool's pipes), best and median of --reps calls after
one not counted; and, when numpy is there, the numpy way to skip the pipe: the array in a
multiprocessing.shared_memory block, which the worker maps by name and returns a copy of
into a second block (the work an echo through shared memory does). A bytes copy of the
same size in this process is the reference, as memcpy is bench-data's.
"""

import argparse
import multiprocessing
import statistics
import time
from multiprocessing import shared_memory

try:
    import numpy
except ImportError:
    numpy = None


def echo(x):
    return x


def shm_echo(names):
    """Maps the argument's block and the result's, and copies one into the other."""
    src_name, dst_name, n = names
    src = shared_memory.SharedMemory(name=src_name)
    dst = shared_memory.SharedMemory(name=dst_name)
    a = numpy.ndarray((n,), dtype=numpy.uint8, buffer=src.buf)
    b = numpy.ndarray((n,), dtype=numpy.uint8, buffer=dst.buf)
    b[:] = a
    del a, b
    src.close()
    dst.close()
    return n


def timed(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times)


def report(what, size, best, med, base):
    print("  %-12s %6d MiB  best %8.2f ms  median %8.2f ms  %6.2fx copy  %6.2f GB/s"
          % (what, size >> 20, best, med, best / base, size / (best / 1e3) / 1e9))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [64 << 20] if args.quick else [64 << 20, 1 << 30]
    print("python_data: best and median of %d calls after one not counted%s"
          % (args.reps, "" if numpy else " (numpy not installed: no shared_memory figures)"))
    for size in sizes:
        data = bytes(bytearray(b"\x5a") * size)
        buf = bytearray(size)
        best, med = timed(lambda: buf.__setitem__(slice(None), data), args.reps)
        base = best
        print("size %d MiB" % (size >> 20))
        print("  %-12s %6d MiB  best %8.2f ms  median %8.2f ms" % ("copy", size >> 20, best, med))
        for method in ("spawn", "fork", "forkserver"):
            ctx = multiprocessing.get_context(method)
            print(" " + method)
            with ctx.Pool(1) as pool:
                pool.apply(echo, (b"x",))
                best, med = timed(lambda: pool.apply(echo, (data,)), args.reps)
                report("apply echo", size, best, med, base)
                if numpy is not None:
                    src = shared_memory.SharedMemory(create=True, size=size)
                    dst = shared_memory.SharedMemory(create=True, size=size)
                    a = numpy.ndarray((size,), dtype=numpy.uint8, buffer=src.buf)
                    out = numpy.empty(size, dtype=numpy.uint8)

                    def round_trip():
                        a[:] = numpy.frombuffer(data, dtype=numpy.uint8)
                        pool.apply(shm_echo, ((src.name, dst.name, size),))
                        out[:] = numpy.ndarray((size,), dtype=numpy.uint8, buffer=dst.buf)

                    best, med = timed(round_trip, args.reps)
                    report("numpy shm", size, best, med, base)
                    del a
                    src.close()
                    src.unlink()
                    dst.close()
                    dst.unlink()


if __name__ == "__main__":
    main()
