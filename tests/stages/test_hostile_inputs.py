"""Hostile inputs to the stage CLIs (issue 14, items 2 and 6), one table: each case feeds one bad
parameter, sidecar field or input column to its stage through `nlaprobe.cli.main` and expects
exit code 2, exactly one error line that names the field, and no output file (nor a temporary
one) - never a traceback, never a file that looks complete.

The stages validate their parameters against the config schema (`ExtractParams`,
`DecodeParams`, `ScoreParams`, `RidgeParams`: the same bounds as `config/schema.yaml`), the
sidecar parser checks field types and template fields, and the readers check column types and
row ranges (a negative row would pair with the last gold row)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from nlaprobe import constants as C
from nlaprobe import decode as D
from nlaprobe.cli import main
from nlaprobe.io import vectors_to_arrow, write_table

D_MODEL = 64
N_ROWS = 4
DOC_IDS = [f"builtin:pydoc:topics:{i // 2}" for i in range(N_ROWS)]


@dataclass
class World:
    """Valid inputs of every stage; each case spoils one thing."""

    root: Path
    qwen: Path  # the fixture family: base/, av/, ar/
    corpus: Path
    acts: Path
    decodes: Path
    scores: Path

    def checkpoint(self, role: str, edit: Callable[[dict], None] | None = None) -> str:
        """The family's checkpoint entry as JSON; with `edit`, a copy whose sidecar is edited."""
        path = self.qwen / role
        if edit is not None:
            path = self.root / f"edited-{role}"
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(self.qwen / role, path)
            meta = yaml.safe_load((path / C.SIDECAR_NAME).read_text(encoding="utf-8"))
            edit(meta)
            (path / C.SIDECAR_NAME).write_text(yaml.safe_dump(meta), encoding="utf-8")
        return json.dumps({"path": str(path), "dtype": "float32"})

    def table(self, name: str, columns: dict) -> Path:
        path = self.root / f"{name}.parquet"
        write_table(path, pa.table(columns))
        return path


def activation_columns(**override) -> dict:
    v = np.random.default_rng(0).normal(size=(N_ROWS, D_MODEL)).astype(np.float32)
    cols = {
        C.COL_DOC_ID: pa.array(DOC_IDS, pa.string()),
        C.COL_POSITION: pa.array([60 + i for i in range(N_ROWS)], pa.int64()),
        C.COL_VECTOR: vectors_to_arrow(v),
    }
    return {**cols, **override}


def decode_rows(**override) -> list[dict]:
    rows = [
        {
            "row": i,
            "doc_id": DOC_IDS[i],
            "position": 60 + i,
            "sample": 0,
            "seed": 0,
            "text": "<explanation>x</explanation>",
            "explanation": "x",
            "n_tokens": 3,
            "finish_reason": "stop",
            "error": None,
            "leaks": 0,
        }
        for i in range(N_ROWS)
    ]
    for r in rows:
        r.update(override)
    return rows


def score_columns(rows: list[int]) -> dict:
    return {
        "row": pa.array(rows, pa.int64()),
        "doc_id": pa.array([DOC_IDS[r % N_ROWS] for r in rows], pa.string()),
        "sample": pa.array([0] * len(rows), pa.int64()),
        "tag_failure": pa.array([False] * len(rows)),
        "decode_error": pa.array([False] * len(rows)),
        "nmse": pa.array([0.5] * len(rows), pa.float64()),
        "pred_vector": vectors_to_arrow(np.ones((len(rows), D_MODEL), np.float32)),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, qwen_family) -> World:
    from nlaprobe.corpus import CorpusParams, build_corpus_shard

    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "corpus.parquet"
    build_corpus_shard(
        CorpusParams.from_json({"shard_docs": 2, "splits": {"eval": {"stop": 2}}}),
        "eval",
        0,
        corpus,
    )
    w = World(root, qwen_family, corpus, root / "acts.parquet", root / "dec.parquet", root / "s.pq")
    write_table(w.acts, pa.table(activation_columns()))
    write_table(w.decodes, D.decode_table(decode_rows(), {}))
    write_table(w.scores, pa.table(score_columns(list(range(N_ROWS)))))
    return w


