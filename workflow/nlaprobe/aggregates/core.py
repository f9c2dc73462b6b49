"""The aggregates' shared core: score rows with their gold, fidelity, intervals, results meta and
input records. Imports no aggregate module (each of those imports this one).

inputs -> outputs: score shards (+ the AR family's gold activation shards, decode shards) ->
per-row views (Rows, Scored), the E1 metrics of a scored set (fidelity), bootstrap intervals and
paired differences (interval, share, paired_fve_diff), the `meta` block and the input record of
a results JSON.

Invariants:
- the gold of a row is the AR family's own (aligned) vector for that row; rows are matched by
  (shard, row index) and their doc_ids are checked;
- tag failures are excluded from FVE and counted; a strict FVE scores each as nmse = 2;
- every headline figure has a bootstrap interval over documents (metrics.bootstrap_ci with the
  doc_id as group, `metrics.n_boot` resamples, seed `metrics.null_seed`, level 1 - alpha);
- a paired FVE difference uses the baseline set's Var(v_nrm) as a fixed denominator:
  fve_a - fve_b = (mean nmse_b - mean nmse_a) / Var over the shared rows, so its interval is that
  of the nmse difference, scaled; where the family has a training Var (`spec["train_var"]`), the
  difference of fve_train, (mean nmse_b - mean nmse_a) / train_var, sits beside it (key "train");
- deterministic: everything here depends only on the inputs and parameters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlaprobe import __version__
from nlaprobe import constants as C
from nlaprobe import metrics as M
from nlaprobe.errors import ConfigError, DataError, show
from nlaprobe.io import (
    check_rows,
    read_table,
    read_yaml,
    table_meta,
    vectors_from_column,
    write_json,
)

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


# ----------------------------------------------------------------------------- shared pieces


def boot_params(spec: dict) -> dict:
    m = spec["metrics"]
    return {"n_boot": m["n_boot"], "seed": m["null_seed"], "alpha": m["alpha"]}


def rows_of(cell: dict, sample: int | None = 0) -> Rows:
    return load_rows(cell["scores"], cell["gold"], sample=sample)


def fidelity_of(rows: Rows | Scored, spec: dict, fam: str | None) -> dict:
    s = rows.scored() if isinstance(rows, Rows) else rows
    tv = spec["train_var"].get(fam) if fam else None
    return fidelity(s, train_var=tv, **boot_params(spec))


def interval(
    stat: Callable[..., float], *arrays: np.ndarray, groups: Sequence[str], spec: dict
) -> dict:
    """{"value", "lo", "hi", "n"} of stat over rows, cluster bootstrap by `groups`; null
    figures when there are no rows."""
    n = len(groups)
    if n == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    b = boot_params(spec)
    value, lo, hi = M.bootstrap_ci(
        stat, *arrays, groups=list(groups), n_boot=b["n_boot"], seed=b["seed"], alpha=b["alpha"]
    )
    return {"value": value, "lo": lo, "hi": hi, "n": n}


def share(flags: Sequence[bool], groups: Sequence[str], spec: dict) -> dict:
    """Share of rows with the flag, with its interval."""
    return interval(np.mean, np.asarray(flags, dtype=np.float64), groups=groups, spec=spec)


def paired_fve_diff(
    a: Rows, b: Rows, spec: dict, fam: str | None = None, *, with_sample: bool = False
) -> dict:
    """fve(a) - fve(b) over the rows scored in both, matched by (shard, row[, sample]), with its
    paired interval (the same document resamples for both sets):

        {"value", "lo", "hi",  the difference of fve_own: (mean nmse_b - mean nmse_a) / var
         "n":     shared scored rows,
         "var":   population_var of b's gold over the shared rows (a fixed denominator),
         "train": {"value", "lo", "hi", "n", "var_train"} | None}

    "train" is the difference of fve_train, (mean nmse_b - mean nmse_a) / var_train with
    var_train = spec["train_var"][fam], on the same resamples (so its bounds are those of
    "value" times var / var_train); None when `fam` is None or has no training Var. With fewer
    than two shared rows every value, bound and "var" is None ("train" keeps n and var_train)."""
    tv = (spec.get("train_var") or {}).get(fam) if fam is not None else None
    ka = {k: i for i, k in enumerate(a.keys(with_sample)) if a.ok[i]}
    kb = {k: i for i, k in enumerate(b.keys(with_sample)) if b.ok[i]}
    shared = [k for k in kb if k in ka]
    none = {"value": None, "lo": None, "hi": None, "n": len(shared)}
    if len(shared) < 2:
        train = None if tv is None else {**none, "var_train": tv}
        return {**none, "var": None, "train": train}
    ia = np.array([ka[k] for k in shared])
    ib = np.array([kb[k] for k in shared])
    var = M.population_var(b.gold[ib])
    d = b.nmse[ib] - a.nmse[ia]
    docs = [b.doc_ids[i] for i in ib]
    out = interval(lambda x: x.mean() / var, d, groups=docs, spec=spec)
    train = None
    if tv is not None:
        train = {**interval(lambda x: x.mean() / tv, d, groups=docs, spec=spec), "var_train": tv}
    return {**out, "var": var, "train": train}


def read_column(paths: Sequence[str], column: str) -> list[list]:
    """One column of each shard (a list per shard)."""
    return [read_table(p, [column]).column(column).to_pylist() for p in paths]


def explanations_for(rows: Rows, decode_paths: Sequence[str]) -> list[str | None]:
    """The explanation of every row of `rows`, read from the decode (or redacted) shards the rows
    were scored from: (shard, row, sample) must match."""
    out: list[str | None] = []
    tables = [
        read_table(p, {"row": "int", "sample": "int", "explanation": "str?"}) for p in decode_paths
    ]
    index = [
        {
            (r, s): e
            for r, s, e in zip(
                t.column("row").to_pylist(),
                t.column("sample").to_pylist(),
                t.column("explanation").to_pylist(),
                strict=True,
            )
        }
        for t in tables
    ]
    for sh, r, s in zip(rows.shard.tolist(), rows.row.tolist(), rows.sample.tolist(), strict=True):
        try:
            out.append(index[sh][(r, s)])
        except (IndexError, KeyError):
            raise DataError(
                f"{decode_paths[sh] if sh < len(decode_paths) else decode_paths}: no row {r} "
                f"sample {s}, which its score shard holds"
            ) from None
    return out


def decode_summary(paths: Sequence[str]) -> dict:
    """Banned-token count and leaks over decode shards (from their metadata and rows)."""
    n_banned: set[int] = set()
    leaks = 0
    for p in paths:
        t = read_table(p, ["leaks"])
        leaks += int(sum(x or 0 for x in t.column("leaks").to_pylist()))
        meta = table_meta(t, C.DECODE_META_KEY) or {}
        n_banned.add(int((meta.get("summary") or {}).get("n_banned_tokens", 0)))
    if len(n_banned) > 1:
        raise DataError(f"decode shards disagree on the banned-token count: {sorted(n_banned)}")
    return {"n_banned_tokens": n_banned.pop() if n_banned else 0, "leaks": leaks}


def families_of(spec: dict, cells_key: str = "cells") -> dict[str, dict[str, dict]]:
    """{family: {condition or variant: cell}} from keys "<fam>/<what>"."""
    out: dict[str, dict[str, dict]] = {}
    for key, cell in spec[cells_key].items():
        fam, what = key.split("/", 1)
        out.setdefault(fam, {})[what] = cell
    return out


# ----------------------------------------------------------------------------- meta


def git_sha(repo: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo or Path(__file__).resolve().parents[3],
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


# ----------------------------------------------------------------------------- inputs


def alignment_summary(sidecars: Sequence[str]) -> dict:
    """Mean absolute alignment error (chars) over the aligned family's activation sidecars."""
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


