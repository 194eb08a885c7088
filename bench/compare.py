#!/usr/bin/env python3
"""Reads the JSON of bench (procpool) and of python_mp.py, and prints procpool against
Python's multiprocessing and against the OS figures of the same run, with the project's
targets beside them. Information only: benchmarks never pass or fail anything."""

import argparse
import json

METHODS = ("fork", "spawn", "forkserver")
# (key, label, lower is better). Pool start is compared warm: Python's forkserver outlives
# its pools, procpool's only while another pool is open.
VERSUS_PYTHON = (
    ("pool_start_warm_ms", "pool of 2 to first result, ms", True),
    ("rt_apply_us", "round trip (apply), us", True),
    ("rt_apply_1cpu_us", "round trip (apply), one CPU, us", True),
    ("submit_per_s", "submit/apply_async, tasks/s", False),
    ("map_per_s", "map of 8-byte items, items/s", False),
    ("stream_per_s", "stream in order (imap), items/s", False),
    ("stream_unordered_per_s", "stream unordered (imap_unordered), items/s", False),
    ("echo_mb_s", "large echo, MB/s", False),
    ("worker_rss_kib", "idle worker VmRSS, KiB", True),
)


def num(v):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.3g}"


def times(r):
    return f"{r:.3g}x" if r else "-"


def advantage(pp, py, lower):
    """How many times better procpool is: > 1 better, < 1 worse."""
    if pp is None or py is None or pp <= 0 or py <= 0:
        return None
    return py / pp if lower else pp / py


def available(doc, method):
    return bool((doc["methods"].get(method) or {}).get("available"))


def fig(doc, method, key):
    return doc["methods"][method].get(key) if available(doc, method) else None


def versus_python(pp, py):
    print(f"procpool {pp['version']} vs Python {py['version']} multiprocessing "
          f"(advantage > 1: procpool is better)")
    print(f"{'figure':34} {'method':10} {'procpool':>12} {'python':>12} {'advantage':>10}"
          f"   {'python best':>20} {'advantage':>10}")
    for key, label, lower in VERSUS_PYTHON:
        ranked = [(fig(py, m, key), m) for m in METHODS if fig(py, m, key) is not None]
        best = (min if lower else max)(ranked) if ranked else (None, "")
        for m in METHODS:
            a, b = fig(pp, m, key), fig(py, m, key)
            pp_cell = num(a) if available(pp, m) else "n/a"
            py_cell = num(b) if available(py, m) else "n/a"
            best_cell = f"{num(best[0])} ({best[1]})" if best[0] else "-"
            print(f"{label:34} {m:10} {pp_cell:>12} {py_cell:>12} "
                  f"{times(advantage(a, b, lower)):>10}   {best_cell:>20} "
                  f"{times(advantage(a, best[0], lower)):>10}")
    print()


def row(label, value, limit_text="", ratio=None, target="", ok=None):
    status = "" if not target else "n/a" if ok is None else "meets" if ok else "misses"
    print(f"{label:50} {value:>14} {limit_text:>30} {times(ratio):>9} {target:>11}  {status}")


def ratio_of(a, b):
    return a / b if a and b else None


