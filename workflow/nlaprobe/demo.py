"""The embedded default's models: tiny NLA families trained offline on the CPU from text that
ships with Python.

inputs -> outputs: a style (`qwen` | `gemma`) and the demo parameters (the `demo` config section,
the family's layer K and the evaluation documents to hold out) -> `<out>/{base,av,ar}` in the
release layout (nlaprobe.fixtures), trained by nlaprobe.train. With `base_models.<style>` (a
checkpoint entry) the build starts from that real base model and its tokenizer instead of a tiny
pretrained one (`load_real_base`).

Invariants: deterministic for the same parameters and Python version on the CPU, and through
`nlaprobe build-demo` (which pins the portable kernels of nlaprobe.kernels) the same weights on
every Intel x86-64 CPU with AVX2 for the same wheels and thread count; the training
never sees the held-out (evaluation) documents; the folder appears at its final name only when
complete (built under a temporary name, then renamed).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch

from nlaprobe.checkpoints import decoder_stack
from nlaprobe.corpus import Document, pydoc_documents
from nlaprobe.errors import ConfigError
from nlaprobe.fixtures import (
    AR_TEMPLATE,
    AV_TEMPLATE,
    TinySizes,
    av_prompt_ids,
    build_tokenizer,
    causal_lm,
    marker_for,
    save_family,
    text_config,
)

log = logging.getLogger(__name__)

SIZE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "max_position_embeddings",
)
TRAIN_MAX_LENGTH = 256


def demo_sizes(params: dict) -> TinySizes:
    return TinySizes(**{k: int(params[k]) for k in SIZE_KEYS if params.get(k) is not None})


def train_settings(params: dict):
    from nlaprobe.train import TrainSettings

    t = params.get("train", {})
    return TrainSettings(
        base_steps=int(t.get("base_steps", 300)),
        av_steps=int(t.get("av_steps", 1500)),
        ar_steps=int(t.get("ar_steps", 800)),
        av_lr=float(t.get("av_lr", 2e-3)),
        av_batch=int(t.get("av_batch", 32)),
        ar_lr=float(t.get("ar_lr", 1e-3)),
        quote_words=int(t.get("quote_words", 4)),
        seed=int(params.get("seed", 0)),
    )


def load_real_base(style: str, entry: dict, layer: int):
    """(tokenizer, model) of a real base checkpoint for a demo build, checked: a text-only
    causal LM deeper than `layer` whose tokenizer encodes the style's marker as one token."""
    from nlaprobe.checkpoints import (
        decoder_blocks,
        get_text_config,
        load_causal_lm,
        load_tokenizer,
        resolve_snapshot,
        resolve_source,
    )

    src = resolve_snapshot(resolve_source(entry, "base"))
    where = f"demo.base_models.{style} ({src.hub_id or src.name})"
    tokenizer = load_tokenizer(src)
    model = load_causal_lm(src)
    if getattr(model.config, "text_config", None) is not None:
        raise ConfigError(
            f"{where}: a multimodal checkpoint ({type(model).__name__}); give its text-only "
            "causal LM instead"
        )
    n_blocks = len(decoder_blocks(model))
    if not 0 <= layer < n_blocks:
        raise ConfigError(f"{where}: layer {layer} out of range for {n_blocks} decoder blocks")
    marker = marker_for(style)
    ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ConfigError(
            f"{where}: the {style} marker {marker!r} (U+{ord(marker):04X}) must encode to one "
            f"token of this tokenizer, got ids {ids}"
        )
    log.info(
        "demo %s: real base %s (d=%d, %d blocks)",
        style,
        src.hub_id or src.name,
        get_text_config(model.config).hidden_size,
        n_blocks,
    )
    return tokenizer, model.float()


def training_documents(held_out: list[list[int]] | None) -> list[Document]:
    """The built-in corpus minus the held-out absolute index ranges [start, stop)."""
    docs = [
        Document(f"builtin:pydoc:topics:{i}", i, text, topic)
        for i, (topic, text) in enumerate(pydoc_documents())
    ]
    held = held_out or []
    return [d for d in docs if not any(a <= d.doc_idx < b for a, b in held)]


def log_kernels() -> dict[str, str]:
    """Log the CPU kernels this build runs (nlaprobe.kernels) and warn when they are not the
    portable ones: `nlaprobe build-demo` pins them; a build called in a process that did not
    (or on a CPU without AVX2) is reproducible on this machine kind only."""
    from nlaprobe.kernels import kernels_in_use, unpinned

    in_use = kernels_in_use()
    off = unpinned(in_use)
    if off:
        log.warning(
            "CPU kernels not the portable ones (%s): this build may differ on another CPU; "
            "`nlaprobe build-demo` pins them",
            ", ".join(f"{k} {v or '-'}" for k, v in off.items()),
        )
    else:
        log.info(
            "portable CPU kernels: %s", ", ".join(f"{k} {v or '-'}" for k, v in in_use.items())
        )
    return in_use


