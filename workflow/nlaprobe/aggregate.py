"""Aggregates: score shards -> results JSON (`{"meta": ..., "data": ...}`, SPEC §8).

inputs -> outputs: per (AV family, AR family) the score shards of a decode condition and the AR
family's gold activation shards -> `results/fve_baseline.json` (E1) and
`results/transfer_matrix.json` (E7).

Invariants:
- the gold of a row is the AR family's own (aligned) vector for that row; rows are matched by
  (shard, row index) and their doc_ids are checked;
- tag failures are excluded from FVE and counted; a strict FVE scores each as nmse = 2;
- every headline figure has a 95% bootstrap interval over documents; the shuffled-pair null
  permutes the explanations (equivalently the AR's predictions) across rows with a fixed seed;
- `data` depends only on the inputs and parameters: two runs give identical `data`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlaprobe import __version__
from nlaprobe import constants as C
from nlaprobe import metrics as M
from nlaprobe.errors import ConfigError, DataError, show
from nlaprobe.io import check_rows, read_table, vectors_from_column, write_json

log = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1


@dataclass
class Scored:
    """The scored rows of one (AV, AR, condition, variant) over all shards, aligned with gold."""

    pred: np.ndarray  # [n, d] AR predictions of the scored rows
    gold: np.ndarray  # [n, d] AR family's vectors for those rows
    doc_ids: list[str]  # [n] document of each scored row (bootstrap groups)
    nmse: np.ndarray  # [n]
    n_rows: int  # all rows, including tag failures and decode errors
    tag_failures: int
    decode_errors: int


@dataclass
class Rows:
    """Every row of one scored set (scored or not), in shard order: the per-row view that the
    experiments subset, pair and select from."""

    shard: np.ndarray  # [n] index of the row's shard in the set's list of shards
    row: np.ndarray  # [n] row index within its shard (= row of the activation shard)
    sample: np.ndarray  # [n] sample index (0 for greedy conditions)
    doc_ids: list[str]  # [n]
    tag_failure: np.ndarray  # [n] bool
    decode_error: np.ndarray  # [n] bool
    nmse: np.ndarray  # [n] float64, NaN where not scored
    pred: np.ndarray  # [n, d] float32, zeros where not scored
    gold: np.ndarray  # [n, d] float32, the AR family's vector of the row

    @property
    def ok(self) -> np.ndarray:
        return ~self.tag_failure & ~self.decode_error

    def __len__(self) -> int:
        return len(self.row)

    def keys(self, with_sample: bool = False) -> list[tuple[int, ...]]:
        cols = (self.shard, self.row, self.sample) if with_sample else (self.shard, self.row)
        return list(zip(*(c.tolist() for c in cols), strict=True))

    def subset(self, mask: np.ndarray) -> Rows:
        idx = np.nonzero(np.asarray(mask, dtype=bool))[0]
        return Rows(
            self.shard[idx],
            self.row[idx],
            self.sample[idx],
            [self.doc_ids[i] for i in idx],
            self.tag_failure[idx],
            self.decode_error[idx],
            self.nmse[idx],
            self.pred[idx],
            self.gold[idx],
        )

    def scored(self) -> Scored:
        ok = self.ok
        return Scored(
            self.pred[ok],
            self.gold[ok],
            [d for d, k in zip(self.doc_ids, ok, strict=True) if k],
            self.nmse[ok],
            len(self),
            int(self.tag_failure.sum()),
            int(self.decode_error.sum()),
        )


# what the aggregates read of a score shard (nlaprobe.score writes it)
SCORE_COLUMNS = {
    "row": "int",
    "doc_id": "str",
    "sample": "int",
    "tag_failure": "bool",
    "decode_error": "bool",
    "nmse": "float?",
    "pred_vector": "vector?",
}


def load_rows(
    score_paths: Sequence[str], gold_paths: Sequence[str], sample: int | None = 0
) -> Rows:
    """Read score shards with their gold activation shards (same order). `sample`: keep only
    that sample index (None keeps all)."""
    if len(score_paths) != len(gold_paths):
        raise DataError(f"{len(score_paths)} score shards but {len(gold_paths)} gold shards")
    parts: dict[str, list] = {k: [] for k in Rows.__dataclass_fields__}
    for i, (sp, gp) in enumerate(zip(score_paths, gold_paths, strict=True)):
        st = read_table(sp, SCORE_COLUMNS)
        gt = read_table(gp, {C.COL_DOC_ID: "str", C.COL_VECTOR: "vector"})
        if sample is not None:
            st = st.filter(np.asarray(st.column("sample").to_numpy()) == sample)
        rows = np.asarray(st.column("row").to_numpy(), dtype=np.int64)
        doc_ids = st.column("doc_id").to_pylist()
        gold_ids = gt.column(C.COL_DOC_ID).to_pylist()
        check_rows(rows, len(gold_ids), sp, f"the gold shard {gp}")
        for r, did in zip(rows, doc_ids, strict=True):
            if gold_ids[r] != did:
                raise DataError(f"{gp}: row {r} does not hold {show(did)} as {sp} expects")
        gold = vectors_from_column(gt, C.COL_VECTOR, where=gp)
        tf = np.asarray(st.column("tag_failure").to_pylist(), dtype=bool)
        de = np.asarray(st.column("decode_error").to_pylist(), dtype=bool)
        ok = ~tf & ~de
        pred = np.zeros((len(rows), gold.shape[1]), dtype=np.float32)
        if ok.any():
            pred[ok] = vectors_from_column(st.filter(ok), "pred_vector", where=sp)
        nmse = np.asarray(
            [np.nan if v is None else v for v in st.column("nmse").to_pylist()], dtype=np.float64
        )
        parts["shard"].append(np.full(len(rows), i, dtype=np.int64))
        parts["row"].append(rows)
        parts["sample"].append(np.asarray(st.column("sample").to_numpy(), dtype=np.int64))
        parts["doc_ids"].append(doc_ids)
        parts["tag_failure"].append(tf)
        parts["decode_error"].append(de)
        parts["nmse"].append(nmse)
        parts["pred"].append(pred)
        parts["gold"].append(gold[rows] if len(rows) else gold[:0])
    if not score_paths:
        raise DataError("no score shards given")
    return Rows(
        **{
            k: [x for part in v for x in part] if k == "doc_ids" else np.concatenate(v)
            for k, v in parts.items()
        }
    )


def load_scored(
    score_paths: Sequence[str], gold_paths: Sequence[str], sample: int | None = 0
) -> Scored:
    """The scored rows of a set (see `load_rows`); warns when nothing was scored."""
    s = load_rows(score_paths, gold_paths, sample).scored()
    if not len(s.pred):
        log.warning("no scored rows in %s (all tag failures or errors)", list(score_paths))
    return s


def shuffled_null_fve(s: Scored, seed: int) -> float | None:
    """fve_own when each row's explanation is replaced by another row's (fixed permutation)."""
    if len(s.pred) < 2:
        return None
    perm = np.random.default_rng(seed).permutation(len(s.pred))
    nmse = M.nmse_rows(s.pred[perm], s.gold)
    return M.fve(nmse, M.population_var(s.gold))


def fidelity(s: Scored, *, train_var: float | None, n_boot: int, seed: int, alpha: float) -> dict:
    """E1 metrics of one scored set (metrics.summarize + counts). With fewer than two scored
    rows (e.g. every decode a tag failure) Var of the gold, hence every FVE figure, is undefined:
    they are null and only the counts and the strict figures (failures as nmse = 2) are reported."""
    if len(s.pred) < 2:
        none = {"value": None, "lo": None, "hi": None}
        strict = len(s.nmse) + s.tag_failures > 0
        return {
            "n": len(s.pred),
            "tag_failures": s.tag_failures,
            "nmse_mean": none,
            "nmse_median": None,
            "cos_mean": none,
            "var_own": None,
            "var_train": train_var,
            "fve_own": none,
            "fve_train": none if train_var is not None else None,
            "frac_fve_neg": None,
            "frac_fve_gt_half": None,
            "nmse_mean_strict": float(M.strict_nmse(s.nmse, s.tag_failures).mean())
            if strict
            else None,
            "fve_own_strict": None,
            "fve_train_strict": M.strict_fve(s.nmse, s.tag_failures, train_var)
            if (train_var is not None and strict)
            else None,
            "n_rows": s.n_rows,
            "decode_errors": s.decode_errors,
        }
    out = M.summarize(
        s.pred,
        s.gold,
        train_var=train_var,
        tag_failures=s.tag_failures,
        groups=s.doc_ids,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
    )
    out["n_rows"] = s.n_rows
    out["decode_errors"] = s.decode_errors
    return out


# ----------------------------------------------------------------------------- meta


def git_sha(repo: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo or Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def results_meta(cfg: dict, extra: dict | None = None) -> dict:
    """The `meta` block of a results JSON (never compared by tests; `data` is)."""
    checkpoints = {
        fam: {
            role: {
                k: v for k, v in f[role].items() if k in ("id", "path", "demo", "revision", "dtype")
            }
            for role in ("base", "av", "ar")
        }
        for fam, f in cfg.get("families", {}).items()
    }
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "package_version": __version__,
        "git_sha": git_sha(),
        "config_hash": config_hash(cfg),
        "checkpoints": checkpoints,
        "seeds": {"run": cfg.get("run", {}).get("seed"), "metrics": cfg.get("metrics", {})},
        "device": cfg.get("run", {}).get("device"),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }


# ----------------------------------------------------------------------------- aggregates


def _cell_inputs(spec: dict, av: str, ar: str) -> tuple[list[str], list[str]]:
    cell = spec["cells"][f"{av}__{ar}"]
    return cell["scores"], cell["gold"]


def fve_baseline(spec: dict) -> dict:
    """E1: greedy AV -> own AR per family."""
    m = spec["metrics"]
    data = {}
    for fam in spec["families"]:
        s = load_scored(*_cell_inputs(spec, fam, fam))
        data[fam] = fidelity(
            s,
            train_var=spec["train_var"].get(fam),
            n_boot=m["n_boot"],
            seed=m["null_seed"],
            alpha=m["alpha"],
        )
    return {"families": data}


def transfer_matrix(spec: dict) -> dict:
    """E7: every AV family x AR family, fve_own with CI and a shuffled-pair null per cell."""
    m = spec["metrics"]
    fams = spec["families"]
    cells = {}
    for av in fams:
        for ar in fams:
            s = load_scored(*_cell_inputs(spec, av, ar))
            fid = fidelity(
                s, train_var=None, n_boot=m["n_boot"], seed=m["null_seed"], alpha=m["alpha"]
            )
            cells[f"{av}__{ar}"] = {
                "av": av,
                "ar": ar,
                "route": "within" if av == ar else "cross",
                "fve_own": fid["fve_own"],
                "null_fve_own": shuffled_null_fve(s, m["null_seed"]),
                "nmse_mean": fid["nmse_mean"],
                "cos_mean": fid["cos_mean"],
                "var_own": fid["var_own"],
                "n": fid["n"],
                "n_rows": s.n_rows,
                "tag_failures": s.tag_failures,
                "fve_own_strict": fid["fve_own_strict"],
            }
    matrix = {av: {ar: cells[f"{av}__{ar}"]["fve_own"]["value"] for ar in fams} for av in fams}
    nulls = {av: {ar: cells[f"{av}__{ar}"]["null_fve_own"] for ar in fams} for av in fams}
    return {
        "families": list(fams),
        "matrix": matrix,
        "nulls": nulls,
        "cells": cells,
        "alignment": spec.get("alignment", {}),
    }


def aggregates() -> dict:
    """Name -> function(spec) -> data, for every results/<name>.json (E1-E8)."""
    from nlaprobe.experiments import EXPERIMENTS
    from nlaprobe.ridge_stage import ridge_scaling

    return {
        "fve_baseline": fve_baseline,
        "transfer_matrix": transfer_matrix,
        **EXPERIMENTS,
        "ridge_scaling": ridge_scaling,
    }


def alignment_summary(sidecars: Sequence[str]) -> dict:
    """Mean absolute alignment error (chars) over the aligned family's activation sidecars."""
    from nlaprobe.io import read_yaml

    total, rows = 0.0, 0
    for p in sidecars:
        meta = read_yaml(p)
        if not isinstance(meta, dict):
            raise DataError(f"{p}: expected a mapping, got {show(meta)} ({type(meta).__name__})")
        al = meta.get("alignment")
        if al is None:
            continue
        if not isinstance(al, dict):
            raise DataError(f"{p}: alignment is {show(al)}; expected a mapping or null")
        mean = al.get("mean_abs_error_chars")
        if mean is None:
            continue
        n = meta.get("n_rows")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"{p}: n_rows is {show(n)}; expected an integer >= 0")
        if isinstance(mean, bool) or not isinstance(mean, int | float) or not 0 <= mean < math.inf:
            raise DataError(
                f"{p}: alignment.mean_abs_error_chars is {show(mean)}; expected a finite "
                "number >= 0 or null"
            )
        total += mean * n
        rows += n
    return {"mean_abs_error_chars": total / rows if rows else None, "n_rows": rows}


