"""What happens to a damaged input: it is set aside, and the workflow rebuilds it.

inputs -> outputs: a workflow result (`is_result`) a reader found corrupt
(nlaprobe.errors.CorruptFileError) ->
    - `.<name>.corrupt` beside it (the bytes, kept for inspection; nothing reads that name), and
    - when the job runs under Snakemake (a `.snakemake/` folder in its working directory), a
      record `.snakemake/nlaprobe-corrupt/<sha256 of the path>.json` = {"path", "error"};
    then, in the Snakemake process (the Snakefile's `onerror`), `release_from_storage`: for each
    record whose path is the local copy of an object of the default storage provider, that
    object is removed from storage.

Why: Snakemake rebuilds a file when it is missing (or older than its inputs), never because a
consumer failed on it. Locally, the file set aside is missing, so the next invocation runs its
job again and, through the newer file, everything below it. With remote storage
(`--default-storage-provider`) the job reads a local copy under `.snakemake/storage/`; setting
that aside is not enough, since the next invocation would retrieve the same damaged object, so
the run that found the damage removes the object itself, through the storage plugin's own
`remove()` (fs, s3, ...), at its end. On the next invocation (on this machine or a fresh one)
the object is missing and is rebuilt, not used. A `--retries` attempt of the failed job does not
rebuild its input (the DAG of a run is fixed); the next invocation does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

RECORDS = Path(".snakemake") / "nlaprobe-corrupt"
SUFFIX = ".corrupt"


def set_aside(path: str | os.PathLike) -> Path | None:
    """Rename a damaged file to `.<name>.corrupt` in its folder (replacing an earlier one); the
    new path, or None when the file is already gone."""
    p = Path(path)
    target = p.with_name(f".{p.name}{SUFFIX}")
    try:
        os.replace(p, target)
    except FileNotFoundError:
        return None
    return target


def record(path: str | os.PathLike, error: str, workdir: str | os.PathLike = ".") -> Path | None:
    """Record a damaged input for the Snakemake process (`release_from_storage`), when the job
    runs under Snakemake (`<workdir>/.snakemake/` exists); the record's path, or None."""
    root = Path(workdir)
    if not (root / ".snakemake").is_dir():
        return None
    folder = root / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:16]
    out = folder / f"{key}.json"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"path": os.path.abspath(path), "error": error}) + "\n")
    os.replace(tmp, out)
    return out


def is_result(path: str | os.PathLike) -> bool:
    """Whether `path` is a file the workflow rebuilds when it is missing: one under a `results/`
    folder (or the local copy of one, under .snakemake/storage/), not inside a demo build (a
    folder output: a file missing inside it rebuilds nothing). A user's files (a checkpoint
    folder, a corpus source) are never moved."""
    parts = Path(path).parts
    if "results" not in parts:
        return False
    start = len(parts) - 1 - parts[::-1].index("results")
    return len(parts) > start + 1 and parts[start + 1] != "demo"


def handle_corrupt(path: str | os.PathLike, error: str) -> Path | None:
    """What a stage command does when a reader raised CorruptFileError: a workflow result is set
    aside and recorded (see the module docstring); anything else is left where it is. Returns
    where the file went (None: left in place, or already gone)."""
    if not is_result(path):
        return None
    moved = set_aside(path)
    record(path, error)
    return moved


def storage_query(local: Path, local_prefix: Path, prefix: str, object_for: Callable) -> Any:
    """The storage object whose local copy is `local`, or None: the workflow path is the part of
    `local` from its last `results/` folder, Snakemake's query for it is `<prefix>/<path>`, and
    the object's own `local_path()` must be `local` (so no other object is ever chosen)."""
    parts = local.parts
    if "results" not in parts:
        return None
    start = len(parts) - 1 - parts[::-1].index("results")
    rel = Path(*parts[start:]).as_posix()
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    obj = object_for(f"{prefix}{rel}")
    if Path(os.path.abspath(obj.local_path())) != Path(os.path.abspath(local)):
        return None
    if local_prefix is not None and not Path(os.path.abspath(local)).is_relative_to(
        os.path.abspath(local_prefix)
    ):
        return None
    return obj


def release_from_storage(workflow: Any, say: Callable[[str], None] = print) -> list[str]:
    """In the Snakemake process (the Snakefile's `onerror`): remove from the default storage
    provider every object whose local copy a job found corrupt (the records of `record`), so the
    next invocation rebuilds it; then drop the records. Without a default storage provider the
    jobs have already set the files aside and only the records go. Returns the removed queries."""
    folder = Path(RECORDS)
    if not folder.is_dir():
        return []
    provider = None
    if workflow.storage_settings.default_storage_provider is not None:
        provider = workflow.storage_registry.default_storage_provider
    removed = []
    for rec in sorted(folder.glob("*.json")):
        try:
            local = Path(json.loads(rec.read_text())["path"])
        except (OSError, ValueError, KeyError, TypeError):
            rec.unlink(missing_ok=True)
            continue
        if provider is not None:
            obj = storage_query(
                local,
                provider.local_prefix,
                workflow.storage_settings.default_storage_prefix or "",
                provider.object,
            )
            try:
                if obj is not None and obj.exists():
                    obj.remove()
                    removed.append(obj.query)
                    say(
                        f"nlaprobe: removed {obj.query} from storage: its copy was corrupt; "
                        "the next run rebuilds it"
                    )
            except Exception as e:  # a plugin's own error: say so, keep the record for next time
                say(f"nlaprobe: could not remove {obj.query} from storage ({e}); delete it")
                continue
        with contextlib.suppress(FileNotFoundError):
            rec.unlink()
    return removed