def versus_os(pp):
    os_ = pp["os"] or {}
    print("procpool vs the OS (same run) and the project's targets")
    print(f"{'figure':50} {'procpool':>14} {'OS figure':>30} {'ratio':>9} {'target':>11}  "
          "status")
    fork_us, spawn_us = os_.get("fork_wait_us"), os_.get("spawn_child_us")
    pipe, sock = os_.get("pipe_pingpong_us"), os_.get("socketpair_pingpong_us")
    pipe1, sock1 = os_.get("pipe_pingpong_1cpu_us"), os_.get("socketpair_pingpong_1cpu_us")
    sock_bw, mem = os_.get("socketpair_gb_s"), os_.get("memcpy_gb_s")
    for m in METHODS:
        if not available(pp, m):
            row(f"{m}: start method not available", "n/a")
            continue
        cold, warm = fig(pp, m, "pool_start_ms"), fig(pp, m, "pool_start_warm_ms")
        if m == "spawn":
            r = ratio_of(cold * 1e3 if cold else None, spawn_us)
            row(f"{m}: pool start / start a program", f"{num(cold)} ms",
                f"posix_spawn {num(spawn_us)} us", r, "<= 2x", r <= 2 if r else None)
        elif m == "fork":
            row(f"{m}: pool start / fork+wait", f"{num(cold)} ms", f"fork {num(fork_us)} us",
                ratio_of(cold * 1e3 if cold else None, fork_us), "<= 0.5 ms",
                cold <= 0.5 if cold else None)
        else:
            row(f"{m}: pool start, cold / fork+wait", f"{num(cold)} ms",
                f"fork {num(fork_us)} us", ratio_of(cold * 1e3 if cold else None, fork_us))
            row(f"{m}: pool start, warm / fork+wait", f"{num(warm)} ms",
                f"fork {num(fork_us)} us", ratio_of(warm * 1e3 if warm else None, fork_us))
        # The target is judged on one CPU, where neither figure pays for waking a CPU.
        for key, name in (("rt_apply_1cpu_us", "pp_apply"),
                          ("rt_submit_1cpu_us", "pp_submit+cb")):
            v = fig(pp, m, key)
            r = ratio_of(v, pipe1)
            row(f"{m}: round trip {name}, one CPU / pipe", f"{num(v)} us",
                f"pipe {num(pipe1)}, sockpair {num(sock1)}", r, "<= 5x", r <= 5 if r else None)
        v = fig(pp, m, "rt_apply_us")
        row(f"{m}: round trip pp_apply, free CPUs / pipe", f"{num(v)} us",
            f"pipe {num(pipe)}, sockpair {num(sock)}", ratio_of(v, pipe))
        v = fig(pp, m, "submit_per_s")
        row(f"{m}: submitted tasks/s", num(v), "", ratio_of(v, 1e6), ">= 1M/s",
            v >= 1e6 if v else None)
        v = fig(pp, m, "map_per_s")
        row(f"{m}: pp_map items/s", num(v), "", ratio_of(v, 30e6), ">= 30M/s",
            v >= 30e6 if v else None)
        # The echo crosses the pool's channel (a socket pair) once each way.
        v = fig(pp, m, "echo_mb_s")
        row(f"{m}: echo MB/s / half one-way sockpair", num(v),
            f"sockpair {num(sock_bw)}, memcpy {num(mem)} GB/s",
            ratio_of(v, sock_bw * 1e3 / 2 if sock_bw else None), ">= 1500",
            v >= 1500 if v else None)
        v, anon = fig(pp, m, "worker_rss_kib"), fig(pp, m, "worker_anon_kib")
        if m == "spawn":
            row(f"{m}: idle worker VmRSS (anon {num(anon)} KiB)", f"{num(v)} KiB", "", None,
                "< 2048 KiB", v < 2048 if v else None)
        else:
            row(f"{m}: idle worker VmRSS (anon {num(anon)} KiB)", f"{num(v)} KiB")
        before, after = fig(pp, m, "parent_rss_before_kib"), fig(pp, m, "parent_rss_after_kib")
        tasks = pp["params"]["rss_tasks"]
        if before is not None and after is not None:
            # A few pages of allocator noise are not growth; a byte per task would be.
            row(f"{m}: parent RSS growth over {tasks} tasks", f"{after - before:+.0f} KiB",
                f"{num(before)} -> {num(after)} KiB", None, "none", after - before <= 64)
        else:
            row(f"{m}: parent RSS growth over {tasks} tasks", "-", "", None, "none")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("procpool_json")
    ap.add_argument("python_json", nargs="?")
    args = ap.parse_args()
    with open(args.procpool_json) as f:
        pp = json.load(f)
    if args.python_json:
        with open(args.python_json) as f:
            versus_python(pp, json.load(f))
    versus_os(pp)


if __name__ == "__main__":
    main()
