"""The embedded default's models: tiny NLA families trained offline on the CPU from text that
ships with Python.

inputs -> outputs: a style (`qwen` | `gemma`) and `DemoParams` (the `demo` config section, the
family's layer K and the evaluation documents to hold out) -> `<out>/{base,av,ar}` in the
release layout (nlaprobe.fixtures), trained by the nlaprobe.train library, with its rows read
and its AR-mix explanations written by the models layer (nlaprobe.models). With `base_models.<style>` (a
checkpoint entry) the build starts from that real base model and its tokenizer instead of a tiny
pretrained one (`load_real_base`).

Invariants: deterministic for the same parameters and Python version on the CPU, and through
`nlaprobe build-demo` (which pins the portable kernels of nlaprobe.kernels) the same weights on
every Intel x86-64 CPU with AVX2 for the same wheels and thread count (on other vendors' CPUs
MKL keeps its own branch: the same weights on the same CPU model); the training
never sees the held-out (evaluation) documents; the folder appears at its final name only when
complete (built under a temporary name, then renamed).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from nlaprobe import train as T
from nlaprobe.checkpoints import get_text_config, resolve_snapshot, resolve_source
from nlaprobe.config import StageParams
from nlaprobe.documents import Document, pydoc_documents
from nlaprobe.errors import ConfigError, show
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
from nlaprobe.models.activations import Sampling, extract
from nlaprobe.models.architecture import decoder_blocks, decoder_stack
from nlaprobe.models.backends import DecodeSettings, get_backend
from nlaprobe.models.generation import decode_rows, parse_condition
from nlaprobe.models.loading import LoadedAV, load_causal_lm, load_tokenizer

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


@dataclass(frozen=True)
class DemoParams(StageParams):
    """The parameters of one demo build: the `demo` config section (only this style's real base
    in `base_models`), the family's layer K and `held_out`, the absolute document index ranges
    [start, stop) never used for training (nlaprobe.plan.demo_params), parsed by `from_json`
    (nlaprobe.config.StageParams)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    max_position_embeddings: int
    seed: int
    base_models: dict
    train: dict  # the `demo.train` settings, defaults filled
    layer: int
    held_out: tuple[tuple[int, int], ...]

    SECTION = "demo"
    FIELDS: ClassVar[dict[str, str]] = {"layer": "families.*.layer"}
    REQUIRED: ClassVar[tuple[str, ...]] = ("layer",)
    FREE: ClassVar[tuple[str, ...]] = ("held_out",)

    @classmethod
    def from_values(cls, values: dict, source: str) -> DemoParams:
        held = values.get("held_out", [])
        if not isinstance(held, list) or not all(
            isinstance(r, list)
            and len(r) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in r)
            for r in held
        ):
            raise ConfigError(
                f"{source}: key 'held_out': expected a list of [start, stop] index pairs, "
                f"got {show(held)}"
            )
        return cls(**{**values, "held_out": tuple((a, b) for a, b in held)})

    def sizes(self) -> TinySizes:
        return TinySizes(**{k: getattr(self, k) for k in SIZE_KEYS})

    def train_settings(self) -> T.TrainSettings:
        t = self.train
        return T.TrainSettings(
            base_steps=t["base_steps"],
            av_steps=t["av_steps"],
            ar_steps=t["ar_steps"],
            av_lr=float(t["av_lr"]),
            av_batch=t["av_batch"],
            ar_lr=float(t["ar_lr"]),
            quote_words=t["quote_words"],
            seed=self.seed,
        )


def load_real_base(style: str, entry: dict, layer: int):
    """(tokenizer, model) of a real base checkpoint for a demo build, checked: a text-only
    causal LM deeper than `layer` whose tokenizer encodes the style's marker as one token."""
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


def training_documents(held_out) -> list[Document]:
    """The built-in corpus minus the held-out absolute index ranges [start, stop) (pairs)."""
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
    from nlaprobe.kernels import cpu_vendor, kernels_in_use, unpinned

    in_use = kernels_in_use()
    off = unpinned(in_use)
    if off:
        vendor = cpu_vendor()
        log.warning(
            "CPU kernels not the portable ones (%s): this build may differ on another CPU; %s",
            ", ".join(f"{k} {v or '-'}" for k, v in off.items()),
            f"MKL honours its AVX2 branch on Intel CPUs only (this CPU: {vendor})"
            if "mkl" in off and vendor not in ("", "GenuineIntel")
            else "`nlaprobe build-demo` pins them",
        )
    else:
        log.info(
            "portable CPU kernels: %s", ", ".join(f"{k} {v or '-'}" for k, v in in_use.items())
        )
    return in_use


def build_demo(style: str, out: Path, params: DemoParams) -> Path:
    """Build and train one tiny family."""
    layer = params.layer
    log_kernels()
    # torch's default, stated: a lower precision lets float32 matmuls run in bfloat16 on CPUs
    # that have it (measured: other weights), so the models would depend on the CPU again
    torch.set_float32_matmul_precision("highest")
    sizes = params.sizes()
    s = params.train_settings()
    t = params.train
    T.seed_all(s.seed)
    started = time.time()
    docs = training_documents(params.held_out)
    real = params.base_models.get(style)
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
        Sampling(
            layers=(layer,),
            seed=s.seed,
            positions_per_doc=t["positions_per_doc"],
            min_position=t["min_position"],
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
        if t["ar_mix"] and s.av_steps:
            n_mix = min(t["ar_mix_rows"], len(targets))
            mix = np.sort(np.random.default_rng(s.seed + 3).permutation(len(targets))[:n_mix])
            positions = rows.column("position").to_pylist()
            engine = get_backend("hf")(
                LoadedAV.in_memory(av, tokenizer, prompt, marker_pos, stops),
                DecodeSettings(
                    max_new_tokens=64,
                    stop_token_ids=tuple(stops),
                    pad_token_id=tokenizer.pad_token_id or 0,
                ),
            )
            written = decode_rows(
                engine,
                engine.prompt_embeds(),
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
