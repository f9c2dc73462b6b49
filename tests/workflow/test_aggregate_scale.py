"""An aggregate on 300 evaluation shards, through the very command its rule runs (issue 12).

The paper config is widened to 300 evaluation shards of one document; tiny synthetic score,
gold and alignment-sidecar files sit at the planned paths (no model runs). The job command of
`fve_baseline` is formatted by Snakemake (tests/snakemake_jobs.py) and run with bash in the
working directory, as Snakemake runs it. Before aggregate jobs planned their own spec, that
command carried every path (the numbers in docs/development.md); now it carries the config, the
identity specs and the root of the inputs, and the job reads all 2 x 300 score shards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from snakemake_jobs import REPO, job_shell, parsed_workflow

from nlaprobe import metrics as M
from nlaprobe.io import vectors_to_arrow, write_table, write_yaml

pytestmark = pytest.mark.slow

SHARDS = 300
ROWS = 2  # per shard, one document
D = 4
SHA = "0123456789abcdef0123456789abcdef01234567"


def overrides() -> dict:
    return {
        "corpus": {
            "revision": SHA,
            "shard_docs": 1,
            "splits": {"eval": {"start": 100_000, "stop": 100_000 + SHARDS}},
        },
        "families": {
            f: {r: {"revision": SHA} for r in ("base", "av", "ar")} for f in ("gemma", "qwen")
        },
        "metrics": {"n_boot": 200},
    }


def write_family(wd, plan, fam: str, rng) -> dict:
    """Score and gold shards of (fam, fam, greedy, full); the last shard's second row is a tag
    failure. Returns the arrays a direct computation needs."""
    preds, golds, docs = [], [], []
    for i, shard in enumerate(plan.shards("eval")):
        ids = [f"hf:doc:{i}"] * ROWS
        gold = (rng.normal(size=(ROWS, D)) + 0.5).astype(np.float32)
        pred = (gold + rng.normal(scale=0.3, size=(ROWS, D))).astype(np.float32)
        ok = np.ones(ROWS, dtype=bool)
        if i == SHARDS - 1:
            ok[1] = False
        g = gold / np.linalg.norm(gold, axis=1, keepdims=True)
        p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
        nmse = 2 * (1 - (g * p).sum(axis=1))
        write_table(
            wd / plan.activation_shard(fam, "eval", shard),
            pa.table({"doc_id": pa.array(ids), "activation_vector": vectors_to_arrow(gold)}),
        )
        write_table(
            wd / plan.score_shard(fam, fam, "greedy", "full", shard),
            pa.table(
                {
                    "row": pa.array(range(ROWS), pa.int64()),
                    "doc_id": pa.array(ids),
                    "sample": pa.array([0] * ROWS, pa.int64()),
                    "tag_failure": pa.array((~ok).tolist()),
                    "decode_error": pa.array([False] * ROWS),
                    "nmse": pa.array(
                        [float(x) if o else None for x, o in zip(nmse, ok, strict=True)],
                        pa.float64(),
                    ),
                    "pred_vector": vectors_to_arrow(pred, ok),
                }
            ),
        )
        preds.append(pred[ok])
        golds.append(gold[ok])
        docs += [d for d, o in zip(ids, ok, strict=True) if o]
    return {"pred": np.concatenate(preds), "gold": np.concatenate(golds), "docs": docs}


def test_fve_baseline_on_300_shards_through_its_rule_command(tmp_path):
    wd = tmp_path / "wd"
    with parsed_workflow(wd, [REPO / "config" / "paper.yaml"], overrides()) as wf:
        plan = wf.globals["P"]
        assert plan.n_shards("eval") == SHARDS
        rng = np.random.default_rng(0)
        arrays = {f: write_family(wd, plan, f, rng) for f in plan.families}
        aligned = [f for f in plan.families if f != plan.primary]
        for f in aligned:
            for i, shard in enumerate(plan.shards("eval")):
                err = 3.5 if i == SHARDS - 1 else 0.5
                meta = {"n_rows": ROWS, "alignment": {"mean_abs_error_chars": err}}
                write_yaml(wd / plan.activation_sidecar(f, "eval", shard), meta)
        cmd = job_shell(wf, "fve_baseline", plan.aggregate_file("fve_baseline"))
        record = plan.aggregate_record("fve_baseline")
        n_inputs = len(plan.aggregate_inputs("fve_baseline"))
    # 2 families x 300 x (score + gold) + 300 sidecars + the stamp, none on the command line
    assert n_inputs == 2 * SHARDS * 2 + SHARDS + 1
    assert "shard-" not in cmd and len(cmd.encode()) < 16 * 1024
    (wd / "logs").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    start = time.monotonic()
    proc = subprocess.run(["bash", "-c", cmd], cwd=wd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    log = (wd / "logs" / "fve_baseline.log").read_text()
    assert proc.returncode == 0, log
    print(f"\nfve_baseline on {SHARDS} shards: {seconds:.1f} s; command {len(cmd)} bytes")

    data = json.loads((wd / "results" / "fve_baseline.json").read_text())["data"]
    m = plan.cfg["metrics"]
    for fam in plan.families:
        a = arrays[fam]
        expected = M.summarize(
            a["pred"],
            a["gold"],
            train_var=plan.cfg["families"][fam]["train_var"],
            tag_failures=1,
            groups=a["docs"],
            n_boot=m["n_boot"],
            seed=m["null_seed"],
            alpha=m["alpha"],
        )
        got = data["families"][fam]
        # every shard was read: the last one's tag failure is counted
        assert got["n_rows"] == SHARDS * ROWS and got["tag_failures"] == 1
        assert got["n"] == SHARDS * ROWS - 1
        for key in ("fve_own", "fve_train", "nmse_mean", "cos_mean"):
            assert got[key] == pytest.approx(expected[key]), (fam, key)
    # the input record is the `record` rule's output (the aggregate only checks its name)
    assert f"--record {record}" in cmd and not (wd / record).exists()
