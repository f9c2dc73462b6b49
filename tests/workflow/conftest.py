"""The workflow tests' shared local run of the reduced default config."""

from __future__ import annotations

import time

import pytest
from workflow_common import Run, copy_workflow, snakemake, write_config


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Run:
    """One local run of the reduced default (every aggregate and the report) on 2 cores, once
    per session: test_workflow checks it, test_slurm compares the cluster's `data` with it."""
    workdir = copy_workflow(tmp_path_factory.mktemp("real") / "wf")
    plan = write_config(workdir, "reduced.yaml")
    start = time.monotonic()
    snakemake(workdir, "--cores", "2", "--configfile", "reduced.yaml")
    seconds = time.monotonic() - start
    print(f"\nreduced default run: {seconds:.1f} s on 2 cores")
    return Run(workdir, plan, seconds)
