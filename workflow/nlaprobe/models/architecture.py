"""Decoder-only LM architecture: where the blocks are, Gemma's embedding scale, layer checks.

inputs -> outputs: a transformers model (or its config) -> its decoder stack and blocks, the
factor its embedding module applies, a checked layer index. Pure: no loading, no forward.
"""

from __future__ import annotations

import math

import torch

from nlaprobe.checkpoints import get_text_config
from nlaprobe.errors import CheckpointError

GEMMA_MODEL_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})


def decoder_stack(model) -> torch.nn.Module:
    """The module that owns `layers` (and `embed_tokens`, `norm`) of a decoder-only LM.

    Handles `model.model.layers` (CausalLM), `model.layers` (bare decoder) and the Gemma-3
    multimodal nesting `model.model.language_model.layers` (also `model.language_model.model`).
    """
    candidates = [model]
    seen: set[int] = set()
    while candidates:
        m = candidates.pop(0)
        if id(m) in seen or m is None:
            continue
        seen.add(id(m))
        if isinstance(getattr(m, "layers", None), torch.nn.ModuleList):
            return m
        for name in ("model", "language_model", "decoder", "transformer"):
            child = getattr(m, name, None)
            if isinstance(child, torch.nn.Module):
                candidates.append(child)
    raise CheckpointError(
        f"cannot locate the decoder blocks of {type(model).__name__}: expected model.layers, "
        "model.model.layers or model.model.language_model.layers"
    )


def decoder_blocks(model) -> torch.nn.ModuleList:
    return decoder_stack(model).layers


def is_gemma(config) -> bool:
    return getattr(config, "model_type", None) in GEMMA_MODEL_TYPES or (
        getattr(get_text_config(config), "model_type", None) in GEMMA_MODEL_TYPES
    )


def embed_scale(config) -> float:
    """The factor the model's embedding module applies to raw embedding rows (√d for Gemma)."""
    if is_gemma(config):
        return math.sqrt(get_text_config(config).hidden_size)
    return 1.0


def check_layer(model_or_config, layer: int, where: str) -> int:
    cfg = getattr(model_or_config, "config", model_or_config)
    n = get_text_config(cfg).num_hidden_layers
    if not 0 <= layer < n:
        raise CheckpointError(
            f"{where}: layer {layer} out of range: the model has {n} blocks (0..{n - 1})"
        )
    return n
