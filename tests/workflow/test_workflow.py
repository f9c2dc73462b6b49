"""The Snakemake DAG: dry runs of the default and paper configs, lint, and one real CPU run of a
reduced default config followed by reruns that must plan exactly the dependent jobs.

Every test runs Snakemake in a copy of the workflow files under tmp_path, so no `.snakemake/`
state or result is shared with the repository or between tests that do not ask for it.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from nlaprobe.config import read_config_file, validate_config
from nlaprobe.plan import SPLITS, Plan

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "profiles", "envs")
NOTHING_TO_DO = "Nothing to be done"


def make_workdir(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name)
        else:
            shutil.copy2(src, dst / name)
    return dst


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run Snakemake of this interpreter in `workdir`; stdout and stderr merged."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # tiny models: one thread per job avoids oversubscribing the cores given to --cores
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a (dry) run: {rule: count}, without the total."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


# Rules whose job counts the dry runs pin down; stages added later have their own tests.
STAGES = ("build_demo", "corpus", "extract", "positions", "all")


def stage_counts(counts: dict[str, int]) -> dict[str, int]:
    return {rule: counts.get(rule, 0) for rule in STAGES}


def planned_wildcards(output: str, rule: str) -> list[dict[str, str]]:
    """Wildcards of every job of `rule` in a dry run's job listing."""
    found = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        if not re.match(rf"(?:local)?rule {rule}:", block.lstrip()):
            continue
        m = re.search(r"wildcards: (.*)", block)
        found.append(dict(kv.split("=", 1) for kv in m.group(1).split(", ")) if m else {})
    return found


# ----------------------------------------------------------------------------- dry runs


@pytest.fixture
def workdir(tmp_path) -> Path:
    return make_workdir(tmp_path / "wf")


def test_dry_run_default(workdir):
    counts = job_counts(snakemake(workdir, "-n").stdout)
    # 2 demo builds; eval 2 + ridge 4 shards; every shard: 2 families x extract + 1 positions
    assert stage_counts(counts) == {
        "build_demo": 2,
        "corpus": 6,
        "extract": 12,
        "positions": 6,
        "all": 1,
    }
    assert not (workdir / "results").exists()


