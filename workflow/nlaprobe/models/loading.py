"""Loading: a checkpoint `Source` (nlaprobe.checkpoints) -> live tokenizer, config and models.

inputs -> outputs: a Source -> a tokenizer, a config, a causal LM, an AV (`LoadedAV`: model or
none for an external engine, checked prompt ids and marker position, stop ids) or an AR
(`LoadedAR`: the K+1-block decoder and its value head).

Invariants: safetensors only (`use_safetensors=True`), `trust_remote_code` as the entry says;
every AV/AR is checked against its sidecar (nlaprobe.checkpoints) before it is returned; a load
failure is a CheckpointError naming the source and revision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nlaprobe.checkpoints import (
    NlaMeta,
    Source,
    check_ar_tokenizer,
    check_av_tokenizer,
    check_local,
    check_model_config,
    embedding_rows,
    get_text_config,
    load_errors,
    load_value_head,
    local_dir,
    pretrained_kwargs,
    read_sidecar,
    resolve_snapshot,
    stop_token_ids,
)
from nlaprobe.errors import SidecarError
from nlaprobe.models.architecture import embed_scale

log = logging.getLogger(__name__)


def load_tokenizer(src: Source):
    from transformers import AutoTokenizer

    check_local(src)
    with load_errors(src, "tokenizer"):
        return AutoTokenizer.from_pretrained(src.name, **pretrained_kwargs(src))


def load_config(src: Source):
    from transformers import AutoConfig

    check_local(src)
    with load_errors(src, "config"):
        return AutoConfig.from_pretrained(src.name, **pretrained_kwargs(src))


def load_causal_lm(
    src: Source, device: str | torch.device = "cpu", *, device_map: str | None = None
):
    """A causal LM (for the base model: the multimodal Gemma-3 wrapper loads as it is).
    `device_map="auto"` on a CUDA device lets transformers (accelerate) spread the layers over
    every visible GPU (the job's leased ones) instead of moving the model to `device`; on the
    CPU it is ignored."""
    from transformers import AutoModelForCausalLM

    check_local(src)
    spread = device_map == "auto" and str(device).startswith("cuda")
    if device_map is not None and not spread:
        log.info("device_map %r ignored on device %s: the model loads whole", device_map, device)
    with load_errors(src, "model weights"):
        model = AutoModelForCausalLM.from_pretrained(
            src.name,
            dtype=src.dtype,
            use_safetensors=True,
            **({"device_map": "auto"} if spread else {}),
            **pretrained_kwargs(src),
        )
    return (model if spread else model.to(device)).eval()


@dataclass
class LoadedAV:
    """An AV as loaded (`load_av`), or built in memory (`in_memory`: the demo build decodes with
    its AV before saving it; then there is no sidecar, folder or source)."""

    model: Any  # None when loaded for an external engine (vLLM)
    tokenizer: Any
    meta: NlaMeta | None
    prompt_ids: list[int]
    marker_pos: int
    directory: Path | None
    config: Any
    stop_token_ids: list[int]
    source: Source | None  # as loaded: hub ids resolved to their snapshot and commit

    @classmethod
    def in_memory(
        cls, model, tokenizer, prompt_ids: list[int], marker_pos: int, stop_token_ids: list[int]
    ) -> LoadedAV:
        return cls(
            model, tokenizer, None, prompt_ids, marker_pos, None, model.config, stop_token_ids, None
        )

    def prompt_embeds_from_weights(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[T, d] fp32 prompt embeddings read straight from the checkpoint's embedding rows
        (times √d for Gemma), for engines that do not run the HF model (vLLM).

        `dtype` is the dtype the model is loaded in: the rows are cast to it and multiplied by
        the scale cast to it, as HF's scaled embedding module does (Gemma's √d rounded to bf16
        in a bf16 model), so both backends see the same numbers."""
        rows = embedding_rows(self.directory, self.prompt_ids).to(dtype)
        scale = torch.tensor(embed_scale(self.config), dtype=dtype)
        return (rows * scale).float()

    @property
    def vocab_size(self) -> int:
        """Rows of the model's output layer: ids at or above it can never be generated."""
        return int(get_text_config(self.config).vocab_size)


@dataclass
class LoadedAR:
    model: Any  # the decoder stack with K+1 blocks (no norm / lm_head used)
    tokenizer: Any
    meta: NlaMeta
    value_head: torch.Tensor  # [d, d], y = h @ W.T
    source: Source  # as loaded: hub ids resolved to their snapshot and commit


def _open(src: Source, role: str, expected: str):
    """What loading either role starts with: the snapshot the source resolves to, its local
    folder, its sidecar (which must be of `role`), tokenizer and model config, checked against
    each other. Returns (src, directory, meta, tokenizer, config)."""
    src = resolve_snapshot(src)
    directory = local_dir(src)
    meta = read_sidecar(directory)
    if meta.role != role:
        raise SidecarError(f"{meta.path}: role is {meta.role!r}; expected {expected}")
    tokenizer = load_tokenizer(src)
    config = load_config(src)
    check_model_config(meta, config)
    return src, directory, meta, tokenizer, config


def load_av(
    src: Source, device: str | torch.device = "cpu", *, load_model: bool = True
) -> LoadedAV:
    src, directory, meta, tokenizer, config = _open(src, "av", "an AV ('av' or 'actor')")
    ids, pos = check_av_tokenizer(meta, tokenizer)
    stops = stop_token_ids(directory, config, tokenizer)
    model = load_causal_lm(src, device) if load_model else None
    return LoadedAV(model, tokenizer, meta, ids, pos, directory, config, stops, src)


def load_ar(src: Source, device: str | torch.device = "cpu") -> LoadedAR:
    """Load an AR: the K+1-block decoder (final norm and lm_head weights may be absent) and the
    value head. Readout = hidden state after block K at the last real token, through the head."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    src, directory, meta, tokenizer, config = _open(src, "ar", "an AR ('ar' or 'critic')")
    check_ar_tokenizer(meta, tokenizer)
    head = load_value_head(directory, meta.d_model)
    # The release drops the final norm (and has no lm_head): a "newly initialized" warning for
    # `norm.weight` is expected and harmless because the readout is taken before it.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with load_errors(src, "AR weights"):
            model = AutoModel.from_pretrained(
                src.name, dtype=src.dtype, use_safetensors=True, **pretrained_kwargs(src)
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    model = model.to(device).eval()
    return LoadedAR(model, tokenizer, meta, head.to(device), src)
