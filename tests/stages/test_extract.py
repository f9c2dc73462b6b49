"""Extraction stage (SPEC §4.1, §4.3, §4.4) on the tiny release-layout families: positions,
vectors against an independent Hugging Face forward, cross-tokenizer alignment, sidecars, the
CLI and its failures (nothing left behind)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from nlaprobe import cli
from nlaprobe import constants as C
from nlaprobe.checkpoints import resolve_source
from nlaprobe.documents import CORPUS_SCHEMA, Document, pydoc_documents, read_corpus_shard
from nlaprobe.errors import DataError
from nlaprobe.extract import ExtractParams, positions_table, sidecar_path
from nlaprobe.io import read_table, vectors_from_column, vectors_to_arrow, write_table
from nlaprobe.models.activations import extract
from nlaprobe.models.loading import load_causal_lm, load_tokenizer
from nlaprobe.sampling import doc_id_for

FAMILIES = ("qwen", "gemma")
LAYERS = (2, 0, 1, 3)  # K first; block 3 is the last of the 4
N_LAYERS = 4
ATOL = 1e-5
SEED = 42
K_PER_DOC = 4
MIN_POSITION = 16
MAX_LENGTH = 128
SHORT_TEXT = "Too short to sample from."


def params(**over) -> ExtractParams:
    base = {
        "layers": list(LAYERS),
        "seed": SEED,
        "positions_per_doc": K_PER_DOC,
        "min_position": MIN_POSITION,
        "max_length": MAX_LENGTH,
        "batch_size": 8,
    }
    raw = {**base, **over}
    return ExtractParams.from_json({**raw, "layers": list(raw["layers"])}, source="test parameters")


PARAMS = params()


def params_json(**over) -> str:
    p = params(**over)
    return json.dumps(
        {
            "layers": list(p.layers),
            "seed": p.seed,
            "positions_per_doc": p.positions_per_doc,
            "min_position": p.min_position,
            "max_length": p.max_length,
            "batch_size": p.batch_size,
        }
    )


def checkpoint_json(path: Path) -> str:
    return json.dumps({"path": str(path), "dtype": "float32"})


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus_shard(tmp_path_factory) -> Path:
    """11 pydoc documents (several longer than MAX_LENGTH tokens) and one too short to sample."""
    docs = [
        (doc_id_for("builtin:pydoc", "topics", i), i, text, topic)
        for i, (topic, text) in enumerate(pydoc_documents()[:11])
    ]
    docs.append((doc_id_for("builtin:pydoc", "topics", 999), 999, SHORT_TEXT, None))
    table = pa.table(
        {
            C.COL_DOC_ID: [d[0] for d in docs],
            C.COL_DOC_IDX: [d[1] for d in docs],
            C.COL_TEXT: [d[2] for d in docs],
            C.COL_TOPIC: [d[3] for d in docs],
        },
        schema=CORPUS_SCHEMA,
    )
    path = tmp_path_factory.mktemp("corpus") / "shard-00000.parquet"
    write_table(path, table)
    return path


@pytest.fixture(scope="module")
def docs(corpus_shard) -> list[Document]:
    return read_corpus_shard(corpus_shard)


@pytest.fixture(scope="module")
def family_dirs(qwen_family, gemma_family) -> dict[str, Path]:
    return {"qwen": qwen_family, "gemma": gemma_family}


@pytest.fixture(scope="module")
def loaded(family_dirs) -> dict:
    """{fam: (model, tokenizer)} of the base models in float32."""
    out = {}
    for fam, root in family_dirs.items():
        src = resolve_source({"path": str(root / "base"), "dtype": "float32"}, "base")
        out[fam] = (load_causal_lm(src), load_tokenizer(src))
    return out


@pytest.fixture(scope="module")
def primary(loaded, docs) -> dict[str, pa.Table]:
    """Each family extracting as the primary (sampling its own positions)."""
    return {fam: extract(*loaded[fam], docs, PARAMS).table for fam in FAMILIES}


@pytest.fixture(scope="module")
def aligned(loaded, docs, primary) -> dict[str, pa.Table]:
    """{fam: table} of `fam` aligned to the other family's positions."""
    out = {}
    for fam, other in (("gemma", "qwen"), ("qwen", "gemma")):
        pos = positions_table(primary[other])
        out[fam] = extract(*loaded[fam], docs, PARAMS, positions=pos).table
    return out


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, family_dirs, corpus_shard) -> dict[str, Path]:
    """The CLI once: qwen primary -> positions -> gemma aligned."""
    out = tmp_path_factory.mktemp("cli")
    paths = {
        "qwen": out / "qwen" / "shard-00000.parquet",
        "positions": out / "positions" / "shard-00000.parquet",
        "gemma": out / "gemma" / "shard-00000.parquet",
    }
    common = ["--params", params_json(), "--corpus", str(corpus_shard)]
    assert (
        cli.main(
            [
                "extract",
                "--checkpoint",
                checkpoint_json(family_dirs["qwen"] / "base"),
                *common,
                "--out",
                str(paths["qwen"]),
                "--provenance",
                json.dumps({"family": "qwen", "tag": "abc"}),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            ["positions", "--activations", str(paths["qwen"]), "--out", str(paths["positions"])]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "extract",
                "--checkpoint",
                checkpoint_json(family_dirs["gemma"] / "base"),
                *common,
                "--out",
                str(paths["gemma"]),
                "--positions",
                str(paths["positions"]),
            ]
        )
        == 0
    )
    return paths


