"""AV decode: batched HF generation vs one row at a time (SPEC §9), identical greedy outputs.

Builds a tiny random-weight family (nlaprobe.fixtures.build_family) in a temporary folder, decodes
N random vectors greedily through `HFBackend` (the decode stage's own code path: shared prompt
embeddings, `generate(inputs_embeds=...)`) once with all rows in one batch and once one row per
call, checks that every text is identical and prints both times and their ratio.

The random Qwen-style AV copies its last prompt token whatever the vector; by default its weights
are redrawn at a larger scale (--redraw-std) so that outputs differ from row to row and the
identity check means something. Timings are the best of --repeats wall-clock runs after one
warm-up call.

    python benchmarks/decode_batching.py [--n 64] [--max-new-tokens 32] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="number of activation vectors")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the batched run")
    p.add_argument("--style", choices=["qwen", "gemma"], default="qwen")
    p.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny family")
    p.add_argument("--layers", type=int, default=4, help="decoder blocks of the tiny family")
    p.add_argument(
        "--redraw-std",
        type=float,
        default=2.0,
        help="redraw 2-D weights as N(0, std²/fan_in) so outputs depend on the vector; 0 keeps "
        "the fixture weights and the sidecar's injection scale",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from nlaprobe.checkpoints import resolve_source
    from nlaprobe.documents import pydoc_documents
    from nlaprobe.fixtures import TinySizes, build_family
    from nlaprobe.models import backends, forward, generation
    from nlaprobe.models.loading import load_av

    hf_logging.set_verbosity_error()
    texts = [t for _topic, t in pydoc_documents()]
    sizes = TinySizes(
        vocab_size=1024,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_layers=args.layers,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fam = build_family(args.style, Path(tmp) / args.style, texts, sizes=sizes, layer=2)
        av = load_av(resolve_source({"path": str(fam / "av"), "dtype": "float32"}, "av"))
    scale = av.meta.injection_scale
    if args.redraw_std > 0:
        gen = torch.Generator().manual_seed(args.seed + 1)
        with torch.no_grad():
            for p in av.model.parameters():
                if p.ndim == 2:
                    p.copy_(
                        torch.randn(p.shape, generator=gen)
                        * args.redraw_std
                        / math.sqrt(p.shape[1])
                    )
        emb = forward.prompt_token_embeds(av.model, av.prompt_ids)
        scale = 3.0 * float(emb.norm(dim=1).mean())

    settings = backends.DecodeSettings(
        max_new_tokens=args.max_new_tokens,
        stop_token_ids=tuple(av.stop_token_ids),
        pad_token_id=av.tokenizer.pad_token_id or 0,
    )
    engine = backends.HFBackend(av, settings)
    base = engine.prompt_embeds()
    vecs = (
        np.random.default_rng(args.seed).standard_normal((args.n, args.hidden)).astype(np.float32)
    )
    doc_ids = [f"bench:decode:{i}" for i in range(args.n)]
    positions = [50] * args.n
    cond = generation.parse_condition("greedy")

    def run(batch_size: int, n: int | None = None) -> tuple[list[dict], float]:
        k = args.n if n is None else n
        t0 = time.perf_counter()
        rows = generation.decode_rows(
            engine,
            base,
            av.marker_pos,
            scale,
            vecs[:k],
            doc_ids[:k],
            positions[:k],
            cond,
            seed=0,
            batch_size=batch_size,
            progress=False,
        )
        return rows, time.perf_counter() - t0

    run(min(args.batch_size, args.n), n=min(args.batch_size, args.n))  # warm-up
    t_batched = t_single = math.inf
    for _ in range(max(1, args.repeats)):  # interleaved, so both see the same machine load
        batched, t = run(args.batch_size)
        t_batched = min(t_batched, t)
        single, t = run(1)
        t_single = min(t_single, t)

    texts_b = [r["text"] for r in batched]
    texts_s = [r["text"] for r in single]
    identical = texts_b == texts_s
    n_tokens = sum(r["n_tokens"] for r in batched)
    n_same = sum(a == b for a, b in zip(texts_b, texts_s, strict=True))
    print(
        f"AV decode, {args.style}-style tiny family: d={args.hidden}, {args.layers} blocks, "
        f"vocab {len(av.tokenizer)}, threads {torch.get_num_threads()}"
    )
    print(
        f"rows {args.n}, greedy, max_new_tokens {args.max_new_tokens}, "
        f"generated tokens {n_tokens}, distinct texts {len(set(texts_b))}"
    )
    print(f"batched (batch {args.batch_size}): {t_batched:8.3f} s")
    print(f"one row at a time:       {t_single:8.3f} s")
    print(f"identical texts: {identical} ({n_same}/{args.n})")
    print(f"speed-up (one-at-a-time / batched): {t_single / t_batched:.1f}x")


if __name__ == "__main__":
    main()
