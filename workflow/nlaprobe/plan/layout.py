"""Layout: where every artifact of a validated config lives, and back (SPEC §2).

inputs -> outputs: the tags of nlaprobe.plan.identity -> the path of every artifact (corpus,
activation, positions, decode, redacted and score shards, demo builds, ridge fits, stamps, input
records, aggregates), the shard counts, the files each aggregate reads; and the reverse lookup
from a path's wildcards (a tag, a split, a condition) to the family or split that produces it.

Invariants:
- a path holds the tag of its artifact's spec: a changed spec is a new path;
- wildcard values are checked against the tags the config implies: a path that the config does
  not produce is an error (ConfigError naming the tag), never silently built;
- a shard list is `<folder>/shard-<i>.parquet` for i = 0..n-1, so that a job can be given the
  folder and the count instead of the list (shard_folder, shard_paths).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nlaprobe import aggregates as AG
from nlaprobe import constants as C
from nlaprobe.corpus import n_shards
from nlaprobe.errors import ConfigError
from nlaprobe.plan.identity import SPLITS, Identity, tag_of
from nlaprobe.scaling import log_spaced_sizes
from nlaprobe.spans import REDACTION_VARIANTS

RESULTS = "results"
# AR-input variants: the explanation as decoded, or edited by redaction (greedy decodes only)
VARIANTS = REDACTION_VARIANTS
STAMPS = f"{RESULTS}/.stamps"
INPUT_RECORDS = f"{RESULTS}/.inputs"


@dataclass(frozen=True)
class Layout(Identity):
    """The paths of every artifact of one validated config (on top of its Identity: a path
    holds its artifact's tag) and the reverse lookup from wildcards. Memoised like the tags."""

    # ------------------------------------------------------------------ corpus
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
    def demo_dir(self, style: str) -> str:
        return f"{RESULTS}/demo/demo-{self.demo_tag(style)}/{style}"

    def checkpoint_inputs(self, fam: str, role: str) -> list[str]:
        """What a job must have before it can load this checkpoint (demo builds only): the whole
        demo folder (a directory output), so that remote storage stores and retrieves every
        file of it, not just a marker file."""
        entry = self.checkpoint_entry(fam, role)
        if entry.get("demo"):
            return [self.demo_dir(entry["demo"])]
        return []

    # ------------------------------------------------------------------ activations
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

    def _family_of(self, kind: str, tag_fn: Callable[[str], str]) -> dict[str, str]:
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

    # ------------------------------------------------------------------ decodes and scores
    def decode_shard(self, fam: str, cond: str, shard: str) -> str:
        return f"{RESULTS}/decodes/av-{self.decode_tag(fam)}/{cond}/shard-{shard}.parquet"

    def family_for_decode_tag(self, avtag: str) -> str:
        fams = self._family_of("decode", self.decode_tag)
        if avtag in fams:
            return fams[avtag]
        raise ConfigError(f"decode tag av-{avtag} is not produced by this config")

    def family_for_ar_tag(self, artag: str) -> str:
        fams = self._family_of("ar", self.ar_tag)
        if artag in fams:
            return fams[artag]
        raise ConfigError(f"AR tag ar-{artag} is not produced by this config")

    def score_shard(self, av: str, ar: str, cond: str, variant: str, shard: str) -> str:
        pair = f"av-{self.decode_tag(av)}__ar-{self.ar_tag(ar)}"
        return f"{RESULTS}/scores/{pair}/{cond}/{variant}/shard-{shard}.parquet"

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

    # ------------------------------------------------------------------ ridge (E8)
    def ridge_directions(self) -> list[tuple[str, str]]:
        return [(a, b) for a in self.families for b in self.families if a != b]

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

    def report_inputs(self) -> list[str]:
        return [self.aggregate_file(name) for name in AG.names()]

    def stamp(self, name: str) -> str:
        """The stamp file of an aggregate: its own parameters, their tag in the name, so a
        change of parameters is a new input (also on a fresh machine, also with remote storage)."""
        return f"{STAMPS}/{name}-{tag_of(self.aggregate_params(name))}.json"

    def _aggregate(self, name: str) -> tuple[dict, list[str]]:
        """(spec, inputs) of an aggregate: a rule's input, output and params each need them."""
        return self._memo(("aggregate", name), lambda: self._make_aggregate(name))

    def _make_aggregate(self, name: str) -> tuple[dict, list[str]]:
        agg = AG.get(name)
        fams = self.families
        spec = {
            "families": fams,
            "metrics": self.cfg["metrics"],
            "settings": self.aggregate_settings(name),
            "train_var": {f: self.cfg["families"][f].get("train_var") for f in fams},
            **agg.inputs(self),
        }
        return spec, sorted(set(_paths(spec))) + [self.stamp(name)]

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


def _paths(obj: Any) -> list[str]:
    """Every results path in a nested spec (strings under results/)."""
    if isinstance(obj, dict):
        return [p for v in obj.values() for p in _paths(v)]
    if isinstance(obj, list):
        return [p for v in obj for p in _paths(v)]
    if isinstance(obj, str) and obj.startswith(f"{RESULTS}/"):
        return [obj]
    return []


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
