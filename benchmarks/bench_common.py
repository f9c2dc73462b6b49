"""Timing shared by the benchmark scripts (imported as a sibling module when a script runs)."""

from __future__ import annotations

import time


def best_times(fns, repeats: int):
    """Best wall time of each function and its last result; runs alternate (a, b, a, b, ...)
    so that a change in machine load affects both sides alike."""
    best = [float("inf")] * len(fns)
    results = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best, results
