"""`decode.backend: vllm` through Snakemake (SPEC §4.6): the transfer matrix of a small config
whose families are the session's briefly trained AVs/ARs (tests/conftest.py, by `path:`),
built once with the HF backend and once with `--config 'decode={backend: vllm}'`, offline.

The backend is part of the decode tag, so the second run reuses corpus and activations and runs
only the decodes (vLLM's CPU build here), their scores and the aggregates; the two runs' greedy
texts and transfer matrices must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from workflow_common import copy_workflow

from nlaprobe.config import read_config_file, validate_config
from nlaprobe.constants import DECODE_META_KEY
from nlaprobe.io import table_meta
from nlaprobe.plan import Plan

if os.environ.get("NLAPROBE_REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401  (`make test` installs it: a missing engine is a failure)
else:
    pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TARGET = "results/transfer_matrix.json"


def config_for(families: dict) -> dict:
    """The default config on the trained families (by path) and their 40 held-out documents."""
    from conftest import TRAINED_EVAL_DOCS, TRAINED_LAYER, TRAINED_SAMPLING

    raw = read_config_file(REPO / "config" / "config.yaml")
    raw["corpus"]["shard_docs"] = TRAINED_EVAL_DOCS
    raw["corpus"]["splits"] = {
        "eval": {"start": 0, "stop": TRAINED_EVAL_DOCS},
        "ridge": {"start": TRAINED_EVAL_DOCS, "stop": 2 * TRAINED_EVAL_DOCS},
    }
    raw["sampling"].update({k: v for k, v in TRAINED_SAMPLING.items() if k != "seed"})
    for style, fam in raw["families"].items():
        fam["layer"] = TRAINED_LAYER
        fam["adjacent_layers"] = []
        for role in ("base", "av", "ar"):
            fam[role] = {"path": str(families[style]["family"] / role), "dtype": "float32"}
    raw.setdefault("metrics", {})["n_boot"] = 100
    return raw


def snakemake(workdir: Path, *args: str) -> str:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    if proc.returncode:
        logs = "".join(
            f"\n--- {p}\n{p.read_text()[-3000:]}"
            for p in sorted(workdir.glob("logs/decode/**/*.log"))
        )
        pytest.fail(
            f"snakemake {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-5000:]}{logs}"
        )
    return proc.stdout


@pytest.fixture(scope="module")
def two_runs(trained_families, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("vllm-wf") / "wf")
    raw = config_for(trained_families)
    (workdir / "trained.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = {}
    for backend in ("hf", "vllm"):
        start = time.monotonic()
        log = snakemake(
            workdir,
            TARGET,  # first: --configfile and --config read every argument after them
            "--cores",
            "2",
            "--configfile",
            "trained.yaml",
            # Snakemake's --config takes top-level keys only (no `decode.backend=`): a YAML
            # mapping, which the Snakefile merges into the decode section
            "--config",
            f"decode={{backend: {backend}}}",
        )
        plan = Plan(validate_config({**raw, "decode": {**raw["decode"], "backend": backend}}))
        matrix = json.loads((workdir / TARGET).read_text())
        out[backend] = (plan, matrix, log, time.monotonic() - start)
        print(f"\n[vllm workflow] {backend}: {out[backend][3]:.1f} s")
    return workdir, out


def test_vllm_run_builds_the_transfer_matrix(two_runs):
    workdir, runs = two_runs
    plan, matrix, log, _ = runs["vllm"]
    # only decodes and what reads them ran again: corpus and activations were reused
    assert "rule extract:" not in log and "rule corpus:" not in log
    assert "rule decode:" in log
    for fam in plan.families:
        for shard in plan.shards("eval"):
            path = workdir / plan.decode_shard(fam, "greedy", shard)
            meta = table_meta(pq.read_table(path), DECODE_META_KEY)
            assert meta["backend"] == "vllm"
            assert meta["summary"]["n_errors"] == 0
    data = matrix["data"]
    for av in plan.families:
        for ar in plan.families:
            cell = data["cells"][f"{av}__{ar}"]
            assert cell["fve_own"]["value"] is not None and cell["n"] >= 2


def test_vllm_and_hf_runs_agree(two_runs):
    workdir, runs = two_runs
    (hf_plan, hf_matrix, _, _), (vl_plan, vl_matrix, _, _) = runs["hf"], runs["vllm"]
    for fam in hf_plan.families:
        assert hf_plan.decode_tag(fam) != vl_plan.decode_tag(fam)  # the backend is in the tag
        same = total = 0
        for shard in hf_plan.shards("eval"):
            a = pq.read_table(workdir / hf_plan.decode_shard(fam, "greedy", shard)).to_pylist()
            b = pq.read_table(workdir / vl_plan.decode_shard(fam, "greedy", shard)).to_pylist()
            same += sum(x["text"] == y["text"] for x, y in zip(a, b, strict=True))
            total += len(a)
        print(f"\n[vllm workflow] {fam}: greedy identical {same}/{total}")
        assert same >= 0.95 * total
    for key, cell in hf_matrix["data"]["cells"].items():
        other = vl_matrix["data"]["cells"][key]
        for x, y in ((cell, other), (other, cell)):
            iv, value = x["fve_own"], y["fve_own"]["value"]
            # a percentile interval need not contain its own point estimate: widened to it
            assert min(iv["lo"], iv["value"]) <= value <= max(iv["hi"], iv["value"]), key
