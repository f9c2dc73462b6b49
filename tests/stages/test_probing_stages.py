"""The probing stages on hand-made files: the E8 ridge job (`ridge_stage` and `nlaprobe ridge`),
the `ridge_scaling` aggregate, and the `report`, `redact` and `aggregate` CLIs (exit codes, the
files they write, and clean errors that leave nothing behind).

Activation shards are written in the stage-0 schema (doc_id, activation_vector as a float32
fixed-size list, ...); a source family (d=6) and a destination family (d=8) are aligned row for
row, two rows per document."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlaprobe import constants as C
from nlaprobe.aggregates import figure_names
from nlaprobe.aggregates.core import Scored, fidelity, shuffled_null_fve
from nlaprobe.aggregates.stage import run_aggregate
from nlaprobe.decode import decode_table
from nlaprobe.errors import ConfigError, DataError
from nlaprobe.io import DIGEST_KEY, read_json, vectors_to_arrow, write_json, write_table
from nlaprobe.plan import shard_folder, to_json
from nlaprobe.redact import REDACT_META_KEY
from nlaprobe.ridge_stage import RidgeParams, ridge_stage

WORKFLOW = Path(__file__).resolve().parents[2] / "workflow"
D_SRC, D_DST = 6, 8
N_RIDGE, N_EVAL = 60, 20  # pairs per split, two shards each
SEED = 7
ALPHAS = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]
GAMMAS = [0.5, 1.0, 2.0]
PROVENANCE = {"src": "srcfam", "dst": "dstfam", "tag": "0123456789", "spec": {"seed": SEED}}
# what plan.ridge_job passes: the `ridge` config section, the run seed, device and provenance
PARAMS = {
    "kernels": ["linear", "rbf"],
    "rbf_gammas": GAMMAS,
    "alphas": ALPHAS,
    "val_fraction": 0.2,
    "n_points": 3,
    "n_min": 4,
    "seed": SEED,
    "device": "cpu",
    "provenance": PROVENANCE,
}
METRICS = {"n_boot": 50, "alpha": 0.05, "null_seed": 0}


def nlaprobe(*args: str) -> subprocess.CompletedProcess:
    """`python -m nlaprobe ...` importing this worktree's package."""
    env = {**os.environ, "PYTHONPATH": str(WORKFLOW)}
    return subprocess.run(
        [sys.executable, "-m", "nlaprobe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def v_nrm(x: np.ndarray) -> np.ndarray:
    return unit(x) * math.sqrt(x.shape[1])


def hand_fve(pred: np.ndarray, gold: np.ndarray) -> float:
    """1 - mean nmse / Var(v_nrm(gold)), population variance over all rows and dims."""
    p, g = v_nrm(pred), v_nrm(gold)
    nmse = ((p - g) ** 2).mean(axis=1)
    var = ((g - g.mean(axis=0)) ** 2).mean()
    return float(1.0 - nmse.mean() / var)


def activation_table(doc_ids: list[str], vectors: np.ndarray, layer: int) -> pa.Table:
    n = len(doc_ids)
    return pa.table(
        {
            C.COL_DOC_ID: pa.array(doc_ids, pa.string()),
            C.COL_DOC_IDX: pa.array([int(d.rsplit(":", 1)[1]) for d in doc_ids], pa.int64()),
            C.COL_N_RAW_TOKENS: pa.array([4 + i % 2 for i in range(n)], pa.int64()),
            C.COL_DETOK: pa.array([f"tokens of row {i}" for i in range(n)], pa.string()),
            C.COL_VECTOR: vectors_to_arrow(vectors),
            C.COL_LAYER: pa.array([layer] * n, pa.int64()),
            C.COL_CHAR_END: pa.array([10 + i % 2 for i in range(n)], pa.int64()),
            C.COL_POSITION: pa.array([3 + i % 2 for i in range(n)], pa.int64()),
        }
    )


@dataclass
class Pairs:
    """Paths of the aligned shards (by side and split) and the vectors they hold."""

    paths: dict[str, list[str]]  # src_ridge, dst_ridge, src_eval, dst_eval
    x: np.ndarray  # ridge split, source
    y: np.ndarray  # ridge split, destination
    xe: np.ndarray  # eval split, source
    ye: np.ndarray  # eval split, destination
    eval_docs: list[str]


def write_pairs(root: Path, noise: float, seed: int = 0) -> Pairs:
    """Source rows x and destination rows unit(x) A (+ noise), A [6, 8] with orthonormal rows,
    so that without noise unit(dst) = unit(x) A exactly: a linear map of the unit source rows."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D_DST, D_SRC)))
    a = q.T
    paths: dict[str, list[str]] = {}
    arrays = {}
    for split, n, first_doc in (("ridge", N_RIDGE, 100), ("eval", N_EVAL, 0)):
        x = (rng.normal(size=(n, D_SRC)) + 0.3).astype(np.float32)
        y = unit(x) @ a + noise * rng.normal(size=(n, D_DST))
        y = unit(y).astype(np.float32)
        docs = [f"builtin:pydoc:topics:{first_doc + i // 2}" for i in range(n)]
        arrays[split] = (x, y, docs)
        half = n // 2
        for side, vecs, layer in (("src", x, 2), ("dst", y, 3)):
            key = f"{side}_{split}"
            paths[key] = []
            for shard in range(2):
                rows = slice(shard * half, (shard + 1) * half)
                p = root / "acts" / side / split / f"shard-{C.shard_name(shard)}.parquet"
                write_table(p, activation_table(docs[rows], vecs[rows], layer))
                paths[key].append(str(p))
    return Pairs(
        paths,
        arrays["ridge"][0],
        arrays["ridge"][1],
        arrays["eval"][0],
        arrays["eval"][1],
        arrays["eval"][2],
    )


def run_ridge(pairs: Pairs, out: Path, n: int, params: dict = PARAMS) -> tuple[dict, dict]:
    """ridge_stage at n -> (the returned result, the npz arrays)."""
    out_json, out_npz = out / f"n-{n}.json", out / f"n-{n}.npz"
    result = ridge_stage(
        RidgeParams.from_json(params),
        n=n,
        **pairs.paths,
        out_json=str(out_json),
        out_npz=str(out_npz),
        device="cpu",
    )
    doc = read_json(out_json)  # verifies the digest it records
    assert {k: v for k, v in doc.items() if k != DIGEST_KEY} == result
    assert result["npz_sha256"] == hashlib.sha256(out_npz.read_bytes()).hexdigest()
    with np.load(out_npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return result, arrays


# ----------------------------------------------------------------------------- ridge_stage


@pytest.fixture(scope="module")
def exact(tmp_path_factory) -> tuple[Pairs, dict[int, tuple[dict, dict]]]:
    """An exact linear map, fitted at n = 20, 40 and 500 (more than the 60 pairs that exist)."""
    root = tmp_path_factory.mktemp("exact")
    pairs = write_pairs(root, noise=0.0)
    return pairs, {n: run_ridge(pairs, root / "ridge", n) for n in (20, 40, 500)}


def test_ridge_stage_records_sizes_and_nested_training_rows(exact):
    _, runs = exact
    perm = np.random.default_rng(SEED).permutation(N_RIDGE)
    for n_req, n_used in ((20, 20), (40, 40), (500, N_RIDGE)):
        result, arrays = runs[n_req]
        assert result["n_requested"] == n_req
        assert result["n"] == n_used
        assert result["n_pairs"] == N_RIDGE
        assert result["n_eval"] == N_EVAL
        assert result["provenance"] == PROVENANCE
        assert arrays["train_rows"].tolist() == sorted(perm[:n_used].tolist())
        assert set(arrays) == {
            "train_rows",
            "linear_eval_pred",
            "linear_dual_coef",
            "linear_weight",
            "rbf_eval_pred",
            "rbf_dual_coef",
        }
        assert arrays["linear_eval_pred"].shape == (N_EVAL, D_DST)
        assert arrays["rbf_eval_pred"].shape == (N_EVAL, D_DST)
        assert arrays["linear_dual_coef"].shape == (n_used, D_DST)
        assert arrays["rbf_dual_coef"].shape == (n_used, D_DST)
        assert arrays["linear_weight"].shape == (D_SRC, D_DST)
        assert arrays["linear_eval_pred"].dtype == np.float32
    small, large = runs[20][1]["train_rows"], runs[40][1]["train_rows"]
    assert set(small.tolist()) < set(large.tolist())
    assert runs[500][1]["train_rows"].tolist() == list(range(N_RIDGE))


def test_ridge_stage_linear_kernel_recovers_the_map(exact):
    pairs, runs = exact
    for result, arrays in runs.values():
        pred = arrays["linear_eval_pred"]
        cos = (unit(pred) * unit(pairs.ye)).sum(axis=1)
        assert cos.min() > 0.99
        k = result["kernels"]["linear"]
        assert k["spec"] == "linear" and k["gamma"] is None
        assert k["alpha"] in ALPHAS
        curve = k["val_curves"]["linear"]
        assert set(curve) == {repr(a) for a in ALPHAS}
        best = min(curve.values())
        # the chosen alpha scores the lowest validation nmse; ties go to the larger alpha
        assert k["alpha"] == max(a for a in ALPHAS if curve[repr(a)] <= best + 1e-12)
        assert k["val_nmse"] == best
        assert k["eval_nmse_mean"] == pytest.approx(float((2 * (1 - cos)).mean()), abs=1e-6)
        # the primal weights give the same predictions from the unit source rows
        w = arrays["linear_weight"].astype(np.float64)
        np.testing.assert_allclose(unit(pairs.xe) @ w, pred, atol=1e-5)


def test_ridge_stage_rbf_gamma_comes_from_the_grid(exact):
    pairs, runs = exact
    for result, arrays in runs.values():
        k = result["kernels"]["rbf"]
        assert k["gamma"] in GAMMAS
        assert k["spec"] == f"rbf_g{k['gamma']:g}"
        assert k["alpha"] in ALPHAS
        assert set(k["val_curves"]) == {"rbf_g0.5", "rbf_g1", "rbf_g2"}
        lowest = min(min(c.values()) for c in k["val_curves"].values())
        assert k["val_nmse"] == lowest == min(k["val_curves"][k["spec"]].values())
        cos = (unit(arrays["rbf_eval_pred"]) * unit(pairs.ye)).sum(axis=1)
        assert k["eval_nmse_mean"] == pytest.approx(float((2 * (1 - cos)).mean()), abs=1e-6)


def test_ridge_stage_misaligned_shards_name_both_files_and_write_nothing(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    # the second destination ridge shard holds other documents than the source's
    bad = tmp_path / "acts" / "dst" / "ridge" / "shifted.parquet"
    docs = [f"builtin:pydoc:topics:{900 + i // 2}" for i in range(N_RIDGE // 2)]
    write_table(bad, activation_table(docs, pairs.y[N_RIDGE // 2 :], 3))
    pairs.paths["dst_ridge"][1] = str(bad)
    out = tmp_path / "results" / "ridge"
    with pytest.raises(DataError) as e:
        run_ridge(pairs, out, 20)
    msg = str(e.value)
    assert pairs.paths["src_ridge"][1] in msg and str(bad) in msg
    assert "not aligned" in msg
    assert not out.exists()


def test_ridge_stage_shard_count_mismatch_is_a_data_error(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    pairs.paths["dst_eval"] = pairs.paths["dst_eval"][:1]
    out = tmp_path / "results" / "ridge"
    with pytest.raises(DataError, match="2 source shards but 1 destination shards"):
        run_ridge(pairs, out, 20)
    assert not out.exists()


@pytest.mark.parametrize("n", [-1, 0])
def test_ridge_stage_rejects_a_training_size_below_one(tmp_path, n):
    pairs = write_pairs(tmp_path, noise=0.0)
    out = tmp_path / "results" / "ridge"
    # the message names n and the value given
    with pytest.raises(ConfigError, match=rf"\bn\b.*{n}"):
        run_ridge(pairs, out, n)
    assert not out.exists()


# ----------------------------------------------------------------------------- ridge CLI


def ridge_args(pairs: Pairs, out: Path, n: int, params: dict) -> list[str]:
    """The command line of rules/ridge.smk: each shard list as its folder, and the counts."""
    return [
        "--threads",
        "1",
        "ridge",
        "--n",
        str(n),
        "--params",
        to_json(params),
        "--src-ridge",
        shard_folder(pairs.paths["src_ridge"]),
        "--dst-ridge",
        shard_folder(pairs.paths["dst_ridge"]),
        "--src-eval",
        shard_folder(pairs.paths["src_eval"]),
        "--dst-eval",
        shard_folder(pairs.paths["dst_eval"]),
        "--ridge-shards",
        str(len(pairs.paths["src_ridge"])),
        "--eval-shards",
        str(len(pairs.paths["src_eval"])),
        "--out-json",
        str(out / f"n-{n}.json"),
        "--out-npz",
        str(out / f"n-{n}.npz"),
        "--device",
        "cpu",
    ]


def test_ridge_cli_writes_json_and_npz(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    out = tmp_path / "results" / "ridge" / "ridge-0123456789" / "srcfam_to_dstfam"
    proc = nlaprobe(*ridge_args(pairs, out, 40, PARAMS))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["n-40.json", "n-40.npz"]
    result = json.loads((out / "n-40.json").read_text())
    assert (result["n_requested"], result["n"], result["n_pairs"], result["n_eval"]) == (
        40,
        40,
        N_RIDGE,
        N_EVAL,
    )
    assert result["provenance"] == PROVENANCE
    assert sorted(result["kernels"]) == ["linear", "rbf"]
    with np.load(out / "n-40.npz", allow_pickle=False) as z:
        perm = np.random.default_rng(SEED).permutation(N_RIDGE)
        assert z["train_rows"].tolist() == sorted(perm[:40].tolist())
        cos = (unit(z["linear_eval_pred"]) * unit(pairs.ye)).sum(axis=1)
    assert cos.min() > 0.99


def test_ridge_cli_bad_params_exit_2_naming_the_field(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    out = tmp_path / "results" / "ridge"
    params = {**PARAMS, "alphas": [0.1, -1.0]}
    proc = nlaprobe(*ridge_args(pairs, out, 40, params))
    assert proc.returncode == 2
    assert "alphas" in proc.stderr and "--params" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- ridge_scaling


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


# ----------------------------------------------------------------------------- report CLI


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


# ----------------------------------------------------------------------------- redact CLI


def decode_row(row: int, explanation: str | None, error: str | None = None) -> dict:
    return {
        "row": row,
        "doc_id": f"builtin:pydoc:topics:{row // 2}",
        "position": 3,
        "sample": 0,
        "seed": 42,
        "text": "" if explanation is None else f"<explanation>{explanation}</explanation>",
        "explanation": explanation,
        "n_tokens": 12,
        "finish_reason": "length" if error else "stop",
        "error": error,
        "leaks": 0,
    }


@pytest.fixture
def decodes(tmp_path) -> Path:
    rows = [
        decode_row(0, 'The word "cat" appears here.'),
        decode_row(1, 'Mentions "a" and *bb*.'),  # a quoted span and a hatch (kept)
        decode_row(2, None),  # tag failure
        decode_row(3, None, error="RuntimeError: out of memory"),
    ]
    path = tmp_path / "decodes" / "greedy" / "shard-00000.parquet"
    write_table(path, decode_table(rows, {"cond": "greedy", "n_rows": 4}))
    return path


def test_redact_cli_edits_explanations(decodes, tmp_path):
    out = tmp_path / "redacted" / "prose_only" / "shard-00000.parquet"
    proc = nlaprobe(
        "redact", "--decodes", str(decodes), "--variant", "prose_only", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    t = pq.read_table(out)
    assert t.column_names == [
        "row",
        "doc_id",
        "sample",
        "explanation",
        "error",
        "n_spans",
        "span_chars",
        "n_hatches",
        "hatch_chars",
        "total_chars",
    ]
    assert t.column("row").to_pylist() == [0, 1, 2, 3]
    assert t.column("explanation").to_pylist() == [
        "The word appears here.",
        "Mentions and *bb*.",
        None,
        None,
    ]
    assert t.column("error").to_pylist() == [None, None, None, "RuntimeError: out of memory"]
    assert t.column("n_spans").to_pylist() == [1, 1, None, None]
    assert t.column("span_chars").to_pylist() == [5, 3, None, None]
    assert t.column("n_hatches").to_pylist() == [0, 1, None, None]
    assert t.column("hatch_chars").to_pylist() == [0, 4, None, None]
    assert t.column("total_chars").to_pylist() == [28, 22, None, None]
    meta = t.schema.metadata
    assert json.loads(meta[C.DECODE_META_KEY.encode()]) == {"cond": "greedy", "n_rows": 4}
    assert json.loads(meta[REDACT_META_KEY.encode()]) == {
        "decodes": str(decodes),
        "variant": "prose_only",
        "n_rows": 4,
        "n_explanations": 2,
        "n_spans": 2,
        "span_chars": 8,
        "n_hatches": 1,
        "hatch_chars": 4,
        "total_chars": 50,
    }


def test_redact_cli_unknown_variant_lists_the_valid_ones(decodes, tmp_path):
    out = tmp_path / "redacted" / "no_such" / "shard-00000.parquet"
    proc = nlaprobe("redact", "--decodes", str(decodes), "--variant", "no_such", "--out", str(out))
    assert proc.returncode != 0
    assert "'no_such'" in proc.stderr
    assert "['full', 'prose_only', 'spans_empty', 'spans_ellipsis', 'spans_redacted', " in (
        proc.stderr
    )
    assert "'spans_only_marked', 'spans_only_bare']" in proc.stderr
    assert not out.exists() and not out.parent.exists()


def test_redact_cli_unknown_variant_is_a_clean_exit_2(decodes, tmp_path):
    out = tmp_path / "redacted" / "no_such" / "shard-00000.parquet"
    proc = nlaprobe("redact", "--decodes", str(decodes), "--variant", "no_such", "--out", str(out))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- aggregate CLI


def test_aggregate_cli_unknown_name_lists_the_valid_ones(tmp_path):
    out = tmp_path / "results" / "no_such.json"
    proc = nlaprobe("aggregate", "no_such", "--config", "{}", "--out", str(out))
    assert proc.returncode == 2
    assert "unknown aggregate 'no_such'" in proc.stderr
    for name in ("fve_baseline", "transfer_matrix", "ridge_scaling"):
        assert f"'{name}'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not out.parent.exists()
