"""File I/O with the project's invariants: atomic writes (temp name, then rename), parquet
files that carry their own integrity checks, readers that check them and the columns and vector
widths, and YAML sidecars.

A killed job must never leave a file at its final name that a rerun could mistake for complete,
and a file damaged after it was written (on disk, in a copy, in remote storage) must never be
read as numbers: every parquet file `write_table` writes has CRC-32 page checksums and a SHA-256
digest in its footer (`DIGEST_KEY`, see `file_digest`), and `read_table` verifies both before
anything is used, raising CorruptFileError naming the file. JSON objects and YAML files written
here record a SHA-256 too (`json_digest`, `write_yaml`), and an .npz's digest is returned for
its caller to record (`write_npz`); their readers verify them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from nlaprobe import constants as C
from nlaprobe.errors import CorruptFileError, DataError, show


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it to `path` on success.

    On any exception the temporary file is removed and nothing appears at `path`.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; results are shared files: the usual 0666 minus the umask
        if tmp_path.exists():
            tmp_path.chmod(0o666 & ~_umask())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


# mkstemp's names: the prefix, 8 random characters of this alphabet, the suffix
_TEMP_NAME = re.compile(r"\.(?P<final>.+)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files `atomic_path` left for `path` when a process was killed between
    the temporary write and the rename (SIGKILL runs no cleanup). Only the job that owns the
    output calls this, at its start, so no live writer's file is touched. Returns what it
    removed."""
    final = Path(path)
    if not final.parent.is_dir():
        return []
    removed = []
    for entry in final.parent.iterdir():
        m = _TEMP_NAME.fullmatch(entry.name)
        if m and m.group("final") == final.name and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# The key of every digest this module records: parquet footer, JSON object, YAML first line.
DIGEST_KEY = "nlaprobe.sha256"


# --- integrity of JSON and YAML outputs ----------------------------------------------------------
#
# JSON (an object): the SHA-256 of its canonical form (`canonical_json`: keys sorted, no spaces,
# UTF-8) with the digest entry left out, stored under DIGEST_KEY in its "meta" object when it has
# one (the results files: {"meta", "data"}), else at its top level (ridge runs, stamps, input
# records). A content digest: whitespace is not covered, every key and value is.
# YAML: the SHA-256 of the file's bytes after a first line `# nlaprobe.sha256: <hex>` (a comment:
# every YAML reader ignores it). Readers verify a digest when the file has one; files written by
# others (a release's checkpoint sidecar, a config) have none and are read as before.

_YAML_DIGEST = re.compile(r"# nlaprobe\.sha256: (?P<hex>[0-9a-f]{64})\n")
_YAML_MARK = "# nlaprobe.sha256"  # a first line starting so must be a well-formed digest


def canonical_json(obj: Any) -> bytes:
    """The bytes a JSON digest is taken over: keys sorted, no spaces, UTF-8 (NaN as `NaN`)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest_holder(obj: dict) -> dict:
    return obj["meta"] if isinstance(obj.get("meta"), dict) else obj


def json_digest(obj: dict) -> str:
    """SHA-256 of `canonical_json(obj)` with its digest entry (`DIGEST_KEY` in obj["meta"] when
    that is an object, else in obj) left out."""
    holder = _digest_holder(obj)
    rest = {k: v for k, v in holder.items() if k != DIGEST_KEY}
    bare = {**obj, "meta": rest} if holder is not obj else rest
    return hashlib.sha256(canonical_json(bare)).hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON, atomically; an object gets its digest
    (`json_digest`) recorded in it (the caller's object is not modified)."""
    if isinstance(obj, dict):
        # digest what a reader will parse: keys as strings (an int key sorts otherwise), lists
        obj = json.loads(json.dumps(obj, ensure_ascii=False))
        digest = json_digest(obj)
        if isinstance(obj.get("meta"), dict):
            obj = {**obj, "meta": {**obj["meta"], DIGEST_KEY: digest}}
        else:
            obj = {**obj, DIGEST_KEY: digest}
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _check_json(p: Path, obj: Any) -> Any:
    if isinstance(obj, dict) and DIGEST_KEY in _digest_holder(obj):
        recorded = _digest_holder(obj)[DIGEST_KEY]
        if recorded != json_digest(obj):
            raise CorruptFileError(
                p,
                f"{p}: corrupt: its content does not match the SHA-256 recorded in it "
                f"({show(recorded, 24)}); it is damaged and must be rebuilt",
            )
    return obj


