"""Tiny NLA families in the exact on-disk layout of the released checkpoints.

inputs -> outputs: a style (`qwen` or `gemma`), some training text and a few sizes -> a folder

    <out>/base/   the base LM (Qwen2ForCausalLM, or for Gemma the multimodal
                  Gemma3ForConditionalGeneration wrapper; `gemma_text_base=True` gives text-only)
    <out>/av/     the AV: a causal LM (Qwen2 / text-only gemma3_text) + tokenizer + nla_meta.yaml
    <out>/ar/     the AR: the first K+1 blocks only (no final norm, no lm_head weights) +
                  bf16 value_head.safetensors holding `weight` [d, d] + tokenizer + nla_meta.yaml

Invariants (SPEC §4.2, §4.5, §4.9), checked by tests/stages/test_fixtures.py:
- tokenizers are built by the real classes (Qwen2Tokenizer: byte-level BPE, no BOS, a chat
  template with a default system turn; GemmaTokenizer: BPE with byte fallback, BOS from the
  post-processor, a chat template that emits `bos_token` itself), trained in memory;
- the marker is one ordinary vocabulary token from U+3200-U+33FF (U+320E for Qwen, U+321C for
  Gemma, as released), never UNK, appearing exactly once in the chat-templated AV prompt;
- sidecars carry every field of the release (and `legacy=True` writes the older key names
  `actor`/`critic`, `critic.num_hidden_layers`, and `sqrt_d_model` sentinels).

These folders are used by the tests and, trained further, by the embedded default (the demo rules).
Weights are random unless a caller trains them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from nlaprobe import constants as C
from nlaprobe.io import write_yaml

log = logging.getLogger(__name__)

STYLES = ("qwen", "gemma")
QWEN_MARKER = "\u320e"  # released Qwen2.5-7B L20 marker
GEMMA_MARKER = "\u321c"  # released Gemma-3 marker
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Short on purpose: the embedded default trains its AV on the CPU, where every prompt token costs.
AV_TEMPLATE = "Explain <concept>{injection_char}</concept> in <explanation> tags."
AR_TEMPLATE = "Explanation of an activation:\n{explanation} Reconstruct the vector."

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (message['content'] | trim) + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinySizes:
    """Sizes of a tiny family. The defaults build in about a second on a CPU."""

    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024


def marker_for(style: str) -> str:
    _check_style(style)
    return QWEN_MARKER if style == "qwen" else GEMMA_MARKER


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown tiny family style {style!r}; expected one of {list(STYLES)}")


# ----------------------------------------------------------------------------- tokenizers


def _train_merges(
    texts: Iterable[str], vocab_size: int, normalizer, pre_tokenizer, alphabet: list[str]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False, limit_alphabet=256
    )
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def build_qwen_tokenizer(texts: Sequence[str], vocab_size: int):
    """A Qwen2Tokenizer (byte-level BPE, no BOS) whose marker U+320E is one vocabulary token."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"), byte_level]
    )
    trained, merges = _train_merges(
        texts, vocab_size, normalizers.NFC(), pre, pre_tokenizers.ByteLevel.alphabet()
    )
    vocab: dict[str, int] = {}
    for piece in sorted(trained, key=trained.get):
        vocab.setdefault(piece, len(vocab))
    # The marker as a real vocabulary token: merge its three byte-level symbols (last priority).
    encoded = byte_level.pre_tokenize_str(QWEN_MARKER)[0][0]
    assert len(encoded) == 3, encoded
    for piece in (encoded[0], encoded[1], encoded[2], encoded[:2], encoded):
        vocab.setdefault(piece, len(vocab))
    merges += [(encoded[0], encoded[1]), (encoded[:2], encoded[2])]
    vocab["<|endoftext|>"] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=32768)
    tok.add_special_tokens(
        {
            "extra_special_tokens": [
                AddedToken(t, special=True, normalized=False)
                for t in ("<|im_start|>", "<|im_end|>")
            ]
        }
    )
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def build_gemma_tokenizer(texts: Sequence[str], vocab_size: int):
    """A GemmaTokenizer (BPE with byte fallback, `▁` for spaces, BOS added by the
    post-processor) whose marker U+321C is one vocabulary token."""
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    trained, merges = _train_merges(
        texts,
        vocab_size,
        normalizers.Replace(" ", "\u2581"),
        pre_tokenizers.Split("\u2581", behavior="merged_with_next"),
        [],
    )
    vocab: dict[str, int] = {}
    for piece in [*specials, *(f"<0x{b:02X}>" for b in range(256)), GEMMA_MARKER]:
        vocab[piece] = len(vocab)
    for piece in sorted(trained, key=trained.get):
        vocab.setdefault(piece, len(vocab))
    tok = GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=32768, add_bos_token=True)
    tok.add_special_tokens(
        {
            "extra_special_tokens": [
                AddedToken(t, special=True, normalized=False) for t in specials[5:]
            ]
        }
    )
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    return tok


