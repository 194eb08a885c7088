#!/usr/bin/env python3
"""bench/bench.c's work done with Python's multiprocessing, for comparison.

For every start method this Python offers (fork, forkserver, spawn): a pool of 2 created
until the first result is back, the sequential round trip of pool.apply, 50,000
apply_async trivial tasks, pool.map of 200,000 8-byte items (default chunksize), 64 MiB of
bytes echoed, and an idle worker's resident size. Medians over repetitions, written as
JSON in bench.c's shape (figures Python has no counterpart for are null). Standard
library only.
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

WORD = (0x5A5A5A5A01020304).to_bytes(8, "little")
METHODS = ("fork", "spawn", "forkserver")
METHOD_KEYS = ("pool_start_ms", "pool_start_warm_ms", "rt_apply_us", "rt_submit_us",
               "rt_apply_1cpu_us", "rt_submit_1cpu_us", "submit_per_s", "map_per_s", "stream_per_s",
               "stream_unordered_per_s",
               "echo_mb_s", "worker_rss_kib", "worker_anon_kib", "parent_rss_before_kib",
               "parent_rss_after_kib")


def echo(x):
    return x


def pid_after(delay):
    time.sleep(delay)
    return os.getpid()


def counts(quick):
    if quick:
        return dict(reps=2, start_reps=2, rt_tasks=20, submit_tasks=200, map_items=500,
                    echo_bytes=1 << 20)
    return dict(reps=5, start_reps=11, rt_tasks=5000, submit_tasks=50000, map_items=200000,
                echo_bytes=64 << 20)


def proc_status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def await_workers(pool, n):
    """Workers start asynchronously; a throughput figure must not include their start.
    Tasks that sleep a little are taken by distinct workers once all of them serve."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(set(pool.map(pid_after, [0.01] * n, chunksize=1))) == n:
            return
    raise RuntimeError(f"not all {n} workers were serving after 60 s")


def round_trips(pool, c):
    samples = []
    pool.apply(echo, (WORD,))
    for _ in range(c["reps"]):
        t0 = time.perf_counter()
        for _ in range(c["rt_tasks"]):
            pool.apply(echo, (WORD,))
        samples.append((time.perf_counter() - t0) * 1e6 / c["rt_tasks"])
    return samples


def progress(method, what):
    print(f"python_mp: {method}: {what}", file=sys.stderr, flush=True)


def measure(method, c):
    ctx = multiprocessing.get_context(method)
    samples = {k: [] for k in METHOD_KEYS}

    progress(method, "pool start")
    for _ in range(c["start_reps"]):
        t0 = time.perf_counter()
        pool = ctx.Pool(2)
        result = pool.apply(echo, (WORD,))
        samples["pool_start_ms"].append((time.perf_counter() - t0) * 1e3)
        assert result == WORD
        pool.close()
        pool.join()
    # bench.c's warm start has another pool open, which keeps its forkserver running
    # between pools; Python's forkserver runs for the program's life anyway.
    samples["pool_start_warm_ms"] = samples["pool_start_ms"]

    progress(method, "round trip, memory, large echo")
    with ctx.Pool(1) as pool:
        pid = pool.apply(os.getpid)
        for key, field in (("worker_rss_kib", "VmRSS"), ("worker_anon_kib", "RssAnon")):
            v = proc_status_kib(pid, field)
            if v is not None:
                samples[key].append(v)
        samples["rt_apply_us"] = round_trips(pool, c)
        data = bytes(range(256)) * (c["echo_bytes"] // 256)
        for rep in range(c["reps"] + 1):
            t0 = time.perf_counter()
            back = pool.apply(echo, (data,))
            secs = time.perf_counter() - t0
            assert back == data
            del back
            if rep > 0:  # the first one also pays for the worker's first large buffers
                samples["echo_mb_s"].append(len(data) / secs / 1e6)
        del data

    # As in bench.c: on one CPU the round trip does not pay for waking another CPU.
    if hasattr(os, "sched_setaffinity"):
        progress(method, "round trip on one CPU")
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(saved)})
        try:
            with ctx.Pool(1) as pool:
                # A forkserver's workers inherit the server's CPUs, not this process's.
                pool.apply(os.sched_setaffinity, (0, {min(saved)}))
                samples["rt_apply_1cpu_us"] = round_trips(pool, c)
        finally:
            os.sched_setaffinity(0, saved)

    progress(method, "apply_async and map throughput")
    items = [i.to_bytes(8, "little") for i in range(c["map_items"])]
    with ctx.Pool(2) as pool:
        await_workers(pool, 2)
        for _ in range(c["reps"]):
            t0 = time.perf_counter()
            pending = [pool.apply_async(echo, (WORD,)) for _ in range(c["submit_tasks"])]
            for r in pending:
                r.get()
            samples["submit_per_s"].append(c["submit_tasks"] / (time.perf_counter() - t0))
            del pending
        for _ in range(c["reps"]):
            t0 = time.perf_counter()
            out = pool.map(echo, items)
            samples["map_per_s"].append(len(items) / (time.perf_counter() - t0))
            assert out == items
            del out
            # imap and imap_unordered over a generator, with the chunksize map would pick
            # (their own default, 1, would be a straw man): pp_map_stream's counterparts.
            chunk, extra = divmod(len(items), 2 * 4)
            chunk += 1 if extra else 0
            t0 = time.perf_counter()
            n = sum(1 for _ in pool.imap(echo, iter(items), chunksize=chunk))
            samples["stream_per_s"].append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            n = sum(1 for _ in pool.imap_unordered(echo, iter(items), chunksize=chunk))
            samples["stream_unordered_per_s"].append(n / (time.perf_counter() - t0))
    return samples


