"""What the workflow tests share: the repository's workflow files, copied into a fresh working
directory per test (what a new machine checks out), the reduced default config of CI, a way to
run Snakemake on it, and one local run of it (`Run`, the session fixture `real_run` of
conftest.py) that test_workflow checks and test_slurm compares the cluster's results with."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from nlaprobe.config import read_config_file, validate_config
from nlaprobe.plan import Plan

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "profiles", "envs")
EVAL = "eval"
# one shard per split: the whole DAG (every condition, variant and aggregate) in ~80 jobs; the
# resume tests (test_resume.py) cover the two-shard case
SHARD_DOCS = 16


def copy_workflow(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name)
        else:
            shutil.copy2(src, dst / name)
    return dst


def reduced_config(shard_docs: int = 8) -> dict:
    """The default config, small enough for CI: 16 + 16 documents, tiny families trained just
    enough (150 AV steps) that the AVs write their `<explanation>` tags, so every aggregate has
    numbers (of no quality); 2 ridge sizes. `shard_docs` 8 gives 2 shards per split, 16 one."""
    raw = read_config_file(REPO / "config" / "config.yaml")
    raw["corpus"]["splits"] = {"eval": {"start": 0, "stop": 16}, "ridge": {"start": 16, "stop": 32}}
    raw["corpus"]["shard_docs"] = shard_docs
    raw["sampling"]["positions_per_doc"] = 2
    raw["demo"].update(vocab_size=512, hidden_size=32, intermediate_size=64)
    raw["demo"].setdefault("train", {}).update(
        base_steps=20,
        av_steps=150,
        av_lr=0.005,
        ar_steps=40,
        positions_per_doc=4,
        ar_mix=True,
        ar_mix_rows=256,
    )
    raw.setdefault("metrics", {})["n_boot"] = 50
    raw["ridge"] = {"n_points": 2, "n_min": 8, "rbf_gammas": [1.0]}
    return raw


def snakemake_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # tiny models: one thread per job avoids oversubscribing the cores given to --cores
        "OMP_NUM_THREADS": "1",
        **(extra or {}),
    }


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run Snakemake of this interpreter in `workdir`; stdout and stderr merged."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=snakemake_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


def write_config(workdir: Path, name: str, mutate: Callable[[dict], None] | None = None) -> Plan:
    """Write the reduced config (optionally mutated) as `name`; return its validated plan."""
    raw = reduced_config(shard_docs=SHARD_DOCS)
    if mutate is not None:
        raw = copy.deepcopy(raw)
        mutate(raw)
    cfg = validate_config(raw, source=name)  # the swap must be a valid config
    (workdir / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return Plan(cfg)


class Run:
    def __init__(self, workdir: Path, plan: Plan, seconds: float):
        self.workdir = workdir
        self.plan = plan
        self.seconds = seconds

    def json(self, name: str) -> dict:
        return json.loads((self.workdir / "results" / f"{name}.json").read_text())

    def eval_rows(self, fam: str) -> int:
        return sum(
            pq.read_metadata(self.workdir / self.plan.activation_shard(fam, EVAL, s)).num_rows
            for s in self.plan.shards(EVAL)
        )
