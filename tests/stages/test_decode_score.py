"""Decode and score stages on the tiny release-layout families (SPEC §4.6-§4.9, §5).

The fixture weights are random, so the AV never writes `<explanation>` tags: the decode side is
checked against independent computations (embedding rows, a hand-written greedy loop, batch
composition, seeded sampling, bans on a model pushed towards quotes), and the score side on a
hand-made decode shard whose explanations are read out by an independent AR forward.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nlaprobe import constants as C
from nlaprobe import decode as D
from nlaprobe.checkpoints import resolve_source
from nlaprobe.constants import DECODE_META_KEY
from nlaprobe.io import table_meta, write_table
from nlaprobe.models import backends, forward, generation
from nlaprobe.models.loading import load_ar, load_av
from nlaprobe.score import (
    SCORE_META_KEY,
    ScoreParams,
    ar_texts,
    readout,
    score_shard,
    tokenize_ar,
)

STYLES = ("qwen", "gemma")
K = 2  # the fixtures' layer
MAX_NEW = 12


def family_dir(request, style: str) -> Path:
    return request.getfixturevalue(f"{style}_family")


def entry(path: Path) -> dict:
    return {"path": str(path), "dtype": "float32"}


def source(path: Path, role: str):
    return resolve_source(entry(path), role)


def lively_av(fam: Path, style: str):
    """The fixture AV, made to depend on its input vector. The random Qwen fixture copies its last
    prompt token ('\\n') whatever the vector; redrawn weights at a larger scale (and an injection
    scale well above the embedding norms) make its greedy output vary from row to row. The Gemma
    fixture (√d-scaled embeddings) already does. Returns (av, injection scale)."""
    av = load_av(source(fam / "av", "av"))
    if style == "gemma":
        return av, av.meta.injection_scale
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in av.model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 2.0 / math.sqrt(p.shape[1]))
    base = forward.prompt_token_embeds(av.model, av.prompt_ids)
    return av, 3.0 * float(base.norm(dim=1).mean())


def backend(av, banned=(), max_new_tokens=MAX_NEW) -> backends.HFBackend:
    settings = backends.DecodeSettings(
        max_new_tokens=max_new_tokens,
        stop_token_ids=tuple(av.stop_token_ids),
        pad_token_id=av.tokenizer.pad_token_id or 0,
        banned_ids=tuple(banned),
    )
    return backends.HFBackend(av, settings)


def decode(av, engine, scale, vectors, cond, batch_size, doc_ids=None, positions=None):
    n = len(vectors)
    return generation.decode_rows(
        engine,
        forward.prompt_token_embeds(av.model, av.prompt_ids),
        av.marker_pos,
        scale,
        vectors,
        doc_ids or [f"builtin:pydoc:topics:{i}" for i in range(n)],
        positions or [50 + 3 * i for i in range(n)],
        cond,
        seed=42,
        batch_size=batch_size,
        progress=False,
    )


def vectors(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ----------------------------------------------------------------------------- AV input


@pytest.mark.parametrize("style", STYLES)
def test_prompt_token_embeds(request, style):
    from safetensors.torch import load_file

    fam = family_dir(request, style)
    av = load_av(source(fam / "av", "av"))
    ids = av.prompt_ids
    raw = load_file(str(fam / "av" / "model.safetensors"))["model.embed_tokens.weight"][ids]
    factor = math.sqrt(64) if style == "gemma" else 1.0
    got = forward.prompt_token_embeds(av.model, ids)
    assert got.dtype == torch.float32 and tuple(got.shape) == (len(ids), 64)
    torch.testing.assert_close(got, raw.float() * factor, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(av.prompt_embeds_from_weights(), got, rtol=1e-6, atol=1e-6)
    # in a bf16 model HF multiplies bf16 rows by √d cast to bf16; the rows read for vLLM follow
    # the same path and match bit for bit
    bf16 = load_av(resolve_source({"path": str(fam / "av"), "dtype": "bfloat16"}, "av"))
    assert torch.equal(
        bf16.prompt_embeds_from_weights(torch.bfloat16),
        forward.prompt_token_embeds(bf16.model, ids),
    )
    # one BOS for Gemma (the chat template emits it; never tokenized twice), none for Qwen
    bos = av.tokenizer.bos_token_id
    if style == "gemma":
        assert ids[0] == bos and ids.count(bos) == 1
    else:
        assert bos is None or bos not in ids
    assert ids[av.marker_pos] == av.meta.injection_token_id


# ----------------------------------------------------------------------------- HF decoding


def manual_greedy(model, prompt_embeds: torch.Tensor, stops, max_new: int) -> list[int]:
    """Greedy decoding without `generate` and without a KV cache: argmax of the full forward."""
    emb = model.get_input_embeddings()
    cur = prompt_embeds[None]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            token = int(model(inputs_embeds=cur).logits[0, -1].argmax())
            out.append(token)
            if token in stops:
                break
            cur = torch.cat([cur, emb(torch.tensor([[token]])).float()], dim=1)
    return out


@pytest.mark.parametrize("style", STYLES)
def test_greedy_batched_equals_single_and_manual_loop(request, style):
    av, scale = lively_av(family_dir(request, style), style)
    engine = backend(av)
    vecs = vectors(4)
    cond = generation.parse_condition("greedy")
    batched = decode(av, engine, scale, vecs, cond, batch_size=4)
    single = decode(av, engine, scale, vecs, cond, batch_size=1)
    texts = [r["text"] for r in batched]
    assert texts == [r["text"] for r in single]
    assert [r["n_tokens"] for r in batched] == [r["n_tokens"] for r in single]
    assert len(set(texts)) >= 2, "outputs must depend on the vector for this test to mean much"
    assert all(r["error"] is None and r["sample"] == 0 for r in batched)

    # an independent greedy loop over model(inputs_embeds=...) with the same stop ids
    base = av.model.get_input_embeddings()(torch.tensor([av.prompt_ids]))[0].float().detach()
    for i in range(2):
        prompt = base.clone()
        v = vecs[i].astype(np.float64)
        prompt[av.marker_pos] = torch.from_numpy(v / np.linalg.norm(v) * scale).float()
        ids = manual_greedy(av.model, prompt, set(av.stop_token_ids), MAX_NEW)
        assert batched[i]["text"] == av.tokenizer.decode(ids, skip_special_tokens=True)
        assert batched[i]["n_tokens"] == len(ids)
        stopped = ids[-1] in av.stop_token_ids
        assert batched[i]["finish_reason"] == ("stop" if stopped else "length")


@pytest.mark.parametrize("style", STYLES)
def test_sampling_is_seeded_per_row(request, style):
    av, scale = lively_av(family_dir(request, style), style)
    engine = backend(av)
    vecs = vectors(4, seed=1)
    cond = generation.parse_condition("sample_t1", n_samples=3, temperature=1.0)
    doc_ids = [f"builtin:pydoc:topics:{i}" for i in range(4)]
    positions = [50, 61, 72, 83]
    rows = decode(av, engine, scale, vecs, cond, 12, doc_ids, positions)
    assert [(r["row"], r["sample"]) for r in rows] == [(i, k) for i in range(4) for k in range(3)]
    assert all(
        r["seed"] == generation.sample_seed(42, r["doc_id"], r["position"], r["sample"])
        for r in rows
    )

    # row 2 alone (its own doc_id and position) gives the same samples as inside the batch
    alone = decode(av, engine, scale, vecs[2:3], cond, 3, doc_ids[2:3], positions[2:3])
    assert [r["text"] for r in alone] == [r["text"] for r in rows if r["row"] == 2]
    # a different batch composition and batch size
    mixed = decode(av, engine, scale, vecs[[3, 1]], cond, 4, [doc_ids[3], doc_ids[1]], [83, 61])
    assert [r["text"] for r in mixed[:3]] == [r["text"] for r in rows if r["row"] == 3]
    assert [r["text"] for r in mixed[3:]] == [r["text"] for r in rows if r["row"] == 1]
    # rerun: identical
    assert [r["text"] for r in decode(av, engine, scale, vecs, cond, 5, doc_ids, positions)] == [
        r["text"] for r in rows
    ]
    # samples differ: at least two distinct texts among the three samples of most rows
    distinct = [len({r["text"] for r in rows if r["row"] == i}) for i in range(4)]
    assert sum(n >= 2 for n in distinct) >= 3, distinct


def test_checkpoint_generation_config_does_not_leak(gemma_family, copy_dir):
    """A release AV's generation_config.json may carry sampling defaults and penalties (Qwen2.5
    ships repetition_penalty 1.05); HF fills unset generate() fields from it. Decoding must
    ignore them: no penalties, greedy stays greedy (SPEC §4.6)."""
    av_dir = copy_dir(gemma_family / "av", "av")
    path = av_dir / "generation_config.json"
    cfg = json.loads(path.read_text())
    noisy = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8}
    noisy |= {"repetition_penalty": 5.0, "no_repeat_ngram_size": 2, "min_new_tokens": MAX_NEW}
    cfg.update(noisy)
    path.write_text(json.dumps(cfg))
    vecs = vectors(3, seed=4)
    out = {}
    for name, directory in (("release", gemma_family / "av"), ("noisy", av_dir)):
        av = load_av(source(directory, "av"))
        out[name] = decode(
            av, backend(av), av.meta.injection_scale, vecs, generation.parse_condition("greedy"), 3
        )
    assert [r["text"] for r in out["noisy"]] == [r["text"] for r in out["release"]]
    # the random Gemma AV repeats itself, so a repetition penalty would have shown
    ids = [av.tokenizer(r["text"], add_special_tokens=False)["input_ids"] for r in out["release"]]
    assert any(len(set(i)) < len(i) for i in ids)


def quote_biased(av, banned: list[int], bias: float = 50.0):
    """Push the model towards every banned token: +bias on their logits (forward hook)."""
    idx = torch.tensor(banned)

    def hook(_module, _inputs, output):
        output = output.clone()
        output[..., idx] += bias
        return output

    return av.model.get_output_embeddings().register_forward_hook(hook)


@pytest.mark.parametrize("style", STYLES)
def test_bans_prevent_quotes(request, style):
    av, scale = lively_av(family_dir(request, style), style)
    chars = generation.BAN_SETS["ban_dq_sq"]
    banned = generation.banned_token_ids(av.tokenizer, chars)
    handle = quote_biased(av, banned)
    try:
        vecs = vectors(3, seed=2)
        # without the ban the biased model writes quotes
        free = decode(
            av, backend(av), scale, vecs, generation.Condition("greedy", 0.0, 1, chars), 3
        )
        assert sum(r["leaks"] for r in free) > 0
        assert all(any(ch in r["text"] for ch in chars) for r in free)

        generated: list[list[int]] = []
        for cond in (
            generation.parse_condition("ban_dq_sq"),
            generation.Condition("ban_t1", 1.0, 2, chars),
        ):
            engine = backend(av, banned)
            finish = engine._finish
            engine._finish = lambda ids, finish=finish: (generated.append(ids), finish(ids))[1]
            rows = decode(av, engine, scale, vecs, cond, 3)
            assert sum(r["leaks"] for r in rows) == 0
            assert not any(ch in r["text"] for r in rows for ch in chars)
            assert all(r["n_tokens"] > 0 for r in rows)
        assert len(generated) == 3 + 6
        assert not set(banned) & {t for ids in generated for t in ids}
    finally:
        handle.remove()


# ----------------------------------------------------------------------------- AR readout


def manual_readout(ar_dir: Path, text: str) -> np.ndarray:
    """Independent AR readout: a fresh `AutoModel`, a hook on the last of its K+1 blocks, the
    last token of the unpadded text, through the value head read from its file."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tok = AutoTokenizer.from_pretrained(ar_dir)
    hf_logging.set_verbosity_error()
    model = AutoModel.from_pretrained(ar_dir, dtype=torch.float32).eval()
    hf_logging.set_verbosity_warning()
    assert len(model.layers) == K + 1
    weight = load_file(str(ar_dir / C.VALUE_HEAD_FILE))[C.VALUE_HEAD_KEY].float()
    captured = {}

    def hook(_m, _i, out):
        captured["h"] = out[0] if isinstance(out, tuple) else out

    handle = model.layers[K].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(**tok(text, return_tensors="pt"))
    finally:
        handle.remove()
    return (captured["h"][0, -1].float() @ weight.T).numpy()


