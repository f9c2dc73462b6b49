"""The tiny families of `nlaprobe.fixtures` reproduce the on-disk layout and the tokenizer
behaviours of the released checkpoints (SPEC §4.2, §4.5, §4.6, §4.9)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nlaprobe import constants as C
from nlaprobe.io import read_yaml

K = 2  # conftest builds every family with layer=2 of 4 blocks
N_LAYERS = 4
D = 64
QWEN_SYSTEM_TURN = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n"
)
AV_SIDECAR_FIELDS = {
    "top": ("kind", "role", "d_model"),
    "extraction": ("injection_scale", "mse_scale"),
    "tokens": (
        "injection_char",
        "injection_token_id",
        "injection_left_neighbor_id",
        "injection_right_neighbor_id",
        "critic_suffix_ids",
    ),
}


@pytest.fixture(params=["qwen", "gemma", "legacy"])
def family(request) -> Path:
    return request.getfixturevalue(f"{request.param}_family")


@pytest.fixture(params=["qwen", "gemma"])
def current_family(request) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(f"{request.param}_family")


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _chat_ids(tok, content: str) -> list[int]:
    out = tok.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
    )
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return list(ids)


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("part", ["base", "av", "ar"])
def test_every_part_has_config_weights_and_tokenizer(family, part):
    d = family / part
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (d / name).is_file(), f"{d} lacks {name}"
    tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert (d / "chat_template.jinja").is_file() or tok_cfg.get("chat_template")
    assert not list(d.glob("*.bin")) and not list(d.glob("*.pt")), "safetensors only"
    has_sidecar = (d / C.SIDECAR_NAME).is_file()
    has_head = (d / C.VALUE_HEAD_FILE).is_file()
    assert has_sidecar == (part in ("av", "ar"))
    assert has_head == (part == "ar")


def test_ar_config_keeps_k_plus_1_layers(family):
    cfg = _config(family / "ar")
    assert cfg["num_hidden_layers"] == K + 1
    if cfg.get("layer_types") is not None:
        assert len(cfg["layer_types"]) == K + 1
    assert _config(family / "av")["num_hidden_layers"] == N_LAYERS


def test_ar_weights_have_blocks_0_to_k_and_no_final_norm_or_lm_head(family):
    keys = _keys(family / "ar" / "model.safetensors")
    assert not [k for k in keys if k.startswith("lm_head")]
    assert not [k for k in keys if k.startswith("model.norm.")]
    blocks = {int(k.split(".")[2]) for k in keys if k.startswith("model.layers.")}
    assert blocks == set(range(K + 1))
    assert "model.embed_tokens.weight" in keys
    # the AV keeps every block and its final norm
    av_keys = _keys(family / "av" / "model.safetensors")
    assert {int(k.split(".")[2]) for k in av_keys if k.startswith("model.layers.")} == set(
        range(N_LAYERS)
    )
    assert "model.norm.weight" in av_keys


def test_value_head_is_one_bf16_square_weight(family):
    with safe_open(str(family / "ar" / C.VALUE_HEAD_FILE), "pt") as f:
        assert list(f.keys()) == ["weight"]
        w = f.get_tensor("weight")
    assert w.dtype == torch.bfloat16
    assert tuple(w.shape) == (D, D)
    assert torch.isfinite(w.float()).all() and w.float().abs().sum() > 0


def test_av_and_ar_start_from_the_base_text_weights(family):
    def tensors(path: Path) -> dict[str, torch.Tensor]:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}

    base = tensors(family / "base" / "model.safetensors")
    embed = next(v for k, v in base.items() if k.endswith("model.embed_tokens.weight"))
    up2 = next(v for k, v in base.items() if k.endswith("model.layers.2.mlp.up_proj.weight"))
    for part in ("av", "ar"):
        t = tensors(family / part / "model.safetensors")
        assert torch.equal(t["model.embed_tokens.weight"], embed), part
        assert torch.equal(t["model.layers.2.mlp.up_proj.weight"], up2), part


def test_gemma_model_types(gemma_family, legacy_family, qwen_family):
    base = _config(gemma_family / "base")
    assert base["model_type"] == "gemma3"
    assert base["text_config"]["model_type"] == "gemma3_text"
    assert base["text_config"]["hidden_size"] == D
    assert "vision_config" in base
    for fam in (gemma_family, legacy_family):
        for part in ("av", "ar"):
            cfg = _config(fam / part)
            assert cfg["model_type"] == "gemma3_text" and "text_config" not in cfg
    assert _config(legacy_family / "base")["model_type"] == "gemma3_text"
    for part in ("base", "av", "ar"):
        assert _config(qwen_family / part)["model_type"] == "qwen2"


# ----------------------------------------------------------------------------- tokenizers

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.mark.parametrize("name", ["gemma_family", "legacy_family"])
def test_gemma_tokenizer_adds_bos_once(request, name):
    from tokenizers import Tokenizer

    path = request.getfixturevalue(name) / "av"
    tok = _tokenizer(path)
    assert tok.bos_token == "<bos>"
    bos = tok.bos_token_id
    plain = tok(TEXT, add_special_tokens=False)["input_ids"]
    with_special = tok(TEXT, add_special_tokens=True)["input_ids"]
    assert bos not in plain
    assert with_special == [bos, *plain]
    # the BOS comes from the post-processor of tokenizer.json itself (what other engines read)
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    assert raw.encode(TEXT, add_special_tokens=True).ids == [bos, *plain]
    assert raw.encode(TEXT, add_special_tokens=False).ids == plain
    # the chat template emits bos_token itself: exactly one BOS, at index 0
    ids = _chat_ids(tok, TEXT)
    assert ids[0] == bos
    assert ids.count(bos) == 1
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": TEXT}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith("<bos><start_of_turn>user\n")
    assert rendered.endswith("<end_of_turn>\n<start_of_turn>model\n")
    # re-tokenizing the rendered string with special tokens is the double-BOS mistake (§4.6)
    assert tok(rendered, add_special_tokens=True)["input_ids"][:2] == [bos, bos]


def test_qwen_tokenizer_has_no_bos_and_a_default_system_turn(qwen_family):
    tok = _tokenizer(qwen_family / "av")
    assert tok.bos_token is None and tok.bos_token_id is None
    assert (
        tok(TEXT, add_special_tokens=True)["input_ids"]
        == tok(TEXT, add_special_tokens=False)["input_ids"]
    )
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": TEXT}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        QWEN_SYSTEM_TURN + f"<|im_start|>user\n{TEXT}<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = _chat_ids(tok, TEXT)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert ids == tok(rendered, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("name", "codepoint"),
    [("qwen_family", 0x320E), ("gemma_family", 0x321C), ("legacy_family", 0x321C)],
)
def test_marker_is_one_ordinary_token_once_in_the_av_prompt(request, name, codepoint):
    path = request.getfixturevalue(name) / "av"
    tok = _tokenizer(path)
    meta = read_yaml(path / C.SIDECAR_NAME)
    tokens = meta["tokens"]
    marker = tokens["injection_char"]
    assert len(marker) == 1 and ord(marker) == codepoint
    assert 0x3200 <= ord(marker) <= 0x33FF
    marker_id = tokens["injection_token_id"]
    assert tok(marker, add_special_tokens=False)["input_ids"] == [marker_id]
    assert marker_id != tok.unk_token_id
    assert marker_id not in tok.all_special_ids
    assert tok.convert_ids_to_tokens(marker_id) != tok.unk_token
    templates = meta["prompt_templates"]
    template = templates.get("av", templates.get("actor"))
    ids = _chat_ids(tok, template.format(injection_char=marker))
    assert ids.count(marker_id) == 1
    pos = ids.index(marker_id)
    assert 0 < pos < len(ids) - 1
    assert ids[pos - 1] == tokens["injection_left_neighbor_id"]
    assert ids[pos + 1] == tokens["injection_right_neighbor_id"]
    # the same marker id in the AR sidecar and tokenizer
    ar_meta = read_yaml(path.parent / "ar" / C.SIDECAR_NAME)
    assert ar_meta["tokens"]["injection_token_id"] == marker_id


# ----------------------------------------------------------------------------- sidecars


def test_current_sidecars_have_every_field(current_family):
    _style, fam = current_family
    for part in ("av", "ar"):
        meta = read_yaml(fam / part / C.SIDECAR_NAME)
        assert meta["kind"] == C.KIND_MODEL
        assert meta["role"] == part
        assert meta["d_model"] == D == _config(fam / part)["hidden_size"]
        assert meta["extraction"]["mse_scale"] == pytest.approx(math.sqrt(D))
        for key in AV_SIDECAR_FIELDS["tokens"]:
            assert key in meta["tokens"], (part, key)
        assert "{injection_char}" in meta["prompt_templates"]["av"]
        assert "{explanation}" in meta["prompt_templates"]["ar"]
        suffix = meta["prompt_templates"]["ar"].split("{explanation}", 1)[1]
        tok = _tokenizer(fam / part)
        assert (
            meta["tokens"]["critic_suffix_ids"]
            == tok(suffix, add_special_tokens=False)["input_ids"]
        )
    av = read_yaml(fam / "av" / C.SIDECAR_NAME)
    scale = av["extraction"]["injection_scale"]
    assert isinstance(scale, float) and math.isfinite(scale) and scale > 0
    ar = read_yaml(fam / "ar" / C.SIDECAR_NAME)
    assert ar["critic"]["extraction_layer_index"] == K
    assert "injection_scale" not in ar["extraction"]


def test_legacy_sidecars_use_the_older_keys(legacy_family):
    av = read_yaml(legacy_family / "av" / C.SIDECAR_NAME)
    ar = read_yaml(legacy_family / "ar" / C.SIDECAR_NAME)
    assert av["role"] == "actor" and ar["role"] == "critic"
    for meta in (av, ar):
        assert set(meta["prompt_templates"]) == {"actor", "critic"}
        assert "{injection_char}" in meta["prompt_templates"]["actor"]
        assert "{explanation}" in meta["prompt_templates"]["critic"]
        assert meta["extraction"]["mse_scale"] == "sqrt_d_model"
    assert ar["critic"] == {"num_hidden_layers": K + 1}
    assert ar["critic"]["num_hidden_layers"] == _config(legacy_family / "ar")["num_hidden_layers"]
    assert isinstance(av["extraction"]["injection_scale"], float)


# ----------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize(
    ("name", "part", "factor"),
    [
        ("qwen_family", "base", 1.0),
        ("qwen_family", "av", 1.0),
        ("gemma_family", "base", math.sqrt(D)),
        ("gemma_family", "av", math.sqrt(D)),
        ("legacy_family", "base", math.sqrt(D)),
    ],
)
def test_embedding_module_scale_matches_embed_scale(request, name, part, factor):
    from transformers import AutoModelForCausalLM

    from nlaprobe.models.architecture import embed_scale

    path = request.getfixturevalue(name) / part
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert embed_scale(model.config) == pytest.approx(factor)
    ids = torch.tensor([[1, 5, 17, 100, 200]])
    emb = model.get_input_embeddings()
    with torch.no_grad():
        out = emb(ids)
    raw = emb.weight[ids]
    torch.testing.assert_close(out, raw * factor)
    if factor != 1.0:
        assert not torch.allclose(out, raw)
