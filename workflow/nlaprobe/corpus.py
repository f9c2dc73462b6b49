"""Corpus stage: documents by absolute index range -> corpus shards.

inputs -> outputs
    the validated ``corpus`` config section (source, dataset, revision, dataset_config,
    dataset_split, text_field, streaming, shard_docs, splits) + a split name + a shard index
    -> ``results/corpus/corpus-<tag>/{split}/shard-{shard}.parquet`` with the columns
    ``doc_id`` (string), ``doc_idx`` (int64), ``text`` (string) and ``topic`` (string, null
    unless the built-in corpus names one).

Invariants
    - Documents are addressed by their absolute index in the source (``dataset_split`` of
      ``dataset``); a split is the half-open range ``[start, stop)`` of ``corpus.splits.<split>``
      and shard ``s`` holds ``[start + s*shard_docs, min(stop, start + (s+1)*shard_docs))``.
    - ``doc_id = f"{corpus_name}:{dataset_split}:{doc_idx}"`` (SPEC §4.3; no dataset config
      name). It seeds the stage-0 position sampling, so it must not depend on where the data
      lies on disk: a local path contributes only its final name.
    - Nothing is skipped: an index range beyond the data, a missing text field, a non-string or
      empty text each raise DataError naming the index, field or file. A shard file is written
      atomically and only when every document of its range was read.
    - The built-in ``pydoc`` corpus (English prose shipped with CPython) is deterministic for a
      given Python version: the same indices always give the same paragraphs.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nlaprobe.config import HUB_ID, StageParams, corpus_is_hub, is_commit
from nlaprobe.constants import COL_DOC_ID, COL_DOC_IDX, COL_TEXT, COL_TOPIC
from nlaprobe.documents import CORPUS_SCHEMA, Document, pydoc_documents
from nlaprobe.errors import ConfigError, DataError
from nlaprobe.io import write_table
from nlaprobe.sampling import doc_id_for

logger = logging.getLogger(__name__)

SOURCES = ("builtin", "hf", "parquet", "jsonl")
BUILTIN_CORPORA = ("pydoc",)

_GLOB_CHARS = re.compile(r"[*?\[]")

PROVENANCE_KEY = b"nlaprobe.corpus"


@dataclass(frozen=True)
class CorpusParams(StageParams):
    """The parameters of one corpus job: the `corpus` config section, parsed by `from_json`
    (nlaprobe.config.StageParams; the section's own checks included)."""

    source: str
    dataset: str
    revision: str
    dataset_config: str | None
    dataset_split: str
    text_field: str
    streaming: bool
    shard_docs: int
    splits: dict

    SECTION = "corpus"

    def section(self) -> dict[str, Any]:
        """The section as the mapping the shard arithmetic reads (as nlaprobe.plan passes it)."""
        return asdict(self)


# --- shard arithmetic -------------------------------------------------------------------------


def _split_range(corpus: Mapping[str, Any], split: str) -> tuple[int, int]:
    key = f"corpus.splits.{split}"
    splits = corpus.get("splits") or {}
    if split not in splits:
        raise ConfigError(f"{key}: no such split; configured splits are {sorted(splits)}")
    rng = splits[split]
    try:
        start, stop = rng["start"], rng["stop"]
    except (KeyError, TypeError):
        raise ConfigError(
            f"{key}: expected a mapping with 'start' and 'stop', got {rng!r}"
        ) from None
    for name, value in (("start", start), ("stop", stop)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{key}.{name}: expected a non-negative integer, got {value!r}")
    if stop <= start:
        raise ConfigError(
            f"{key}: empty document range [{start}, {stop}); expected stop > start "
            "(stop is exclusive)"
        )
    return start, stop


def _shard_docs(corpus: Mapping[str, Any]) -> int:
    value = corpus.get("shard_docs")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"corpus.shard_docs: expected a positive integer, got {value!r}")
    return value


def n_shards(corpus: Mapping[str, Any], split: str) -> int:
    """Number of shards of `split`: ceil((stop - start) / shard_docs)."""
    start, stop = _split_range(corpus, split)
    return math.ceil((stop - start) / _shard_docs(corpus))


def shard_range(corpus: Mapping[str, Any], split: str, shard: int) -> tuple[int, int]:
    """Absolute document indices [start, stop) of shard `shard` of `split`."""
    start, stop = _split_range(corpus, split)
    size = _shard_docs(corpus)
    count = math.ceil((stop - start) / size)
    if not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < count:
        raise ConfigError(
            f"corpus.splits.{split}: shard {shard!r} out of range; the split "
            f"[{start}, {stop}) with shard_docs={size} has shards 0..{count - 1}"
        )
    lo = start + shard * size
    return lo, min(stop, lo + size)


# --- naming -----------------------------------------------------------------------------------


def _source(corpus: Mapping[str, Any]) -> str:
    source = corpus.get("source")
    if source not in SOURCES:
        raise ConfigError(f"corpus.source: unknown source {source!r}; expected one of {SOURCES}")
    return source


def _dataset(corpus: Mapping[str, Any]) -> str:
    dataset = corpus.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"corpus.dataset: expected a non-empty string, got {dataset!r}")
    return dataset


