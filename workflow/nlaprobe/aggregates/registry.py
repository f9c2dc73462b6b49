"""The aggregate registry's types: an aggregate's declaration (Aggregate, Figure) and `register`,
which each aggregate module calls once. Lookups (which load the modules) are in the package,
nlaprobe.aggregates; this module imports none of them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nlaprobe.errors import ConfigError

if TYPE_CHECKING:
    from nlaprobe.plan import Plan

# the Snakefile's `name` wildcard (the stamp rule) matches [a-z_]+
NAME_PATTERN = r"[a-z][a-z_]*"

Ref = str | Callable[..., Any]


@dataclass(frozen=True)
class Figure:
    """A report figure `results/figures/<name>.png`: `draw(results) -> matplotlib Figure` with
    `results` {aggregate name: results JSON} (placeholder when its aggregate is absent)."""

    name: str
    caption: str
    draw: Ref


def _no_settings(cfg: dict) -> dict:
    return {}


@dataclass(frozen=True)
class Aggregate:
    name: str
    experiment: int
    title: str
    inputs: Callable[[Plan], dict]
    compute: Callable[[dict], dict]
    settings: Callable[[dict], dict] = _no_settings
    section: Ref | None = None
    figures: tuple[Figure, ...] = field(default=())

    @property
    def heading(self) -> str:
        return f"E{self.experiment} {self.title}"


REGISTRY: dict[str, Aggregate] = {}


def register(agg: Aggregate) -> Aggregate:
    """Add `agg` to the registry (its module calls this once, at import)."""
    if not re.fullmatch(NAME_PATTERN, agg.name):
        raise ConfigError(f"aggregate name {agg.name!r}: expected {NAME_PATTERN}")
    if agg.name in REGISTRY and REGISTRY[agg.name] is not agg:
        raise ConfigError(f"aggregate {agg.name!r} is registered twice")
    taken = {f.name: a.name for a in REGISTRY.values() if a.name != agg.name for f in a.figures}
    for f in agg.figures:
        if f.name in taken:
            raise ConfigError(
                f"figure {f.name!r} of aggregate {agg.name!r} is already drawn from {taken[f.name]!r}"
            )
    REGISTRY[agg.name] = agg
    return agg


def unregister(name: str) -> None:
    """Remove an aggregate (tests register toys and remove them again)."""
    REGISTRY.pop(name, None)


def resolve(ref: Ref) -> Callable[..., Any]:
    """A callable, or the attribute named by "package.module:attribute"."""
    if callable(ref):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep:
        raise ConfigError(f"reference {ref!r}: expected 'module:attribute'")
    obj = getattr(importlib.import_module(module), attr, None)
    if not callable(obj):
        raise ConfigError(f"reference {ref!r}: {module} has no callable {attr!r}")
    return obj