def _read_parsed(path: str | os.PathLike, parse, errors: tuple, kind: str) -> Any:
    """parse(text of path); a missing, unreadable or unparsable file raises DataError naming it."""
    p = Path(path)
    try:
        return parse(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not readable ({e})") from None
    except errors as e:
        raise DataError(f"{p}: not valid {kind} ({e})") from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file and verify its digest when it records one (`write_json`); a missing or
    invalid file raises DataError naming it, a digest mismatch CorruptFileError."""
    p = Path(path)
    return _check_json(p, _read_parsed(p, json.loads, (json.JSONDecodeError,), "JSON"))


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as YAML, atomically, after a first line recording the SHA-256 of the rest."""
    text = yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    write_text(path, f"# {DIGEST_KEY}: {digest}\n{text}")


def _check_yaml(p: Path, text: str) -> str:
    """`text` of a YAML file, verified against its first-line digest when it has one."""
    if not text.startswith(_YAML_MARK):
        return text
    m = _YAML_DIGEST.match(text)
    rest = text[m.end() :] if m else ""
    if m is None or hashlib.sha256(rest.encode("utf-8")).hexdigest() != m["hex"]:
        raise CorruptFileError(
            p,
            f"{p}: corrupt: its text does not match the SHA-256 on its first line; it is "
            "damaged and must be rebuilt",
        )
    return text


# A config or a sidecar has a few hundred nodes; aliases may repeat a node, but expanding to more
# than this is an alias bomb ("billion laughs"): walking it would take hours or gigabytes.
MAX_YAML_NODES = 10_000


class YAMLLimitError(yaml.YAMLError):
    """A YAML document beyond the loader's bounds (alias expansion, nesting depth, huge ints)."""


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """Nodes of the document with every alias expanded, counted on the composed graph (each
    distinct node once, memoised), so the count is cheap however large the expansion is."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def count(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise YAMLLimitError("a recursive alias (a node that contains itself)")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(count(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(count(k) + count(v) for k, v in node.value)
        active.discard(key)
        memo[key] = min(n, limit + 1)
        return memo[key]

    return count(root)


def load_yaml(text: str, loader: type = yaml.SafeLoader) -> Any:
    """Parse one YAML document with `loader` (a SafeLoader class) within bounds: the document
    with its aliases expanded has at most MAX_YAML_NODES nodes (checked before anything walks
    it), is not nested too deeply for the parser, and holds no integer too long to convert.
    Anything else raises YAMLLimitError (a yaml.YAMLError) saying which bound."""
    parser = loader(text)
    try:
        try:
            node = parser.get_single_node()
            if node is None:
                return None
            n = _expanded_nodes(node, MAX_YAML_NODES)
            if n > MAX_YAML_NODES:
                raise YAMLLimitError(
                    f"expands to more than {MAX_YAML_NODES} nodes through aliases (an alias "
                    "bomb?); write the values out"
                )
            return parser.construct_document(node)
        except RecursionError:
            raise YAMLLimitError("nested too deeply") from None
        except ValueError as e:  # an integer of thousands of digits (int() refuses it)
            raise YAMLLimitError(f"a value cannot be read: {str(e)[:120]}") from None
    finally:
        parser.dispose()


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file (safe loader, bounded: `load_yaml`); a missing or invalid file raises
    DataError naming it."""
    p = Path(path)
    return _read_parsed(p, lambda text: load_yaml(_check_yaml(p, text)), (yaml.YAMLError,), "YAML")


# --- integrity of parquet files -----------------------------------------------------------------
#
# A file cannot hold the hash of its own bytes, so the digest is defined with its own 64 hex
# digits written as "0" * 64: SHA-256 over every byte of the file (magic, column chunks with their
# page headers and pages, the footer with the schema and all key-value metadata, the footer
# length and trailing magic) with the digest's value replaced by the placeholder. `write_table`
# writes the file with the placeholder, hashes it and patches the value in place (same length, so
# nothing moves); `file_digest` recomputes it the same way. Every byte but the 64 digits is
# covered, and a change to those digits is a mismatch too.

_DIGEST_LEN = 64
_PLACEHOLDER = b"0" * _DIGEST_LEN
_MAGIC = b"PAR1"
# how pyarrow's Thrift compact encoder writes the key-value pair {DIGEST_KEY: <64 characters>}:
# the key, then the value's field header (field 2, binary) and its length (64) as a varint
_KEY_BYTES = DIGEST_KEY.encode()
_VALUE_HEADER = b"\x18\x40"
_HEX = re.compile(rb"[0-9a-f]{64}")


def _digest_offset(mm: mmap.mmap | bytes, path: Path) -> int:
    """Byte offset of the 64 digest digits in a parquet file's footer; CorruptFileError naming
    `path` when the file has no parquet footer or no (single, well-formed) digest entry."""
    size = len(mm)
    if size < 12 or mm[:4] != _MAGIC or mm[size - 4 :] != _MAGIC:
        raise CorruptFileError(path, f"{path}: corrupt: not a parquet file (no PAR1 magic)")
    footer_len = int.from_bytes(mm[size - 8 : size - 4], "little")
    footer_start = size - 8 - footer_len
    if footer_start < 4:
        raise CorruptFileError(path, f"{path}: corrupt: its footer length is out of range")
    footer = mm[footer_start : size - 8]
    key = footer.find(_KEY_BYTES)
    if key < 0 or footer.find(_KEY_BYTES, key + 1) >= 0:
        raise CorruptFileError(
            path,
            f"{path}: corrupt or unverifiable: no single {DIGEST_KEY} digest in its footer "
            "(every shard nlaprobe writes has one; an older or foreign file is rebuilt)",
        )
    header = key + len(_KEY_BYTES)
    if footer[header : header + len(_VALUE_HEADER)] != _VALUE_HEADER:
        raise CorruptFileError(path, f"{path}: corrupt: its {DIGEST_KEY} entry is malformed")
    return footer_start + header + len(_VALUE_HEADER)


def _sha256_with_placeholder(mm: mmap.mmap, at: int) -> str:
    h = hashlib.sha256()
    view = memoryview(mm)
    try:
        h.update(view[:at])
        h.update(_PLACEHOLDER)
        h.update(view[at + _DIGEST_LEN :])
    finally:
        view.release()
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> tuple[str, str]:
    """(recorded, actual) SHA-256 of a parquet file written by `write_table`: the hex digest in
    its footer, and the one recomputed from its bytes (the digest's own digits read as zeros).
    They are equal for an intact file. CorruptFileError when the file has no digest entry."""
    p = Path(path)
    with p.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 12:
            raise CorruptFileError(p, f"{p}: corrupt: {size} bytes, too short for parquet")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            at = _digest_offset(mm, p)
            recorded = bytes(mm[at : at + _DIGEST_LEN])
            actual = _sha256_with_placeholder(mm, at)
    return recorded.decode("latin-1"), actual


def verify_file(path: str | os.PathLike) -> str:
    """Check a parquet file written by `write_table` against its recorded SHA-256; return the
    digest. CorruptFileError naming the file when it has none or it does not match."""
    p = Path(path)
    recorded, actual = file_digest(p)
    if not _HEX.fullmatch(recorded.encode("latin-1")) or recorded != actual:
        raise CorruptFileError(
            p,
            f"{p}: corrupt: its bytes do not match the SHA-256 recorded when it was written "
            f"(recorded {recorded[:16]!r}..., computed {actual[:16]}...); it is damaged and "
            "must be rebuilt",
        )
    return actual


def write_table(path: str | os.PathLike, table: pa.Table) -> str:
    """Write `table` to `path` atomically, with CRC-32 page checksums and its SHA-256 digest in
    the footer (`DIGEST_KEY`; the table's own schema metadata is kept as is). Returns the
    digest."""
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, table.schema, write_page_checksum=True) as writer:
            writer.write_table(table)
            writer.add_key_value_metadata({DIGEST_KEY: _PLACEHOLDER.decode()})
        with tmp.open("r+b") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                at = _digest_offset(mm, tmp)
                if mm[at : at + _DIGEST_LEN] != _PLACEHOLDER:
                    raise RuntimeError(f"{tmp}: the digest placeholder is not where expected")
                digest = _sha256_with_placeholder(mm, at)
            f.seek(at)
            f.write(digest.encode())
    return digest


