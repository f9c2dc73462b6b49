"""The `nlaprobe report` CLI on hand-made results JSON: the HTML and every figure, and clean
exit-2 errors that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from stage_files import nlaprobe, unit

from nlaprobe.aggregates import figure_names
from nlaprobe.aggregates.core import Scored, fidelity, shuffled_null_fve
from nlaprobe.io import write_json


def scored(seed: int, d: int) -> Scored:
    rng = np.random.default_rng(seed)
    gold = (rng.normal(size=(12, d)) + 0.5).astype(np.float32)
    pred = (gold + rng.normal(scale=0.5, size=(12, d))).astype(np.float32)
    cos = (unit(pred) * unit(gold)).sum(axis=1)
    docs = [f"builtin:pydoc:topics:{i // 2}" for i in range(12)]
    return Scored(pred, gold, docs, 2 * (1 - cos), 14, 2, 0)


def results_files(root: Path) -> tuple[str, str, dict]:
    """fve_baseline.json and transfer_matrix.json in the shapes aggregate.py writes."""
    fams = ("alphafam", "betafam")
    width = {"alphafam": 6, "betafam": 8}
    fid = {
        f: fidelity(scored(i, width[f]), train_var=0.9, n_boot=20, seed=0, alpha=0.05)
        for i, f in enumerate(fams)
    }
    meta = {"aggregate": "", "schema_version": 1, "device": "cpu", "config_hash": "abc"}
    base = root / "fve_baseline.json"
    write_json(base, {"meta": meta, "data": {"families": fid}})
    cells = {}
    for i, av in enumerate(fams):
        for j, ar in enumerate(fams):
            s = scored(10 * i + j, width[ar])
            f = fidelity(s, train_var=None, n_boot=20, seed=0, alpha=0.05)
            cells[f"{av}__{ar}"] = {
                "av": av,
                "ar": ar,
                "route": "within" if av == ar else "cross",
                "fve_own": f["fve_own"],
                "null_fve_own": shuffled_null_fve(s, 0),
                "nmse_mean": f["nmse_mean"],
                "cos_mean": f["cos_mean"],
                "var_own": f["var_own"],
                "n": f["n"],
                "n_rows": s.n_rows,
                "tag_failures": s.tag_failures,
                "fve_own_strict": f["fve_own_strict"],
            }
    data = {
        "families": list(fams),
        "matrix": {a: {b: cells[f"{a}__{b}"]["fve_own"]["value"] for b in fams} for a in fams},
        "nulls": {a: {b: cells[f"{a}__{b}"]["null_fve_own"] for b in fams} for a in fams},
        "cells": cells,
        "alignment": {"mean_abs_error_chars": 0.25, "n_rows": 12},
    }
    tm = root / "transfer_matrix.json"
    write_json(tm, {"meta": meta, "data": data})
    return str(base), str(tm), fid


def test_report_cli_writes_html_and_every_figure(tmp_path):
    base, tm, fid = results_files(tmp_path)
    out, figs = tmp_path / "results" / "report.html", tmp_path / "results" / "figures"
    proc = nlaprobe(
        "report", "--inputs", json.dumps([base, tm]), "--out", str(out), "--figures", str(figs)
    )
    assert proc.returncode == 0, proc.stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "alphafam" in page and "betafam" in page
    assert "E1 baseline: greedy AV → own AR" in page and "E7 transfer matrix" in page
    assert f"{fid['alphafam']['fve_own']['value']:.3f}" in page
    assert "0.250 characters over 12 rows" in page
    assert sorted(p.name for p in figs.iterdir()) == sorted(f"{f}.png" for f in figure_names())
    for f in figure_names():
        assert (figs / f"{f}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count("data:image/png;base64,") == len(figure_names())


def test_report_cli_missing_input_exits_2_and_writes_no_html(tmp_path):
    base, _, _ = results_files(tmp_path)
    missing = tmp_path / "results" / "ridge_scaling.json"
    out, figs = tmp_path / "results" / "report.html", tmp_path / "results" / "figures"
    proc = nlaprobe(
        "report",
        "--inputs",
        json.dumps([base, str(missing)]),
        "--out",
        str(out),
        "--figures",
        str(figs),
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not figs.exists()


def test_report_cli_invalid_inputs_json_exits_2(tmp_path):
    out = tmp_path / "report.html"
    proc = nlaprobe(
        "report", "--inputs", "[not json", "--out", str(out), "--figures", str(tmp_path)
    )
    assert proc.returncode == 2
    assert "--inputs" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
