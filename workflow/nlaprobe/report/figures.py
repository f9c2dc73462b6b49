"""The report's figures: results objects -> matplotlib Figures and their PNG bytes.

inputs -> outputs: {aggregate name: results object} -> one `Figure` per registered figure (each
aggregate's module names its figures and their drawers, `figure_<figure name>` here) -> PNG
bytes.

Invariants:
- each drawer reads one aggregate, the one that registers its figure; when that aggregate is
  absent from the inputs it gives a placeholder figure saying so, so the report can be built
  from any subset of the aggregates;
- figures never fail on a missing or null value: they draw what exists and say "no data" where
  nothing does;
- E2, E4 and E5 show fve_train, with fve_own beside it, when any of their fidelity entries has a
  training Var; fve_own alone otherwise;
- `$` is escaped in every label drawn from the data, so a name is never parsed as mathtext;
- deterministic: the PNG bytes depend only on the inputs. Figures are bare `Figure`s on the Agg
  canvas (no pyplot, no global backend state), drawn under matplotlib's default style with a
  fixed rc, and saved without the Software metadata.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from nlaprobe import aggregates as AG
from nlaprobe.errors import DataError
from nlaprobe.report.data import (
    CONDITION_ORDER,
    KERNEL_ORDER,
    as_dict,
    best_of_n_entries,
    bounds,
    fve_metrics,
    get,
    has_train,
    num,
    numeric_order,
    ordered,
    value,
)
from nlaprobe.report.format import NO_DATA, fmt, n_text

# Fixed drawing settings on top of matplotlib's default style, so a user's matplotlibrc cannot
# change the bytes; svg.hashsalt only matters for SVG output but keeps any such output stable.
_RC = {
    "svg.hashsalt": "nlaprobe",
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
}
_DPI = 100
_PALETTE = tuple(mpl.colormaps["tab10"].colors)


def _label(s: Any) -> str:
    """A data string made safe as matplotlib text: `$` escaped (no mathtext), and a leading `_`
    protected (matplotlib hides legend labels that start with one)."""
    s = str(s).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with matplotlib.style.context("default"), mpl.rc_context(_RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _placeholder(name: str, source: str, reason: str | None = None) -> Figure:
    fig = new_figure(6, 2)
    ax = fig.add_subplot()
    ax.set_axis_off()
    text = reason or f"{NO_DATA}: {source} is not among the report inputs"
    ax.text(0.5, 0.5, _label(text), ha="center", va="center", transform=ax.transAxes)
    ax.set_title(_label(name))
    return fig


def _panels(
    title: str,
    entries: dict,
    width_each: float,
    height: float,
    metrics: Sequence[str] = ("fve_own",),
) -> tuple[Figure, list[tuple[Any, str, str, Any]]]:
    """One panel per (metric, entry): a row per metric, the entries side by side (at most 16
    inches wide); the figure and (axes, metric, key, entry) tuples. No entries give one panel
    titled `title` that says "no data"."""
    if not entries:
        fig = new_figure(6, 3.5)
        ax = fig.add_subplot()
        ax.set_title(title)
        _no_data(ax)
        return fig, []
    fig = new_figure(min(width_each * len(entries), 16.0), height * len(metrics))
    grid = fig.subplots(len(metrics), len(entries), squeeze=False)
    return fig, [
        (ax, m, k, v)
        for row, m in zip(grid, metrics, strict=True)
        for ax, (k, v) in zip(row, entries.items(), strict=True)
    ]


def _no_data(ax, text: str = NO_DATA) -> None:
    ax.text(0.5, 0.5, _label(text), ha="center", va="center", transform=ax.transAxes, color="0.4")


def _grouped_bars(
    title: str,
    groups: list[str],
    series: list[str],
    values: dict[str, dict[tuple[str, str], Any]],
) -> Figure:
    """One panel per metric of `values` (side by side, in its order), each with one group of
    bars per entry of `groups` and one bar per entry of `series` in each group; `values[metric]`
    maps (group, series) to an Interval. A bar with a null value is not drawn but marked
    "no data"; whiskers are drawn where the interval has both bounds."""
    each = max(6.0, min(16.0, 2.0 + 0.45 * len(groups) * max(len(series), 1)))
    fig = new_figure(min(16.0, each * len(values)), 4.2)
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    for ax, (metric, vals) in zip(axes, values.items(), strict=True):
        ax.set_title(_label(f"{title}: {metric}" if len(values) > 1 else title))
        ax.set_ylabel(metric)
        if not groups or not series:
            _no_data(ax)
            continue
        _bars(ax, groups, series, vals)
    return fig


def _bars(ax, groups: list[str], series: list[str], values: dict[tuple[str, str], Any]) -> None:
    step = 0.8 / len(series)
    handles = []
    for j, s in enumerate(series):
        color = _PALETTE[j % len(_PALETTE)]
        handles.append(Patch(facecolor=color, label=_label(s)))
        xs, hs, whiskers = [], [], []
        for i, g in enumerate(groups):
            x = i - 0.4 + step * (j + 0.5)
            v = value(values.get((g, s)))
            if v is None:
                ax.text(
                    x, 0, NO_DATA, rotation=90, ha="center", va="bottom", fontsize=7, color="0.4"
                )
                continue
            xs.append(x)
            hs.append(v)
            b = bounds(values.get((g, s)))
            if b is not None:
                whiskers.append((x, *b))
        if xs:
            ax.bar(xs, hs, width=step * 0.9, color=color, label=_label(s))
        if whiskers:
            wx, lo, hi = zip(*whiskers, strict=True)
            ax.vlines(wx, lo, hi, colors="black", linewidth=1.0)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_xticks(range(len(groups)), [_label(g) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.legend(handles=handles, loc="best")


def _family_series(
    families: dict, inner: str, preferred: Sequence[str]
) -> tuple[list[str], list[str], dict[str, dict[tuple[str, str], Any]]]:
    """Groups (families), series (the keys under `inner`, preferred first) and, per metric
    (fve_train and fve_own when any entry has a training Var, else fve_own), the values."""
    groups = list(families)
    series: list[str] = []
    entries: dict[tuple[str, str], Any] = {}
    for fam in groups:
        for what, entry in as_dict(get(families, fam, inner)).items():
            if what not in series:
                series.append(what)
            entries[(fam, what)] = entry
    metrics = fve_metrics(has_train(entries.values()))
    values = {m: {k: get(e, m) for k, e in entries.items()} for m in metrics}
    return groups, ordered(series, preferred), values


def figure_ban_conditions(results: dict[str, dict]) -> Figure:
    """fve_train (when configured) and fve_own, with their intervals, by decode condition, one
    group of bars per family."""
    with _style():
        res = results.get("quote_ablation")
        if res is None:
            return _placeholder("FVE by ban condition", "quote_ablation")
        families = as_dict(get(res, "data", "families"))
        groups, series, values = _family_series(families, "conditions", CONDITION_ORDER)
        return _grouped_bars("FVE by ban condition (E2)", groups, series, values)


def figure_redaction(results: dict[str, dict]) -> Figure:
    """fve_train (when configured) and fve_own, with their intervals, by redaction variant, one
    group of bars per family."""
    with _style():
        res = results.get("redaction")
        if res is None:
            return _placeholder("FVE by redaction variant", "redaction")
        data = as_dict(res.get("data"))
        order = [v for v in data.get("variants") or [] if isinstance(v, str)]
        groups, series, values = _family_series(as_dict(data.get("families")), "variants", order)
        return _grouped_bars("FVE by redaction variant (E4)", groups, series, values)


def _curve(ax, xs: Sequence[float], ivs: Sequence[Any], label: str, color) -> bool:
    """Plot the non-null values of `ivs` against `xs` as one line, their intervals as a band;
    False when no point has a value."""
    pts = [(x, value(iv), bounds(iv)) for x, iv in zip(xs, ivs, strict=True)]
    pts = [p for p in pts if p[1] is not None]
    if not pts:
        return False
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=label)
    band = [(p[0], *p[2]) for p in pts if p[2] is not None]
    if band:
        bx, lo, hi = zip(*band, strict=True)
        ax.fill_between(bx, lo, hi, color=color, alpha=0.2, linewidth=0)
    return True


def figure_best_of_n(results: dict[str, dict]) -> Figure:
    """Per family: best-of-n against n, with greedy (dashed) and the mean over all samples
    (dotted) as horizontal lines; a row of panels for fve_train when any family has a training
    Var, then one for fve_own."""
    with _style():
        res = results.get("best_of_n")
        if res is None:
            return _placeholder("FVE vs N", "best_of_n")
        families = as_dict(get(res, "data", "families"))
        metrics = fve_metrics(has_train(best_of_n_entries(families)))
        fig, panels = _panels("FVE vs N (E5)", families, 4.0, 3.6, metrics)
        for ax, metric, fam, entry in panels:
            ax.set_title(_label(f"{fam}: {metric} vs N (E5)"))
            ax.set_xlabel("n (best of the first n samples)")
            ax.set_ylabel(metric)
            best = as_dict(get(entry, "best_of"))
            ns = [n for n in numeric_order(list(best)) if num(n) is not None]
            drawn = _curve(
                ax,
                [float(n) for n in ns],
                [get(best, n, metric) for n in ns],
                "best of n",
                _PALETTE[0],
            )
            if ns:
                ax.set_xticks([float(n) for n in ns], ns)
            for key, label, style, color in (
                ("greedy", "greedy", "--", _PALETTE[1]),
                ("mean_over_samples", "mean over samples", ":", _PALETTE[2]),
            ):
                v = value(get(entry, key, metric))
                if v is None:
                    continue
                ax.axhline(v, linestyle=style, color=color, label=label)
                drawn = True
            if drawn:
                ax.legend(loc="best")
            else:
                _no_data(ax)
        return fig


def figure_transfer_matrix(results: dict[str, dict]) -> Figure:
    """Heatmap of fve_own, AV family (rows) x AR family (columns); each cell reads
    "value\\nnull x"; cells without a value are left blank (grey) and read "—"."""
    with _style():
        res = results.get("transfer_matrix")
        if res is None:
            return _placeholder("Transfer matrix", "transfer_matrix")
        data = as_dict(res.get("data"))
        cells = as_dict(data.get("cells"))
        fams = [f for f in data.get("families") or [] if isinstance(f, str)]
        for cell in cells.values():
            for role in ("av", "ar"):
                f = get(cell, role)
                if isinstance(f, str) and f not in fams:
                    fams.append(f)
        n = len(fams)
        fig = new_figure(max(4.0, 1.7 * n + 2.2), max(3.0, 1.3 * n + 1.4))
        ax = fig.add_subplot()
        ax.set_title("Transfer matrix: fve_own (E7)")
        if not n:
            _no_data(ax)
            return fig
        vals = np.full((n, n), np.nan)
        nulls: list[list[float | None]] = [[None] * n for _ in range(n)]
        for i, av in enumerate(fams):
            for j, ar in enumerate(fams):
                cell = cells.get(f"{av}__{ar}")
                if cell is not None:
                    v, nv = value(get(cell, "fve_own")), value(get(cell, "null_fve_own"))
                else:
                    v = value(get(data, "matrix", av, ar))
                    nv = value(get(data, "nulls", av, ar))
                vals[i, j] = np.nan if v is None else v
                nulls[i][j] = nv
        cmap = mpl.colormaps["viridis"].with_extremes(bad="0.85")
        finite = vals[np.isfinite(vals)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=lo, vmax=hi)
        for i in range(n):
            for j in range(n):
                v = vals[i, j]
                text = f"{fmt(None if np.isnan(v) else float(v))}\nnull {fmt(nulls[i][j])}"
                dark = not np.isnan(v) and (v - lo) / (hi - lo) < 0.5
                ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(n), [_label(f) for f in fams])
        ax.set_yticks(range(n), [_label(f) for f in fams])
        ax.set_xlabel("AR family (scores)")
        ax.set_ylabel("AV family (explains)")
        if finite.size:
            fig.colorbar(im, ax=ax, label="fve_own")
        else:
            _no_data(ax)
        return fig


def figure_ridge_scaling(results: dict[str, dict]) -> Figure:
    """Per direction src -> dst: ridge fve_own against n (log x), one line per kernel with its
    interval band; the text route (AV src -> AR dst, the E7 cross cell) as a dashed line."""
    with _style():
        res = results.get("ridge_scaling")
        if res is None:
            return _placeholder("Ridge FVE vs n", "ridge_scaling")
        directions = as_dict(get(res, "data", "directions"))
        fig, panels = _panels("Ridge FVE vs n (E8)", directions, 4.8, 3.8)
        for ax, _, key, entry in panels:
            src, dst = get(entry, "src"), get(entry, "dst")
            name = f"{src} → {dst}" if src is not None and dst is not None else key
            ax.set_title(_label(f"{name}: ridge FVE vs n (E8)"))
            ax.set_xlabel("n training pairs")
            ax.set_ylabel("fve_own")
            drawn = False
            kernels = as_dict(get(entry, "kernels"))
            for k, kernel in enumerate(ordered(list(kernels), KERNEL_ORDER)):
                curve = [p for p in get(kernels, kernel, "curve") or [] if isinstance(p, dict)]
                curve = [p for p in curve if (value(p.get("n")) or 0) > 0]
                curve.sort(key=lambda p: p["n"])
                cross = as_dict(get(kernels, kernel, "crossover"))
                label = kernel
                if cross.get("status") is not None:
                    label += f" (match: n = {n_text(cross.get('n_cross'))}, {cross['status']})"
                drawn |= _curve(
                    ax,
                    [float(p["n"]) for p in curve],
                    [p.get("fve_own") for p in curve],
                    _label(label),
                    _PALETTE[k % len(_PALETTE)],
                )
            text = value(get(entry, "text_route", "fve_own"))
            if text is not None:
                ax.axhline(
                    text, linestyle="--", color="black", label=_label(f"text route ({name})")
                )
                drawn = True
            if drawn:
                ax.set_xscale("log")
                ax.legend(loc="best")
            else:
                _no_data(ax)
        return fig


def draw_figure(name: str, results: dict[str, dict]) -> Figure:
    """Figure `name` (of its aggregate's module) drawn from `results`."""
    for fig, _ in AG.figures():
        if fig.name == name:
            return AG.resolve(fig.draw)(results)
    raise DataError(f"unknown figure {name!r}; valid: {AG.figure_names()}")


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure, stable across runs (no Software/date metadata)."""
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()
