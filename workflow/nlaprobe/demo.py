"""The embedded default's models: tiny NLA families built offline from text that ships with
Python.

inputs -> outputs: a style (`qwen` | `gemma`) and the `demo` settings (+ the family's layer K)
-> `<out>/{base,av,ar}` in the release layout (see nlaprobe.fixtures).

Invariant: the build is deterministic for the same settings and Python version; the folder
appears at its final name only when complete (built under a temporary name, then renamed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from nlaprobe.corpus import pydoc_documents
from nlaprobe.errors import ConfigError
from nlaprobe.fixtures import TinySizes, build_family

log = logging.getLogger(__name__)

SIZE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "max_position_embeddings",
)


def demo_sizes(params: dict) -> TinySizes:
    return TinySizes(**{k: int(params[k]) for k in SIZE_KEYS if params.get(k) is not None})


def build_demo(style: str, out: Path, params: dict) -> Path:
    """Build one tiny family. `params`: the `demo` config section plus `layer` (K)."""
    if "layer" not in params:
        raise ConfigError("build-demo --params: missing 'layer' (the family's K)")
    texts = [text for _topic, text in pydoc_documents()]
    return build_family(
        style,
        out,
        texts,
        sizes=demo_sizes(params),
        layer=int(params["layer"]),
        seed=int(params.get("seed", 0)),
        base_model_name=f"nlaprobe-demo-{style}",
    )
