#!/usr/bin/env python3
"""bench/bench-big.c's start figure done with Python, for comparison.

For every start method: a Pool(2) created until its first result is back, from a small
parent and then, in the same run, from the same process after it touched a big heap
(2 GiB unless --heap-mib says otherwise). Best and median of --reps runs (5), in ms.
"""

import argparse
import multiprocessing
import statistics
import time


def echo(x):
    return x


def start(method, reps):
    ctx = multiprocessing.get_context(method)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with ctx.Pool(2) as pool:
            pool.apply(echo, (1,))
            times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--heap-mib", type=int, default=2048)
    args = ap.parse_args()
    methods = ("spawn", "forkserver", "fork")
    small = {m: start(m, args.reps) for m in methods}
    heap = bytearray(args.heap_mib << 20)
    for i in range(0, len(heap), 4096):
        heap[i] = 1
    big = {m: start(m, args.reps) for m in methods}
    print("python_big: pool of 2 until its first result, best (median) of %d, ms; heap %d MiB"
          % (args.reps, args.heap_mib))
    for m in methods:
        print("  %-10s small %7.2f (%7.2f)   big %7.2f (%7.2f)"
              % (m, small[m][0], small[m][1], big[m][0], big[m][1]))
    del heap


if __name__ == "__main__":
    main()
