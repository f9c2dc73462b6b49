"""The report (SPEC §6 Report, §8): figures drawn from hand-built results dicts in the exact shapes
of aggregate.py / experiments.py / ridge_scaling, with null values and absent aggregates; the
HTML's tables, escaping and self-containment; write_report's files, atomicity and determinism."""

from __future__ import annotations

import base64
import copy
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from nlaprobe import published as P
from nlaprobe import report as R
from nlaprobe.errors import DataError
from nlaprobe.spans import REDACTION_VARIANTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG = '<img src="data:image/png;base64,'


# ----------------------------------------------------------------------------- shapes


def iv(value, lo=None, hi=None, n=None) -> dict:
    """An Interval; with only a value, lo/hi default to value -/+ 0.05."""
    if value is not None and lo is None and hi is None:
        lo, hi = value - 0.05, value + 0.05
    out = {"value": value, "lo": lo, "hi": hi}
    if n is not None:
        out["n"] = n
    return out


def shifted(x: dict, by: float) -> dict:
    """An Interval with its value and bounds moved by `by` (None stays None)."""
    return {
        k: (v + by if k in ("value", "lo", "hi") and v is not None else v) for k, v in x.items()
    }


def diff(value, lo, hi, *, train=True) -> dict:
    """A paired difference of experiments.paired_fve_diff; its fve_train difference (the
    "train" entry) is the fve_own one + 0.01."""
    own = iv(value, lo, hi, n=20)
    return {**own, "var": 0.5, "train": {**shifted(own, 0.01), "var_train": 0.5} if train else None}


def fid(fve, lo=None, hi=None, *, n=20, tag_failures=0, train=True) -> dict:
    """A fidelity() dict; fve None gives the shape of the all-tag-failures case."""
    if fve is None:
        none = {"value": None, "lo": None, "hi": None}
        return {
            "n": 0,
            "tag_failures": tag_failures,
            "nmse_mean": none,
            "nmse_median": None,
            "cos_mean": none,
            "var_own": None,
            "var_train": 0.5 if train else None,
            "fve_own": none,
            "fve_train": none if train else None,
            "frac_fve_neg": None,
            "frac_fve_gt_half": None,
            "nmse_mean_strict": 2.0 if tag_failures else None,
            "fve_own_strict": None,
            "fve_train_strict": -3.0 if (train and tag_failures) else None,
            "n_rows": n + tag_failures,
            "decode_errors": 0,
        }
    return {
        "n": n,
        "tag_failures": tag_failures,
        "nmse_mean": iv(0.25, 0.2, 0.3),
        "nmse_median": 0.24,
        "cos_mean": iv(0.875, 0.85, 0.9),
        "var_own": 0.5,
        "var_train": 0.5 if train else None,
        "fve_own": iv(fve, lo, hi),
        # fve_train = fve_own + 0.1 here, so a table or figure shows which one it reads
        "fve_train": shifted(iv(fve, lo, hi), 0.1) if train else None,
        "frac_fve_neg": 0.1,
        "frac_fve_gt_half": 0.6,
        "nmse_mean_strict": 0.3,
        "fve_own_strict": fve - 0.1,
        "fve_train_strict": fve - 0.1 if train else None,
        "bootstrap": {"n_boot": 50, "seed": 3, "alpha": 0.05, "unit": "group", "n_units": 7},
        "n_rows": n + tag_failures,
        "decode_errors": 0,
    }


def meta(name: str) -> dict:
    return {
        "schema_version": 1,
        "package_version": "0.1.0",
        "git_sha": "abc123def4567890",
        "config_hash": "cafe0123beef4567",
        "checkpoints": {
            fam: {
                role: {"id": f"org/{fam}-{role}", "revision": "r1", "dtype": "float32"}
                for role in ("base", "av", "ar")
            }
            for fam in ("gemma", "qwen")
        },
        "seeds": {"run": 42, "metrics": {"n_boot": 50, "alpha": 0.05, "null_seed": 3}},
        "device": "cpu",
        "created_at": "2026-01-02T03:04:05+00:00",
        "aggregate": name,
    }


def fve_baseline() -> dict:
    # qwen: every decode a tag failure, so every FVE figure is null
    return {"families": {"gemma": fid(0.523, 0.401, 0.612), "qwen": fid(None, tag_failures=20)}}


def quote_condition(fve, lo=None, hi=None, *, cond: str) -> dict:
    out = {
        **fid(fve, lo, hi),
        "n_banned_tokens": 0 if cond == "greedy" else 12,
        "leaks": 0,
        "share_single_quotes": iv(0.25, 0.1, 0.4, n=20),
        "share_hatch": iv(0.05, 0.0, 0.15, n=20),
        "hatch_kinds": {"corner": 1} if cond == "ban_dq_sq" else {},
        "diff_vs_greedy": None if cond == "greedy" else diff(-0.1, -0.2, 0.0),
    }
    if cond == "ban_dq_sq":
        out["hatch_using"] = fid(None)
        out["hatch_free"] = fid(0.31)
    return out


