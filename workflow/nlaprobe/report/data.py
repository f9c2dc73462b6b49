"""Reading the report's inputs: results JSON files -> {aggregate name: results object}, and the
null-safe accessors the figures and the tables share.

inputs -> outputs: paths of results JSON files (`{"meta": {...}, "data": {...}}`, SPEC §8; the
name of an aggregate is its file stem) -> their parsed objects; nested dicts, Intervals and
numbers -> plain values (None for anything missing, null or not finite).

Invariants:
- pure but for `load_results` (which only reads): no matplotlib, no HTML;
- the accessors never raise on a missing key, a null or a value of the wrong type: they give
  None (a value), {} (`as_dict`) or skip it, so a figure or table draws what exists;
- an aggregate's E2, E4 and E5 views show fve_train (with fve_own beside it) exactly when one of
  their fidelity entries has a training Var (`has_train`, `fve_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nlaprobe import constants as C
from nlaprobe.errors import DataError
from nlaprobe.io import read_json

CONDITION_ORDER = C.BAN_CONDITIONS
KERNEL_ORDER = ("linear", "rbf")


def load_results(paths: Sequence[str]) -> dict[str, dict]:
    """{file stem: parsed results JSON}. A missing, unreadable or malformed file (not an object
    with "meta" and "data" objects), or two files with the same stem, raise DataError naming it."""
    out: dict[str, dict] = {}
    for p in paths:
        path = Path(p)
        obj = read_json(path)
        if not (
            isinstance(obj, dict)
            and isinstance(obj.get("meta"), dict)
            and isinstance(obj.get("data"), dict)
        ):
            found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataError(
                f"{path}: expected a results object with 'meta' and 'data' objects, found {found}"
            )
        name = path.stem
        if name in out:
            raise DataError(f"{path}: a second results file named {name!r} among the inputs")
        out[name] = obj
    return out


def is_interval(x: Any) -> bool:
    return isinstance(x, dict) and "value" in x and "lo" in x and "hi" in x


def value(x: Any) -> float | None:
    """The number of an Interval or a bare number; None when missing or not finite."""
    if is_interval(x):
        x = x["value"]
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def bounds(x: Any) -> tuple[float, float] | None:
    """(lo, hi) of an Interval whose value and bounds are all finite numbers."""
    if not is_interval(x) or value(x) is None:
        return None
    lo, hi = value(x["lo"]), value(x["hi"])
    return None if lo is None or hi is None else (lo, hi)


def as_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def ordered(keys: Sequence[str], preferred: Sequence[str]) -> list[str]:
    """`keys` with the preferred ones first (in that order), the rest in their given order."""
    first = [k for k in preferred if k in keys]
    return first + [k for k in keys if k not in first]


def num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def numeric_order(keys: Sequence[str]) -> list[str]:
    def key(k: str) -> tuple[int, float, str]:
        try:
            return (0, float(k), k)
        except ValueError:
            return (1, 0.0, k)

    return sorted(keys, key=key)


def fve_metrics(train: bool) -> tuple[str, ...]:
    """The FVE figures a table or figure of E2, E4 or E5 shows: fve_train first, with fve_own
    beside it, when a training Var is configured (the published tables quote fve_train);
    fve_own only otherwise."""
    return ("fve_train", "fve_own") if train else ("fve_own",)


def has_train(entries: Iterable[Any]) -> bool:
    """Whether any of the fidelity dicts `entries` has a training Var (`var_train`)."""
    return any(value(get(e, "var_train")) is not None for e in entries)


def best_of_n_entries(families: dict) -> list[Any]:
    """Every fidelity dict of an E5 result: greedy, the mean over samples, each best-of-n."""
    return [
        e
        for fe in families.values()
        for e in (
            get(fe, "greedy"),
            get(fe, "mean_over_samples"),
            *as_dict(get(fe, "best_of")).values(),
        )
    ]
