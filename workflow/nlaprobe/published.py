"""The published figures beside a run's own: load the versioned file of published numbers, decide
whether a run used the paper's checkpoints, and give a verdict per figure.

inputs -> outputs
    load_published(path=None)            -> Published (the packaged file when path is None)
    parse_published(obj, where)          -> Published, or DataError naming the file and field
    match_checkpoints(published, ckpts)  -> Match: paper family -> run family, or why not
    match_run(published, results)        -> Match over every results file of a run
    resolve_path(path, families)         -> the path with "{fam}" replaced by the run's key
    lookup(data, path)                   -> (value, None) or (None, why there is none)
    verdict(value, tolerance, run)       -> (verdict, relation)
    compare_figure(figure, data, fams)   -> Comparison
    compare(published, results)          -> [Comparison], in the file's order
    tally(comparisons)                   -> {verdict: count}

Invariants
- the file (`published_figures/<version>.yaml`, shipped in the package) is validated in full on
  load: unknown or missing fields, a path element that is neither a string nor an integer, a
  family placeholder that names no published family, duplicate ids and non-finite values raise
  DataError naming the file, the figure and the field;
- a run "equals the paper" when each of its families has the base, AV and AR ids of one
  published family (revision, dtype and layer aside) and no two share one; family keys are
  matched by those ids, never by name. A run with a subset of the paper's families compares
  the figures of those; the others read "no data";
- verdicts: "within" (the published value, ± half its last published digit, meets the run's
  interval), "outside" (relation "above": the run's interval lies above the published value;
  "below": under it), "no interval" (the run's value is a plain number or its interval has no
  bounds; relation "equal" within half the last published digit, else "above"/"below"),
  "no data" (the results file, the key or the value is missing or null; `reason` says which);
- pure: nothing here but load_published reads a file.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from nlaprobe import aggregates as AG
from nlaprobe.errors import DataError

PUBLISHED_PACKAGE_DIR = "published_figures"
DEFAULT_VERSION = "paper-2026-06"
ROLES = ("base", "av", "ar")
VERDICTS = ("within", "outside", "no interval", "no data")

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TOP_FIELDS = {"version", "published", "sources", "checkpoints", "figures"}
_TOP_REQUIRED = {"version", "checkpoints", "figures"}
_CKPT_FIELDS = {"layer", *ROLES}
_FIGURE_FIELDS = {"id", "aggregate", "path", "value", "decimals", "label", "source", "note"}
_FIGURE_REQUIRED = _FIGURE_FIELDS - {"note"}


@dataclass(frozen=True)
class Figure:
    """One published number and where the run keeps its counterpart."""

    id: str
    aggregate: str
    path: tuple[str | int, ...]
    value: float
    decimals: int
    label: str
    source: str
    note: str | None = None

    @property
    def tolerance(self) -> float:
        """Half a unit of the last published digit: the rounding of the published value."""
        return 0.5 * 10.0**-self.decimals


@dataclass(frozen=True)
class Published:
    version: str
    checkpoints: dict[str, dict[str, Any]]  # family -> {"layer", "base", "av", "ar"}
    figures: tuple[Figure, ...]
    where: str  # the file it was read from, for messages


@dataclass(frozen=True)
class Match:
    """families: paper family -> the run's family key with the same ids. reason: why the run is
    not the paper's (None when it is)."""

    families: dict[str, str]
    reason: str | None = None

    @property
    def equals_paper(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Comparison:
    """A published figure beside the run's value. `run` is what the run holds at the figure's
    path (a number or an interval {"value", "lo", "hi"}), None when it holds nothing; `relation`
    is where the run lies against the published value ("above", "below", "equal") or None;
    `reason` says why a "no data" verdict."""

    figure: Figure
    run: Any
    verdict: str
    relation: str | None = None
    reason: str | None = None


# ----------------------------------------------------------------------------- loading


def default_path() -> str:
    """Where the packaged file of DEFAULT_VERSION lives (for messages and docs/experiments.md)."""
    return f"nlaprobe/{PUBLISHED_PACKAGE_DIR}/{DEFAULT_VERSION}.yaml"


def load_published(path: str | os.PathLike | None = None) -> Published:
    """Read and validate a published-figures file; None reads the packaged DEFAULT_VERSION.
    A missing, unreadable or invalid file raises DataError naming it."""
    if path is None:
        where = default_path()
        res = resources.files("nlaprobe") / PUBLISHED_PACKAGE_DIR / f"{DEFAULT_VERSION}.yaml"
        reader = res.read_text
    else:
        where = str(path)

        def reader(encoding: str) -> str:
            with open(path, encoding=encoding) as fh:
                return fh.read()

    try:
        obj = yaml.safe_load(reader(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not readable ({e})") from None
    except yaml.YAMLError as e:
        raise DataError(f"{where}: not valid YAML ({e})") from None
    return parse_published(obj, where)


def _fields(obj: Any, where: str, allowed: set[str], required: set[str]) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a mapping, found {type(obj).__name__}")
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(obj))
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}")
    return obj


def _text(x: Any, where: str) -> str:
    if not isinstance(x, str) or not x.strip():
        raise DataError(f"{where}: expected a non-empty string, found {x!r}")
    return x


def _number(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        raise DataError(f"{where}: expected a finite number, found {x!r}")
    return float(x)


def _count(x: Any, where: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 0:
        raise DataError(f"{where}: expected an integer >= 0, found {x!r}")
    return int(x)


def parse_published(obj: Any, where: str) -> Published:
    """Validate the parsed file (see the module invariants); `where` names it in errors."""
    top = _fields(obj, where, _TOP_FIELDS, _TOP_REQUIRED)
    version = _text(top["version"], f"{where}: field 'version'")
    ckpts = top["checkpoints"]
    if not isinstance(ckpts, dict) or not ckpts:
        raise DataError(f"{where}: field 'checkpoints' must map family names to their ids")
    checkpoints: dict[str, dict[str, Any]] = {}
    seen_ids: dict[tuple[str, ...], str] = {}
    for fam, c in ckpts.items():
        at = f"{where}: checkpoints.{fam}"
        _text(fam, f"{where}: a family name in 'checkpoints'")
        c = _fields(c, at, _CKPT_FIELDS, _CKPT_FIELDS)
        entry = {"layer": _count(c["layer"], f"{at}.layer")}
        entry.update({r: _text(c[r], f"{at}.{r}") for r in ROLES})
        ids = tuple(entry[r] for r in ROLES)
        if ids in seen_ids:
            raise DataError(f"{at}: the same base/av/ar ids as family {seen_ids[ids]!r}")
        seen_ids[ids] = fam
        checkpoints[fam] = entry
    raw = top["figures"]
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: field 'figures' must be a non-empty list")
    figures, ids_seen = [], set()
    for i, f in enumerate(raw):
        at = f"{where}: figures[{i}]"
        if isinstance(f, dict) and isinstance(f.get("id"), str):
            at += f" (id {f['id']!r})"
        f = _fields(f, at, _FIGURE_FIELDS, _FIGURE_REQUIRED)
        fid = _text(f["id"], f"{at}: field 'id'")
        if fid in ids_seen:
            raise DataError(f"{at}: duplicate id {fid!r}")
        ids_seen.add(fid)
        if f["aggregate"] not in AG.names():
            raise DataError(f"{at}: field 'aggregate' is {f['aggregate']!r}; valid: {AG.names()}")
        figures.append(
            Figure(
                id=fid,
                aggregate=f["aggregate"],
                path=_path(f["path"], f"{at}: field 'path'", checkpoints),
                value=_number(f["value"], f"{at}: field 'value'"),
                decimals=_count(f["decimals"], f"{at}: field 'decimals'"),
                label=_text(f["label"], f"{at}: field 'label'"),
                source=_text(f["source"], f"{at}: field 'source'"),
                note=None if f.get("note") is None else _text(f["note"], f"{at}: field 'note'"),
            )
        )
    return Published(version, checkpoints, tuple(figures), where)


def _path(x: Any, where: str, checkpoints: Mapping[str, Any]) -> tuple[str | int, ...]:
    if not isinstance(x, list) or not x:
        raise DataError(f"{where}: expected a non-empty list of keys, found {x!r}")
    out: list[str | int] = []
    for j, k in enumerate(x):
        if isinstance(k, bool) or not isinstance(k, str | int):
            raise DataError(
                f"{where}[{j}]: expected a string key or an integer index, found {k!r} "
                '(quote a family placeholder: "{gemma}")'
            )
        if isinstance(k, str):
            for name in _PLACEHOLDER.findall(k):
                if name not in checkpoints:
                    raise DataError(
                        f"{where}[{j}]: placeholder {{{name}}} names no family of "
                        f"'checkpoints' ({sorted(checkpoints)})"
                    )
        out.append(k)
    return tuple(out)


# ----------------------------------------------------------------------------- checkpoints


def _ids(roles: Any) -> tuple[Any, ...] | None:
    if not isinstance(roles, dict):
        return None
    out = []
    for r in ROLES:
        c = roles.get(r)
        if not isinstance(c, dict) or not isinstance(c.get("id"), str):
            return None
        out.append(c["id"])
    return tuple(out)


def match_checkpoints(published: Published, checkpoints: Any) -> Match:
    """Map the paper's families onto a run's `meta.checkpoints` ({family: {role: {"id", ...}}})
    by their base/AV/AR ids. Every run family must have the ids of one paper family, and no two
    the same; revisions, dtypes and family names do not matter."""
    if not isinstance(checkpoints, dict) or not checkpoints:
        return Match({}, "no checkpoint ids in meta.checkpoints")
    by_ids = {tuple(c[r] for r in ROLES): fam for fam, c in published.checkpoints.items()}
    families: dict[str, str] = {}
    for run_fam in sorted(checkpoints, key=str):
        ids = _ids(checkpoints[run_fam])
        paper_fam = by_ids.get(ids) if ids is not None else None
        if paper_fam is None:
            what = "base/av/ar ids " + ", ".join(map(str, ids)) if ids else "no base/av/ar ids"
            return Match({}, f"family {run_fam!r} has {what}, not those of a paper family")
        if paper_fam in families:
            return Match(
                {},
                f"families {families[paper_fam]!r} and {run_fam!r} both have the paper's "
                f"{paper_fam} checkpoints",
            )
        families[paper_fam] = run_fam
    return Match(families)


def match_run(published: Published, results: Mapping[str, Any]) -> Match:
    """match_checkpoints over every results file ({name: {"meta", "data"}}) that records
    checkpoints: the run equals the paper when all of them do, with the same family keys."""
    found: Match | None = None
    for name in sorted(results):
        ck = _get_meta(results[name], "checkpoints")
        if ck is None:
            continue
        m = match_checkpoints(published, ck)
        if not m.equals_paper:
            return Match({}, f"{name}.json: {m.reason}")
        if found is not None and m.families != found.families:
            return Match({}, f"{name}.json keys the paper's families differently")
        found = m
    return found if found is not None else Match({}, "no results file records checkpoint ids")


def _get_meta(res: Any, key: str) -> Any:
    meta = res.get("meta") if isinstance(res, dict) else None
    return meta.get(key) if isinstance(meta, dict) else None


# ----------------------------------------------------------------------------- comparison


def resolve_path(path: Sequence[str | int], families: Mapping[str, str]) -> tuple | None:
    """`path` with every "{fam}" replaced by the run's key of that paper family; None when the
    run has no such family."""
    out: list[str | int] = []
    for k in path:
        if isinstance(k, str):
            names = _PLACEHOLDER.findall(k)
            if any(n not in families for n in names):
                return None
            k = _PLACEHOLDER.sub(lambda m: families[m.group(1)], k)
        out.append(k)
    return tuple(out)


def _dotted(path: Sequence[str | int]) -> str:
    return "data" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)


def lookup(data: Any, path: Sequence[str | int]) -> tuple[Any, str | None]:
    """(value at `path` in `data`, None), or (None, why not): a string key reads a mapping, an
    integer indexes a list (negative from the end)."""
    cur = data
    for i, k in enumerate(path):
        here = _dotted(path[:i])
        if isinstance(k, int):
            if not isinstance(cur, list):
                return None, f"{here} is not a list"
            if not -len(cur) <= k < len(cur):
                return None, f"{here} has no element [{k}]"
            cur = cur[k]
        else:
            if not isinstance(cur, dict):
                return None, f"{here} is not an object"
            if k not in cur:
                return None, f"no {k!r} in {here}"
            cur = cur[k]
    if cur is None:
        return None, f"{_dotted(path)} is null"
    return cur, None


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    return float(x) if math.isfinite(x) else None


def is_interval(x: Any) -> bool:
    return isinstance(x, dict) and {"value", "lo", "hi"} <= set(x)


def verdict(published: float, tolerance: float, run: Any) -> tuple[str, str | None]:
    """(verdict, relation) of a run value against a published one that is exact to ±tolerance.

    run an interval {"value", "lo", "hi"} with finite bounds:
        "within" when [lo, hi] meets [published - tol, published + tol], relation None;
        else "outside", relation "above" (lo > published + tol) or "below";
    run a finite number, or an interval with a value but no finite bounds:
        "no interval", relation "equal" (|run - published| <= tol), "above" or "below";
    anything else (None, NaN, a null value, a non-number): "no data", relation None."""
    if is_interval(run):
        value, lo, hi = _finite(run["value"]), _finite(run["lo"]), _finite(run["hi"])
        if value is None:
            return "no data", None
        if lo is not None and hi is not None:
            if lo > published + tolerance:
                return "outside", "above"
            if hi < published - tolerance:
                return "outside", "below"
            return "within", None
    else:
        value = _finite(run)
        if value is None:
            return "no data", None
    if abs(value - published) <= tolerance:
        return "no interval", "equal"
    return "no interval", "above" if value > published else "below"


def compare_figure(figure: Figure, data: Any, families: Mapping[str, str]) -> Comparison:
    """The verdict of one figure against a run's aggregate `data`, the run's family keys given
    by `families` (paper family -> run family)."""
    path = resolve_path(figure.path, families)
    if path is None:
        missing = sorted(set(_PLACEHOLDER.findall(" ".join(map(str, figure.path)))) - set(families))
        return Comparison(
            figure, None, "no data", reason=f"the run has no family with the paper's {missing[0]}"
        )
    run, why = lookup(data, path)
    if why is not None:
        return Comparison(figure, None, "no data", reason=why)
    v, rel = verdict(figure.value, figure.tolerance, run)
    if v != "no data":
        return Comparison(figure, run, v, rel)
    if is_interval(run):
        why = "has no value"
    elif isinstance(run, numbers.Real) and not isinstance(run, bool):
        why = "is not finite"
    else:
        why = f"is not a number or an interval (found {type(run).__name__})"
    return Comparison(figure, None, v, reason=f"{_dotted(path)} {why}")


def compare(published: Published, results: Mapping[str, Any]) -> list[Comparison]:
    """Every published figure against the results files ({aggregate name: {"meta", "data"}}),
    in the file's order. Each file's family keys come from its own meta.checkpoints (from
    match_run when it records none). A figure whose results file is absent, or whose file's
    checkpoints are not the paper's, reads "no data"."""
    run = match_run(published, results)
    matches = {
        name: run
        if _get_meta(res, "checkpoints") is None
        else match_checkpoints(published, _get_meta(res, "checkpoints"))
        for name, res in results.items()
    }
    out = []
    for fig in published.figures:
        res = results.get(fig.aggregate)
        if res is None:
            out.append(
                Comparison(fig, None, "no data", reason=f"{fig.aggregate}.json is not an input")
            )
            continue
        m = matches[fig.aggregate]
        if not m.equals_paper:
            reason = f"{fig.aggregate}.json: {m.reason}"
            out.append(Comparison(fig, None, "no data", reason=reason))
            continue
        data = res.get("data") if isinstance(res, dict) else None
        out.append(compare_figure(fig, data, m.families))
    return out


def tally(comparisons: Sequence[Comparison]) -> dict[str, int]:
    """{verdict: number of comparisons} for every verdict in VERDICTS (zeros included)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for c in comparisons:
        counts[c.verdict] += 1
    return counts
