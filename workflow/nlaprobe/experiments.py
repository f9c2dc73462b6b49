"""The probing series' aggregates E2-E6 (SPEC §6): quote ablation, verbatim check, post-hoc
redaction, best-of-N and adjacent layers, from score, decode and activation shards.

inputs -> outputs: an aggregate spec of `nlaprobe.plan` (paths by role + settings) -> the `data`
block of `results/<name>.json` (a plain dict; `nlaprobe.aggregate.run_aggregate` adds `meta`).

Invariants:
- every figure carries a 95% bootstrap interval over documents (metrics.bootstrap_ci with the
  doc_id as group, `metrics.n_boot` resamples, seed `metrics.null_seed`), and every difference
  against the baseline (greedy, or the full explanation for redaction) a paired interval over the
  rows scored in both sets;
- a paired FVE difference uses the baseline set's Var(v_nrm) as a fixed denominator:
  fve_a - fve_b = (mean nmse_b - mean nmse_a) / Var over the shared rows, so its interval is that
  of the nmse difference, scaled; where the family has a training Var (`spec["train_var"]`), the
  difference of fve_train, (mean nmse_b - mean nmse_a) / train_var, sits beside it (key "train");
- rows are matched across sets by (shard, row[, sample]); tag failures are excluded from FVE and
  counted (fidelity() also reports the strict figures with failures as nmse = 2);
- deterministic: `data` depends only on the inputs and settings.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from nlaprobe import constants as C
from nlaprobe import metrics as M
from nlaprobe import spans
from nlaprobe.aggregate import Rows, Scored, fidelity, load_rows
from nlaprobe.errors import DataError
from nlaprobe.io import read_table, table_meta, vectors_from_column

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- shared pieces


def _boot(spec: dict) -> dict:
    m = spec["metrics"]
    return {"n_boot": m["n_boot"], "seed": m["null_seed"], "alpha": m["alpha"]}


def _rows(cell: dict, sample: int | None = 0) -> Rows:
    return load_rows(cell["scores"], cell["gold"], sample=sample)


def _fidelity(rows: Rows | Scored, spec: dict, fam: str | None) -> dict:
    s = rows.scored() if isinstance(rows, Rows) else rows
    tv = spec["train_var"].get(fam) if fam else None
    return fidelity(s, train_var=tv, **_boot(spec))


def interval(
    stat: Callable[..., float], *arrays: np.ndarray, groups: Sequence[str], spec: dict
) -> dict:
    """{"value", "lo", "hi", "n"} of stat over rows, cluster bootstrap by `groups`; null
    figures when there are no rows."""
    n = len(groups)
    if n == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    b = _boot(spec)
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


def _decode_summary(paths: Sequence[str]) -> dict:
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


def _families_of(spec: dict, cells_key: str = "cells") -> dict[str, dict[str, dict]]:
    """{family: {condition or variant: cell}} from keys "<fam>/<what>"."""
    out: dict[str, dict[str, dict]] = {}
    for key, cell in spec[cells_key].items():
        fam, what = key.split("/", 1)
        out.setdefault(fam, {})[what] = cell
    return out


# ----------------------------------------------------------------------------- E2


def quote_ablation(spec: dict) -> dict:
    """E2: greedy, ban_dq, ban_dq_sq per family: E1 metrics, banned tokens and leaks, the
    substitution statistics and the hatch-free / hatch-using subsets under ban_dq_sq."""
    data = {}
    for fam, cells in _families_of(spec).items():
        base = _rows(cells["greedy"])
        out: dict = {"conditions": {}}
        for cond, cell in cells.items():
            rows = base if cond == "greedy" else _rows(cell)
            expl = explanations_for(rows, cell["decodes"])
            have = [i for i, e in enumerate(expl) if e is not None]
            docs = [rows.doc_ids[i] for i in have]
            single = [spans.uses_single_quotes(expl[i]) for i in have]
            hatch = [spans.uses_hatch(expl[i]) for i in have]
            entry = {
                **_fidelity(rows, spec, fam),
                **_decode_summary(cell["decodes"]),
                "share_single_quotes": share(single, docs, spec),
                "share_hatch": share(hatch, docs, spec),
                "hatch_kinds": dict(
                    sorted(Counter(k for i in have for k in spans.hatch_kinds(expl[i])).items())
                ),
                "diff_vs_greedy": None
                if cond == "greedy"
                else paired_fve_diff(rows, base, spec, fam),
            }
            if cond == "ban_dq_sq":
                flag = np.zeros(len(rows), dtype=bool)
                flag[have] = hatch
                entry["hatch_using"] = _fidelity(rows.subset(flag), spec, fam)
                entry["hatch_free"] = _fidelity(rows.subset(~flag), spec, fam)
            out["conditions"][cond] = entry
        data[fam] = out
    return {"families": data}


# ----------------------------------------------------------------------------- E3


def verbatim(spec: dict) -> dict:
    """E3: longest run of words shared by each explanation and its source context, against a
    shuffled-context null (fixed seed), per decode set; hatch-free subset under ban_dq_sq."""
    threshold = spec["settings"]["threshold"]
    seed = spec["metrics"]["null_seed"]
    data: dict = {}
    for fam, sets in _families_of(spec, "sets").items():
        fam_out: dict = {}
        base_runs: dict[tuple, int] = {}
        contexts_of: dict[tuple, list[list]] = {}  # every set of a family reads the same shards
        for cond in sorted(sets, key=lambda c: c != "greedy"):
            files = sets[cond]
            acts = tuple(files["acts"])
            if acts not in contexts_of:
                contexts_of[acts] = read_column(acts, C.COL_DETOK)
            contexts = contexts_of[acts]
            keys, expl, ctx, docs = [], [], [], []
            for sh, path in enumerate(files["decodes"]):
                t = read_table(
                    path, {"row": "int", "sample": "int", "doc_id": "str", "explanation": "str?"}
                )
                for r, s, d, e in zip(
                    *(t.column(c).to_pylist() for c in ("row", "sample", "doc_id", "explanation")),
                    strict=True,
                ):
                    if e is None:
                        continue
                    if not 0 <= r < len(contexts[sh]):
                        raise DataError(f"{files['acts'][sh]}: no row {r} for {path}")
                    keys.append((sh, r, s))
                    expl.append(e)
                    ctx.append(contexts[sh][r])
                    docs.append(d)
            runs = np.array(
                [spans.longest_shared_run_text(e, c) for e, c in zip(expl, ctx, strict=True)],
                dtype=np.float64,
            )
            perm = spans.shuffled_pairing(len(expl), seed)
            null = np.array(
                [spans.longest_shared_run_text(expl[i], ctx[j]) for i, j in enumerate(perm)],
                dtype=np.float64,
            )
            entry = _run_stats(runs, null, docs, threshold, spec)
            if cond == "greedy":
                base_runs = {
                    k[:2]: v for k, v in zip(keys, runs.tolist(), strict=True) if k[2] == 0
                }
            else:
                entry["diff_share_ge_vs_greedy"] = _paired_share_diff(
                    keys, runs, docs, base_runs, threshold, spec
                )
            if cond == "ban_dq_sq":
                free = np.array([not spans.uses_hatch(e) for e in expl], dtype=bool)
                entry["hatch_free"] = _run_stats(
                    runs[free],
                    null[free],
                    [d for d, f in zip(docs, free, strict=True) if f],
                    threshold,
                    spec,
                )
            fam_out[cond] = entry
        data[fam] = fam_out
    return {"threshold": threshold, "null_seed": seed, "families": data}


def _run_stats(
    runs: np.ndarray, null: np.ndarray, docs: Sequence[str], threshold: int, spec: dict
) -> dict:
    return {
        "runs": spans.verbatim_stats(runs.astype(int).tolist(), threshold),
        "null": spans.verbatim_stats(null.astype(int).tolist(), threshold),
        "median": interval(np.median, runs, groups=docs, spec=spec),
        "p90": interval(lambda x: np.quantile(x, 0.9), runs, groups=docs, spec=spec),
        "share_ge": share(runs >= threshold, docs, spec),
        "null_share_ge": share(null >= threshold, docs, spec),
        "diff_share_ge_vs_null": interval(
            lambda a, b: (a >= threshold).mean() - (b >= threshold).mean(),
            runs,
            null,
            groups=docs,
            spec=spec,
        ),
    }


def _paired_share_diff(
    keys: list[tuple], runs: np.ndarray, docs: Sequence[str], base: dict, threshold: int, spec
) -> dict:
    """Share of long runs in this set minus greedy's, over rows present in both (sample 0)."""
    idx = [i for i, k in enumerate(keys) if k[2] == 0 and k[:2] in base]
    a = np.array([runs[i] for i in idx])
    b = np.array([base[keys[i][:2]] for i in idx])
    return interval(
        lambda x, y: (x >= threshold).mean() - (y >= threshold).mean(),
        a,
        b,
        groups=[docs[i] for i in idx],
        spec=spec,
    )


