"""AR scoring: batched right-padded readout vs one text at a time (SPEC §9), identical numbers.

Builds a tiny random-weight family (nlaprobe.fixtures.build_family) in a temporary folder, fills
the AR template with N explanations of varied length (prefixes of the built-in pydoc corpus),
reads them out with `nlaprobe.score.readout` once in right-padded batches and once one text per
forward, and prints the largest absolute difference (must be ≤ 1e-5), both times and their ratio.
Timings are the best of --repeats wall-clock runs after one warm-up call.

    python benchmarks/ar_batching.py [--n 256] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="number of explanations")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--min-words", type=int, default=3)
    p.add_argument("--max-words", type=int, default=120)
    p.add_argument("--style", choices=["qwen", "gemma"], default="qwen")
    p.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny family")
    p.add_argument("--layers", type=int, default=4, help="decoder blocks of the tiny family")
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
    from nlaprobe.models.loading import load_ar
    from nlaprobe.score import ar_texts, readout, tokenize_ar

    hf_logging.set_verbosity_error()
    docs = [t for _topic, t in pydoc_documents()]
    sizes = TinySizes(
        vocab_size=1024,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_layers=args.layers,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fam = build_family(args.style, Path(tmp) / args.style, docs, sizes=sizes, layer=2)
        ar = load_ar(resolve_source({"path": str(fam / "ar"), "dtype": "float32"}, "ar"))

    rng = random.Random(args.seed)
    explanations = []
    for i in range(args.n):
        words = docs[i % len(docs)].split()
        explanations.append(" ".join(words[: rng.randint(args.min_words, args.max_words)]))
    texts = ar_texts(ar.meta.ar_template, explanations)
    lengths = [len(ids) for ids in tokenize_ar(ar.tokenizer, texts)]

    def batched_run() -> np.ndarray:
        return readout(ar, texts, batch_size=args.batch_size, progress=False)

    def single_run() -> np.ndarray:
        return np.stack([readout(ar, [t], batch_size=1, progress=False)[0] for t in texts])

    readout(ar, texts[: args.batch_size], batch_size=args.batch_size, progress=False)  # warm-up
    t_batched = t_single = math.inf
    for _ in range(max(1, args.repeats)):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        batched = batched_run()
        t_batched = min(t_batched, time.perf_counter() - t0)
        t0 = time.perf_counter()
        single = single_run()
        t_single = min(t_single, time.perf_counter() - t0)

    diff = float(np.abs(batched - single).max())
    scale = float(np.abs(single).max())
    print(
        f"AR readout, {args.style}-style tiny family: d={args.hidden}, K=2 (3 blocks), "
        f"threads {torch.get_num_threads()}"
    )
    print(
        f"texts {args.n}, tokens per text min/median/max "
        f"{min(lengths)}/{int(np.median(lengths))}/{max(lengths)}"
    )
    print(f"batched (batch {args.batch_size}, right-padded): {t_batched:8.3f} s")
    print(f"one text at a time:                 {t_single:8.3f} s")
    verdict = "within" if diff <= 1e-5 else "ABOVE"
    print(f"max |batched - single|: {diff:.2e} (largest |value| {scale:.2e}; {verdict} 1e-5)")
    print(f"speed-up (one-at-a-time / batched): {t_single / t_batched:.1f}x")


if __name__ == "__main__":
    main()