def quote_ablation() -> dict:
    vals = {
        "gemma": {"greedy": (0.5, 0.4, 0.6), "ban_dq": (0.4, 0.3, 0.5), "ban_dq_sq": (None,)},
        # qwen's ban_dq has a value but no interval (every resample degenerate)
        "qwen": {"greedy": (0.6, 0.5, 0.7), "ban_dq": (0.55,), "ban_dq_sq": (0.3, 0.2, 0.4)},
    }
    fams = {}
    for fam, conds in vals.items():
        entries = {}
        for cond, v in conds.items():
            e = quote_condition(v[0], *v[1:], cond=cond)
            if len(v) == 1 and v[0] is not None:
                e["fve_own"] = {"value": v[0], "lo": None, "hi": None}
            entries[cond] = e
        # JSON order (sort_keys): ban_dq, ban_dq_sq, greedy
        fams[fam] = {"conditions": dict(sorted(entries.items()))}
    return {"families": fams}


def run_stats(median: float, extra: bool) -> dict:
    stats = {"n": 20, "median": median, "p90": 7.0, "mean": 3.2, "share_ge": 0.15, "max": 9}
    null = {"n": 20, "median": 1.0, "p90": 2.0, "mean": 1.1, "share_ge": 0.0, "max": 3}
    out = {
        "runs": stats,
        "null": null,
        "median": iv(median, 2.0, 4.0, n=20),
        "p90": iv(7.0, 6.0, 8.0, n=20),
        "share_ge": iv(0.15, 0.05, 0.25, n=20),
        "null_share_ge": iv(0.0, 0.0, 0.0, n=20),
        "diff_share_ge_vs_null": iv(0.15, 0.05, 0.25, n=20),
    }
    if extra:
        out["diff_share_ge_vs_greedy"] = iv(-0.05, -0.1, 0.0, n=20)
    return out


def verbatim() -> dict:
    sq = run_stats(2.0, True)
    sq["hatch_free"] = {k: v for k, v in run_stats(1.0, False).items()}
    return {
        "threshold": 6,
        "null_seed": 3,
        "families": {"gemma": {"ban_dq_sq": sq, "greedy": run_stats(3.0, False)}},
    }


VARIANTS = list(REDACTION_VARIANTS)


def redaction() -> dict:
    def var(fve, *b, with_diff=True):
        return {**fid(fve, *b), "diff_vs_full": diff(-0.2, -0.3, -0.1) if with_diff else None}

    spans = {
        "mean_spans_per_decode": iv(1.5, 1.0, 2.0, n=20),
        "share_chars_in_spans": iv(0.2, 0.1, 0.3, n=20),
        "share_decodes_with_spans": iv(0.7, 0.5, 0.9, n=20),
        "mean_hatches_per_decode": iv(0.25, 0.1, 0.4, n=20),
        "share_chars_in_hatches": iv(0.04, 0.01, 0.07, n=20),
        "share_decodes_with_hatches": iv(0.15, 0.05, 0.25, n=20),
    }
    return {
        "variants": VARIANTS,
        "span_kinds": ["double", "single", "corner"],
        "hatch_kinds": ["italic", "paren", "emdash"],
        "families": {
            "gemma": {
                "spans": spans,
                "variants": {
                    "full": var(0.5, 0.4, 0.6, with_diff=False),
                    "prose_only": var(0.3, 0.2, 0.4),
                    "spans_redacted": var(0.35, 0.25, 0.45),
                },
            },
            "qwen": {
                "spans": spans,
                "variants": {"full": var(0.6, 0.5, 0.7, with_diff=False), "prose_only": var(None)},
            },
        },
    }


def best_of_n() -> dict:
    def best(fve, *b):
        return {**fid(fve, *b), "diff_vs_greedy": diff(0.05, 0.0, 0.1)}

    return {
        "ns": [1, 2, 10],
        "families": {
            "gemma": {
                "greedy": fid(0.42),
                "n_samples": 10,
                "sample_tag_failures": 3,
                # JSON order is lexicographic: "1", "10", "2"
                "best_of": {
                    "1": best(0.4, 0.3, 0.5),
                    "10": best(None),
                    "2": best(0.45, 0.35, 0.55),
                },
                "mean_over_samples": fid(0.35),
            },
            "qwen": {
                "greedy": fid(None, tag_failures=20),
                "n_samples": 10,
                "sample_tag_failures": 0,
                "best_of": {"1": best(0.5), "10": best(0.7), "2": best(0.6)},
                "mean_over_samples": fid(0.2),
            },
        },
    }


def layers() -> dict:
    adj = {
        **fid(0.2, 0.1, 0.3, train=False),
        "vs_layer_K": fid(0.15, 0.05, 0.25),
        "cos_to_layer": iv(0.9, 0.88, 0.92, n=20),
        "inter_layer_nmse": iv(0.2, 0.18, 0.22, n=20),
        "intrinsic_nmse": 0.25,
        "additive_bound_nmse": 0.45,
        "diff_vs_greedy": diff(-0.3, -0.4, -0.2),
    }
    return {
        "families": {"gemma": {"layer": 2, "greedy": fid(0.5), "adjacent": {"1": adj, "3": adj}}}
    }


