"""The `aggregate` and `stamp` stages through their CLI (as the rules call them) on hand-made
score and gold shards: exit codes, the results JSON, and clean errors that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from stage_files import nlaprobe

from nlaprobe.io import DIGEST_KEY, read_json, vectors_to_arrow, write_table
from nlaprobe.plan import to_json

FAMILIES = ("qwen", "gemma")
WIDTH = {"qwen": 6, "gemma": 4}
N = 6  # rows per shard, 2 per document


def write_cell(root: Path, av: str, ar: str, seed: int, all_fail: bool) -> dict:
    """Two shards of scores of `av`'s decodes by `ar`'s AR, with `ar`'s gold vectors."""
    rng = np.random.default_rng(seed)
    d = WIDTH[ar]
    out = {"scores": [], "gold": []}
    for shard in range(2):
        ids = [f"builtin:pydoc:topics:{shard * 10 + i // 2}" for i in range(N)]
        gold = (rng.normal(size=(N, d)) + 0.5).astype(np.float32)
        pred = (gold + rng.normal(scale=0.5, size=(N, d))).astype(np.float32)
        ok = np.full(N, not all_fail)
        g = gold / np.linalg.norm(gold, axis=1, keepdims=True)
        p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
        cos = (g * p).sum(axis=1)
        gp = root / f"{ar}-gold-{shard}.parquet"
        sp = root / f"{av}__{ar}-scores-{shard}.parquet"
        write_table(
            gp, pa.table({"doc_id": pa.array(ids), "activation_vector": vectors_to_arrow(gold)})
        )
        nums = {
            k: pa.array([float(x) if o else None for x, o in zip(v, ok, strict=True)], pa.float64())
            for k, v in {
                "pred_norm": np.linalg.norm(pred, axis=1),
                "cos": cos,
                "nmse": 2 * (1 - cos),
            }.items()
        }
        table = pa.table(
            {
                "row": pa.array(range(N), pa.int64()),
                "doc_id": pa.array(ids),
                "sample": pa.array([0] * N, pa.int64()),
                "tag_failure": pa.array((~ok).tolist()),
                "decode_error": pa.array([False] * N),
                **nums,
                "pred_vector": vectors_to_arrow(pred, ok),
            }
        )
        write_table(sp, table)
        out["scores"].append(str(sp))
        out["gold"].append(str(gp))
    return out


def spec_file(spec: dict, tmp_path: Path) -> str:
    """The spec as a file, as `aggregate --spec-file` reads it (a hand-made spec)."""
    path = tmp_path / "spec.json"
    path.write_text(to_json(spec))
    return str(path)


@pytest.fixture
def spec(tmp_path) -> dict:
    """A transfer-matrix spec whose gemma AV wrote no explanation tags."""
    cells = {}
    for i, av in enumerate(FAMILIES):
        for j, ar in enumerate(FAMILIES):
            cells[f"{av}__{ar}"] = write_cell(tmp_path, av, ar, 10 * i + j, all_fail=av == "gemma")
    return {
        "families": list(FAMILIES),
        "metrics": {"n_boot": 20, "alpha": 0.05, "null_seed": 0},
        "train_var": {"qwen": None, "gemma": None},
        "cells": cells,
        "alignment_sidecars": [],
    }


CONFIG = {"run": {"seed": 42, "device": "cpu"}, "metrics": {"n_boot": 20}, "families": {}}


def test_aggregate_cli_writes_the_results_json(spec, tmp_path):
    out = tmp_path / "results" / "transfer_matrix.json"
    args = [
        "--spec-file",
        spec_file(spec, tmp_path),
        "--config",
        to_json(CONFIG),
        "--out",
        str(out),
    ]
    proc = nlaprobe("aggregate", "transfer_matrix", *args)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert set(doc) == {"meta", "data"}
    assert doc["meta"]["aggregate"] == "transfer_matrix" and doc["meta"]["device"] == "cpu"
    data = doc["data"]
    assert data["matrix"]["qwen"]["qwen"] is not None
    assert data["nulls"]["qwen"]["gemma"] is not None
    for ar in FAMILIES:
        cell = data["cells"][f"gemma__{ar}"]
        assert data["matrix"]["gemma"][ar] is None
        assert cell["n"] == 0 and cell["tag_failures"] == cell["n_rows"] == 2 * N
    assert [p.name for p in out.parent.iterdir()] == ["transfer_matrix.json"]

    # the same inputs again: the same data
    assert nlaprobe("aggregate", "transfer_matrix", *args).returncode == 0
    assert json.loads(out.read_text())["data"] == data

    base = tmp_path / "results" / "fve_baseline.json"
    proc = nlaprobe(
        "aggregate", "fve_baseline", "--spec-file", spec_file(spec, tmp_path), "--out", str(base)
    )
    assert proc.returncode == 0, proc.stderr
    fams = json.loads(base.read_text())["data"]["families"]
    assert fams["qwen"]["fve_own"]["value"] is not None
    assert fams["gemma"]["fve_own"]["value"] is None


