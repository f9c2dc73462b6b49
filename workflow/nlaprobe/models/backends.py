"""Decode backends: the engines that generate from prompt embeddings, registered by name.

inputs -> outputs: an AV (nlaprobe.models.loading.LoadedAV) + `DecodeSettings` -> an engine
whose `generate(embeds, requests, cond)` returns one `Generation` per request, and whose
`prompt_embeds()` gives the AV's base prompt embeddings as that engine sees them.

Invariants:
- every backend is built through the registry with one signature:
  `get_backend(name)(av, settings, device=..., tensor_parallel_size=...)`; `needs_model` says
  whether it runs the AV's live HF model (else it loads the checkpoint folder itself, which
  must hold safetensors weights only); an unknown name fails with the list of valid ones;
- every backend returns token ids and `finish_generation` cuts them at the first stop token and
  detokenises them with the AV's HF tokenizer, so text and token counts mean the same everywhere;
- bans are a −1e9 logit bias on every banned id; no penalties, no truncation of the softmax;
  sampling is seeded per request (HF: Gumbel-max with a per-row generator; vLLM: a per-request
  seed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from nlaprobe.checkpoints import require_safetensors
from nlaprobe.errors import ConfigError
from nlaprobe.models.forward import prompt_token_embeds
from nlaprobe.models.generation import Condition, Generation, Request
from nlaprobe.models.loading import LoadedAV

log = logging.getLogger(__name__)

BAN_BIAS = -1e9


@dataclass
class DecodeSettings:
    """What every backend needs besides the prompts: the token budget and the AV's ids."""

    max_new_tokens: int
    stop_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    banned_ids: tuple[int, ...] = field(default_factory=tuple)


def finish_generation(tokenizer, ids: Sequence[int], stop_token_ids: Sequence[int]) -> Generation:
    """New token ids of one request -> text, token count, finish reason; shared by every backend
    so that their outputs are cut and detokenised the same way: the count runs up to and
    including the first stop token, the text is the HF tokenizer's decode of those ids with
    special tokens skipped (the stop token itself leaves no text)."""
    stops = set(stop_token_ids)
    ids = [int(t) for t in ids]
    n = len(ids)
    reason = "length"
    for i, t in enumerate(ids):
        if t in stops:
            n, reason = i + 1, "stop"
            break
    text = tokenizer.decode(ids[:n], skip_special_tokens=True)
    return Generation(text, n, reason)


BACKENDS: dict[str, Callable] = {}


def register_backend(name: str):
    def deco(cls):
        BACKENDS[name] = cls
        return cls

    return deco


def get_backend(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown decode backend {name!r}; valid: {sorted(BACKENDS)}")
    return BACKENDS[name]


class _BanProcessor:
    """−1e9 on banned ids (an HF LogitsProcessor)."""

    def __init__(self, banned_ids: Sequence[int]):
        self.banned = torch.tensor(sorted(set(banned_ids)), dtype=torch.long)

    def __call__(self, input_ids, scores):
        if len(self.banned):
            scores[:, self.banned.to(scores.device)] += BAN_BIAS
        return scores


class _GumbelSampler:
    """Exact per-row seeded sampling inside greedy `generate`: argmax(logits/T + Gumbel noise)
    is a draw from softmax(logits/T); each row draws its noise from its own generator, so a row's
    samples do not depend on the batch it is in."""

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.temperature = temperature
        self.generators = []
        for s in seeds:
            g = torch.Generator(device="cpu")
            g.manual_seed(int(s))
            self.generators.append(g)

    def __call__(self, input_ids, scores):
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        noise = torch.stack(
            [
                -torch.log(-torch.log(torch.rand(scores.shape[-1], generator=g).clamp_min(1e-20)))
                for g in self.generators
            ]
        ).to(scores.device)
        return logp + noise


@register_backend("hf")
class HFBackend:
    """Batched `generate(inputs_embeds=..., attention_mask=...)` (returns only new tokens) on
    the AV's live HF model."""

    needs_model: ClassVar[bool] = True

    def __init__(
        self,
        av: LoadedAV,
        settings: DecodeSettings,
        *,
        device: str | torch.device = "cpu",
        tensor_parallel_size: int = 1,
    ):
        if tensor_parallel_size > 1:
            raise ConfigError(
                f"decode.tensor_parallel_size {tensor_parallel_size} needs decode.backend vllm, "
                "got 'hf'"
            )
        self.model = av.model
        self.tokenizer = av.tokenizer
        self.prompt_ids = list(av.prompt_ids)
        self.settings = settings
        self.device = device

    def prompt_embeds(self) -> torch.Tensor:
        """[T, d] fp32 base prompt embeddings from the model's own embedding module."""
        return prompt_token_embeds(self.model, self.prompt_ids)

    def generate(
        self, embeds: torch.Tensor, requests: Sequence[Request], cond: Condition
    ) -> list[Generation]:
        """embeds: [len(requests), T, d] fp32 (all prompts have the same length: no padding)."""
        from transformers import GenerationConfig, LogitsProcessorList

        st = self.settings
        processors = []
        if st.banned_ids:
            processors.append(_BanProcessor(st.banned_ids))
        if not cond.greedy:
            processors.append(_GumbelSampler([r.seed for r in requests], cond.temperature))
        # HF fills every unset field from the checkpoint's generation_config.json (released
        # Qwen2.5 ships repetition_penalty 1.05): pin the neutral values, no penalties (§4.6).
        gen_cfg = GenerationConfig(
            max_new_tokens=st.max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            encoder_repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            encoder_no_repeat_ngram_size=0,
            min_new_tokens=0,  # also overrides a checkpoint's min_length
            guidance_scale=1.0,
            eos_token_id=list(st.stop_token_ids) or None,
            pad_token_id=st.pad_token_id,
        )
        dtype = next(self.model.parameters()).dtype
        inputs = embeds.to(self.device, dtype=dtype)
        mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                inputs_embeds=inputs,
                attention_mask=mask,
                generation_config=gen_cfg,
                logits_processor=LogitsProcessorList(processors),
            )
        return [self._finish(row.tolist()) for row in out.cpu()]

    def _finish(self, ids: list[int]) -> Generation:
        return finish_generation(self.tokenizer, ids, self.settings.stop_token_ids)


