"""E7 transfer matrix: every AV family x every AR family (SPEC §6 E7).

inputs -> outputs: per (AV family, AR family) the greedy score shards and the AR family's gold
activation shards (plus the aligned families' activation sidecars) ->
`results/transfer_matrix.json`: fve_own with its interval and a shuffled-pair null per cell
(the explanations permuted across rows with the null seed), the matrix of values and of nulls,
and the mean cross-tokenizer alignment error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlaprobe.aggregates.core import fidelity, load_scored, shuffled_null_fve
from nlaprobe.aggregates.registry import Aggregate, Figure, register

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    fams = plan.families
    return {
        "cells": {f"{a}__{b}": plan.cell_inputs(a, b) for a in fams for b in fams},
        "alignment_sidecars": plan.alignment_sidecars(),
    }


def compute(spec: dict) -> dict:
    m = spec["metrics"]
    fams = spec["families"]
    cells = {}
    for av in fams:
        for ar in fams:
            cell = spec["cells"][f"{av}__{ar}"]
            s = load_scored(cell["scores"], cell["gold"])
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


AGGREGATE = register(
    Aggregate(
        name="transfer_matrix",
        experiment=7,
        title="transfer matrix",
        inputs=inputs,
        compute=compute,
        section="nlaprobe.report.html:section_transfer_matrix",
        figures=(
            Figure(
                "transfer_matrix",
                "fve_own of every AV family x AR family (E7); each cell also gives the "
                "shuffled-pair null.",
                "nlaprobe.report.figures:figure_transfer_matrix",
            ),
        ),
    )
)
