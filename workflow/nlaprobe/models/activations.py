"""Activation rows in memory: documents -> residual-stream vectors at sampled or aligned
positions (the extraction stage's computation, also the demo build's training rows).

inputs -> outputs: a loaded causal LM + its tokenizer + documents + `Sampling` [+ the primary
family's positions] -> an `ExtractResult`: an arrow table (nlaprobe.constants columns) with one
row per position, the alignment errors and the layers read.

Invariants (SPEC §4.1, §4.3, §4.4):
- every requested layer comes from one forward pass (nlaprobe.models.forward.forward_layers);
- the primary family samples positions with the release's per-document keyed RNG over tokens of
  the raw document tokenized with `add_special_tokens=True`, right truncation at `max_length`;
- an aligned (non-primary) family reads its own token whose span end is nearest each primary
  `char_end`; the absolute error in characters is kept per row;
- vectors are raw (unnormalised) float32; batches are right-padded, sorted by the prefix a
  document needs (only the prefix up to its last sampled position is run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from nlaprobe import constants as C
from nlaprobe.documents import Document
from nlaprobe.errors import DataError
from nlaprobe.io import vectors_to_arrow
from nlaprobe.models.architecture import check_layer
from nlaprobe.models.forward import forward_layers
from nlaprobe.sampling import align_to_char_ends, sample_positions


@dataclass(frozen=True)
class Sampling:
    """Which rows to read and how to batch them; no defaults here (the stage's come from the
    config schema, nlaprobe.extract.ExtractParams)."""

    layers: tuple[int, ...]  # layers[0] is the family's K (activation_vector); others get columns
    seed: int
    positions_per_doc: int
    min_position: int
    max_length: int
    batch_size: int


@dataclass
class RowPlan:
    doc_idx: int  # index of the document in the shard
    doc_id: str
    position: int
    char_end: int
    align_error: int | None = None


@dataclass
class TokenizedDoc:
    ids: list[int]
    offsets: list[tuple[int, int]]


@dataclass
class ExtractResult:
    table: pa.Table
    n_docs: int
    mean_align_error: float | None
    max_align_error: int | None
    layers: tuple[int, ...]
    d_model: int
    extras: dict = field(default_factory=dict)


def tokenize_documents(tokenizer, texts: Sequence[str], max_length: int) -> list[TokenizedDoc]:
    """Raw documents with `add_special_tokens=True` (BOS where the tokenizer adds one), right
    truncation at `max_length`, with character offsets."""
    out = []
    for text in texts:
        enc = tokenizer(
            text,
            add_special_tokens=True,
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=True,
        )
        out.append(TokenizedDoc(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]))
    return out


def plan_primary(
    docs: Sequence[Document], toks: Sequence[TokenizedDoc], special_ids, params: Sampling
) -> list[RowPlan]:
    rows = []
    for i, (doc, tok) in enumerate(zip(docs, toks, strict=True)):
        positions = sample_positions(
            tok.ids,
            special_ids,
            seed=params.seed,
            doc_id=doc.doc_id,
            k=params.positions_per_doc,
            min_position=params.min_position,
        )
        rows += [RowPlan(i, doc.doc_id, p, int(tok.offsets[p][1])) for p in positions]
    return rows


def plan_aligned(
    docs: Sequence[Document],
    toks: Sequence[TokenizedDoc],
    special_ids,
    positions: pa.Table,
    where: str,
) -> list[RowPlan]:
    """Rows at the tokens nearest the primary family's `char_end`s, in the primary's order."""
    index = {doc.doc_id: i for i, doc in enumerate(docs)}
    doc_ids = positions.column(C.COL_DOC_ID).to_pylist()
    char_ends = positions.column(C.COL_CHAR_END).to_pylist()
    by_doc: dict[str, list[int]] = {}
    for did, ce in zip(doc_ids, char_ends, strict=True):
        if did not in index:
            raise DataError(f"{where}: doc_id {did!r} is not in the corpus shard")
        by_doc.setdefault(did, []).append(int(ce))
    special = set(special_ids)
    rows = []
    for did in dict.fromkeys(doc_ids):
        i = index[did]
        tok = toks[i]
        valid = [t not in special for t in tok.ids]
        ends = [o[1] for o in tok.offsets]
        idx, err = align_to_char_ends(by_doc[did], ends, valid)
        rows += [
            RowPlan(i, did, int(p), int(ends[int(p)]), int(e))
            for p, e in zip(idx, err, strict=True)
        ]
    return rows


def run_forward(
    model,
    toks: Sequence[TokenizedDoc],
    rows: Sequence[RowPlan],
    params: Sampling,
    pad_id: int,
    device,
    desc: str = "extract",
) -> dict[int, np.ndarray]:
    """Vectors of every row at every layer: {layer: [n_rows, d] float32}."""
    d = model.config.get_text_config().hidden_size
    out = {layer: np.zeros((len(rows), d), dtype=np.float32) for layer in params.layers}
    by_doc: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        by_doc.setdefault(row.doc_idx, []).append(r)
    # Only the prefix up to the last sampled position matters (causal model); sorting by that
    # length keeps padding low.
    needed = {i: max(rows[r].position for r in rs) + 1 for i, rs in by_doc.items()}
    order = sorted(needed, key=lambda i: needed[i])
    for start in tqdm(range(0, len(order), params.batch_size), desc=desc, unit="batch"):
        chunk = order[start : start + params.batch_size]
        batch = [toks[i].ids[: needed[i]] for i in chunk]
        captured = forward_layers(model, batch, params.layers, pad_id, device)
        for b, i in enumerate(chunk):
            for r in by_doc[i]:
                for layer in params.layers:
                    out[layer][r] = captured[layer][b, rows[r].position].float().cpu().numpy()
    return out


def build_table(
    rows: Sequence[RowPlan],
    toks: Sequence[TokenizedDoc],
    docs: Sequence[Document],
    vectors: dict[int, np.ndarray],
    layers: Sequence[int],
    tokenizer,
    aligned: bool,
) -> pa.Table:
    primary = layers[0]
    cols: dict[str, pa.Array] = {
        C.COL_DOC_ID: pa.array([r.doc_id for r in rows], pa.string()),
        C.COL_DOC_IDX: pa.array([docs[r.doc_idx].doc_idx for r in rows], pa.int64()),
        C.COL_N_RAW_TOKENS: pa.array([r.position + 1 for r in rows], pa.int64()),
        C.COL_DETOK: pa.array(
            [
                tokenizer.decode(toks[r.doc_idx].ids[: r.position + 1], skip_special_tokens=True)
                for r in rows
            ],
            pa.string(),
        ),
        C.COL_VECTOR: vectors_to_arrow(vectors[primary]),
        C.COL_LAYER: pa.array([primary] * len(rows), pa.int64()),
        C.COL_CHAR_END: pa.array([r.char_end for r in rows], pa.int64()),
        C.COL_POSITION: pa.array([r.position for r in rows], pa.int64()),
    }
    if aligned:
        cols[C.COL_ALIGN_ERR] = pa.array([r.align_error for r in rows], pa.int64())
    for layer in layers[1:]:
        cols[C.layer_column(layer)] = vectors_to_arrow(vectors[layer])
    return pa.table(cols)


def extract(
    model,
    tokenizer,
    docs: Sequence[Document],
    params: Sampling,
    *,
    positions: pa.Table | None = None,
    positions_where: str = "positions",
    device="cpu",
) -> ExtractResult:
    """Extract one shard in memory. `positions` given -> aligned family; else primary."""
    for layer in params.layers:
        check_layer(model, layer, "extract")
    toks = tokenize_documents(tokenizer, [d.text for d in docs], params.max_length)
    special = set(tokenizer.all_special_ids)
    if positions is None:
        rows = plan_primary(docs, toks, special, params)
    else:
        rows = plan_aligned(docs, toks, special, positions, positions_where)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    vectors = run_forward(model, toks, rows, params, pad_id, device)
    table = build_table(rows, toks, docs, vectors, params.layers, tokenizer, positions is not None)
    errors = [r.align_error for r in rows if r.align_error is not None]
    return ExtractResult(
        table=table,
        n_docs=len(docs),
        mean_align_error=float(np.mean(errors)) if errors else None,
        max_align_error=int(max(errors)) if errors else None,
        layers=tuple(params.layers),
        d_model=model.config.get_text_config().hidden_size,
    )