# ----------------------------------------------------------------------------- E4


def redaction(spec: dict) -> dict:
    """E4: the AR on edited greedy explanations, per variant; statistics of the originals' quoted
    spans (spans.QUOTED_KINDS, what the variants edit) and, apart, of their unquoted hatches
    (spans.UNQUOTED_HATCH_KINDS, never edited), per decode with an explanation::

        {"variants": [...], "span_kinds": [...], "hatch_kinds": [...],
         "families": {fam: {"spans": {"mean_spans_per_decode", "share_chars_in_spans",
                                      "share_decodes_with_spans", "mean_hatches_per_decode",
                                      "share_chars_in_hatches", "share_decodes_with_hatches"},
                            "variants": {variant: {**fidelity, "diff_vs_full"}}}}}

    Shares of characters are pooled (characters inside / all characters); a hatch's characters
    inside a quoted span count as the span's only (spans.span_stats)."""
    data = {}
    for fam, cells in _families_of(spec).items():
        full = _rows(cells["full"])
        expl = explanations_for(full, cells["full"]["decodes"])
        stats = [spans.span_stats(e) for e in expl if e is not None]
        docs = [d for d, e in zip(full.doc_ids, expl, strict=True) if e is not None]

        def col(key: str, stats=stats) -> np.ndarray:
            return np.array([s[key] for s in stats], dtype=np.float64)

        total = col("total_chars")
        out: dict = {"spans": {}, "variants": {}}
        for what, n_key, chars_key in (
            ("spans", "n_spans", "span_chars"),
            ("hatches", "n_hatches", "hatch_chars"),
        ):
            n, chars = col(n_key), col(chars_key)
            out["spans"] |= {
                f"mean_{what}_per_decode": interval(np.mean, n, groups=docs, spec=spec),
                f"share_chars_in_{what}": interval(
                    lambda a, b: a.sum() / max(b.sum(), 1.0), chars, total, groups=docs, spec=spec
                ),
                f"share_decodes_with_{what}": share(n > 0, docs, spec),
            }
        for variant in spans.REDACTION_VARIANTS:
            if variant not in cells:
                continue
            rows = full if variant == "full" else _rows(cells[variant])
            out["variants"][variant] = {
                **_fidelity(rows, spec, fam),
                "diff_vs_full": None
                if variant == "full"
                else paired_fve_diff(rows, full, spec, fam),
            }
        data[fam] = out
    return {
        "variants": list(spans.REDACTION_VARIANTS),
        "span_kinds": list(spans.QUOTED_KINDS),
        "hatch_kinds": list(spans.UNQUOTED_HATCH_KINDS),
        "families": data,
    }


