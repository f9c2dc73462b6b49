"""The report: aggregate results JSON -> `results/report.html` + `results/figures/<name>.png`.

inputs -> outputs: results JSON files (`{"meta": {...}, "data": {...}}`, SPEC §8; the name of an
aggregate is its file stem) -> one self-contained HTML page (CSS inline, figures inline as base64
PNG, no external resource) and one PNG per figure of the registered aggregates.

What the report shows of an aggregate (its heading, its section's HTML, its figures and their
captions, the order of sections) is declared by its module in nlaprobe.aggregates; the renderers
below are referenced from there.

Invariants:
- every aggregate among the inputs gets its tables: a registered one in the layout its module
  names (section order: the registry's), any other one as a flat key/value table after them,
  so nothing is dropped;
- formatting: an Interval ({"value", "lo", "hi"[, "n"]}) reads "v [lo, hi]"; a finite float has
  three decimals ("%.3g" below 1e-3 or from 1e5 on); None, NaN and missing read "—";
- every string that comes from the data (family names, conditions, meta values) is HTML-escaped,
  and `$` is escaped in figure labels so a name is never parsed as mathtext;
- E2, E4 and E5 (tables and figures) show fve_train, with fve_own beside it, and both paired
  differences, when any of their fidelity entries has a training Var (`var_train`); fve_own
  alone otherwise;
- figures never fail on a missing or null value: they draw what exists and say "no data" where
  nothing does; an aggregate absent from the inputs gives a placeholder figure saying so, so the
  report can be built from any subset of the aggregates;
- published figures (nlaprobe.published): when every input's checkpoint ids are the paper's, a
  line at the top counts the published figures within the run's intervals and each section
  ends with a "This run vs published" table of its figures; otherwise one line says the
  comparison applies only to the paper's checkpoints, and no section has the table;
- deterministic: the page and the PNG bytes depend only on the inputs (the page shows each
  input's `meta`, nothing else varies). Figures are bare `Figure`s on the Agg canvas (no pyplot,
  no global backend state), drawn under matplotlib's default style with a fixed rc, and saved
  without the Software metadata;
- atomic: every PNG and the page are written under a temporary name and renamed on success.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from nlaprobe import aggregates as AG
from nlaprobe import constants as C
from nlaprobe import published as P
from nlaprobe.errors import DataError
from nlaprobe.io import atomic_path, read_json, write_text

log = logging.getLogger(__name__)

CONDITION_ORDER = C.BAN_CONDITIONS
KERNEL_ORDER = ("linear", "rbf")
NO_DATA = "no data"
DASH = "—"

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


# ----------------------------------------------------------------------------- loading


def load_results(paths: Sequence[str]) -> dict[str, dict]:
    """{file stem: parsed results JSON}. A missing, unreadable or malformed file (not an object
    with "meta" and "data" objects), or two files with the same stem, raise DataError naming it."""
    out: dict[str, dict] = {}
    for p in paths:
        path = Path(p)
        obj = read_json(path)
        if not (
            isinstance(obj, dict)
            and isinstance(obj.get("meta"), dict)
            and isinstance(obj.get("data"), dict)
        ):
            found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataError(
                f"{path}: expected a results object with 'meta' and 'data' objects, found {found}"
            )
        name = path.stem
        if name in out:
            raise DataError(f"{path}: a second results file named {name!r} among the inputs")
        out[name] = obj
    return out


# ----------------------------------------------------------------------------- formatting


def is_interval(x: Any) -> bool:
    return isinstance(x, dict) and "value" in x and "lo" in x and "hi" in x


def _n_text(n) -> str:
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


def _value(x: Any) -> float | None:
    """The number of an Interval or a bare number; None when missing or not finite."""
    if is_interval(x):
        x = x["value"]
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _bounds(x: Any) -> tuple[float, float] | None:
    """(lo, hi) of an Interval whose value and bounds are all finite numbers."""
    if not is_interval(x) or _value(x) is None:
        return None
    lo, hi = _value(x["lo"]), _value(x["hi"])
    return None if lo is None or hi is None else (lo, hi)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _ordered(keys: Sequence[str], preferred: Sequence[str]) -> list[str]:
    """`keys` with the preferred ones first (in that order), the rest in their given order."""
    first = [k for k in preferred if k in keys]
    return first + [k for k in keys if k not in first]


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _numeric_order(keys: Sequence[str]) -> list[str]:
    def key(k: str) -> tuple[int, float, str]:
        try:
            return (0, float(k), k)
        except ValueError:
            return (1, 0.0, k)

    return sorted(keys, key=key)


def _label(s: Any) -> str:
    """A data string made safe as matplotlib text: `$` escaped (no mathtext), and a leading `_`
    protected (matplotlib hides legend labels that start with one)."""
    s = str(s).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


# ----------------------------------------------------------------------------- figures


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with matplotlib.style.context("default"), mpl.rc_context(_RC):
        yield


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _placeholder(name: str, source: str, reason: str | None = None) -> Figure:
    fig = _new_figure(6, 2)
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
        fig = _new_figure(6, 3.5)
        ax = fig.add_subplot()
        ax.set_title(title)
        _no_data(ax)
        return fig, []
    fig = _new_figure(min(width_each * len(entries), 16.0), height * len(metrics))
    grid = fig.subplots(len(metrics), len(entries), squeeze=False)
    return fig, [
        (ax, m, k, v)
        for row, m in zip(grid, metrics, strict=True)
        for ax, (k, v) in zip(row, entries.items(), strict=True)
    ]


def _no_data(ax, text: str = NO_DATA) -> None:
    ax.text(0.5, 0.5, _label(text), ha="center", va="center", transform=ax.transAxes, color="0.4")


def _metrics(train: bool) -> tuple[str, ...]:
    """The FVE figures a table or figure of E2, E4 or E5 shows: fve_train first, with fve_own
    beside it, when a training Var is configured (the published tables quote fve_train);
    fve_own only otherwise."""
    return ("fve_train", "fve_own") if train else ("fve_own",)


def _has_train(entries: Iterable[Any]) -> bool:
    """Whether any of the fidelity dicts `entries` has a training Var (`var_train`)."""
    return any(_value(_get(e, "var_train")) is not None for e in entries)


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
    fig = _new_figure(min(16.0, each * len(values)), 4.2)
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
            v = _value(values.get((g, s)))
            if v is None:
                ax.text(
                    x, 0, NO_DATA, rotation=90, ha="center", va="bottom", fontsize=7, color="0.4"
                )
                continue
            xs.append(x)
            hs.append(v)
            b = _bounds(values.get((g, s)))
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
        for what, entry in _d(_get(families, fam, inner)).items():
            if what not in series:
                series.append(what)
            entries[(fam, what)] = entry
    metrics = _metrics(_has_train(entries.values()))
    values = {m: {k: _get(e, m) for k, e in entries.items()} for m in metrics}
    return groups, _ordered(series, preferred), values


def figure_ban_conditions(results: dict[str, dict]) -> Figure:
    """fve_train (when configured) and fve_own, with their intervals, by decode condition, one
    group of bars per family."""
    with _style():
        res = results.get("quote_ablation")
        if res is None:
            return _placeholder("FVE by ban condition", "quote_ablation")
        families = _d(_get(res, "data", "families"))
        groups, series, values = _family_series(families, "conditions", CONDITION_ORDER)
        return _grouped_bars("FVE by ban condition (E2)", groups, series, values)


def figure_redaction(results: dict[str, dict]) -> Figure:
    """fve_train (when configured) and fve_own, with their intervals, by redaction variant, one
    group of bars per family."""
    with _style():
        res = results.get("redaction")
        if res is None:
            return _placeholder("FVE by redaction variant", "redaction")
        data = _d(res.get("data"))
        order = [v for v in data.get("variants") or [] if isinstance(v, str)]
        groups, series, values = _family_series(_d(data.get("families")), "variants", order)
        return _grouped_bars("FVE by redaction variant (E4)", groups, series, values)


def _curve(ax, xs: Sequence[float], ivs: Sequence[Any], label: str, color) -> bool:
    """Plot the non-null values of `ivs` against `xs` as one line, their intervals as a band;
    False when no point has a value."""
    pts = [(x, _value(iv), _bounds(iv)) for x, iv in zip(xs, ivs, strict=True)]
    pts = [p for p in pts if p[1] is not None]
    if not pts:
        return False
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=label)
    band = [(p[0], *p[2]) for p in pts if p[2] is not None]
    if band:
        bx, lo, hi = zip(*band, strict=True)
        ax.fill_between(bx, lo, hi, color=color, alpha=0.2, linewidth=0)
    return True


def _best_of_n_entries(families: dict) -> list[Any]:
    """Every fidelity dict of an E5 result: greedy, the mean over samples, each best-of-n."""
    return [
        e
        for fe in families.values()
        for e in (
            _get(fe, "greedy"),
            _get(fe, "mean_over_samples"),
            *_d(_get(fe, "best_of")).values(),
        )
    ]


def figure_best_of_n(results: dict[str, dict]) -> Figure:
    """Per family: best-of-n against n, with greedy (dashed) and the mean over all samples
    (dotted) as horizontal lines; a row of panels for fve_train when any family has a training
    Var, then one for fve_own."""
    with _style():
        res = results.get("best_of_n")
        if res is None:
            return _placeholder("FVE vs N", "best_of_n")
        families = _d(_get(res, "data", "families"))
        metrics = _metrics(_has_train(_best_of_n_entries(families)))
        fig, panels = _panels("FVE vs N (E5)", families, 4.0, 3.6, metrics)
        for ax, metric, fam, entry in panels:
            ax.set_title(_label(f"{fam}: {metric} vs N (E5)"))
            ax.set_xlabel("n (best of the first n samples)")
            ax.set_ylabel(metric)
            best = _d(_get(entry, "best_of"))
            ns = [n for n in _numeric_order(list(best)) if _num(n) is not None]
            drawn = _curve(
                ax,
                [float(n) for n in ns],
                [_get(best, n, metric) for n in ns],
                "best of n",
                _PALETTE[0],
            )
            if ns:
                ax.set_xticks([float(n) for n in ns], ns)
            for key, label, style, color in (
                ("greedy", "greedy", "--", _PALETTE[1]),
                ("mean_over_samples", "mean over samples", ":", _PALETTE[2]),
            ):
                v = _value(_get(entry, key, metric))
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
        data = _d(res.get("data"))
        cells = _d(data.get("cells"))
        fams = [f for f in data.get("families") or [] if isinstance(f, str)]
        for cell in cells.values():
            for role in ("av", "ar"):
                f = _get(cell, role)
                if isinstance(f, str) and f not in fams:
                    fams.append(f)
        n = len(fams)
        fig = _new_figure(max(4.0, 1.7 * n + 2.2), max(3.0, 1.3 * n + 1.4))
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
                    v, nv = _value(_get(cell, "fve_own")), _value(_get(cell, "null_fve_own"))
                else:
                    v = _value(_get(data, "matrix", av, ar))
                    nv = _value(_get(data, "nulls", av, ar))
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
        directions = _d(_get(res, "data", "directions"))
        fig, panels = _panels("Ridge FVE vs n (E8)", directions, 4.8, 3.8)
        for ax, _, key, entry in panels:
            src, dst = _get(entry, "src"), _get(entry, "dst")
            name = f"{src} → {dst}" if src is not None and dst is not None else key
            ax.set_title(_label(f"{name}: ridge FVE vs n (E8)"))
            ax.set_xlabel("n training pairs")
            ax.set_ylabel("fve_own")
            drawn = False
            kernels = _d(_get(entry, "kernels"))
            for k, kernel in enumerate(_ordered(list(kernels), KERNEL_ORDER)):
                curve = [p for p in _get(kernels, kernel, "curve") or [] if isinstance(p, dict)]
                curve = [p for p in curve if (_value(p.get("n")) or 0) > 0]
                curve.sort(key=lambda p: p["n"])
                cross = _d(_get(kernels, kernel, "crossover"))
                label = kernel
                if cross.get("status") is not None:
                    label += f" (match: n = {_n_text(cross.get('n_cross'))}, {cross['status']})"
                drawn |= _curve(
                    ax,
                    [float(p["n"]) for p in curve],
                    [p.get("fve_own") for p in curve],
                    _label(label),
                    _PALETTE[k % len(_PALETTE)],
                )
            text = _value(_get(entry, "text_route", "fve_own"))
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


def figure_names() -> list[str]:
    """Every figure of the registered aggregates, in report order."""
    return AG.figure_names()


def figure_source(name: str) -> str:
    """The aggregate a figure is drawn from."""
    for fig, agg in AG.figures():
        if fig.name == name:
            return agg
    raise DataError(f"unknown figure {name!r}; valid: {figure_names()}")


def draw_figure(name: str, results: dict[str, dict]) -> Figure:
    """Figure `name` (of its aggregate's module) drawn from `results`."""
    for fig, _ in AG.figures():
        if fig.name == name:
            return AG.resolve(fig.draw)(results)
    raise DataError(f"unknown figure {name!r}; valid: {figure_names()}")


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure, stable across runs (no Software/date metadata)."""
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


# ----------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td.key, th.key { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption, .note { color: #555; font-size: 0.9em; }
.warn { color: #a40; }
.published { font-size: 0.95em; }
code { font-size: 0.95em; }
"""

FIDELITY_COLUMNS = (
    ("n", "n"),
    ("tag_failures", "tag failures"),
    ("fve_own", "fve_own"),
    ("fve_train", "fve_train"),
    ("nmse_mean", "nmse mean"),
    ("nmse_median", "nmse median"),
    ("cos_mean", "cos mean"),
    ("var_own", "Var own"),
    ("frac_fve_neg", "share fve<0"),
    ("frac_fve_gt_half", "share fve>0.5"),
    ("fve_own_strict", "fve_own strict"),
)
BASELINE_EXTRA = (
    ("var_train", "Var train"),
    ("fve_train_strict", "fve_train strict"),
    ("nmse_mean_strict", "nmse mean strict"),
    ("n_rows", "rows"),
    ("decode_errors", "decode errors"),
)


def _fid_columns(train: bool) -> tuple[tuple[str, str], ...]:
    """FIDELITY_COLUMNS for the E2, E4 and E5 tables (see `_metrics`): fve_train, then fve_own
    beside it, when a training Var is configured; no fve_train column otherwise."""
    own = [c for c in FIDELITY_COLUMNS if c[0] != "fve_train"]
    if not train:
        return tuple(own)
    i = [k for k, _ in own].index("fve_own")
    return (*own[:i], ("fve_train", "fve_train"), *own[i:])


def _diff_heads(against: str, train: bool) -> list[str]:
    """Headers of the paired-difference columns: Δfve_train (when configured) and Δfve_own."""
    return [f"Δ{m} vs {against}" for m in _metrics(train)]


def _diff_cells(diff: Any, train: bool) -> list[Any]:
    """A paired difference of experiments.paired_fve_diff as its cells: its "train" entry
    (Δfve_train, when configured), then itself (Δfve_own)."""
    return ([_get(diff, "train")] if train else []) + [diff]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _anchor(name: str) -> str:
    return "s-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


_KEY = ' class="key"'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], n_keys: int = 1) -> str:
    """An HTML table; the first `n_keys` columns are left-aligned keys; every cell is `fmt`ed
    and escaped."""
    if not rows:
        return f'<p class="note">{NO_DATA}</p>'
    head = "".join(f"<th{_KEY if i < n_keys else ''}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f"<td{_KEY if i < n_keys else ''}>{_e(fmt(c))}</td>" for i, c in enumerate(r))
        + "</tr>\n"
        for r in rows
    )
    return f'<div class="scroll"><table>\n<tr>{head}</tr>\n{body}</table></div>'


