"""The report's text forms (nlaprobe.report.format): every function against hand-written
expected strings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nlaprobe import published as P
from nlaprobe.report import data as D
from nlaprobe.report.format import ci_level, fmt, n_text, pub_number, pub_run, pub_verdict


@pytest.mark.parametrize(
    ("x", "text"),
    [
        ({"value": 0.523, "lo": 0.401, "hi": 0.612}, "0.523 [0.401, 0.612]"),
        ({"value": 0.5234, "lo": 0.4, "hi": 0.6, "n": 12}, "0.523 [0.400, 0.600]"),
        ({"value": -0.25, "lo": None, "hi": None}, "-0.250 [—, —]"),
        ({"value": None, "lo": None, "hi": None}, "—"),
        (None, "—"),
        (float("nan"), "—"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (12, "12"),
        (0.0, "0.000"),
        (0.00012, "0.00012"),
        (-0.0005, "-0.0005"),
        (0.001, "0.001"),
        (99999.5, "99999.500"),
        (123456.7, "1.23e+05"),
        (True, "yes"),
        (False, "no"),
        ({}, "—"),
        ({"corner": 2, "italic": 1}, "corner: 2, italic: 1"),
        ([], "—"),
        (("double", 0.5), "double, 0.500"),
        (list(range(21)), ", ".join(map(str, range(20))) + ", … (21 values)"),
        ("extrapolated", "extrapolated"),
    ],
)
def test_fmt_conventions(x, text):
    assert fmt(x) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "—"), (float("inf"), "∞"), (float("nan"), "∞"), (10, "10"), (12345.6, "12,346")],
)
def test_n_text_rounds_a_training_size_up(n, text):
    assert n_text(n) == text


@pytest.mark.parametrize(
    ("x", "decimals", "text"),
    [
        (3, 2, "3"),
        (0.7749, 3, "0.775"),
        (0.5, 1, "0.5"),
        (-0.02, 4, "-0.0200"),
        (float("nan"), 3, "—"),
        (None, 3, "—"),
        (True, 3, "—"),
        ("0.5", 3, "—"),
    ],
)
def test_pub_number(x, decimals, text):
    assert pub_number(x, decimals) == text


def comparison(run, verdict="within", relation=None, reason=None, decimals=3) -> P.Comparison:
    figure = P.Figure(
        id="a",
        aggregate="fve_baseline",
        path=("families", "gemma", "fve_own"),
        value=0.775,
        decimals=decimals,
        label="gemma fve_own",
        source="seeds/000",
    )
    return P.Comparison(figure, run, verdict, relation, reason)


@pytest.mark.parametrize(
    ("run", "decimals", "text"),
    [
        ({"value": 0.78, "lo": 0.76, "hi": 0.79}, 3, "0.7800 [0.7600, 0.7900]"),
        ({"value": 1.5, "lo": 1, "hi": 2.0}, 1, "1.50 [1, 2.00]"),
        ({"value": 0.55, "lo": None, "hi": None}, 3, "0.5500"),
        ({"value": 0.55, "lo": 0.5, "hi": None}, 3, "0.5500 [0.5000, —]"),
        ({"value": None, "lo": None, "hi": None}, 3, "—"),
        (0, 3, "0"),
        (0.24, 4, "0.24000"),
        (None, 3, "—"),
    ],
)
def test_pub_run_is_one_decimal_finer_than_the_published_figure(run, decimals, text):
    assert pub_run(comparison(run, decimals=decimals)) == text


@pytest.mark.parametrize(
    ("verdict", "relation", "reason", "text"),
    [
        ("within", None, None, "within"),
        ("outside", "below", None, "outside (run below)"),
        ("outside", "above", None, "outside (run above)"),
        ("no interval", "equal", None, "no interval (run = published)"),
        ("no interval", "above", None, "no interval (run above)"),
        ("no data", None, "data.families.qwen.fve_own has no value",
         "no data (data.families.qwen.fve_own has no value)"),
        ("no data", None, None, "no data"),
    ],
)  # fmt: skip
def test_pub_verdict(verdict, relation, reason, text):
    assert pub_verdict(comparison(0.5, verdict, relation, reason)) == text


@pytest.mark.parametrize(
    ("alpha", "text"),
    [(0.05, "95% CI"), (0.1, "90% CI"), (0.01, "99% CI"), (0.025, "97.5% CI"), (None, "CI"),
     (True, "CI"), (0, "CI"), (1.5, "CI"), ("0.05", "CI")],
)  # fmt: skip
def test_ci_level_reads_the_alpha_of_the_results_file(alpha, text):
    assert ci_level({"meta": {"seeds": {"metrics": {"alpha": alpha}}}}) == text


def test_ci_level_without_a_recorded_alpha():
    assert ci_level({"meta": {}}) == "CI"
    assert ci_level(None) == "CI"


@pytest.mark.parametrize("module", ["format", "data"])
def test_format_and_data_import_neither_matplotlib_nor_the_page(module):
    """format and data stay pure: no drawing, no HTML (the package's __init__ still imports
    figures, so this reads the module's own imports)."""
    tree = ast.parse((Path(D.__file__).with_name(f"{module}.py")).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    heavy = {"matplotlib", "numpy", "html", "nlaprobe.report.figures", "nlaprobe.report.html"}
    assert not {m for m in imported if m.split(".")[0] in heavy or m in heavy}, imported
