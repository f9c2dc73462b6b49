"""The n-scaling curve of the ridge baseline (E8, SPEC §6): which training sizes to fit and where
the fitted curve reaches the text route. Numpy only (no torch), so planning the DAG
(nlaprobe.plan) can use it without importing the ridge fitting code.

inputs -> outputs
    log_spaced_sizes(n_max, n_points, n_min) -> sorted unique training sizes, n_max last
    crossover(ns, fves, target)              -> {"slope", "intercept", "n_cross",
                                                 "log10_n_cross", "status"}

Invariants
- crossover fits fve = a + b log10(n) by least squares. A line with b > 0 always reaches any
  target eventually, so "never" covers only b <= 0 (or fewer than 2 distinct n) with no observed
  point at the target; an "extrapolated" n* can be astronomically large (seeds/001 puts
  qwen -> gemma at ~1e7 pairs, "effectively never"), or beyond float range (n_cross = inf;
  log10_n_cross stays finite): callers report such n* as such.
- Bad input raises ValueError naming the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


def _positive_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {x!r}")
    return int(x)


def log_spaced_sizes(n_max: int, n_points: int, n_min: int) -> list[int]:
    """n_points sizes log-spaced from n_min to n_max inclusive, rounded to integers (halves up),
    duplicates dropped, ascending; n_max is always the last. n_min > n_max -> [n_max]."""
    hi = _positive_int(n_max, "n_max")
    k = _positive_int(n_points, "n_points")
    lo = _positive_int(n_min, "n_min")
    if lo >= hi or k == 1:
        return [hi]
    sizes = np.floor(np.geomspace(lo, hi, k) + 0.5).astype(np.int64)
    return sorted({int(s) for s in sizes} | {hi})


def crossover(ns: Sequence[int], fves: Sequence[float], target: float) -> dict:
    """Where a ridge curve fve(n) reaches `target` (the text route's fve).

    Least-squares fit fve = a + b log10(n) over all points (repeated n allowed). Returns
    {"slope": b, "intercept": a, "n_cross", "log10_n_cross", "status"} with status
      "reached":      some observed fve >= target; n_cross = the smallest such n;
      "extrapolated": no observed point reaches it and b > 0; n_cross = 10**((target - a)/b)
                      (normally above max(ns); below it only when the points scatter about the
                      line); inf past float range, log10_n_cross = (target - a)/b stays finite;
      "never":        no observed point reaches it and b <= 0, or fewer than 2 distinct n;
                      n_cross and log10_n_cross None.
    slope and intercept are None with fewer than 2 distinct n. A line with b > 0 crosses every
    target eventually, so "never" means only a flat or falling fit; an astronomically large n*
    is for the caller to report as such."""
    n = np.asarray(ns, dtype=np.float64)
    f = np.asarray(fves, dtype=np.float64)
    if n.ndim != 1 or f.ndim != 1 or n.size != f.size:
        raise ValueError(
            f"ns and fves must be 1-D of equal length, got shapes {n.shape} and {f.shape}"
        )
    if n.size == 0:
        raise ValueError("ns is empty; give at least one (n, fve) point")
    bad = np.nonzero(~(np.isfinite(n) & (n > 0)))[0]
    if bad.size:
        raise ValueError(f"ns[{bad[0]}] = {float(n[bad[0]])!r}; every n must be finite and > 0")
    bad = np.nonzero(~np.isfinite(f))[0]
    if bad.size:
        raise ValueError(f"fves[{bad[0]}] = {float(f[bad[0]])!r}; every fve must be finite")
    t = float(target)
    if not math.isfinite(t):
        raise ValueError(f"target must be finite, got {target!r}")

    slope = intercept = None
    if np.unique(n).size >= 2:
        lx = np.log10(n)
        dx = lx - lx.mean()
        slope = float((dx * (f - f.mean())).sum() / (dx * dx).sum())
        intercept = float(f.mean() - slope * lx.mean())

    hit = f >= t
    if hit.any():
        n_cross = float(n[hit].min())
        return _cross(slope, intercept, n_cross, math.log10(n_cross), "reached")
    if slope is None or slope <= 0:
        return _cross(slope, intercept, None, None, "never")
    log_n = (t - intercept) / slope
    n_cross = 10.0**log_n if log_n < 308.0 else math.inf
    return _cross(slope, intercept, n_cross, log_n, "extrapolated")


def _cross(slope, intercept, n_cross, log10_n_cross, status) -> dict:
    return {
        "slope": slope,
        "intercept": intercept,
        "n_cross": n_cross,
        "log10_n_cross": log10_n_cross,
        "status": status,
    }