def transfer_matrix() -> dict:
    fams = ["gemma", "qwen"]
    vals = {("gemma", "gemma"): (0.7, 0.01), ("gemma", "qwen"): (0.3, -0.02),
            ("qwen", "gemma"): (None, None), ("qwen", "qwen"): (0.6, 0.0)}  # fmt: skip
    cells = {}
    for (av, ar), (v, null) in vals.items():
        f = fid(v, train=False)
        cells[f"{av}__{ar}"] = {
            "av": av,
            "ar": ar,
            "route": "within" if av == ar else "cross",
            "fve_own": f["fve_own"],
            "null_fve_own": null,
            "nmse_mean": f["nmse_mean"],
            "cos_mean": f["cos_mean"],
            "var_own": f["var_own"],
            "n": f["n"],
            "n_rows": 20,
            "tag_failures": 0 if v is not None else 20,
            "fve_own_strict": f["fve_own_strict"],
        }
    return {
        "families": fams,
        "matrix": {av: {ar: vals[(av, ar)][0] for ar in fams} for av in fams},
        "nulls": {av: {ar: vals[(av, ar)][1] for ar in fams} for av in fams},
        "cells": cells,
        "alignment": {"mean_abs_error_chars": 0.25, "n_rows": 40},
    }


def point(n: int, fve) -> dict:
    return {
        "n": n,
        "n_requested": n,
        "alpha": 1.0,
        "gamma": None,
        "fve_own": iv(fve) if fve is not None else iv(None),
        "nmse_mean": iv(0.8),
        "cos_mean": iv(0.6),
    }


def ridge_scaling() -> dict:
    def kernel(fves, status="extrapolated", n_cross=12345.6):
        return {
            "curve": [point(n, f) for n, f in zip((10, 100, 1000), fves, strict=True)],
            "crossover": {"slope": 0.1, "intercept": -0.1, "n_cross": n_cross, "status": status},
        }

    return {
        "directions": {
            "gemma_to_qwen": {
                "src": "gemma",
                "dst": "qwen",
                "text_route": {"fve_own": 0.3},
                "kernels": {"linear": kernel([0.05, 0.12, 0.2]), "rbf": kernel([0.0, None, 0.25])},
            },
            "qwen_to_gemma": {
                "src": "qwen",
                "dst": "gemma",
                "text_route": {"fve_own": None},
                "kernels": {"linear": kernel([0.1, 0.15, 0.18], "never", None)},
            },
        }
    }


BUILDERS = {
    "fve_baseline": fve_baseline,
    "quote_ablation": quote_ablation,
    "verbatim": verbatim,
    "redaction": redaction,
    "best_of_n": best_of_n,
    "layers": layers,
    "transfer_matrix": transfer_matrix,
    "ridge_scaling": ridge_scaling,
    # an aggregate the report has no dedicated layout for
    "diagnostics": lambda: {"families": {"gemma": {"av_out_minus_empty": iv(0.11, 0.05, 0.17)}}},
}


def make_results(*, without: tuple[str, ...] = ()) -> dict[str, dict]:
    return {k: {"meta": meta(k), "data": b()} for k, b in BUILDERS.items() if k not in without}


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    return make_results()


@pytest.fixture(scope="module")
def page(results) -> str:
    return R.render_html(results, {name: PNG_MAGIC + name.encode() for name in R.figure_names()})


