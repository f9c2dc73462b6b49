"""E6 adjacent layers: vectors of the adjacent layers k through the layer-K NLA (decode condition
greedy_L{k}), per family (SPEC §6 E6).

inputs -> outputs: per family its layers, and per condition (greedy and greedy_L{k}) the score
shards, the gold activation shards and the AV family's activation shards (the v_k of each row)
-> `results/layers.json` (see `compute`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nlaprobe import constants as C
from nlaprobe import metrics as M
from nlaprobe.aggregates.core import (
    Rows,
    families_of,
    fidelity_of,
    interval,
    paired_fve_diff,
    rows_of,
)
from nlaprobe.aggregates.registry import Aggregate, register
from nlaprobe.errors import DataError
from nlaprobe.io import read_table, vectors_from_column

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    # every cell reads the AV family's activation shards (= the AR family's here): the v_k of
    # each adjacent cell is its own gold, the rows of its scores index them
    return {
        "layers": {f: plan.layers(f) for f in plan.families},
        "cells": {
            f"{f}/{c}": plan.cell_inputs(f, f, c, acts=True)
            for f in plan.families
            for c in ["greedy", *[f"greedy_L{k}" for k in plan.layers(f)[1:]]]
        },
    }


def compute(spec: dict) -> dict:
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
    for fam, cells in families_of(spec).items():
        k_main, *adjacent = spec["layers"][fam]
        greedy = rows_of(cells["greedy"])
        intrinsic = greedy.scored().nmse
        out: dict = {"layer": k_main, "greedy": fidelity_of(greedy, spec, fam), "adjacent": {}}
        for k in adjacent:
            cell = cells[f"greedy_L{k}"]
            rows = rows_of(cell)
            own = against_layer(rows, cell["acts"], k)
            v_k, v_main, docs = _layer_pairs(cell["acts"], k)
            cos = M.cos_rows(v_k, v_main)
            inter = M.nmse_rows(v_k, v_main)
            bound = (
                float(intrinsic.mean() + inter.mean()) if len(intrinsic) and len(inter) else None
            )
            out["adjacent"][str(k)] = {
                **fidelity_of(own, spec, None),
                "vs_layer_K": fidelity_of(rows, spec, fam),
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


AGGREGATE = register(
    Aggregate(
        name="layers",
        experiment=6,
        title="adjacent layers",
        inputs=inputs,
        compute=compute,
        section="nlaprobe.report.html:section_layers",
    )
)
