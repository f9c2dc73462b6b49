"""Corpus stage on tiny local data: hf (the real `datasets.load_dataset` path, streaming and
not), parquet and jsonl sources, shard files, and failures that leave nothing behind."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlaprobe import corpus as C
from nlaprobe import documents
from nlaprobe.constants import COL_DOC_ID, COL_DOC_IDX, COL_TEXT, COL_TOPIC
from nlaprobe.errors import ConfigError, DataError

N_DOCS = 30


def doc_text(i: int) -> str:
    return f"Document number {i} says something about topic {i % 7}."


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path):
    """No network, and every `datasets` cache under tmp_path (also if already imported)."""
    random.seed(0)
    hf_home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_home / "datasets"))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", hf_home / "modules")


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "ds_cache"


@pytest.fixture
def hf_folder(tmp_path) -> Path:
    """A dataset folder in the layout of a hub repo: data/train-00000-of-00001.parquet."""
    root = tmp_path / "ds"
    (root / "data").mkdir(parents=True)
    table = pa.table({"text": [doc_text(i) for i in range(N_DOCS)], "id": list(range(N_DOCS))})
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet")
    return root


@pytest.fixture
def parquet_folder(tmp_path) -> Path:
    """Three files (sorted by name) with several row groups each: 12 + 10 + 8 rows."""
    root = tmp_path / "pq_docs"
    root.mkdir()
    bounds = [(0, 12), (12, 22), (22, N_DOCS)]
    # written out of name order on purpose: files are taken sorted by name
    for k, (lo, hi) in reversed(list(enumerate(bounds))):
        table = pa.table({"body": [doc_text(i) for i in range(lo, hi)], "n": list(range(lo, hi))})
        pq.write_table(table, root / f"part-{k:02d}.parquet", row_group_size=4)
    (root / "README.md").write_text("not data")
    return root


@pytest.fixture
def jsonl_folder(tmp_path) -> Path:
    root = tmp_path / "jsonl_docs"
    root.mkdir()
    for k, (lo, hi) in enumerate([(0, 9), (9, N_DOCS)]):
        lines = [json.dumps({"text": doc_text(i), "n": i}) for i in range(lo, hi)]
        (root / f"{k:03d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def cfg(**over):
    base = {
        "source": "hf",
        "dataset": "unset",
        "revision": "main",
        "dataset_config": None,
        "dataset_split": "train",
        "text_field": "text",
        "streaming": False,
        "shard_docs": 4,
        "splits": {"eval": {"start": 5, "stop": 12}, "ridge": {"start": 25, "stop": 40}},
    }
    base.update(over)
    return base


def check_docs(docs, name: str, split: str = "train", start: int = 5, stop: int = 12):
    assert [d.doc_idx for d in docs] == list(range(start, stop))
    assert [d.text for d in docs] == [doc_text(i) for i in range(start, stop)]
    assert [d.doc_id for d in docs] == [f"{name}:{split}:{i}" for i in range(start, stop)]
    assert all(d.topic is None for d in docs)


def no_leftovers(folder: Path):
    assert not list(folder.glob("*.tmp")), "a temporary file was left behind"


# --- hf source through datasets.load_dataset --------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_hf_local_folder(hf_folder, cache_dir, streaming):
    c = cfg(dataset=str(hf_folder), streaming=streaming)
    docs = C.load_documents(c, 5, 12, cache_dir=cache_dir)
    check_docs(docs, name="ds")


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_hf_range_beyond_data(hf_folder, cache_dir, streaming):
    c = cfg(dataset=str(hf_folder), streaming=streaming)
    with pytest.raises(DataError, match=rf"\[25, 40\).* {N_DOCS} exist"):
        C.load_documents(c, 25, 40, cache_dir=cache_dir)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_hf_missing_text_field(hf_folder, cache_dir, streaming):
    c = cfg(dataset=str(hf_folder), streaming=streaming, text_field="content")
    with pytest.raises(DataError, match=r"'content'.*\['text', 'id'\]"):
        C.load_documents(c, 0, 3, cache_dir=cache_dir)


def test_hf_unknown_split_is_data_error(hf_folder, cache_dir):
    c = cfg(dataset=str(hf_folder), dataset_split="en")
    with pytest.raises(DataError, match=r"split 'en'"):
        C.load_documents(c, 0, 3, cache_dir=cache_dir)


def test_hf_corrupt_file(tmp_path, cache_dir):
    root = tmp_path / "broken"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train-00000-of-00001.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="broken"):
        C.load_documents(cfg(dataset=str(root)), 0, 3, cache_dir=cache_dir)


# --- local parquet / jsonl --------------------------------------------------------------------


def test_parquet_folder(parquet_folder):
    c = cfg(source="parquet", dataset=str(parquet_folder), text_field="body")
    check_docs(C.load_documents(c, 5, 12), name="pq_docs")
    # a range across file boundaries and row groups
    check_docs(C.load_documents(c, 10, 24), name="pq_docs", start=10, stop=24)
    check_docs(C.load_documents(c, 0, N_DOCS), name="pq_docs", start=0, stop=N_DOCS)


def test_parquet_glob(parquet_folder):
    c = cfg(source="parquet", dataset=str(parquet_folder / "part-*.parquet"), text_field="body")
    check_docs(C.load_documents(c, 5, 24), name="pq_docs/part-*.parquet", start=5, stop=24)
    c_none = cfg(source="parquet", dataset=str(parquet_folder / "nothing-*.parquet"))
    with pytest.raises(DataError, match="matches no files"):
        C.load_documents(c_none, 0, 1)


def test_parquet_single_file(hf_folder):
    f = hf_folder / "data" / "train-00000-of-00001.parquet"
    c = cfg(source="parquet", dataset=str(f))
    check_docs(C.load_documents(c, 5, 12), name=f.name)


def test_jsonl_folder(jsonl_folder):
    c = cfg(source="jsonl", dataset=str(jsonl_folder))
    check_docs(C.load_documents(c, 5, 12), name="jsonl_docs")
    check_docs(C.load_documents(c, 7, 11), name="jsonl_docs", start=7, stop=11)


def test_jsonl_single_file_ignores_blank_lines(tmp_path):
    f = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": doc_text(i)}) for i in range(N_DOCS)]
    lines.insert(3, "")
    f.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    check_docs(C.load_documents(cfg(source="jsonl", dataset=str(f)), 5, 12), name="docs.jsonl")


@pytest.mark.parametrize("source", ["parquet", "jsonl"])
def test_local_range_beyond_data(source, parquet_folder, jsonl_folder):
    folder = parquet_folder if source == "parquet" else jsonl_folder
    c = cfg(
        source=source, dataset=str(folder), text_field="body" if source == "parquet" else "text"
    )
    with pytest.raises(DataError, match=rf"only {N_DOCS} exist"):
        C.load_documents(c, 25, 40)
    with pytest.raises(DataError, match=rf"only {N_DOCS} exist"):
        C.load_documents(c, 35, 40)


def test_parquet_missing_text_field(parquet_folder):
    c = cfg(source="parquet", dataset=str(parquet_folder), text_field="text")
    with pytest.raises(DataError, match=r"part-00\.parquet.*'text'.*\['body', 'n'\]"):
        C.load_documents(c, 0, 3)


def test_jsonl_missing_text_field(jsonl_folder):
    c = cfg(source="jsonl", dataset=str(jsonl_folder), text_field="body")
    with pytest.raises(DataError, match=r"000\.jsonl:1.*'body'.*\['n', 'text'\]"):
        C.load_documents(c, 0, 3)


def test_corrupt_parquet_names_the_file(parquet_folder):
    bad = parquet_folder / "part-01.parquet"
    bad.write_bytes(b"PAR1 truncated garbage")
    c = cfg(source="parquet", dataset=str(parquet_folder), text_field="body")
    check_docs(C.load_documents(c, 5, 12), name="pq_docs")  # the first file alone suffices
    with pytest.raises(DataError, match=r"part-01\.parquet.*not a readable parquet"):
        C.load_documents(c, 10, 14)


def test_corrupt_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"text": "a fine document"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"docs\.jsonl:2.*not valid JSON"):
        C.load_documents(cfg(source="jsonl", dataset=str(f)), 0, 2)


@pytest.mark.parametrize("bad", ["", "   ", None, 17])
def test_bad_text_names_the_index(tmp_path, bad):
    f = tmp_path / "docs.jsonl"
    rows = [{"text": doc_text(i)} for i in range(6)]
    rows[4]["text"] = bad
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    c = cfg(source="jsonl", dataset=str(f))
    assert len(C.load_documents(c, 0, 4)) == 4
    with pytest.raises(DataError, match="document 4"):
        C.load_documents(c, 2, 6)


def test_missing_local_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        C.load_documents(cfg(source="parquet", dataset=str(tmp_path / "nope")), 0, 1)


# --- shards -------------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_build_and_read_shards(hf_folder, cache_dir, tmp_path, streaming):
    c = cfg(dataset=str(hf_folder), streaming=streaming)
    out_dir = tmp_path / "results" / "corpus" / "eval"
    got = []
    for s in range(C.n_shards(c, "eval")):
        out = out_dir / f"shard-{s:05d}.parquet"
        n = C.build_corpus_shard(C.CorpusParams(**c), "eval", s, out, cache_dir=cache_dir)
        docs = documents.read_corpus_shard(out)
        assert n == len(docs) == (4 if s == 0 else 3)
        got.extend(docs)
    check_docs(got, name="ds")
    no_leftovers(out_dir)

    table = pq.read_table(out_dir / "shard-00000.parquet")
    assert table.schema.field(COL_DOC_ID).type == pa.string()
    assert table.schema.field(COL_DOC_IDX).type == pa.int64()
    assert table.schema.field(COL_TEXT).type == pa.string()
    assert table.schema.field(COL_TOPIC).type == pa.string()
    prov = json.loads(table.schema.metadata[C.PROVENANCE_KEY])
    assert prov["start"] == 5 and prov["stop"] == 9 and prov["corpus_name"] == "ds"


def test_build_builtin_shard_is_deterministic(tmp_path):
    c = cfg(source="builtin", dataset="pydoc", dataset_split="topics", shard_docs=8)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert C.build_corpus_shard(C.CorpusParams(**c), "eval", 0, a) == 7
    assert C.build_corpus_shard(C.CorpusParams(**c), "eval", 0, b) == 7
    assert a.read_bytes() == b.read_bytes()
    docs = documents.read_corpus_shard(a)
    assert [d.doc_id for d in docs] == [f"builtin:pydoc:topics:{i}" for i in range(5, 12)]
    assert all(d.topic for d in docs)


@pytest.mark.parametrize(
    ("over", "shard", "error"),
    [
        ({"shard_docs": 20}, 0, DataError),  # shard [25, 40) runs past the 30 documents
        ({"text_field": "content"}, 0, DataError),
        ({"splits": {"ridge": {"start": 7, "stop": 7}}}, 0, ConfigError),  # empty range
        ({}, 9, ConfigError),  # shard out of range
    ],
)
def test_failed_build_writes_nothing(hf_folder, cache_dir, tmp_path, over, shard, error):
    c = cfg(dataset=str(hf_folder), **over)
    out_dir = tmp_path / "out"
    out = out_dir / "shard-00000.parquet"
    with pytest.raises(error):
        C.build_corpus_shard(C.CorpusParams(**c), "ridge", shard, out, cache_dir=cache_dir)
    assert not out.exists()
    if out_dir.exists():
        assert list(out_dir.iterdir()) == []


# --- hf source by hub id, offline, from the hub cache -----------------------------------------

HUB_DATASET = "tiny-org/web-corpus"
DS_COMMIT = "c0ffee" + "0" * 34


@pytest.fixture
def hub_dataset(offline_hub, tmp_path) -> Path:
    """A dataset repo in the hub cache: README `configs:` define split `en` over
    data/web_en/* (column `content`) and `zh` over data/web_zh/*, as Ultra-FineWeb's do."""
    import huggingface_hub.constants as hub_constants

    repo = tmp_path / "repo"
    (repo / "data" / "web_en").mkdir(parents=True)
    (repo / "data" / "web_zh").mkdir(parents=True)
    for part, (lo, hi) in enumerate([(0, 20), (20, N_DOCS)]):
        table = pa.table(
            {"content": [doc_text(i) for i in range(lo, hi)], "score": [1.0] * (hi - lo)}
        )
        pq.write_table(table, repo / "data" / "web_en" / f"part-{part:05d}.parquet")
    pq.write_table(
        pa.table({"content": ["文"], "score": [1.0]}), repo / "data" / "web_zh" / "p.parquet"
    )
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: en\n"
        "    path: data/web_en/*\n  - split: zh\n    path: data/web_zh/*\n---\n"
    )
    offline_hub(HUB_DATASET, repo, DS_COMMIT, repo_type="dataset")
    return Path(hub_constants.HF_HUB_CACHE)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize("revision", ["main", DS_COMMIT])
def test_hf_hub_id_offline_from_the_hub_cache(
    hub_dataset, cache_dir, tmp_path, streaming, revision
):
    corpus = cfg(
        dataset=HUB_DATASET,
        revision=revision,
        dataset_split="en",
        text_field="content",
        streaming=streaming,
    )
    out = tmp_path / "shard.parquet"
    assert C.build_corpus_shard(C.CorpusParams(**corpus), "eval", 1, out, cache_dir=cache_dir) == 3
    docs = documents.read_corpus_shard(out)
    assert [d.doc_id for d in docs] == [f"{HUB_DATASET}:en:{i}" for i in (9, 10, 11)]
    assert [d.text for d in docs] == [doc_text(i) for i in (9, 10, 11)]
    prov = json.loads(pq.read_schema(out).metadata[C.PROVENANCE_KEY])
    assert prov["commit"] == DS_COMMIT and prov["revision"] == revision


def test_hf_hub_id_offline_wrong_column_or_missing_pin(hub_dataset, cache_dir, tmp_path):
    with pytest.raises(DataError, match="no text field 'text'.*content"):
        C.load_documents(cfg(dataset=HUB_DATASET, dataset_split="en"), 0, 3, cache_dir=cache_dir)
    absent = "d" * 40
    with pytest.raises(DataError, match=f"{HUB_DATASET}.*{absent}.*not in the local hub cache"):
        C.load_documents(
            cfg(dataset=HUB_DATASET, dataset_split="en", text_field="content", revision=absent),
            0,
            3,
            cache_dir=cache_dir,
        )


def test_hf_hub_id_pinned_commit_mismatch(hub_dataset, monkeypatch, tmp_path):
    import huggingface_hub

    other = "e" * 40
    served = hub_dataset / "datasets--tiny-org--web-corpus" / "snapshots" / DS_COMMIT
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(served))
    corpus = cfg(dataset=HUB_DATASET, dataset_split="en", text_field="content", revision=other)
    with pytest.raises(
        DataError, match=f"pinned to {other} but the cache holds snapshot {DS_COMMIT}"
    ):
        C.load_documents(corpus, 0, 3)
