"""Forwards with hooks and prompt embeddings: how every stage reads a model's residual stream
and builds an AV prompt.

inputs -> outputs
- `forward_layers`: a model + right-padded token id lists + layers -> {layer: [B, T, d] output
  of decoder block `layer`}; `last_token_states`: the same at each sequence's last real token;
- `prompt_token_embeds` / `build_prompt_embeds`: an AV's prompt ids + activation vectors ->
  [n, T, d] fp32 prompt embeddings with the marker row replaced by the injected vector.

Invariants (SPEC §4.1, §4.6):
- layer K = output of decoder block K (0-based) = HF `hidden_states[K+1]`, captured by forward
  hooks; every requested layer comes from one forward pass that stops after the deepest one
  (later blocks cannot change an earlier block's output in a causal stack);
- `grad=False` (extraction, scoring) runs under inference mode and detaches what it captures;
  `grad=True` (training) keeps the autograd graph to the captured outputs;
- prompt embeddings come from the model's own embedding module (Gemma's √d scale applied), in
  fp32; the marker row is v·injection_scale/‖v‖ (norm in fp32); a zero or non-finite vector is
  an error recorded for its row, never a crash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nlaprobe.models.architecture import decoder_blocks, decoder_stack


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block: later blocks are never run."""


def forward_layers(
    model,
    batch: Sequence[Sequence[int]],
    layers: Sequence[int],
    pad_id: int,
    device,
    *,
    grad: bool = False,
) -> dict[int, torch.Tensor]:
    """One right-padded forward; returns {layer: [B, T, d] output of block `layer`}, detached
    under inference mode unless `grad`."""
    blocks = decoder_blocks(model)
    stack = decoder_stack(model)
    length = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for b, ids in enumerate(batch):
        input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[b, : len(ids)] = 1
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[layer] = hidden if grad else hidden.detach()
            if layer == deepest:
                raise _StopForward

        return hook

    for layer in set(layers):
        handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
    try:
        with contextlib.nullcontext() if grad else torch.inference_mode():
            stack(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured


def last_token_states(
    model, batch: Sequence[Sequence[int]], layer: int, pad_id: int, device, *, grad: bool = False
) -> torch.Tensor:
    """[B, d] fp32 output of block `layer` at each sequence's last real token (the AR readout)."""
    hidden = forward_layers(model, batch, [layer], pad_id, device, grad=grad)[layer]
    last = torch.tensor([len(ids) - 1 for ids in batch], device=hidden.device)
    return hidden[torch.arange(len(batch), device=hidden.device), last].float()


@dataclass
class PromptBatch:
    """Prompt embeddings of a set of rows; `ok[i]` false where the vector was unusable."""

    embeds: torch.Tensor  # [n, T, d] float32
    ok: np.ndarray  # [n] bool
    errors: list[str | None]


def prompt_token_embeds(model, prompt_ids: Sequence[int]) -> torch.Tensor:
    """[T, d] fp32 embeddings of the prompt from the model's own embedding module (Gemma scaled)."""
    emb = model.get_input_embeddings()
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=emb.weight.device)
    with torch.no_grad():
        return emb(ids)[0].float().cpu()


def build_prompt_embeds(
    base_embeds: torch.Tensor, marker_pos: int, vectors: np.ndarray, injection_scale: float
) -> PromptBatch:
    """Replace the marker row by v·scale/‖v‖ for every vector (norm in fp32). Pure."""
    v = torch.from_numpy(np.array(vectors, dtype=np.float32, copy=True))
    if v.ndim != 2 or v.shape[1] != base_embeds.shape[1]:
        raise ValueError(
            f"vectors have shape {tuple(v.shape)}; expected [n, {base_embeds.shape[1]}] (d_model)"
        )
    norms = v.norm(dim=1)
    finite = torch.isfinite(v).all(dim=1) & torch.isfinite(norms)
    ok = finite & (norms > 0)
    errors: list[str | None] = []
    for i in range(v.shape[0]):
        if not bool(finite[i]):
            errors.append("non-finite activation vector")
        elif not bool(norms[i] > 0):
            errors.append("zero activation vector")
        else:
            errors.append(None)
    safe = torch.where(ok[:, None], v, torch.ones_like(v))
    injected = safe * (injection_scale / safe.norm(dim=1, keepdim=True))
    embeds = base_embeds.float().unsqueeze(0).repeat(v.shape[0], 1, 1)
    embeds[:, marker_pos, :] = injected
    return PromptBatch(embeds, ok.numpy(), errors)
