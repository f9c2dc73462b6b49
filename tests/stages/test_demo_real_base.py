"""Demo builds from a real base checkpoint (`demo.base_models`, for a GPU box), exercised on
tiny local checkpoints: loaded by hub id from an offline hub cache or from a local path, the
base's own tokenizer and weights, AV and AR trained on it and saved in the release layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nlaprobe.checkpoints import read_sidecar, resolve_source
from nlaprobe.demo import DemoParams, build_demo
from nlaprobe.errors import ConfigError
from nlaprobe.models.loading import load_ar, load_av
from nlaprobe.plan import Plan

LAYER = 1
TRAIN = {
    "base_steps": 5,  # ignored for a real base: it is not pretrained again
    "av_steps": 3,
    "ar_steps": 2,
    "positions_per_doc": 2,
    "ar_mix": True,
    "ar_mix_rows": 8,
}


def params(entry: dict, style: str = "qwen", layer: int = LAYER) -> DemoParams:
    return DemoParams.from_json(
        {
            "layer": layer,
            "held_out": [[0, 380]],  # train on the last few documents only: seconds
            "seed": 0,
            "base_models": {style: entry},
            "train": TRAIN,
        }
    )


def weights(path: Path, role: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / role / "model.safetensors")


@pytest.fixture
def base_dir(qwen_family) -> Path:
    return qwen_family / "base"


def check_family(out: Path, base_dir: Path, name: str) -> None:
    av = load_av(resolve_source({"path": str(out / "av"), "dtype": "float32"}, "av"))
    ar = load_ar(resolve_source({"path": str(out / "ar"), "dtype": "float32"}, "ar"))

    def vocab(path: Path) -> tuple:
        tok = json.loads((path / "tokenizer.json").read_text())
        return tok["model"]["vocab"], tok["added_tokens"]

    # the base's own tokenizer (vocabulary and special tokens), not a tiny one built for the demo
    for role in ("base", "av", "ar"):
        assert vocab(out / role) == vocab(base_dir), role
    src_base = weights(base_dir.parent, "base")
    saved_base = weights(out, "base")
    assert saved_base.keys() == src_base.keys()
    assert all(torch.equal(saved_base[k], src_base[k]) for k in src_base)
    # the AV was trained from the base: same shapes, different values
    av_w = weights(out, "av")
    assert av_w.keys() == src_base.keys()
    assert any(not torch.equal(av_w[k], src_base[k]) for k in src_base)
    assert av.meta.d_model == ar.meta.d_model
    assert ar.meta.layer == LAYER
    meta = read_sidecar(out / "av")
    assert meta.d_model == av.model.config.hidden_size
    sidecar = (out / "av" / "nla_meta.yaml").read_text()
    assert name in sidecar


def test_demo_from_a_local_base_path(tmp_path, base_dir):
    out = build_demo("qwen", tmp_path / "demo", params({"path": str(base_dir), "dtype": "float32"}))
    check_family(out, base_dir, str(base_dir))


def test_demo_from_a_hub_id_at_a_revision(tmp_path, offline_hub, base_dir):
    offline_hub("tiny-org/base", base_dir)
    entry = {"id": "tiny-org/base", "revision": "main", "dtype": "float32"}
    out = build_demo("qwen", tmp_path / "demo", params(entry))
    check_family(out, base_dir, "tiny-org/base")


def test_demo_base_whose_tokenizer_lacks_the_marker(tmp_path, base_dir):
    # the Gemma marker U+321C is not one token of the Qwen-style tokenizer
    with pytest.raises(ConfigError, match=r"demo.base_models.gemma .*U\+321C.*one token"):
        build_demo("gemma", tmp_path / "demo", params({"path": str(base_dir)}, style="gemma"))
    assert not (tmp_path / "demo").exists()


def test_demo_base_layer_out_of_range(tmp_path, base_dir):
    p = params({"path": str(base_dir), "dtype": "float32"}, layer=99)
    with pytest.raises(ConfigError, match="layer 99 out of range"):
        build_demo("qwen", tmp_path / "demo", p)


def test_a_real_base_model_is_part_of_the_demo_tag():
    from nlaprobe.config import load_config, validate_config

    cfg = validate_config(load_config([Path(__file__).parents[2] / "config" / "config.yaml"]))
    before = Plan(cfg)
    cfg2 = {**cfg, "demo": {**cfg["demo"], "base_models": {"qwen": {"id": "Qwen/Qwen2.5-0.5B"}}}}
    after = Plan(validate_config(cfg2))
    assert after.demo_tag("qwen") != before.demo_tag("qwen")
    assert after.demo_tag("gemma") == before.demo_tag("gemma")
    assert after.demo_params_for(after.demo_tag("qwen"), "qwen")["base_models"]["qwen"]["id"] == (
        "Qwen/Qwen2.5-0.5B"
    )