# ----------------------------------------------------------------------------- E5


def select_best(rows: Rows, n: int) -> Rows:
    """Per activation row, the sample with the lowest nmse among samples 0..n-1 that were
    scored; a row none of whose first n samples was scored keeps sample 0 (a failure)."""
    keep = rows.sample < n
    best: dict[tuple[int, int], int] = {}
    for i in np.nonzero(keep)[0]:
        k = (int(rows.shard[i]), int(rows.row[i]))
        j = best.get(k)
        if j is None:
            best[k] = i
            continue
        if rows.ok[i] and (not rows.ok[j] or rows.nmse[i] < rows.nmse[j]):
            best[k] = i
    mask = np.zeros(len(rows), dtype=bool)
    mask[list(best.values())] = True
    return rows.subset(mask)


def best_of_n(spec: dict) -> dict:
    """E5: best of the first n samples by the AR's own nmse; mean over all samples; greedy."""
    ns = spec["settings"]["ns"]
    data = {}
    for fam, cells in _families_of(spec).items():
        greedy = _rows(cells["greedy"])
        samples = _rows(cells["sample_t1"], sample=None)
        out: dict = {
            "greedy": _fidelity(greedy, spec, fam),
            "n_samples": int(samples.sample.max()) + 1 if len(samples) else 0,
            "sample_tag_failures": int(samples.tag_failure.sum()),
            "best_of": {},
        }
        for n in ns:
            sel = select_best(samples, n)
            out["best_of"][str(n)] = {
                **_fidelity(sel, spec, fam),
                "diff_vs_greedy": paired_fve_diff(sel, greedy, spec, fam),
            }
        out["mean_over_samples"] = _fidelity(samples, spec, fam)
        data[fam] = out
    return {"ns": ns, "families": data}