def _fid(entry: Any, columns: Sequence[tuple[str, str]] = FIDELITY_COLUMNS) -> list[Any]:
    return [_get(entry, k) for k, _ in columns]


def _heads(columns: Sequence[tuple[str, str]] = FIDELITY_COLUMNS) -> list[str]:
    return [h for _, h in columns]


def _h3(text: str) -> str:
    return f"<h3>{_e(text)}</h3>"


def _html_fve_baseline(data: dict) -> str:
    cols = FIDELITY_COLUMNS + BASELINE_EXTRA
    rows = [[fam, *_fid(e, cols)] for fam, e in _d(data.get("families")).items()]
    return _table(["family", *_heads(cols)], rows)


def _html_quote_ablation(data: dict) -> str:
    families = _d(data.get("families"))
    train = _has_train(e for fe in families.values() for e in _d(_get(fe, "conditions")).values())
    cols = _fid_columns(train)
    fid, sub, subsets = [], [], []
    for fam, fe in families.items():
        conds = _d(_get(fe, "conditions"))
        for cond in _ordered(list(conds), CONDITION_ORDER):
            e = conds[cond]
            fid.append([fam, cond, *_fid(e, cols), *_diff_cells(_get(e, "diff_vs_greedy"), train)])
            sub.append(
                [
                    fam,
                    cond,
                    _get(e, "n_banned_tokens"),
                    _get(e, "leaks"),
                    _get(e, "share_single_quotes"),
                    _get(e, "share_hatch"),
                    _get(e, "hatch_kinds"),
                ]
            )
            for key, name in (("hatch_free", "hatch-free"), ("hatch_using", "hatch-using")):
                if _get(e, key) is not None:
                    subsets.append([fam, cond, name, *_fid(e[key], cols)])
    parts = [
        _h3("Fidelity per condition"),
        _table(["family", "condition", *_heads(cols), *_diff_heads("greedy", train)], fid, 2),
        _h3("Quote substitution"),
        _table(
            [
                "family",
                "condition",
                "banned tokens",
                "leaks",
                "share single quotes",
                "share escape hatch",
                "hatch kinds",
            ],
            sub,
            2,
        ),
    ]
    if subsets:
        parts += [
            _h3("Hatch-free and hatch-using subsets"),
            _table(["family", "condition", "subset", *_heads(cols)], subsets, 3),
        ]
    return "\n".join(parts)


