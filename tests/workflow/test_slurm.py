"""The reduced default DAG on a real one-node Slurm, submitted through profiles/slurm unchanged.

Set-up: tests/workflow/slurm_cluster.py (munged, slurmctld, slurmd of Debian's slurm-wlm 22.05,
as root, no accounting, MinJobAge one hour, cons_tres, one node of this machine's CPUs and at
most 20,000 MB). Missing binaries or no root skip the module with the reason; with CI=true
(.ci/run) they fail it instead.

Command (docs/running.md, "Running on a cluster"), on top of the profile only these overrides,
all about polling speed on one node: `--slurm-init-seconds-before-status-checks 1` and
`--seconds-between-status-checks 1` (the plugin waits 40 s before its first squeue otherwise, and
adds 10 s per quiet round), `--latency-wait 5` (one local disk). Nothing about accounting: the
profile already asks squeue for job states, and the plugin, finding no account to guess,
submits without one. Nothing about resources: every job requests what nlaprobe.resources
estimates for the config.

What runs:
1. `snakemake -n`: the jobs the DAG plans (rule and wildcards);
2. the first invocation, with one redact job made to fail once (a sitecustomize on PYTHONPATH
   exits its first `python -m nlaprobe redact` with code 3: the package has no test hook) and
   one decode job killed by the scheduler (`scancel` on each of its two attempts: the profile
   retries once). keep-going (the profile's; profiles/default, applied on top, leaves it
   alone) finishes everything that does not read the decode; Snakemake exits non-zero;
3. the same command again: only the cancelled decode and what reads it run.

Checks, on the scheduler's own record (`squeue --states=all`, kept by MinJobAge), not on
Snakemake's log: every planned job has exactly one COMPLETED sbatch job and none other
completed; the only other records are the failed first attempt of the redact job and the two
cancelled decode attempts; each model job asked Slurm for the memory, time and CPUs the plan
estimates; the retry happened within the first invocation; the second invocation submitted
exactly the cancelled decode and its dependents; the results' `data` equal a local run's
(conftest.real_run) and the rerun decode's rows equal the local decode's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import slurm_cluster
from workflow_common import EVAL, copy_workflow, snakemake, snakemake_env, write_config

from nlaprobe.plan import AGGREGATES, Plan

pytestmark = pytest.mark.slow

CONFIG = "reduced.yaml"
ON_CI = os.environ.get("CI", "").lower() == "true"
# polling on one node; documented in docs/running.md with the command
OVERRIDES = (
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
    "--latency-wait",
    "5",
)
# the non-primary family's sampled decode: other jobs read it, so a rerun has work to do
CANCEL_FAMILY, CANCEL_COND = "gemma", "sample_t1"
FAIL_FAMILY, FAIL_VARIANT = "qwen", "prose_only"
FAIL_EXIT = 3
SITECUSTOMIZE = f"""
import os
import sys

_out = os.environ.get("NLAPROBE_TEST_FAIL_ONCE_OUT")
_marker = os.environ.get("NLAPROBE_TEST_FAIL_ONCE_MARKER")
if _out and _marker and _out in getattr(sys, "orig_argv", sys.argv) and not os.path.exists(_marker):
    with open(_marker, "w") as f:
        f.write(str(os.getpid()))
    sys.stderr.write("nlaprobe test: failing this job once on purpose\\n")
    sys.stderr.flush()
    os._exit({FAIL_EXIT})
"""


@pytest.fixture(scope="module")
def cluster():
    reason = slurm_cluster.unavailable()
    if reason:
        if ON_CI:
            pytest.fail(f"CI=true, but a one-node Slurm cannot run here: {reason}")
        pytest.skip(reason)
    try:
        c = slurm_cluster.start()
    except Exception as e:
        if ON_CI:
            raise
        pytest.skip(f"could not start a one-node Slurm: {e}")
    print(f"\none-node Slurm on {c.host}: {c.cpus} CPUs, {c.mem_mb} MB")
    try:
        yield c
    finally:
        c.stop()


def comment(rule: str, wildcards: dict[str, str]) -> str:
    """The executor plugin's sbatch --comment of a job: rule_<rule>[_wildcards_<values>]."""
    if not wildcards:
        return f"rule_{rule}"
    return f"rule_{rule}_wildcards_" + "_".join(wildcards.values()).replace("/", "_")


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in a dry run's listing that goes to the cluster: not local
    rules, nor `all`, which has no command (Snakemake completes it itself)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"rule (\w+):", block.lstrip())
        if not m or m.group(1) == "all":
            continue
        w = re.search(r"wildcards: (.*)", block)
        jobs.append(
            (m.group(1), dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {})
        )
    return jobs