def vllm_sampling_kwargs(cond: Condition, request: Request, settings: DecodeSettings) -> dict:
    """Keyword arguments of vllm.SamplingParams for one request (shared, tested without vLLM).

    temperature 0 only with n=1 (every request is n=1: samples are separate seeded requests);
    max_tokens always set; no repetition/presence/frequency penalties with prompt embeds, no
    top-p/top-k/min-p truncation (plain softmax sampling, as the HF backend), the AV's stop ids
    as the only stops; the engine returns token ids only (`detokenize=False`):
    `finish_generation` turns them into text for every backend alike."""
    kw = {
        "n": 1,
        "temperature": 0.0 if cond.greedy else float(cond.temperature),
        "max_tokens": int(settings.max_new_tokens),
        "seed": int(request.seed),
        "detokenize": False,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        # stop on the AV's stop ids only, as HF's generate does (eos_token_id = those ids): not
        # also on a tokenizer EOS outside them
        "ignore_eos": True,
    }
    if settings.banned_ids:
        kw["logit_bias"] = {int(i): BAN_BIAS for i in settings.banned_ids}
    if settings.stop_token_ids:
        kw["stop_token_ids"] = [int(i) for i in settings.stop_token_ids]
    return kw


def vllm_prompts(embeds: torch.Tensor) -> list[dict]:
    """`{"prompt_embeds": tensor[T, d]}` per request; embeddings only, never ids. Each row is its
    own contiguous copy, so a request never carries (or serialises) the whole batch."""
    return [{"prompt_embeds": e.contiguous().clone()} for e in embeds]


# vLLM's Model Runner V2 (CUDA with Triton) takes at most this many logit_bias entries per
# request; its V1 runner (the CPU build, and CUDA with VLLM_USE_V2_MODEL_RUNNER=0) has no limit.
# A quote ban on a real vocabulary (Qwen2.5: 151k ids) bans thousands of ids.
VLLM_V2_MAX_LOGIT_BIAS = 1024
VLLM_CPU_KV_CACHE_BYTES = 1 << 30  # KV cache on the CPU unless VLLM_CPU_KVCACHE_SPACE (GiB) is set
VLLM_CPU_BATCHED_TOKENS = 4096  # tokens per engine step on the CPU (whole prompts, see below)

_ENGINES: dict[tuple, object] = {}


