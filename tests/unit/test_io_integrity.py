"""Integrity of stored shards (issue 14, item 4): every parquet file `io.write_table` writes has
CRC-32 page checksums and a SHA-256 digest in its footer; `io.read_table` verifies both; a stage
that meets a damaged input exits 2 with one line naming it, writes nothing, sets the file aside
and records it for the Snakefile, which removes the object from remote storage
(nlaprobe.quarantine)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlaprobe import cli
from nlaprobe import constants as C
from nlaprobe import quarantine as Q
from nlaprobe.errors import CorruptFileError, DataError
from nlaprobe.io import (
    DIGEST_KEY,
    file_digest,
    read_table,
    vectors_to_arrow,
    verify_file,
    with_meta,
    write_table,
)

N, D = 40, 64  # 40 rows of 64 float32: ~10 kB of vectors, so bytes 2000-4000 lie in the pages


def activation_table(seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            C.COL_DOC_ID: [f"builtin:pydoc:topics:{i // 2}" for i in range(N)],
            C.COL_POSITION: pa.array(np.arange(N) + 16, pa.int64()),
            C.COL_CHAR_END: pa.array(np.arange(N) * 7 + 40, pa.int64()),
            C.COL_VECTOR: vectors_to_arrow(rng.standard_normal((N, D)) * 100),
        }
    )
    return with_meta(table, "nlaprobe.test", {"what": "an activation-like shard"})


def flip(path: Path, start: int, stop: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, stop):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def shard(tmp_path) -> Path:
    path = tmp_path / "shard-00000.parquet"
    write_table(path, activation_table())
    return path


# ----------------------------------------------------------------------------- the digest


def test_recorded_digest_is_sha256_of_the_file_with_its_own_digits_zeroed(shard):
    data = shard.read_bytes()
    recorded = pq.read_metadata(shard).metadata[DIGEST_KEY.encode()]
    assert len(recorded) == 64
    assert data.count(recorded) == 1
    by_hand = hashlib.sha256(data.replace(recorded, b"0" * 64)).hexdigest()
    assert recorded.decode() == by_hand
    assert file_digest(shard) == (by_hand, by_hand)
    assert verify_file(shard) == by_hand


def test_write_table_returns_the_digest_and_is_deterministic(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    da, db = write_table(a, activation_table()), write_table(b, activation_table())
    assert da == db == pq.read_metadata(a).metadata[DIGEST_KEY.encode()].decode()
    assert a.read_bytes() == b.read_bytes()
    assert write_table(tmp_path / "c.parquet", activation_table(seed=1)) != da


def test_intact_shard_reads_back_equal_with_its_metadata(shard):
    table = read_table(shard, {C.COL_DOC_ID: "str", C.COL_VECTOR: "vector"})
    assert table.equals(activation_table())
    # the digest lives in the file's key-value metadata, not in the table read back
    assert table.schema.metadata == activation_table().schema.metadata


def test_page_checksums_are_written_and_checked_by_pyarrow(shard, tmp_path):
    """Independent of the digest: pyarrow itself finds a damaged data page by its CRC-32."""
    flip(shard, 2000, 2001)
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(shard, page_checksum_verification=True)
    # without the check the damage goes unseen: numbers change (what the issue measured)
    damaged = pq.read_table(shard)
    assert not damaged.equals(activation_table())


@pytest.mark.parametrize(
    "where",
    ["data pages (bytes 2000-4000)", "one byte of a page", "the footer", "the digest itself"],
)
def test_damaged_shard_raises_naming_the_file(shard, where):
    size = shard.stat().st_size
    footer_len = int.from_bytes(shard.read_bytes()[-8:-4], "little")
    footer_start = size - 8 - footer_len
    at = shard.read_bytes().index(pq.read_metadata(shard).metadata[DIGEST_KEY.encode()])
    span = {
        "data pages (bytes 2000-4000)": (2000, 4000),
        "one byte of a page": (3000, 3001),
        "the footer": (footer_start + 10, footer_start + 11),
        "the digest itself": (at + 5, at + 6),
    }[where]
    flip(shard, *span)
    with pytest.raises(CorruptFileError, match=r"shard-00000\.parquet: corrupt") as e:
        read_table(shard)
    assert e.value.path == shard
    assert isinstance(e.value, DataError)


@pytest.mark.parametrize(
    "damage", ["truncated", "empty", "garbage", "no digest (plain pyarrow)", "appended bytes"]
)
def test_unverifiable_files_raise_naming_the_file(shard, damage):
    data = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "garbage":
        shard.write_bytes(b"not parquet at all, just text")
    elif damage == "no digest (plain pyarrow)":
        pq.write_table(activation_table(), shard, write_page_checksum=True)
    else:
        shard.write_bytes(data + b"\0" * 16)
    with pytest.raises(CorruptFileError, match=r"shard-00000\.parquet: corrupt"):
        read_table(shard)


def test_missing_file_is_not_corrupt(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        read_table(tmp_path / "missing.parquet")
    assert not isinstance(e.value, CorruptFileError)


# ----------------------------------------------------------------------------- the CLI


def run_positions(acts: Path, out: Path, capsys) -> tuple[int, str]:
    logging.getLogger().handlers.clear()  # let basicConfig attach to this test's stderr
    code = cli.main(["positions", "--activations", str(acts), "--out", str(out)])
    return code, capsys.readouterr().err


def test_stage_refuses_a_damaged_input_sets_it_aside_and_records_it(
    shard, tmp_path, capsys, monkeypatch
):
    """The issue's case: bytes 2000-4000 of an activation shard flipped. The stage exits 2 with
    one error line naming the file, writes no output, moves the file to `.<name>.corrupt` and,
    under Snakemake (a .snakemake/ folder), records it for the Snakefile's onerror."""
    work = tmp_path / "work"
    (work / ".snakemake").mkdir(parents=True)
    monkeypatch.chdir(work)
    out = tmp_path / "positions.parquet"
    folder = work / "results/activations/base-0123456789/eval"
    folder.mkdir(parents=True)
    shard = shard.rename(folder / shard.name)
    flip(shard, 2000, 4000)
    damaged = shard.read_bytes()
    code, err = run_positions(shard, out, capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    assert str(shard) in errors[0] and "corrupt" in errors[0]
    assert "Traceback" not in err
    assert not out.exists()
    assert not shard.exists()
    aside = shard.with_name(".shard-00000.parquet.corrupt")
    assert aside.read_bytes() == damaged
    records = list((work / Q.RECORDS).glob("*.json"))
    assert len(records) == 1
    assert json.loads(records[0].read_text())["path"] == os.path.abspath(shard)


def test_damaged_file_outside_the_results_is_reported_and_left_in_place(
    shard, tmp_path, capsys, monkeypatch
):
    """Not a workflow result (a user's file, a checkpoint folder): the stage still refuses it,
    and moves nothing."""
    (tmp_path / ".snakemake").mkdir()
    monkeypatch.chdir(tmp_path)
    flip(shard, 2000, 4000)
    code, err = run_positions(shard, tmp_path / "positions.parquet", capsys)
    assert code == 2 and f"{shard}: corrupt" in err and "left in place" in err
    assert shard.exists()
    assert not (tmp_path / Q.RECORDS).exists()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("results/activations/base-0123456789/eval/shard-00000.parquet", True),
        (".snakemake/storage/fs/data/results/run/results/scores/a/b/c/shard-00000.parquet", True),
        ("results/ridge/ridge-0123456789/a_to_b/n-8.json", True),
        ("results/demo/demo-0123456789/qwen/av/nla_meta.yaml", False),
        ("results/x.json", True),
        ("models/av/nla_meta.yaml", False),
        ("data/corpus.parquet", False),
    ],
)
def test_is_result(path, expected):
    assert Q.is_result(path) is expected