def _html_verbatim(data: dict) -> str:
    t = data.get("threshold")
    rows = []
    for fam, sets in _d(data.get("families")).items():
        for cond in _ordered(list(_d(sets)), CONDITION_ORDER):
            e = sets[cond]
            subsets = [(cond, e)]
            if _get(e, "hatch_free") is not None:
                subsets.append((f"{cond} (hatch-free)", e["hatch_free"]))
            for name, s in subsets:
                rows.append(
                    [
                        fam,
                        name,
                        _get(s, "runs", "n"),
                        _get(s, "median"),
                        _get(s, "p90"),
                        _get(s, "share_ge"),
                        _get(s, "runs", "max"),
                        _get(s, "null", "median"),
                        _get(s, "null", "p90"),
                        _get(s, "null_share_ge"),
                        _get(s, "diff_share_ge_vs_null"),
                        _get(s, "diff_share_ge_vs_greedy"),
                    ]
                )
    ge = f"≥ {fmt(t)}"
    note = (
        f'<p class="note">Longest run of words shared by explanation and source context; '
        f"null: each explanation paired with another row's context (seed "
        f"{_e(fmt(data.get('null_seed')))}).</p>"
    )
    headers = [
        "family",
        "decode set",
        "n",
        "median run",
        "p90 run",
        f"share {ge}",
        "max run",
        "null median",
        "null p90",
        f"null share {ge}",
        "Δshare vs null",
        "Δshare vs greedy",
    ]
    return note + _table(headers, rows, 2)


