"""AR scoring: explanations -> reconstructed vectors -> per-row fidelity (SPEC §4.9, §5).

inputs -> outputs: a decode shard (explanations) [+ an AR-input variant] + the AR family's own
activation shard (gold, aligned row for row) + an AR checkpoint -> a score shard with, per row,
the predicted vector's norm, cos and nmse against the gold (null for tag failures).

Invariants:
- AR input = `prompt_templates.ar.format(explanation=...)`, tokenized as plain text with
  `add_special_tokens=True` (BOS for Gemma/Llama), no chat template, right padding;
- readout = hidden state after block K (the AR's last block, before any final norm) at the
  rightmost real token, through the value head y = h·Wᵀ, in fp32;
- batched and one-text-at-a-time readouts agree (≤1e-5; benchmarks/ar_batching.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from nlaprobe import constants as C
from nlaprobe.config import StageParams
from nlaprobe.errors import ConfigError, DataError, show
from nlaprobe.io import (
    check_rows,
    read_table,
    table_meta,
    vectors_from_column,
    vectors_to_arrow,
    with_meta,
    write_table,
)
from nlaprobe.metrics import cos_rows, nmse_rows
from nlaprobe.models.device import resolve_device
from nlaprobe.models.forward import last_token_states
from nlaprobe.models.loading import LoadedAR, load_ar
from nlaprobe.spans import REDACTION_VARIANTS

log = logging.getLogger(__name__)


def ar_texts(template: str, explanations: Sequence[str]) -> list[str]:
    return [template.format(explanation=e) for e in explanations]


def tokenize_ar(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [list(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts]


def readout(
    ar: LoadedAR, texts: Sequence[str], *, batch_size: int, device="cpu", progress: bool = True
) -> np.ndarray:
    """[len(texts), d] float32 predictions (unnormalised) of the AR for each filled template."""
    if not texts:
        return np.zeros((0, ar.meta.d_model), dtype=np.float32)
    ids = tokenize_ar(ar.tokenizer, texts)
    layer = ar.meta.layer
    pad = ar.tokenizer.pad_token_id if ar.tokenizer.pad_token_id is not None else 0
    head = ar.value_head.float().to(device)
    out = np.zeros((len(texts), ar.meta.d_model), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # less padding
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="score", unit="batch", disable=not progress):
        chunk = order[start : start + batch_size]
        h = last_token_states(ar.model, [ids[i] for i in chunk], layer, pad, device)
        y = h @ head.T
        out[chunk] = y.cpu().numpy()
    return out


SCORE_META_KEY = "nlaprobe.score"
VARIANTS = REDACTION_VARIANTS
# what the score stage reads of a decode (or redacted) shard, and of the gold activation shard
DECODE_COLUMNS = {
    "row": "int",
    "doc_id": "str",
    "sample": "int",
    "explanation": "str?",
    "error": "str?",
}


@dataclass(frozen=True)
class ScoreParams(StageParams):
    """The parameters of one score job (the AR reads in batches of `decode.batch_size`), parsed
    by `from_json` (nlaprobe.config.StageParams)."""

    batch_size: int

    FIELDS: ClassVar[dict[str, str]] = {"batch_size": "decode.batch_size"}


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ConfigError(
            f"variant {show(variant)} is not an AR-input variant; valid: {list(VARIANTS)}"
        )
    return variant


def score_rows(pred: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: predicted-vector norm, cos and nmse = mean_j (p_nrm − g_nrm)² = 2(1 − cos)."""
    try:
        return np.linalg.norm(pred, axis=1), cos_rows(pred, gold), nmse_rows(pred, gold)
    except ValueError as e:  # a zero or non-finite prediction or gold row
        raise DataError(f"scoring: {e}") from None


def score_shard(
    src,
    decodes: str,
    gold: str,
    out: str,
    params: ScoreParams,
    *,
    variant: str,
    device: str = "cpu",
    provenance: dict | None = None,
) -> dict:
    """The score stage on files: decode shard + the AR family's aligned activation shard ->
    score shard (atomic). Rows without an explanation are kept, marked, and not scored."""
    check_variant(variant)
    device = resolve_device(device)
    dec = read_table(decodes, DECODE_COLUMNS)
    gold_table = read_table(gold, {C.COL_DOC_ID: "str", C.COL_VECTOR: "vector"})
    gold_ids = gold_table.column(C.COL_DOC_ID).to_pylist()
    rows = dec.column("row").to_pylist()
    doc_ids = dec.column("doc_id").to_pylist()
    check_rows(rows, len(gold_ids), str(decodes), f"the gold shard {gold}")
    for r, did in zip(rows, doc_ids, strict=True):
        if gold_ids[r] != did:
            raise DataError(
                f"{gold}: row {r} is {gold_ids[r]!r} but {decodes} expects {did!r}; the gold "
                "shard must be the AR family's activation shard aligned to the decoded rows"
            )
    ar = load_ar(src, device)
    gold_vecs = vectors_from_column(
        gold_table, C.COL_VECTOR, width=ar.meta.d_model, where=str(gold)
    )
    expl = dec.column("explanation").to_pylist()
    errors = dec.column("error").to_pylist()
    ok = np.array([e is not None and err is None for e, err in zip(expl, errors, strict=True)])
    idx = np.nonzero(ok)[0]
    pred = readout(
        ar,
        ar_texts(ar.meta.ar_template, [expl[i] for i in idx]),
        batch_size=params.batch_size,
        device=device,
    )
    n = len(rows)
    pred_all = np.zeros((n, ar.meta.d_model), dtype=np.float32)
    pred_all[idx] = pred
    norm = np.full(n, np.nan, dtype=np.float64)
    cos = np.full(n, np.nan, dtype=np.float64)
    nmse = np.full(n, np.nan, dtype=np.float64)
    if len(idx):
        g = gold_vecs[[rows[i] for i in idx]]
        norm[idx], cos[idx], nmse[idx] = score_rows(pred, g)

    def masked(a):
        return pa.array([float(a[i]) if ok[i] else None for i in range(n)], pa.float64())

    table = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "doc_id": pa.array(doc_ids, pa.string()),
            "sample": dec.column("sample"),
            "tag_failure": pa.array(
                [e is None and err is None for e, err in zip(expl, errors, strict=True)]
            ),
            "decode_error": pa.array([err is not None for err in errors]),
            "pred_norm": masked(norm),
            "cos": masked(cos),
            "nmse": masked(nmse),
            "pred_vector": vectors_to_arrow(pred_all, ok),
        }
    )
    summary = {
        "n_rows": n,
        "n_scored": int(ok.sum()),
        "n_tag_failures": int(
            sum(e is None and err is None for e, err in zip(expl, errors, strict=True))
        ),
        "n_decode_errors": int(sum(err is not None for err in errors)),
    }
    meta = {
        "variant": variant,
        "ar": ar.source.describe(),
        "decodes": str(decodes),
        "decode_condition": (table_meta(dec, C.DECODE_META_KEY) or {}).get("condition"),
        "gold": str(gold),
        "summary": summary,
        "provenance": provenance or {},
    }
    write_table(out, with_meta(table, SCORE_META_KEY, meta))
    log.info("scored %s: %s", out, summary)
    return summary