def test_stage_reads_an_intact_input(shard, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "positions.parquet"
    code, err = run_positions(shard, out, capsys)
    assert code == 0, err
    positions = read_table(out, {C.COL_DOC_ID: "str", C.COL_CHAR_END: "int"})
    assert positions.column(C.COL_CHAR_END).to_pylist() == list(np.arange(N) * 7 + 40)
    assert shard.exists()
    assert not (tmp_path / Q.RECORDS).exists()  # not under Snakemake: no record


# ----------------------------------------------------------------------------- remote storage


class FakeObject:
    """A storage object as Snakemake's storage plugins define it (query, local_path, exists,
    remove), over a folder standing in for the bucket."""

    def __init__(self, store: Path, local_prefix: Path, query: str):
        self.query = query
        self.store, self.local_prefix = store, local_prefix

    def _key(self) -> str:
        return self.query.removeprefix("mem://")

    def local_path(self) -> Path:
        return self.local_prefix / self._key()

    def exists(self) -> bool:
        return (self.store / self._key()).exists()

    def remove(self) -> None:
        (self.store / self._key()).unlink()


class FakeWorkflow:
    def __init__(self, store: Path, local_prefix: Path | None, prefix: str):
        provider_name = "mem" if local_prefix is not None else None
        self.storage_settings = type(
            "S", (), {"default_storage_provider": provider_name, "default_storage_prefix": prefix}
        )()
        provider = type("P", (), {})()
        provider.local_prefix = local_prefix
        provider.object = lambda query: FakeObject(store, local_prefix, query)
        self.storage_registry = type("R", (), {"default_storage_provider": provider})()


def test_release_from_storage_removes_exactly_the_recorded_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".snakemake").mkdir()
    store = tmp_path / "bucket"
    local_prefix = Path(".snakemake/storage/mem")
    rels = [f"run/results/activations/base-abc/eval/shard-0000{i}.parquet" for i in range(3)]
    for rel in rels:
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(b"object")
    bad = local_prefix / rels[1]
    Q.record(bad, "corrupt")
    Q.record(tmp_path / "elsewhere" / "results" / "x.parquet", "not a storage copy")
    said = []
    removed = Q.release_from_storage(FakeWorkflow(store, local_prefix, "mem://run"), said.append)
    assert removed == [f"mem://{rels[1]}"]
    assert [(store / rel).exists() for rel in rels] == [True, False, True]
    assert len(said) == 1 and rels[1] in said[0]
    assert list((tmp_path / Q.RECORDS).glob("*.json")) == []  # records consumed


