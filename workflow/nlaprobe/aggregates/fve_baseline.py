"""E1 baseline: greedy AV -> own AR, per family (SPEC §6 E1).

inputs -> outputs: per family the greedy score shards of its own AV -> AR pair and the family's
gold activation shards (plus the aligned families' activation sidecars, for the alignment
summary) -> `results/fve_baseline.json`: {"families": {fam: fidelity}} (core.fidelity: fve_own
and, where a training Var is configured, fve_train, each with its interval; counts; strict
figures with tag failures as nmse = 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlaprobe.aggregates.core import fidelity, load_scored
from nlaprobe.aggregates.registry import Aggregate, register

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    return {
        "cells": {f"{f}__{f}": plan.cell_inputs(f, f) for f in plan.families},
        "alignment_sidecars": plan.alignment_sidecars(),
    }


def compute(spec: dict) -> dict:
    m = spec["metrics"]
    data = {}
    for fam in spec["families"]:
        cell = spec["cells"][f"{fam}__{fam}"]
        s = load_scored(cell["scores"], cell["gold"])
        data[fam] = fidelity(
            s,
            train_var=spec["train_var"].get(fam),
            n_boot=m["n_boot"],
            seed=m["null_seed"],
            alpha=m["alpha"],
        )
    return {"families": data}


AGGREGATE = register(
    Aggregate(
        name="fve_baseline",
        experiment=1,
        title="baseline: greedy AV → own AR",
        inputs=inputs,
        compute=compute,
        section="nlaprobe.report.html:section_fve_baseline",
    )
)