# ----------------------------------------------------------------------------- E6


def layers(spec: dict) -> dict:
    """E6: adjacent layers' vectors through the layer-K NLA (decode condition greedy_L{k}: the
    layer-K AV explains v_k, the layer-K AR reads the explanation back)::

        {"families": {fam: {"layer": K, "greedy": fidelity at K,
                            "adjacent": {str(k): {**headline, "vs_layer_K", "cos_to_layer",
                                                  "inter_layer_nmse", "intrinsic_nmse",
                                                  "additive_bound_nmse", "diff_vs_greedy"}}}}}

    - headline (top-level keys, the fidelity dict: fve_own, nmse_mean, cos_mean, var_own, n,
      tag_failures, ...): the round trip of v_k scored against v_k itself, i.e. each row's
      prediction against the same row's layer-k vector (column constants.layer_column(k) of the
      AV family's activation shards), with Var of the v_k set as the denominator (the published
      "FVE (own denom)": 0.695 = 1 - 0.0167/0.0548 for L40). No fve_train: the training Var is
      layer K's;
    - vs_layer_K: the same predictions scored against the layer-K vector (the score shards' own
      gold), with fve_train where a training Var is configured;
    - cos_to_layer, inter_layer_nmse: cos and nmse of v_k to v_K over every activation row where
      both are usable; intrinsic_nmse: greedy's mean nmse at K; additive_bound_nmse: their sum;
    - diff_vs_greedy: paired_fve_diff of the vs_layer_K scores against greedy (gold v_K on both
      sides, so the difference is that of the input vector alone).
    """
    data = {}
    for fam, cells in _families_of(spec).items():
        k_main, *adjacent = spec["layers"][fam]
        greedy = _rows(cells["greedy"])
        intrinsic = greedy.scored().nmse
        out: dict = {"layer": k_main, "greedy": _fidelity(greedy, spec, fam), "adjacent": {}}
        for k in adjacent:
            cell = cells[f"greedy_L{k}"]
            rows = _rows(cell)
            own = against_layer(rows, cell["acts"], k)
            v_k, v_main, docs = _layer_pairs(cell["acts"], k)
            cos = M.cos_rows(v_k, v_main)
            inter = M.nmse_rows(v_k, v_main)
            bound = (
                float(intrinsic.mean() + inter.mean()) if len(intrinsic) and len(inter) else None
            )
            out["adjacent"][str(k)] = {
                **_fidelity(own, spec, None),
                "vs_layer_K": _fidelity(rows, spec, fam),
                "cos_to_layer": interval(np.mean, cos, groups=docs, spec=spec),
                "inter_layer_nmse": interval(np.mean, inter, groups=docs, spec=spec),
                "intrinsic_nmse": float(intrinsic.mean()) if len(intrinsic) else None,
                "additive_bound_nmse": bound,
                "diff_vs_greedy": paired_fve_diff(rows, greedy, spec, fam),
            }
        data[fam] = out
    return {"families": data}


