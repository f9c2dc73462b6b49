"""The plan of a validated config: what determines each artifact, where it lives, how each job
is built and what it requests (SPEC §2), one concern per module:

- nlaprobe.plan.identity: specs and tags (`Identity`; `tag_of`, `checkpoint_spec`, ...);
- nlaprobe.plan.layout: the path of every artifact and the reverse lookup from wildcards
  (`Layout`, on top of Identity; `shard_folder`, `shard_paths`, ...);
- nlaprobe.plan.jobs: one frozen `Job` per job, built once from its wildcards (`Jobs`, on top of
  Layout; `to_json`, `config_json`);
- nlaprobe.plan.requests: resource requests and conda envs (`Requests`, on top of Layout).

Each layer reads only the ones below it and is usable (and tested) without Snakemake. `Plan`,
which the Snakefile makes once, is all of them over one shared memo; `scale_summary` is what
`nlaprobe plan` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nlaprobe import aggregates as AG
from nlaprobe import constants as C
from nlaprobe.plan.identity import (
    CONDITIONS,
    ROLES,
    SPLITS,
    checkpoint_spec,
    corpus_spec,
    demo_params,
    tag_of,
)
from nlaprobe.plan.jobs import Jobs, config_json, to_json
from nlaprobe.plan.layout import VARIANTS, shard_count, shard_folder, shard_paths
from nlaprobe.plan.requests import ENV_FILES, Requests

# the names the Snakefile, the CLI, benchmarks and tests import from here (AGGREGATES too, below)
BAN_CONDITIONS = C.BAN_CONDITIONS
__all__ = [
    "BAN_CONDITIONS",
    "CONDITIONS",
    "ENV_FILES",
    "ROLES",
    "SPLITS",
    "VARIANTS",
    "Plan",
    "checkpoint_spec",
    "config_json",
    "corpus_spec",
    "demo_params",
    "scale_summary",
    "shard_count",
    "shard_folder",
    "shard_paths",
    "tag_of",
    "to_json",
]


def __getattr__(name: str) -> Any:
    # AGGREGATES: the registered aggregates' names, read from the registry (nlaprobe.aggregates)
    # when asked for, so that an aggregate registered later is part of it
    if name == "AGGREGATES":
        return tuple(AG.names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Plan(Jobs, Requests):
    """Tags, paths, jobs and requests of every artifact of one validated config: the layers of
    this package over one memo (see Identity for what is read when, and `known`)."""


def scale_summary(cfg: dict) -> dict:
    """What a validated config asks for, before anything runs: documents, activation rows and
    ridge pairs (upper bounds: documents x positions per document; a document with fewer
    candidate tokens gives fewer), decoded sequences and generated tokens (upper bound:
    sequences x max_new_tokens), AR scorings, per family and in total, and what each rule's
    largest job requests from a scheduler (`resources`, see nlaprobe.resources)."""
    p = Plan(cfg)
    splits = cfg["corpus"]["splits"]
    per_doc = cfg["sampling"]["positions_per_doc"]
    docs = {s: splits[s]["stop"] - splits[s]["start"] for s in SPLITS}
    rows = {s: docs[s] * per_doc for s in SPLITS}
    d = cfg["decode"]
    fams: dict = {}
    for fam in p.families:
        conds = p.conditions(fam)
        seqs = sum(rows["eval"] * (d["n_samples"] if c == "sample_t1" else 1) for c in conds)
        # scored sets of this AR family: its own conditions and redaction variants, and every
        # other AV family's greedy decodes (transfer cells)
        own = seqs + rows["eval"] * (len(VARIANTS) - 1)
        cross = rows["eval"] * (len(p.families) - 1)
        fams[fam] = {
            "layers": p.layers(fam),
            "conditions": conds,
            "decoded_sequences": seqs,
            "generated_tokens_max": seqs * d["max_new_tokens"],
            "ar_scorings": own + cross,
        }
    return {
        "documents": docs,
        "activation_rows_max": rows,
        "ridge_pairs_max": p.ridge_pairs_bound(),
        "ridge_sizes": p.ridge_sizes(),
        "ridge_fits": len(p.ridge_directions()) * len(p.ridge_sizes()),
        "shards": {s: p.n_shards(s) for s in SPLITS},
        "families": fams,
        "decoded_sequences": sum(f["decoded_sequences"] for f in fams.values()),
        "generated_tokens_max": sum(f["generated_tokens_max"] for f in fams.values()),
        "ar_scorings": sum(f["ar_scorings"] for f in fams.values()),
        "resources": p.resource_summary(),
    }
