"""Checkpoint sources (local folders and a hub cache, pinned commits) and every live check of
SPEC §4.5 failing with an error that names the field and both values. (Loading and the
architecture helpers on their own: tests/stages/test_models_loading.py.)"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nlaprobe import constants as C
from nlaprobe.checkpoints import resolve_source
from nlaprobe.errors import CheckpointError, SidecarError
from nlaprobe.io import read_yaml, write_table, write_yaml
from nlaprobe.models.architecture import decoder_blocks
from nlaprobe.models.loading import load_ar, load_av, load_causal_lm, load_config, load_tokenizer

K = 2
D = 64
N_LAYERS = 4
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def src(path: Path, dtype: str = "float32"):
    return resolve_source({"path": str(path), "dtype": dtype}, "av")


def edit_sidecar(directory: Path, fn) -> dict:
    meta = read_yaml(directory / C.SIDECAR_NAME)
    fn(meta)
    write_yaml(directory / C.SIDECAR_NAME, meta)
    return meta


def file_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# ----------------------------------------------------------------------------- live checks


def _ids(meta: dict) -> dict:
    return meta["tokens"]


def test_injection_token_id_drift(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "av")
    marker_id = read_yaml(d / C.SIDECAR_NAME)["tokens"]["injection_token_id"]
    edit_sidecar(d, lambda m: _ids(m).update(injection_token_id=marker_id + 1))
    with pytest.raises(SidecarError) as info:
        load_av(src(d))
    msg = str(info.value)
    assert "tokens.injection_token_id" in msg
    assert f"is {marker_id + 1}" in msg and f"[{marker_id}]" in msg


@pytest.mark.parametrize("name", ["qwen_family", "gemma_family"])
def test_multi_token_injection_char(request, name, copy_dir):
    d = copy_dir(request.getfixturevalue(name) / "av")
    meta = read_yaml(d / C.SIDECAR_NAME)
    marker, marker_id = meta["tokens"]["injection_char"], meta["tokens"]["injection_token_id"]
    edit_sidecar(d, lambda m: _ids(m).update(injection_char=marker * 2))
    with pytest.raises(SidecarError) as info:
        load_av(src(d))
    msg = str(info.value)
    assert "tokens.injection_token_id" in msg and "injection_char" in msg
    assert f"is {marker_id}" in msg and f"[{marker_id}, {marker_id}]" in msg


def test_marker_that_is_the_unk_token(gemma_family, copy_dir):
    d = copy_dir(gemma_family / "av")
    tok = load_tokenizer(src(d))
    unk = tok.unk_token_id
    assert tok(tok.unk_token, add_special_tokens=False)["input_ids"] == [unk]
    edit_sidecar(d, lambda m: _ids(m).update(injection_char=tok.unk_token, injection_token_id=unk))
    with pytest.raises(SidecarError, match="UNK"):
        load_av(src(d))


@pytest.mark.parametrize("name", ["qwen_family", "gemma_family"])
def test_marker_twice_in_the_template(request, name, copy_dir):
    d = copy_dir(request.getfixturevalue(name) / "av")
    edit_sidecar(
        d,
        lambda m: m["prompt_templates"].update(av="A {injection_char} and {injection_char} end."),
    )
    with pytest.raises(SidecarError) as info:
        load_av(src(d))
    msg = str(info.value)
    assert "prompt_templates.av" in msg
    assert "2 times" in msg and "exactly once" in msg


def test_marker_first_in_the_prompt(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "av")
    # a chat template that adds nothing, and a template that starts with the marker
    (d / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    edit_sidecar(d, lambda m: m["prompt_templates"].update(av="{injection_char} then text"))
    with pytest.raises(SidecarError) as info:
        load_av(src(d))
    assert "position 0 of" in str(info.value)
    assert "prompt_templates.av" in str(info.value)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", ["qwen_family", "legacy_family"])
def test_wrong_neighbour(request, name, side, copy_dir):
    d = copy_dir(request.getfixturevalue(name) / "av")
    key = f"injection_{side}_neighbor_id"
    live = read_yaml(d / C.SIDECAR_NAME)["tokens"][key]
    edit_sidecar(d, lambda m: _ids(m).update({key: live + 7}))
    with pytest.raises(SidecarError) as info:
        load_av(src(d))
    msg = str(info.value)
    assert f"tokens.{key} is {live + 7}" in msg
    assert f"has {live} there" in msg


@pytest.mark.parametrize("part", ["av", "ar"])
def test_d_model_differs_from_hidden_size(gemma_family, copy_dir, part):
    d = copy_dir(gemma_family / part)
    edit_sidecar(d, lambda m: m.update(d_model=32))
    loader = load_av if part == "av" else load_ar
    with pytest.raises(SidecarError) as info:
        loader(src(d))
    msg = str(info.value)
    assert "d_model is 32" in msg and "hidden_size is 64" in msg


def test_ar_config_layers_differ_from_k_plus_1(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "ar")
    edit_sidecar(d, lambda m: m["critic"].update(extraction_layer_index=1))
    with pytest.raises(SidecarError) as info:
        load_ar(src(d))
    msg = str(info.value)
    assert "K=1" in msg and "K+1=2" in msg and "num_hidden_layers is 3" in msg


def test_legacy_ar_num_hidden_layers_drift(legacy_family, copy_dir):
    d = copy_dir(legacy_family / "ar")
    edit_sidecar(d, lambda m: m["critic"].update(num_hidden_layers=4))
    with pytest.raises(SidecarError) as info:
        load_ar(src(d))
    assert "K+1=4" in str(info.value) and "num_hidden_layers is 3" in str(info.value)


def test_missing_value_head(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "ar")
    (d / C.VALUE_HEAD_FILE).unlink()
    with pytest.raises(CheckpointError) as info:
        load_ar(src(d))
    assert str(d / C.VALUE_HEAD_FILE) in str(info.value)
    assert "value head missing" in str(info.value)


@pytest.mark.parametrize(
    ("tensors", "needles"),
    [
        ({"weight": torch.zeros(D, D + 1)}, ["(64, 65)", "[64, 64]"]),
        ({"weight": torch.zeros(32, 32)}, ["(32, 32)", "[64, 64]"]),
        ({"w": torch.zeros(D, D)}, ["'weight'", "['w']"]),
    ],
    ids=["not-square", "wrong-d", "wrong-key"],
)
def test_bad_value_head(gemma_family, copy_dir, tensors, needles):
    d = copy_dir(gemma_family / "ar")
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(d / C.VALUE_HEAD_FILE))
    with pytest.raises(CheckpointError) as info:
        load_ar(src(d))
    msg = str(info.value)
    assert str(d / C.VALUE_HEAD_FILE) in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_corrupt_value_head(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "ar")
    (d / C.VALUE_HEAD_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_ar(src(d))


def test_critic_suffix_ids_drift(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "ar")
    live = read_yaml(d / C.SIDECAR_NAME)["tokens"]["critic_suffix_ids"]
    drifted = [*live[:-1], live[-1] + 1]
    edit_sidecar(d, lambda m: _ids(m).update(critic_suffix_ids=drifted))
    with pytest.raises(SidecarError) as info:
        load_ar(src(d))
    msg = str(info.value)
    assert f"tokens.critic_suffix_ids is {drifted}" in msg
    assert f"with {live}" in msg


def test_missing_checkpoint_directory(tmp_path):
    missing = tmp_path / "nowhere" / "av"
    for loader in (load_av, load_ar):
        with pytest.raises(CheckpointError) as info:
            loader(src(missing))
        assert str(missing) in str(info.value) and "not found" in str(info.value)


def test_missing_sidecar_and_wrong_role(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "av")
    (d / C.SIDECAR_NAME).unlink()
    with pytest.raises(SidecarError, match="nla_meta.yaml: missing"):
        load_av(src(d))
    with pytest.raises(SidecarError, match="role is 'ar'"):
        load_av(src(qwen_family / "ar"))
    with pytest.raises(SidecarError, match="role is 'av'"):
        load_ar(src(qwen_family / "av"))


def test_local_directory_without_weights_is_a_checkpoint_error(qwen_family, copy_dir):
    d = copy_dir(qwen_family / "av")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as info:
        load_av(src(d))
    assert str(d) in str(info.value)


# ----------------------------------------------------------------------------- hub cache


@pytest.fixture
def hub_cache(offline_hub, qwen_family):
    """A hub cache with tiny-org/nla-av and tiny-org/nla-ar at COMMIT, used offline."""
    offline_hub("tiny-org/nla-av", qwen_family / "av", COMMIT)
    return offline_hub("tiny-org/nla-ar", qwen_family / "ar", COMMIT)


@pytest.mark.parametrize("revision", [COMMIT, "main"])
def test_load_from_hub_cache(hub_cache, qwen_family, revision):
    entry = {"id": "tiny-org/nla-av", "revision": revision, "dtype": "float32"}
    s = resolve_source(entry, "av")
    assert not s.local and s.revision == revision
    av = load_av(s)
    snapshot = hub_cache / "models--tiny-org--nla-av" / "snapshots" / COMMIT
    assert Path(av.meta.path) == snapshot / C.SIDECAR_NAME
    local = load_av(src(qwen_family / "av"))
    assert av.prompt_ids == local.prompt_ids and av.marker_pos == local.marker_pos
    torch.testing.assert_close(
        av.model.get_input_embeddings().weight, local.model.get_input_embeddings().weight
    )
    ar = load_ar(resolve_source({**entry, "id": "tiny-org/nla-ar"}, "ar"))
    assert ar.meta.layer == K and len(decoder_blocks(ar.model)) == K + 1
    assert tuple(ar.value_head.shape) == (D, D)


@pytest.mark.parametrize("revision", [OTHER_COMMIT, "v2"])
def test_revision_not_in_cache(hub_cache, revision):
    for repo, loader in (("tiny-org/nla-av", load_av), ("tiny-org/nla-ar", load_ar)):
        entry = {"id": repo, "revision": revision, "dtype": "float32"}
        with pytest.raises(CheckpointError) as info:
            loader(resolve_source(entry, "av"))
        assert repo in str(info.value) and revision in str(info.value)


def test_repo_not_in_cache(hub_cache):
    entry = {"id": "tiny-org/absent", "revision": COMMIT}
    for fn in (load_tokenizer, load_config, load_causal_lm):
        with pytest.raises(CheckpointError) as info:
            fn(resolve_source(entry, "av"))
        assert "tiny-org/absent" in str(info.value) and COMMIT in str(info.value)


def test_invalid_repo_id(hub_cache):
    with pytest.raises(CheckpointError, match="not a repo"):
        load_av(resolve_source({"id": "not a repo!!"}, "av"))


@pytest.mark.parametrize("revision", [COMMIT, "main"])
def test_loaded_commit_is_recorded(hub_cache, revision):
    """Provenance names the snapshot actually read: the commit `main` resolved to, or the pin."""
    av = load_av(resolve_source({"id": "tiny-org/nla-av", "revision": revision}, "av"))
    assert av.source.commit == COMMIT and av.source.hub_id == "tiny-org/nla-av"
    assert av.source.describe() == {
        "name": "tiny-org/nla-av",
        "revision": revision,
        "commit": COMMIT,
        "dtype": "torch.bfloat16",
    }
    ar = load_ar(resolve_source({"id": "tiny-org/nla-ar", "revision": revision}, "ar"))
    assert ar.source.commit == COMMIT


def test_pinned_commit_mismatch_is_an_error(hub_cache, monkeypatch):
    """A pinned revision whose cache lookup yields another snapshot is refused."""
    import nlaprobe.checkpoints as ck

    served = hub_cache / "models--tiny-org--nla-av" / "snapshots" / COMMIT
    monkeypatch.setattr(ck, "local_dir", lambda src: served)
    with pytest.raises(CheckpointError) as info:
        load_av(resolve_source({"id": "tiny-org/nla-av", "revision": OTHER_COMMIT}, "av"))
    assert f"pinned to revision {OTHER_COMMIT}" in str(info.value) and COMMIT in str(info.value)


def test_local_checkpoint_has_no_commit(qwen_family):
    av = load_av(src(qwen_family / "av"))
    assert av.source.commit is None and av.source.describe()["name"] == str(qwen_family / "av")


def test_vllm_decode_refuses_pickled_weights_before_the_engine(qwen_family, copy_dir, monkeypatch):
    """A local AV folder holding only `.bin` weights never reaches vLLM's own loader: the decode
    stage refuses it before the engine is built (no vLLM needed to test it)."""
    import numpy as np
    import pyarrow as pa

    from nlaprobe import decode
    from nlaprobe.io import vectors_to_arrow
    from nlaprobe.models.generation import parse_condition

    av = copy_dir(qwen_family / "av", "av")
    (av / "model.safetensors").rename(av / "pytorch_model.bin")
    built = []
    # an engine that records being built: the check must refuse the folder before it is
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=lambda **k: built.append(k)))
    acts = av.parent / "acts.parquet"
    vectors = np.ones((2, D), np.float32)
    write_table(
        acts,
        pa.table(
            {
                C.COL_DOC_ID: ["d:s:0", "d:s:1"],
                C.COL_POSITION: pa.array([5, 6], pa.int64()),
                C.COL_VECTOR: vectors_to_arrow(vectors),
            }
        ),
    )
    out = av.parent / "dec.parquet"
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*safetensors only"):
        decode.decode_shard(src(av), str(acts), str(out), parse_condition("greedy"),
                            decode.DecodeParams.from_json({"backend": "vllm"}))  # fmt: skip
    assert built == [] and not out.exists()