def _html_redaction(data: dict) -> str:
    order = [v for v in data.get("variants") or [] if isinstance(v, str)]
    families = _d(data.get("families"))
    train = _has_train(e for fe in families.values() for e in _d(_get(fe, "variants")).values())
    cols = _fid_columns(train)
    var_rows, span_rows = [], []
    for fam, fe in families.items():
        variants = _d(_get(fe, "variants"))
        for v in _ordered(list(variants), order):
            e = variants[v]
            var_rows.append([fam, v, *_fid(e, cols), *_diff_cells(_get(e, "diff_vs_full"), train)])
        sp = _get(fe, "spans")
        span_rows += [
            [
                fam,
                label,
                _get(sp, f"mean_{what}_per_decode"),
                _get(sp, f"share_chars_in_{what}"),
                _get(sp, f"share_decodes_with_{what}"),
            ]
            for what, label in (("spans", "quoted spans (redacted)"), ("hatches", "hatches (kept)"))
        ]
    return "\n".join(
        [
            _h3("Fidelity per variant"),
            _table(["family", "variant", *_heads(cols), *_diff_heads("full", train)], var_rows, 2),
            _h3("Quoted spans and unquoted hatches in the greedy explanations"),
            f'<p class="note">Quoted spans ({_e(fmt(data.get("span_kinds")))}) are what the '
            f"variants edit; hatches ({_e(fmt(data.get('hatch_kinds')))}) are left as they are "
            "and counted apart.</p>",
            _table(
                ["family", "kind", "per decode", "share of characters", "share of decodes"],
                span_rows,
                2,
            ),
        ]
    )


