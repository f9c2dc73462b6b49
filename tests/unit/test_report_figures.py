"""The report's figures (nlaprobe.report.figures): drawn from hand-built results dicts in the
exact shapes of the aggregates (report_shapes), with null values and absent aggregates; their
bars, lines, heatmap cells and labels, and stable PNG bytes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from report_shapes import PNG_MAGIC, make_results, without_train

from nlaprobe import aggregates as AG
from nlaprobe.errors import DataError
from nlaprobe.report import figures as F

SOURCES = {fig.name: agg for fig, agg in AG.figures()}


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    return make_results()


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def bar_heights(ax) -> dict[str, list[float]]:
    return {c.get_label(): [round(p.get_height(), 6) for p in c.patches] for c in ax.containers}


def whiskers(ax) -> list[tuple[float, float]]:
    segs = [s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    return sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in segs)


def test_figure_ban_conditions_bars_fve_train_beside_fve_own(results):
    fig = F.figure_ban_conditions(results)
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
    (ax,) = F.figure_ban_conditions(without_train(results)).axes
    assert ax.get_ylabel() == "fve_own"
    assert bar_heights(ax) == {"greedy": [0.5, 0.6], "ban_dq": [0.4, 0.55], "ban_dq_sq": [0.3]}


def test_figure_redaction_bars_follow_the_variant_order(results):
    fig = F.figure_redaction(results)
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
    (alone,) = F.figure_redaction(without_train(results)).axes
    assert alone.get_ylabel() == "fve_own"
    assert bar_heights(alone) == bar_heights(own)


def test_figure_best_of_n_lines(results):
    fig = F.figure_best_of_n(results)
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
    alone = F.figure_best_of_n(without_train(results)).axes
    assert [ax.get_ylabel() for ax in alone] == ["fve_own", "fve_own"]
    assert list(alone[0].lines[0].get_ydata()) == [0.4, 0.45]


def test_figure_transfer_matrix_heatmap_and_cell_text(results):
    fig = F.figure_transfer_matrix(results)
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
    fig = F.figure_ridge_scaling(results)
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


@pytest.mark.parametrize("name", AG.figure_names())
def test_absent_aggregate_gives_a_placeholder(name):
    source = SOURCES[name]
    fig = F.draw_figure(name, make_results(without=(source,)))
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert texts(ax) == [f"no data: {source} is not among the report inputs"]
    assert not ax.lines and not ax.patches and not ax.images


@pytest.mark.parametrize("name", AG.figure_names())
def test_empty_aggregate_says_no_data(name):
    empty = {SOURCES[name]: {"meta": {}, "data": {}}}
    fig = F.draw_figure(name, empty)
    assert any(t == "no data" for ax in fig.axes for t in texts(ax))
    assert F.figure_png(fig).startswith(PNG_MAGIC)


def test_dollar_and_underscore_names_do_not_break_figures(results):
    res = copy.deepcopy(results)
    fams = res["quote_ablation"]["data"]["families"]
    fams["$a$ $b"] = fams.pop("gemma")
    fams["_hidden"] = fams.pop("qwen")
    fig = F.figure_ban_conditions(res)
    assert F.figure_png(fig).startswith(PNG_MAGIC)


def test_labels_escape_dollars_and_keep_a_leading_underscore():
    assert F._label("$a$ b") == r"\$a\$ b"
    assert F._label("_hidden") == " _hidden"
    assert F._label(3) == "3"


def test_draw_figure_unknown_name_lists_the_valid_ones():
    with pytest.raises(DataError, match=r"unknown figure 'nope'; valid: \['ban_conditions', "):
        F.draw_figure("nope", {})


def test_figure_png_bytes_are_the_same_for_the_same_inputs(results):
    pngs = [F.figure_png(F.draw_figure("ridge_scaling", results)) for _ in range(2)]
    assert pngs[0] == pngs[1] and pngs[0].startswith(PNG_MAGIC)
    assert b"Software" not in pngs[0]
