"""Pure parts of the models layer (nlaprobe.models; SPEC §4.6-§4.8): explanation extraction, leak
counting, the banned-token set on the fixture tokenizers, conditions, per-sample seeds, the
shared request builder (generation), prompt embeddings (forward), the device resolver and the
engine-independent halves of the decode backends (backends)."""

from __future__ import annotations

import os
import re
import sys
import types
import unicodedata

import numpy as np
import pytest
import torch

from nlaprobe.constants import DOUBLE_QUOTES, SINGLE_QUOTES
from nlaprobe.models import backends, forward, generation

# SPEC §4.7 quote families, spelled by Unicode name so the test does not copy the module's string.
DQ_NAMES = (
    "QUOTATION MARK",
    "LEFT DOUBLE QUOTATION MARK",
    "RIGHT DOUBLE QUOTATION MARK",
    "DOUBLE LOW-9 QUOTATION MARK",
    "DOUBLE HIGH-REVERSED-9 QUOTATION MARK",
    "FULLWIDTH QUOTATION MARK",
    "LEFT-POINTING DOUBLE ANGLE QUOTATION MARK",
    "RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK",
)
SQ_NAMES = (
    "APOSTROPHE",
    "LEFT SINGLE QUOTATION MARK",
    "RIGHT SINGLE QUOTATION MARK",
    "SINGLE LOW-9 QUOTATION MARK",
    "SINGLE HIGH-REVERSED-9 QUOTATION MARK",
    "FULLWIDTH APOSTROPHE",
)
DQ = "".join(unicodedata.lookup(n) for n in DQ_NAMES)
SQ = "".join(unicodedata.lookup(n) for n in SQ_NAMES)


# ----------------------------------------------------------------------------- explanations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<explanation>A cat.</explanation>", "A cat."),
        ("preamble <explanation>  padded \t</explanation> tail", "padded"),
        ("<explanation>first</explanation> and <explanation>second</explanation>", "first"),
        ("<explanation>\nline one\nline two\n</explanation>", "line one\nline two"),
        ("<explanation></explanation>", ""),
        ("<explanation>   \n </explanation>", ""),
        # non-greedy: the first closing tag ends the match, inner opening tags are text
        (
            "<explanation>outer <explanation>inner</explanation> rest</explanation>",
            "outer <explanation>inner",
        ),
        ('<explanation>says "hi" <b>bold</b></explanation>', 'says "hi" <b>bold</b>'),
    ],
)
def test_extract_explanation(text, expected):
    assert generation.extract_explanation(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no tags at all",
        "<explanation> never closed",
        "only a closing tag </explanation>",
        "</explanation> reversed <explanation>",
        "<Explanation>wrong case</Explanation>",
        "<explanation >space in tag</explanation>",
    ],
)
def test_extract_explanation_tag_failure(text):
    assert generation.extract_explanation(text) is None


def test_count_leaks():
    text = "He said \u201chi\u201d and 'bye' \u00abok\u00bb \uff02"
    assert generation.count_leaks(text, DQ) == 5
    assert generation.count_leaks(text, SQ) == 2
    assert generation.count_leaks(text, DQ + SQ) == 7
    assert generation.count_leaks(text, "") == 0
    assert generation.count_leaks("plain text", DQ + SQ) == 0
    assert generation.count_leaks('""""', '"') == 4


# ----------------------------------------------------------------------------- quote families


def test_quote_families_match_spec():
    assert DOUBLE_QUOTES == DQ
    assert SINGLE_QUOTES == SQ
    assert len(set(DQ)) == 8 and len(set(SQ)) == 6
    assert generation.BAN_SETS["ban_dq"] == DQ
    assert set(generation.BAN_SETS["ban_dq_sq"]) == set(DQ + SQ)
    assert len(generation.BAN_SETS["ban_dq_sq"]) == 14


