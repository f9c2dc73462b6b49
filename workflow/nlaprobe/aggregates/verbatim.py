"""E3 verbatim check: the longest run of words an explanation shares with its source context,
against a shuffled-context null, per decode set (SPEC §6 E3).

inputs -> outputs: per family and decode condition of constants.CONDITIONS the decode shards and
the family's activation shards (their detokenized contexts) -> `results/verbatim.json`: run
statistics, median and p90 with intervals, the share of runs of at least `verbatim.threshold`
words against the null's (seed `metrics.null_seed`), the paired difference against greedy and,
under ban_dq_sq, the hatch-free subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nlaprobe import constants as C
from nlaprobe import spans
from nlaprobe.aggregates.core import families_of, interval, read_column, share
from nlaprobe.aggregates.registry import Aggregate, register
from nlaprobe.constants import CONDITIONS
from nlaprobe.errors import DataError
from nlaprobe.io import read_table

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    shards = plan.shards("eval")
    return {
        "sets": {
            f"{f}/{c}": {
                "decodes": [plan.decode_shard(f, c, s) for s in shards],
                "acts": [plan.activation_shard(f, "eval", s) for s in shards],
            }
            for f in plan.families
            for c in CONDITIONS
        }
    }


def settings(cfg: dict) -> dict:
    return dict(cfg["verbatim"])


def compute(spec: dict) -> dict:
    """E3: longest run of words shared by each explanation and its source context, against a
    shuffled-context null (fixed seed), per decode set; hatch-free subset under ban_dq_sq."""
    threshold = spec["settings"]["threshold"]
    seed = spec["metrics"]["null_seed"]
    data: dict = {}
    for fam, sets in families_of(spec, "sets").items():
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


AGGREGATE = register(
    Aggregate(
        name="verbatim",
        experiment=3,
        title="verbatim check",
        inputs=inputs,
        compute=compute,
        settings=settings,
        section="nlaprobe.report.html:section_verbatim",
    )
)
