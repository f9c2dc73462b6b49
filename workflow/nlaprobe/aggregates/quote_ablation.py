"""E2 quote ablation: greedy against decodes with double quotes banned (ban_dq) and with double
and single quotes banned (ban_dq_sq), per family (SPEC §6 E2).

inputs -> outputs: per family and condition of constants.BAN_CONDITIONS the score shards, the
gold activation shards and the decode shards read -> `results/quote_ablation.json`: per
condition the E1 metrics, banned tokens and leaks, the substitution statistics (single quotes,
hatches) and the paired difference against greedy; under ban_dq_sq the hatch-free and
hatch-using subsets. Every figure has its interval; rows are matched by (shard, row).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from nlaprobe import spans
from nlaprobe.aggregates.core import (
    decode_summary,
    explanations_for,
    families_of,
    fidelity_of,
    paired_fve_diff,
    rows_of,
    share,
)
from nlaprobe.aggregates.registry import Aggregate, Figure, register
from nlaprobe.constants import BAN_CONDITIONS

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    return {
        "cells": {
            f"{f}/{c}": plan.cell_inputs(f, f, c, decodes=True)
            for f in plan.families
            for c in BAN_CONDITIONS
        }
    }


def compute(spec: dict) -> dict:
    """E2: greedy, ban_dq, ban_dq_sq per family: E1 metrics, banned tokens and leaks, the
    substitution statistics and the hatch-free / hatch-using subsets under ban_dq_sq."""
    data = {}
    for fam, cells in families_of(spec).items():
        base = rows_of(cells["greedy"])
        out: dict = {"conditions": {}}
        for cond, cell in cells.items():
            rows = base if cond == "greedy" else rows_of(cell)
            expl = explanations_for(rows, cell["decodes"])
            have = [i for i, e in enumerate(expl) if e is not None]
            docs = [rows.doc_ids[i] for i in have]
            single = [spans.uses_single_quotes(expl[i]) for i in have]
            hatch = [spans.uses_hatch(expl[i]) for i in have]
            entry = {
                **fidelity_of(rows, spec, fam),
                **decode_summary(cell["decodes"]),
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
                entry["hatch_using"] = fidelity_of(rows.subset(flag), spec, fam)
                entry["hatch_free"] = fidelity_of(rows.subset(~flag), spec, fam)
            out["conditions"][cond] = entry
        data[fam] = out
    return {"families": data}


AGGREGATE = register(
    Aggregate(
        name="quote_ablation",
        experiment=2,
        title="quote ablation",
        inputs=inputs,
        compute=compute,
        section="nlaprobe.report.html:section_quote_ablation",
        figures=(
            Figure(
                "ban_conditions",
                "fve_train (training-set Var, when configured) beside fve_own by decode "
                "condition (E2), one group per family; bars are the values on all scored rows, "
                "whiskers the bootstrap interval.",
                "nlaprobe.report.figures:figure_ban_conditions",
            ),
        ),
    )
)