def table_rows(page: str) -> list[list[str]]:
    """Every <tr> of the page as its unescaped cell texts."""
    return [
        [html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, flags=re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    ]


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="s-{name}">')
    return page[start : page.index("</section>", start)]


def tables(page: str) -> list[str]:
    return re.findall(r"<table>.*?</table>", page, flags=re.S)


def find_row(page: str, *keys: str) -> list[str]:
    hits = [r for r in table_rows(page) if r[: len(keys)] == list(keys)]
    assert len(hits) == 1, (keys, hits)
    return hits[0]


def keyed_rows(table: str) -> list[dict[str, str]]:
    """The rows of one table as {header: cell}."""
    header, *rows = table_rows(table)
    return [dict(zip(header, r, strict=True)) for r in rows]


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# ----------------------------------------------------------------------------- load / format


def test_load_results_names_by_stem_and_reports_bad_files(tmp_path: Path):
    good = tmp_path / "fve_baseline.json"
    good.write_text(json.dumps({"meta": meta("x"), "data": fve_baseline()}))
    assert R.load_results([str(good)])["fve_baseline"]["data"] == fve_baseline()

    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        R.load_results([str(good), str(missing)])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        R.load_results([str(broken)])
    no_data = tmp_path / "no_data.json"
    no_data.write_text(json.dumps({"meta": {}}))
    with pytest.raises(DataError, match="no_data.json: expected .*'meta' and 'data'"):
        R.load_results([str(no_data)])
    (tmp_path / "sub").mkdir()
    twin = tmp_path / "sub" / "fve_baseline.json"
    twin.write_text(good.read_text())
    with pytest.raises(DataError, match="second results file named 'fve_baseline'"):
        R.load_results([str(good), str(twin)])


@pytest.mark.parametrize(
    ("x", "text"),
    [
        ({"value": 0.523, "lo": 0.401, "hi": 0.612}, "0.523 [0.401, 0.612]"),
        ({"value": 0.5234, "lo": 0.4, "hi": 0.6, "n": 12}, "0.523 [0.400, 0.600]"),
        ({"value": -0.25, "lo": None, "hi": None}, "-0.250 [—, —]"),
        ({"value": None, "lo": None, "hi": None}, "—"),
        (None, "—"),
        (float("nan"), "—"),
        (12, "12"),
        (0.0, "0.000"),
        (0.00012, "0.00012"),
        (123456.7, "1.23e+05"),
        (True, "yes"),
        ({}, "—"),
        ({"corner": 2, "italic": 1}, "corner: 2, italic: 1"),
        ("extrapolated", "extrapolated"),
    ],
)
def test_fmt_conventions(x, text):
    assert R.fmt(x) == text


# ----------------------------------------------------------------------------- figures


def bar_heights(ax) -> dict[str, list[float]]:
    return {c.get_label(): [round(p.get_height(), 6) for p in c.patches] for c in ax.containers}


def whiskers(ax) -> list[tuple[float, float]]:
    segs = [s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    return sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in segs)


def without_train(results: dict) -> dict:
    """A copy of `results` as written without any training Var: var_train, fve_train,
    fve_train_strict and the "train" entry of every paired difference are null."""

    def strip(x):
        if isinstance(x, dict):
            out = {k: strip(v) for k, v in x.items()}
            for k in ("var_train", "fve_train", "fve_train_strict", "train"):
                if k in out:
                    out[k] = None
            return out
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(copy.deepcopy(results))


def test_figure_ban_conditions_bars_fve_train_beside_fve_own(results):
    fig = R.figure_ban_conditions(results)
    assert isinstance(fig, Figure)
    train, own = fig.axes
    assert (train.get_ylabel(), own.get_ylabel()) == ("fve_train", "fve_own")
    # 6 (family, condition) pairs; gemma's ban_dq_sq is null: 5 bars, 1 "no data"
    assert len(own.patches) == 5
    assert bar_heights(own) == {"greedy": [0.5, 0.6], "ban_dq": [0.4, 0.55], "ban_dq_sq": [0.3]}
    assert texts(own) == ["no data"]
    # qwen's ban_dq has no fve_own interval: 4 whiskers
    assert whiskers(own) == [(0.2, 0.4), (0.3, 0.5), (0.4, 0.6), (0.5, 0.7)]
    assert [t.get_text() for t in own.get_xticklabels()] == ["gemma", "qwen"]
    assert [t.get_text() for t in own.get_legend().get_texts()] == [
        "greedy",
        "ban_dq",
        "ban_dq_sq",
    ]
    # fve_train = fve_own + 0.1 in the fixture; qwen's ban_dq has its fve_train interval
    assert bar_heights(train) == {"greedy": [0.6, 0.7], "ban_dq": [0.5, 0.65], "ban_dq_sq": [0.4]}
    assert texts(train) == ["no data"]
    assert len(whiskers(train)) == 5


def test_figure_ban_conditions_without_train_var_is_fve_own_only(results):
    (ax,) = R.figure_ban_conditions(without_train(results)).axes
    assert ax.get_ylabel() == "fve_own"
    assert bar_heights(ax) == {"greedy": [0.5, 0.6], "ban_dq": [0.4, 0.55], "ban_dq_sq": [0.3]}


def test_figure_redaction_bars_follow_the_variant_order(results):
    fig = R.figure_redaction(results)
    train, own = fig.axes
    assert (train.get_ylabel(), own.get_ylabel()) == ("fve_train", "fve_own")
    assert len(own.patches) == 4
    assert bar_heights(own) == {
        "full": [0.5, 0.6],
        "prose_only": [0.3],
        "spans_redacted": [0.35],
    }
    assert texts(own).count("no data") == 2  # qwen: prose_only null, spans_redacted absent
    assert len(whiskers(own)) == 4
    assert bar_heights(train) == {"full": [0.6, 0.7], "prose_only": [0.4], "spans_redacted": [0.45]}
    (alone,) = R.figure_redaction(without_train(results)).axes
    assert alone.get_ylabel() == "fve_own"
    assert bar_heights(alone) == bar_heights(own)


def test_figure_best_of_n_lines(results):
    fig = R.figure_best_of_n(results)
    # a row of fve_train panels, then a row of fve_own panels, one per family
    gemma_train, qwen_train, gemma, qwen = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["fve_train"] * 2 + ["fve_own"] * 2
    # gemma: the curve (best of 10 is null), greedy, mean over samples
    curve, greedy, mean = gemma.lines
    assert list(curve.get_xdata()) == [1.0, 2.0]
    assert list(curve.get_ydata()) == [0.4, 0.45]
    assert list(greedy.get_ydata()) == [0.42, 0.42] and greedy.get_linestyle() == "--"
    assert list(mean.get_ydata()) == [0.35, 0.35] and mean.get_linestyle() == ":"
    assert len(gemma.collections) == 1  # the interval band
    # qwen: greedy is null (all tag failures): curve + mean only
    assert [ln.get_label() for ln in qwen.lines] == ["best of n", "mean over samples"]
    assert list(qwen.lines[0].get_xdata()) == [1.0, 2.0, 10.0]
    assert list(qwen.lines[0].get_ydata()) == [0.5, 0.6, 0.7]
    # the same lines of fve_train (= fve_own + 0.1 in the fixture)
    curve, greedy, mean = gemma_train.lines
    assert list(curve.get_ydata()) == pytest.approx([0.5, 0.55])
    assert list(greedy.get_ydata()) == pytest.approx([0.52, 0.52])
    assert list(qwen_train.lines[0].get_ydata()) == pytest.approx([0.6, 0.7, 0.8])
    # without a training Var: the fve_own row only
    alone = R.figure_best_of_n(without_train(results)).axes
    assert [ax.get_ylabel() for ax in alone] == ["fve_own", "fve_own"]
    assert list(alone[0].lines[0].get_ydata()) == [0.4, 0.45]


def test_figure_transfer_matrix_heatmap_and_cell_text(results):
    fig = R.figure_transfer_matrix(results)
    ax = fig.axes[0]
    arr = ax.images[0].get_array()
    assert arr.shape == (2, 2)
    assert np.ma.getmaskarray(arr).tolist() == [[False, False], [True, False]]
    np.testing.assert_allclose(arr.filled(np.nan), [[0.7, 0.3], [np.nan, 0.6]])
    assert texts(ax) == [
        "0.700\nnull 0.010",
        "0.300\nnull -0.020",
        "—\nnull —",
        "0.600\nnull 0.000",
    ]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gemma", "qwen"]


def test_figure_ridge_scaling_lines_per_direction_and_kernel(results):
    fig = R.figure_ridge_scaling(results)
    g2q, q2g = fig.axes[:2]
    assert g2q.get_xscale() == "log"
    lin, rbf, text = g2q.lines
    assert list(lin.get_xdata()) == [10.0, 100.0, 1000.0]
    assert list(lin.get_ydata()) == [0.05, 0.12, 0.2]
    assert list(rbf.get_xdata()) == [10.0, 1000.0]  # the null point is left out
    assert list(rbf.get_ydata()) == [0.0, 0.25]
    assert lin.get_label() == "linear (match: n = 12,346, extrapolated)"
    assert list(text.get_ydata()) == [0.3, 0.3] and text.get_linestyle() == "--"
    # qwen -> gemma: no text route value, so the kernel's line only
    assert [ln.get_label() for ln in q2g.lines] == ["linear (match: n = —, never)"]


@pytest.mark.parametrize("name", R.figure_names())
def test_absent_aggregate_gives_a_placeholder(name):
    source = R.figure_source(name)
    fig = R.draw_figure(name, make_results(without=(source,)))
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert texts(ax) == [f"no data: {source} is not among the report inputs"]
    assert not ax.lines and not ax.patches and not ax.images


@pytest.mark.parametrize("name", R.figure_names())
def test_empty_aggregate_says_no_data(name):
    empty = {R.figure_source(name): {"meta": {}, "data": {}}}
    fig = R.draw_figure(name, empty)
    assert any(t == "no data" for ax in fig.axes for t in texts(ax))
    assert R.figure_png(fig).startswith(PNG_MAGIC)


def test_dollar_and_underscore_names_do_not_break_figures(results):
    res = copy.deepcopy(results)
    fams = res["quote_ablation"]["data"]["families"]
    fams["$a$ $b"] = fams.pop("gemma")
    fams["_hidden"] = fams.pop("qwen")
    fig = R.figure_ban_conditions(res)
    assert R.figure_png(fig).startswith(PNG_MAGIC)


# ----------------------------------------------------------------------------- HTML


def test_html_meta_summary_at_the_top(page):
    first_section = page.index("<section")
    for text in ("abc123def4567890", "cafe0123beef4567", "2026-01-02T03:04:05+00:00"):
        assert 0 <= page.index(text) < first_section
    assert find_row(page, "gemma", "av")[2:] == ["org/gemma-av", "r1", "float32"]


def test_html_has_a_section_and_tables_for_every_aggregate(page, results):
    for name in results:
        assert f'<section id="s-{name}">' in page
    # the unknown aggregate as key / value
    assert find_row(page, "families.gemma.av_out_minus_empty") == [
        "families.gemma.av_out_minus_empty",
        "0.110 [0.050, 0.170]",
    ]


def test_html_baseline_rows(page):
    page = section(page, "fve_baseline")
    gemma = find_row(page, "gemma", "20", "0", "0.523 [0.401, 0.612]")
    assert gemma[3:6] == ["0.523 [0.401, 0.612]", "0.623 [0.501, 0.712]", "0.250 [0.200, 0.300]"]
    qwen = find_row(page, "qwen", "0", "20")
    assert qwen[3:5] == ["—", "—"]


def test_html_quote_ablation_rows(page):
    sec = section(page, "quote_ablation")
    # one row per family x condition, greedy first; fve_train with fve_own beside it
    header, *rows = table_rows(tables(sec)[0])
    assert header[:6] == ["family", "condition", "n", "tag failures", "fve_train", "fve_own"]
    assert header[-2:] == ["Δfve_train vs greedy", "Δfve_own vs greedy"]
    assert [r[:2] for r in rows] == [
        [f, c] for f in ("gemma", "qwen") for c in ("greedy", "ban_dq", "ban_dq_sq")
    ]
    assert rows[0][4:6] == ["0.600 [0.500, 0.700]", "0.500 [0.400, 0.600]"]
    assert rows[0][-2:] == ["—", "—"]
    assert rows[1][-2:] == ["-0.090 [-0.190, 0.010]", "-0.100 [-0.200, 0.000]"]
    assert rows[2][4:6] == ["—", "—"]
    assert rows[4][5] == "0.550 [—, —]"
    sub = find_row(tables(sec)[1], "gemma", "ban_dq_sq")
    assert sub[2:] == ["12", "0", "0.250 [0.100, 0.400]", "0.050 [0.000, 0.150]", "corner: 1"]
    (free,) = [
        r
        for r in keyed_rows(tables(sec)[2])
        if (r["family"], r["subset"]) == ("gemma", "hatch-free")
    ]
    assert (free["fve_train"], free["fve_own"]) == ("0.410 [0.360, 0.460]", "0.310 [0.260, 0.360]")


SECTIONS_WITH_TRAIN = {
    # section: (index of its fidelity table, Δ against what, a (family, key) row)
    "quote_ablation": (0, "greedy", ("gemma", "ban_dq")),
    "redaction": (0, "full", ("gemma", "prose_only")),
    "best_of_n": (0, "greedy", ("gemma", "best of 1")),
}


@pytest.mark.parametrize("name", SECTIONS_WITH_TRAIN)
def test_html_fve_train_column_iff_a_train_var_is_set(results, name):
    i, against, key = SECTIONS_WITH_TRAIN[name]
    with_train = R.render_html(results, {})
    header = table_rows(tables(section(with_train, name))[i])[0]
    assert header.index("fve_train") + 1 == header.index("fve_own")
    assert header[-2:] == [f"Δfve_train vs {against}", f"Δfve_own vs {against}"]
    row = next(
        r
        for r in keyed_rows(tables(section(with_train, name))[i])
        if key == (r["family"], r[header[1]])
    )
    # the fixture's fve_train is fve_own + 0.1, its Δfve_train the Δfve_own + 0.01
    assert float(row["fve_train"].split()[0]) == pytest.approx(
        float(row["fve_own"].split()[0]) + 0.1
    )
    assert float(row[f"Δfve_train vs {against}"].split()[0]) == pytest.approx(
        float(row[f"Δfve_own vs {against}"].split()[0]) + 0.01
    )
    alone = R.render_html(without_train(results), {})
    header = table_rows(tables(section(alone, name))[i])[0]
    assert "fve_train" not in header and f"Δfve_train vs {against}" not in header
    assert "fve_own" in header and header[-1] == f"Δfve_own vs {against}"


def test_html_other_experiment_rows(page):
    sec = section(page, "verbatim")
    assert find_row(sec, "gemma", "ban_dq_sq (hatch-free)")[3] == "1.000 [2.000, 4.000]"
    assert find_row(sec, "gemma", "greedy")[2:4] == ["20", "3.000 [2.000, 4.000]"]
    assert find_row(sec, "gemma", "greedy")[-1] == "—"
    sec = section(page, "redaction")
    assert find_row(sec, "qwen", "prose_only")[4:6] == ["—", "—"]
    assert find_row(sec, "gemma", "spans_redacted")[5] == "0.350 [0.250, 0.450]"
    assert find_row(sec, "gemma", "quoted spans (redacted)")[2:] == [
        "1.500 [1.000, 2.000]",
        "0.200 [0.100, 0.300]",
        "0.700 [0.500, 0.900]",
    ]
    assert find_row(sec, "gemma", "hatches (kept)")[2:] == [
        "0.250 [0.100, 0.400]",
        "0.040 [0.010, 0.070]",
        "0.150 [0.050, 0.250]",
    ]
    assert "Quoted spans (double, single, corner) are what the variants edit" in sec
    assert "hatches (italic, paren, emdash) are left as they are" in sec
    sec = section(page, "best_of_n")
    assert [r[1] for r in table_rows(tables(sec)[0]) if r[0] == "gemma"] == [
        "greedy",
        "best of 1",
        "best of 2",
        "best of 10",
        "mean over samples",
    ]
    assert find_row(sec, "gemma", "best of 2")[5] == "0.450 [0.350, 0.550]"
    assert find_row(sec, "gemma", "best of 10")[4:6] == ["—", "—"]
    (layer_k, adj) = [r for r in keyed_rows(section(page, "layers")) if r["family"] == "gemma"][:2]
    assert layer_k["input layer (through the layer-K NLA)"] == "2 (own)"
    assert layer_k["fve_own (own gold)"] == layer_k["fve_own vs v_K"] == "0.500 [0.450, 0.550]"
    assert layer_k["cos to layer K"] == "—"
    assert adj["input layer (through the layer-K NLA)"] == "1"
    assert adj["fve_own (own gold)"] == "0.200 [0.100, 0.300]"
    assert adj["Var own"] == "0.500"
    assert adj["fve_own vs v_K"] == "0.150 [0.050, 0.250]"
    assert adj["nmse vs v_K"] == "0.250 [0.200, 0.300]"
    assert adj["cos to layer K"] == "0.900 [0.880, 0.920]"
    assert adj["inter-layer nmse"] == "0.200 [0.180, 0.220]"
    assert (adj["intrinsic nmse"], adj["additive bound nmse"]) == ("0.250", "0.450")
    assert adj["Δfve_own vs greedy (vs v_K)"] == "-0.300 [-0.400, -0.200]"
    sec = section(page, "transfer_matrix")
    assert find_row(sec, "gemma", "0.700 [0.650, 0.750] (null 0.010)")
    assert find_row(sec, "qwen", "— (null —)")
    assert "mean absolute error 0.250 characters over 40 rows" in sec
    sec = section(page, "ridge_scaling")
    assert find_row(sec, "gemma → qwen", "linear", "0.300") == [
        "gemma → qwen",
        "linear",
        "0.300",
        "0.100",
        "-0.100",
        "12345.600",
        "extrapolated",
    ]
    assert find_row(sec, "gemma → qwen", "rbf", "100")[6] == "—"


def test_html_one_inline_image_per_figure_and_nothing_external(page):
    assert page.count(IMG) == len(R.figure_names())
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert "<link" not in page and "<script" not in page.lower()


def test_html_absent_aggregate_still_shows_its_figure():
    res = make_results(without=("ridge_scaling",))
    page = R.render_html(res, {n: PNG_MAGIC for n in R.figure_names()})
    assert page.count(IMG) == len(R.figure_names())
    assert "ridge_scaling.json is not among the report inputs" in page


def test_html_escapes_data_strings():
    res = make_results()
    evil = "<script>alert(1)</script>"
    fams = res["fve_baseline"]["data"]["families"]
    fams[evil] = fams.pop("gemma")
    res["fve_baseline"]["meta"]["git_sha"] = '"><img src=x onerror=alert(2)>'
    page = R.render_html(res, {})
    assert "<script" not in page.lower() and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert find_row(page, evil)[3] == "0.523 [0.401, 0.612]"


# ----------------------------------------------------------------------------- write_report


def write_inputs(folder: Path, res: dict[str, dict]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, obj in res.items():
        p = folder / f"{name}.json"
        p.write_text(json.dumps(obj, sort_keys=True))
        paths.append(str(p))
    return paths


def test_write_report_files_are_complete_atomic_and_deterministic(tmp_path: Path):
    inputs = write_inputs(tmp_path / "in", make_results(without=("best_of_n",)))
    outs = []
    for run in ("a", "b"):
        html_path = tmp_path / run / "report.html"
        fig_dir = tmp_path / run / "figures"
        R.write_report(inputs, str(html_path), str(fig_dir))
        pngs = {p.name: p.read_bytes() for p in sorted(fig_dir.iterdir())}
        assert sorted(pngs) == sorted(f"{n}.png" for n in R.figure_names())
        assert all(b.startswith(PNG_MAGIC) for b in pngs.values())
        page = html_path.read_text(encoding="utf-8")
        assert page.count(IMG) == len(R.figure_names())
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == ["figures", "report.html"]
        outs.append((page, pngs))
    assert outs[0] == outs[1]
    # the PNG files are exactly the images in the page
    for b in outs[0][1].values():
        assert base64.b64encode(b).decode() in outs[0][0]


def test_write_report_missing_input_names_it_and_writes_nothing(tmp_path: Path):
    missing = str(tmp_path / "in" / "layers.json")
    with pytest.raises(DataError, match=re.escape(missing)):
        R.write_report([missing], str(tmp_path / "out" / "report.html"), str(tmp_path / "fig"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "fig").exists()


# ----------------------------------------------------------------------------- published figures

PUB_HEADERS = ["figure", "this run [95% CI]", "published", "source", "verdict"]
PUB_SECTIONS = (
    "fve_baseline",
    "quote_ablation",
    "verbatim",
    "redaction",
    "best_of_n",
    "layers",
    "transfer_matrix",
    "ridge_scaling",
)


def paper_checkpoints(pub: P.Published, names=("gemma", "qwen")) -> dict:
    """meta.checkpoints with the paper's ids (other revisions) under the run's family keys."""
    return {
        run_fam: {
            role: {"id": pub.checkpoints[paper_fam][role], "revision": "r9", "dtype": "bfloat16"}
            for role in P.ROLES
        }
        for run_fam, paper_fam in zip(names, ("gemma", "qwen"), strict=True)
    }


def paper_results() -> dict[str, dict]:
    res = make_results()
    for r in res.values():
        r["meta"]["checkpoints"] = paper_checkpoints(P.load_published())
    gemma = res["fve_baseline"]["data"]["families"]["gemma"]
    gemma["fve_train"] = iv(0.78, 0.76, 0.79)  # published 0.775: within
    gemma["fve_own"] = iv(0.70, 0.65, 0.75)  # published 0.774: below
    return res


def pub_table(sec: str) -> list[list[str]]:
    start = sec.index("<h3>This run vs published</h3>")
    return table_rows(tables(sec[start:])[0])


def test_html_published_column_with_the_papers_ids():
    page = R.render_html(paper_results(), {})
    first_section = page.index("<section")
    assert re.search(r"Published figures \(paper-2026-06\): <b>\d+ of 110</b> within", page)
    assert page.index("Published figures (paper-2026-06)") < first_section
    for name in PUB_SECTIONS:
        sec = section(page, name)
        assert pub_table(sec)[0] == PUB_HEADERS, name
        assert len(pub_table(sec)) > 1, name
    assert "This run vs published" not in section(page, "diagnostics")
    sec = section(page, "fve_baseline")
    assert find_row(sec, "gemma fve_train (train denominator)") == [
        "gemma fve_train (train denominator)",
        "0.7800 [0.7600, 0.7900]",
        "0.775",
        "seeds/000 §Protocol table; seeds/001 §1",
        "within",
    ]
    assert find_row(sec, "gemma fve_own (eval-set denominator)")[1:] == [
        "0.7000 [0.6500, 0.7500]",
        "0.774",
        "seeds/000 §Protocol table",
        "outside (run below)",
    ]
    # a count equal to the published one; a plain number above it; a null figure
    assert find_row(sec, "gemma explanation-tag failures (of 1000)")[1:3] == ["0", "0"]
    assert find_row(sec, "gemma explanation-tag failures (of 1000)")[4] == (
        "no interval (run = published)"
    )
    assert find_row(sec, "gemma nmse median")[1:3] == ["0.24000", "0.0111"]
    assert find_row(sec, "gemma nmse median")[4] == "no interval (run above)"
    assert find_row(sec, "qwen fve_own (eval-set denominator)")[1:] == [
        "—",
        "0.752",
        "seeds/000 §Cross-family transfer table (within: AV_qwen → AR_qwen); seeds/001 §1",
        "no data (data.families.qwen.fve_own has no value)",
    ]
    # the mapping decisions are shown under the table
    assert "seeds/000 is followed: fve_own." in html.unescape(sec)
    sec = section(page, "transfer_matrix")
    assert find_row(sec, "within: AV gemma → AR gemma, fve_own")[1:] == [
        "0.7000 [0.6500, 0.7500]",
        "0.774",
        "seeds/000 §Cross-family transfer table",
        "outside (run below)",
    ]
    assert find_row(sec, "within: AV gemma → AR gemma, shuffled-pair null")[1:3] == [
        "0.010",
        "-0.76",
    ]
    # the hand-made layers result has adjacent layers 1 and 3, not the paper's 40 and 42
    sec = section(page, "layers")
    assert find_row(sec, "L40: cos to L41")[4] == (
        "no data (no '40' in data.families.gemma.adjacent)"
    )


def small_published() -> P.Published:
    def fig(id_, agg, path, value, decimals):
        return {
            "id": id_,
            "aggregate": agg,
            "path": path,
            "value": value,
            "decimals": decimals,
            "label": f"label {id_}",
            "source": "seeds/000 §test",
        }

    pub = P.load_published()
    return P.parse_published(
        {
            "version": "test-1",
            "checkpoints": {
                fam: {"layer": c["layer"], **{r: c[r] for r in P.ROLES}}
                for fam, c in pub.checkpoints.items()
            },
            "figures": [
                fig("a", "fve_baseline", ["families", "{gemma}", "fve_train"], 0.775, 3),
                fig("b", "fve_baseline", ["families", "{gemma}", "fve_own"], 0.774, 3),
                fig("c", "fve_baseline", ["families", "{gemma}", "var_own"], 0.5, 1),
                fig("d", "fve_baseline", ["families", "{qwen}", "fve_own"], 0.752, 3),
                fig("e", "redaction", ["families", "{gemma}", "spans", "mean_spans_per_decode"],
                    1.4, 1),
                fig("f", "layers", ["families", "{gemma}", "greedy", "fve_own"], 0.5, 2),
            ],
        },
        "small.yaml",
    )  # fmt: skip


def test_html_published_summary_counts_by_hand():
    # a within, b below, c equal (plain), d no data, e within (1.5 [1.0, 2.0]), f within
    # (0.5 [0.45, 0.55]); the family keys of the run are not the paper's names
    res = paper_results()
    for r in res.values():
        r["meta"]["checkpoints"] = paper_checkpoints(P.load_published(), ("G", "Q"))
    for name in ("fve_baseline", "redaction", "layers"):
        data = res[name]["data"]
        data["families"] = {{"gemma": "G", "qwen": "Q"}[k]: v for k, v in data["families"].items()}
    page = R.render_html(res, {}, small_published())
    assert (
        "Published figures (test-1): <b>3 of 6</b> within this run's interval; 1 outside, "
        "1 without an interval in this run, 1 without data."
    ) in page
    assert [r[4] for r in pub_table(section(page, "fve_baseline"))[1:]] == [
        "within",
        "outside (run below)",
        "no interval (run = published)",
        "no data (data.families.Q.fve_own has no value)",
    ]
    assert pub_table(section(page, "redaction"))[1] == [
        "label e",
        "1.50 [1.00, 2.00]",
        "1.4",
        "seeds/000 §test",
        "within",
    ]
    # sections without a published figure have no table
    for name in ("quote_ablation", "transfer_matrix", "ridge_scaling"):
        assert "This run vs published" not in section(page, name)


@pytest.mark.parametrize("which", ["all", "one"])
def test_html_no_published_column_with_other_ids(which):
    res = paper_results()
    for name, r in res.items():
        if which == "all" or name == "layers":
            r["meta"]["checkpoints"]["gemma"]["ar"]["id"] = "org/gemma-ar"
    page = R.render_html(res, {})
    assert "This run vs published" not in page and "this run [" not in page
    note = re.findall(r'<p class="note">No published column: .*?</p>', page)
    assert len(note) == 1 and page.index(note[0]) < page.index("<section")
    text = html.unescape(note[0])
    assert "the published figures (paper-2026-06) apply only to the paper's checkpoints" in text
    assert "gemma: google/gemma-3-27b-it, kitft/nla-gemma3-27b-L41-av" in text
    # the first results file (by name) whose ids differ is named
    first = "best_of_n" if which == "all" else "layers"
    assert f"this run's differ ({first}.json: family 'gemma' has base/av/ar ids" in text


def test_html_hand_made_results_with_other_ids_have_no_published_column(page):
    assert "This run vs published" not in page
    assert "No published column" in page
