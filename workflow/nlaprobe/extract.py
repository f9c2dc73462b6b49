"""Activation extraction (stage 0 of the release, plus cross-family alignment).

inputs -> outputs:
    base checkpoint + corpus shard [+ the primary family's positions shard]
    -> activation shard (parquet) + `.nla_meta.yaml` sidecar [+ positions shard, primary only]

Invariants (SPEC §4.1, §4.3, §4.4):
- layer K = output of decoder block K (0-based) = HF `hidden_states[K+1]`, captured by forward
  hooks; every requested layer comes from one forward pass that stops after the deepest one;
- the primary family samples positions with the release's per-document keyed RNG over tokens of
  the raw document tokenized with `add_special_tokens=True`, right truncation at `max_length`;
- an aligned (non-primary) family extracts at its own token whose span end is nearest each
  primary `char_end`; the absolute error in characters is stored per row and its mean in the sidecar;
- vectors are stored raw (unnormalised) as fixed-size float32 lists; batches are right-padded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from nlaprobe import constants as C
from nlaprobe.checkpoints import Source, check_layer, decoder_blocks, decoder_stack
from nlaprobe.config import validate_params
from nlaprobe.corpus import Document
from nlaprobe.errors import ConfigError, DataError, show
from nlaprobe.io import read_table, vectors_to_arrow, write_table, write_yaml
from nlaprobe.sampling import align_to_char_ends, sample_positions

log = logging.getLogger(__name__)


# each parameter follows the schema of the config key it comes from (nlaprobe.plan)
EXTRACT_FIELDS = {
    "layers": "families.*.adjacent_layers",
    "seed": "run.seed",
    "positions_per_doc": "sampling.positions_per_doc",
    "min_position": "sampling.min_position",
    "max_length": "sampling.max_length",
    "batch_size": "sampling.batch_size",
    "device_map": "sampling.device_map",
}


@dataclass(frozen=True)
class ExtractParams:
    """Sampling and batching of one extraction job (the `sampling` config section + layers),
    checked against the config schema: a value the config would refuse is refused here too."""

    layers: tuple[int, ...]  # layers[0] is the family's K (activation_vector); others get columns
    seed: int = 42
    positions_per_doc: int = 5
    min_position: int = 50
    max_length: int = 4096
    batch_size: int = 8
    device_map: str | None = None  # "auto": the base spread over the job's GPUs

    def __post_init__(self):
        self.check(asdict(self), "extract parameters")

    @staticmethod
    def check(raw: dict, source: str) -> dict:
        raw = {**raw, "layers": list(raw["layers"])} if "layers" in raw else raw
        if not isinstance(raw.get("layers"), list) or not raw["layers"]:
            raise ConfigError(
                f"{source}: key 'layers': expected a non-empty list of layers, "
                f"got {show(raw.get('layers'))}"
            )
        return validate_params(raw, EXTRACT_FIELDS, source=source, required=("layers",))

    @classmethod
    def from_json(cls, raw: dict, source: str = "--params") -> ExtractParams:
        p = cls.check(raw, source)
        return cls(**{**p, "layers": tuple(p["layers"])})


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
    docs: Sequence[Document], toks: Sequence[TokenizedDoc], special_ids, params: ExtractParams
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


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block: later blocks are never run."""


def forward_layers(
    model, batch: Sequence[Sequence[int]], layers: Sequence[int], pad_id: int, device
) -> dict[int, torch.Tensor]:
    """One right-padded forward; returns {layer: [B, T, d] output of block `layer`}."""
    blocks = decoder_blocks(model)
    stack = decoder_stack(model)
    length = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for b, ids in enumerate(batch):
        input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[b, : len(ids)] = 1
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[layer] = hidden.detach()
            if layer == deepest:
                raise _StopForward

        return hook

    for layer in set(layers):
        handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
    try:
        with torch.inference_mode():
            stack(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured


def run_forward(
    model,
    toks: Sequence[TokenizedDoc],
    rows: Sequence[RowPlan],
    params: ExtractParams,
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
    params: ExtractParams,
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


def positions_table(table: pa.Table) -> pa.Table:
    return table.select(list(C.POSITIONS_COLUMNS))


def sidecar_path(shard_path: str | Path) -> Path:
    p = Path(shard_path)
    return p.with_name(p.name.removesuffix(".parquet") + C.DATASET_SIDECAR_SUFFIX)


def read_positions(path: str | Path) -> pa.Table:
    return read_table(path, {C.COL_DOC_ID: "str", C.COL_CHAR_END: "int"})


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def extract_shard(
    src: Source,
    corpus_shard: str | Path,
    out: str | Path,
    params: ExtractParams,
    *,
    positions_in: str | Path | None = None,
    positions_out: str | Path | None = None,
    provenance: dict | None = None,
    device: str = "cpu",
) -> ExtractResult:
    """The extraction stage on files. Writes `out`, its sidecar and (primary) `positions_out`,
    each atomically; the sidecar last, so a complete sidecar implies a complete shard."""
    from nlaprobe.checkpoints import load_causal_lm, load_tokenizer, resolve_snapshot
    from nlaprobe.corpus import read_corpus_shard

    device = resolve_device(device)
    src = resolve_snapshot(src)
    docs = read_corpus_shard(corpus_shard)
    positions = read_positions(positions_in) if positions_in is not None else None
    tokenizer = load_tokenizer(src)
    model = load_causal_lm(src, device, device_map=params.device_map)
    result = extract(
        model,
        tokenizer,
        docs,
        params,
        positions=positions,
        positions_where=str(positions_in),
        device=device,
    )
    write_table(out, result.table)
    if positions_out is not None:
        write_table(positions_out, positions_table(result.table))
    meta = {
        "kind": C.KIND_DATASET,
        "schema_version": C.SCHEMA_VERSION,
        "base_model": src.describe(),
        "d_model": result.d_model,
        "activation_layer": params.layers[0],
        "layers": list(params.layers),
        "layer_columns": {
            str(layer): (C.COL_VECTOR if i == 0 else C.layer_column(layer))
            for i, layer in enumerate(params.layers)
        },
        "layer_convention": "output of decoder block K (0-based) = HF hidden_states[K+1]",
        "sampling": {
            "seed": params.seed,
            "positions_per_doc": params.positions_per_doc,
            "min_position": params.min_position,
            "max_length": params.max_length,
        },
        "corpus_shard": str(corpus_shard),
        "n_docs": result.n_docs,
        "n_rows": result.table.num_rows,
        "alignment": (
            None
            if positions_in is None
            else {
                "positions": str(positions_in),
                "mean_abs_error_chars": result.mean_align_error,
                "max_abs_error_chars": result.max_align_error,
            }
        ),
        "provenance": provenance or {},
    }
    write_yaml(sidecar_path(out), meta)
    log.info(
        "extracted %d rows from %d docs at layers %s -> %s",
        result.table.num_rows,
        result.n_docs,
        list(params.layers),
        out,
    )
    return result


def write_positions(activations: str | Path, out: str | Path) -> int:
    """Write the (doc_id, char_end) positions of a primary activation shard; returns rows."""
    table = read_table(activations, C.POSITIONS_COLUMNS)
    write_table(out, positions_table(table))
    return table.num_rows
