"""AV decode: the HF backend (batched `generate`) vs the vLLM backend, the same greedy rows.

Both run through the decode stage's own code (`decode_rows` with the shared prompt embeddings,
`HFBackend` / `VLLMBackend`) with identical settings: greedy, the same max_new_tokens and stop
ids, fp32. Prints the generated tokens per second of each, their ratio and how many texts are
identical, from one run. Model loading is timed apart and not counted.

The AV is `--av DIR` (e.g. an embedded-default AV: results/demo/demo-<tag>/qwen/av) with the
activation vectors of `--acts` (its eval shard), or by default a tiny random-weight family
(nlaprobe.fixtures) whose weights are redrawn so that outputs vary from row to row, fed random
vectors. vLLM needs its extra (`make install-vllm`); the engine runs in a spawned process, hence
the main guard below.

    python benchmarks/decode_backends.py [--av DIR --acts SHARD] [--n 320] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import best_times  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--av", help="an AV checkpoint directory (default: a tiny random family)")
    p.add_argument("--acts", help="an activation shard for --av (default: random vectors)")
    p.add_argument("--n", type=int, default=320, help="rows (the first n of --acts)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the HF backend")
    p.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny family")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def tiny_av(tmp: Path, hidden: int, seed: int):
    """A random tiny Qwen-style AV whose greedy output depends on the vector (weights redrawn
    at a larger scale, saved, so both engines read the same files); its injection scale."""
    from nlaprobe.checkpoints import resolve_source
    from nlaprobe.documents import pydoc_documents
    from nlaprobe.fixtures import TinySizes, build_family
    from nlaprobe.models import forward
    from nlaprobe.models.loading import load_av

    texts = [t for _topic, t in pydoc_documents()]
    sizes = TinySizes(vocab_size=1024, hidden_size=hidden, intermediate_size=3 * hidden)
    fam = build_family("qwen", tmp / "qwen", texts, sizes=sizes, layer=2)
    av = load_av(resolve_source({"path": str(fam / "av"), "dtype": "float32"}, "av"))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in av.model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 2.0 / math.sqrt(p.shape[1]))
    av.model.save_pretrained(fam / "av")
    scale = 3.0 * float(forward.prompt_token_embeds(av.model, av.prompt_ids).norm(dim=1).mean())
    return fam / "av", scale


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from transformers.utils import logging as hf_logging

    from nlaprobe.checkpoints import resolve_source
    from nlaprobe.io import read_table
    from nlaprobe.models import backends, generation
    from nlaprobe.models.loading import load_av

    hf_logging.set_verbosity_error()
    tmp = tempfile.TemporaryDirectory()
    if args.av:
        av_dir, scale = Path(args.av), None
    else:
        av_dir, scale = tiny_av(Path(tmp.name), args.hidden, args.seed)
    t0 = time.perf_counter()
    av = load_av(resolve_source({"path": str(av_dir), "dtype": "float32"}, "av"))
    t_load_hf = time.perf_counter() - t0
    scale = av.meta.injection_scale if scale is None else scale
    d = av.meta.d_model
    if args.acts:
        table = read_table(args.acts, ["doc_id", "position", "activation_vector"])
        n = min(args.n, table.num_rows)
        vecs = np.asarray(table.column("activation_vector").to_pylist()[:n], np.float32)
        doc_ids = table.column("doc_id").to_pylist()[:n]
        positions = table.column("position").to_pylist()[:n]
    else:
        n = args.n
        vecs = np.random.default_rng(args.seed).standard_normal((n, d)).astype(np.float32)
        doc_ids, positions = [f"bench:backends:{i}" for i in range(n)], [50] * n
    settings = backends.DecodeSettings(
        max_new_tokens=args.max_new_tokens,
        stop_token_ids=tuple(av.stop_token_ids),
        pad_token_id=av.tokenizer.pad_token_id or 0,
    )
    cond = generation.parse_condition("greedy")
    hf = backends.get_backend("hf")(av, settings)
    t0 = time.perf_counter()
    vl = backends.get_backend("vllm")(av, settings)
    t_load_vllm = time.perf_counter() - t0

    def run(engine, base):
        return lambda: generation.decode_rows(
            engine,
            base,
            av.marker_pos,
            scale,
            vecs,
            doc_ids,
            positions,
            cond,
            seed=0,
            batch_size=args.batch_size,
            progress=False,
        )

    hf_run = run(hf, hf.prompt_embeds())
    vl_run = run(vl, vl.prompt_embeds())
    hf_run(), vl_run()  # warm-up
    (t_hf, t_vl), (rows_hf, rows_vl) = best_times([hf_run, vl_run], args.repeats)
    tok_hf = sum(r["n_tokens"] for r in rows_hf)
    tok_vl = sum(r["n_tokens"] for r in rows_vl)
    same = sum(a["text"] == b["text"] for a, b in zip(rows_hf, rows_vl, strict=True))
    import vllm

    print(
        f"AV {av_dir if args.av else 'tiny random Qwen-style'}: d={d}, vocab {av.vocab_size}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}, vllm {vllm.__version__}"
    )
    print(
        f"rows {n}, greedy, max_new_tokens {args.max_new_tokens}, fp32; "
        f"load (not timed below): HF {t_load_hf:.1f} s, vLLM {t_load_vllm:.1f} s"
    )
    print(f"HF batched (batch {args.batch_size}): {t_hf:7.3f} s, {tok_hf / t_hf:8.0f} tokens/s")
    print(f"vLLM:                     {t_vl:7.3f} s, {tok_vl / t_vl:8.0f} tokens/s")
    print(f"identical texts: {same}/{n}; tokens HF {tok_hf}, vLLM {tok_vl}")
    print(f"speed-up (vLLM / HF tokens per second): {(tok_vl / t_vl) / (tok_hf / t_hf):.1f}x")
    backends.release_engines()
    tmp.cleanup()


if __name__ == "__main__":
    main()