# Prompt and explanation boilerplate, added to the tokenizer's training text so that the tiny
# vocabularies spend merges on it (as real vocabularies do on common words): shorter prompts make
# the CPU training of the embedded default cheaper.
BOILERPLATE = (
    QWEN_SYSTEM,
    AV_TEMPLATE.replace("{injection_char}", " "),
    AR_TEMPLATE.replace("{explanation}", " "),
    '<explanation>Topic: The text reads "".</explanation>',
)
BOILERPLATE_REPEATS = 40


def build_tokenizer(style: str, texts: Sequence[str], vocab_size: int):
    _check_style(style)
    builder = build_qwen_tokenizer if style == "qwen" else build_gemma_tokenizer
    return builder(list(texts) + list(BOILERPLATE) * BOILERPLATE_REPEATS, vocab_size)


def av_prompt_ids(tokenizer, template: str, marker: str) -> list[int]:
    """The AV prompt exactly as the release builds it: chat template, one step (SPEC §4.6)."""
    content = template.format(injection_char=marker)
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
    )
    ids = out["input_ids"] if hasattr(out, "keys") else out
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return list(ids)


def ar_suffix_ids(tokenizer, template: str) -> list[int]:
    """Token ids of the AR template after `{explanation}` (tokenized as plain text)."""
    suffix = template.split("{explanation}", 1)[1]
    return list(tokenizer(suffix, add_special_tokens=False)["input_ids"])


# ----------------------------------------------------------------------------- models


def text_config(style: str, sizes: TinySizes, tokenizer, num_layers: int | None = None):
    from transformers import Gemma3TextConfig, Qwen2Config

    n = sizes.num_layers if num_layers is None else num_layers
    head_dim = sizes.hidden_size // sizes.num_heads
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=n,
        num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_kv_heads,
        max_position_embeddings=sizes.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    if style == "qwen":
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        common.update(eos_token_id=eos, bos_token_id=None)
        return Qwen2Config(**common)
    eos = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    return Gemma3TextConfig(
        **{**common, "eos_token_id": [tokenizer.eos_token_id, eos]},
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=64,
    )


def gemma_multimodal_config(text_cfg):
    """The Gemma-3 base shape: a multimodal wrapper around the text config (tiny vision tower)."""
    from transformers import Gemma3Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    vocab = text_cfg.vocab_size
    return Gemma3Config(
        text_config=text_cfg.to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        boi_token_index=vocab - 3,
        eoi_token_index=vocab - 2,
        image_token_index=vocab - 1,
    )


def causal_lm(style: str, cfg):
    from transformers import Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Qwen2ForCausalLM

    if style == "qwen":
        return Qwen2ForCausalLM(cfg)
    if getattr(cfg, "model_type", "") == "gemma3":
        return Gemma3ForConditionalGeneration(cfg)
    return Gemma3ForCausalLM(cfg)


# ----------------------------------------------------------------------------- sidecars


