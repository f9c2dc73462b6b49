"""What the workflow tests share: the repository's workflow files, copied into a fresh working
directory per test (what a new machine checks out), and the reduced default config of CI."""

from __future__ import annotations

import shutil
from pathlib import Path

from nlaprobe.config import read_config_file

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "profiles", "envs")


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
