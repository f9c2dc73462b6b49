"""`parse_sidecar` on hand-written dicts of both key generations (SPEC §4.5), and the architecture
helpers on in-memory configs and module nestings (no weights, no files)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from nlaprobe.checkpoints import get_text_config, parse_sidecar
from nlaprobe.errors import CheckpointError, SidecarError
from nlaprobe.models.architecture import decoder_blocks, decoder_stack, embed_scale, is_gemma

WHERE = "ckpt/nla_meta.yaml"
AV_T = "Explain <c>{injection_char}</c> please."
AR_T = "Explanation:\n{explanation} Reconstruct."


def current_av() -> dict:
    return {
        "kind": "nla_model",
        "schema_version": 1,
        "role": "av",
        "d_model": 3584,
        "base_model": "Qwen/Qwen2.5-7B-Instruct",
        "extraction": {"layer_index": 20, "injection_scale": 150.0, "mse_scale": 59.866},
        "tokens": {
            "injection_char": "\u320e",
            "injection_token_id": 149705,
            "injection_left_neighbor_id": 29,
            "injection_right_neighbor_id": 522,
            "critic_suffix_ids": [1, 2, 3],
        },
        "prompt_templates": {"av": AV_T, "ar": AR_T},
    }


def current_ar() -> dict:
    meta = current_av()
    meta["role"] = "ar"
    del meta["extraction"]["injection_scale"]
    del meta["extraction"]["layer_index"]
    meta["critic"] = {"extraction_layer_index": 20}
    return meta


def legacy(meta: dict) -> dict:
    """The same sidecar in the older key generation."""
    old = copy.deepcopy(meta)
    old["role"] = {"av": "actor", "ar": "critic"}[meta["role"]]
    old["prompt_templates"] = {
        "actor": meta["prompt_templates"]["av"],
        "critic": meta["prompt_templates"]["ar"],
    }
    if "critic" in meta:
        old["critic"] = {"num_hidden_layers": meta["critic"]["extraction_layer_index"] + 1}
    return old


def _fields(nla) -> dict:
    return {k: v for k, v in vars(nla).items() if k != "raw"}


# ----------------------------------------------------------------------------- happy paths


def test_current_av_fields():
    nla = parse_sidecar(current_av(), WHERE)
    assert nla.path == WHERE
    assert nla.role == "av"
    assert nla.d_model == 3584
    assert nla.injection_scale == 150.0
    assert nla.mse_scale == 59.866
    assert nla.injection_char == "\u320e"
    assert nla.injection_token_id == 149705
    assert (nla.left_neighbor_id, nla.right_neighbor_id) == (29, 522)
    assert nla.critic_suffix_ids == (1, 2, 3)
    assert nla.av_template == AV_T and nla.ar_template == AR_T
    assert nla.layer == 20


def test_current_ar_fields():
    nla = parse_sidecar(current_ar(), WHERE)
    assert nla.role == "ar"
    assert nla.layer == 20
    assert nla.injection_scale is None
    assert nla.ar_template == AR_T


@pytest.mark.parametrize("make", [current_av, current_ar])
def test_both_key_generations_give_the_same_meta(make):
    new = parse_sidecar(make(), WHERE)
    old = parse_sidecar(legacy(make()), WHERE)
    assert _fields(old) == _fields(new)
    assert old == new  # dataclass equality ignores `raw`


def test_legacy_num_hidden_layers_is_k_plus_1():
    meta = current_ar()
    meta["critic"] = {"num_hidden_layers": 42}
    assert parse_sidecar(meta, WHERE).layer == 41


def test_top_level_extraction_layer_index():
    meta = current_ar()
    del meta["critic"]
    meta["extraction_layer_index"] = 7
    assert parse_sidecar(meta, WHERE).layer == 7


def test_sqrt_d_model_sentinel_for_both_scales():
    meta = current_av()
    meta["d_model"] = 3840
    meta["extraction"]["injection_scale"] = "sqrt_d_model"
    meta["extraction"]["mse_scale"] = "sqrt_d_model"
    nla = parse_sidecar(meta, WHERE)
    assert nla.injection_scale == pytest.approx(61.967733539318672)
    assert nla.mse_scale == pytest.approx(61.967733539318672)


def test_mse_scale_absent_defaults_to_sqrt_d():
    meta = current_av()
    meta["d_model"] = 5376
    del meta["extraction"]["mse_scale"]
    assert parse_sidecar(meta, WHERE).mse_scale == pytest.approx(73.321211119293437)


def test_integer_scales_are_accepted_as_floats():
    meta = current_av()
    meta["extraction"]["injection_scale"] = 80000
    nla = parse_sidecar(meta, WHERE)
    assert nla.injection_scale == 80000.0 and isinstance(nla.injection_scale, float)


def test_unknown_keys_are_ignored():
    meta = current_av()
    meta["some_future_key"] = {"nested": [1, 2]}
    meta["extraction"]["new_knob"] = "x"
    meta["tokens"]["another_id"] = 5
    meta["prompt_templates"]["extra"] = "no placeholders"
    assert parse_sidecar(meta, WHERE) == parse_sidecar(current_av(), WHERE)


# ----------------------------------------------------------------------------- errors


def _drop(meta: dict, dotted: str) -> dict:
    *parents, leaf = dotted.split(".")
    node = meta
    for p in parents:
        node = node[p]
    del node[leaf]
    return meta


def _set(meta: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    node = meta
    for p in parents:
        node = node[p]
    node[leaf] = value
    return meta


@pytest.mark.parametrize(
    ("meta", "needles"),
    [
        (_drop(current_av(), "extraction.injection_scale"), ["extraction.injection_scale"]),
        (_drop(current_av(), "tokens.injection_token_id"), ["tokens.injection_token_id"]),
        (_drop(current_av(), "tokens.injection_char"), ["tokens.injection_char"]),
        (
            _drop(current_av(), "tokens.injection_left_neighbor_id"),
            ["tokens.injection_left_neighbor_id"],
        ),
        (
            _drop(current_av(), "tokens.injection_right_neighbor_id"),
            ["tokens.injection_right_neighbor_id"],
        ),
        (_set(current_av(), "role", "decoder"), ["role", "'decoder'"]),
        (_drop(current_av(), "role"), ["role", "None"]),
        (_set(current_av(), "d_model", "3584"), ["d_model", "'3584'"]),
        (_set(current_av(), "d_model", 3584.0), ["d_model", "3584.0"]),
        (_set(current_av(), "d_model", True), ["d_model", "True"]),
        (_set(current_av(), "d_model", 0), ["d_model", "0"]),
        (_set(current_av(), "kind", "nla_dataset"), ["kind", "nla_dataset"]),
        (
            _set(current_av(), "prompt_templates.av", "no marker here"),
            ["prompt_templates.av", "{injection_char}"],
        ),
        (
            _set(legacy(current_av()), "prompt_templates.actor", "no marker here"),
            ["prompt_templates.av", "{injection_char}"],
        ),
        (
            _set(current_ar(), "prompt_templates.ar", "no placeholder"),
            ["prompt_templates.ar", "{explanation}"],
        ),
        (_drop(current_ar(), "prompt_templates.ar"), ["prompt_templates.ar"]),
        (_drop(current_ar(), "critic"), ["critic.extraction_layer_index"]),
        (
            _set(current_ar(), "critic.extraction_layer_index", -1),
            ["extraction layer", "-1"],
        ),
        (
            _set(current_ar(), "critic.extraction_layer_index", "20"),
            ["extraction layer", "'20'"],
        ),
        (
            _set(current_av(), "extraction.injection_scale", "sqrt_d"),
            ["extraction.injection_scale", "'sqrt_d'", "sqrt_d_model"],
        ),
        (
            _set(current_av(), "extraction.mse_scale", "auto"),
            ["extraction.mse_scale", "'auto'"],
        ),
        (
            _set(current_av(), "extraction.injection_scale", -150.0),
            ["extraction.injection_scale", "-150.0"],
        ),
        (_set(current_av(), "extraction.injection_scale", 0), ["extraction.injection_scale"]),
        (
            _set(current_av(), "extraction.mse_scale", float("nan")),
            ["extraction.mse_scale", "nan"],
        ),
        (
            _set(current_av(), "extraction.injection_scale", True),
            ["extraction.injection_scale", "True"],
        ),
        (
            _set(current_av(), "tokens.injection_token_id", "149705"),
            ["tokens.injection_token_id", "'149705'"],
        ),
        (
            _set(current_av(), "tokens.critic_suffix_ids", [1, "2"]),
            ["tokens.critic_suffix_ids"],
        ),
        # wrong types and templates that `.format` would crash on (issue 14, item 6)
        (_set(current_av(), "tokens.injection_char", 12814), ["tokens.injection_char", "int"]),
        (_set(current_av(), "tokens.injection_char", ""), ["tokens.injection_char", "empty"]),
        (_set(current_av(), "prompt_templates.av", 7), ["prompt_templates.av", "int"]),
        (_set(current_ar(), "prompt_templates.ar", ["x"]), ["prompt_templates.ar", "list"]),
        (
            _set(current_av(), "prompt_templates.av", "{foo} {injection_char}"),
            ["prompt_templates.av", "{foo}", "{injection_char}"],
        ),
        (
            _set(current_av(), "prompt_templates.av", "{0} {injection_char}"),
            ["prompt_templates.av", "{0}"],
        ),
        (
            _set(current_ar(), "prompt_templates.ar", "{} {explanation}"),
            ["prompt_templates.ar", "{}"],
        ),
        (
            _set(current_ar(), "prompt_templates.ar", "{explanation!r}"),
            ["prompt_templates.ar", "{explanation!r}"],
        ),
        (
            _set(legacy(current_ar()), "prompt_templates.critic", "{explanation} {"),
            ["prompt_templates.critic", "literal brace"],
        ),
        (_set(current_av(), "tokens", [1, 2]), ["tokens", "expected a mapping"]),
        (_set(current_av(), "prompt_templates", "x"), ["prompt_templates", "mapping"]),
        (_set(current_av(), "role", ["av"]), ["role", "['av']"]),
        (
            _set(current_ar(), "critic", {"num_hidden_layers": "21"}),
            ["critic.num_hidden_layers", "'21'"],
        ),
        (
            _set(current_ar(), "critic", {"num_hidden_layers": 0}),
            ["critic.num_hidden_layers", "0"],
        ),
        (
            _set(current_av(), "extraction.injection_scale", 10**400),
            ["extraction.injection_scale", "integer of"],
        ),
        (
            _set(current_av(), "tokens.injection_char", "\ud800"),
            ["tokens.injection_char", "surrogate"],
        ),
    ],
    ids=lambda v: None if isinstance(v, dict) else "/".join(v),
)
def test_bad_sidecars_fail_naming_the_field(meta, needles):
    with pytest.raises(SidecarError) as info:
        parse_sidecar(meta, WHERE)
    msg = str(info.value)
    assert msg.startswith(WHERE)
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_ar_without_any_layer_key_fails():
    meta = current_ar()
    del meta["critic"]
    assert "extraction_layer_index" not in meta
    assert "layer_index" not in meta["extraction"]
    with pytest.raises(SidecarError, match="critic.extraction_layer_index"):
        parse_sidecar(meta, WHERE)


def test_not_a_mapping_fails():
    with pytest.raises(SidecarError, match="expected a mapping"):
        parse_sidecar(["role", "av"], WHERE)


def test_ar_does_not_need_the_av_fields():
    meta = current_ar()
    del meta["tokens"]
    del meta["prompt_templates"]["av"]
    nla = parse_sidecar(meta, WHERE)
    assert nla.injection_token_id is None and nla.av_template is None
    assert nla.critic_suffix_ids is None


# ----------------------------------------------------------------------------- architecture


def _gemma_multimodal_config():
    from transformers import Gemma3Config, Gemma3TextConfig

    text = Gemma3TextConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
    )  # fmt: skip
    return Gemma3Config(text_config=text.to_dict())


def test_get_text_config_and_is_gemma_on_configs():
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    mm = _gemma_multimodal_config()
    assert mm.model_type == "gemma3"
    text = get_text_config(mm)
    assert text is mm.text_config
    assert text.model_type == "gemma3_text" and text.hidden_size == 32
    assert text.num_hidden_layers == 3
    q = Qwen2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=4)
    assert get_text_config(q) is q
    assert is_gemma(mm) and is_gemma(text)
    assert is_gemma(Gemma3TextConfig(hidden_size=16, num_attention_heads=2, head_dim=8))
    assert not is_gemma(q) and not is_gemma(LlamaConfig())
    assert embed_scale(mm) == pytest.approx(math.sqrt(32))
    assert embed_scale(text) == pytest.approx(math.sqrt(32))
    assert embed_scale(q) == 1.0


class _Stack(torch.nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(n))


class _Wrap(torch.nn.Module):
    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)


def test_decoder_stack_finds_every_nesting():
    flat = _Stack(2)
    causal = _Wrap(model=_Stack(3), lm_head=torch.nn.Linear(2, 2))
    inner = _Stack(5)
    multimodal = _Wrap(model=_Wrap(language_model=inner, vision_tower=_Stack(1)))
    older = _Wrap(language_model=_Wrap(model=_Stack(4)))
    assert decoder_stack(flat) is flat
    assert decoder_stack(causal) is causal.model
    assert decoder_stack(multimodal) is inner
    assert len(decoder_blocks(flat)) == 2
    assert len(decoder_blocks(causal)) == 3
    assert len(decoder_blocks(multimodal)) == 5
    assert len(decoder_blocks(older)) == 4
    with pytest.raises(CheckpointError, match="cannot locate the decoder blocks"):
        decoder_stack(_Wrap(lm_head=torch.nn.Linear(2, 2)))


# ----------------------------------------------------------------------------- safetensors only


def test_require_safetensors(tmp_path):
    """The vLLM path's check (issue 14, item 9): pickled weights alone, or no weights, are
    refused naming the files; safetensors pass (beside stray .bin files too: vLLM then loads the
    safetensors)."""
    from nlaprobe.checkpoints import require_safetensors

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors weights"):
        require_safetensors(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    (tmp_path / "extra.pt").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError) as info:
        require_safetensors(tmp_path)
    assert "['extra.pt', 'pytorch_model.bin']" in str(info.value)
    assert str(tmp_path) in str(info.value) and "safetensors only" in str(info.value)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert require_safetensors(tmp_path) == tmp_path