EXPLANATIONS = [
    "",
    "Numbers.",
    "The keyword that starts a function definition in Python source code.",
    "A quoted \u201cname\u201d and 'another' inside a sentence about modules and packages.",
    " ".join(["attribute lookup on class instances and their base classes"] * 6),
    "x",
    "Exceptions raised inside a with statement are passed to the exit method of the manager.",
    "A list comprehension.",
    " ".join(["the import system finds and loads modules"] * 3),
    "Zero.",
]


@pytest.mark.parametrize("style", STYLES)
def test_readout_batched_single_and_independent(request, style):
    fam = family_dir(request, style)
    ar = load_ar(source(fam / "ar", "ar"))
    texts = ar_texts(ar.meta.ar_template, EXPLANATIONS)
    ids = tokenize_ar(ar.tokenizer, texts)
    assert len({len(i) for i in ids}) >= 6, "mixed lengths"
    if style == "gemma":
        assert all(i[0] == ar.tokenizer.bos_token_id and i.count(i[0]) == 1 for i in ids)
    else:
        assert not set(ar.tokenizer.all_special_ids) & {t for i in ids for t in i}
    batched = readout(ar, texts, batch_size=8, progress=False)
    single = np.stack([readout(ar, [t], batch_size=1, progress=False)[0] for t in texts])
    assert batched.shape == (len(texts), 64) and batched.dtype == np.float32
    assert np.abs(batched - single).max() <= 1e-5
    assert len({tuple(np.round(r, 4)) for r in batched}) == len(texts)
    for i in (0, 3, 4):
        np.testing.assert_allclose(
            batched[i], manual_readout(fam / "ar", texts[i]), rtol=1e-4, atol=1e-5
        )
    assert readout(ar, [], batch_size=8, progress=False).shape == (0, 64)