def run_uuid(output: str) -> str:
    m = re.search(r"SLURM run ID: (\S+)", output)
    assert m, output[-4000:]
    return m.group(1)


class Canceller(threading.Thread):
    """scancel every attempt of the job with sbatch comment `target` once it runs, `times`
    times (its first attempt and the profile's retry)."""

    def __init__(self, cluster: slurm_cluster.Cluster, target: str, times: int):
        super().__init__(daemon=True)
        self.cluster, self.target, self.times = cluster, target, times
        self.cancelled: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.cancelled) < self.times and not self.stop.is_set():
            for job in self.cluster.jobs():
                if (
                    job["comment"] == self.target
                    and job["state"] == "RUNNING"
                    and job["id"] not in self.cancelled
                ):
                    time.sleep(1.0)  # into the job: the jobstep has started
                    self.cluster.run("scancel", job["id"], check=False)
                    self.cancelled.append(job["id"])
            time.sleep(0.25)


class SlurmRun:
    def __init__(self, workdir: Path, plan: Plan, planned, first, second, records, seconds):
        self.workdir, self.plan, self.planned = workdir, plan, planned
        self.first, self.second = first, second
        self.records, self.seconds = records, seconds


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> SlurmRun:
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm") / "wf")
    plan = write_config(workdir, CONFIG)
    planned = planned_jobs(snakemake(workdir, "-n", "--configfile", CONFIG).stdout)
    shard = plan.shards(EVAL)[0]
    target = comment(
        "decode",
        {"avtag": plan.decode_tag(CANCEL_FAMILY), "cond": CANCEL_COND, "shard": shard},
    )
    assert target in {comment(r, w) for r, w in planned}, target

    hook = tmp_path_factory.mktemp("sitecustomize")
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = hook / "failed-once"
    fail_env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "NLAPROBE_TEST_FAIL_ONCE_OUT": plan.redacted_shard(FAIL_FAMILY, FAIL_VARIANT, shard),
        "NLAPROBE_TEST_FAIL_ONCE_MARKER": str(marker),
    }
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm"]
    cmd += ["--configfile", CONFIG, *OVERRIDES]

    def invoke(env: dict[str, str]) -> subprocess.CompletedProcess:
        start = time.monotonic()
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            env=snakemake_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1200,
        )
        print(
            f"snakemake --profile profiles/slurm: exit {proc.returncode}, "
            f"{time.monotonic() - start:.1f} s"
        )
        (workdir / f"snakemake-{len(logs)}.log").write_text(proc.stdout)
        logs.append(proc)
        return proc

    logs: list[subprocess.CompletedProcess] = []
    start = time.monotonic()
    canceller = Canceller(cluster, target, times=2)
    canceller.start()
    try:
        first = invoke(fail_env)
    finally:
        canceller.stop.set()
        canceller.join(timeout=10)
    assert marker.exists(), "the redact job was never made to fail"
    assert len(canceller.cancelled) == 2, (
        canceller.cancelled,
        cluster.jobs(),
        first.stdout[-4000:],
    )
    assert first.returncode != 0, first.stdout[-4000:]
    second = invoke({})
    seconds = time.monotonic() - start
    assert second.returncode == 0, second.stdout[-6000:] + cluster.log("slurmctld.log")[-2000:]
    print(f"reduced default through Slurm: {seconds:.1f} s for both invocations")
    return SlurmRun(workdir, plan, planned, first, second, cluster.jobs(), seconds)


def by_comment(records, state: str | None = None) -> Counter:
    return Counter(r["comment"] for r in records if state is None or r["state"] == state)


