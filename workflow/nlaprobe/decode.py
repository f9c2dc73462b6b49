"""AV decoding stage: activation vectors -> explanations (SPEC §4.6-§4.8).

inputs -> outputs: an activation shard (the AV family's own vectors) + an AV checkpoint + a decode
condition + `DecodeParams` -> a decode shard with one row per (activation row, sample): raw text,
extracted explanation (null on tag failure), token count, finish reason, seed, banned-character
leaks, and the condition, parameters, AV and summary in its metadata.

Invariants: those of nlaprobe.models.generation (one request builder, seeded samples, per-row
errors for unusable vectors, bans and leak counts) and nlaprobe.models.backends (engines built
through the registry with one signature, outputs cut and detokenised alike); here, on files:
non-finite vectors become per-row errors, not a failed shard; banned ids past the model's
output rows are dropped (never generated; vLLM rejects them); the shard is written atomically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from nlaprobe import constants as C
from nlaprobe.config import StageParams
from nlaprobe.errors import ConfigError
from nlaprobe.io import read_table, vectors_from_column, with_meta, write_table
from nlaprobe.models.backends import DecodeSettings, get_backend
from nlaprobe.models.device import resolve_device
from nlaprobe.models.generation import Condition, banned_token_ids, decode_rows
from nlaprobe.models.loading import load_av

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeParams(StageParams):
    """The parameters of one decode job: `run.seed` and the `decode` section, parsed by
    `from_json` (nlaprobe.config.StageParams)."""

    seed: int
    max_new_tokens: int
    batch_size: int
    n_samples: int
    temperature: float
    backend: str
    tensor_parallel_size: int

    FIELDS: ClassVar[dict[str, str]] = {
        "seed": "run.seed",
        **{k: f"decode.{k}" for k in ("max_new_tokens", "batch_size", "n_samples", "temperature")},
        "backend": "decode.backend",
        "tensor_parallel_size": "decode.tensor_parallel_size",
    }

    @classmethod
    def from_values(cls, values: dict, source: str) -> DecodeParams:
        if values["tensor_parallel_size"] > 1 and values["backend"] != "vllm":
            raise ConfigError(
                f"decode.tensor_parallel_size {values['tensor_parallel_size']} needs "
                f"decode.backend vllm, got {values['backend']!r}"
            )
        return cls(**values)


def decode_table(rows: list[dict], meta: dict) -> pa.Table:
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
    return with_meta(table, C.DECODE_META_KEY, meta)


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
    params: DecodeParams,
    *,
    device: str = "cpu",
    provenance: dict | None = None,
) -> dict:
    """The decode stage on files: the AV family's activation shard -> decode shard (atomic).
    `params.tensor_parallel_size` > 1 (vLLM only) spreads the AV over that many of the job's
    GPUs."""
    backend_cls = get_backend(params.backend)
    device = resolve_device(device)
    column = C.COL_VECTOR if cond.layer is None else C.layer_column(cond.layer)
    table = read_table(activations, {C.COL_DOC_ID: "str", C.COL_POSITION: "int", column: "vector"})
    av = load_av(src, device, load_model=backend_cls.needs_model)
    # non-finite rows become per-row errors (SPEC §4.6), not a failed shard
    vectors = vectors_from_column(
        table, column, width=av.meta.d_model, where=str(activations), require_finite=False
    )
    # ids past the model's output rows (a tokenizer longer than the vocabulary) are never
    # generated, and vLLM rejects them in logit_bias
    banned = [i for i in banned_token_ids(av.tokenizer, cond.banned_chars) if i < av.vocab_size]
    settings = DecodeSettings(
        max_new_tokens=params.max_new_tokens,
        stop_token_ids=tuple(av.stop_token_ids),
        pad_token_id=av.tokenizer.pad_token_id if av.tokenizer.pad_token_id is not None else 0,
        banned_ids=tuple(banned),
    )
    engine = backend_cls(
        av, settings, device=device, tensor_parallel_size=params.tensor_parallel_size
    )
    rows = decode_rows(
        engine,
        engine.prompt_embeds(),
        av.marker_pos,
        av.meta.injection_scale,
        vectors,
        table.column(C.COL_DOC_ID).to_pylist(),
        table.column(C.COL_POSITION).to_pylist(),
        cond,
        params.seed,
        params.batch_size,
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
        "seed": params.seed,
        "max_new_tokens": params.max_new_tokens,
        "backend": params.backend,
        "av": av.source.describe(),
        "activations": str(activations),
        "summary": summary,
        "provenance": provenance or {},
    }
    write_table(out, decode_table(rows, meta))
    log.info("decoded %s: %s", out, summary)
    return summary