def test_release_keeps_the_record_when_the_plugin_cannot_remove(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".snakemake").mkdir()
    store, local_prefix = tmp_path / "bucket", Path(".snakemake/storage/mem")
    rel = "run/results/scores/x/greedy/full/shard-00000.parquet"
    (store / rel).parent.mkdir(parents=True)
    (store / rel).write_bytes(b"object")
    Q.record(local_prefix / rel, "corrupt")

    def refuse(self):
        raise PermissionError("access denied")

    monkeypatch.setattr(FakeObject, "remove", refuse)
    said = []
    wf = FakeWorkflow(store, local_prefix, "mem://run")
    assert Q.release_from_storage(wf, said.append) == []
    assert (store / rel).exists()
    assert len(said) == 1 and "could not remove" in said[0] and "access denied" in said[0]
    assert len(list((tmp_path / Q.RECORDS).glob("*.json"))) == 1  # tried again next time


def test_release_without_storage_only_drops_the_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".snakemake").mkdir()
    Q.record(tmp_path / "results" / "a.parquet", "corrupt")
    assert Q.release_from_storage(FakeWorkflow(tmp_path, None, ""), print) == []
    assert list((tmp_path / Q.RECORDS).glob("*.json")) == []


def test_storage_query_maps_a_local_copy_back_to_its_object(tmp_path):
    store, local_prefix = tmp_path / "bucket", Path(".snakemake/storage/mem")
    make = lambda q: FakeObject(store, local_prefix, q)  # noqa: E731
    rel = "results/positions/base-abc/eval/shard-00000.parquet"
    obj = Q.storage_query(local_prefix / "p" / rel, local_prefix, "mem://p", make)
    assert obj is not None and obj.query == f"mem://p/{rel}"
    # a prefix that itself contains results/: the last results/ folder is the workflow's
    deep = "mem://data/results/run"
    obj = Q.storage_query(local_prefix / "data/results/run" / rel, local_prefix, deep, make)
    assert obj is not None and obj.query == f"{deep}/{rel}"
    # a file that is not the local copy of that object (another prefix, a plain result)
    assert Q.storage_query(local_prefix / "q" / rel, local_prefix, "mem://p", make) is None
    assert Q.storage_query(Path(rel), local_prefix, "mem://p", make) is None
    assert Q.storage_query(Path("a/b.parquet"), local_prefix, "mem://p", make) is None


# ----------------------------------------------------------------------------- JSON and YAML


