"""Many GPUs on one box, rehearsed on the CPU: `snakemake --resources gpu=2` with two fake
devices (CUDA_VISIBLE_DEVICES=0,1 for Snakemake; nothing here touches CUDA). Jobs call the
package CLI exactly as the model rules do (`python -m nlaprobe --gpus {resources.gpu} ...`), so
each leases its devices through nlaprobe.devices; here the command is `exec`, which records the
CUDA_VISIBLE_DEVICES it was given and how long it ran. And the real rules pass each job's `gpu`
request to the CLI (a dry run of the paper config)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workflow_common import copy_workflow, snakemake

# one job: record (start, end, the devices it sees), busy for a while so that jobs overlap
RECORD = """
import json, os, sys, time
t0 = time.time()
time.sleep(float(sys.argv[2]))
devices = os.environ.get("CUDA_VISIBLE_DEVICES")
json.dump({"start": t0, "end": time.time(), "devices": devices}, open(sys.argv[1], "w"))
"""

SNAKEFILE = """
rule all:
    input:
        expand("out/one-{i}.json", i=range(6)),
        "out/two.json",


rule one:
    output:
        "out/one-{i}.json",
    resources:
        gpu=1,
    shell:
        "PYTHON -m nlaprobe --gpus {resources.gpu} exec -- PYTHON record.py {output} 2"


rule two:
    output:
        "out/two.json",
    resources:
        gpu=2,
    shell:
        "PYTHON -m nlaprobe --gpus {resources.gpu} exec -- PYTHON record.py {output} 1"
"""


def test_two_fake_gpus_run_two_jobs_at_once_each_on_its_own_device(tmp_path: Path):
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "Snakefile").write_text(SNAKEFILE.replace("PYTHON", sys.executable))
    (wd / "record.py").write_text(RECORD)
    snakemake(wd, "--cores", "4", "--resources", "gpu=2", env={"CUDA_VISIBLE_DEVICES": "0,1"})
    jobs = {p.stem: json.loads(p.read_text()) for p in sorted((wd / "out").glob("*.json"))}
    assert len(jobs) == 7
    assert {j["devices"] for name, j in jobs.items() if name != "two"} <= {"0", "1"}
    assert jobs["two"]["devices"] == "0,1"
    # at every job start: the jobs running then hold at most 2 devices, no device twice
    for name, job in jobs.items():
        running = [j for j in jobs.values() if j["start"] <= job["start"] < j["end"]]
        held = [d for j in running for d in j["devices"].split(",")]
        assert len(held) <= 2 and len(set(held)) == len(held), (name, running)
    # and the two devices were used side by side (else the test would prove nothing)
    pairs = [
        (a, b)
        for a in jobs
        for b in jobs
        if a < b and jobs[a]["start"] < jobs[b]["end"] and jobs[b]["start"] < jobs[a]["end"]
    ]
    assert pairs, jobs
    for a, b in pairs:
        assert jobs[a]["devices"] != jobs[b]["devices"]
    # every lease was released: the lock files are there, none is held
    from nlaprobe.devices import try_lease

    (lock_dir,) = (wd / ".snakemake" / "nlaprobe-gpus").iterdir()
    lease = try_lease(2, ["0", "1"], lock_dir)
    assert lease is not None and lease.devices == ["0", "1"]
    lease.release()


def pinned_paper(workdir: Path) -> str:
    """config/paper.yaml with made-up commit shas (as test_workflow.pinned_paper)."""
    from nlaprobe.config import floating_revisions, load_config
    from nlaprobe.pin import pin_text

    paper = workdir / "config" / "paper.yaml"
    floating = floating_revisions(load_config([paper]))
    pins = {key: (rev, f"{i:040x}") for i, (key, _repo, _kind, rev) in enumerate(floating)}
    (workdir / "config" / "paper.pinned.yaml").write_text(
        pin_text(paper.read_text(), pins, source=str(paper))
    )
    return "config/paper.pinned.yaml"


def test_the_rules_pass_each_job_its_gpu_request(tmp_path: Path):
    wd = copy_workflow(tmp_path / "wf")
    out = snakemake(
        wd,
        "results/transfer_matrix.json",
        "-n",
        "-p",
        "--configfile",
        pinned_paper(wd),
        "--config",
        "decode={tensor_parallel_size: 4}",
        "sampling={device_map: auto, gpus_per_job: 2}",
    ).stdout
    shells = [line.removeprefix("Shell command: ") for line in out.splitlines()]
    commands = [line for line in shells if line.startswith("python -m nlaprobe --")]
    by_stage = {}
    for line in commands:
        words = line.split()
        by_stage.setdefault(words[words.index("--gpus") + 2], set()).add(
            words[words.index("--gpus") + 1]
        )
    assert by_stage == {"extract": {"2"}, "decode": {"4"}, "score": {"1"}}
    resources = {
        line.split("gpu=")[1].split(",")[0]
        for line in out.splitlines()
        if line.strip().startswith("resources:") and "gpu=" in line
    }
    assert resources == {"1", "2", "4"}