def test_every_planned_job_went_through_sbatch(slurm_run):
    planned = Counter(comment(r, w) for r, w in slurm_run.planned)
    assert planned and max(planned.values()) == 1
    records = slurm_run.records
    # two invocations, each its own run id as every job's name
    names = {run_uuid(slurm_run.first.stdout), run_uuid(slurm_run.second.stdout)}
    assert {r["name"] for r in records} == names
    assert by_comment(records, "COMPLETED") == planned
    others = [(r["comment"], r["state"]) for r in records if r["state"] != "COMPLETED"]
    fail = comment(
        "redact",
        {
            "avtag": slurm_run.plan.decode_tag(FAIL_FAMILY),
            "variant": FAIL_VARIANT,
            "shard": slurm_run.plan.shards(EVAL)[0],
        },
    )
    cancel = comment(
        "decode",
        {
            "avtag": slurm_run.plan.decode_tag(CANCEL_FAMILY),
            "cond": CANCEL_COND,
            "shard": slurm_run.plan.shards(EVAL)[0],
        },
    )
    assert sorted(others) == sorted(
        [(fail, "FAILED"), (cancel, "CANCELLED"), (cancel, "CANCELLED")]
    )


def test_jobs_requested_what_the_plan_estimates(slurm_run):
    """The scheduler's record of each model job's request (memory, time limit, CPUs) is the
    estimate nlaprobe.resources makes for the config, not a profile's constant."""
    plan = slurm_run.plan
    wildcards = {comment(r, w): (r, w) for r, w in slurm_run.planned}
    seen = Counter()
    for rec in slurm_run.records:
        rule, w = wildcards[rec["comment"]]
        if rule not in ("build_demo", "extract", "decode", "score", "ridge"):
            continue
        req = plan.job_request(rule, SimpleNamespace(**w))
        assert (rec["mem_mb"], rec["minutes"], rec["cpus"]) == (
            req.mem_mb,
            req.runtime,
            req.threads,
        ), (rec, req)
        seen[rule] += 1
    assert set(seen) == {"build_demo", "extract", "decode", "score", "ridge"}


def test_a_job_failing_once_is_retried_by_the_profile(slurm_run):
    """The redact job's first attempt failed (our injected exit), the profile's retry
    completed it, both within the first invocation."""
    first = run_uuid(slurm_run.first.stdout)
    plan = slurm_run.plan
    fail = comment(
        "redact",
        {
            "avtag": plan.decode_tag(FAIL_FAMILY),
            "variant": FAIL_VARIANT,
            "shard": plan.shards(EVAL)[0],
        },
    )
    attempts = [r for r in slurm_run.records if r["comment"] == fail]
    assert [(r["state"], r["name"]) for r in attempts] == [("FAILED", first), ("COMPLETED", first)]
    assert int(attempts[0]["id"]) < int(attempts[1]["id"])


def test_a_cancelled_job_reruns_on_the_next_invocation(slurm_run):
    """Both attempts of the decode were cancelled in the first invocation, which finished the
    rest (keep-going) and failed; the second submitted the decode and exactly what reads it."""
    plan = slurm_run.plan
    first, second = run_uuid(slurm_run.first.stdout), run_uuid(slurm_run.second.stdout)
    shard = plan.shards(EVAL)[0]
    cancel = comment(
        "decode", {"avtag": plan.decode_tag(CANCEL_FAMILY), "cond": CANCEL_COND, "shard": shard}
    )
    attempts = [(r["state"], r["name"]) for r in slurm_run.records if r["comment"] == cancel]
    assert attempts == [("CANCELLED", first), ("CANCELLED", first), ("COMPLETED", second)]
    rerun = {r["comment"] for r in slurm_run.records if r["name"] == second}
    score = comment(
        "score",
        {
            "avtag": plan.decode_tag(CANCEL_FAMILY),
            "artag": plan.ar_tag(CANCEL_FAMILY),
            "cond": CANCEL_COND,
            "variant": "full",
            "shard": shard,
        },
    )
    # the decode, its score, the two aggregates that read them, the report
    assert rerun == {cancel, score, "rule_best_of_n", "rule_verbatim", "rule_report"}


def test_results_equal_a_local_run(slurm_run, real_run):
    for name in AGGREGATES:
        got = json.loads((slurm_run.workdir / "results" / f"{name}.json").read_text())
        assert got["data"] == real_run.json(name)["data"], name
    plan = slurm_run.plan
    decode = plan.decode_shard(CANCEL_FAMILY, CANCEL_COND, plan.shards(EVAL)[0])
    assert pq.read_table(slurm_run.workdir / decode).equals(
        pq.read_table(real_run.workdir / decode)
    )
