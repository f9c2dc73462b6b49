"""What each job asks the scheduler for, estimated from the config (never from the weights).

inputs -> outputs: a validated config -> per rule and job: `mem_mb` (host memory, MB),
`runtime` (minutes), `threads` (CPUs) and `gpu` (count), plus the GPU memory a model job needs
(`gpu_mem_mb`, printed by `nlaprobe plan` to choose a GPU; no scheduler reads it).

Invariants:
- pure: no I/O, no network, no torch; planning a DAG never loads a checkpoint;
- a checkpoint's size comes from its entry: `demo` entries from the `demo` sizes (or from
  `demo.base_models.<style>` when the family is trained on a real base), hub ids from
  KNOWN_MODELS (architectures of the published checkpoints), anything else from the entry's
  `params_b` (billions of parameters), which also overrides the table, and a local `path:`
  folder without it from its config.json (arch_from_hf_config). An entry with none of these
  is an error naming its key: an unknown model gets no silent guess;
- the same profile therefore fits a tiny CPU config on a small node and the paper config on a GPU
  node: profiles keep cluster facts only (partitions, account, limits).

The estimate (all constants below, in one place):
- weights = parameters x bytes of the entry's dtype (float32 4, bfloat16/float16 2);
- host memory = (PROCESS_MB (Python, torch, transformers, pyarrow resident) + on the CPU the
  workspace) x MEM_SAFETY + every model the job holds, in full (transformers loads on the CPU
  before moving to a GPU), x WEIGHTS_SAFETY (buffers), rounded up to 100 MB;
- workspace of a forward (extract, score) = batch x tokens x (4 hidden + 2 intermediate) x bytes
  (residual stream, attention projections, MLP) + batch x heads x tokens^2 x bytes (attention
  scores, materialised by the eager and CPU paths); of a decode the KV cache, batch x (prompt +
  new tokens) x 2 x layers x kv width x bytes, plus float32 logits of one step;
  training (build_demo) keeps base, AV and AR (3 float32 copies) and, for the model it trains,
  gradients and two AdamW states (12 bytes per parameter) and activations of every block;
  pretraining reads DEMO_SEQ_TOKENS per sequence, AV and AR training DEMO_PAIR_TOKENS (prompt
  and explanation);
- GPU memory (per device) = (models x WEIGHTS_SAFETY + workspace x MEM_SAFETY) / GPUs of the
  job + GPU_CONTEXT_MB; a job's GPUs: 1, or decode.tensor_parallel_size for a decode and
  sampling.gpus_per_job for an extraction (0 on the CPU);
- runtime = STARTUP_S + weights / LOAD_BPS (read, or fetched from the hub) + compute, x
  TIME_SAFETY, rounded up to 5 minutes, at least MIN_RUNTIME_MIN. Compute: 2 x parameters FLOPs
  per token of a forward (6 for training) at CPU_FLOPS per thread or GPU_FLOPS; a decode step
  reads every weight once, at CPU_BW or GPU_BW, whichever of the two bounds is slower;
- threads: models under TINY_PARAMS parameters are bound by per-call overhead, so one thread per
  job (jobs run side by side); larger models CPU_THREADS on the CPU; a GPU job GPU_JOB_THREADS
  (tokenisation, host-side work);
- ridge (E8): float64 kernel matrices, n x n, RIDGE_KERNEL_COPIES alive during an
  eigendecomposition; (4/3 + 4) n^3 FLOPs per eigendecomposition (one per kernel and gamma).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from nlaprobe.errors import ConfigError

MB = 1e6
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

PROCESS_MB = 1000
MEM_SAFETY = 1.25
WEIGHTS_SAFETY = 1.05
GPU_CONTEXT_MB = 1000
STARTUP_S = 60
LOAD_BPS = 100e6
CPU_FLOPS = 5e10
GPU_FLOPS = 2e13
CPU_BW = 1e10
GPU_BW = 1e12
CPU_FP64_FLOPS = 5e9
GPU_FP64_FLOPS = 1e12
TIME_SAFETY = 2.0
MIN_RUNTIME_MIN = 10
TINY_PARAMS = 1e8
CPU_THREADS = 8
GPU_JOB_THREADS = 4
# chat template and injected marker of the AV prompt; template around an explanation for the AR
PROMPT_TOKENS = 128
# the demo build's training sequences (nlaprobe.demo.TRAIN_MAX_LENGTH) and AR-mix decodes
DEMO_SEQ_TOKENS = 256
DEMO_PAIR_TOKENS = 128
DEMO_MIX_NEW_TOKENS = 64
RIDGE_KERNEL_COPIES = 4

MODEL_RULES = ("build_demo", "extract", "decode", "score")


@dataclass(frozen=True)
class Arch:
    """A decoder-only transformer's shape, enough to count parameters and size workspaces."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # key/value heads x head_dim
    lm_head: bool  # an untied output projection
    extra: float = 0.0  # parameters outside the decoder (vision tower, AR value head)

    @property
    def params(self) -> float:
        block = (
            2 * self.hidden * self.q_dim  # q, o
            + 2 * self.hidden * self.kv_dim  # k, v
            + 3 * self.hidden * self.intermediate  # gate, up, down
            + 4 * self.hidden  # norms
        )
        embed = self.vocab * self.hidden * (2 if self.lm_head else 1)
        return float(embed + self.layers * block + self.hidden + self.extra)


