"""The `nlaprobe redact` CLI on a hand-made decode shard: the edited explanations and their
counts, and clean errors for an unknown variant that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from stage_files import nlaprobe

from nlaprobe import constants as C
from nlaprobe.decode import decode_table
from nlaprobe.io import write_table
from nlaprobe.redact import REDACT_META_KEY


def decode_row(row: int, explanation: str | None, error: str | None = None) -> dict:
    return {
        "row": row,
        "doc_id": f"builtin:pydoc:topics:{row // 2}",
        "position": 3,
        "sample": 0,
        "seed": 42,
        "text": "" if explanation is None else f"<explanation>{explanation}</explanation>",
        "explanation": explanation,
        "n_tokens": 12,
        "finish_reason": "length" if error else "stop",
        "error": error,
        "leaks": 0,
    }


@pytest.fixture
def decodes(tmp_path) -> Path:
    rows = [
        decode_row(0, 'The word "cat" appears here.'),
        decode_row(1, 'Mentions "a" and *bb*.'),  # a quoted span and a hatch (kept)
        decode_row(2, None),  # tag failure
        decode_row(3, None, error="RuntimeError: out of memory"),
    ]
    path = tmp_path / "decodes" / "greedy" / "shard-00000.parquet"
    write_table(path, decode_table(rows, {"cond": "greedy", "n_rows": 4}))
    return path


def test_redact_cli_edits_explanations(decodes, tmp_path):
    out = tmp_path / "redacted" / "prose_only" / "shard-00000.parquet"
    proc = nlaprobe(
        "redact", "--decodes", str(decodes), "--variant", "prose_only", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    t = pq.read_table(out)
    assert t.column_names == [
        "row",
        "doc_id",
        "sample",
        "explanation",
        "error",
        "n_spans",
        "span_chars",
        "n_hatches",
        "hatch_chars",
        "total_chars",
    ]
    assert t.column("row").to_pylist() == [0, 1, 2, 3]
    assert t.column("explanation").to_pylist() == [
        "The word appears here.",
        "Mentions and *bb*.",
        None,
        None,
    ]
    assert t.column("error").to_pylist() == [None, None, None, "RuntimeError: out of memory"]
    assert t.column("n_spans").to_pylist() == [1, 1, None, None]
    assert t.column("span_chars").to_pylist() == [5, 3, None, None]
    assert t.column("n_hatches").to_pylist() == [0, 1, None, None]
    assert t.column("hatch_chars").to_pylist() == [0, 4, None, None]
    assert t.column("total_chars").to_pylist() == [28, 22, None, None]
    meta = t.schema.metadata
    assert json.loads(meta[C.DECODE_META_KEY.encode()]) == {"cond": "greedy", "n_rows": 4}
    assert json.loads(meta[REDACT_META_KEY.encode()]) == {
        "decodes": str(decodes),
        "variant": "prose_only",
        "n_rows": 4,
        "n_explanations": 2,
        "n_spans": 2,
        "span_chars": 8,
        "n_hatches": 1,
        "hatch_chars": 4,
        "total_chars": 50,
    }


def test_redact_cli_unknown_variant_lists_the_valid_ones(decodes, tmp_path):
    out = tmp_path / "redacted" / "no_such" / "shard-00000.parquet"
    proc = nlaprobe("redact", "--decodes", str(decodes), "--variant", "no_such", "--out", str(out))
    assert proc.returncode != 0
    assert "'no_such'" in proc.stderr
    assert "['full', 'prose_only', 'spans_empty', 'spans_ellipsis', 'spans_redacted', " in (
        proc.stderr
    )
    assert "'spans_only_marked', 'spans_only_bare']" in proc.stderr
    assert not out.exists() and not out.parent.exists()


def test_redact_cli_unknown_variant_is_a_clean_exit_2(decodes, tmp_path):
    out = tmp_path / "redacted" / "no_such" / "shard-00000.parquet"
    proc = nlaprobe("redact", "--decodes", str(decodes), "--variant", "no_such", "--out", str(out))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert not out.exists()