def _html_best_of_n(data: dict) -> str:
    families = _d(data.get("families"))
    train = _has_train(_best_of_n_entries(families))
    cols = _fid_columns(train)
    none = _diff_cells(None, train)
    rows, info = [], []
    for fam, fe in families.items():
        rows.append([fam, "greedy", *_fid(_get(fe, "greedy"), cols), *none])
        best = _d(_get(fe, "best_of"))
        for n in _numeric_order(list(best)):
            diff = _diff_cells(_get(best[n], "diff_vs_greedy"), train)
            rows.append([fam, f"best of {n}", *_fid(best[n], cols), *diff])
        rows.append([fam, "mean over samples", *_fid(_get(fe, "mean_over_samples"), cols), *none])
        info.append([fam, _get(fe, "n_samples"), _get(fe, "sample_tag_failures")])
    return "\n".join(
        [
            _table(["family", "selection", *_heads(cols), *_diff_heads("greedy", train)], rows, 2),
            _h3("Samples"),
            _table(["family", "samples per row", "sample tag failures"], info),
        ]
    )


def _html_layers(data: dict) -> str:
    """One row per input layer: the layer-K greedy row, then each adjacent layer k with its
    headline (the round trip of v_k scored against v_k itself, Var of the v_k set), its scores
    against v_K beside it, the geometry between the layers and the paired difference."""
    own = (
        ("n", "n"),
        ("tag_failures", "tag failures"),
        ("fve_own", "fve_own (own gold)"),
        ("nmse_mean", "nmse mean"),
        ("cos_mean", "cos mean"),
        ("var_own", "Var own"),
    )
    rows = []
    for fam, fe in _d(data.get("families")).items():
        k = _get(fe, "layer")
        g = _get(fe, "greedy")
        rows.append(
            [fam, f"{fmt(k)} (own)", *_fid(g, own), None, _get(g, "fve_own")]
            + [_get(g, "nmse_mean")]
            + [None] * 4
        )
        adj = _d(_get(fe, "adjacent"))
        for layer in _numeric_order(list(adj)):
            e = adj[layer]
            rows.append(
                [
                    fam,
                    layer,
                    *_fid(e, own),
                    _get(e, "cos_to_layer"),
                    _get(e, "vs_layer_K", "fve_own"),
                    _get(e, "vs_layer_K", "nmse_mean"),
                    _get(e, "inter_layer_nmse"),
                    _get(e, "intrinsic_nmse"),
                    _get(e, "additive_bound_nmse"),
                    _get(e, "diff_vs_greedy"),
                ]
            )
    headers = [
        "family",
        "input layer (through the layer-K NLA)",
        *_heads(own),
        "cos to layer K",
        "fve_own vs v_K",
        "nmse vs v_K",
        "inter-layer nmse",
        "intrinsic nmse",
        "additive bound nmse",
        "Δfve_own vs greedy (vs v_K)",
    ]
    note = (
        '<p class="note">Each input layer is scored against its own vector with the Var of its '
        "own vector set (fve_own (own gold)); the columns vs v_K score the same predictions "
        "against the layer-K vector.</p>"
    )
    return note + _table(headers, rows, 2)