def test_aggregate_cli_error_names_the_file_and_writes_nothing(spec, tmp_path):
    spec["cells"]["qwen__gemma"]["gold"][1] = str(tmp_path / "missing-gold.parquet")
    out = tmp_path / "results" / "transfer_matrix.json"
    proc = nlaprobe(
        "aggregate", "transfer_matrix", "--spec-file", spec_file(spec, tmp_path), "--out", str(out)
    )
    assert proc.returncode == 2
    assert "missing-gold.parquet" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_aggregate_cli_rejects_bad_json(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    proc = nlaprobe(
        "aggregate", "fve_baseline", "--spec-file", str(bad), "--out", str(tmp_path / "x")
    )
    assert proc.returncode == 2 and "--spec" in proc.stderr and str(bad) in proc.stderr
    assert not (tmp_path / "x").exists()


def test_stamp_cli_writes_its_parameters(tmp_path):
    params = {"aggregate": "fve_baseline", "metrics": {"n_boot": 20}, "families": ["qwen"]}
    out = tmp_path / ".stamps" / "fve_baseline-0123456789.json"
    proc = nlaprobe("stamp", "--params", to_json(params), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert read_json(out) == doc  # its recorded digest (nlaprobe.io.DIGEST_KEY) verifies
    assert {k: v for k, v in doc.items() if k != DIGEST_KEY} == params
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_record_cli_writes_the_record_and_drops_the_stale_ones(tmp_path):
    """The `record` rule's command: the record names its aggregate, tag and input count; the
    aggregate's records of other input sets go (a config switched back to one of them must
    rerun), other aggregates' records and files that are not records stay."""
    records = tmp_path / "results" / ".inputs"
    records.mkdir(parents=True)
    stale = records / "transfer_matrix-aaaaaaaaaa.json"
    other = records / "fve_baseline-aaaaaaaaaa.json"
    note = records / "transfer_matrix-notes.json"
    for p in (stale, other, note):
        p.write_text("{}")
    record = records / "transfer_matrix-0123456789.json"
    params = to_json({"name": "transfer_matrix", "n_inputs": 7})
    proc = nlaprobe("record", "--params", params, "--out", str(record))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in records.iterdir()) == sorted([record.name, other.name, note.name])
    doc = read_json(record)
    assert {k: doc[k] for k in ("aggregate", "inputs_tag", "n_inputs")} == {
        "aggregate": "transfer_matrix",
        "inputs_tag": "0123456789",
        "n_inputs": 7,
    }


def test_record_cli_refuses_bad_params_and_writes_nothing(tmp_path):
    record = tmp_path / "transfer_matrix-0123456789.json"
    for params in ("{not json", to_json({"name": "transfer_matrix"})):
        proc = nlaprobe("record", "--params", params, "--out", str(record))
        assert proc.returncode == 2 and "--params" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not record.exists()
    params = to_json({"name": "fve_baseline", "n_inputs": 1})
    proc = nlaprobe("record", "--params", params, "--out", str(record))
    assert proc.returncode == 2 and "fve_baseline-<tag>.json" in proc.stderr
    assert not record.exists()


def test_aggregate_cli_refuses_a_record_of_another_aggregate(spec, tmp_path):
    out = tmp_path / "results" / "transfer_matrix.json"
    record = tmp_path / "results" / ".inputs" / "fve_baseline-0123456789.json"
    proc = nlaprobe(
        "aggregate", "transfer_matrix", "--spec-file", spec_file(spec, tmp_path), "--out", str(out),
        "--record", str(record),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "transfer_matrix-<tag>.json" in proc.stderr and "Traceback" not in proc.stderr
    assert not record.exists() and not out.exists()


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