# ----------------------------------------------------------------------------- files and CLI


def argv(command: str, **options) -> list[str]:
    """`decode`, checkpoint={...}, out=path -> ["decode", "--checkpoint", "{...}", "--out", ...]."""
    out = [command]
    for key, value in options.items():
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        out += [f"--{key.replace('_', '-')}", text]
    return out


def run_cli(command: str, **options) -> subprocess.CompletedProcess:
    """`python -m nlaprobe <command> ...` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "nlaprobe", *argv(command, **options)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory, qwen_family, gemma_family) -> dict[str, Path]:
    """An eval corpus shard of 8 pydoc documents; qwen (primary) and gemma (aligned to qwen's
    char_ends) activation shards at K=2."""
    from nlaprobe.corpus import CorpusParams, build_corpus_shard
    from nlaprobe.extract import ExtractParams, extract_shard

    root = tmp_path_factory.mktemp("decode_score")
    corpus = CorpusParams.from_json(
        {
            "source": "builtin",
            "dataset": "pydoc",
            "dataset_split": "topics",
            "shard_docs": 8,
            "splits": {"eval": {"start": 0, "stop": 8}, "ridge": {"start": 8, "stop": 16}},
        },
    )
    paths = {"corpus": root / "corpus.parquet"}
    assert build_corpus_shard(corpus, "eval", 0, paths["corpus"]) == 8
    sampling = {"positions_per_doc": 2, "min_position": 5, "max_length": 256}
    params = ExtractParams.from_json({"layers": [K], **sampling})
    paths["qwen"] = root / "act-qwen.parquet"
    paths["positions"] = root / "positions.parquet"
    extract_shard(
        source(qwen_family / "base", "base"),
        paths["corpus"],
        paths["qwen"],
        ExtractParams.from_json({"layers": [K, K - 1], **sampling}),
        positions_out=paths["positions"],
    )
    paths["gemma"] = root / "act-gemma.parquet"
    extract_shard(
        source(gemma_family / "base", "base"),
        paths["corpus"],
        paths["gemma"],
        params,
        positions_in=paths["positions"],
    )
    return paths


DECODE_COLUMNS = (
    "row doc_id position sample seed text explanation n_tokens finish_reason error leaks".split()
)
SCORE_COLUMNS = [
    "row",
    "doc_id",
    "sample",
    "tag_failure",
    "decode_error",
    "pred_norm",
    "cos",
    "nmse",
    "pred_vector",
]


def test_cli_decode_and_score_qwen(shards, qwen_family, tmp_path):
    act = pq.read_table(shards["qwen"])
    n = act.num_rows
    assert n == 16
    dec = tmp_path / "greedy.parquet"
    res = run_cli(
        "decode",
        checkpoint=entry(qwen_family / "av"),
        activations=shards["qwen"],
        cond="greedy",
        params={"seed": 42, "max_new_tokens": 8, "batch_size": 16},
        out=dec,
    )
    assert res.returncode == 0, res.stderr
    table = pq.read_table(dec)
    assert table.column_names == DECODE_COLUMNS
    assert table.num_rows == n
    rows = table.to_pylist()
    assert [r["doc_id"] for r in rows] == act.column(C.COL_DOC_ID).to_pylist()
    assert [r["position"] for r in rows] == act.column(C.COL_POSITION).to_pylist()
    assert all(r["sample"] == 0 and r["error"] is None and r["leaks"] == 0 for r in rows)
    assert all(0 < r["n_tokens"] <= 8 and r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["explanation"] == generation.extract_explanation(r["text"]) for r in rows)
    meta = table_meta(table, DECODE_META_KEY)
    assert meta["condition"]["name"] == "greedy" and meta["summary"]["n_rows"] == n
    assert meta["summary"]["n_tag_failures"] == sum(r["explanation"] is None for r in rows)

    scored = tmp_path / "score.parquet"
    res = run_cli(
        "score", checkpoint=entry(qwen_family / "ar"), decodes=dec, gold=shards["qwen"], out=scored
    )
    assert res.returncode == 0, res.stderr
    st = pq.read_table(scored)
    assert st.column_names == SCORE_COLUMNS and st.num_rows == n
    for r, d in zip(st.to_pylist(), rows, strict=True):
        assert (r["row"], r["doc_id"], r["decode_error"]) == (d["row"], d["doc_id"], False)
        assert r["tag_failure"] == (d["explanation"] is None)
        if r["tag_failure"]:  # the random AV writes no tags: every row fails here
            assert r["nmse"] is None and r["cos"] is None and r["pred_norm"] is None
        else:
            assert r["nmse"] == pytest.approx(2 * (1 - r["cos"]), abs=1e-9)
    smeta = table_meta(st, SCORE_META_KEY)
    assert smeta["summary"]["n_rows"] == n
    assert smeta["decode_condition"]["name"] == "greedy"


def test_cli_cross_route_gemma_av_to_qwen_ar(shards, gemma_family, qwen_family, tmp_path):
    """Gemma's AV decodes its own vectors (aligned to qwen's positions) under the quote ban;
    qwen's AR scores them against qwen's vectors of the same rows (in-process CLI)."""
    from nlaprobe.cli import main

    g = pq.read_table(shards["gemma"])
    q = pq.read_table(shards["qwen"])
    assert g.column(C.COL_DOC_ID).to_pylist() == q.column(C.COL_DOC_ID).to_pylist()
    assert g.num_rows == q.num_rows == 16
    dec = tmp_path / "gemma-ban.parquet"
    params = {"seed": 42, "max_new_tokens": 6, "batch_size": 16}
    decode_args = argv(
        "decode",
        checkpoint=entry(gemma_family / "av"),
        activations=shards["gemma"],
        cond="ban_dq_sq",
        params=params,
        out=dec,
    )
    assert main(decode_args) == 0
    dt = pq.read_table(dec)
    assert dt.column_names == DECODE_COLUMNS and dt.num_rows == g.num_rows
    summary = table_meta(dt, DECODE_META_KEY)["summary"]
    tok = load_av(source(gemma_family / "av", "av"), load_model=False).tokenizer
    assert summary["n_banned_tokens"] == len(
        generation.banned_token_ids(tok, generation.BAN_SETS["ban_dq_sq"])
    )
    assert summary["n_leaks"] == 0 and summary["n_rows"] == g.num_rows

    out = tmp_path / "cross.parquet"
    score_args = argv(
        "score", checkpoint=entry(qwen_family / "ar"), decodes=dec, gold=shards["qwen"], out=out
    )
    assert main(score_args) == 0
    st = pq.read_table(out)
    assert st.column_names == SCORE_COLUMNS and st.num_rows == g.num_rows
    assert st.column("doc_id").to_pylist() == q.column(C.COL_DOC_ID).to_pylist()
    expl = dt.column("explanation").to_pylist()
    assert st.column("tag_failure").to_pylist() == [e is None for e in expl]
    nmse = st.column("nmse").to_pylist()
    assert all((n is None) == (e is None) for n, e in zip(nmse, expl, strict=True))


def test_decode_shard_adjacent_layer(shards, qwen_family, tmp_path):
    """`greedy_L{k}` decodes the vectors of layer k's column through the layer-K AV; a layer the
    shard does not hold is a clear error naming the column and the file, with nothing written."""
    from nlaprobe.errors import DataError
    from nlaprobe.io import vectors_from_column

    src = source(qwen_family / "av", "av")
    out = tmp_path / "L1.parquet"
    cond = generation.parse_condition(f"greedy_L{K - 1}")
    params = D.DecodeParams.from_json({"seed": 42, "max_new_tokens": 4})
    summary = D.decode_shard(src, shards["qwen"], out, cond, params)
    table = pq.read_table(out)
    assert summary["n_rows"] == table.num_rows == 16
    assert table_meta(table, DECODE_META_KEY)["condition"]["layer_column"] == C.layer_column(1)

    act = pq.read_table(shards["qwen"])
    av = load_av(src)
    rows = generation.decode_rows(
        backend(av, max_new_tokens=4),
        forward.prompt_token_embeds(av.model, av.prompt_ids),
        av.marker_pos,
        av.meta.injection_scale,
        vectors_from_column(act, C.layer_column(1)),
        act.column(C.COL_DOC_ID).to_pylist(),
        act.column(C.COL_POSITION).to_pylist(),
        cond,
        seed=42,
        batch_size=16,
        progress=False,
    )
    assert table.column("text").to_pylist() == [r["text"] for r in rows]

    missing = tmp_path / "L0.parquet"
    with pytest.raises(DataError) as err:
        D.decode_shard(
            src, shards["qwen"], missing, generation.parse_condition("greedy_L0"), params
        )
    assert C.layer_column(0) in str(err.value) and str(shards["qwen"]) in str(err.value)
    assert not missing.exists()


def test_score_shard_on_handmade_decodes(shards, qwen_family, tmp_path):
    from nlaprobe.io import vectors_from_column

    gold_table = pq.read_table(shards["qwen"])
    gold = vectors_from_column(gold_table, C.COL_VECTOR, width=64)
    doc_ids = gold_table.column(C.COL_DOC_ID).to_pylist()
    n = gold_table.num_rows
    expl = [EXPLANATIONS[i % len(EXPLANATIONS)] for i in range(n)]
    expl[1] = expl[5] = None  # tag failures
    errors = [None] * n
    errors[7] = "zero activation vector"
    expl[7] = None
    rows = [
        {
            "row": i,
            "doc_id": doc_ids[i],
            "position": 50 + i,
            "sample": 0,
            "seed": generation.sample_seed(42, doc_ids[i], 50 + i, 0),
            "text": None if errors[i] else f"<explanation>{expl[i]}</explanation>",
            "explanation": expl[i],
            "n_tokens": 0 if errors[i] else 5,
            "finish_reason": "error" if errors[i] else "stop",
            "error": errors[i],
            "leaks": 0,
        }
        for i in range(n)
    ]
    dec = tmp_path / "handmade.parquet"
    write_table(dec, D.decode_table(rows, {"condition": {"name": "greedy"}}))
    out = tmp_path / "scores.parquet"
    summary = score_shard(
        source(qwen_family / "ar", "ar"),
        str(dec),
        str(shards["qwen"]),
        str(out),
        ScoreParams.from_json({"batch_size": 4}),
        variant="full",
    )
    assert summary == {"n_rows": n, "n_scored": n - 3, "n_tag_failures": 2, "n_decode_errors": 1}

    st = pq.read_table(out).to_pylist()
    ar = load_ar(source(qwen_family / "ar", "ar"))
    template = ar.meta.ar_template
    checked = 0
    for i, r in enumerate(st):
        assert (r["row"], r["doc_id"], r["sample"]) == (i, doc_ids[i], 0)
        assert r["tag_failure"] == (i in (1, 5))
        assert r["decode_error"] == (i == 7)
        if expl[i] is None:
            assert r["nmse"] is None and r["cos"] is None and r["pred_norm"] is None
            continue
        if i < 6:  # an independent readout for a few rows
            p = manual_readout(qwen_family / "ar", template.format(explanation=expl[i])).astype(
                np.float64
            )
            g = gold[i].astype(np.float64)
            cos = p @ g / (np.linalg.norm(p) * np.linalg.norm(g))
            pn, gn = p / np.linalg.norm(p) * 8.0, g / np.linalg.norm(g) * 8.0
            assert r["pred_norm"] == pytest.approx(np.linalg.norm(p), rel=1e-4)
            assert r["cos"] == pytest.approx(cos, abs=1e-5)
            assert r["nmse"] == pytest.approx(np.mean((pn - gn) ** 2), abs=1e-4)
            checked += 1
        assert r["nmse"] == pytest.approx(2 * (1 - r["cos"]), abs=1e-9)
        assert -1 <= r["cos"] <= 1 and 0 <= r["nmse"] <= 4
    assert checked == 4


# ----------------------------------------------------------------------------- bad input


def test_score_rejects_misaligned_gold(shards, qwen_family, tmp_path, caplog):
    from nlaprobe.cli import main

    act = pq.read_table(shards["qwen"])
    wrong = act.set_column(
        act.column_names.index(C.COL_DOC_ID),
        C.COL_DOC_ID,
        pa.array([f"other:split:{i}" for i in range(act.num_rows)]),
    )
    bad_gold = tmp_path / "wrong-gold.parquet"
    write_table(bad_gold, wrong)
    rows = [
        dict(zip(DECODE_COLUMNS, (i, d, 0, 0, 0, "x", "x", 1, "stop", None, 0), strict=True))
        for i, d in enumerate(act.column(C.COL_DOC_ID).to_pylist())
    ]
    dec = tmp_path / "dec.parquet"
    write_table(dec, D.decode_table(rows, {}))
    outdir = tmp_path / "out"
    out = outdir / "score.parquet"
    code = main(
        argv("score", checkpoint=entry(qwen_family / "ar"), decodes=dec, gold=bad_gold, out=out)
    )
    assert code != 0
    assert str(bad_gold) in caplog.text and "other:split:0" in caplog.text
    assert not out.exists()
    assert not outdir.exists() or not any(outdir.iterdir())


def test_decode_rejects_unknown_condition(shards, qwen_family, tmp_path):
    out = tmp_path / "x.parquet"
    res = run_cli(
        "decode",
        checkpoint=entry(qwen_family / "av"),
        activations=shards["qwen"],
        cond="greedy_sideways",
        params={"seed": 42},
        out=out,
    )
    assert res.returncode == 2
    assert "greedy_sideways" in res.stderr and "sample_t1" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_decode_shard_records_bad_vectors_per_row(shards, qwen_family, tmp_path):
    """A zero or NaN activation row is an error recorded for that row (SPEC §4.6); the other
    rows of the shard are decoded as usual."""
    act = pq.read_table(shards["qwen"])
    vec = np.array(act.column(C.COL_VECTOR).to_pylist(), dtype=np.float32)
    vec[1] = 0.0
    vec[3, 5] = np.nan
    from nlaprobe.io import vectors_to_arrow

    idx = act.column_names.index(C.COL_VECTOR)
    bad = tmp_path / "bad.parquet"
    write_table(bad, act.set_column(idx, C.COL_VECTOR, vectors_to_arrow(vec)))
    out = tmp_path / "dec.parquet"
    summary = D.decode_shard(
        source(qwen_family / "av", "av"),
        bad,
        out,
        generation.parse_condition("greedy"),
        D.DecodeParams.from_json({"seed": 42, "max_new_tokens": 4}),
    )
    table = pq.read_table(out)
    errors = table.column("error").to_pylist()
    assert errors[1] == "zero activation vector"
    assert errors[3] == "non-finite activation vector"
    assert all(e is None for i, e in enumerate(errors) if i not in (1, 3))
    texts = table.column("text").to_pylist()
    assert texts[1] is None and texts[3] is None
    assert all(t is not None for i, t in enumerate(texts) if i not in (1, 3))
    assert summary["n_errors"] == 2 and summary["n_rows"] == act.num_rows