def run_aggregate(
    name: str, spec: dict, out: str, cfg: dict | None = None, record: str | None = None
) -> dict:
    """Compute aggregate `name` from `spec`, write `out` and, when given, its input `record`
    (see write_input_record)."""
    registry = aggregates()
    if name not in registry:
        raise ConfigError(f"unknown aggregate {name!r}; valid: {sorted(registry)}")
    if record:
        _check_record_name(record, name)
    if spec.get("alignment_sidecars"):
        spec = {**spec, "alignment": alignment_summary(spec["alignment_sidecars"])}
    data = registry[name](spec)
    write_json(
        out,
        {"meta": results_meta(cfg or spec.get("config", {}), {"aggregate": name}), "data": data},
    )
    log.info("wrote %s", out)
    if record:
        write_input_record(record, name, out, data)
    return data


def _check_record_name(record: str | Path, name: str) -> Path:
    record = Path(record)
    if not record.name.startswith(f"{name}-") or record.suffix != ".json":
        raise ConfigError(f"input record {record}: expected a file named {name}-<tag>.json")
    return record


def write_input_record(record: str | Path, name: str, out: str | Path, data) -> None:
    """Write the input record `<dir>/<name>-<tag>.json` of an aggregate just written to `out`
    (the tag is that of its input list, nlaprobe.plan.Plan.aggregate_record), after the result,
    and remove the aggregate's records of other input sets in the same folder: the result now
    belongs to this input set only, so a config switched back to an earlier one finds no
    record and reruns the aggregate (A, B, A gives A's numbers). Records of other aggregates
    are left alone."""
    record = _check_record_name(record, name)
    prefix = f"{name}-"
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    write_json(
        record,
        {
            "aggregate": name,
            "result": str(out),
            "data_sha256": hashlib.sha256(blob.encode()).hexdigest(),
        },
    )
    for other in record.parent.glob(f"{prefix}*.json"):
        rest = other.name[len(prefix) : -len(".json")]
        if other != record and len(rest) == C.TAG_LENGTH and set(rest) <= set("0123456789abcdef"):
            other.unlink(missing_ok=True)
