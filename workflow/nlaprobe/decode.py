"""AV decoding: activation vectors -> explanations (SPEC §4.6-§4.8).

inputs -> outputs: an activation shard (the AV family's own vectors) + an AV checkpoint + a decode
condition -> a decode shard with one row per (activation row, sample): raw text, extracted
explanation (null on tag failure), token count, finish reason, seed, banned-character leaks.

Invariants:
- one request builder for every backend (`build_prompt_embeds`): prompt ids from the chat
  template in one step, embeddings from the model's own embedding module (so Gemma's √d scale is
  applied), in fp32; the marker row replaced by v·injection_scale/‖v‖ (norm in fp32). A zero or
  non-finite vector is an error recorded for that row, never a crash of the shard;
- only embeddings go to the engine, never ids too;
- sampling is seeded per (seed, doc_id, position, sample index): any shard reruns alone, in any
  batch composition, with identical samples (HF: Gumbel-max with a per-row generator; vLLM: a
  per-request seed);
- every backend returns token ids and `finish_generation` cuts them at the first stop token and
  detokenises them with the AV's HF tokenizer, so text and token counts mean the same everywhere;
- bans: every vocabulary id whose decoded text contains a banned character gets a −1e9 logit bias;
  the count of banned tokens and of banned characters leaking into outputs are recorded;
- backends register by name; an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from nlaprobe import constants as C
from nlaprobe.errors import ConfigError

log = logging.getLogger(__name__)

EXPLANATION_RE = re.compile(r"<explanation>\s*(.*?)\s*</explanation>", re.DOTALL)
BAN_BIAS = -1e9

DOUBLE_QUOTES = C.DOUBLE_QUOTES
SINGLE_QUOTES = C.SINGLE_QUOTES
BAN_SETS = {"ban_dq": DOUBLE_QUOTES, "ban_dq_sq": DOUBLE_QUOTES + SINGLE_QUOTES}
COND_RE = re.compile(r"^(greedy|ban_dq|ban_dq_sq|sample_t1|greedy_L(\d+))$")


# ----------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """A decode condition: greedy or sampled, which characters are banned, which layer's vector."""

    name: str
    temperature: float
    n_samples: int
    banned_chars: str = ""
    layer: int | None = None  # None: the family's own layer K (column activation_vector)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def parse_condition(name: str, *, n_samples: int = 10, temperature: float = 1.0) -> Condition:
    """`greedy`, `ban_dq`, `ban_dq_sq`, `sample_t1` (n_samples at `temperature`), `greedy_L{k}`."""
    m = COND_RE.match(name)
    if not m:
        raise ValueError(
            f"unknown decode condition {name!r}; expected greedy, ban_dq, ban_dq_sq, sample_t1 "
            "or greedy_L<k>"
        )
    if name == "sample_t1":
        if n_samples < 1 or temperature <= 0:
            raise ValueError(
                f"sample_t1 needs n_samples ≥ 1 and temperature > 0, got {n_samples}, {temperature}"
            )
        return Condition(name, float(temperature), int(n_samples))
    if m.group(2) is not None:
        return Condition(name, 0.0, 1, layer=int(m.group(2)))
    return Condition(name, 0.0, 1, BAN_SETS.get(name, ""))


# ----------------------------------------------------------------------------- text


def extract_explanation(text: str) -> str | None:
    """First `<explanation>…</explanation>` span, stripped; None is a tag failure (SPEC §4.8)."""
    m = EXPLANATION_RE.search(text)
    return m.group(1).strip() if m else None


def count_leaks(text: str, chars: str) -> int:
    """Occurrences of banned characters in generated text (must be 0 under a ban)."""
    if not chars:
        return 0
    banned = set(chars)
    return sum(1 for ch in text if ch in banned)


def banned_token_ids(tokenizer, chars: str) -> list[int]:
    """Every vocabulary id whose decoded text contains any of `chars` (SPEC §4.7)."""
    if not chars:
        return []
    banned = set(chars)
    ids = []
    for i in range(len(tokenizer)):
        piece = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if any(ch in banned for ch in piece):
            ids.append(i)
    return ids