def vectors_to_arrow(vectors: np.ndarray, valid: np.ndarray | None = None) -> pa.FixedSizeListArray:
    """[n, d] float array -> fixed-size list<float32>[d] column (null where `valid` is False)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {v.shape}")
    values = pa.array(v.reshape(-1), type=pa.float32())
    if valid is None:
        return pa.FixedSizeListArray.from_arrays(values, v.shape[1])
    mask = pa.array(~np.asarray(valid, dtype=bool))
    return pa.FixedSizeListArray.from_arrays(values, v.shape[1], mask=mask)


def _is_vector(t: pa.DataType) -> bool:
    return (
        pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
    ) and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))


# Column kinds a reader may require (`read_table(path, {column: kind})`); a kind ending in "?"
# allows nulls (and a column of nulls only), the others allow none.
COLUMN_KINDS = {
    "int": pa.types.is_integer,
    "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "bool": pa.types.is_boolean,
    "float": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "vector": _is_vector,
}


def check_columns(table: pa.Table, kinds: Mapping[str, str], where: str) -> None:
    """Each column of `kinds` has that kind (see COLUMN_KINDS) and no nulls unless the kind
    ends in "?"; DataError naming the file, the column, its type and what was expected."""
    for column, kind in kinds.items():
        nullable = kind.endswith("?")
        name = kind.rstrip("?")
        col = table.column(column)
        if nullable and pa.types.is_null(col.type):
            continue
        if not COLUMN_KINDS[name](col.type):
            raise DataError(
                f"{where}: column {column!r} has type {col.type}, expected {name}"
                + (" (or null)" if nullable else "")
            )
        if not nullable and col.null_count:
            bad = int(np.nonzero(col.is_null().to_numpy(zero_copy_only=False))[0][0])
            raise DataError(f"{where}: column {column!r} row {bad} is null; expected {name}")


def read_table(
    path: str | os.PathLike, columns: Sequence[str] | Mapping[str, str] | None = None
) -> pa.Table:
    """Read a parquet file written by `write_table`, after checking it: its SHA-256 against the
    digest in its footer (`verify_file`), then every page against its CRC-32 while decoding. A
    damaged file, or one without a digest, raises CorruptFileError naming it; a missing,
    unreadable or column-less file DataError. `columns` as a mapping {column: kind} also checks
    each column's kind (`check_columns`)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        verify_file(p)
    except OSError as e:
        raise DataError(f"{p}: not readable ({e})") from None
    try:
        # the digest matched, so the pages are as written; their CRCs are checked all the same
        table = pq.read_table(p, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{p}: not a readable parquet file ({e})") from None
    if columns is not None:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataError(
                f"{p}: missing column(s) {missing}; expected at least {list(columns)}, "
                f"found {table.column_names}"
            )
        if isinstance(columns, Mapping):
            check_columns(table, columns, str(p))
    return table


def check_rows(rows: Sequence[int] | np.ndarray, n: int, where: str, what: str) -> None:
    """Row indices into a table of `n` rows must lie in [0, n): a negative index would pair a
    row with one counted from the end. DataError naming `where`, the first bad row and `what`
    it indexes."""
    r = np.asarray(rows, dtype=np.int64)
    bad = np.nonzero((r < 0) | (r >= n))[0]
    if len(bad):
        raise DataError(
            f"{where}: row {int(r[bad[0]])} is out of range for {what} ({n} rows: 0..{n - 1})"
        )


def vectors_from_column(
    table: pa.Table,
    column: str,
    *,
    width: int | None = None,
    where: str = "table",
    require_finite: bool = True,
) -> np.ndarray:
    """Column of (fixed- or variable-length) float lists -> [n, d] float32 array.

    Raises DataError when rows have different lengths, the width is not `width`, or a value is
    not finite.
    """
    col = table.column(column).combine_chunks()
    n = len(col)
    if col.null_count:
        # flatten() skips null rows, so they would shift every later vector
        bad = int(np.nonzero(col.is_null().to_numpy(zero_copy_only=False))[0][0])
        raise DataError(f"{where}: column {column!r} row {bad} is null; expected a vector")
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
        flat = col.flatten().to_numpy(zero_copy_only=False)
        arr = np.asarray(flat, dtype=np.float32).reshape(n, d)
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = np.asarray(col.value_lengths().to_numpy(zero_copy_only=False))
        if n and (lengths != lengths[0]).any():
            bad = int(np.nonzero(lengths != lengths[0])[0][0])
            raise DataError(
                f"{where}: column {column!r} has rows of different lengths "
                f"(row 0 has {lengths[0]}, row {bad} has {lengths[bad]})"
            )
        d = int(lengths[0]) if n else (width or 0)
        flat = col.flatten().to_numpy(zero_copy_only=False)
        arr = np.asarray(flat, dtype=np.float32).reshape(n, d)
    else:
        raise DataError(
            f"{where}: column {column!r} has type {col.type}, expected a list of floats"
        )
    if width is not None and arr.shape[1] != width:
        raise DataError(
            f"{where}: column {column!r} has vectors of width {arr.shape[1]}, expected {width}"
        )
    if require_finite and not np.isfinite(arr).all():
        bad = int(np.nonzero(~np.isfinite(arr).all(axis=1))[0][0])
        raise DataError(f"{where}: column {column!r} row {bad} has a non-finite value (NaN/inf)")
    return arr


def with_meta(table: pa.Table, key: str, obj: Any) -> pa.Table:
    """Attach `obj` as canonical JSON under `key` in the parquet schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[key.encode()] = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()
    return table.replace_schema_metadata(meta)


def table_meta(table: pa.Table, key: str) -> Any:
    """The JSON stored by `with_meta` (None when absent)."""
    raw = (table.schema.metadata or {}).get(key.encode())
    return json.loads(raw) if raw is not None else None


# --- numpy archives ------------------------------------------------------------------------------


def sha256_of_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> str:
    """Write `arrays` as an uncompressed .npz (a zip: each member has its CRC-32), atomically;
    return the file's SHA-256, for the caller to record beside it (the ridge run's JSON)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return sha256_of_file(tmp)