def against_layer(rows: Rows, acts: Sequence[str], k: int) -> Rows:
    """`rows` re-scored against layer k: each row's gold becomes its vector in column
    constants.layer_column(k) of the activation shards `acts` (the rows' shards, in order; the
    rows' doc_ids are checked), and the nmse of every scored row is recomputed against it. A
    scored row whose layer-k vector is unusable (zero or not finite) is a DataError: its decode
    injected that very vector, so the inputs disagree."""
    col = C.layer_column(k)
    n_shards = int(rows.shard.max()) + 1 if len(rows) else 0
    if len(acts) < n_shards:
        raise DataError(f"{len(acts)} activation shards given for {n_shards} score shards ({col})")
    gold = np.zeros_like(rows.gold)
    for i, path in enumerate(acts):
        sel = np.nonzero(rows.shard == i)[0]
        if not len(sel):
            continue
        t = read_table(path, [C.COL_DOC_ID, col])
        ids = t.column(C.COL_DOC_ID).to_pylist()
        for j in sel:
            r = int(rows.row[j])
            if not 0 <= r < len(ids) or ids[r] != rows.doc_ids[j]:
                raise DataError(f"{path}: row {r} does not hold {rows.doc_ids[j]!r} ({col})")
        v = vectors_from_column(t, col, width=rows.gold.shape[1], where=path, require_finite=False)
        gold[sel] = v[rows.row[sel]]
    ok = rows.ok
    bad = np.nonzero(ok & ~_usable(gold))[0]
    if len(bad):
        j = bad[0]
        raise DataError(
            f"{acts[rows.shard[j]]}: row {rows.row[j]} has an unusable {col} vector (zero or not "
            "finite), but its decode was scored"
        )
    nmse = np.full(len(rows), np.nan)
    if ok.any():
        nmse[ok] = M.nmse_rows(rows.pred[ok], gold[ok])
    return dataclasses.replace(rows, gold=gold, nmse=nmse)


def _layer_pairs(acts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Layer-k and layer-K vectors of every row of the family's activation shards where both are
    usable (finite, non-zero): a bad vector is a per-row decode error upstream, not a crash."""
    col = C.layer_column(k)
    vk, vm, docs = [], [], []
    for p in acts:
        t = read_table(p, [C.COL_DOC_ID, C.COL_VECTOR, col])
        a = vectors_from_column(t, col, where=p, require_finite=False)
        b = vectors_from_column(t, C.COL_VECTOR, where=p, require_finite=False)
        good = _usable(a) & _usable(b)
        vk.append(a[good])
        vm.append(b[good])
        docs += [d for d, g in zip(t.column(C.COL_DOC_ID).to_pylist(), good, strict=True) if g]
    return np.concatenate(vk), np.concatenate(vm), docs


def _usable(v: np.ndarray) -> np.ndarray:
    finite = np.isfinite(v).all(axis=1)
    return finite & (np.abs(np.where(finite[:, None], v, 0)).sum(axis=1) > 0)


EXPERIMENTS = {
    "quote_ablation": quote_ablation,
    "verbatim": verbatim,
    "redaction": redaction,
    "best_of_n": best_of_n,
    "layers": layers,
}