def _path_name(dataset: str) -> str:
    parts = Path(dataset).expanduser().parts
    globbed = [i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)]
    if globbed:
        # A pattern keeps its last plain folder, so `a/shards/*.parquet` -> `shards/*.parquet`.
        i = globbed[0]
        anchor = parts[i - 1] if i > 0 and parts[i - 1] != "/" else ""
        return "/".join(p for p in (anchor, *parts[i:]) if p)
    name = Path(dataset).expanduser().name
    if not name:  # "/" or "."
        name = Path(dataset).expanduser().resolve().name
    return name


def corpus_name(corpus: Mapping[str, Any]) -> str:
    """The corpus part of doc_id.

    hf: the `dataset` string when it is a hub id (`owner/name`; a local mirror at that relative
    path gives the same ids), else the folder name of the local path. builtin: `builtin:<name>`.
    parquet/jsonl: the file or folder name (a glob: its last plain folder and the pattern).
    """
    source = _source(corpus)
    dataset = _dataset(corpus)
    if source == "builtin":
        return f"builtin:{dataset}"
    if source == "hf" and HUB_ID.match(dataset):
        return dataset
    return _path_name(dataset)


def _text_field(corpus: Mapping[str, Any]) -> str:
    field = corpus.get("text_field", COL_TEXT) or COL_TEXT
    if not isinstance(field, str):
        raise ConfigError(f"corpus.text_field: expected a string, got {field!r}")
    return field


def _dataset_split(corpus: Mapping[str, Any]) -> str:
    value = corpus.get("dataset_split")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"corpus.dataset_split: expected a non-empty string, got {value!r}")
    return value


def _check_text(text: Any, doc_idx: int, where: str) -> str:
    if not isinstance(text, str):
        raise DataError(
            f"{where}: document {doc_idx} has a {type(text).__name__} text, expected a string"
        )
    if not text.strip():
        raise DataError(
            f"{where}: document {doc_idx} has an empty text; documents are addressed by "
            "absolute index, so empty ones cannot be skipped"
        )
    return text


def _too_few(
    where: str, available: int, start: int, stop: int, *, at_most: bool = False
) -> DataError:
    how_many = f"at most {available}" if at_most else f"only {available}"
    return DataError(
        f"{where}: requested documents [{start}, {stop}) but {how_many} exist "
        f"(stop is exclusive; indices start at 0)"
    )


# --- source: built-in pydoc -------------------------------------------------------------------


def _load_builtin(corpus: Mapping[str, Any], start: int, stop: int) -> list[Document]:
    dataset = _dataset(corpus)
    if dataset not in BUILTIN_CORPORA:
        raise ConfigError(
            f"corpus.dataset: unknown built-in corpus {dataset!r}; expected one of {BUILTIN_CORPORA}"
        )
    docs = pydoc_documents()
    if stop > len(docs):
        raise _too_few(f"built-in corpus {dataset!r}", len(docs), start, stop)
    name, dsplit = corpus_name(corpus), _dataset_split(corpus)
    return [
        Document(doc_id_for(name, dsplit, i), i, text, topic)
        for i, (topic, text) in enumerate(docs[start:stop], start=start)
    ]


# --- source: Hugging Face datasets ------------------------------------------------------------


def _offline() -> bool:
    import datasets.config

    return bool(datasets.config.HF_HUB_OFFLINE)