def _gemma3_27b(layers: int = 62, *, lm_head: bool = False, extra: float = 0.0) -> Arch:
    # google/gemma-3-27b-it text config: tied embeddings, 32 query / 16 key-value heads of 128
    return Arch(262208, 5376, 21504, layers, 32, 4096, 2048, lm_head, extra)


def _qwen25_7b(layers: int = 28, *, lm_head: bool = True, extra: float = 0.0) -> Arch:
    # Qwen/Qwen2.5-7B-Instruct: untied lm_head, 28 query / 4 key-value heads of 128
    return Arch(152064, 3584, 18944, layers, 28, 3584, 512, lm_head, extra)


# The published checkpoints (config/paper.yaml). Gemma's base carries the SigLIP vision tower
# (~0.42 B); the ARs keep K+1 decoder blocks, no lm_head, and add a d x d value head.
KNOWN_MODELS: dict[str, Arch] = {
    "google/gemma-3-27b-it": _gemma3_27b(extra=0.42e9),
    "kitft/nla-gemma3-27b-L41-av": _gemma3_27b(),
    "kitft/nla-gemma3-27b-L41-ar": _gemma3_27b(42, extra=5376**2),
    "Qwen/Qwen2.5-7B-Instruct": _qwen25_7b(),
    "kitft/nla-qwen2.5-7b-L20-av": _qwen25_7b(),
    "kitft/nla-qwen2.5-7b-L20-ar": _qwen25_7b(21, lm_head=False, extra=3584**2),
}


