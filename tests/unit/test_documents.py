"""Unit tests of nlaprobe.documents: the built-in pydoc corpus text, and corpus shards read back
as `Document`s (a shard the corpus stage writes; corrupt, incomplete or missing files)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from nlaprobe import corpus as C
from nlaprobe import documents
from nlaprobe.constants import COL_DOC_ID, COL_TEXT
from nlaprobe.errors import DataError
from nlaprobe.io import write_table

# --- built-in pydoc corpus ----------------------------------------------------------------------


def test_pydoc_corpus_is_large_and_prose():
    docs = documents.pydoc_documents()
    assert len(docs) >= 300
    texts = [t for _, t in docs]
    assert len(set(texts)) == len(texts)  # no duplicated sections
    for _topic, text in docs:
        assert len(text.split()) >= documents.PYDOC_MIN_WORDS
        assert "::=" not in text and ">>>" not in text
        assert text == " ".join(text.split())  # whitespace normalised
    assert len({topic for topic, _ in docs}) >= 20


def test_pydoc_documents_are_the_same_after_a_fresh_read():
    first = documents.pydoc_documents()
    documents.pydoc_documents.cache_clear()  # as in a new process
    again = documents.pydoc_documents()
    assert again is not first and again == first
    assert all(isinstance(topic, str) and topic and text for topic, text in again)


# --- corpus shards ------------------------------------------------------------------------------


def test_read_corpus_shard_round_trips_a_shard_the_corpus_stage_wrote(tmp_path):
    corpus = {
        "source": "builtin",
        "dataset": "pydoc",
        "revision": "main",
        "dataset_config": None,
        "dataset_split": "topics",
        "text_field": "text",
        "streaming": False,
        "shard_docs": 4,
        "splits": {"eval": {"start": 10, "stop": 20}, "ridge": {"start": 100, "stop": 108}},
    }
    out = tmp_path / "shard-00001.parquet"
    assert C.build_corpus_shard(C.CorpusParams(**corpus), "eval", 1, out) == 4
    docs = documents.read_corpus_shard(out)
    pydoc = documents.pydoc_documents()
    assert docs == [
        documents.Document(f"builtin:pydoc:topics:{i}", i, pydoc[i][1], pydoc[i][0])
        for i in range(14, 18)
    ]


def test_read_corpus_shard_rejects_corrupt_and_incomplete(tmp_path):
    bad = tmp_path / "shard-00000.parquet"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"shard-00000\.parquet"):
        documents.read_corpus_shard(bad)
    partial = tmp_path / "shard-00001.parquet"
    write_table(partial, pa.table({COL_DOC_ID: ["x:y:0"], COL_TEXT: ["hello"]}))
    with pytest.raises(DataError, match=r"shard-00001\.parquet.*doc_idx"):
        documents.read_corpus_shard(partial)
    with pytest.raises(DataError, match="not found"):
        documents.read_corpus_shard(tmp_path / "missing.parquet")
