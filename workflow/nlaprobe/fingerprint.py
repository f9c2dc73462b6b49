"""Content fingerprints for tags (SPEC §2): local checkpoint folders and the built-in corpus.

inputs -> outputs: a local checkpoint folder -> `{"sha256": ..., "files": n}`, the SHA-256 of its
manifest (every file a load reads, by relative path, with the SHA-256 of its bytes); a built-in
corpus name -> the SHA-256 of its documents.

Invariants:
- the manifest covers exactly the files `nlaprobe.checkpoints` loads or downloads
  (constants.CHECKPOINT_FILES: weights, configs, tokenizer, sidecar, chat templates; also
  constants.REMOTE_CODE_FILES for an entry that trusts remote code); hidden files and folders
  (leading dot: temporary files, tool caches) are not part of it. Same bytes under the same
  names give the same fingerprint on any machine, whatever the folder is called;
- a file is hashed again only when its size, mtime or ctime differ from what the cache holds.
  The cache is a small JSON file: $NLAPROBE_FINGERPRINT_CACHE, else
  `.snakemake/nlaprobe-fingerprints.json` when the working directory has a `.snakemake/`
  (Snakemake's own metadata folder), else nothing persists beyond the process. A file modified
  in the last two seconds is hashed but not cached (its timestamps may not yet tell a further
  write apart);
- the built-in corpus digest is cached under the stat of its source (`pydoc_data.topics`) and
  the SHA-256 of the code that selects the documents (nlaprobe/documents.py);
- no network, no model loading, no torch: planning the DAG stays cheap.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from nlaprobe import constants as C
from nlaprobe.errors import ConfigError, show

log = logging.getLogger(__name__)

CACHE_ENV = "NLAPROBE_FINGERPRINT_CACHE"
CACHE_NAME = "nlaprobe-fingerprints.json"
CACHE_VERSION = 1
RACY_SECONDS = 2.0
_CHUNK = 1 << 20

# process-wide: the cache file's content once read, keyed by the cache path
_caches: dict[str, dict[str, Any]] = {}


def cache_path() -> Path | None:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    meta = Path(".snakemake")
    return meta / CACHE_NAME if meta.is_dir() else None


def _load(path: Path | None) -> dict[str, Any]:
    key = str(path)
    if key not in _caches:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            data = {}
        files = data.get("files")
        corpora = data.get("corpora")
        _caches[key] = {
            "version": CACHE_VERSION,
            "files": files if isinstance(files, dict) else {},
            "corpora": corpora if isinstance(corpora, dict) else {},
        }
    return _caches[key]


def _save(path: Path | None, cache: dict[str, Any]) -> None:
    if path is None:
        return
    from nlaprobe.io import write_text

    try:
        write_text(path, json.dumps(cache, sort_keys=True))
    except OSError as e:  # a read-only checkout: fingerprints still work, only slower
        log.debug("cannot write the fingerprint cache %s: %s", path, e)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_files(folder: Path, *, remote_code: bool = False) -> list[str]:
    """Relative paths (posix, sorted) of the files of a checkpoint folder that a load reads."""
    patterns = C.CHECKPOINT_FILES + (C.REMOTE_CODE_FILES if remote_code else ())
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            rel = Path(here, name).relative_to(folder).as_posix()
            if any(fnmatch.fnmatch(rel, p) for p in patterns):
                found.append(rel)
    return sorted(found)


def checkpoint_fingerprint(path: str, *, where: str, remote_code: bool = False) -> dict:
    """The content fingerprint of the local checkpoint folder `path` (relative to the working
    directory): `{"sha256": <manifest digest>, "files": <count>}`. ConfigError naming `where`
    (the config key) when the folder is missing or holds no checkpoint file."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"{where}: checkpoint directory {show(path, 200)} not found (its files are part of "
            "the tags of everything computed from it)"
        )
    names = checkpoint_files(folder, remote_code=remote_code)
    if not names:
        patterns = C.CHECKPOINT_FILES + (C.REMOTE_CODE_FILES if remote_code else ())
        raise ConfigError(
            f"{where}: {show(path, 200)} holds no checkpoint files ({', '.join(patterns)})"
        )
    where_cache = cache_path()
    cache = _load(where_cache)
    entries = cache["files"]
    root = str(folder.resolve())
    now = time.time()
    changed = False
    manifest = hashlib.sha256()
    for rel in names:
        file = folder / rel
        st = file.stat()
        key = os.path.join(root, rel)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        hit = entries.get(key)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp:
            digest = hit[3]
        else:
            digest = sha256_file(file)
            if now - max(st.st_mtime, st.st_ctime) > RACY_SECONDS:
                entries[key] = [*stamp, digest]
                changed = True
            else:
                entries.pop(key, None)
        manifest.update(f"{rel}\t{digest}\n".encode())
    # forget files of this folder that are gone, so the cache does not grow without bound
    prefix = root + os.sep
    live = {os.path.join(root, rel) for rel in names}
    for key in [k for k in entries if k.startswith(prefix) and k not in live]:
        del entries[key]
        changed = True
    if changed:
        _save(where_cache, cache)
    return {"sha256": manifest.hexdigest(), "files": len(names)}


# --------------------------------------------------------------------------- built-in corpus

_code_digest: dict[str, str] = {}


def _corpus_code() -> str:
    """SHA-256 of nlaprobe/documents.py (which paragraphs become documents, in which order)."""
    if "corpus" not in _code_digest:
        _code_digest["corpus"] = sha256_file(Path(__file__).with_name("documents.py"))
    return _code_digest["corpus"]


def builtin_corpus_digest(name: str) -> str:
    """SHA-256 of the documents of a built-in corpus (`pydoc`: `documents.pydoc_documents()`, the
    topics of the running Python's `pydoc_data`), as canonical JSON [[topic, text], ...]."""
    if name != "pydoc":
        raise ConfigError(f"corpus.dataset: unknown built-in corpus {show(name)}")
    spec = importlib.util.find_spec("pydoc_data.topics")
    origin = spec.origin if spec is not None else None
    st = os.stat(origin) if origin and os.path.exists(origin) else None
    key = json.dumps(
        [name, origin, st and [st.st_size, st.st_mtime_ns], _corpus_code()], sort_keys=True
    )
    where_cache = cache_path()
    cache = _load(where_cache)
    digest = cache["corpora"].get(key)
    if not isinstance(digest, str):
        from nlaprobe.documents import pydoc_documents

        blob = json.dumps(pydoc_documents(), ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()
        cache["corpora"] = {
            k: v for k, v in cache["corpora"].items() if not k.startswith(f'["{name}"')
        }
        cache["corpora"][key] = digest
        _save(where_cache, cache)
    return digest
