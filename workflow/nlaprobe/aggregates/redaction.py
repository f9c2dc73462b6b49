"""E4 post-hoc redaction: the AR on greedy explanations edited by each redaction variant
(spans.REDACTION_VARIANTS), per family (SPEC §6 E4).

inputs -> outputs: per family and variant the score shards, the gold activation shards and the
explanation shards read (the decode shards for `full`, the redacted shards otherwise) ->
`results/redaction.json`: the E1 metrics per variant with the paired difference against the
full explanation, and the statistics of the originals' quoted spans and unquoted hatches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nlaprobe import spans
from nlaprobe.aggregates.core import (
    explanations_for,
    families_of,
    fidelity_of,
    interval,
    paired_fve_diff,
    rows_of,
    share,
)
from nlaprobe.aggregates.registry import Aggregate, Figure, register

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    return {
        "cells": {
            f"{f}/{v}": plan.cell_inputs(f, f, "greedy", v, decodes=True)
            for f in plan.families
            for v in spans.REDACTION_VARIANTS
        }
    }


def compute(spec: dict) -> dict:
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
    for fam, cells in families_of(spec).items():
        full = rows_of(cells["full"])
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
            rows = full if variant == "full" else rows_of(cells[variant])
            out["variants"][variant] = {
                **fidelity_of(rows, spec, fam),
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


AGGREGATE = register(
    Aggregate(
        name="redaction",
        experiment=4,
        title="post-hoc redaction",
        inputs=inputs,
        compute=compute,
        section="nlaprobe.report.html:section_redaction",
        figures=(
            Figure(
                "redaction",
                "fve_train (when configured) beside fve_own by AR-input redaction variant "
                "(E4), one group per family.",
                "nlaprobe.report.figures:figure_redaction",
            ),
        ),
    )
)