def check_record_name(record: str | Path, name: str) -> Path:
    record = Path(record)
    if not record.name.startswith(f"{name}-") or record.suffix != ".json":
        raise ConfigError(f"input record {record}: expected a file named {name}-<tag>.json")
    return record


def write_input_record(record: str | Path, name: str, n_inputs: int) -> None:
    """Write the input record `<dir>/<name>-<tag>.json` of an aggregate (the tag is that of its
    input list, nlaprobe.plan.Plan.aggregate_record; the `record` rule runs this before the
    aggregate, which takes the record as an input) and remove the aggregate's records of other
    input sets in the same folder: the result at the fixed path will belong to this input set
    only, so a config switched back to an earlier one finds no record and reruns the aggregate
    (A, B, A gives A's numbers). Records of other aggregates are left alone."""
    record = check_record_name(record, name)
    prefix = f"{name}-"
    tag = record.name[len(prefix) : -len(".json")]
    write_json(record, {"aggregate": name, "inputs_tag": tag, "n_inputs": n_inputs})
    for other in record.parent.glob(f"{prefix}*.json"):
        rest = other.name[len(prefix) : -len(".json")]
        if other != record and len(rest) == C.TAG_LENGTH and set(rest) <= set("0123456789abcdef"):
            other.unlink(missing_ok=True)