def _html_transfer_matrix(data: dict) -> str:
    cells = _d(data.get("cells"))
    fams = [f for f in data.get("families") or [] if isinstance(f, str)]
    grid = []
    for av in fams:
        row: list[Any] = [av]
        for ar in fams:
            c = cells.get(f"{av}__{ar}")
            v = _get(c, "fve_own") if c is not None else _get(data, "matrix", av, ar)
            nv = _get(c, "null_fve_own") if c is not None else _get(data, "nulls", av, ar)
            row.append(f"{fmt(v)} (null {fmt(nv)})")
        grid.append(row)
    detail = [
        [
            _get(c, "av"),
            _get(c, "ar"),
            _get(c, "route"),
            _get(c, "fve_own"),
            _get(c, "null_fve_own"),
            _get(c, "nmse_mean"),
            _get(c, "cos_mean"),
            _get(c, "var_own"),
            _get(c, "n"),
            _get(c, "n_rows"),
            _get(c, "tag_failures"),
            _get(c, "fve_own_strict"),
        ]
        for c in cells.values()
    ]
    parts = [
        _h3("fve_own: AV family (rows) x AR family (columns), with the shuffled-pair null"),
        _table(["AV \\ AR", *fams], grid),
        _h3("Cells"),
        _table(
            [
                "AV",
                "AR",
                "route",
                "fve_own",
                "null fve_own",
                "nmse mean",
                "cos mean",
                "Var own",
                "n",
                "rows",
                "tag failures",
                "fve_own strict",
            ],
            detail,
            3,
        ),
    ]
    al = _d(data.get("alignment"))
    if al:
        parts.append(
            f'<p class="note">Cross-tokenizer alignment: mean absolute error '
            f"{_e(fmt(al.get('mean_abs_error_chars')))} characters over "
            f"{_e(fmt(al.get('n_rows')))} rows.</p>"
        )
    return "\n".join(parts)


def _html_ridge_scaling(data: dict) -> str:
    cross, curve = [], []
    for key, e in _d(data.get("directions")).items():
        src, dst = _get(e, "src"), _get(e, "dst")
        name = f"{src} → {dst}" if src is not None and dst is not None else key
        kernels = _d(_get(e, "kernels"))
        for kernel in _ordered(list(kernels), KERNEL_ORDER):
            c = _d(_get(kernels, kernel, "crossover"))
            cross.append(
                [
                    name,
                    kernel,
                    _get(e, "text_route", "fve_own"),
                    c.get("slope"),
                    c.get("intercept"),
                    c.get("n_cross"),
                    c.get("status"),
                ]
            )
            points = [p for p in _get(kernels, kernel, "curve") or [] if isinstance(p, dict)]
            for p in points:
                curve.append(
                    [
                        name,
                        kernel,
                        p.get("n"),
                        p.get("n_requested"),
                        p.get("alpha"),
                        p.get("gamma"),
                        p.get("fve_own"),
                        p.get("nmse_mean"),
                        p.get("cos_mean"),
                    ]
                )
    return "\n".join(
        [
            _h3("Where ridge would match the text route (log-linear fit of fve_own on log n)"),
            _table(
                [
                    "direction",
                    "kernel",
                    "text route fve_own",
                    "slope",
                    "intercept",
                    "n match",
                    "status",
                ],
                cross,
                2,
            ),
            _h3("Curve"),
            _table(
                [
                    "direction",
                    "kernel",
                    "n",
                    "n requested",
                    "alpha",
                    "gamma",
                    "fve_own",
                    "nmse mean",
                    "cos mean",
                ],
                curve,
                2,
            ),
        ]
    )


def _flatten(x: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, leaf) pairs; Intervals and lists of scalars are leaves."""
    if isinstance(x, dict) and not is_interval(x) and x:
        for k, v in x.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(x, list) and any(isinstance(v, dict | list) for v in x):
        for i, v in enumerate(x):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def _html_generic(data: dict) -> str:
    return _table(["key", "value"], list(_flatten(data)))


# ----------------------------------------------------------------------------- published figures


def _pub_number(x: Any, decimals: int) -> str:
    """A number of a comparison: integers as such, floats to `decimals` places; — when none."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return DASH
    if isinstance(x, int):
        return str(x)
    return f"{x:.{decimals}f}" if math.isfinite(x) else DASH