def build_demo(style: str, out: Path, params: dict) -> Path:
    """Build and train one tiny family. `params`: the `demo` config section plus `layer` (K)
    and `held_out` (document index ranges never used for training)."""
    from nlaprobe import train as T
    from nlaprobe.decode import (
        DecodeSettings,
        HFBackend,
        decode_rows,
        parse_condition,
        prompt_token_embeds,
    )
    from nlaprobe.extract import ExtractParams, extract

    if "layer" not in params:
        raise ConfigError("build-demo --params: missing 'layer' (the family's K)")
    layer = int(params["layer"])
    log_kernels()
    # torch's default, stated: a lower precision lets float32 matmuls run in bfloat16 on CPUs
    # that have it (measured: other weights), so the models would depend on the CPU again
    torch.set_float32_matmul_precision("highest")
    sizes = demo_sizes(params)
    s = train_settings(params)
    t = params.get("train", {})
    T.seed_all(s.seed)
    started = time.time()
    docs = training_documents(params.get("held_out"))
    real = (params.get("base_models") or {}).get(style)
    if real:
        tokenizer, base = load_real_base(style, real, layer)
    else:
        all_texts = [text for _topic, text in pydoc_documents()]
        tokenizer = build_tokenizer(style, all_texts, sizes.vocab_size)
        base = causal_lm(style, text_config(style, sizes, tokenizer))
        if s.base_steps:
            T.pretrain_base(base, tokenizer, [d.text for d in docs], s)
    base.eval()

    rows = extract(
        base,
        tokenizer,
        docs,
        ExtractParams(
            layers=(layer,),
            seed=s.seed,
            positions_per_doc=int(t.get("positions_per_doc", 16)),
            min_position=int(t.get("min_position", 8)),
            max_length=TRAIN_MAX_LENGTH,
            batch_size=16,
        ),
    ).table
    vectors = np.asarray(rows.column("activation_vector").to_pylist(), dtype=np.float32)
    topics = {d.doc_id: d.topic for d in docs}
    contexts = rows.column("detokenized_text_truncated").to_pylist()
    doc_ids = rows.column("doc_id").to_pylist()
    targets = [
        T.target_explanation(c, topics[i], s.quote_words, T.quote_marks(c))
        for c, i in zip(contexts, doc_ids, strict=True)
    ]
    scale = float(np.linalg.norm(vectors, axis=1).mean())
    log.info(
        "%d training rows from %d documents; injection_scale %.3f", len(targets), len(docs), scale
    )

    marker = marker_for(style)
    prompt = av_prompt_ids(tokenizer, AV_TEMPLATE, marker)
    marker_pos = prompt.index(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(marker)[0]))
    stops = base.config.eos_token_id
    stops = list(stops) if isinstance(stops, list | tuple) else [stops]
    av = copy.deepcopy(base)
    if s.av_steps:
        target_ids = [T.av_target_ids(tokenizer, e, stops[-1]) for e in targets]
        T.train_av(av, tokenizer, prompt, marker_pos, scale, vectors, target_ids, s)
    av.eval()

    ar = copy.deepcopy(base)
    d = sizes.hidden_size
    head = torch.randn(d, d) / np.sqrt(d)
    if s.ar_steps:
        texts, gold = list(targets), vectors
        if t.get("ar_mix", True) and s.av_steps:
            n_mix = min(int(t.get("ar_mix_rows", 4096)), len(targets))
            mix = np.sort(np.random.default_rng(s.seed + 3).permutation(len(targets))[:n_mix])
            positions = rows.column("position").to_pylist()
            written = decode_rows(
                HFBackend(
                    av,
                    tokenizer,
                    DecodeSettings(
                        max_new_tokens=64,
                        stop_token_ids=tuple(stops),
                        pad_token_id=tokenizer.pad_token_id or 0,
                    ),
                ),
                prompt_token_embeds(av, prompt),
                marker_pos,
                scale,
                vectors[mix],
                [doc_ids[i] for i in mix],
                [positions[i] for i in mix],
                parse_condition("greedy"),
                s.seed,
                128,
            )
            failures = sum(r["explanation"] is None for r in written)
            log.info("AV greedy tag failures on the AR-mix rows: %d of %d", failures, len(written))
            texts += [r["explanation"] if r["explanation"] is not None else "" for r in written]
            gold = np.concatenate([vectors, vectors[mix]])
        head, _ = T.train_ar(decoder_stack(ar), tokenizer, layer, AR_TEMPLATE, texts, gold, s)
    ar.eval()
    save_family(
        out,
        style,
        tokenizer,
        base_text=base,
        av=av,
        ar=ar,
        head=head,
        layer=layer,
        injection_scale=scale,
        # a real base is saved as it was loaded (text-only); a tiny Gemma base gets the wrapper
        multimodal_base=False if real else None,
        base_model_name=(real.get("id") or real.get("path")) if real else f"nlaprobe-demo-{style}",
    )
    log.info("demo %s family built in %.0f s", style, time.time() - started)
    return out
