"""Identity: what determines each artifact of a validated config (SPEC §2).

inputs -> outputs: a validated config dict -> specs (everything an artifact depends on, spelled
out) and tags (short hashes of them), and the sets of things the config asks for (families,
layers, decode conditions, demo styles).

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
  paths (nlaprobe.plan.layout), so exactly the dependent jobs rerun, even without Snakemake's
  metadata;
- what a spec reads beyond the config (local checkpoint folders, the built-in corpus) is read
  once, when the Identity is made, or given (`known`, from `Identity.identity()`); no paths, no
  jobs here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, TypeVar

from nlaprobe import aggregates as AG
from nlaprobe import constants as C
from nlaprobe.config import primary_family
from nlaprobe.errors import ConfigError
from nlaprobe.fingerprint import builtin_corpus_digest, checkpoint_fingerprint

SPLITS = ("eval", "ridge")
# decode conditions of every family; each family adds greedy_L{k} for its adjacent layers
CONDITIONS = C.CONDITIONS
ROLES = ("base", "av", "ar")
# bump when the demo builder's output changes for the same settings
DEMO_BUILDER_VERSION = 3  # 3: portable CPU kernels (nlaprobe.kernels)
# what Identity.identity hands to a job: the specs read from outside the config
IDENTITY_KINDS = ("checkpoint", "corpus", "demo")

T = TypeVar("T")


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


def decode_params(cfg: dict) -> dict:
    d = cfg["decode"]
    return {
        "seed": cfg["run"]["seed"],
        "max_new_tokens": d["max_new_tokens"],
        "n_samples": d["n_samples"],
        "temperature": d["temperature"],
        "backend": d["backend"],
    }


@dataclass(frozen=True)
class Identity:
    """Specs and tags of every artifact of one validated config. What the tags read beyond the
    config (local checkpoint folders, the built-in corpus) is read once, when the Identity is
    made: one Identity, one state of those files. `known` (what `identity()` of another one of
    the same config returned) gives those specs instead, read nowhere: an aggregate job plans
    with the specs of the Plan that built the DAG.

    Specs and tags are built once and memoised (`_memo`, shared with the layers built on this
    one: nlaprobe.plan.layout, .jobs, .requests): planning 1,000 shards asks for them ~10^5
    times (benchmarks/plan_scale.py). The config must therefore not change after the Identity
    is made, and what the methods return is shared: read it, never mutate it."""

    cfg: dict
    known: InitVar[Sequence | None] = None
    _specs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def _memo(self, key: tuple, make: Callable[[], T]) -> T:
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

    # ------------------------------------------------------------------ what the config asks for
    @property
    def families(self) -> list[str]:
        return list(self.cfg["families"])

    @property
    def primary(self) -> str:
        return primary_family(self.cfg)

    @property
    def device(self) -> str:
        return self.cfg["run"]["device"]

    def layers(self, fam: str) -> list[int]:
        f = self.cfg["families"][fam]
        return [f["layer"], *[k for k in f.get("adjacent_layers", []) if k != f["layer"]]]

    def conditions(self, fam: str) -> list[str]:
        """Decode conditions of a family: the fixed ones and one per adjacent layer."""
        return [*CONDITIONS, *[f"greedy_L{k}" for k in self.layers(fam)[1:]]]

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

    # ------------------------------------------------------------------ tags
    def corpus_tag(self, split: str) -> str:
        return self._memo(("corpus_tag", split), lambda: tag_of(self.corpus_spec(split)))

    def checkpoint_tag(self, fam: str, role: str) -> str:
        return self._memo(
            ("checkpoint_tag", fam, role), lambda: tag_of(self.checkpoint_spec(fam, role))
        )

    def demo_tag(self, style: str) -> str:
        return self._memo(("demo_tag", style), lambda: tag_of(self.demo_spec(style)))

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

    def aggregate_settings(self, name: str) -> dict:
        """Settings of an aggregate of its own, beyond the metrics section."""
        return AG.get(name).settings(self.cfg)

    def aggregate_params(self, name: str) -> dict:
        """Parameters of an aggregate of its own (not folded into its inputs' tags): the spec of
        its stamp (nlaprobe.plan.layout)."""
        return {
            "aggregate": AG.get(name).name,
            "metrics": self.cfg["metrics"],
            "families": self.families,
            **({"settings": s} if (s := self.aggregate_settings(name)) else {}),
        }