def pool_starts(method, reps):
    """A pool of 2 until its first result, reps times: the times in ms."""
    ctx = multiprocessing.get_context(method)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        pool = ctx.Pool(2)
        assert pool.apply(echo, (WORD,)) == WORD
        times.append((time.perf_counter() - t0) * 1e3)
        pool.close()
        pool.join()
    return times


def big_heap(mib, reps):
    """bench-big.c's start figure: pool start for every method from this process small,
    then after it touched mib MiB of heap, in the same run."""
    available = [m for m in METHODS if m in multiprocessing.get_all_start_methods()]
    small = {m: pool_starts(m, reps) for m in available}
    t0 = time.perf_counter()
    heap = bytearray(b"\x01") * (mib << 20)  # written, not only reserved
    print(f"heap: {mib} MiB touched in {(time.perf_counter() - t0) * 1e3:.0f} ms; "
          f"best and median of {reps} runs")
    big = {m: pool_starts(m, reps) for m in available}
    for m in available:
        print(f"{m}\n  start    small {min(small[m]):8.2f} ms (median "
              f"{statistics.median(small[m]):8.2f})   big {min(big[m]):8.2f} ms (median "
              f"{statistics.median(big[m]):8.2f})")
    del heap


def figures(samples):
    d = {k: (statistics.median(v) if v else None) for k, v in samples.items()}
    d["samples"] = samples
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    ap.add_argument("--json", help="write the figures as JSON")
    ap.add_argument("--big-heap-mib", type=int, metavar="N",
                    help="only pool start, from this process small and then with N MiB "
                    "of touched heap (bench-big's case)")
    args = ap.parse_args()
    if args.big_heap_mib:
        big_heap(args.big_heap_mib, 2 if args.quick else 5)
        return
    c = counts(args.quick)
    available = multiprocessing.get_all_start_methods()

    results = {}
    for m in METHODS:
        results[m] = {"available": m in available}
        if m in available:
            results[m].update(figures(measure(m, c)))

    u = platform.uname()
    doc = {
        "implementation": "python-multiprocessing",
        "version": platform.python_version(),
        "mode": "quick" if args.quick else "full",
        "host": {"os": u.system, "release": u.release, "machine": u.machine,
                 "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count(), "cpu_model": cpu_model()},
        "params": {"repetitions": c["reps"], "start_repetitions": c["start_reps"],
                   "rt_tasks": c["rt_tasks"], "submit_tasks": c["submit_tasks"],
                   "map_items": c["map_items"], "echo_bytes": c["echo_bytes"],
                   "rss_tasks": None, "os_bytes": None},
        "methods": results,
        "os": None,
    }

    print(f"Python {doc['version']} multiprocessing, {doc['mode']} mode, "
          f"{doc['host']['cpus']} CPUs; medians of {c['reps']} runs "
          f"(pool start: {c['start_reps']})\n")
    labels = (("pool_start_ms", "pool of 2 created until first result, ms"),
              ("rt_apply_us", "round trip, pool.apply, 1 worker, us"),
              ("rt_apply_1cpu_us", "round trip, pool.apply, one CPU, us"),
              ("submit_per_s", f"{c['submit_tasks']} apply_async, 2 workers, tasks/s"),
              ("map_per_s", f"map {c['map_items']} x 8 B, 2 workers, items/s"),
              ("stream_per_s", "imap, same items, items/s"),
              ("stream_unordered_per_s", "imap_unordered, same items, items/s"),
              ("echo_mb_s", f"echo {c['echo_bytes'] >> 20} MiB, MB/s"),
              ("worker_rss_kib", "idle worker VmRSS, KiB"),
              ("worker_anon_kib", "idle worker RssAnon, KiB"))
    print(f"{'python':46}" + "".join(f" {m:>11}" for m in METHODS))
    for key, label in labels:
        cells = []
        for m in METHODS:
            r = results[m]
            v = r.get(key) if r["available"] else "n/a"
            cells.append(v if isinstance(v, str) else "-" if v is None else
                         f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 10 else f"{v:.3g}")
        print(f"{label:46}" + "".join(f" {x:>11}" for x in cells))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
