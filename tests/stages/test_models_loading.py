"""The models layer on tiny real checkpoints (nlaprobe.models.loading, .architecture): AVs and
ARs of both sidecar generations load and pass their checks, dtypes and `trust_remote_code` as
the entry says, and the architecture helpers find the blocks of text-only and multimodal
models. (Sources, sidecars and the live checks: tests/stages/test_checkpoints.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nlaprobe import constants as C
from nlaprobe.checkpoints import get_text_config, pretrained_kwargs, resolve_source
from nlaprobe.errors import CheckpointError
from nlaprobe.io import read_yaml
from nlaprobe.models.architecture import check_layer, decoder_blocks, is_gemma
from nlaprobe.models.loading import load_ar, load_av, load_causal_lm, load_config

K = 2
D = 64
N_LAYERS = 4
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def src(path: Path, dtype: str = "float32"):
    return resolve_source({"path": str(path), "dtype": dtype}, "av")


def file_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ["qwen_family", "gemma_family", "legacy_family"])
def test_load_av(request, name):
    family = request.getfixturevalue(name)
    raw = read_yaml(family / "av" / C.SIDECAR_NAME)
    av = load_av(src(family / "av"))
    assert av.meta.role == "av"
    assert av.meta.d_model == D
    assert av.meta.injection_scale == pytest.approx(raw["extraction"]["injection_scale"])
    assert av.meta.mse_scale == pytest.approx(math.sqrt(D))
    assert av.meta.layer == K
    marker_id = raw["tokens"]["injection_token_id"]
    assert av.prompt_ids[av.marker_pos] == marker_id
    assert av.prompt_ids.count(marker_id) == 1
    assert av.prompt_ids[av.marker_pos - 1] == raw["tokens"]["injection_left_neighbor_id"]
    assert av.prompt_ids[av.marker_pos + 1] == raw["tokens"]["injection_right_neighbor_id"]
    rendered = av.tokenizer.apply_chat_template(
        [{"role": "user", "content": av.meta.av_template.format(injection_char="\u320e")}],
        tokenize=False,
        add_generation_prompt=True,
    )
    if name == "qwen_family":
        assert rendered.startswith("<|im_start|>system\nYou are Qwen")
    else:
        assert av.prompt_ids[0] == av.tokenizer.bos_token_id
        assert av.prompt_ids.count(av.tokenizer.bos_token_id) == 1
    assert av.model.dtype == torch.float32
    assert len(decoder_blocks(av.model)) == N_LAYERS
    weights = file_tensors(family / "av" / "model.safetensors")
    torch.testing.assert_close(
        av.model.get_input_embeddings().weight, weights["model.embed_tokens.weight"]
    )


@pytest.mark.parametrize("name", ["qwen_family", "gemma_family", "legacy_family"])
def test_load_ar(request, name):
    family = request.getfixturevalue(name)
    ar = load_ar(src(family / "ar"))
    assert ar.meta.role == "ar"
    assert ar.meta.layer == K
    assert len(decoder_blocks(ar.model)) == K + 1
    assert get_text_config(ar.model.config).num_hidden_layers == K + 1
    assert ar.value_head.dtype == torch.bfloat16
    assert tuple(ar.value_head.shape) == (D, D)
    head = file_tensors(family / "ar" / C.VALUE_HEAD_FILE)["weight"]
    assert torch.equal(ar.value_head, head)
    # the blocks really come from the file (not silently re-initialised)
    weights = file_tensors(family / "ar" / "model.safetensors")
    blocks = decoder_blocks(ar.model)
    torch.testing.assert_close(
        blocks[K].mlp.up_proj.weight, weights[f"model.layers.{K}.mlp.up_proj.weight"]
    )
    torch.testing.assert_close(
        ar.model.get_input_embeddings().weight, weights["model.embed_tokens.weight"]
    )


def test_legacy_ar_reads_num_hidden_layers_minus_one(legacy_family):
    raw = read_yaml(legacy_family / "ar" / C.SIDECAR_NAME)
    assert raw["role"] == "critic" and raw["critic"] == {"num_hidden_layers": 3}
    ar = load_ar(src(legacy_family / "ar"))
    assert ar.meta.layer == 2
    assert len(decoder_blocks(ar.model)) == 3
    assert tuple(ar.value_head.shape) == (D, D)
    assert ar.meta.mse_scale == pytest.approx(8.0)


def test_default_dtype_is_bfloat16(qwen_family):
    s = resolve_source({"path": str(qwen_family / "av")}, "av")
    assert s.dtype == torch.bfloat16
    assert load_causal_lm(s).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("name", "part", "n_blocks", "gemma", "multimodal"),
    [
        ("gemma_family", "base", N_LAYERS, True, True),
        ("gemma_family", "av", N_LAYERS, True, False),
        ("legacy_family", "base", N_LAYERS, True, False),
        ("qwen_family", "base", N_LAYERS, False, False),
    ],
)
def test_architecture_helpers_on_loaded_models(request, name, part, n_blocks, gemma, multimodal):
    model = load_causal_lm(src(request.getfixturevalue(name) / part))
    cfg = model.config
    text = get_text_config(cfg)
    assert (text is not cfg) == multimodal
    assert text.hidden_size == D and text.num_hidden_layers == n_blocks
    assert is_gemma(cfg) == gemma
    blocks = decoder_blocks(model)
    assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) == n_blocks
    assert check_layer(model, n_blocks - 1, "x") == n_blocks
    for bad in (n_blocks, 9, -1):
        with pytest.raises(CheckpointError, match=f"x: layer {bad} out of range"):
            check_layer(model, bad, "x")


def test_check_layer_on_a_config(gemma_family):
    cfg = load_config(src(gemma_family / "base"))
    assert check_layer(cfg, 0, "cfg") == N_LAYERS
    with pytest.raises(CheckpointError, match=r"layer 9 out of range.*4 blocks"):
        check_layer(cfg, 9, "cfg")


def test_trust_remote_code_defaults_off(qwen_family):
    local = resolve_source({"path": str(qwen_family / "av")}, "av")
    assert local.trust_remote_code is False
    assert pretrained_kwargs(local) == {"trust_remote_code": False}
    hub = resolve_source({"id": "org/m", "revision": COMMIT}, "av")
    assert pretrained_kwargs(hub) == {"trust_remote_code": False, "revision": COMMIT}
    assert resolve_source({"id": "org/m"}, "av").revision == "main"
    opted = resolve_source({"id": "org/m", "trust_remote_code": True}, "av")
    assert pretrained_kwargs(opted)["trust_remote_code"] is True


def test_bad_entries(tmp_path):
    with pytest.raises(CheckpointError, match="float64"):
        resolve_source({"path": str(tmp_path), "dtype": "float64"}, "av")
    with pytest.raises(CheckpointError, match="give exactly one of"):
        resolve_source({"revision": COMMIT}, "av")
    with pytest.raises(CheckpointError, match="demo_root"):
        resolve_source({"demo": "qwen"}, "av")
    assert resolve_source({"demo": "qwen"}, "ar", demo_root=tmp_path).name == str(tmp_path / "ar")


def test_a_folder_of_the_other_role_is_refused_naming_its_sidecar(qwen_family):
    from nlaprobe.errors import SidecarError

    with pytest.raises(SidecarError, match=r"nla_meta\.yaml: role is 'ar'; expected an AV"):
        load_av(src(qwen_family / "ar"))
    with pytest.raises(SidecarError, match=r"nla_meta\.yaml: role is 'av'; expected an AR"):
        load_ar(src(qwen_family / "av"))
