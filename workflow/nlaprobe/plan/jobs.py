"""Jobs: what each job of the DAG is given, from its wildcards (SPEC §2).

inputs -> outputs: a rule's wildcards -> one `Job`: its named input files (for Snakemake's
`unpack`) and the JSON strings its command passes (`params`, and for the model stages the
`checkpoint` entry and the `provenance` written into its output); the aggregate jobs' spec and
input folder from Snakemake's own input list.

Invariants:
- a Job is built once per job, keyed by the wildcards it depends on, and frozen: every function
  Snakemake calls for one job (inputs, params) reads the same object;
- wildcards are checked (nlaprobe.plan.layout): a job the config does not produce is a
  ConfigError, never built;
- a job's JSON is canonical (`to_json`: sorted keys, compact), so its command line is a function
  of the config and the wildcards alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nlaprobe import aggregates as AG
from nlaprobe.errors import ConfigError
from nlaprobe.plan.identity import SPLITS, decode_params, demo_params, tag_of
from nlaprobe.plan.layout import INPUT_RECORDS, VARIANTS, Layout


@dataclass(frozen=True, slots=True)
class Job:
    """One job: `inputs` by name (lists for multi-file inputs) and the JSON strings of its
    command; a field the job's rule does not pass is "". Shared by every function Snakemake
    calls for the job: read it, never mutate `inputs`."""

    inputs: dict[str, Any] = field(default_factory=dict)
    params: str = ""
    checkpoint: str = ""
    provenance: str = ""


def to_json(obj: Any) -> str:
    """Compact, canonical JSON for passing parameters through `params:` to a CLI."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_json(cfg: dict) -> str:
    """The config as compact JSON with its key order kept: the order of the families is part of
    the plan (the stage that plans from it must see the same order; to_json sorts keys)."""
    return json.dumps(cfg, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Jobs(Layout):
    """The Job of every rule with wildcards, on top of the Layout whose paths it reads (each job
    memoised by its wildcards: Snakemake asks for a job's inputs and params through several
    functions, and planning 1,000 shards makes ~10^4 jobs)."""

    # ------------------------------------------------------------------ corpus and demo builds
    def corpus_params_for(self, ctag: str, split: str) -> dict:
        """The corpus section for the shard at results/corpus/corpus-<ctag>/<split> (checked)."""
        self.split_for_corpus_tag(ctag, split)
        return self.cfg["corpus"]

    def corpus_job(self, ctag: str, split: str) -> Job:
        """The job of a corpus shard of results/corpus/corpus-<ctag>/<split> (every shard of a
        split gets the same corpus section; the shard is its own argument)."""
        return self._memo(
            ("corpus_job", ctag, split),
            lambda: Job(params=to_json(self.corpus_params_for(ctag, split))),
        )

    def demo_params_for(self, dtag: str, style: str) -> dict:
        """Parameters of the demo build at results/demo/demo-<dtag>/<style> (checked)."""
        if style not in self.demo_styles() or self.demo_tag(style) != dtag:
            raise ConfigError(f"demo build demo-{dtag}/{style} is not produced by this config")
        return demo_params(self.cfg, style)

    def demo_job(self, dtag: str, style: str) -> Job:
        return self._memo(
            ("demo_job", dtag, style),
            lambda: Job(params=to_json(self.demo_params_for(dtag, style))),
        )

    # ------------------------------------------------------------------ activations
    def extract_params(self, fam: str) -> dict:
        s = self.cfg["sampling"]
        return {
            "layers": self.layers(fam),
            "seed": self.cfg["run"]["seed"],
            "positions_per_doc": s["positions_per_doc"],
            "min_position": s["min_position"],
            "max_length": s["max_length"],
            "batch_size": s["batch_size"],
            "device_map": s["device_map"],
        }

    def extract_job(self, btag: str, split: str, shard: str) -> Job:
        """The extraction job that writes this activation shard."""
        return self._memo(
            ("extract_job", btag, split, shard), lambda: self._extract_job(btag, split, shard)
        )

    def _extract_job(self, btag: str, split: str, shard: str) -> Job:
        fam = self.family_for_activation_tag(btag, split)
        inputs = {
            "corpus": self.corpus_shard(split, shard),
            "model": self.checkpoint_inputs(fam, "base"),
        }
        if fam != self.primary:
            inputs["positions"] = self.positions_shard(split, shard)
        provenance = {
            "family": fam,
            "split": split,
            "shard": shard,
            "tag": btag,
            "tag_spec": self.activation_spec(fam, split),
            "corpus_tag": self.corpus_tag(split),
        }
        return Job(
            inputs=inputs,
            checkpoint=to_json(self.checkpoint_entry(fam, "base")),
            params=to_json(self.extract_params(fam)),
            provenance=to_json(provenance),
        )

    # ------------------------------------------------------------------ decodes, redactions, scores
    def decode_job(self, avtag: str, cond: str, shard: str) -> Job:
        return self._memo(
            ("decode_job", avtag, cond, shard), lambda: self._decode_job(avtag, cond, shard)
        )

    def _decode_job(self, avtag: str, cond: str, shard: str) -> Job:
        fam = self.family_for_decode_tag(avtag)
        self.check_condition(fam, cond)
        d = self.cfg["decode"]
        return Job(
            inputs={
                "acts": self.activation_shard(fam, "eval", shard),
                "model": self.checkpoint_inputs(fam, "av"),
            },
            checkpoint=to_json(self.checkpoint_entry(fam, "av")),
            params=to_json(
                {
                    **decode_params(self.cfg),
                    "batch_size": d["batch_size"],
                    "tensor_parallel_size": d["tensor_parallel_size"],
                }
            ),
            provenance=to_json(
                {"family": fam, "tag": avtag, "tag_spec": self.decode_spec(fam), "cond": cond}
            ),
        )

    def redact_job(self, avtag: str, variant: str, shard: str) -> Job:
        return self._memo(
            ("redact_job", avtag, variant, shard), lambda: self._redact_job(avtag, variant, shard)
        )

    def _redact_job(self, avtag: str, variant: str, shard: str) -> Job:
        fam = self.family_for_decode_tag(avtag)
        if variant not in VARIANTS or variant == "full":
            raise ConfigError(
                f"redaction variant {variant!r} is not one of {[v for v in VARIANTS if v != 'full']}"
            )
        return Job(inputs={"decodes": self.decode_shard(fam, "greedy", shard)})

    def score_job(self, avtag: str, artag: str, cond: str, variant: str, shard: str) -> Job:
        key = ("score_job", avtag, artag, cond, variant, shard)
        return self._memo(key, lambda: self._score_job(avtag, artag, cond, variant, shard))

    def _score_job(self, avtag: str, artag: str, cond: str, variant: str, shard: str) -> Job:
        av = self.family_for_decode_tag(avtag)
        ar = self.family_for_ar_tag(artag)
        self.check_condition(av, cond)
        if variant not in VARIANTS:
            raise ConfigError(f"AR-input variant {variant!r} is not one of {list(VARIANTS)}")
        if variant != "full" and cond != "greedy":
            raise ConfigError(
                f"AR-input variant {variant!r} edits greedy decodes only, not condition {cond!r}"
            )
        return Job(
            inputs={
                "decodes": self.explanation_shard(av, cond, variant, shard),
                "gold": self.activation_shard(ar, "eval", shard),
                "model": self.checkpoint_inputs(ar, "ar"),
            },
            checkpoint=to_json(self.checkpoint_entry(ar, "ar")),
            params=to_json({"batch_size": self.cfg["decode"]["batch_size"]}),
            provenance=to_json(
                {
                    "av_family": av,
                    "ar_family": ar,
                    "av_tag": avtag,
                    "ar_tag": artag,
                    "ar_tag_spec": self.ar_spec(ar),
                    "cond": cond,
                    "variant": variant,
                }
            ),
        )

    # ------------------------------------------------------------------ ridge (E8)
    def ridge_job(self, rtag: str, src: str, dst: str, n: int) -> Job:
        return self._memo(
            ("ridge_job", rtag, src, dst, n), lambda: self._ridge_job(rtag, src, dst, n)
        )

    def _ridge_job(self, rtag: str, src: str, dst: str, n: int) -> Job:
        if rtag != self.ridge_tag():
            raise ConfigError(f"ridge tag ridge-{rtag} is not produced by this config")
        if (src, dst) not in self.ridge_directions():
            raise ConfigError(
                f"ridge direction {src}_to_{dst} is not one of "
                f"{[f'{a}_to_{b}' for a, b in self.ridge_directions()]}"
            )
        if n not in self.ridge_sizes():
            raise ConfigError(f"ridge size n={n} is not one of {self.ridge_sizes()}")
        return Job(
            inputs={
                f"{side}_{split}": [
                    self.activation_shard(fam, split, s) for s in self.shards(split)
                ]
                for side, fam in (("src", src), ("dst", dst))
                for split in SPLITS
            },
            params=to_json(
                {
                    **self.cfg["ridge"],
                    "seed": self.cfg["run"]["seed"],
                    "device": self.device,
                    "provenance": {"src": src, "dst": dst, "tag": rtag, "spec": self.ridge_spec()},
                }
            ),
        )

    # ------------------------------------------------------------------ aggregates
    def stamp_params_for(self, name: str, stag: str) -> dict:
        params = self.aggregate_params(name)
        if tag_of(params) != stag:
            raise ConfigError(f"stamp {name}-{stag} is not produced by this config")
        return params

    def stamp_job(self, name: str, stag: str) -> Job:
        return self._memo(
            ("stamp_job", name, stag),
            lambda: Job(params=to_json(self.stamp_params_for(name, stag))),
        )

    def record_params_for(self, name: str, itag: str) -> dict:
        """What the `record` job of results/.inputs/<name>-<itag>.json writes; the tag must be
        that of this config's input list of `name`."""
        AG.get(name)  # an unknown name is a ConfigError naming the registered ones
        if self.aggregate_record(name) != f"{INPUT_RECORDS}/{name}-{itag}.json":
            raise ConfigError(f"input record {name}-{itag} is not produced by this config")
        return {"name": name, "n_inputs": len(self.aggregate_inputs(name))}

    def record_job(self, name: str, itag: str) -> Job:
        return self._memo(
            ("record_job", name, itag),
            lambda: Job(params=to_json(self.record_params_for(name, itag))),
        )

    def aggregate_job_spec(self, name: str, inputs: Sequence[str]) -> dict:
        """aggregate_spec with every path replaced by the job's own copy of that file: `inputs`
        is the job's input list, in the order of aggregate_inputs. Locally the two are the same;
        under remote storage (`--default-storage-provider`) the job reads local copies at other
        paths, which only Snakemake's `input` knows."""
        paths, local = self._job_inputs(name, inputs)
        spec = self._aggregate(name)[0]
        return _replace_paths(spec, dict(zip(paths, local, strict=True)))

    def _job_inputs(self, name: str, inputs: Sequence[str]) -> tuple[list[str], list[str]]:
        """The planned input list of aggregate `name` and the job's own (as strings), which must
        be as long."""
        paths = self.aggregate_inputs(name)
        local = [str(p) for p in inputs]
        if len(local) != len(paths):
            raise ConfigError(
                f"aggregate {name!r}: the job has {len(local)} inputs, the plan {len(paths)}"
            )
        return paths, local

    def aggregate_root(self, name: str, inputs: Sequence[str]) -> str:
        """The folder under which the job finds its inputs: `inputs` (the job's input list, in
        the order of aggregate_inputs) must be that folder + each planned path ("" locally;
        the storage plugin's local copies under remote storage, e.g.
        `.snakemake/storage/fs/<store>/`). The job gets this one string instead of its input
        list, and maps the paths it plans the same way (aggregates.stage.run_planned)."""
        paths, local = self._job_inputs(name, inputs)
        root = local[0][: len(local[0]) - len(paths[0])] if local[0].endswith(paths[0]) else None
        for p, loc in zip(paths, local, strict=True):
            if root is None or loc != root + p:
                raise ConfigError(
                    f"aggregate {name!r}: the job reads {p} at {loc}, not under one common "
                    f"folder with its other inputs ({local[0]} for {paths[0]}); the aggregate "
                    "jobs need a storage provider that keeps the path under one local folder"
                )
        return root

    def aggregate_root_param(self, name: str) -> Callable[..., str]:
        """A `params:` function (wildcards, input) -> aggregate_root of rule `name` (its input
        `files`; the record is a separate named input)."""

        def param(wildcards, input) -> str:
            return self.aggregate_root(name, input.files)

        return param


def _replace_paths(obj: Any, mapping: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _replace_paths(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_paths(v, mapping) for v in obj]
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    return obj
