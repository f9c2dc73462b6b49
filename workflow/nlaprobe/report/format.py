"""Plain-text forms of the report's values: numbers, Intervals, training sizes and the
published-figure comparisons (nlaprobe.published).

inputs -> outputs: a value of a results file (None, bool, int, float, Interval, dict, list,
string) or a `published.Comparison` -> its text, not yet HTML-escaped.

Invariants:
- pure: no matplotlib, no HTML, no I/O;
- an Interval ({"value", "lo", "hi"[, "n"]}) reads "v [lo, hi]"; a finite float has three
  decimals ("%.3g" below 1e-3 or from 1e5 on); None, NaN and missing read "—";
- a published comparison shows the run one decimal finer than the published figure.
"""

from __future__ import annotations

import math
from typing import Any

from nlaprobe import published as P
from nlaprobe.report.data import get, is_interval

NO_DATA = "no data"
DASH = "—"


def n_text(n) -> str:
    """A training size for a legend: whole pairs (n* of an extrapolation rounded up), or —."""
    if n is None or not math.isfinite(n):
        return "—" if n is None else "∞"
    return f"{math.ceil(n):,}"


def fmt(x: Any) -> str:
    """Plain-text form of a table value (escape it before putting it in HTML)."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return DASH
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            return f"{x:.3f}"
        return f"{x:.3g}"
    if is_interval(x):
        if x["value"] is None:
            return DASH
        return f"{fmt(x['value'])} [{fmt(x['lo'])}, {fmt(x['hi'])}]"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in x.items()) if x else DASH
    if isinstance(x, list | tuple):
        if not x:
            return DASH
        shown = ", ".join(fmt(v) for v in x[:20])
        return shown if len(x) <= 20 else f"{shown}, … ({len(x)} values)"
    return str(x)


def pub_number(x: Any, decimals: int) -> str:
    """A number of a comparison: integers as such, floats to `decimals` places; — when none."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return DASH
    if isinstance(x, int):
        return str(x)
    return f"{x:.{decimals}f}" if math.isfinite(x) else DASH


def pub_run(c: P.Comparison) -> str:
    """The run's value (and interval), one decimal finer than the published figure."""
    d = c.figure.decimals + 1
    if P.is_interval(c.run):
        v = pub_number(c.run["value"], d)
        lo, hi = pub_number(c.run["lo"], d), pub_number(c.run["hi"], d)
        return v if lo == DASH and hi == DASH else f"{v} [{lo}, {hi}]"
    return pub_number(c.run, d)


def pub_verdict(c: P.Comparison) -> str:
    if c.verdict == "outside":
        return f"outside (run {c.relation})"
    if c.verdict == "no interval":
        return f"no interval (run {'= published' if c.relation == 'equal' else c.relation})"
    if c.verdict == "no data":
        return f"no data ({c.reason})" if c.reason else "no data"
    return c.verdict


def ci_level(res: Any) -> str:
    """The interval's level from the results file's alpha (meta.seeds.metrics.alpha): "95% CI"
    for 0.05; "CI" when the file records none."""
    alpha = get(res, "meta", "seeds", "metrics", "alpha")
    if isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha < 1:
        return f"{100 * (1 - alpha):g}% CI"
    return "CI"