def test_dry_run_paper_needs_no_network(workdir):
    # Planning resolves no hub id and loads no dataset: a dead proxy would make any request fail.
    dead = "http://127.0.0.1:9"
    proxies = {k: dead for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    out = snakemake(workdir, "-n", "--configfile", "config/paper.yaml", env=proxies).stdout
    # eval 200/50 = 4 shards, ridge 4000/50 = 80; no demo builds
    assert stage_counts(job_counts(out)) == {
        "build_demo": 0,
        "corpus": 84,
        "extract": 168,
        "positions": 84,
        "all": 1,
    }


def test_lint(workdir):
    for extra in ([], ["--configfile", "config/paper.yaml"]):
        proc = snakemake(workdir, "--lint", *extra, check=False)
        assert proc.returncode == 0, proc.stdout


# ----------------------------------------------------------------------------- one real run


def reduced_config() -> dict:
    raw = read_config_file(REPO / "config" / "config.yaml")
    raw["corpus"]["splits"] = {"eval": {"start": 0, "stop": 16}, "ridge": {"start": 16, "stop": 32}}
    raw["corpus"]["shard_docs"] = 8
    raw["demo"]["vocab_size"] = 512
    raw["sampling"]["positions_per_doc"] = 2
    return raw


def write_config(workdir: Path, name: str, mutate: Callable[[dict], None] | None = None) -> Plan:
    """Write the reduced config (optionally mutated) as `name`; return its validated plan."""
    raw = reduced_config()
    if mutate is not None:
        raw = copy.deepcopy(raw)
        mutate(raw)
    cfg = validate_config(raw, source=name)  # the swap must be a valid config
    (workdir / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return Plan(cfg)


class Run:
    def __init__(self, workdir: Path, plan: Plan, seconds: float):
        self.workdir = workdir
        self.plan = plan
        self.seconds = seconds


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Run:
    workdir = make_workdir(tmp_path_factory.mktemp("real") / "wf")
    plan = write_config(workdir, "reduced.yaml")
    start = time.monotonic()
    snakemake(workdir, "--cores", "2", "--configfile", "reduced.yaml")
    seconds = time.monotonic() - start
    print(f"\nreduced default run: {seconds:.1f} s on 2 cores")
    return Run(workdir, plan, seconds)


def files_under(workdir: Path, folder: str) -> set[str]:
    """Files below workdir/folder, as paths relative to workdir (like the plan's paths)."""
    root = workdir / folder
    return {p.relative_to(workdir).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_real_run_writes_every_shard(real_run):
    wd, plan = real_run.workdir, real_run.plan
    assert plan.n_shards("eval") == plan.n_shards("ridge") == 2
    acts = set(plan.all_activations())
    sidecars = {
        plan.activation_sidecar(fam, split, shard)
        for fam in plan.families
        for split in SPLITS
        for shard in plan.shards(split)
    }
    positions = {plan.positions_shard(split, s) for split in SPLITS for s in plan.shards(split)}
    assert len(acts) == 8 and len(positions) == 4
    assert files_under(wd, "results/activations") == acts | sidecars
    assert files_under(wd, "results/positions") == positions
    leftovers = [p for p in (wd / "results").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_real_run_sidecars(real_run):
    wd, plan = real_run.workdir, real_run.plan
    other = next(f for f in plan.families if f != plan.primary)
    for fam in plan.families:
        for split in SPLITS:
            for shard in plan.shards(split):
                meta = yaml.safe_load((wd / plan.activation_sidecar(fam, split, shard)).read_text())
                rows = pq.read_metadata(wd / plan.activation_shard(fam, split, shard)).num_rows
                assert meta["n_rows"] == rows > 0
                assert meta["layers"] == plan.layers(fam)
                assert meta["provenance"]["family"] == fam
                assert meta["provenance"]["tag"] == plan.activation_tag(fam, split)
                assert meta["provenance"]["tag_spec"] == plan.activation_spec(fam, split)
                if fam == other:
                    assert meta["alignment"]["mean_abs_error_chars"] < 2
                    assert meta["alignment"]["positions"] == plan.positions_shard(split, shard)
                else:
                    assert meta["alignment"] is None
    # the aligned family extracts exactly the primary's rows
    for split in SPLITS:
        for shard in plan.shards(split):
            a = pq.read_table(wd / plan.activation_shard(plan.primary, split, shard))
            b = pq.read_table(wd / plan.activation_shard(other, split, shard))
            assert a.column("doc_id").to_pylist() == b.column("doc_id").to_pylist()


@pytest.mark.slow
def test_rerun_does_nothing(real_run):
    out = snakemake(real_run.workdir, "-n", "--configfile", "reduced.yaml").stdout
    assert NOTHING_TO_DO in out, out


@pytest.mark.slow
def test_swapping_an_ar_plans_nothing_yet(real_run):
    """No stage reads the AR so far: a new AR checkpoint must not rebuild anything."""

    def swap(raw):
        assert raw["families"]["gemma"]["ar"]["dtype"] == "float32"
        raw["families"]["gemma"]["ar"]["dtype"] = "bfloat16"

    swapped = write_config(real_run.workdir, "swap_ar.yaml", swap)
    assert swapped.checkpoint_tag("gemma", "ar") != real_run.plan.checkpoint_tag("gemma", "ar")
    out = snakemake(real_run.workdir, "-n", "--configfile", "swap_ar.yaml").stdout
    assert NOTHING_TO_DO in out, out


@pytest.mark.slow
def test_changing_the_gemma_base_plans_only_gemma_extraction(real_run):
    """Only the non-primary family's activations depend on its base (at this stage: once later
    stages read the activations, their gemma jobs join this list)."""

    def swap(raw):
        assert raw["families"]["gemma"]["base"]["dtype"] == "float32"
        raw["families"]["gemma"]["base"]["dtype"] = "bfloat16"

    swapped = write_config(real_run.workdir, "swap_base.yaml", swap)
    out = snakemake(real_run.workdir, "-n", "--configfile", "swap_base.yaml").stdout
    assert job_counts(out) == {"extract": 4, "all": 1}
    new_tags = {swapped.activation_tag("gemma", split) for split in SPLITS}
    jobs = planned_wildcards(out, "extract")
    assert len(jobs) == 4
    assert {job["btag"] for job in jobs} == new_tags
    assert {(job["split"], job["shard"]) for job in jobs} == {
        (split, shard) for split in SPLITS for shard in swapped.shards(split)
    }
    assert new_tags.isdisjoint({real_run.plan.activation_tag("gemma", s) for s in SPLITS})


@pytest.mark.slow
def test_without_snakemake_metadata_nothing_is_rerun(real_run):
    """Identity lives in the paths: a fresh checkout with the results (and no .snakemake/)
    plans nothing for the unchanged config."""
    shutil.rmtree(real_run.workdir / ".snakemake")
    out = snakemake(real_run.workdir, "-n", "--configfile", "reduced.yaml").stdout
    assert NOTHING_TO_DO in out, out
