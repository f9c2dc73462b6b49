"""Activation extraction stage (stage 0 of the release, plus cross-family alignment).

inputs -> outputs:
    base checkpoint + corpus shard [+ the primary family's positions shard] + `ExtractParams`
    -> activation shard (parquet) + `.nla_meta.yaml` sidecar [+ positions shard, primary only]

Invariants (SPEC §4.1, §4.3, §4.4): those of nlaprobe.models.activations (layer convention,
keyed position sampling, alignment by `char_end`, raw float32 vectors); here, on files: each
output is written atomically, the sidecar last, so a complete sidecar implies a complete shard;
the sidecar records the layers, the sampling, the mean alignment error and the base checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from nlaprobe import constants as C
from nlaprobe.checkpoints import Source, resolve_snapshot
from nlaprobe.config import StageParams
from nlaprobe.documents import read_corpus_shard
from nlaprobe.errors import ConfigError
from nlaprobe.io import read_table, write_table, write_yaml
from nlaprobe.models.activations import ExtractResult, Sampling, extract
from nlaprobe.models.device import resolve_device
from nlaprobe.models.loading import load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractParams(StageParams, Sampling):
    """The parameters of one extraction job: the `sampling` config section, the run's seed and
    the family's layers (nlaprobe.plan), parsed by `from_json` (nlaprobe.config.StageParams)."""

    device_map: str | None  # "auto": the base spread over the job's GPUs

    # each parameter follows the schema of the config key it comes from
    FIELDS: ClassVar[dict[str, str]] = {
        "layers": "families.*.adjacent_layers",
        "seed": "run.seed",
        "positions_per_doc": "sampling.positions_per_doc",
        "min_position": "sampling.min_position",
        "max_length": "sampling.max_length",
        "batch_size": "sampling.batch_size",
        "device_map": "sampling.device_map",
    }
    REQUIRED: ClassVar[tuple[str, ...]] = ("layers",)

    @classmethod
    def from_values(cls, values: dict, source: str) -> ExtractParams:
        if not values["layers"]:
            raise ConfigError(
                f"{source}: key 'layers': expected a non-empty list of layers, got []"
            )
        return cls(**{**values, "layers": tuple(values["layers"])})


def positions_table(table: pa.Table) -> pa.Table:
    return table.select(list(C.POSITIONS_COLUMNS))


def sidecar_path(shard_path: str | Path) -> Path:
    p = Path(shard_path)
    return p.with_name(p.name.removesuffix(".parquet") + C.DATASET_SIDECAR_SUFFIX)


def read_positions(path: str | Path) -> pa.Table:
    return read_table(path, {C.COL_DOC_ID: "str", C.COL_CHAR_END: "int"})


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