def sample_seed(seed: int, doc_id: str, position: int, sample: int) -> int:
    """Seed of one sample, from stable keys only (63 bits, valid for torch and vLLM)."""
    digest = hashlib.sha256(f"{seed}|{doc_id}|{position}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------- requests


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


@dataclass(frozen=True)
class Request:
    """One generation: a row of the activation shard and a sample index."""

    row: int
    doc_id: str
    position: int
    sample: int
    seed: int


def build_requests(
    doc_ids: Sequence[str], positions: Sequence[int], cond: Condition, seed: int
) -> list[Request]:
    return [
        Request(
            r, doc_ids[r], int(positions[r]), s, sample_seed(seed, doc_ids[r], int(positions[r]), s)
        )
        for r in range(len(doc_ids))
        for s in range(cond.n_samples)
    ]


@dataclass
class Generation:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" | "length"


# ----------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class DecodeParams:
    """The parameters of one decode job, checked against the config schema (`run.seed` and the
    `decode` section): a value the config would refuse is refused here too."""

    seed: int = 42
    max_new_tokens: int = 200
    batch_size: int = 16
    n_samples: int = 10
    temperature: float = 1.0
    backend: str = "hf"
    tensor_parallel_size: int = 1

    FIELDS: ClassVar[dict[str, str]] = {
        "seed": "run.seed",
        **{k: f"decode.{k}" for k in ("max_new_tokens", "batch_size", "n_samples", "temperature")},
        "backend": "decode.backend",
        "tensor_parallel_size": "decode.tensor_parallel_size",
    }

    @classmethod
    def from_json(cls, raw: dict, source: str = "--params") -> DecodeParams:
        from nlaprobe.config import validate_params

        return cls(**validate_params(raw, cls.FIELDS, source=source))


@dataclass
class DecodeSettings:
    max_new_tokens: int = 200
    batch_size: int = 16
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
    """Batched `generate(inputs_embeds=..., attention_mask=...)` (returns only new tokens)."""

    def __init__(self, model, tokenizer, settings: DecodeSettings, device="cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device

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

    def __init__(
        self,
        model_path: str,
        tokenizer,
        settings: DecodeSettings,
        dtype: str,
        *,
        max_model_len: int = 2048,
        device: str = "cpu",
        **llm_kwargs,
    ):
        from vllm import LLM  # noqa: PLC0415  (optional dependency: the vllm-cpu or gpu extra)

        self.tokenizer = tokenizer
        self.settings = settings
        # prompt embeddings go in the engine's dtype (an fp32 release AV must not get bf16 rows)
        self.embeds_dtype = getattr(torch, dtype)
        kwargs, set_env = vllm_engine_kwargs(
            model_path,
            dtype,
            max_model_len=max_model_len,
            device=device,
            n_banned=len(settings.banned_ids),
            **llm_kwargs,
        )
        if set_env:
            log.info("vLLM: %d banned ids per request: %s", len(settings.banned_ids), set_env)
            os.environ.update(set_env)
        # the runner choice is read when an engine starts: it is part of the engine's identity
        key = (repr(sorted(kwargs.items())), os.environ.get("VLLM_USE_V2_MODEL_RUNNER"))
        if key not in _ENGINES:
            _ENGINES[key] = LLM(**kwargs)
        self.llm = _ENGINES[key]

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


# ----------------------------------------------------------------------------- stage


def decode_rows(
    backend,
    base_embeds: torch.Tensor,
    marker_pos: int,
    injection_scale: float,
    vectors: np.ndarray,
    doc_ids: Sequence[str],
    positions: Sequence[int],
    cond: Condition,
    seed: int,
    batch_size: int,
    progress: bool = True,
) -> list[dict]:
    """Generate for every (row, sample); rows with unusable vectors get an error, no text."""
    from tqdm.auto import tqdm

    prompts = build_prompt_embeds(base_embeds, marker_pos, vectors, injection_scale)
    requests = build_requests(doc_ids, positions, cond, seed)
    todo = [r for r in requests if prompts.ok[r.row]]
    if getattr(backend, "schedules_itself", False):
        batch_size = max(1, len(todo))  # one call: the engine batches continuously
    results: dict[tuple[int, int], Generation] = {}
    for start in tqdm(
        range(0, len(todo), batch_size),
        desc=f"decode {cond.name}",
        unit="batch",
        disable=not progress,
    ):
        batch = todo[start : start + batch_size]
        embeds = prompts.embeds[[r.row for r in batch]]
        for r, g in zip(batch, backend.generate(embeds, batch, cond), strict=True):
            results[(r.row, r.sample)] = g
    rows = []
    for r in requests:
        g = results.get((r.row, r.sample))
        text = g.text if g else None
        rows.append(
            {
                "row": r.row,
                "doc_id": r.doc_id,
                "position": r.position,
                "sample": r.sample,
                "seed": r.seed,
                "text": text,
                "explanation": extract_explanation(text) if text is not None else None,
                "n_tokens": g.n_tokens if g else 0,
                "finish_reason": g.finish_reason if g else "error",
                "error": prompts.errors[r.row],
                "leaks": count_leaks(text or "", cond.banned_chars),
            }
        )
    return rows


DECODE_META_KEY = C.DECODE_META_KEY


def decode_table(rows: list[dict], meta: dict):
    import pyarrow as pa

    from nlaprobe.io import with_meta

    schema = pa.schema(
        [
            ("row", pa.int64()),
            ("doc_id", pa.string()),
            ("position", pa.int64()),
            ("sample", pa.int64()),
            ("seed", pa.int64()),
            ("text", pa.string()),
            ("explanation", pa.string()),
            ("n_tokens", pa.int64()),
            ("finish_reason", pa.string()),
            ("error", pa.string()),
            ("leaks", pa.int64()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    return with_meta(table, DECODE_META_KEY, meta)


def decode_summary(rows: list[dict], n_banned: int) -> dict:
    scored = [r for r in rows if r["error"] is None]
    return {
        "n_rows": len(rows),
        "n_errors": len(rows) - len(scored),
        "n_tag_failures": sum(1 for r in scored if r["explanation"] is None),
        "n_banned_tokens": n_banned,
        "n_leaks": sum(r["leaks"] for r in rows),
    }


def decode_shard(
    src,
    activations: str,
    out: str,
    cond: Condition,
    *,
    seed: int,
    max_new_tokens: int = 200,
    batch_size: int = 16,
    backend: str = "hf",
    device: str = "cpu",
    provenance: dict | None = None,
    tensor_parallel_size: int = 1,
) -> dict:
    """The decode stage on files: the AV family's activation shard -> decode shard (atomic).
    `tensor_parallel_size` > 1 (vLLM only) spreads the AV over that many of the job's GPUs."""
    from nlaprobe import constants as C
    from nlaprobe.checkpoints import load_av, require_safetensors
    from nlaprobe.extract import resolve_device
    from nlaprobe.io import read_table, vectors_from_column, write_table

    DecodeParams.from_json(  # the same checks as the CLI's, for callers of this function
        {
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "backend": backend,
            "tensor_parallel_size": tensor_parallel_size,
        },
        source="decode parameters",
    )
    if tensor_parallel_size > 1 and backend != "vllm":
        raise ConfigError(
            f"decode.tensor_parallel_size {tensor_parallel_size} needs decode.backend vllm, "
            f"got {backend!r}"
        )
    backend_cls = get_backend(backend)
    device = resolve_device(device)
    column = C.COL_VECTOR if cond.layer is None else C.layer_column(cond.layer)
    table = read_table(activations, {C.COL_DOC_ID: "str", C.COL_POSITION: "int", column: "vector"})
    av = load_av(src, device, load_model=(backend == "hf"))
    # non-finite rows become per-row errors (SPEC §4.6), not a failed shard
    vectors = vectors_from_column(
        table, column, width=av.meta.d_model, where=str(activations), require_finite=False
    )
    # ids past the model's output rows (a tokenizer longer than the vocabulary) are never
    # generated, and vLLM rejects them in logit_bias
    banned = [i for i in banned_token_ids(av.tokenizer, cond.banned_chars) if i < av.vocab_size]
    settings = DecodeSettings(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop_token_ids=tuple(av.stop_token_ids),
        pad_token_id=av.tokenizer.pad_token_id if av.tokenizer.pad_token_id is not None else 0,
        banned_ids=tuple(banned),
    )
    if backend == "hf":
        engine = backend_cls(av.model, av.tokenizer, settings, device)
        base = prompt_token_embeds(av.model, av.prompt_ids)
    else:
        require_safetensors(av.directory)  # vLLM's own loader would also read pickled weights
        engine = backend_cls(
            str(av.directory),
            av.tokenizer,
            settings,
            dtype=str(src.dtype).removeprefix("torch."),
            max_model_len=len(av.prompt_ids) + max_new_tokens,
            device=device,
            **({"tensor_parallel_size": tensor_parallel_size} if tensor_parallel_size > 1 else {}),
        )
        base = av.prompt_embeds_from_weights(src.dtype)
    rows = decode_rows(
        engine,
        base,
        av.marker_pos,
        av.meta.injection_scale,
        vectors,
        table.column(C.COL_DOC_ID).to_pylist(),
        table.column(C.COL_POSITION).to_pylist(),
        cond,
        seed,
        batch_size,
    )
    summary = decode_summary(rows, len(banned))
    meta = {
        "condition": {
            "name": cond.name,
            "temperature": cond.temperature,
            "n_samples": cond.n_samples,
            "banned_chars": cond.banned_chars,
            "layer_column": column,
        },
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "backend": backend,
        "av": av.source.describe(),
        "activations": str(activations),
        "summary": summary,
        "provenance": provenance or {},
    }
    write_table(out, decode_table(rows, meta))
    log.info("decoded %s: %s", out, summary)
    return summary
