"""The `ridge_scaling` aggregate (E8) on ridge runs fitted by `ridge_stage` on hand-made aligned
shards: the curve of FVE against n and its crossover with the text route, by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from stage_files import run_ridge, unit, write_pairs

from nlaprobe.aggregates.stage import run_aggregate
from nlaprobe.io import write_json

METRICS = {"n_boot": 50, "alpha": 0.05, "null_seed": 0}


def v_nrm(x: np.ndarray) -> np.ndarray:
    return unit(x) * math.sqrt(x.shape[1])


def hand_fve(pred: np.ndarray, gold: np.ndarray) -> float:
    """1 - mean nmse / Var(v_nrm(gold)), population variance over all rows and dims."""
    p, g = v_nrm(pred), v_nrm(gold)
    nmse = ((p - g) ** 2).mean(axis=1)
    var = ((g - g.mean(axis=0)) ** 2).mean()
    return float(1.0 - nmse.mean() / var)


def transfer_json(path: Path, cells: dict) -> str:
    write_json(path, {"meta": {"aggregate": "transfer_matrix"}, "data": {"cells": cells}})
    return str(path)


def test_ridge_scaling_curve_and_crossover(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.15, seed=3)
    ridge_dir = tmp_path / "results" / "ridge"
    # 500 is capped at the 60 pairs that exist: the same fit as n = 60, one point on the curve
    runs = {n: run_ridge(pairs, ridge_dir, n) for n in (8, 60, 500)}
    route = {"value": 0.5, "lo": 0.4, "hi": 0.6}
    text = transfer_json(tmp_path / "transfer_matrix.json", {"srcfam__dstfam": {"fve_own": route}})
    spec = {
        "families": ["srcfam", "dstfam"],
        "metrics": METRICS,
        "settings": {"kernels": ["linear", "rbf"]},
        "train_var": {"srcfam": None, "dstfam": None},
        "directions": {
            "srcfam_to_dstfam": {
                "src": "srcfam",
                "dst": "dstfam",
                "runs": [
                    {"n": n, "json": str(ridge_dir / f"n-{n}.json")}
                    | {"npz": str(ridge_dir / f"n-{n}.npz")}
                    for n in runs
                ],
                "gold": pairs.paths["dst_eval"],
            }
        },
        "text_route": text,
    }
    out = tmp_path / "results" / "ridge_scaling.json"
    data = run_aggregate("ridge_scaling", spec, str(out))
    doc = json.loads(out.read_text())
    assert set(doc) == {"meta", "data"}
    assert doc["meta"]["aggregate"] == "ridge_scaling"
    assert doc["data"] == data
    assert data["kernels"] == ["linear", "rbf"]
    d = data["directions"]["srcfam_to_dstfam"]
    assert (d["src"], d["dst"]) == ("srcfam", "dstfam")
    assert d["text_route"] == {"fve_own": 0.5, "lo": 0.4, "hi": 0.6}
    g = v_nrm(pairs.ye)
    var = float(((g - g.mean(axis=0)) ** 2).mean())
    for kernel in ("linear", "rbf"):
        k = d["kernels"][kernel]
        assert [p["n"] for p in k["curve"]] == [8, 60]
        fves = [hand_fve(runs[n][1][f"{kernel}_eval_pred"], pairs.ye) for n in (8, 60)]
        for point, n, fv in zip(k["curve"], (8, 60), fves, strict=True):
            assert point["fve_own"]["value"] == pytest.approx(fv, abs=1e-9)
            assert point["var_own"] == pytest.approx(var, abs=1e-9)
            assert point["alpha"] == runs[n][0]["kernels"][kernel]["alpha"]
            assert point["gamma"] == runs[n][0]["kernels"][kernel]["gamma"]
        # the noisy map is not learnt from 8 pairs, it is from 60: the text route's 0.5 is
        # reached at n = 60
        assert fves[0] < 0.5 <= fves[1]
        cross = k["crossover"]
        slope = (fves[1] - fves[0]) / (math.log10(60) - math.log10(8))
        assert cross["slope"] == pytest.approx(slope, abs=1e-9)
        assert cross["intercept"] == pytest.approx(fves[0] - slope * math.log10(8), abs=1e-9)
        assert cross["status"] == "reached"
        assert cross["n_cross"] == 60
        assert cross["log10_n_cross"] == pytest.approx(math.log10(60), abs=1e-12)

    # a text route above every point: a rising curve extrapolates to n* = 10^((t - a) / b)
    high = transfer_json(
        tmp_path / "high" / "transfer_matrix.json",
        {"srcfam__dstfam": {"fve_own": {"value": 0.995, "lo": None, "hi": None}}},
    )
    data = run_aggregate("ridge_scaling", {**spec, "text_route": high}, str(out))
    cross = data["directions"]["srcfam_to_dstfam"]["kernels"]["linear"]["crossover"]
    fves = [hand_fve(runs[n][1]["linear_eval_pred"], pairs.ye) for n in (8, 60)]
    slope = (fves[1] - fves[0]) / (math.log10(60) - math.log10(8))
    log_n = (0.995 - (fves[0] - slope * math.log10(8))) / slope
    assert max(fves) < 0.995 and slope > 0 and log_n > math.log10(60)
    assert cross["status"] == "extrapolated"
    assert cross["log10_n_cross"] == pytest.approx(log_n, rel=1e-9)
    assert cross["n_cross"] == pytest.approx(10.0**log_n, rel=1e-9)

    # no text-route cell for the direction: no target, no crossover
    none = transfer_json(tmp_path / "none" / "transfer_matrix.json", {})
    data = run_aggregate("ridge_scaling", {**spec, "text_route": none}, str(out))
    d = data["directions"]["srcfam_to_dstfam"]
    assert d["text_route"] == {"fve_own": None, "lo": None, "hi": None}
    assert d["kernels"]["linear"]["crossover"] is None
