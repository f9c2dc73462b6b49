"""The report's inputs (nlaprobe.report.data): loading results files, and the null-safe
accessors against hand-computed values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from report_shapes import best_of_n, fid, fve_baseline, meta

from nlaprobe.errors import DataError
from nlaprobe.report import data as D


def test_load_results_names_by_stem_and_reports_bad_files(tmp_path: Path):
    good = tmp_path / "fve_baseline.json"
    good.write_text(json.dumps({"meta": meta("x"), "data": fve_baseline()}))
    assert D.load_results([str(good)])["fve_baseline"]["data"] == fve_baseline()

    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        D.load_results([str(good), str(missing)])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        D.load_results([str(broken)])
    no_data = tmp_path / "no_data.json"
    no_data.write_text(json.dumps({"meta": {}}))
    with pytest.raises(DataError, match="no_data.json: expected .*'meta' and 'data'"):
        D.load_results([str(no_data)])
    (tmp_path / "sub").mkdir()
    twin = tmp_path / "sub" / "fve_baseline.json"
    twin.write_text(good.read_text())
    with pytest.raises(DataError, match="second results file named 'fve_baseline'"):
        D.load_results([str(good), str(twin)])


def test_value_and_bounds_of_intervals_and_numbers():
    assert D.is_interval({"value": 1, "lo": None, "hi": None})
    assert not D.is_interval({"value": 1, "lo": 0}) and not D.is_interval(0.5)
    assert D.value({"value": 0.5, "lo": 0.4, "hi": 0.6}) == 0.5
    assert D.value(3) == 3.0 and isinstance(D.value(3), float)
    for missing in (None, True, "0.5", float("nan"), float("inf"), {"value": None}):
        assert D.value(missing) is None, missing
    assert D.value({"value": float("nan"), "lo": 0, "hi": 1}) is None
    assert D.bounds({"value": 0.5, "lo": 0.4, "hi": 0.6}) == (0.4, 0.6)
    assert D.bounds({"value": 0.5, "lo": None, "hi": 0.6}) is None
    assert D.bounds({"value": None, "lo": 0.4, "hi": 0.6}) is None
    assert D.bounds(0.5) is None


def test_get_and_as_dict_never_raise():
    d = {"a": {"b": {"c": 3}}, "x": [1]}
    assert D.get(d, "a", "b", "c") == 3
    assert D.get(d, "a", "nope", "c") is None
    assert D.get(d, "x", "y") is None and D.get(None, "a") is None
    assert D.get(d) is d
    assert D.as_dict({"k": 1}) == {"k": 1}
    assert D.as_dict(None) == {} and D.as_dict([1]) == {}


def test_orders():
    assert D.ordered(["ban_dq", "ban_dq_sq", "greedy", "x"], D.CONDITION_ORDER) == [
        "greedy",
        "ban_dq",
        "ban_dq_sq",
        "x",
    ]
    assert D.ordered(["b", "a"], ["c"]) == ["b", "a"]
    assert D.numeric_order(["10", "2", "b", "1", "a", "1.5"]) == ["1", "1.5", "2", "10", "a", "b"]
    assert D.num("12") == 12.0 and D.num("x") is None


def test_fve_train_is_shown_iff_an_entry_has_a_training_var():
    assert D.fve_metrics(True) == ("fve_train", "fve_own")
    assert D.fve_metrics(False) == ("fve_own",)
    assert D.has_train([fid(0.5, train=False), fid(0.4)])
    assert not D.has_train([fid(0.5, train=False), None, {"var_train": float("nan")}])
    assert not D.has_train([])


def test_best_of_n_entries_are_greedy_mean_and_every_n():
    fams = best_of_n()["families"]
    entries = D.best_of_n_entries(fams)
    g = fams["gemma"]
    assert entries[:5] == [
        g["greedy"],
        g["mean_over_samples"],
        g["best_of"]["1"],
        g["best_of"]["10"],
        g["best_of"]["2"],
    ]
    assert len(entries) == 10
    assert D.best_of_n_entries({"q": {}}) == [None, None]
