"""The aggregate stage: a registered aggregate's inputs -> `results/<name>.json` (`{"meta", "data"}`,
SPEC §8) and its input record.

inputs -> outputs
- run_planned (what the aggregate rules run): the validated config, the identity specs of the
  plan that built the DAG (Plan.identity: checkpoint, corpus and demo specs, so the job does not
  fingerprint folders again, nor depend on its own Python's built-in corpus), and the root of
  the job's input copies (Plan.aggregate_root: "" locally, the storage plugin's local folder
  under remote storage) -> the aggregate's spec, recomputed with the same planning code, with
  every path moved under the root; then run_aggregate. Nothing on the command line grows with
  the number of shards.
- run_aggregate: a spec (paths by role + settings) -> the results JSON and, when asked, the
  input record.

Invariants:
- the job checks that its recomputed input list is the DAG's (the record's name carries the tag
  of that list): a config, a checkpoint folder or the package changed since the DAG was built
  is a ConfigError, not a result from other inputs;
- `data` depends only on the inputs and parameters: two runs give identical `data`; the result
  and then the record are written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from nlaprobe.aggregates import get
from nlaprobe.aggregates.core import (
    alignment_summary,
    check_record_name,
    results_meta,
)
from nlaprobe.errors import ConfigError
from nlaprobe.io import write_json
from nlaprobe.plan import Plan

log = logging.getLogger(__name__)


def run_aggregate(
    name: str, spec: dict, out: str, cfg: dict | None = None, record: str | None = None
) -> dict:
    """Compute aggregate `name` from `spec` and write `out`. `record`, when given, is the job's
    input record (written before by the `record` rule, core.write_input_record): only its name
    is checked here."""
    agg = get(name)
    if record:
        check_record_name(record, name)
    if spec.get("alignment_sidecars"):
        spec = {**spec, "alignment": alignment_summary(spec["alignment_sidecars"])}
    data = agg.compute(spec)
    write_json(
        out,
        {"meta": results_meta(cfg or spec.get("config", {}), {"aggregate": name}), "data": data},
    )
    log.info("wrote %s", out)
    return data


def planned_spec(
    name: str, cfg: dict, identity: Sequence, root: str = "", record: str | None = None
) -> dict:
    """The spec of aggregate `name` as the plan of (`cfg`, `identity`) gives it, every input
    path under `root`. With `record`, its name must be the plan's input record (same inputs)."""
    plan = Plan(cfg, known=identity)
    if record is not None:
        expected = Path(plan.aggregate_record(name)).name
        if Path(record).name != expected:
            raise ConfigError(
                f"aggregate {name!r}: the job's record is {Path(record).name}, but its config "
                f"gives the input record {expected}: the inputs changed since the DAG was built "
                "(config, checkpoint folders or package); rerun snakemake"
            )
    local = [f"{root}{p}" for p in plan.aggregate_inputs(name)]
    return plan.aggregate_job_spec(name, local)


def run_planned(
    name: str, cfg: dict, identity: Sequence, root: str, out: str, record: str | None = None
) -> dict:
    get(name)
    spec = planned_spec(name, cfg, identity, root, record)
    return run_aggregate(name, spec, out, cfg, record=record)