def vllm_engine_kwargs(
    model_path: str,
    dtype: str,
    *,
    max_model_len: int,
    device: str = "cpu",
    n_banned: int = 0,
    env: dict | None = None,
    **extra,
) -> tuple[dict, dict]:
    """(LLM keyword arguments, environment variables to set) for one AV (pure, tested without
    vLLM). The context is bounded by what a decode needs (prompt + max_new_tokens), the
    checkpoint's generation_config.json is not applied (`generation_config="vllm"`: sampling is
    exactly what `vllm_sampling_kwargs` says); on the CPU eager mode, a bounded KV cache and no
    chunked prefill; on a GPU with more banned ids than Model Runner V2 accepts, the V1 model
    runner (the CPU build always runs the V1 runner)."""
    env = os.environ if env is None else env
    kw = {
        "model": model_path,
        "enable_prompt_embeds": True,
        "dtype": dtype,
        "max_model_len": int(max_model_len),
        "generation_config": "vllm",
    }
    if device == "cpu":
        kw["enforce_eager"] = True
        # A prompt prefilled in chunks has its sampled token discarded and its seeded generator
        # rewound by an offset, which a CPU generator does not have ("CPU Generator does not use
        # offset"): seeded sampling needs whole-prompt prefills on the CPU.
        kw["enable_chunked_prefill"] = False
        kw["max_num_batched_tokens"] = max(int(max_model_len), VLLM_CPU_BATCHED_TOKENS)
        if not env.get("VLLM_CPU_KVCACHE_SPACE"):
            kw["kv_cache_memory_bytes"] = VLLM_CPU_KV_CACHE_BYTES
    kw.update(extra)
    set_env = {}
    if (
        device != "cpu"
        and n_banned > VLLM_V2_MAX_LOGIT_BIAS
        and env.get("VLLM_USE_V2_MODEL_RUNNER") != "0"
    ):
        set_env["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    return kw, set_env


def release_engines() -> None:
    """Shut down every cached vLLM engine (their engine-core processes exit)."""
    while _ENGINES:
        _key, llm = _ENGINES.popitem()
        shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del llm


@register_backend("vllm")
class VLLMBackend:
    """vLLM with `enable_prompt_embeds=True`: the CPU build (`vllm-cpu`) or the CUDA build.

    One engine per (checkpoint, engine arguments) per process: a second backend for the same AV
    (another condition, another shard) reuses it, so a process pays the load once. The engine
    core runs in a spawned process: a script building one needs the `__main__` guard."""

    schedules_itself = True  # `decode_rows` hands it a whole shard in one call
    needs_model: ClassVar[bool] = False  # the engine loads the checkpoint folder itself

    def __init__(
        self,
        av: LoadedAV,
        settings: DecodeSettings,
        *,
        device: str | torch.device = "cpu",
        tensor_parallel_size: int = 1,
    ):
        # vLLM's own loader would also read pickled weights
        require_safetensors(av.directory)
        from vllm import LLM  # noqa: PLC0415  (optional dependency: the vllm-cpu or gpu extra)

        self.av = av
        self.tokenizer = av.tokenizer
        self.settings = settings
        # the engine runs in the checkpoint's dtype; prompt embeddings go in that dtype too (an
        # fp32 release AV must not get bf16 rows)
        self.embeds_dtype = av.source.dtype
        kwargs, set_env = vllm_engine_kwargs(
            str(av.directory),
            str(av.source.dtype).removeprefix("torch."),
            # the context a decode needs: the prompt and the new tokens
            max_model_len=len(av.prompt_ids) + settings.max_new_tokens,
            device=str(device),
            n_banned=len(settings.banned_ids),
            **({"tensor_parallel_size": tensor_parallel_size} if tensor_parallel_size > 1 else {}),
        )
        if set_env:
            log.info("vLLM: %d banned ids per request: %s", len(settings.banned_ids), set_env)
            os.environ.update(set_env)
        # the runner choice is read when an engine starts: it is part of the engine's identity
        key = (repr(sorted(kwargs.items())), os.environ.get("VLLM_USE_V2_MODEL_RUNNER"))
        if key not in _ENGINES:
            _ENGINES[key] = LLM(**kwargs)
        self.llm = _ENGINES[key]

    def prompt_embeds(self) -> torch.Tensor:
        """[T, d] fp32 base prompt embeddings read from the checkpoint's embedding rows, rounded
        as the engine's dtype rounds them (LoadedAV.prompt_embeds_from_weights)."""
        return self.av.prompt_embeds_from_weights(self.av.source.dtype)

    def generate(
        self, embeds: torch.Tensor, requests: Sequence[Request], cond: Condition
    ) -> list[Generation]:
        from vllm import SamplingParams  # noqa: PLC0415

        params = [SamplingParams(**vllm_sampling_kwargs(cond, r, self.settings)) for r in requests]
        outputs = self.llm.generate(
            vllm_prompts(embeds.to(self.embeds_dtype)), sampling_params=params, use_tqdm=False
        )
        return [
            finish_generation(
                self.tokenizer, out.outputs[0].token_ids, self.settings.stop_token_ids
            )
            for out in outputs
        ]