def _pub_run(c: P.Comparison) -> str:
    """The run's value (and interval), one decimal finer than the published figure."""
    d = c.figure.decimals + 1
    if P.is_interval(c.run):
        v = _pub_number(c.run["value"], d)
        lo, hi = _pub_number(c.run["lo"], d), _pub_number(c.run["hi"], d)
        return v if lo == DASH and hi == DASH else f"{v} [{lo}, {hi}]"
    return _pub_number(c.run, d)


def _pub_verdict(c: P.Comparison) -> str:
    if c.verdict == "outside":
        return f"outside (run {c.relation})"
    if c.verdict == "no interval":
        return f"no interval (run {'= published' if c.relation == 'equal' else c.relation})"
    if c.verdict == "no data":
        return f"no data ({c.reason})" if c.reason else "no data"
    return c.verdict


def _ci_level(res: Any) -> str:
    """The interval's level from the results file's alpha (meta.seeds.metrics.alpha): "95% CI"
    for 0.05; "CI" when the file records none."""
    alpha = _get(res, "meta", "seeds", "metrics", "alpha")
    if isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha < 1:
        return f"{100 * (1 - alpha):g}% CI"
    return "CI"


def _published_state(
    published: P.Published, results: dict[str, dict]
) -> tuple[P.Match, list[P.Comparison]]:
    """Whether the run used the paper's checkpoints and, if so, every figure's comparison."""
    match = P.match_run(published, results)
    return match, P.compare(published, results) if match.equals_paper else []


def _html_published_summary(
    published: P.Published, match: P.Match, comparisons: Sequence[P.Comparison]
) -> str:
    """One line at the top: k of n published figures within the run's interval, or why there
    is no published column."""
    if not match.equals_paper:
        ids = "; ".join(
            f"{fam}: {', '.join(c[r] for r in P.ROLES)}" for fam, c in published.checkpoints.items()
        )
        return (
            f'<p class="note">No published column: the published figures ({_e(published.version)})'
            f" apply only to the paper's checkpoints ({_e(ids)}); this run's differ "
            f"({_e(match.reason)}).</p>"
        )
    t = P.tally(comparisons)
    return (
        f'<p class="published">Published figures ({_e(published.version)}): '
        f"<b>{t['within']} of {len(comparisons)}</b> within this run's interval; "
        f"{t['outside']} outside, {t['no interval']} without an interval in this run, "
        f"{t['no data']} without data. Each section compares them under "
        f"“This run vs published”.</p>"
    )


def _html_published(name: str, comparisons: Sequence[P.Comparison], res: Any) -> str:
    """The section's "This run vs published" table (nothing when no figure belongs to it, or
    when the run's checkpoints are not the paper's: then `comparisons` is empty)."""
    mine = [c for c in comparisons if c.figure.aggregate == name]
    if not mine:
        return ""
    rows = [
        [
            c.figure.label,
            _pub_run(c),
            _pub_number(c.figure.value, c.figure.decimals),
            c.figure.source,
            _pub_verdict(c),
        ]
        for c in mine
    ]
    headers = ["figure", f"this run [{_ci_level(res)}]", "published", "source", "verdict"]
    parts = [_h3("This run vs published"), _table(headers, rows)]
    notes = [f"<li>{_e(c.figure.label)}: {_e(c.figure.note)}</li>" for c in mine if c.figure.note]
    if notes:
        parts.append('<ul class="note">' + "".join(notes) + "</ul>")
    return "\n".join(parts)


def _section_renderer(name: str) -> Callable[[dict], str]:
    """The HTML of an aggregate's `data`: its module's `section`, else a key/value table."""
    agg = AG.REGISTRY.get(name)
    return AG.resolve(agg.section) if agg is not None and agg.section else _html_generic