# ----------------------------------------------------------------------------- the stages


def extract(w: World, out: Path, **params) -> list[str]:
    p = {"layers": [2], "seed": 42, "positions_per_doc": 2, "min_position": 5, **params}
    return [
        "extract",
        *("--checkpoint", w.checkpoint("base"), "--params", json.dumps(p)),
        *("--corpus", str(w.corpus), "--out", str(out)),
    ]


def decode(w: World, out: Path, *, checkpoint: str | None = None, acts=None, **params) -> list:
    p = {"seed": 42, "max_new_tokens": 4, "batch_size": 4, **params}
    return [
        "decode",
        *("--checkpoint", checkpoint or w.checkpoint("av"), "--cond", "greedy"),
        *("--activations", str(acts or w.acts), "--params", json.dumps(p), "--out", str(out)),
    ]


def score(
    w: World, out: Path, *, checkpoint=None, decodes=None, variant="full", **params
) -> list[str]:
    return [
        "score",
        *("--checkpoint", checkpoint or w.checkpoint("ar"), "--variant", variant),
        *("--decodes", str(decodes or w.decodes), "--gold", str(w.acts)),
        *("--params", json.dumps({"batch_size": 4, **params}), "--out", str(out)),
    ]


def ridge_shard(w: World) -> Path:
    """The activation shard as the ridge stage reads it: shard-00000.parquet of a folder."""
    path = w.root / "ridge-acts" / "shard-00000.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(w.acts, path)
    return path


def ridge(w: World, out: Path, *, acts: Path | None = None, **params) -> list[str]:
    p = {
        "kernels": ["linear"],
        "rbf_gammas": [1.0],
        "alphas": [0.1, 1.0],
        "val_fraction": 0.25,
        "seed": 42,
        **params,
    }
    folder = str((acts or ridge_shard(w)).parent)
    return [
        "ridge",
        *("--n", "4", "--params", json.dumps(p)),
        *("--src-ridge", folder, "--dst-ridge", folder, "--ridge-shards", "1"),
        *("--src-eval", folder, "--dst-eval", folder, "--eval-shards", "1"),
        *("--out-json", str(out), "--out-npz", str(out.with_suffix(".npz"))),
    ]


def aggregate(
    w: World,
    out: Path,
    *,
    sidecar: dict | None = None,
    scores=None,
    gold=None,
    sidecar_path: Path | None = None,
) -> list[str]:
    """The aggregate stage on a hand-made spec (`--spec-file`, written beside the world's
    inputs, not beside the output)."""
    spec = {
        "families": ["qwen"],
        "metrics": {"n_boot": 10, "alpha": 0.05, "null_seed": 0},
        "train_var": {"qwen": None},
        "cells": {
            "qwen__qwen": {"scores": [str(scores or w.scores)], "gold": [str(gold or w.acts)]}
        },
    }
    if sidecar is not None:
        sidecar_path = w.root / "side.nla_meta.yaml"
        sidecar_path.write_text(yaml.safe_dump(sidecar), encoding="utf-8")
    if sidecar_path is not None:
        spec["alignment_sidecars"] = [str(sidecar_path)]
    fd, spec_file = tempfile.mkstemp(prefix="spec-", suffix=".json", dir=w.root)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    return ["aggregate", "fve_baseline", "--spec-file", spec_file, "--out", str(out)]


def set_key(dotted: str, value) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        *parents, leaf = dotted.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[leaf] = value

    return edit


def av_with_generation_config(w: World, text: str) -> str:
    entry = json.loads(w.checkpoint("av", lambda meta: None))
    (Path(entry["path"]) / "generation_config.json").write_text(text, encoding="utf-8")
    return json.dumps(entry)


