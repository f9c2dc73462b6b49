"""E4 post-hoc redaction on files: a greedy decode shard -> the explanations edited for one
AR-input variant (SPEC §6 E4), with per-row span statistics.

inputs -> outputs: `results/decodes/av-<tag>/greedy/shard-*.parquet` + a variant of
`nlaprobe.spans.REDACTION_VARIANTS` -> `results/redacted/av-<tag>/<variant>/shard-*.parquet` with
the decode shard's `row, doc_id, sample, error` and `explanation` (edited; null where the decode
had none), plus `n_spans`, `span_chars` (quoted spans: what the variants edit), `n_hatches`,
`hatch_chars` (unquoted hatches: kept as they are) and `total_chars` of the original explanation
(`nlaprobe.spans.span_stats`).

Invariants:
- the redacted shard has the columns the score stage reads from a decode shard, in the same row
  order, and carries the decode shard's metadata, so `score` treats both alike;
- span detection and editing are the pure functions of `nlaprobe.spans`; a tag failure stays a
  tag failure (null explanation), an empty edit is scored as an empty explanation.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from nlaprobe import constants as C
from nlaprobe import spans
from nlaprobe.errors import ConfigError
from nlaprobe.io import read_table, table_meta, with_meta, write_table

log = logging.getLogger(__name__)

REDACT_META_KEY = "nlaprobe.redact"
COLUMNS = {"row": "int", "doc_id": "str", "sample": "int", "explanation": "str?", "error": "str?"}
STAT_COLUMNS = ("n_spans", "span_chars", "n_hatches", "hatch_chars", "total_chars")


def redact_shard(decodes: str, variant: str, out: str) -> dict:
    """Edit every explanation of a decode shard for `variant`; write `out` atomically."""
    if variant not in spans.REDACTION_VARIANTS:
        raise ConfigError(
            f"unknown redaction variant {variant!r}; valid: {list(spans.REDACTION_VARIANTS)}"
        )
    dec = read_table(decodes, COLUMNS)
    expl = dec.column("explanation").to_pylist()
    edited = [None if e is None else spans.redact(e, variant) for e in expl]
    stats = [spans.span_stats(e) if e is not None else None for e in expl]

    def stat(key: str) -> pa.Array:
        return pa.array([s[key] if s else None for s in stats], pa.int64())

    table = pa.table(
        {
            "row": dec.column("row"),
            "doc_id": dec.column("doc_id"),
            "sample": dec.column("sample"),
            "explanation": pa.array(edited, pa.string()),
            "error": dec.column("error"),
            **{key: stat(key) for key in STAT_COLUMNS},
        }
    )
    have = [s for s in stats if s]
    summary = {
        "variant": variant,
        "n_rows": len(expl),
        "n_explanations": len(have),
        **{key: sum(s[key] for s in have) for key in STAT_COLUMNS},
    }
    table = with_meta(table, C.DECODE_META_KEY, table_meta(dec, C.DECODE_META_KEY) or {})
    write_table(out, with_meta(table, REDACT_META_KEY, {"decodes": str(decodes), **summary}))
    log.info("redacted %s: %s", out, summary)
    return summary