def _img(name: str, png: bytes) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    caption = {f.name: f.caption for f, _ in AG.figures()}.get(name, name)
    return (
        f'<figure id="{_e(_anchor("fig-" + name))}"><img src="data:image/png;base64,{b64}" '
        f'alt="{_e(name)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _meta_summary(results: dict[str, dict]) -> str:
    rows = []
    for name, res in results.items():
        m = _d(res.get("meta"))
        rows.append(
            [
                name,
                m.get("created_at"),
                m.get("git_sha"),
                m.get("config_hash"),
                m.get("package_version"),
                m.get("schema_version"),
                m.get("device"),
            ]
        )
    parts = [
        "<h2>Provenance</h2>",
        _table(
            ["results file", "created_at", "git sha", "config hash", "package", "schema", "device"],
            rows,
        ),
    ]
    for key, what in (("config_hash", "config hashes"), ("git_sha", "git commits")):
        distinct = {json.dumps(_get(r, "meta", key)) for r in results.values()}
        if len(distinct) > 1:
            parts.append(
                f'<p class="warn">The inputs come from {len(distinct)} different {what}.</p>'
            )
    groups: dict[str, list[str]] = {}
    for name, res in results.items():
        ck = _get(res, "meta", "checkpoints")
        if isinstance(ck, dict) and ck:
            groups.setdefault(json.dumps(ck, sort_keys=True), []).append(name)
    for blob, names in groups.items():
        title = "Checkpoints" if len(groups) == 1 else f"Checkpoints of {', '.join(names)}"
        rows = []
        for fam, roles in json.loads(blob).items():
            for role, c in _d(roles).items():
                c = _d(c)
                where = c.get("id") or c.get("path")
                if where is None and c.get("demo") is not None:
                    where = f"demo: {fmt(c['demo'])}"
                rows.append([fam, role, where, c.get("revision"), c.get("dtype")])
        parts += [
            _h3(title),
            _table(["family", "role", "id or path", "revision", "dtype"], rows, 2),
        ]
    return "\n".join(parts)


def render_html(
    results: dict[str, dict], figures: dict[str, bytes], published: P.Published | None = None
) -> str:
    """The report page: the inputs' meta at the top, then one section per aggregate present (its
    tables, and its figures) in the registry's order, unregistered aggregates after; a figure of
    an absent aggregate gets a short section of its own. Each entry of `figures` appears once.

    `published` (default: the packaged file of nlaprobe.published): when the run's checkpoint
    ids are the paper's, a line at the top counts the published figures within the run's
    intervals and each section has a "This run vs published" table; otherwise one line says
    the comparison applies only to the paper's checkpoints."""
    pub = published if published is not None else P.load_published()
    match, comparisons = _published_state(pub, results)
    registered = AG.names()
    titles = {a.name: a.heading for a in AG.aggregates()}
    order = [n for n in registered if n in results]
    order += sorted(n for n in results if n not in titles)
    sources = {f.name: agg for f, agg in AG.figures()}
    figs_of: dict[str, list[str]] = {}
    for fig_name in figures:
        figs_of.setdefault(sources.get(fig_name, ""), []).append(fig_name)
    absent = [n for n in registered if n in figs_of and n not in results]

    toc, sections = [], []
    for name in order + absent:
        title = titles.get(name, name)
        toc.append(f'<li><a href="#{_e(_anchor(name))}">{_e(title)}</a></li>')
        body = [f'<section id="{_e(_anchor(name))}"><h2>{_e(title)}</h2>']
        if name in results:
            body.append(f'<p class="note">From <code>{_e(name)}.json</code>.</p>')
            data = _d(results[name].get("data"))
            body.append(_section_renderer(name)(data))
            body.append(_html_published(name, comparisons, results[name]))
        else:
            body.append(f'<p class="note">{_e(name)}.json is not among the report inputs.</p>')
        body += [_img(f, figures[f]) for f in figs_of.get(name, [])]
        body.append("</section>")
        sections.append("\n".join(body))
    if figs_of.get(""):
        sections.append(
            '<section id="s-other-figures"><h2>Other figures</h2>\n'
            + "\n".join(_img(f, figures[f]) for f in figs_of[""])
            + "\n</section>"
        )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>nlaprobe report</title>",
            f"<style>{_CSS}</style>",
            "</head><body>",
            "<h1>nlaprobe report</h1>",
            _html_published_summary(pub, match, comparisons),
            _meta_summary(results),
            '<p class="note">Intervals read <code>value [lo, hi]</code>: the value on all rows '
            "and its bootstrap percentile interval over documents (level 1 − alpha, alpha in the "
            "metrics settings of the config); Δ columns are paired differences. — marks a value "
            "that is undefined or missing.</p>",
            "<ul>" + "".join(toc) + "</ul>",
            *sections,
            "</body></html>",
            "",
        ]
    )


# ----------------------------------------------------------------------------- entry point


def write_report(inputs: Sequence[str], out_html: str, figures_dir: str) -> None:
    """Load the results JSON files, draw every figure of the registered aggregates to
    `figures_dir/<name>.png` and write the page to `out_html`, all atomically."""
    results = load_results(inputs)
    log.info("report from %d results files: %s", len(results), ", ".join(results))
    figures: dict[str, bytes] = {}
    for name in figure_names():
        fig = draw_figure(name, results)
        try:
            png = figure_png(fig)
        finally:
            fig.clear()
        with atomic_path(Path(figures_dir) / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        figures[name] = png
    write_text(out_html, render_html(results, figures))
    log.info("wrote %s and %d figures in %s", out_html, len(figures), figures_dir)