# (id, argv builder (world, out) -> argv, what the one error line must contain)
CASES: list[tuple[str, Callable[[World, Path], list[str]], list[str]]] = [
    # extract: parameters follow sampling.*, run.seed and the family's layers
    ("extract-batch-negative", lambda w, o: extract(w, o, batch_size=-1), ["'batch_size'", "-1"]),
    ("extract-batch-zero", lambda w, o: extract(w, o, batch_size=0), ["'batch_size'", ">= 1"]),
    ("extract-layers-empty", lambda w, o: extract(w, o, layers=[]), ["'layers'"]),
    ("extract-layer-negative", lambda w, o: extract(w, o, layers=[-1]), ["'layers[0]'"]),
    ("extract-layers-duplicate", lambda w, o: extract(w, o, layers=[2, 2]), ["'layers'", "unique"]),
    ("extract-seed-string", lambda w, o: extract(w, o, seed="42"), ["'seed'", "integer"]),
    ("extract-k-float", lambda w, o: extract(w, o, positions_per_doc=1.5), ["'positions_per_doc'"]),
    ("extract-unknown-key", lambda w, o: extract(w, o, batch=4), ["unknown key 'batch'"]),
    # decode: run.seed and decode.*
    ("decode-batch-negative", lambda w, o: decode(w, o, batch_size=-1), ["'batch_size'", "-1"]),
    ("decode-batch-zero", lambda w, o: decode(w, o, batch_size=0), ["'batch_size'", ">= 1"]),
    ("decode-max-new-zero", lambda w, o: decode(w, o, max_new_tokens=0), ["'max_new_tokens'"]),
    ("decode-seed-string", lambda w, o: decode(w, o, seed="42"), ["'seed'", "integer"]),
    ("decode-backend", lambda w, o: decode(w, o, backend="tpu"), ["'backend'", "hf, vllm"]),
    (
        "decode-temperature-nan",
        lambda w, o: decode(w, o, temperature=math.nan),
        ["'temperature'", "finite"],
    ),
    (
        "decode-int-injection-char",
        lambda w, o: decode(
            w, o, checkpoint=w.checkpoint("av", set_key("tokens.injection_char", 7))
        ),
        ["tokens.injection_char", "int"],
    ),
    (
        "decode-template-foo",
        lambda w, o: decode(
            w,
            o,
            checkpoint=w.checkpoint("av", set_key("prompt_templates.av", "{foo} {injection_char}")),
        ),
        ["prompt_templates.av", "{foo}"],
    ),
    (
        "decode-template-positional",
        lambda w, o: decode(
            w,
            o,
            checkpoint=w.checkpoint("av", set_key("prompt_templates.av", "{0}{injection_char}")),
        ),
        ["prompt_templates.av", "{0}"],
    ),
    (
        "decode-int-template",
        lambda w, o: decode(w, o, checkpoint=w.checkpoint("av", set_key("prompt_templates.av", 5))),
        ["prompt_templates.av", "int"],
    ),
    (
        "decode-generation-config",
        lambda w, o: decode(w, o, checkpoint=av_with_generation_config(w, '{"eos_token_id": [1,')),
        ["generation_config.json", "not valid JSON"],
    ),
    (
        "decode-generation-config-eos",
        lambda w, o: decode(w, o, checkpoint=av_with_generation_config(w, '{"eos_token_id": "x"}')),
        ["generation_config.json", "eos_token_id"],
    ),
    (
        "decode-position-column-type",
        lambda w, o: decode(
            w,
            o,
            acts=w.table(
                "acts-str-pos",
                activation_columns(**{C.COL_POSITION: pa.array(["60"] * N_ROWS)}),
            ),
        ),
        [f"column '{C.COL_POSITION}'", "expected int"],
    ),
    # score: decode.batch_size, the variant, the AR sidecar, the decode shard's rows
    ("score-batch-negative", lambda w, o: score(w, o, batch_size=-1), ["'batch_size'", "-1"]),
    ("score-variant-path", lambda w, o: score(w, o, variant="../../x"), ["variant", "../../x"]),
    (
        "score-int-template",
        lambda w, o: score(w, o, checkpoint=w.checkpoint("ar", set_key("prompt_templates.ar", 3))),
        ["prompt_templates.ar", "int"],
    ),
    (
        "score-negative-row",
        lambda w, o: score(
            w, o, decodes=w.table("dec-neg", D.decode_table(decode_rows(row=-1), {}).to_pydict())
        ),
        ["row -1", "out of range"],
    ),
    (
        "score-row-column-type",
        lambda w, o: score(
            w,
            o,
            decodes=w.table(
                "dec-str", {**D.decode_table(decode_rows(), {}).to_pydict(), "row": ["0"] * N_ROWS}
            ),
        ),
        ["column 'row'", "expected int"],
    ),
    # ridge: the ridge section and run.seed
    ("ridge-alpha-zero", lambda w, o: ridge(w, o, alphas=[0.0, 1.0]), ["'alphas[0]'", "> 0"]),
    ("ridge-val-fraction", lambda w, o: ridge(w, o, val_fraction=1.5), ["'val_fraction'", "< 1"]),
    ("ridge-gamma-nan", lambda w, o: ridge(w, o, rbf_gammas=[math.nan]), ["'rbf_gammas[0]'"]),
    ("ridge-kernel", lambda w, o: ridge(w, o, kernels=["poly"]), ["'kernels[0]'", "poly"]),
    ("ridge-seed-float", lambda w, o: ridge(w, o, seed=4.2), ["'seed'", "integer"]),
    # aggregate: sidecars and score shards of the wrong shape
    (
        "aggregate-sidecar-n-rows",
        lambda w, o: aggregate(
            w, o, sidecar={"n_rows": "ten", "alignment": {"mean_abs_error_chars": 0.3}}
        ),
        ["n_rows", "'ten'"],
    ),
    (
        "aggregate-sidecar-mean",
        lambda w, o: aggregate(
            w, o, sidecar={"n_rows": 4, "alignment": {"mean_abs_error_chars": [0.3]}}
        ),
        ["alignment.mean_abs_error_chars"],
    ),
    (
        "aggregate-sidecar-alignment",
        lambda w, o: aggregate(w, o, sidecar={"n_rows": 4, "alignment": "0.3"}),
        ["alignment", "mapping"],
    ),
    (
        "aggregate-negative-row",
        lambda w, o: aggregate(w, o, scores=w.table("s-neg", score_columns([0, 1, -1]))),
        ["row -1", "out of range"],
    ),
    (
        "aggregate-row-past-the-end",
        lambda w, o: aggregate(w, o, scores=w.table("s-big", score_columns([0, N_ROWS]))),
        [f"row {N_ROWS}", "out of range"],
    ),
    # corpus: the corpus section
    (
        "corpus-shard-docs",
        lambda w, o: (
            ["corpus", "--params", '{"shard_docs": -1}', "--split", "eval"]
            + ["--shard", "0", "--out", str(o)]
        ),
        ["corpus.shard_docs"],
    ),
]


