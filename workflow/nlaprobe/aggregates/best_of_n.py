"""E5 best-of-N: the best of the first n samples by the AR's own nmse, against greedy and the
mean over all samples, per family (SPEC §6 E5).

inputs -> outputs: per family the greedy and sample_t1 score shards with the gold activation
shards -> `results/best_of_n.json`: for each n of `best_of_n.ns` (those up to
`decode.n_samples`, and n_samples itself) the E1 metrics of the selection and its paired
difference against greedy (matched by (shard, row)).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nlaprobe.aggregates.core import Rows, families_of, fidelity_of, paired_fve_diff, rows_of
from nlaprobe.aggregates.registry import Aggregate, Figure, register

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    return {
        "cells": {
            f"{f}/{c}": plan.cell_inputs(f, f, c)
            for f in plan.families
            for c in ("greedy", "sample_t1")
        }
    }


def settings(cfg: dict) -> dict:
    n = cfg["decode"]["n_samples"]
    return {"ns": sorted({k for k in cfg["best_of_n"]["ns"] if k <= n} | {n})}


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


def compute(spec: dict) -> dict:
    """E5: best of the first n samples by the AR's own nmse; mean over all samples; greedy."""
    ns = spec["settings"]["ns"]
    data = {}
    for fam, cells in families_of(spec).items():
        greedy = rows_of(cells["greedy"])
        samples = rows_of(cells["sample_t1"], sample=None)
        out: dict = {
            "greedy": fidelity_of(greedy, spec, fam),
            "n_samples": int(samples.sample.max()) + 1 if len(samples) else 0,
            "sample_tag_failures": int(samples.tag_failure.sum()),
            "best_of": {},
        }
        for n in ns:
            sel = select_best(samples, n)
            out["best_of"][str(n)] = {
                **fidelity_of(sel, spec, fam),
                "diff_vs_greedy": paired_fve_diff(sel, greedy, spec, fam),
            }
        out["mean_over_samples"] = fidelity_of(samples, spec, fam)
        data[fam] = out
    return {"ns": ns, "families": data}


AGGREGATE = register(
    Aggregate(
        name="best_of_n",
        experiment=5,
        title="best-of-N",
        inputs=inputs,
        compute=compute,
        settings=settings,
        section="nlaprobe.report.html:section_best_of_n",
        figures=(
            Figure(
                "best_of_n",
                "fve_train (when configured; top row) and fve_own of the best of the first n "
                "samples by the AR's own nmse (E5), with greedy and the mean over all samples "
                "as horizontal lines; the band is the interval.",
                "nlaprobe.report.figures:figure_best_of_n",
            ),
        ),
    )
)