def resolve_hf_dataset(corpus: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """(what `datasets.load_dataset` reads, the revision to pass it, the commit sha loaded).

    A local folder: itself, no revision, no commit. A hub id online: the id at `revision`
    (streamed, never snapshotted whole; the commit is `revision` when pinned, else asked of the
    hub). A hub id offline (`HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1`): `datasets` only reuses
    its own prepared cache then, not the hub cache, so the repo's snapshot folder is resolved in
    the hub cache (`huggingface_hub.snapshot_download(..., local_files_only=True)`, the
    `refs/<revision>` -> `snapshots/<sha>` layout it writes) and read as a local dataset folder
    with the repo's own split definitions (its README `configs:`). A pinned revision that the
    cache resolves to another snapshot is an error.
    """
    dataset = _dataset(corpus)
    revision = corpus.get("revision")
    if not corpus_is_hub(corpus):
        return dataset, None, None
    where = f"dataset {dataset!r} (corpus.dataset) at revision {revision!r}"
    if _offline():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(
                snapshot_download(
                    dataset, repo_type="dataset", revision=revision, local_files_only=True
                )
            )
        except Exception as e:  # offline / not in cache / bad id: many exception types
            raise DataError(
                f"{where}: not in the local hub cache while offline ({type(e).__name__}: {e})"
            ) from e
        commit = folder.name
        if is_commit(revision) and commit != revision:
            raise DataError(f"{where}: pinned to {revision} but the cache holds snapshot {commit}")
        return str(folder), None, commit
    if is_commit(revision):
        return dataset, revision, revision
    from nlaprobe.pin import resolve_commit

    try:
        commit = resolve_commit(dataset, "dataset", revision)
    except ConfigError as e:
        raise DataError(f"{where}: {e}") from e
    # stream exactly the commit recorded, even if the branch moves meanwhile
    return dataset, commit, commit


def _load_hf(
    corpus: Mapping[str, Any], start: int, stop: int, cache_dir: str | os.PathLike | None
) -> tuple[list[Document], str | None]:
    import datasets

    dataset = _dataset(corpus)
    dsplit = _dataset_split(corpus)
    field = _text_field(corpus)
    streaming = bool(corpus.get("streaming", False))
    where = f"dataset {dataset!r} (split {dsplit!r})"
    location, revision, commit = resolve_hf_dataset(corpus)
    try:
        ds = datasets.load_dataset(
            location,
            name=corpus.get("dataset_config"),
            split=dsplit,
            revision=revision,
            streaming=streaming,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except Exception as e:  # the datasets library raises many unrelated types
        raise DataError(f"{where}: cannot load ({type(e).__name__}: {e})") from e

    columns = ds.column_names
    if columns is not None and field not in columns:
        raise DataError(
            f"{where}: no text field {field!r} (corpus.text_field); available columns: {columns}"
        )
    name = corpus_name(corpus)
    texts: list[Any] = []
    try:
        if streaming:
            for row in ds.skip(start).take(stop - start):
                if field not in row:
                    raise DataError(
                        f"{where}: no text field {field!r} (corpus.text_field); available "
                        f"columns: {sorted(row)}"
                    )
                texts.append(row[field])
            if len(texts) < stop - start:
                # Without a full pass the exact size is unknown when nothing follows `start`.
                raise _too_few(where, start + len(texts), start, stop, at_most=not texts)
        else:
            if len(ds) < stop:
                raise _too_few(where, len(ds), start, stop)
            texts = list(ds.select(range(start, stop))[field])
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: cannot read documents ({type(e).__name__}: {e})") from e
    docs = [
        Document(doc_id_for(name, dsplit, i), i, _check_text(t, i, where))
        for i, t in enumerate(texts, start=start)
    ]
    return docs, commit


# --- sources: local parquet / jsonl -----------------------------------------------------------


def _local_files(corpus: Mapping[str, Any], suffix: str) -> list[Path]:
    dataset = _dataset(corpus)
    if _GLOB_CHARS.search(dataset):
        files = sorted(Path(f) for f in glob.glob(os.path.expanduser(dataset)) if Path(f).is_file())
        if not files:
            raise DataError(f"{dataset}: pattern matches no files (corpus.dataset)")
        return files
    path = Path(dataset).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.glob(f"*{suffix}") if p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no *{suffix} files")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{path}: no such file or folder (corpus.dataset)")


def _parquet_texts(files: list[Path], field: str, start: int, stop: int) -> Iterator[Any]:
    """Texts of rows [start, stop) across `files`, reading only the overlapping row groups."""
    offset = 0
    for f in files:
        if offset >= stop:
            return
        try:
            # a source file is the user's: checked against its page checksums where it has them
            pf = pq.ParquetFile(f, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{f}: not a readable parquet file ({e})") from None
        names = pf.schema_arrow.names
        if field not in names:
            raise DataError(
                f"{f}: no text field {field!r} (corpus.text_field); available columns: {names}"
            )
        meta = pf.metadata
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            lo, hi = max(start, offset), min(stop, offset + rows)
            if lo < hi:
                try:
                    col = pf.read_row_group(g, columns=[field]).column(field)
                except (pa.ArrowException, OSError) as e:
                    raise DataError(f"{f}: cannot read row group {g} ({e})") from None
                yield from col.slice(lo - offset, hi - lo).to_pylist()
            offset += rows
            if offset >= stop:
                return


def _jsonl_texts(files: list[Path], field: str, start: int, stop: int) -> Iterator[Any]:
    """Texts of records [start, stop) across `files`; blank lines are not records."""
    idx = 0
    for f in files:
        try:
            fh = f.open("r", encoding="utf-8")
        except OSError as e:
            raise DataError(f"{f}: cannot open ({e})") from None
        with fh:
            try:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    if idx >= start:
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DataError(f"{f}:{lineno}: not valid JSON ({e})") from None
                        if not isinstance(record, dict):
                            raise DataError(
                                f"{f}:{lineno}: expected a JSON object, got {type(record).__name__}"
                            )
                        if field not in record:
                            raise DataError(
                                f"{f}:{lineno}: no text field {field!r} (corpus.text_field); "
                                f"available fields: {sorted(record)}"
                            )
                        yield record[field]
                    idx += 1
                    if idx >= stop:
                        return
            except UnicodeDecodeError as e:
                raise DataError(f"{f}: not UTF-8 text ({e})") from None


def _parquet_rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _jsonl_records(files: list[Path]) -> int:
    total = 0
    for f in files:
        with f.open("r", encoding="utf-8") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def _load_local(corpus: Mapping[str, Any], start: int, stop: int) -> list[Document]:
    source = _source(corpus)
    files = _local_files(corpus, f".{source}")
    field = _text_field(corpus)
    reader = _parquet_texts if source == "parquet" else _jsonl_texts
    texts = list(reader(files, field, start, stop))
    where = f"{source} corpus {_dataset(corpus)!r}"
    if len(texts) < stop - start:
        total = _parquet_rows(files) if source == "parquet" else _jsonl_records(files)
        raise _too_few(where, total, start, stop)
    name, dsplit = corpus_name(corpus), _dataset_split(corpus)
    return [
        Document(doc_id_for(name, dsplit, i), i, _check_text(t, i, where))
        for i, t in enumerate(texts, start=start)
    ]


# --- public entry points ----------------------------------------------------------------------


def load_documents(
    corpus: Mapping[str, Any],
    start: int,
    stop: int,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> list[Document]:
    """Documents with absolute indices [start, stop) of the configured source, in order.

    `cache_dir` is the `datasets` cache for the hf source (default: the library's own).
    """
    return _read_documents(corpus, start, stop, cache_dir)[0]


def _read_documents(
    corpus: Mapping[str, Any], start: int, stop: int, cache_dir: str | os.PathLike | None
) -> tuple[list[Document], str | None]:
    """(documents, commit sha of the hub dataset read, or None for other sources)."""
    if start < 0 or stop <= start:
        raise ConfigError(
            f"corpus: empty or negative document range [{start}, {stop}); expected 0 <= start < stop"
        )
    source = _source(corpus)
    if source == "builtin":
        return _load_builtin(corpus, start, stop), None
    if source == "hf":
        return _load_hf(corpus, start, stop, cache_dir)
    return _load_local(corpus, start, stop), None


def _provenance(
    corpus: Mapping[str, Any], split: str, shard: int, start: int, stop: int, commit: str | None
) -> dict:
    keys = ("source", "dataset", "revision", "dataset_config", "dataset_split", "text_field")
    prov = {k: corpus.get(k) for k in keys}
    prov.update(
        corpus_name=corpus_name(corpus),
        split=split,
        shard=shard,
        shard_docs=corpus.get("shard_docs"),
        start=start,
        stop=stop,
    )
    if commit is not None:
        prov["commit"] = commit  # the snapshot actually read
    if prov["source"] == "builtin":
        # pydoc_data changes between Python releases, and with it the documents.
        prov["python_version"] = ".".join(map(str, sys.version_info[:3]))
    return prov


def build_corpus_shard(
    params: CorpusParams,
    split: str,
    shard: int,
    out: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> int:
    """Write shard `shard` of `split` to `out` (parquet, atomically); return its document count.

    On any error nothing is written at `out`.
    """
    corpus = params.section()
    start, stop = shard_range(corpus, split, shard)
    logger.info(
        "corpus %s split %s shard %d: documents [%d, %d)",
        corpus_name(corpus),
        split,
        shard,
        start,
        stop,
    )
    docs, commit = _read_documents(corpus, start, stop, cache_dir)
    table = pa.table(
        {
            COL_DOC_ID: [d.doc_id for d in docs],
            COL_DOC_IDX: [d.doc_idx for d in docs],
            COL_TEXT: [d.text for d in docs],
            COL_TOPIC: [d.topic for d in docs],
        },
        schema=CORPUS_SCHEMA,
    ).replace_schema_metadata(
        {
            PROVENANCE_KEY: json.dumps(
                _provenance(corpus, split, shard, start, stop, commit), sort_keys=True
            )
        }
    )
    write_table(out, table)
    logger.info("wrote %d documents to %s", len(docs), out)
    return len(docs)
