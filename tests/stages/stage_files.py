"""Helpers shared by the stage tests that run on hand-made files (test_ridge_stage,
test_aggregates_ridge_scaling, test_aggregates_stage, test_report_stage, test_redact_stage):
the `python -m nlaprobe` runner and aligned activation shards with the ridge job run on them.

Activation shards are written in the stage-0 schema (doc_id, activation_vector as a float32
fixed-size list, ...); a source family (d=6) and a destination family (d=8) are aligned row for
row, two rows per document."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from nlaprobe import constants as C
from nlaprobe.io import DIGEST_KEY, read_json, vectors_to_arrow, write_table
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
