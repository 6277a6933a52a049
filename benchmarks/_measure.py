"""Shared by the benchmark scripts: run one measurement in a fresh process."""
from __future__ import annotations

import multiprocessing as mp
import queue
import resource


def rss_mb() -> float:
    """This process's resident memory now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(target, *args):
    """Run ``target(*args, q)`` in a spawned process; return what it puts on ``q``.

    A fresh process per row keeps peak-memory figures per row and lets no row
    warm another's caches. A worker that dies raises instead of hanging.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:
        try:
            out = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"benchmark worker {args} died (exit code {p.exitcode})")
    p.join()
    return out