def arch_from_params(params: float) -> Arch:
    """A conservative shape for a model known only by its size: a dense transformer with
    params ~ 12 L h^2 and L = h / 128 (about the published 7-70 B models), full multi-head
    attention (KV width = hidden, more than any grouped-query model) and a 4h MLP."""
    hidden = max(128, 128 * math.ceil((128 * params / 12) ** (1 / 3) / 128))
    layers = max(1, hidden // 128)
    base = Arch(0, hidden, 4 * hidden, layers, hidden // 128, hidden, hidden, False)
    return replace(base, extra=max(0.0, params - base.params))


def demo_arch(demo: dict, *, layers: int | None = None, lm_head: bool = True) -> Arch:
    """The tiny demo model of the `demo` sizes (nlaprobe.fixtures): every demo role is counted
    with the base's blocks and an lm_head (an upper bound for the truncated AR)."""
    hidden, heads = int(demo["hidden_size"]), int(demo["num_heads"])
    head_dim = max(1, hidden // heads)
    return Arch(
        vocab=int(demo["vocab_size"]),
        hidden=hidden,
        intermediate=int(demo["intermediate_size"]),
        layers=layers or int(demo["num_layers"]),
        heads=heads,
        q_dim=heads * head_dim,
        kv_dim=int(demo["num_kv_heads"]) * head_dim,
        lm_head=lm_head,
    )


HF_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)


def arch_from_hf_config(hf: dict, where: str) -> Arch:
    """The shape of a transformers `config.json` (a multimodal wrapper's `text_config`):
    vocab, hidden, MLP width, blocks, query heads, key/value heads (default: the query heads),
    head_dim (default hidden / heads) and whether the lm_head is untied (`tie_word_embeddings`,
    default true: counted once). Not counted: a vision tower, an AR's d x d value head (not in
    config.json; d^2 is under 1% of any model this estimate matters for); give `params_b`
    where that matters."""
    text = hf.get("text_config") if isinstance(hf.get("text_config"), dict) else hf
    missing = [k for k in HF_CONFIG_KEYS if not isinstance(text.get(k), int) or text[k] < 1]
    if missing:
        raise ConfigError(
            f"{where}: config.json lacks positive integer {', '.join(missing)}; add `params_b: "
            "<billions of parameters>` to the entry"
        )
    hidden, heads = text["hidden_size"], text["num_attention_heads"]
    head_dim = text.get("head_dim") or hidden // heads
    kv_heads = text.get("num_key_value_heads") or heads
    tied = hf.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    return Arch(
        vocab=text["vocab_size"],
        hidden=hidden,
        intermediate=text["intermediate_size"],
        layers=text["num_hidden_layers"],
        heads=heads,
        q_dim=heads * head_dim,
        kv_dim=kv_heads * head_dim,
        lm_head=not tied,
    )


def _local_config(path: str, where: str) -> dict | None:
    """A local checkpoint folder's config.json, or None when it has none."""
    f = Path(path) / "config.json"
    if not f.is_file():
        return None
    try:
        hf = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: {f} is not readable JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ConfigError(f"{where}: {f} is not a JSON object")
    return hf


def _scaled(arch: Arch, params_b: float | None) -> Arch:
    """`arch` with its parameter count set to `params_b` billions (the entry's override)."""
    if params_b is None:
        return arch
    return replace(arch, extra=arch.extra + params_b * 1e9 - arch.params)


def entry_arch(entry: dict, demo: dict, where: str) -> Arch:
    """The architecture of a checkpoint entry (see the module docstring); `where` names the
    entry's key in errors."""
    params_b = entry.get("params_b")
    if entry.get("demo"):
        real = (demo.get("base_models") or {}).get(entry["demo"])
        if real:
            return _scaled(entry_arch(real, demo, f"demo.base_models.{entry['demo']}"), params_b)
        return _scaled(demo_arch(demo), params_b)
    if entry.get("id") in KNOWN_MODELS:
        return _scaled(KNOWN_MODELS[entry["id"]], params_b)
    if params_b is not None:
        return arch_from_params(params_b * 1e9)
    if entry.get("path"):
        hf = _local_config(entry["path"], where)
        if hf is not None:
            return arch_from_hf_config(hf, where)
    name = entry.get("id") or entry.get("path")
    raise ConfigError(
        f"{where}: cannot estimate the resources of checkpoint {name!r}: it is not one of the "
        f"known ids ({', '.join(sorted(KNOWN_MODELS))}) nor a local folder with a config.json; "
        f"add `params_b: <billions of parameters>` to the entry (its model card gives the size)"
    )


def dtype_bytes(entry: dict) -> int:
    return DTYPE_BYTES[entry.get("dtype", "bfloat16")]


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """What one job asks for. `gpu_mem_mb` is 0 for a CPU job."""

    mem_mb: int
    runtime: int
    threads: int
    gpu: int
    gpu_mem_mb: int = 0

    def resources(self) -> dict[str, int]:
        """The Snakemake resources of the job (threads are the rule's `threads`)."""
        return {"mem_mb": self.mem_mb, "runtime": self.runtime, "gpu": self.gpu}


def _round_up(x: float, step: int) -> int:
    return int(math.ceil(x / step - 1e-9) * step)


def mem_request(model_bytes: float, workspace_bytes: float, on_gpu: bool) -> int:
    process = PROCESS_MB * MB + (0 if on_gpu else workspace_bytes)
    return _round_up((MEM_SAFETY * process + WEIGHTS_SAFETY * model_bytes) / MB, 100)


def gpu_mem_request(model_bytes: float, workspace_bytes: float, on_gpu: bool, gpus: int = 1) -> int:
    """GPU memory per device: weights and workspace split evenly over `gpus` devices (tensor
    parallelism and device_map both shard the weights; each device has its own context)."""
    if not on_gpu:
        return 0
    need = (WEIGHTS_SAFETY * model_bytes + MEM_SAFETY * workspace_bytes) / gpus
    return _round_up(need / MB + GPU_CONTEXT_MB, 100)


def runtime_request(load_bytes: float, compute_s: float) -> int:
    seconds = STARTUP_S + load_bytes / LOAD_BPS + compute_s
    return max(MIN_RUNTIME_MIN, _round_up(TIME_SAFETY * seconds / 60, 5))


def model_threads(params: float, on_gpu: bool) -> int:
    if on_gpu:
        return GPU_JOB_THREADS
    return 1 if params < TINY_PARAMS else CPU_THREADS


def forward_workspace(arch: Arch, batch: int, tokens: int, nbytes: int) -> float:
    acts = batch * tokens * (4 * arch.hidden + 2 * arch.intermediate) * nbytes
    attn = batch * arch.heads * tokens**2 * nbytes
    return float(acts + attn)


def kv_cache(arch: Arch, batch: int, tokens: int, nbytes: int) -> float:
    return float(
        batch * tokens * 2 * arch.layers * arch.kv_dim * nbytes + 2 * batch * arch.vocab * 4
    )


def forward_seconds(params: float, tokens: float, threads: int, on_gpu: bool) -> float:
    return 2 * params * tokens / (GPU_FLOPS if on_gpu else CPU_FLOPS * threads)


def extract_request(
    arch: Arch,
    nbytes: int,
    *,
    docs: int,
    batch: int,
    max_length: int,
    on_gpu: bool,
    gpus: int = 1,
) -> Request:
    """One extraction job: the base model over `docs` documents of up to `max_length` tokens,
    `batch` documents per forward; on a GPU over `gpus` devices (device_map auto), the GPU
    memory per device."""
    weights = arch.params * nbytes
    work = forward_workspace(arch, min(batch, docs), max_length, nbytes)
    threads = model_threads(arch.params, on_gpu)
    compute = forward_seconds(arch.params, docs * max_length, threads, on_gpu)
    return Request(
        mem_request(weights, work, on_gpu),
        runtime_request(weights, compute),
        threads,
        gpus if on_gpu else 0,
        gpu_mem_request(weights, work, on_gpu, gpus),
    )


def decode_request(
    arch: Arch,
    nbytes: int,
    *,
    sequences: int,
    batch: int,
    new_tokens: int,
    on_gpu: bool,
    gpus: int = 1,
) -> Request:
    """One decode job: `sequences` generations of up to `new_tokens`, `batch` at a time; on a
    GPU over `gpus` devices (vLLM tensor parallelism), the GPU memory per device."""
    weights = arch.params * nbytes
    batch = max(1, min(batch, sequences))
    work = kv_cache(arch, batch, PROMPT_TOKENS + new_tokens, nbytes)
    threads = model_threads(arch.params, on_gpu)
    steps = math.ceil(sequences / batch) * new_tokens
    per_step = max(
        weights / (GPU_BW if on_gpu else CPU_BW),
        forward_seconds(arch.params, batch, threads, on_gpu),
    )
    prefill = forward_seconds(arch.params, sequences * PROMPT_TOKENS, threads, on_gpu)
    return Request(
        mem_request(weights, work, on_gpu),
        runtime_request(weights, steps * per_step + prefill),
        threads,
        gpus if on_gpu else 0,
        gpu_mem_request(weights, work, on_gpu, gpus),
    )


def score_request(
    arch: Arch, nbytes: int, *, texts: int, batch: int, new_tokens: int, on_gpu: bool
) -> Request:
    """One scoring job: the AR reads `texts` explanations of up to `new_tokens` tokens."""
    weights = arch.params * nbytes
    tokens = PROMPT_TOKENS + new_tokens
    work = forward_workspace(arch, max(1, min(batch, texts)), tokens, nbytes)
    threads = model_threads(arch.params, on_gpu)
    compute = forward_seconds(arch.params, texts * tokens, threads, on_gpu)
    return Request(
        mem_request(weights, work, on_gpu),
        runtime_request(weights, compute),
        threads,
        int(on_gpu),
        gpu_mem_request(weights, work, on_gpu),
    )


def demo_request(arch: Arch, train: dict, *, real_base: bool, on_gpu: bool) -> Request:
    """One demo build: base, AV and AR in float32 (3 copies), one of them training with AdamW;
    pretraining (tiny bases only), AV and AR steps of `av_batch` sequences, and the AR-mix
    decodes."""
    p, batch = arch.params, int(train["av_batch"])
    models = 3 * p * 4
    optimizer = 12 * p
    acts = batch * DEMO_SEQ_TOKENS * arch.layers * (4 * arch.hidden + 2 * arch.intermediate) * 4
    acts += batch * arch.heads * DEMO_SEQ_TOKENS**2 * 4 * arch.layers
    threads = model_threads(p, on_gpu)
    tokens = (int(train["av_steps"]) + int(train["ar_steps"])) * batch * DEMO_PAIR_TOKENS
    if not real_base:
        tokens += int(train["base_steps"]) * batch * DEMO_SEQ_TOKENS
    rate = GPU_FLOPS if on_gpu else CPU_FLOPS * threads
    compute = 6 * p * tokens / rate
    if train.get("ar_mix", True) and int(train["av_steps"]):
        compute += 2 * p * int(train["ar_mix_rows"]) * (PROMPT_TOKENS + DEMO_MIX_NEW_TOKENS) / rate
    load = p * 4 if real_base else 0.0
    return Request(
        mem_request(models + optimizer, acts, on_gpu),
        runtime_request(load, compute),
        threads,
        int(on_gpu),
        gpu_mem_request(models + optimizer, acts, on_gpu),
    )


def ridge_request(n: int, n_eval: int, d_src: int, d_dst: int, fits: int, on_gpu: bool) -> Request:
    """One ridge job: kernel ridge on `n` training pairs ([n, d_src] -> [n, d_dst], float64),
    evaluated on `n_eval` rows; `fits` eigendecompositions (kernels x gammas)."""
    kernels = RIDGE_KERNEL_COPIES * n * n * 8 + n * n_eval * 8
    data = (n + n_eval) * (d_src + d_dst) * 8 * 2
    threads = 1 if n <= 5000 or on_gpu else CPU_THREADS
    flops = fits * ((4 / 3 + 4) * n**3 + 2 * n * n * (d_src + d_dst))
    compute = flops / (GPU_FP64_FLOPS if on_gpu else CPU_FP64_FLOPS * threads)
    return Request(
        mem_request(data, kernels, on_gpu),
        runtime_request(0.0, compute),
        threads,
        int(on_gpu),
        gpu_mem_request(data, kernels, on_gpu),
    )


def largest(requests) -> Request:
    """The element-wise largest of several requests (the rule's worst job)."""
    rs = list(requests)
    return Request(
        max(r.mem_mb for r in rs),
        max(r.runtime for r in rs),
        max(r.threads for r in rs),
        max(r.gpu for r in rs),
        max(r.gpu_mem_mb for r in rs),
    )