def model_sidecar(
    *,
    role: str,
    d_model: int,
    layer: int,
    injection_scale: float | None,
    marker: str,
    tokenizer,
    base_model: str,
    legacy: bool = False,
) -> dict:
    """The `nla_meta.yaml` of a checkpoint, every field the release writes (SPEC §4.5).

    `legacy=True` uses the older generation of key names: role actor/critic, prompt templates
    `actor`/`critic`, `critic.num_hidden_layers` (= K+1, the number of kept blocks) and the
    `sqrt_d_model` sentinel for `mse_scale`.
    """
    prompt = av_prompt_ids(tokenizer, AV_TEMPLATE, marker)
    marker_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(marker)[0])
    pos = prompt.index(marker_id)
    tokens = {
        "injection_char": marker,
        "injection_token_id": int(marker_id),
        "injection_left_neighbor_id": int(prompt[pos - 1]),
        "injection_right_neighbor_id": int(prompt[pos + 1]),
        "critic_suffix_ids": [int(i) for i in ar_suffix_ids(tokenizer, AR_TEMPLATE)],
    }
    extraction: dict = {
        "layer_index": layer,
        "mse_scale": "sqrt_d_model" if legacy else float(math.sqrt(d_model)),
    }
    if injection_scale is not None:
        extraction["injection_scale"] = float(injection_scale)
    meta = {
        "kind": C.KIND_MODEL,
        "schema_version": 1,
        "role": {"av": "actor", "ar": "critic"}[role] if legacy else role,
        "d_model": d_model,
        "base_model": base_model,
        "extraction": extraction,
        "tokens": tokens,
        "prompt_templates": (
            {"actor": AV_TEMPLATE, "critic": AR_TEMPLATE}
            if legacy
            else {"av": AV_TEMPLATE, "ar": AR_TEMPLATE}
        ),
    }
    if role == "ar":
        meta["critic"] = (
            {"num_hidden_layers": layer + 1} if legacy else {"extraction_layer_index": layer}
        )
    return meta


# ----------------------------------------------------------------------------- writers


