"""Tiny stand-ins for everything `config/paper.yaml` loads, in a hub cache laid out exactly as
`huggingface_hub` writes it, under the paper's own ids:

- `google/gemma-3-27b-it`: the multimodal `Gemma3ForConditionalGeneration` wrapper (with
  `text_config`), 43 decoder blocks (layer 41 and its neighbours 40/42);
- `kitft/nla-gemma3-27b-L41-{av,ar}`: text-only `gemma3_text`, the AR truncated to 42 blocks;
- `Qwen/Qwen2.5-7B-Instruct` (22 blocks) and `kitft/nla-qwen2.5-7b-L20-{av,ar}` (AR: 21 blocks);
- `openbmb/Ultra-FineWeb` (a dataset repo): split `en` defined by the README's `configs:` over
  `data/ultrafineweb_en/*` (and a `zh` split), rows with `content`, `score`, `source`.

Tiny in width (d=32). The AVs are shallow (2 blocks: an AV's depth is not part of the format)
and trained briefly on the base's layer-K vectors so that they write `<explanation>` tags; the
ARs keep the base's first K+1 blocks with a random value head. Their numbers mean nothing: the
rehearsal proves the code path, not the figures.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nlaprobe import train as T
from nlaprobe.documents import Document, pydoc_documents
from nlaprobe.fixtures import (
    AV_TEMPLATE,
    TinySizes,
    add_to_hub_cache,
    av_prompt_ids,
    build_tokenizer,
    causal_lm,
    marker_for,
    save_family,
    text_config,
)
from nlaprobe.models.activations import Sampling, extract

# the paper's checkpoints: (style, K, base id, AV id, AR id)
PAPER_FAMILIES = {
    "gemma": ("gemma", 41, "google/gemma-3-27b-it", "kitft/nla-gemma3-27b-L41-av",
              "kitft/nla-gemma3-27b-L41-ar"),
    "qwen": ("qwen", 20, "Qwen/Qwen2.5-7B-Instruct", "kitft/nla-qwen2.5-7b-L20-av",
             "kitft/nla-qwen2.5-7b-L20-ar"),
}  # fmt: skip
DATASET = "openbmb/Ultra-FineWeb"
SIZES = TinySizes(vocab_size=512, hidden_size=32, intermediate_size=64, num_heads=4,
                  num_kv_heads=2, max_position_embeddings=1024)  # fmt: skip
AV_BLOCKS = 2
# documents whose layer-K vectors train the stand-in AVs (x 8 positions)
STANDIN_TRAIN_DOCS = 128


def commit_for(name: str) -> str:
    """A distinct, stable 40-hex commit per repo."""
    import hashlib

    return hashlib.sha1(name.encode()).hexdigest()


def build_family(style: str, layer: int, out: Path, texts: list[str], steps: int) -> Path:
    """base/, av/, ar/ of one stand-in family (release layout) under `out`."""
    torch.manual_seed(0)
    random.seed(0)
    sizes = TinySizes(**{**SIZES.__dict__, "num_layers": layer + 2})
    tokenizer = build_tokenizer(style, texts, sizes.vocab_size)
    base = causal_lm(style, text_config(style, sizes, tokenizer)).eval()
    docs = [Document(f"standin:{i}", i, t) for i, t in enumerate(texts[:STANDIN_TRAIN_DOCS])]
    table = extract(
        base,
        tokenizer,
        docs,
        Sampling(
            layers=(layer,),
            seed=0,
            positions_per_doc=8,
            min_position=8,
            max_length=128,
            batch_size=16,
        ),  # fmt: skip
    ).table
    vectors = np.asarray(table.column("activation_vector").to_pylist(), dtype=np.float32)
    contexts = table.column("detokenized_text_truncated").to_pylist()
    scale = float(np.linalg.norm(vectors, axis=1).mean())
    av = causal_lm(style, text_config(style, sizes, tokenizer, num_layers=AV_BLOCKS))
    marker = marker_for(style)
    prompt = av_prompt_ids(tokenizer, AV_TEMPLATE, marker)
    marker_pos = prompt.index(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(marker)[0]))
    stops = av.config.eos_token_id
    stop = stops[-1] if isinstance(stops, list | tuple) else stops
    targets = [
        T.av_target_ids(tokenizer, T.target_explanation(c, None, 3, T.quote_marks(c)), stop)
        for c in contexts
    ]
    settings = T.TrainSettings(av_steps=steps, av_lr=0.005, seed=0)
    T.train_av(av, tokenizer, prompt, marker_pos, scale, vectors, targets, settings)
    return save_family(
        out,
        style,
        tokenizer,
        base_text=base,
        av=av.eval(),
        ar=copy.deepcopy(base),
        head=torch.randn(sizes.hidden_size, sizes.hidden_size) / math.sqrt(sizes.hidden_size),
        layer=layer,
        injection_scale=scale,
        base_model_name=PAPER_FAMILIES[style][2],
    )


def write_dataset(out: Path, texts: list[str], real: list[tuple[int, int]], total: int) -> Path:
    """The Ultra-FineWeb repo layout: README with `configs:`, parquet parts per split. Rows in
    the `real` index ranges [start, stop) hold prose (cycling through `texts`); the others a
    short filler, so the paper's absolute document indices exist without a large file."""
    content = [f"Filler document number {i}." for i in range(total)]
    k = 0
    for start, stop in real:
        for i in range(start, stop):
            content[i] = texts[k % len(texts)]
            k += 1
    en = out / "data" / "ultrafineweb_en"
    zh = out / "data" / "ultrafineweb_zh"
    en.mkdir(parents=True)
    zh.mkdir(parents=True)
    half = total // 2
    for part, (lo, hi) in enumerate(((0, half), (half, total))):
        pq.write_table(
            pa.table(
                {
                    "content": content[lo:hi],
                    "score": [0.9] * (hi - lo),
                    "source": ["standin"] * (hi - lo),
                }
            ),
            en / f"part-{part:05d}.parquet",
            row_group_size=20_000,
        )
    pq.write_table(
        pa.table({"content": ["中文文档"], "score": [0.9], "source": ["standin"]}),
        zh / "part-00000.parquet",
    )
    (out / "README.md").write_text(
        "---\n"
        "configs:\n"
        "- config_name: default\n"
        "  data_files:\n"
        "  - split: en\n"
        "    path: data/ultrafineweb_en/*\n"
        "  - split: zh\n"
        "    path: data/ultrafineweb_zh/*\n"
        "---\n"
        "# Ultra-FineWeb (stand-in)\n",
        encoding="utf-8",
    )
    return out


def build_paper_cache(
    cache: Path, work: Path, *, real: list[tuple[int, int]], total: int, av_steps: int = 150
) -> dict[str, str]:
    """Fill the hub cache `cache` with every stand-in (refs/main -> a commit per repo); return
    {repo id: commit}."""
    texts = [text for _topic, text in pydoc_documents()]
    commits: dict[str, str] = {}
    for style, layer, base_id, av_id, ar_id in PAPER_FAMILIES.values():
        fam = build_family(style, layer, work / style, texts, av_steps)
        for role, repo in (("base", base_id), ("av", av_id), ("ar", ar_id)):
            commits[repo] = commit_for(repo)
            add_to_hub_cache(cache, repo, fam / role, commits[repo])
    data = write_dataset(work / "ultrafineweb", texts, real, total)
    commits[DATASET] = commit_for(DATASET)
    add_to_hub_cache(cache, DATASET, data, commits[DATASET], repo_type="dataset")
    return commits
