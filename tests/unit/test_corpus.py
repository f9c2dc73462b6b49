"""Unit tests of the corpus stage: shard arithmetic, doc_id format, the built-in pydoc corpus."""

from __future__ import annotations

import random

import pytest

from nlaprobe import corpus as C
from nlaprobe import documents
from nlaprobe.errors import ConfigError, DataError
from nlaprobe.sampling import doc_id_for


@pytest.fixture(autouse=True)
def _seed_and_offline(monkeypatch):
    random.seed(0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def cfg(**over):
    base = {
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
    base.update(over)
    return base


# --- shard arithmetic ---------------------------------------------------------------------------


def test_n_shards_rounds_up():
    c = cfg()
    assert C.n_shards(c, "eval") == 3  # 10 docs / 4
    assert C.n_shards(c, "ridge") == 2  # 8 docs / 4, exact
    assert C.n_shards(cfg(shard_docs=1), "eval") == 10
    assert C.n_shards(cfg(shard_docs=1000), "eval") == 1


def test_shard_range_covers_split_without_overlap():
    c = cfg()
    ranges = [C.shard_range(c, "eval", s) for s in range(C.n_shards(c, "eval"))]
    assert ranges == [(10, 14), (14, 18), (18, 20)]
    assert C.shard_range(c, "ridge", 1) == (104, 108)


@pytest.mark.parametrize("shard", [-1, 3, 99])
def test_shard_out_of_range(shard):
    with pytest.raises(ConfigError, match=r"corpus\.splits\.eval.*shards 0\.\.2"):
        C.shard_range(cfg(), "eval", shard)


def test_unknown_split_names_the_key():
    with pytest.raises(ConfigError, match=r"corpus\.splits\.test"):
        C.n_shards(cfg(), "test")


@pytest.mark.parametrize("rng", [{"start": 5, "stop": 5}, {"start": 9, "stop": 3}])
def test_empty_range_names_the_key(rng):
    with pytest.raises(ConfigError, match=r"corpus\.splits\.eval.*empty"):
        C.n_shards(cfg(splits={"eval": rng}), "eval")


def test_bad_shard_docs():
    with pytest.raises(ConfigError, match=r"corpus\.shard_docs"):
        C.n_shards(cfg(shard_docs=0), "eval")


# --- naming -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "name"),
    [
        ({"source": "hf", "dataset": "openbmb/Ultra-FineWeb"}, "openbmb/Ultra-FineWeb"),
        ({"source": "hf", "dataset": "HuggingFaceFW/fineweb"}, "HuggingFaceFW/fineweb"),
        ({"source": "hf", "dataset": "/data/mirrors/fineweb"}, "fineweb"),
        ({"source": "hf", "dataset": "./fineweb/"}, "fineweb"),
        ({"source": "builtin", "dataset": "pydoc"}, "builtin:pydoc"),
        ({"source": "parquet", "dataset": "/x/y/docs.parquet"}, "docs.parquet"),
        ({"source": "jsonl", "dataset": "/x/y/shards"}, "shards"),
        ({"source": "parquet", "dataset": "/x/y/shards/part-*.parquet"}, "shards/part-*.parquet"),
        ({"source": "parquet", "dataset": "*.parquet"}, "*.parquet"),
    ],
)
def test_corpus_name(over, name):
    assert C.corpus_name(cfg(**over)) == name


def test_unknown_source():
    with pytest.raises(ConfigError, match=r"corpus\.source.*'csv'"):
        C.corpus_name(cfg(source="csv"))


def test_doc_id_format_matches_spec_example():
    # SPEC §4.3: f"{corpus}:{split}:{absolute_doc_index}", no dataset config name.
    c = cfg(
        source="hf", dataset="openbmb/Ultra-FineWeb", dataset_config="default", dataset_split="en"
    )
    assert doc_id_for(C.corpus_name(c), c["dataset_split"], 7) == "openbmb/Ultra-FineWeb:en:7"


# --- built-in pydoc corpus ----------------------------------------------------------------------


def test_pydoc_documents_deterministic_and_mixed():
    c = cfg()
    a = C.load_documents(c, 0, 50)
    documents.pydoc_documents.cache_clear()
    b = C.load_documents(c, 0, 50)
    assert a == b
    assert [d.doc_idx for d in a] == list(range(50))
    assert a[3].doc_id == "builtin:pydoc:topics:3"
    assert all(d.topic for d in a)
    assert len({d.topic for d in a}) >= 10  # the shuffle mixes topics


def test_pydoc_index_ranges_disjoint():
    c = cfg()
    eval_docs = C.load_documents(c, 0, 100)
    ridge_docs = C.load_documents(c, 100, 300)
    assert not {d.text for d in eval_docs} & {d.text for d in ridge_docs}
    assert not {d.doc_id for d in eval_docs} & {d.doc_id for d in ridge_docs}
    # a sub-range gives exactly the same documents as the enclosing range
    assert C.load_documents(c, 120, 130) == ridge_docs[20:30]


def test_pydoc_range_beyond_corpus():
    n = len(documents.pydoc_documents())
    with pytest.raises(DataError, match=rf"only {n} exist"):
        C.load_documents(cfg(), n - 5, n + 5)


def test_unknown_builtin_corpus():
    with pytest.raises(ConfigError, match=r"corpus\.dataset.*'wiki'"):
        C.load_documents(cfg(dataset="wiki"), 0, 3)


def test_load_documents_empty_range():
    with pytest.raises(ConfigError, match="empty"):
        C.load_documents(cfg(), 5, 5)