def test_json_digest_by_hand_in_meta_and_at_top_level(tmp_path):
    from nlaprobe.io import read_json, write_json

    results = {"meta": {"aggregate": "x", "n": 3}, "data": {"fve": 0.5, "k": [1, 2]}}
    write_json(tmp_path / "r.json", results)
    doc = json.loads((tmp_path / "r.json").read_text())
    bare = json.dumps(
        {"data": {"fve": 0.5, "k": [1, 2]}, "meta": {"aggregate": "x", "n": 3}},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert doc["meta"][DIGEST_KEY] == hashlib.sha256(bare.encode()).hexdigest()
    assert set(doc) == {"meta", "data"}
    assert results["meta"] == {"aggregate": "x", "n": 3}  # the caller's object untouched
    assert read_json(tmp_path / "r.json") == doc

    # no meta object: at the top level; int keys are digested as the strings JSON makes them
    write_json(tmp_path / "s.json", {"n": 8, "curve": {1: 0.25, 10: 0.5, 2: 0.75}})
    doc = json.loads((tmp_path / "s.json").read_text())
    bare = '{"curve":{"1":0.25,"10":0.5,"2":0.75},"n":8}'
    assert doc[DIGEST_KEY] == hashlib.sha256(bare.encode()).hexdigest()
    assert read_json(tmp_path / "s.json") == doc


@pytest.mark.parametrize("edit", [("0.5", "0.6"), ('"x"', '"y"'), ('"n": 3', '"n": 4')])
def test_json_with_a_changed_value_is_corrupt(tmp_path, edit):
    from nlaprobe.io import read_json, write_json

    path = tmp_path / "r.json"
    write_json(path, {"meta": {"aggregate": "x", "n": 3}, "data": {"fve": 0.5}})
    text = path.read_text()
    assert text.count(edit[0]) == 1
    path.write_text(text.replace(*edit))
    with pytest.raises(CorruptFileError, match=r"r\.json: corrupt"):
        read_json(path)


def test_yaml_digest_by_hand_and_damage(tmp_path):
    from nlaprobe.io import read_yaml, write_yaml

    path = tmp_path / "shard-00000.nla_meta.yaml"
    write_yaml(path, {"layers": [1, 2, 3], "n_rows": 320, "what": "ünïcode"})
    first, rest = path.read_text(encoding="utf-8").split("\n", 1)
    assert first == f"# {DIGEST_KEY}: " + hashlib.sha256(rest.encode("utf-8")).hexdigest()
    assert read_yaml(path) == {"layers": [1, 2, 3], "n_rows": 320, "what": "ünïcode"}
    path.write_text(f"{first}\n{rest.replace('320', '321')}", encoding="utf-8")
    with pytest.raises(CorruptFileError, match=r"nla_meta\.yaml: corrupt"):
        read_yaml(path)
    path.write_text(f"{first[:-1]}\n{rest}", encoding="utf-8")  # a damaged digest line
    with pytest.raises(CorruptFileError, match=r"nla_meta\.yaml: corrupt"):
        read_yaml(path)


def test_files_without_a_digest_are_read_as_before(tmp_path):
    """A release's checkpoint sidecar or a config carries no digest: nothing to verify."""
    from nlaprobe.io import read_json, read_yaml

    (tmp_path / "a.yaml").write_text("layer: 2\n")
    (tmp_path / "a.json").write_text('{"eos_token_id": [1, 2]}')
    assert read_yaml(tmp_path / "a.yaml") == {"layer": 2}
    assert read_json(tmp_path / "a.json") == {"eos_token_id": [1, 2]}


# ----------------------------------------------------------------------------- npz


def test_npz_sha256_by_hand_and_crc_checked_on_read(tmp_path):
    from nlaprobe.io import read_npz_array, write_npz

    path = tmp_path / "n-8.npz"
    pred = np.arange(4096, dtype=np.float32).reshape(64, 64)
    digest = write_npz(path, {"linear_eval_pred": pred, "train_rows": np.arange(8)})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array_equal(read_npz_array(path, "linear_eval_pred", digest), pred)
    with pytest.raises(DataError, match="no array 'rbf_eval_pred'"):
        read_npz_array(path, "rbf_eval_pred")
    flip(path, 2000, 2004)  # inside the stored (uncompressed) member's data
    with pytest.raises(CorruptFileError, match=r"n-8\.npz: corrupt.*SHA-256"):
        read_npz_array(path, "linear_eval_pred", digest)
    # without the recorded digest the member's CRC-32 still catches it
    with pytest.raises(CorruptFileError, match=r"n-8\.npz: corrupt.*CRC"):
        read_npz_array(path, "linear_eval_pred")