# ----------------------------------------------------------------------------- references


def tokenize(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(
        text,
        add_special_tokens=True,
        truncation=True,
        max_length=MAX_LENGTH,
        return_offsets_mapping=True,
    )
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def reference_positions(tokenizer, doc: Document) -> list[int]:
    """SPEC §4.3 written out: candidates i >= min_position that are not special tokens,
    random.Random(sha256(f"{seed}|{doc_id}").digest()).sample(candidates, k)."""
    ids, _ = tokenize(tokenizer, doc.text)
    special = set(tokenizer.all_special_ids)
    cands = [i for i in range(MIN_POSITION, len(ids)) if ids[i] not in special]
    rng = random.Random(hashlib.sha256(f"{SEED}|{doc.doc_id}".encode()).digest())
    return rng.sample(cands, min(K_PER_DOC, len(cands)))


def decoder_layers(model) -> torch.nn.ModuleList:
    """The blocks, located by the two layouts we ship (independently of nlaprobe)."""
    if type(model).__name__ == "Gemma3ForConditionalGeneration":
        return model.model.language_model.layers
    return model.model.layers


def reference_states(model, ids: list[int]) -> dict[int, np.ndarray]:
    """One unbatched forward of the whole (truncated) document: hidden_states[K+1] for
    K < N_LAYERS-1, a hook on the last block, and hidden_states[-1] under key -1."""
    captured = {}
    block = decoder_layers(model)[N_LAYERS - 1]
    handle = block.register_forward_hook(
        lambda _m, _i, out: captured.setdefault("h", out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    finally:
        handle.remove()
    hs = out.hidden_states
    assert len(hs) == N_LAYERS + 1
    states = {k: hs[k + 1][0].float().numpy() for k in range(N_LAYERS - 1)}
    states[N_LAYERS - 1] = captured["h"][0].float().numpy()
    states[-1] = hs[-1][0].float().numpy()
    return states


def column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def layer_vectors(table: pa.Table, layer: int) -> np.ndarray:
    name = C.COL_VECTOR if layer == LAYERS[0] else C.layer_column(layer)
    return vectors_from_column(table, name, width=64)


def rows_by_doc(table: pa.Table) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for did, pos in zip(column(table, C.COL_DOC_ID), column(table, C.COL_POSITION), strict=True):
        out.setdefault(did, []).append(pos)
    return out


# ----------------------------------------------------------------------------- shapes


def test_fixture_shapes(loaded, docs):
    """The Gemma base is the multimodal wrapper; some documents get truncated."""
    assert type(loaded["gemma"][0]).__name__ == "Gemma3ForConditionalGeneration"
    assert type(loaded["qwen"][0]).__name__ == "Qwen2ForCausalLM"
    for fam in FAMILIES:
        tok = loaded[fam][1]
        lengths = [len(tok(d.text, add_special_tokens=True)["input_ids"]) for d in docs]
        assert max(lengths) > MAX_LENGTH
    assert loaded["gemma"][1].bos_token_id is not None
    assert loaded["qwen"][1].bos_token_id is None


@pytest.mark.parametrize("fam", FAMILIES)
def test_schema(primary, fam):
    table = primary[fam]
    schema = table.schema
    assert schema.field(C.COL_VECTOR).type == pa.list_(pa.float32(), 64)
    for layer in LAYERS[1:]:
        assert schema.field(C.layer_column(layer)).type == pa.list_(pa.float32(), 64)
    for name in (C.COL_N_RAW_TOKENS, C.COL_LAYER, C.COL_CHAR_END, C.COL_POSITION, C.COL_DOC_IDX):
        assert schema.field(name).type == pa.int64()
    for name in (C.COL_DOC_ID, C.COL_DETOK):
        assert schema.field(name).type == pa.string()
    assert set(column(table, C.COL_LAYER)) == {LAYERS[0]}
    assert C.COL_ALIGN_ERR not in table.column_names


# ----------------------------------------------------------------------------- positions


@pytest.mark.parametrize("fam", FAMILIES)
def test_positions_are_the_release_sampling(loaded, docs, primary, fam):
    tok = loaded[fam][1]
    got = rows_by_doc(primary[fam])
    expected = {d.doc_id: reference_positions(tok, d) for d in docs}
    expected = {k: v for k, v in expected.items() if v}
    assert got == expected  # same documents, same positions, in sampled order
    assert doc_id_for("builtin:pydoc", "topics", 999) not in got  # the short document
    assert all(len(v) == K_PER_DOC for v in got.values())
    assert max(column(primary[fam], C.COL_POSITION)) < MAX_LENGTH
    # rows of a document are contiguous and documents keep the shard's order
    order = list(dict.fromkeys(column(primary[fam], C.COL_DOC_ID)))
    assert order == [d.doc_id for d in docs if d.doc_id in got]


@pytest.mark.parametrize("fam", FAMILIES)
def test_row_columns(loaded, docs, primary, fam):
    tok = loaded[fam][1]
    table = primary[fam]
    by_id = {d.doc_id: d for d in docs}
    for row in table.select(
        [
            C.COL_DOC_ID,
            C.COL_DOC_IDX,
            C.COL_POSITION,
            C.COL_N_RAW_TOKENS,
            C.COL_CHAR_END,
            C.COL_DETOK,
        ]
    ).to_pylist():
        doc = by_id[row[C.COL_DOC_ID]]
        ids, offsets = tokenize(tok, doc.text)
        pos = row[C.COL_POSITION]
        assert row[C.COL_DOC_IDX] == doc.doc_idx
        assert row[C.COL_N_RAW_TOKENS] == pos + 1
        assert row[C.COL_CHAR_END] == offsets[pos][1]
        assert row[C.COL_DETOK] == tok.decode(ids[: pos + 1], skip_special_tokens=True)


# ----------------------------------------------------------------------------- vectors


@pytest.mark.parametrize(
    ("fam", "kind"), [(f, k) for f in FAMILIES for k in ("primary", "aligned")]
)
def test_vectors_match_an_independent_forward(loaded, docs, primary, aligned, fam, kind):
    model, tok = loaded[fam]
    table = (primary if kind == "primary" else aligned)[fam]
    by_id = {d.doc_id: d for d in docs}
    vectors = {layer: layer_vectors(table, layer) for layer in LAYERS}
    n_checked = 0
    for did, positions in rows_by_doc(table).items():
        ids, _ = tokenize(tok, by_id[did].text)
        ref = reference_states(model, ids)
        rows = [i for i, d in enumerate(column(table, C.COL_DOC_ID)) if d == did]
        for r, pos in zip(rows, positions, strict=True):
            for layer in LAYERS:
                np.testing.assert_allclose(
                    vectors[layer][r], ref[layer][pos], rtol=0, atol=ATOL, err_msg=f"L{layer}"
                )
                # the check discriminates: other layers are far away
                for other in LAYERS:
                    if other != layer:
                        assert np.abs(ref[other][pos] - vectors[layer][r]).max() > 100 * ATOL
            # hidden_states[-1] is after the final norm: never the last block's output
            assert np.abs(ref[-1][pos] - vectors[N_LAYERS - 1][r]).max() > 100 * ATOL
            n_checked += 1
    assert n_checked == table.num_rows > 0


@pytest.mark.parametrize("fam", FAMILIES)
def test_one_forward_equals_one_forward_per_layer(loaded, docs, primary, fam):
    multi = primary[fam]
    for layer in LAYERS:
        single = extract(*loaded[fam], docs, params(layers=[layer])).table
        assert column(single, C.COL_DOC_ID) == column(multi, C.COL_DOC_ID)
        assert column(single, C.COL_POSITION) == column(multi, C.COL_POSITION)
        assert set(column(single, C.COL_LAYER)) == {layer}
        np.testing.assert_array_equal(
            vectors_from_column(single, C.COL_VECTOR), layer_vectors(multi, layer)
        )


@pytest.mark.parametrize("fam", FAMILIES)
def test_batch_size_does_not_change_results(loaded, docs, primary, fam):
    one = extract(*loaded[fam], docs, params(batch_size=1)).table
    eight = primary[fam]
    assert one.column_names == eight.column_names
    for name in one.column_names:
        if name == C.COL_VECTOR or name.startswith(C.COL_VECTOR + "_L"):
            a = vectors_from_column(one, name)
            b = vectors_from_column(eight, name)
            np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
        else:
            assert column(one, name) == column(eight, name), name


def test_primary_layer_order_decides_the_main_column(loaded, docs, primary):
    """`layers[0]` is K (activation_vector); the others get their own columns."""
    table = extract(*loaded["qwen"], docs, params(layers=[1, 2])).table
    assert set(column(table, C.COL_LAYER)) == {1}
    assert C.layer_column(2) in table.column_names
    assert C.layer_column(1) not in table.column_names
    np.testing.assert_array_equal(
        vectors_from_column(table, C.COL_VECTOR), layer_vectors(primary["qwen"], 1)
    )


# ----------------------------------------------------------------------------- alignment


@pytest.mark.parametrize(("fam", "other"), [("gemma", "qwen"), ("qwen", "gemma")])
def test_alignment_is_the_nearest_token_end(loaded, docs, primary, aligned, fam, other):
    tok = loaded[fam][1]
    special = set(tok.all_special_ids)
    table = aligned[fam]
    source = primary[other]
    by_id = {d.doc_id: d for d in docs}
    # same rows as the primary, in the primary's order
    assert column(table, C.COL_DOC_ID) == column(source, C.COL_DOC_ID)
    targets = column(source, C.COL_CHAR_END)
    errors = column(table, C.COL_ALIGN_ERR)
    for r, row in enumerate(
        table.select([C.COL_DOC_ID, C.COL_POSITION, C.COL_CHAR_END]).to_pylist()
    ):
        ids, offsets = tokenize(tok, by_id[row[C.COL_DOC_ID]].text)
        target = targets[r]
        # brute force: the first non-special token with the smallest |end - target|
        best_i, best_d = None, None
        for i, (t, (_, end)) in enumerate(zip(ids, offsets, strict=True)):
            if t in special:
                continue
            dist = abs(end - target)
            if best_d is None or dist < best_d:
                best_i, best_d = i, dist
        assert row[C.COL_POSITION] == best_i
        assert ids[best_i] not in special
        assert row[C.COL_CHAR_END] == offsets[best_i][1]
        assert errors[r] == best_d
    # the tokenizers differ, so alignment is not trivially exact, but it is close
    assert 0 < np.mean(errors) < 2


def test_aligned_sidecar_records_the_mean_error(cli_run):
    table = read_table(cli_run["gemma"])
    errors = column(table, C.COL_ALIGN_ERR)
    meta = yaml.safe_load(sidecar_path(cli_run["gemma"]).read_text())
    assert meta["alignment"]["positions"] == str(cli_run["positions"])
    assert meta["alignment"]["mean_abs_error_chars"] == pytest.approx(np.mean(errors), abs=1e-12)
    assert meta["alignment"]["max_abs_error_chars"] == max(errors)


# ----------------------------------------------------------------------------- CLI outputs


def test_cli_outputs_equal_the_in_memory_extraction(cli_run, primary, aligned):
    qwen = read_table(cli_run["qwen"])
    gemma = read_table(cli_run["gemma"])
    for got, want in ((qwen, primary["qwen"]), (gemma, aligned["gemma"])):
        assert got.column_names == want.column_names
        for name in got.column_names:
            if name == C.COL_VECTOR or name.startswith(C.COL_VECTOR + "_L"):
                np.testing.assert_array_equal(
                    vectors_from_column(got, name), vectors_from_column(want, name)
                )
            else:
                assert column(got, name) == column(want, name), name
    positions = read_table(cli_run["positions"])
    assert positions.column_names == list(C.POSITIONS_COLUMNS)
    assert column(positions, C.COL_DOC_ID) == column(qwen, C.COL_DOC_ID)
    assert column(positions, C.COL_CHAR_END) == column(qwen, C.COL_CHAR_END)


def test_sidecar_fields(cli_run, family_dirs, corpus_shard, docs):
    table = read_table(cli_run["qwen"])
    meta = yaml.safe_load(sidecar_path(cli_run["qwen"]).read_text())
    assert sidecar_path(cli_run["qwen"]).name == "shard-00000.nla_meta.yaml"
    assert meta["kind"] == C.KIND_DATASET
    assert meta["schema_version"] == C.SCHEMA_VERSION
    assert meta["base_model"]["name"] == str(family_dirs["qwen"] / "base")
    assert meta["base_model"]["revision"] is None
    assert "float32" in meta["base_model"]["dtype"]
    assert meta["d_model"] == 64
    assert meta["activation_layer"] == LAYERS[0]
    assert meta["layers"] == list(LAYERS)
    assert meta["layer_columns"] == {
        "2": C.COL_VECTOR,
        "0": C.layer_column(0),
        "1": C.layer_column(1),
        "3": C.layer_column(3),
    }
    assert meta["sampling"] == {
        "seed": SEED,
        "positions_per_doc": K_PER_DOC,
        "min_position": MIN_POSITION,
        "max_length": MAX_LENGTH,
    }
    assert meta["corpus_shard"] == str(corpus_shard)
    assert meta["n_docs"] == len(docs)
    assert meta["n_rows"] == table.num_rows == (len(docs) - 1) * K_PER_DOC
    assert meta["alignment"] is None
    assert meta["provenance"] == {"family": "qwen", "tag": "abc"}
    gemma = yaml.safe_load(sidecar_path(cli_run["gemma"]).read_text())
    assert gemma["n_rows"] == table.num_rows
    assert gemma["provenance"] == {}


def test_cli_leaves_no_temporary_files(cli_run):
    for path in cli_run.values():
        names = sorted(p.name for p in path.parent.iterdir())
        assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names


# ----------------------------------------------------------------------------- failures


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "nlaprobe", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def bad_corpus(tmp_path: Path, good: Path) -> Path:
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(good.read_bytes()[:200])
    return path


def stray_positions(tmp_path: Path, good: Path) -> Path:
    path = tmp_path / "positions.parquet"
    write_table(
        path, pa.table({C.COL_DOC_ID: ["builtin:pydoc:topics:424242"], C.COL_CHAR_END: [10]})
    )
    return path


@pytest.mark.parametrize(
    "case",
    ["corrupt-corpus", "doc-not-in-shard", "layer-out-of-range", "missing-checkpoint"],
)
def test_cli_bad_input_fails_cleanly(tmp_path, family_dirs, corpus_shard, case):
    out_dir = tmp_path / "out"
    out = out_dir / "shard-00000.parquet"
    corpus = str(corpus_shard)
    checkpoint = checkpoint_json(family_dirs["gemma"] / "base")
    extra: list[str] = []
    layers = LAYERS
    if case == "corrupt-corpus":
        corpus = str(bad_corpus(tmp_path, corpus_shard))
        expect = [corpus, "corrupt"]
    elif case == "doc-not-in-shard":
        positions = stray_positions(tmp_path, corpus_shard)
        extra = ["--positions", str(positions)]
        expect = [str(positions), "builtin:pydoc:topics:424242", "not in the corpus shard"]
    elif case == "layer-out-of-range":
        layers = (9,)
        expect = ["layer 9 out of range", "4 blocks"]
    else:
        missing = tmp_path / "no-such-model"
        checkpoint = checkpoint_json(missing)
        expect = [str(missing), "not found"]
    proc = run_cli(
        "extract",
        "--checkpoint",
        checkpoint,
        "--params",
        params_json(layers=layers),
        "--corpus",
        corpus,
        "--out",
        str(out),
        *extra,
    )
    assert proc.returncode != 0
    for text in expect:
        assert text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())


def test_a_failed_write_leaves_nothing(monkeypatch, tmp_path, family_dirs, corpus_shard):
    """A crash while the parquet is being written leaves neither the shard, its sidecar nor a
    temporary file behind."""
    import nlaprobe.io

    class BrokenWriter:
        def __init__(self, where, schema, **kw):
            Path(where).write_bytes(b"PAR1 half a file")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write_table(self, table):
            raise OSError("disk full")

    monkeypatch.setattr(nlaprobe.io.pq, "ParquetWriter", BrokenWriter)
    out_dir = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        cli.main(
            [
                "extract",
                "--checkpoint",
                checkpoint_json(family_dirs["qwen"] / "base"),
                "--params",
                params_json(),
                "--corpus",
                str(corpus_shard),
                "--out",
                str(out_dir / "shard-00000.parquet"),
            ]
        )
    assert list(out_dir.iterdir()) == []


# ----------------------------------------------------------------------------- vector columns


VECS = np.arange(12, dtype=np.float32).reshape(4, 3) / 7


@pytest.mark.parametrize(
    "array",
    [
        vectors_to_arrow(VECS),
        pa.array(VECS.tolist(), pa.list_(pa.float32())),
        pa.array(VECS.tolist(), pa.list_(pa.float64())),
        pa.array(VECS.tolist(), pa.large_list(pa.float32())),
        pa.chunked_array([VECS[:2].tolist(), VECS[2:].tolist()], pa.list_(pa.float32())),
    ],
    ids=["fixed", "variable", "variable-f64", "large", "chunked"],
)
def test_vectors_from_column_accepts_fixed_and_variable_lists(array):
    table = pa.table({"v": array})
    got = vectors_from_column(table, "v", width=3, where="t.parquet")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, VECS)


def test_vectors_from_column_empty():
    table = pa.table({"v": pa.array([], pa.list_(pa.float32()))})
    assert vectors_from_column(table, "v", width=5).shape == (0, 5)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (vectors_to_arrow(VECS), "width 3, expected 4"),
        (pa.array(VECS.tolist(), pa.list_(pa.float32())), "width 3, expected 4"),
        (
            pa.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0]], pa.list_(pa.float32())),
            "different lengths",
        ),
        (pa.array([[1.0, 2.0, 3.0, float("nan")]], pa.list_(pa.float32())), "non-finite"),
        (vectors_to_arrow(np.array([[0, 1, 2, np.inf]], dtype=np.float32)), "non-finite"),
        (pa.array([[1.0, 2.0, 3.0, 4.0], None], pa.list_(pa.float32())), "row 1"),
        (pa.array([[1.0, 2.0, 3.0, 4.0], None], pa.list_(pa.float32(), 4)), "row 1"),
        (pa.array(["a", "b"]), "list of floats"),
    ],
    ids=["fixed-width", "variable-width", "ragged", "nan", "inf", "null-row", "null-fixed", "type"],
)
def test_vectors_from_column_rejects_bad_vectors(array, message):
    table = pa.table({"activation_vector": array})
    with pytest.raises(DataError, match=message) as err:
        vectors_from_column(table, "activation_vector", width=4, where="acts.parquet")
    assert "'activation_vector'" in str(err.value)
    assert "acts.parquet" in str(err.value)
