"""E4 redaction on files (nlaprobe.redact.redact_shard): a decode shard written by hand -> the
redacted shard, against spans.redact of each original and span statistics counted by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlaprobe import spans
from nlaprobe.constants import DECODE_META_KEY
from nlaprobe.decode import decode_table
from nlaprobe.errors import ConfigError, DataError
from nlaprobe.io import read_table, table_meta, write_table
from nlaprobe.redact import COLUMNS, REDACT_META_KEY, STAT_COLUMNS, redact_shard

META = {
    "condition": {"name": "greedy", "temperature": 0.0, "n_samples": 1, "banned_chars": ""},
    "seed": 7,
    "summary": {"n_rows": 6, "n_banned_tokens": 0, "n_leaks": 0},
}

# (explanation, error) per row; span statistics by hand below
ROWS = [
    ('It says "hello world" and "bye".', None),  # two double-quoted spans
    ("The model's output: 'x = 1' here.", None),  # an apostrophe and one single-quoted span
    ("A hatch: \u300cdef f\u300d appears.", None),  # corner brackets: an E2 hatch, an E4 quote
    (None, None),  # tag failure
    (None, "vector row 4 is zero"),  # decode error
    ("No quotes, only *this* hatch.", None),  # an unquoted hatch, kept by every variant
]
DOC_IDS = ["doc:a", "doc:a", "doc:b", "doc:b", "doc:c", "doc:c"]

# n_spans, span_chars (quoted spans, marks included), n_hatches, hatch_chars, total_chars =
# len(text), counted by hand: '"hello world"' 13 + '"bye"' 5; "'x = 1'" 7; '「def f」' 7 (corner
# brackets are a quote family); no quoted span but the hatch '*this*' 6
STATS = [(2, 18, 0, 0, 32), (1, 7, 0, 0, 33), (1, 7, 0, 0, 25), None, None, (0, 0, 1, 6, 29)]


def write_decodes(path: Path) -> str:
    rows = [
        {
            "row": i,
            "doc_id": DOC_IDS[i],
            "position": 10 + i,
            "sample": 0,
            "seed": 100 + i,
            "text": None if err else f"<explanation>{e}</explanation>" if e else "no tags",
            "explanation": e,
            "n_tokens": 0 if err else 9,
            "finish_reason": "error" if err else "stop",
            "error": err,
            "leaks": 0,
        }
        for i, (e, err) in enumerate(ROWS)
    ]
    write_table(path, decode_table(rows, META))
    return str(path)


@pytest.fixture
def decodes(tmp_path) -> str:
    return write_decodes(tmp_path / "decodes" / "shard-00000.parquet")


def test_hand_counts_agree_with_the_literal_lengths():
    # guards the hand-written table itself
    for (e, _), st in zip(ROWS, STATS, strict=True):
        if e is not None:
            assert st[4] == len(e)


@pytest.mark.parametrize("variant", spans.REDACTION_VARIANTS)
def test_every_variant_edits_each_explanation_as_spans_redact(decodes, tmp_path, variant):
    out = tmp_path / "redacted" / variant / "shard-00000.parquet"
    summary = redact_shard(decodes, variant, str(out))
    t = read_table(out)
    assert t.column_names == [*COLUMNS, *STAT_COLUMNS]
    assert t.column("row").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert t.column("doc_id").to_pylist() == DOC_IDS
    assert t.column("sample").to_pylist() == [0] * 6
    assert t.column("error").to_pylist() == [None, None, None, None, "vector row 4 is zero", None]
    want = [None if e is None else spans.redact(e, variant) for e, _ in ROWS]
    assert t.column("explanation").to_pylist() == want
    # a tag failure stays a tag failure; an error row stays without explanation
    assert t.column("explanation").to_pylist()[3] is None
    assert t.column("explanation").to_pylist()[4] is None
    assert STAT_COLUMNS == ("n_spans", "span_chars", "n_hatches", "hatch_chars", "total_chars")
    for j, key in enumerate(STAT_COLUMNS):
        assert t.column(key).to_pylist() == [s and s[j] for s in STATS], key
    expected_summary = {
        "variant": variant,
        "n_rows": 6,
        "n_explanations": 4,
        "n_spans": 4,  # 2 + 1 + 1
        "span_chars": 32,  # 18 + 7 + 7
        "n_hatches": 1,
        "hatch_chars": 6,
        "total_chars": 119,  # 32 + 33 + 25 + 29
    }
    assert summary == expected_summary
    # the decode metadata is carried, so score reads the condition as from a decode shard
    assert table_meta(t, DECODE_META_KEY) == META
    assert table_meta(t, REDACT_META_KEY) == {"decodes": decodes, **expected_summary}
    assert sorted(p.name for p in out.parent.iterdir()) == ["shard-00000.parquet"]


def test_edited_texts_by_hand(decodes, tmp_path):
    def edited(variant: str) -> list:
        out = tmp_path / variant / "s.parquet"
        redact_shard(decodes, variant, str(out))
        return read_table(out).column("explanation").to_pylist()

    assert edited("full") == [e for e, _ in ROWS]
    assert edited("prose_only") == [
        "It says and.",
        "The model's output: here.",
        "A hatch: appears.",
        None,
        None,
        "No quotes, only *this* hatch.",
    ]
    assert edited("spans_redacted") == [
        "It says REDACTED and REDACTED.",
        "The model's output: REDACTED here.",
        "A hatch: REDACTED appears.",
        None,
        None,
        "No quotes, only *this* hatch.",
    ]
    assert edited("spans_empty")[0] == 'It says "" and "".'
    assert edited("spans_ellipsis")[2] == "A hatch: \u2026 appears."
    # no span: an empty edit, scored as an empty explanation (not a tag failure)
    assert edited("spans_only_marked") == [
        '"hello world" "bye"',
        "'x = 1'",
        "\u300cdef f\u300d",
        None,
        None,
        "",
    ]
    assert edited("spans_only_bare") == ["hello world bye", "x = 1", "def f", None, None, ""]


def test_decode_shard_without_metadata_gets_an_empty_decode_block(tmp_path):
    rows = [
        {
            "row": 0,
            "doc_id": "doc:a",
            "position": 3,
            "sample": 0,
            "seed": 1,
            "text": 'x <explanation>a "b" c</explanation>',
            "explanation": 'a "b" c',
            "n_tokens": 4,
            "finish_reason": "stop",
            "error": None,
            "leaks": 0,
        }
    ]
    table = decode_table(rows, {}).replace_schema_metadata({})
    src = tmp_path / "d.parquet"
    write_table(src, table)
    out = tmp_path / "r.parquet"
    summary = redact_shard(str(src), "spans_redacted", str(out))
    t = read_table(out)
    assert t.column("explanation").to_pylist() == ["a REDACTED c"]
    assert table_meta(t, DECODE_META_KEY) == {}
    assert summary["n_spans"] == 1 and summary["span_chars"] == 3 and summary["total_chars"] == 7
    assert summary["n_hatches"] == 0 and summary["hatch_chars"] == 0


def test_unknown_variant_raises_and_writes_nothing(decodes, tmp_path):
    out = tmp_path / "redacted" / "nope" / "shard-00000.parquet"
    with pytest.raises(ConfigError, match="unknown redaction variant 'spans_blank'") as err:
        redact_shard(decodes, "spans_blank", str(out))
    assert "prose_only" in str(err.value)  # lists the valid ones
    assert not out.exists()
    assert not (tmp_path / "redacted").exists()


def test_missing_decode_shard_raises_and_writes_nothing(tmp_path):
    out = tmp_path / "out" / "shard-00000.parquet"
    with pytest.raises(DataError, match="missing.parquet"):
        redact_shard(str(tmp_path / "missing.parquet"), "prose_only", str(out))
    assert not out.exists()
    assert not (tmp_path / "out").exists()


def test_decode_shard_without_explanations_raises_and_writes_nothing(tmp_path):
    import pyarrow as pa

    src = tmp_path / "bad.parquet"
    write_table(src, pa.table({"row": [0], "doc_id": ["doc:a"], "sample": [0]}))
    out = tmp_path / "out" / "r.parquet"
    with pytest.raises(DataError, match="explanation"):
        redact_shard(str(src), "prose_only", str(out))
    assert not out.exists()