def _save_tokenizer_and_config(model, tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def save_ar(
    ar_model, value_head: torch.Tensor, tokenizer, out: Path, sidecar: dict, layer: int
) -> None:
    """Write an AR in the release layout: config with K+1 layers, weights of the embeddings and
    blocks 0..K only (no final norm, no lm_head), bf16 `value_head.safetensors` {weight: [d, d]}."""
    from nlaprobe.models.architecture import decoder_stack

    out.mkdir(parents=True, exist_ok=True)
    cfg = ar_model.config
    cfg.num_hidden_layers = layer + 1
    if hasattr(cfg, "layer_types") and cfg.layer_types is not None:
        cfg.layer_types = list(cfg.layer_types)[: layer + 1]
    cfg.tie_word_embeddings = False
    cfg.save_pretrained(out)
    stack = decoder_stack(ar_model)
    sd = {}
    for k, v in stack.state_dict().items():
        if k.startswith("norm."):
            continue
        if k.startswith("layers."):
            idx = int(k.split(".")[1])
            if idx > layer:
                continue
        sd[f"model.{k}"] = v.detach().contiguous().clone()
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    d = value_head.shape[0]
    if tuple(value_head.shape) != (d, d):
        raise ValueError(f"value head must be square [d, d], got {tuple(value_head.shape)}")
    save_file(
        {C.VALUE_HEAD_KEY: value_head.detach().to(torch.bfloat16).contiguous()},
        str(out / C.VALUE_HEAD_FILE),
    )
    tokenizer.save_pretrained(out)
    write_yaml(out / C.SIDECAR_NAME, sidecar)


def mean_activation_norm(model, tokenizer, texts: Sequence[str], layer: int) -> float:
    """Mean L2 norm of block-`layer` outputs over the non-special tokens of a few texts."""
    from nlaprobe.models.architecture import decoder_blocks

    captured: list[torch.Tensor] = []
    block = decoder_blocks(model)[layer]
    handle = block.register_forward_hook(
        lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
    )
    norms = []
    try:
        with torch.no_grad():
            for text in texts:
                enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
                captured.clear()
                model(**enc)
                h = captured[0][0].float()
                special = torch.tensor(
                    [i in tokenizer.all_special_ids for i in enc["input_ids"][0].tolist()]
                )
                norms.append(h[~special].norm(dim=-1))
    finally:
        handle.remove()
    return float(torch.cat(norms).mean())


def wrap_multimodal(style: str, base_text):
    """The Gemma-3 base shape around a trained text-only model: the same text weights inside
    `Gemma3ForConditionalGeneration` (tiny random vision tower)."""
    from nlaprobe.models.architecture import decoder_stack

    mm = causal_lm(style, gemma_multimodal_config(base_text.config)).eval()
    decoder_stack(mm).load_state_dict(decoder_stack(base_text).state_dict())
    mm.get_output_embeddings().weight.data.copy_(base_text.get_output_embeddings().weight.data)
    return mm


def save_family(
    out: Path,
    style: str,
    tokenizer,
    *,
    base_text,
    av,
    ar,
    head: torch.Tensor,
    layer: int,
    injection_scale: float,
    multimodal_base: bool | None = None,
    legacy_sidecar: bool = False,
    base_model_name: str | None = None,
) -> Path:
    """Write base/, av/ and ar/ under `out` in the release layout, atomically (built under a
    temporary name, then renamed). `base_text`, `av`, `ar` are text-only causal LMs."""
    _check_style(style)
    if multimodal_base is None:
        multimodal_base = style == "gemma"
    out = Path(out)
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    marker = marker_for(style)
    base = (
        wrap_multimodal(style, base_text) if (style == "gemma" and multimodal_base) else base_text
    )
    _save_tokenizer_and_config(base, tokenizer, tmp / "base")
    _save_tokenizer_and_config(av, tokenizer, tmp / "av")
    d = base_text.config.hidden_size
    name = base_model_name or f"tiny-{style}"

    def sidecar(role: str, scale: float | None) -> dict:
        return model_sidecar(
            role=role,
            d_model=d,
            layer=layer,
            injection_scale=scale,
            marker=marker,
            tokenizer=tokenizer,
            base_model=name,
            legacy=legacy_sidecar,
        )

    write_yaml(tmp / "av" / C.SIDECAR_NAME, sidecar("av", injection_scale))
    save_ar(ar, head, tokenizer, tmp / "ar", sidecar("ar", None), layer)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info(
        "wrote %s family at %s (d=%d, K=%d, scale=%.2f)", style, out, d, layer, injection_scale
    )
    return out


def build_family(
    style: str,
    out: Path,
    texts: Sequence[str],
    *,
    sizes: TinySizes = TinySizes(),
    layer: int = 2,
    seed: int = 0,
    multimodal_base: bool | None = None,
    legacy_sidecar: bool = False,
    base_model_name: str | None = None,
) -> Path:
    """Build base/, av/ and ar/ of one tiny family under `out` (random weights, release layout).

    The AV and AR start from the base's text weights (the AR keeps blocks 0..K), with a random
    value head. Returns `out`. Rebuilding over an existing folder replaces it.
    """
    import copy

    _check_style(style)
    if not 0 <= layer < sizes.num_layers:
        raise ValueError(f"layer {layer} out of range for {sizes.num_layers} layers")
    torch.manual_seed(seed)
    random.seed(seed)
    tokenizer = build_tokenizer(style, texts, sizes.vocab_size)
    base = causal_lm(style, text_config(style, sizes, tokenizer)).eval()
    d = sizes.hidden_size
    return save_family(
        out,
        style,
        tokenizer,
        base_text=base,
        av=copy.deepcopy(base),
        ar=copy.deepcopy(base),
        head=torch.randn(d, d) / math.sqrt(d),
        layer=layer,
        injection_scale=mean_activation_norm(base, tokenizer, texts[:8], layer),
        multimodal_base=multimodal_base,
        legacy_sidecar=legacy_sidecar,
        base_model_name=base_model_name,
    )


# ----------------------------------------------------------------------------- hub cache


def add_to_hub_cache(
    cache: Path,
    repo_id: str,
    files: Path,
    commit: str,
    *,
    repo_type: str = "model",
    ref: str = "main",
) -> Path:
    """Put the folder `files` into the hub cache `cache` as snapshot `commit` of `repo_id`,
    laid out as `huggingface_hub` writes it: `<type>s--<org>--<name>/snapshots/<commit>/...`
    and `refs/<ref>` holding the commit. Returns the snapshot folder."""
    repo_dir = Path(cache) / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(files, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snapshot
