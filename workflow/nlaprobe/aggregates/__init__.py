"""The aggregates (E1-E8): one registry, one module per aggregate.

inputs -> outputs: the modules of this package -> `REGISTRY` {name: Aggregate}, in report order
(the experiment number, then the name).

Each aggregate module (any module of this package but `core`, `registry` and `stage`) declares,
in one `register(Aggregate(...))` call, everything the rest of the package needs to know of it:

- `name`: its results file `results/<name>.json`, its rule, its stamp and its record;
- `inputs(plan)`: the files it reads, by role (paths of `nlaprobe.plan.Plan`): what
  `Plan.aggregate_spec` adds to the shared settings (families, metrics, settings, train_var);
- `settings(cfg)`: its own settings from the validated config, beyond the metrics section
  (part of its stamp, so a change reruns it);
- `compute(spec) -> data`: the `data` block of its results file;
- `experiment`, `title`: the report section's heading ("E<experiment> <title>") and its order;
- `section`: the report's HTML of its `data` (None: a flat key/value table);
- `figures`: the report figures drawn from it (`results/figures/<name>.png`).

The plan (inputs, stamps, records), the Snakefile (one aggregate rule per entry, the report's
figure outputs), the CLI and the report read this registry; nothing else lists aggregates.
`section` and a figure's `draw` may be a callable or a "module:attribute" reference, resolved
when the report is drawn: the report's renderers need matplotlib, which the Snakefile's parse
must not import (it imports this registry through the plan).

Invariants:
- adding an aggregate is adding one module here: it is found by listing the package, so no
  other file names it (tests/unit/test_aggregates.py checks this with a toy aggregate);
- names are unique, and so are figure names across aggregates; an unknown name fails with the
  list of valid ones (ConfigError);
- importing this package imports no aggregate module and nothing heavy: the modules are
  imported on the first lookup.
"""

from __future__ import annotations

import importlib
import pkgutil

from nlaprobe.aggregates.registry import (
    REGISTRY,
    Aggregate,
    Figure,
    register,
    resolve,
    unregister,
)
from nlaprobe.errors import ConfigError

__all__ = [
    "REGISTRY",
    "Aggregate",
    "Figure",
    "aggregates",
    "figure_names",
    "figures",
    "get",
    "names",
    "register",
    "resolve",
    "unregister",
]

# modules of this package that declare no aggregate
NOT_AGGREGATES = ("core", "registry", "stage")
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if mod not in NOT_AGGREGATES and not mod.startswith("_"):
            importlib.import_module(f"{__name__}.{mod}")
    _loaded = True


def aggregates() -> list[Aggregate]:
    """Every registered aggregate in report order (experiment number, then name)."""
    _load()
    return sorted(REGISTRY.values(), key=lambda a: (a.experiment, a.name))


def names() -> list[str]:
    return [a.name for a in aggregates()]


def get(name: str) -> Aggregate:
    _load()
    if name not in REGISTRY:
        raise ConfigError(f"unknown aggregate {name!r}; valid: {names()}")
    return REGISTRY[name]


def figures() -> list[tuple[Figure, str]]:
    """Every report figure with the name of its aggregate, in report order."""
    return [(f, a.name) for a in aggregates() for f in a.figures]


def figure_names() -> list[str]:
    return [f.name for f, _ in figures()]
