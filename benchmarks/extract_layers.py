"""Extraction benchmark (SPEC §9): all requested layers from one forward pass vs one forward
pass per layer, on the same rows of a tiny family built in a temporary folder.

    python benchmarks/extract_layers.py [--layers 2,3,5] [--docs 64] [--repeats 5]

Both sides run `nlaprobe.models.activations.run_forward` on the same tokenized documents and
sampled rows (tokenization and sampling are done once, outside the timings); the vectors must be
identical.
Prints each side's time (best of --repeats, runs interleaved) and the ratio one-forward-per-layer / one-forward.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_common import best_times  # noqa: E402

from nlaprobe.checkpoints import resolve_source  # noqa: E402
from nlaprobe.documents import Document, pydoc_documents  # noqa: E402
from nlaprobe.extract import ExtractParams  # noqa: E402
from nlaprobe.fixtures import TinySizes, build_family  # noqa: E402
from nlaprobe.models.activations import plan_primary, run_forward, tokenize_documents  # noqa: E402
from nlaprobe.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from nlaprobe.sampling import doc_id_for  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--style", choices=["qwen", "gemma"], default="qwen")
    p.add_argument("--layers", default="2,3,5", help="comma-separated layers; the first is K")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--docs", type=int, default=64, help="pydoc documents to extract from")
    p.add_argument("--positions-per-doc", type=int, default=5)
    p.add_argument("--min-position", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5, help="timings are the best of this many")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1 keeps timings stable on a shared machine; 0 = torch default)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    layers = tuple(int(k) for k in args.layers.split(","))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = TinySizes(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=3 * args.hidden_size,
        num_layers=args.num_layers,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=max(1024, args.max_length),
    )
    corpus = pydoc_documents()
    texts = [text for _topic, text in corpus]
    docs = [
        Document(doc_id_for("builtin:pydoc", "topics", i), i, text, topic)
        for i, (topic, text) in enumerate(corpus[: args.docs])
    ]
    params = ExtractParams.from_json(
        {
            "layers": list(layers),
            "positions_per_doc": args.positions_per_doc,
            "min_position": args.min_position,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
        },
        source="benchmark parameters",
    )
    with tempfile.TemporaryDirectory(prefix="nlaprobe-bench-") as tmp:
        root = build_family(args.style, Path(tmp) / args.style, texts, sizes=sizes, layer=layers[0])
        src = resolve_source({"path": str(root / "base"), "dtype": "float32"}, "base")
        model, tokenizer = load_causal_lm(src), load_tokenizer(src)

    toks = tokenize_documents(tokenizer, [d.text for d in docs], params.max_length)
    rows = plan_primary(docs, toks, set(tokenizer.all_special_ids), params)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def one_forward():
        return run_forward(model, toks, rows, params, pad_id, "cpu")

    def forward_per_layer():
        out = {}
        for layer in layers:
            out |= run_forward(model, toks, rows, replace(params, layers=(layer,)), pad_id, "cpu")
        return out

    one_forward()  # warm-up (allocator, kernels)
    (t_one, t_per), (together, separate) = best_times(
        [one_forward, forward_per_layer], args.repeats
    )
    diff = max(float(np.abs(together[k] - separate[k]).max()) for k in layers)
    if diff != 0.0:
        raise SystemExit(f"vectors differ between the two ways: max |diff| = {diff}")

    print(
        f"extraction of layers {list(layers)} from a {args.num_layers}-block {args.style} model "
        f"(d={args.hidden_size}, float32, threads={torch.get_num_threads()}): "
        f"{len(docs)} docs, {len(rows)} rows, batch {args.batch_size}, best of {args.repeats}"
    )
    print(f"  one forward, all layers      : {t_one:8.3f} s")
    print(f"  one forward per layer (x{len(layers)})  : {t_per:8.3f} s")
    print(f"  max |diff| of the vectors    : {diff:g} (identical)")
    print(f"  ratio one-forward-per-layer / one-forward: {t_per / t_one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
