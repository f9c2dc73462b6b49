"""A job's shell command exactly as Snakemake formats it, without building the whole DAG.

The workflow is parsed with Snakemake's API (the Snakefile validates the config and makes the
Plan, as in a real run); a job is then made for one output file through Snakemake's own DAG
code (`DAG.new_job`: input functions, params functions, threads, resources, wildcards), and its
`shellcmd` is the string Snakemake hands to the shell. Planning every job of a 1,000-shard
study takes a minute; one job per rule and output takes milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def parsed_workflow(
    workdir: Path,
    configfiles: list[Path] | None = None,
    config: Mapping[str, Any] | None = None,
    snakefile: Path = REPO / "Snakefile",
) -> Iterator[Any]:
    """The parsed workflow (snakemake.workflow.Workflow) of `snakefile` run in `workdir` with
    `--configfile configfiles` and `--config config`."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        DeploymentSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    workdir.mkdir(parents=True, exist_ok=True)
    with SnakemakeApi(OutputSettings()) as api:
        wapi = api.workflow(
            snakefile=snakefile,
            workdir=workdir,
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(
                configfiles=list(configfiles or []), config=dict(config or {})
            ),
            storage_settings=StorageSettings(),
            deployment_settings=DeploymentSettings(),
        )
        workflow = wapi._workflow
        workflow.dag_settings = DAGSettings()
        yield workflow


def job_shell(workflow: Any, rule: str, target: str) -> str:
    """The shell command of the job of `rule` that writes `target`."""
    from snakemake.dag import DAG

    dag = DAG(workflow, rules=workflow.rules)
    job = asyncio.run(dag.new_job(workflow.get_rule(rule), targetfile=target))
    # a job id is assigned when the whole DAG is built; the command may name it ({jobid})
    dag._jobid[job] = 0
    return job.shellcmd


def shell_rules(workflow: Any) -> set[str]:
    """The rules that run a shell command."""
    return {r.name for r in workflow.rules if r.shellcmd}
