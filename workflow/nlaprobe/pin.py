"""`nlaprobe pin CONFIG`: resolve every hub revision of a config to its commit sha.

inputs -> outputs: one config file (a whole config, as `--configfile` takes it) -> the same
file with every floating hub revision (a branch or tag such as `main`) replaced by the 40-hex
commit sha it names today, written atomically to `--out`. Comments, order and layout of the
file are kept: only the revision values change (an entry that relied on the default `main`
gets a `revision:` line after its `id:`), each followed by a comment naming what was pinned.

Invariants:
- which entries are hub references is decided by `nlaprobe.config.hub_entries` (checkpoint ids
  of the families and of `demo.base_models`, and an `hf` corpus given by hub id), the same list
  the Snakefile refuses when floating;
- online, a revision resolves through the hub's API (`HfApi.repo_info(...).sha`); offline
  (`HF_HUB_OFFLINE=1`), through the local cache (`refs/<revision>` of the repo, as
  `huggingface_hub` wrote it), so the command is tested without network;
- a revision that is already a commit sha is left as it is; a repo or revision that cannot be
  resolved is an error naming the config key, and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from nlaprobe.config import floating_revisions, is_commit, read_config_file, validate_config
from nlaprobe.errors import ConfigError
from nlaprobe.io import write_text

log = logging.getLogger(__name__)


def resolve_commit(repo_id: str, repo_type: str, revision: str) -> str:
    """The commit sha `revision` of hub repo `repo_id` names (from the cache when offline)."""
    if is_commit(revision):
        return revision
    import huggingface_hub.constants as hub_constants

    try:
        if hub_constants.HF_HUB_OFFLINE:
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(
                    repo_id, repo_type=repo_type, revision=revision, local_files_only=True
                )
            )
            sha = folder.name
        else:
            from huggingface_hub import HfApi

            sha = HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision).sha
    except Exception as e:  # hub errors come in many types (offline, not found, auth, ...)
        where = "the local cache (HF_HUB_OFFLINE=1)" if hub_constants.HF_HUB_OFFLINE else "the hub"
        raise ConfigError(
            f"{repo_type} {repo_id!r} at revision {revision!r}: cannot resolve a commit from "
            f"{where}: {type(e).__name__}: {e}"
        ) from e
    if not is_commit(sha):
        raise ConfigError(
            f"{repo_type} {repo_id!r} at revision {revision!r}: resolved to {sha!r}, "
            "not a 40-hex commit sha"
        )
    return sha


def _child(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k, v
    return None


def _edit_for(root: yaml.Node, text: str, dotted: str, sha: str) -> tuple[int, int, str, bool]:
    """(start, end, replacement, comment) of the text edit that sets `dotted` (a `...revision`
    key) to `sha` in the composed document; `comment`: append a note at the end of the line."""
    *parents, last = dotted.split(".")
    sha = f'"{sha}"'  # quoted: an all-digit sha would otherwise read as a number
    node = root
    for part in parents:
        found = _child(node, part)
        if found is None:
            raise ConfigError(f"key '{dotted}': section {part!r} not found in the file")
        node = found[1]
    found = _child(node, last)
    if found is not None:
        value = found[1]
        if not isinstance(value, yaml.ScalarNode):
            raise ConfigError(f"key '{dotted}': expected a string, got a {value.tag}")
        return value.start_mark.index, value.end_mark.index, sha, not node.flow_style
    # no revision key (the default `main`): add one after the entry's `id` (corpus: `dataset`)
    key_name = "dataset" if parents == ["corpus"] else "id"
    anchor = _child(node, key_name)
    if anchor is None:
        raise ConfigError(f"key '{dotted}': no {key_name!r} to pin beside")
    k, v = anchor
    if node.flow_style:
        return v.end_mark.index, v.end_mark.index, f", {last}: {sha}", False
    indent = " " * k.start_mark.column
    line_end = text.find("\n", v.end_mark.index)
    at = len(text) if line_end < 0 else line_end
    return at, at, f"\n{indent}{last}: {sha}", True


def pin_text(text: str, pins: dict[str, tuple[str, str]], *, source: str) -> str:
    """`text` with each key of `pins` ({dotted revision key: (old revision, sha)}) set to its
    sha, layout and comments kept; each pinned line ends in a note of what it was (unless the
    line already has a comment)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from e
    today = dt.date.today().isoformat()
    edits = [(*_edit_for(root, text, key, sha), old) for key, (old, sha) in pins.items()]
    out = text
    for start, end, new, comment, old in sorted(edits, reverse=True):
        out = out[:start] + new + out[end:]
        if comment:
            end = start + len(new)
            line_end = out.find("\n", end)
            line_end = len(out) if line_end < 0 else line_end
            if "#" not in out[end:line_end]:
                note = f"  # pinned from {old!r} on {today}"
                out = out[:line_end] + note + out[line_end:]
    return out


def pin_config(path: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Resolve every floating hub revision of the config file `path` and write the pinned file
    to `out`. Returns {dotted key: {"repo", "type", "from", "sha"}} of what was pinned."""
    path = Path(path)
    cfg = validate_config(read_config_file(path), source=str(path))
    pins: dict[str, tuple[str, str]] = {}
    report: dict[str, Any] = {}
    for key, repo, kind, rev in floating_revisions(cfg):
        try:
            sha = resolve_commit(repo, kind, rev)
        except ConfigError as e:
            raise ConfigError(f"{path}: key '{key}': {e}") from e
        pins[key] = (rev, sha)
        report[key] = {"repo": repo, "type": kind, "from": rev, "sha": sha}
    text = pin_text(path.read_text(encoding="utf-8"), pins, source=str(path))
    pinned = validate_config(yaml.safe_load(text), source=f"{out} (pinned)")
    left = floating_revisions(pinned)
    if left:  # the edit missed a key: never write a config that still floats
        raise ConfigError(f"{path}: could not pin {[k for k, *_ in left]}")
    write_text(out, text)
    return report