@pytest.mark.parametrize(("build", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_with_one_line_and_no_output(world, tmp_path, caplog, build, needles):
    out = tmp_path / "out" / "shard-00000.parquet"
    args = build(world, out)
    caplog.set_level(logging.INFO)
    assert main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    (message,) = errors
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    left = list(out.parent.iterdir()) if out.parent.exists() else []
    assert left == [], left


def test_the_table_covers_every_stage_with_parameters():
    stages = {build.__code__.co_names for _id, build, _n in CASES}
    covered = {name for names in stages for name in names}
    assert {"extract", "decode", "score", "ridge", "aggregate"} <= covered
    assert len(CASES) >= 20


# ----------------------------------------------------------------------------- damaged inputs
#
# Issue 14, item 4: every reader verifies what it reads. Each case damages one input of its
# stage (16 bytes flipped in the middle of a valid file, as a result of the workflow would sit
# under results/) and expects exit 2, one error line naming that file as corrupt, no output, and
# the file set aside as `.<name>.corrupt` so that the workflow rebuilds it.


def damaged(w: World, tmp_path: Path, src: Path) -> Path:
    path = tmp_path / "results" / "in" / src.name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(src.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def damaged_sidecar(w: World, tmp_path: Path) -> Path:
    from nlaprobe.io import write_yaml

    path = tmp_path / "results" / "in" / "shard-00000.nla_meta.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_yaml(path, {"n_rows": 4, "alignment": {"mean_abs_error_chars": 0.25}})
    path.write_text(path.read_text().replace("0.25", "0.35"))
    return path


def aggregate_with_sidecar(w: World, out: Path, sidecar: Path) -> list[str]:
    return aggregate(w, out, sidecar_path=sidecar)


# (id, the input damaged, argv builder (world, out, damaged input) -> argv)
DAMAGED: list[tuple[str, Callable[[World], Path], Callable[[World, Path, Path], list[str]]]] = [
    (
        "extract-corpus",
        lambda w: w.corpus,
        lambda w, o, bad: [str(bad) if a == str(w.corpus) else a for a in extract(w, o)],
    ),
    (
        "positions-activations",
        lambda w: w.acts,
        lambda w, o, bad: ["positions", "--activations", str(bad), "--out", str(o)],
    ),
    ("decode-activations", lambda w: w.acts, lambda w, o, bad: decode(w, o, acts=bad)),
    ("score-decodes", lambda w: w.decodes, lambda w, o, bad: score(w, o, decodes=bad)),
    (
        "score-gold",
        lambda w: w.acts,
        lambda w, o, bad: [str(bad) if a == str(w.acts) else a for a in score(w, o)],
    ),
    (
        "redact-decodes",
        lambda w: w.decodes,
        lambda w, o, bad: [
            "redact",
            "--decodes",
            str(bad),
            "--variant",
            "prose_only",
            "--out",
            str(o),
        ],
    ),
    (
        "ridge-activations",
        ridge_shard,
        lambda w, o, bad: ridge(w, o, acts=bad),
    ),
    ("aggregate-scores", lambda w: w.scores, lambda w, o, bad: aggregate(w, o, scores=bad)),
    (
        "aggregate-gold",
        lambda w: w.acts,
        lambda w, o, bad: aggregate(w, o, gold=bad),
    ),
]


@pytest.mark.parametrize(("source", "build"), [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_input_exits_2_naming_it_and_is_set_aside(
    world, tmp_path, caplog, monkeypatch, source, build
):
    monkeypatch.chdir(tmp_path)  # no .snakemake/ here: nothing recorded, only set aside
    bad = damaged(world, tmp_path, source(world))
    out = tmp_path / "out" / "shard-00000.parquet"
    args = build(world, out, bad)  # reads `bad` (on the command line, in a spec file or folder)
    caplog.set_level(logging.INFO)
    assert main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"{bad}: corrupt" in errors[0] and "\n" not in errors[0], errors[0]
    assert not bad.exists() and bad.with_name(f".{bad.name}.corrupt").exists()
    left = list(out.parent.iterdir()) if out.parent.exists() else []
    assert left == [], left


def test_damaged_sidecar_stops_the_aggregate(world, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = damaged_sidecar(world, tmp_path)
    out = tmp_path / "out" / "fve_baseline.json"
    caplog.set_level(logging.INFO)
    assert main(aggregate_with_sidecar(world, out, bad)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"{bad}: corrupt" in errors[0], errors
    assert not out.exists()