# ----------------------------------------------------------------------------- banned token ids


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE vocabularies)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(
        range(ord("\u00ae"), ord("\u00ff") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _piece_text(tokenizer, style: str, token_id: int) -> str:
    """What one token decodes to, computed from the vocabulary string (not `tokenizer.decode`)."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if token_id in tokenizer.all_special_ids:
        return piece
    if style == "qwen":
        inv = {c: b for b, c in _bytes_to_unicode().items()}
        if all(c in inv for c in piece):
            return bytes(inv[c] for c in piece).decode("utf-8", errors="replace")
        return piece  # added tokens are stored as plain text
    m = re.fullmatch(r"<0x([0-9A-F]{2})>", piece)
    if m:
        return bytes([int(m.group(1), 16)]).decode("utf-8", errors="replace")
    return piece.replace("\u2581", " ")


@pytest.fixture(scope="module")
def tokenizers(qwen_family, gemma_family):
    from transformers import AutoTokenizer

    return {
        "qwen": AutoTokenizer.from_pretrained(qwen_family / "av"),
        "gemma": AutoTokenizer.from_pretrained(gemma_family / "av"),
    }


@pytest.mark.parametrize("style", ["qwen", "gemma"])
@pytest.mark.parametrize("chars", [DQ, SQ, DQ + SQ], ids=["dq", "sq", "dq_sq"])
def test_banned_token_ids_brute_force(tokenizers, style, chars):
    tok = tokenizers[style]
    got = generation.banned_token_ids(tok, chars)
    expected = [i for i in range(len(tok)) if set(_piece_text(tok, style, i)) & set(chars)]
    assert got == expected
    assert got, "the fixture vocabularies contain quote tokens"
    assert got == sorted(set(got))


@pytest.mark.parametrize("style", ["qwen", "gemma"])
def test_banned_token_ids_known_tokens(tokenizers, style):
    tok = tokenizers[style]
    banned = set(generation.banned_token_ids(tok, DQ + SQ))
    n_single = 0
    for ch in DQ + SQ:
        enc = tok(ch, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            n_single += 1
            assert enc[0] in banned, (ch, enc)
    assert n_single >= 2  # at least the ASCII quote and apostrophe
    for word in (" the", "the", " of", "."):
        enc = tok(word, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            assert enc[0] not in banned, word
    the = tok(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1 and the[0] not in banned
    assert not banned & set(tok.all_special_ids)
    # a banned set of one family does not ban the other
    only_sq = set(generation.banned_token_ids(tok, SQ))
    apostrophe = tok("'", add_special_tokens=False)["input_ids"]
    quote = tok('"', add_special_tokens=False)["input_ids"]
    assert apostrophe[0] in only_sq and quote[0] not in only_sq


def test_banned_token_ids_empty_set(tokenizers):
    assert generation.banned_token_ids(tokenizers["qwen"], "") == []


# ----------------------------------------------------------------------------- conditions


def test_parse_condition_all_names():
    g = generation.parse_condition("greedy")
    assert (g.temperature, g.n_samples, g.banned_chars, g.layer, g.greedy) == (
        0.0,
        1,
        "",
        None,
        True,
    )

    b = generation.parse_condition("ban_dq")
    assert (b.temperature, b.n_samples, b.layer, b.greedy) == (0.0, 1, None, True)
    assert b.banned_chars == DQ

    b2 = generation.parse_condition("ban_dq_sq")
    assert set(b2.banned_chars) == set(DQ + SQ) and b2.greedy and b2.n_samples == 1

    s = generation.parse_condition("sample_t1", n_samples=10, temperature=1.0)
    assert (s.temperature, s.n_samples, s.banned_chars, s.layer, s.greedy) == (
        1.0,
        10,
        "",
        None,
        False,
    )
    s3 = generation.parse_condition("sample_t1", n_samples=3, temperature=0.7)
    assert (s3.temperature, s3.n_samples) == (0.7, 3)

    for k in (0, 3, 41):
        layer = generation.parse_condition(f"greedy_L{k}")
        assert (layer.layer, layer.temperature, layer.n_samples, layer.banned_chars) == (
            k,
            0.0,
            1,
            "",
        )
        assert layer.name == f"greedy_L{k}"

    # n_samples only matters for sampling
    assert generation.parse_condition("greedy", n_samples=7).n_samples == 1


@pytest.mark.parametrize(
    "name",
    ["nope", "", "GREEDY", "greedy_L", "greedy_Lx", "greedy_L-1", "sample_t2", "ban_sq", " greedy"],
)
def test_parse_condition_unknown(name):
    with pytest.raises(ValueError) as err:
        generation.parse_condition(name)
    msg = str(err.value)
    assert repr(name) in msg
    for valid in ("greedy", "ban_dq", "ban_dq_sq", "sample_t1", "greedy_L"):
        assert valid in msg


@pytest.mark.parametrize(("n", "t"), [(0, 1.0), (3, 0.0), (2, -1.0)])
def test_parse_condition_bad_sampling(n, t):
    with pytest.raises(ValueError, match="sample_t1"):
        generation.parse_condition("sample_t1", n_samples=n, temperature=t)


# ----------------------------------------------------------------------------- seeds


def test_sample_seed():
    s = generation.sample_seed(42, "builtin:pydoc:topics:3", 57, 0)
    assert s == generation.sample_seed(42, "builtin:pydoc:topics:3", 57, 0)
    assert isinstance(s, int)
    seeds = {
        generation.sample_seed(seed, f"c:s:{doc}", pos, k)
        for seed in (0, 42)
        for doc in range(4)
        for pos in (50, 51, 90)
        for k in range(10)
    }
    assert len(seeds) == 2 * 4 * 3 * 10
    assert all(0 <= x < 2**63 for x in seeds)
    # each key changes the seed on its own
    base = generation.sample_seed(42, "a", 50, 0)
    assert (
        len({base, generation.sample_seed(43, "a", 50, 0), generation.sample_seed(42, "b", 50, 0)})
        == 3
    )
    assert (
        len({base, generation.sample_seed(42, "a", 51, 0), generation.sample_seed(42, "a", 50, 1)})
        == 3
    )
    # usable as a torch seed
    torch.Generator().manual_seed(max(seeds))


def test_build_requests():
    cond = generation.parse_condition("sample_t1", n_samples=3, temperature=1.0)
    reqs = generation.build_requests(["d:0", "d:1"], [50, 61], cond, seed=9)
    assert [(r.row, r.sample) for r in reqs] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert all(r.seed == generation.sample_seed(9, r.doc_id, r.position, r.sample) for r in reqs)
    assert [r.position for r in reqs] == [50, 50, 50, 61, 61, 61]
    assert (
        len(
            generation.build_requests(
                ["d:0", "d:1"], [50, 61], generation.parse_condition("greedy"), 9
            )
        )
        == 2
    )


# ----------------------------------------------------------------------------- prompt embeddings


def test_build_prompt_embeds():
    rng = np.random.default_rng(3)
    t, d, marker, scale = 7, 16, 3, 150.0
    base = torch.from_numpy(rng.standard_normal((t, d)).astype(np.float32))
    base_copy = base.clone()
    vecs = rng.standard_normal((5, d)).astype(np.float32) * np.array(
        [[1], [1e-3], [1e4], [1], [1]], np.float32
    )
    vecs[3] = 0.0
    vecs[4, 2] = np.nan
    out = forward.build_prompt_embeds(base, marker, vecs, scale)

    assert out.embeds.shape == (5, t, d) and out.embeds.dtype == torch.float32
    assert out.ok.tolist() == [True, True, True, False, False]
    assert out.errors[:3] == [None, None, None]
    assert "zero" in out.errors[3]
    assert "non-finite" in out.errors[4]
    assert torch.equal(base, base_copy), "the base embeddings are not modified"
    for i in range(3):
        row = out.embeds[i, marker].double().numpy()
        v = vecs[i].astype(np.float64)
        assert np.linalg.norm(row) == pytest.approx(scale, rel=1e-6)
        assert row @ v / (np.linalg.norm(row) * np.linalg.norm(v)) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(row, v * scale / np.linalg.norm(v), rtol=1e-5, atol=1e-4)
    for i in range(5):
        others = [j for j in range(t) if j != marker]
        assert torch.equal(out.embeds[i, others], base[others])


def test_build_prompt_embeds_inf_row():
    base = torch.zeros(4, 3)
    out = forward.build_prompt_embeds(
        base, 1, np.array([[np.inf, 0, 0], [0, 2, 0]], np.float32), 5.0
    )
    assert out.ok.tolist() == [False, True]
    assert "non-finite" in out.errors[0]
    assert out.embeds[1, 1].tolist() == [0.0, 5.0, 0.0]
    assert torch.isfinite(out.embeds).all()


@pytest.mark.parametrize("shape", [(2, 15), (2, 17), (16,), (1, 2, 16)])
def test_build_prompt_embeds_wrong_width(shape):
    with pytest.raises(ValueError, match="16"):
        forward.build_prompt_embeds(torch.zeros(5, 16), 2, np.ones(shape, np.float32), 1.0)


# ----------------------------------------------------------------------------- backends


def test_get_backend():
    assert backends.get_backend("hf") is backends.HFBackend
    assert backends.get_backend("vllm") is backends.VLLMBackend
    with pytest.raises(ValueError) as err:
        backends.get_backend("nope")
    msg = str(err.value)
    assert "'nope'" in msg and "'hf'" in msg and "'vllm'" in msg


def _request(sample: int = 0) -> generation.Request:
    return generation.Request(
        0, "c:s:1", 55, sample, generation.sample_seed(42, "c:s:1", 55, sample)
    )


def test_vllm_sampling_kwargs_greedy():
    settings = backends.DecodeSettings(max_new_tokens=37, stop_token_ids=(5, 9))
    kw = backends.vllm_sampling_kwargs(generation.parse_condition("greedy"), _request(), settings)
    assert kw["temperature"] == 0.0 and kw["n"] == 1
    assert kw["max_tokens"] == 37
    assert "logit_bias" not in kw
    assert (kw["repetition_penalty"], kw["presence_penalty"], kw["frequency_penalty"]) == (
        1.0,
        0.0,
        0.0,
    )
    assert kw["stop_token_ids"] == [5, 9]
    assert (kw["top_p"], kw["top_k"], kw["min_p"]) == (1.0, 0, 0.0)
    assert kw["detokenize"] is False  # ids only: finish_generation detokenises for every backend
    assert kw["ignore_eos"] is True  # the stop ids above are the only stops, as in HF generate


def test_vllm_sampling_kwargs_sampling():
    settings = backends.DecodeSettings(max_new_tokens=200)
    cond = generation.parse_condition("sample_t1", n_samples=3, temperature=1.0)
    kws = [backends.vllm_sampling_kwargs(cond, _request(k), settings) for k in range(3)]
    for k, kw in enumerate(kws):
        assert kw["temperature"] == 1.0 and kw["n"] == 1
        assert kw["seed"] == generation.sample_seed(42, "c:s:1", 55, k)
        assert kw["max_tokens"] == 200
        assert (kw["repetition_penalty"], kw["presence_penalty"], kw["frequency_penalty"]) == (
            1.0,
            0.0,
            0.0,
        )
        assert "logit_bias" not in kw
    assert len({kw["seed"] for kw in kws}) == 3


def test_vllm_sampling_kwargs_bans():
    settings = backends.DecodeSettings(max_new_tokens=5, banned_ids=(3, 17, 250))
    kw = backends.vllm_sampling_kwargs(
        generation.parse_condition("ban_dq_sq"), _request(), settings
    )
    assert kw["logit_bias"] == {3: -1e9, 17: -1e9, 250: -1e9}
    assert all(type(k) is int for k in kw["logit_bias"])
    assert kw["temperature"] == 0.0 and kw["n"] == 1 and kw["max_tokens"] == 5


def test_vllm_prompts():
    embeds = torch.randn(3, 6, 8)
    prompts = backends.vllm_prompts(embeds)
    assert len(prompts) == 3
    for i, p in enumerate(prompts):
        assert set(p) == {"prompt_embeds"}
        assert tuple(p["prompt_embeds"].shape) == (6, 8)
        assert torch.equal(p["prompt_embeds"], embeds[i])
        # its own storage: a request does not carry the whole batch
        assert p["prompt_embeds"].untyped_storage().nbytes() == 6 * 8 * 4


class _Tok:
    """A stand-in tokenizer: id i decodes to `<i>`; ids ≥ 100 are special tokens."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(f"<{i}>" for i in ids if not (skip_special_tokens and i >= 100))


def test_finish_generation():
    tok = _Tok()
    g = backends.finish_generation(tok, [5, 6, 100, 7], stop_token_ids=(100,))
    assert (g.text, g.n_tokens, g.finish_reason) == ("<5><6>", 3, "stop")
    g = backends.finish_generation(tok, [5, 6, 7], stop_token_ids=(100,))
    assert (g.text, g.n_tokens, g.finish_reason) == ("<5><6><7>", 3, "length")
    g = backends.finish_generation(tok, (101, 5), stop_token_ids=(100, 101))
    assert (g.text, g.n_tokens, g.finish_reason) == ("", 1, "stop")
    assert backends.finish_generation(tok, [], stop_token_ids=()).finish_reason == "length"


def test_vllm_engine_kwargs_cpu_and_gpu():
    kw, env = backends.vllm_engine_kwargs("/av", "bfloat16", max_model_len=70, device="cpu", env={})
    assert kw == {
        "model": "/av",
        "enable_prompt_embeds": True,
        "dtype": "bfloat16",
        "max_model_len": 70,
        "generation_config": "vllm",
        "enforce_eager": True,
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": backends.VLLM_CPU_BATCHED_TOKENS,
        "kv_cache_memory_bytes": backends.VLLM_CPU_KV_CACHE_BYTES,
    }
    assert env == {}
    # a context longer than the step budget is still prefilled whole
    kw, _ = backends.vllm_engine_kwargs("/av", "float32", max_model_len=9000, device="cpu", env={})
    assert kw["max_num_batched_tokens"] == 9000
    # VLLM_CPU_KVCACHE_SPACE (GiB) left to vLLM when the user sets it
    kw, _ = backends.vllm_engine_kwargs(
        "/av", "float32", max_model_len=70, device="cpu", env={"VLLM_CPU_KVCACHE_SPACE": "4"}
    )
    assert "kv_cache_memory_bytes" not in kw
    kw, env = backends.vllm_engine_kwargs(
        "/av", "float32", max_model_len=70, device="cuda", env={}, gpu_memory_utilization=0.5
    )
    assert not {"enforce_eager", "kv_cache_memory_bytes", "enable_chunked_prefill"} & set(kw)
    assert kw["gpu_memory_utilization"] == 0.5 and env == {}


def test_vllm_engine_kwargs_many_bans_take_the_v1_runner():
    n = backends.VLLM_V2_MAX_LOGIT_BIAS

    def env_of(device, n_banned, env):
        return backends.vllm_engine_kwargs(
            "/a", "float32", max_model_len=8, device=device, n_banned=n_banned, env=env
        )[1]

    assert env_of("cuda", n, {}) == {}
    assert env_of("cuda", n + 1, {}) == {"VLLM_USE_V2_MODEL_RUNNER": "0"}
    assert env_of("cuda", n + 1, {"VLLM_USE_V2_MODEL_RUNNER": "0"}) == {}
    assert env_of("cpu", n + 1, {}) == {}  # the CPU build runs the V1 runner anyway


def _av(folder, dtype: str, n_prompt: int = 55):
    """A stand-in LoadedAV: a checkpoint folder with (empty) safetensors weights, the stand-in
    tokenizer, `n_prompt` prompt ids and the checkpoint's dtype."""
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"")
    return types.SimpleNamespace(
        directory=folder,
        tokenizer=_Tok(),
        prompt_ids=list(range(n_prompt)),
        source=types.SimpleNamespace(dtype=getattr(torch, dtype)),
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vllm_backend_with_a_stub_engine(monkeypatch, tmp_path, dtype):
    """VLLMBackend's own logic (engine arguments, one engine per checkpoint and arguments,
    embeddings-only prompts in the engine's dtype, per-request sampling parameters, ids cut and
    detokenised by finish_generation) against a stand-in `vllm` module."""
    calls: dict = {"init": []}

    class FakeLLM:
        def __init__(self, **kwargs):
            calls["init"].append(kwargs)

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls["prompts"], calls["params"] = prompts, sampling_params
            return [
                types.SimpleNamespace(
                    outputs=[
                        types.SimpleNamespace(
                            text="",
                            token_ids=[5, 2, 6] if i == 0 else list(range(3, 3 + i + 2)),
                            finish_reason="stop" if i == 0 else "length",
                        )
                    ]
                )
                for i in range(len(prompts))
            ]

    class FakeSamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(backends, "_ENGINES", {})
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)

    settings = backends.DecodeSettings(max_new_tokens=9, stop_token_ids=(2,), banned_ids=(4, 7))
    av = _av(tmp_path / "av", dtype)
    # the context: the 55 prompt ids and the 9 new tokens
    engine = backends.get_backend("vllm")(av, settings)
    assert calls["init"] == [
        {
            "model": str(tmp_path / "av"),
            "enable_prompt_embeds": True,
            "dtype": dtype,
            "max_model_len": 64,
            "generation_config": "vllm",
            "enforce_eager": True,
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": backends.VLLM_CPU_BATCHED_TOKENS,
            "kv_cache_memory_bytes": backends.VLLM_CPU_KV_CACHE_BYTES,
        }
    ]
    # another backend on the same checkpoint (another condition) reuses the engine
    other = backends.get_backend("vllm")(av, backends.DecodeSettings(max_new_tokens=9))
    assert other.llm is engine.llm and len(calls["init"]) == 1
    cond = generation.parse_condition("sample_t1", n_samples=2, temperature=1.0)
    requests = generation.build_requests(["c:s:0"], [50], cond, seed=3)
    embeds = torch.randn(2, 5, 8)
    gens = engine.generate(embeds, requests, cond)

    assert len(calls["prompts"]) == 2
    for i, p in enumerate(calls["prompts"]):
        assert set(p) == {"prompt_embeds"}
        assert p["prompt_embeds"].dtype == getattr(torch, dtype)
        assert p["prompt_embeds"].shape == (5, 8) and p["prompt_embeds"].is_contiguous()
        torch.testing.assert_close(p["prompt_embeds"].float(), embeds[i], rtol=1e-2, atol=1e-2)
    assert [sp.kwargs for sp in calls["params"]] == [
        backends.vllm_sampling_kwargs(cond, r, settings) for r in requests
    ]
    assert [(g.text, g.n_tokens, g.finish_reason) for g in gens] == [
        ("<5><2>", 2, "stop"),  # the stand-in tokenizer's ids < 100 are not special
        ("<3><4><5>", 3, "length"),
    ]
    assert engine.schedules_itself


def test_vllm_engine_cache_follows_the_runner(monkeypatch, tmp_path):
    """On a GPU, an AV decoded with more bans than Model Runner V2 takes gets an engine started
    with the V1 runner; engines built after that (the variable stays set) are V1 engines too."""
    inits = []

    class FakeLLM:
        def __init__(self, **kwargs):
            inits.append(os.environ.get("VLLM_USE_V2_MODEL_RUNNER"))

    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(backends, "_ENGINES", {})
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    many = tuple(range(backends.VLLM_V2_MAX_LOGIT_BIAS + 1))

    av = _av(tmp_path / "av", "bfloat16")

    def backend(banned):
        settings = backends.DecodeSettings(max_new_tokens=8, banned_ids=banned)
        return backends.VLLMBackend(av, settings, device="cuda")

    a = backend(())
    b = backend(many)
    c = backend(())
    assert inits == [None, "0"]
    assert a.llm is not b.llm and c.llm is b.llm


def test_the_hf_backend_refuses_tensor_parallel():
    """A tensor-parallel HF decode is refused by the backend itself, whoever builds it (the
    decode stage refuses it earlier, with its parameters: tests/unit/test_params.py)."""
    from nlaprobe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tensor_parallel_size 2 needs decode.backend vllm"):
        backends.get_backend("hf")(
            types.SimpleNamespace(model=None, tokenizer=None, prompt_ids=[]),
            backends.DecodeSettings(max_new_tokens=1),
            tensor_parallel_size=2,
        )


def test_vllm_engine_gets_the_tensor_parallel_size():
    kw, _env = backends.vllm_engine_kwargs(
        "/m", "bfloat16", max_model_len=300, device="cuda", tensor_parallel_size=4
    )
    assert kw["tensor_parallel_size"] == 4 and kw["model"] == "/m"


def test_one_device_resolver():
    from nlaprobe.errors import ConfigError
    from nlaprobe.models.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # a user-facing error (the CLI's one line) that is also a ValueError (nlaprobe.ridge's contract)
    for bad in ("tpu", "mps"):
        with pytest.raises(ConfigError, match=rf"unknown device '{bad}'; valid: auto, cpu, cuda"):
            resolve_device(bad)
        with pytest.raises(ValueError):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device 'cuda:1' requested but no CUDA GPU"):
            resolve_device("cuda:1")


def test_every_backend_takes_one_signature():
    """The decode stage builds any registered backend as `cls(av, settings, device=...,
    tensor_parallel_size=...)`; each says whether it needs the AV's live model and gives the
    base prompt embeddings itself."""
    import inspect

    for name, cls in backends.BACKENDS.items():
        params = inspect.signature(cls.__init__).parameters
        assert list(params) == ["self", "av", "settings", "device", "tensor_parallel_size"], name
        assert isinstance(cls.needs_model, bool) and callable(cls.prompt_embeds), name