def read_vectors(paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The primary-layer vectors and doc ids of activation shards (stage-0 schema), concatenated
    in order."""
    vecs, docs = [], []
    for p in paths:
        t = read_table(p, {C.COL_DOC_ID: "str", C.COL_VECTOR: "vector"})
        vecs.append(vectors_from_column(t, C.COL_VECTOR, where=str(p)))
        docs += t.column(C.COL_DOC_ID).to_pylist()
    return np.concatenate(vecs), docs


def read_npz_array(path: str | os.PathLike, name: str, sha256: str | None = None) -> np.ndarray:
    """Array `name` of an .npz, read whole so that zip checks the member's CRC-32 (numpy's own
    loader reads only the bytes it needs and may skip the check), after checking the file's
    SHA-256 against `sha256` when given. No pickles. CorruptFileError naming the file when it
    is damaged; DataError when it is missing or has no such array."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if sha256 is not None and sha256_of_file(p) != sha256:
        raise CorruptFileError(
            p, f"{p}: corrupt: its bytes do not match the SHA-256 recorded when it was written"
        )
    try:
        with zipfile.ZipFile(p) as zf:
            data = zf.read(f"{name}.npy")
    except KeyError:
        raise DataError(f"{p}: no array {name!r}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise CorruptFileError(p, f"{p}: corrupt: {e}") from None
    try:
        return np.lib.format.read_array(BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptFileError(p, f"{p}: corrupt: array {name!r} unreadable ({e})") from None
