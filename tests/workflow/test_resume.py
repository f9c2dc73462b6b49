"""Resuming the DAG (SPEC §8 "Off-box resume" and "Atomic outputs").

- fs / s3 storage: part of the DAG runs against a store (a plain directory; a moto S3 server on
  127.0.0.1), the whole working directory is then deleted (results/, logs/, .snakemake/) and a
  fresh copy runs the full target: only the missing jobs run, the stored ones are retrieved, and
  the final `data` equals that of an uninterrupted local run.
- kill: a local run is killed with SIGKILL (its whole process group) while a decode job is in
  flight: nothing at a final output path is partial, and a rerun finishes with the same `data`.

Time: every job starts a fresh Python with torch (~5 s before any work), and the demo builds
dominate. The uninterrupted reference runs once per module; each scenario then seeds its store
(or working directory) with the reference's upstream artifacts -- deterministic files of the same
config, copied with their modification times, as a machine that ran those jobs earlier would
have left them -- and lets Snakemake run, interrupt and resume only the last stages. What is
seeded and what Snakemake runs is spelled out per test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from contract import job_counts
from workflow_common import copy_workflow, reduced_config

from nlaprobe.config import validate_config
from nlaprobe.plan import Plan

pytestmark = pytest.mark.slow

CONFIG = "reduced.yaml"
AGGREGATES = ("results/fve_baseline.json", "results/transfer_matrix.json")
TARGET = "results/transfer_matrix.json"
# Planted in every run's environment; must never reach a file.
CANARY_HF = "hf_CANARY_abc123"
# moto accepts any credentials, so the S3 secret can be a canary too.
CANARY_S3_KEY = "AKIACANARYKEY0001"
CANARY_S3_SECRET = "s3_CANARY_secret_def456"
BUCKET = "nlaprobe-test"
UPSTREAM = ("build_demo", "corpus", "extract", "positions")


# ----------------------------------------------------------------------------- helpers


# Read once: every working directory of the module gets this very config, and PLAN its paths.
RAW_CONFIG = reduced_config()
PLAN = Plan(validate_config(RAW_CONFIG, source=CONFIG))


def make_workdir(dst: Path) -> Path:
    """A fresh copy of the workflow files and the reduced config (what a new machine checks out)."""
    copy_workflow(dst)
    (dst / CONFIG).write_text(yaml.safe_dump(RAW_CONFIG, sort_keys=False))
    return dst


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        HF_TOKEN=CANARY_HF,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra or {})
    return env


def snakemake_cmd(*targets: str, cores: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    # targets first: --configfile takes several values
    return [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--cores",
        str(cores),
        *extra,
        "--configfile",
        CONFIG,
    ]


def snakemake(
    workdir: Path,
    *targets: str,
    cores: int = 2,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> str:
    """Run Snakemake in `workdir`; return its output (stdout and stderr merged)."""
    start = time.monotonic()
    proc = subprocess.run(
        snakemake_cmd(*targets, cores=cores, extra=extra),
        cwd=workdir,
        env=run_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    print(f"snakemake {' '.join(targets) or '(all)'}: {time.monotonic() - start:.1f} s")
    if proc.returncode != 0:
        pytest.fail(f"snakemake exited {proc.returncode} in {workdir}:\n{proc.stdout[-8000:]}")
    return proc.stdout


def job_outputs(output: str) -> set[str]:
    """The (first) output of every job a run started, as Snakemake prints it (the storage query
    under remote storage)."""
    return set(re.findall(r"^\s+output: (\S+)", output, flags=re.M))


def executed_rules(output: str) -> list[str]:
    """Rules of the jobs a run actually started ("rule x:" / "localrule x:" blocks)."""
    return re.findall(r"^(?:local)?rule (\w+):", output, flags=re.M)


def data_of(path: Path) -> dict:
    return json.loads(path.read_text())["data"]


def eval_shards() -> list[str]:
    return PLAN.shards("eval")


def decode_shards() -> list[str]:
    return [PLAN.decode_shard(f, "greedy", s) for f in PLAN.families for s in eval_shards()]


def decode_shards_of(fam: str) -> list[str]:
    return [PLAN.decode_shard(fam, "greedy", s) for s in eval_shards()]


def score_shards(av: str | None = None, shard: str | None = None) -> list[str]:
    """Score shards of every (AV family, AR family) cell, optionally of one AV / one shard."""
    return [
        PLAN.score_shard(a, ar, "greedy", "full", s)
        for a in PLAN.families
        for ar in PLAN.families
        for s in eval_shards()
        if (av is None or a == av) and (shard is None or s == shard)
    ]


def decode_log(fam: str, shard: str) -> str:
    return f"logs/decode/av-{PLAN.decode_tag(fam)}/greedy/shard-{shard}.log"


def upstream_files() -> list[str]:
    """Eval-split artifacts up to the activations (what the decodes read), in the order of the
    DAG: S3 stamps an object with its upload time, so seeding out of order would make an output
    look older than its input."""
    other = [f for f in PLAN.families if f != PLAN.primary]
    out = []
    for s in eval_shards():
        out.append(PLAN.corpus_shard("eval", s))
        out += [PLAN.activation_shard(PLAN.primary, "eval", s)]
        out += [PLAN.activation_sidecar(PLAN.primary, "eval", s)]
        out.append(PLAN.positions_shard("eval", s))
        for fam in other:
            out += [PLAN.activation_shard(fam, "eval", s), PLAN.activation_sidecar(fam, "eval", s)]
    return out


def demo_dirs() -> list[str]:
    return [PLAN.demo_dir(style) for style in PLAN.demo_styles()]


def expand(root: Path, rels: list[str]) -> list[str]:
    """Files and folders (relative to root) -> the files, relative to root."""
    out = []
    for rel in rels:
        p = root / rel
        if p.is_dir():
            out += [f.relative_to(root).as_posix() for f in sorted(p.rglob("*")) if f.is_file()]
        else:
            out.append(rel)
    return out


def copy_artifacts(src_root: Path, dst_root: Path, rels: list[str]) -> None:
    """Copy files and folders (relative paths) keeping their modification times."""
    for rel in expand(src_root, rels):
        (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, dst_root / rel)
    for rel in rels:  # folder times last (copying into a folder changes its time)
        if (src_root / rel).is_dir():
            for d in [src_root / rel, *(p for p in (src_root / rel).rglob("*") if p.is_dir())]:
                shutil.copystat(d, dst_root / d.relative_to(src_root))


def assert_same_tables(a: Path, b: Path) -> None:
    """Same rows and columns (schema metadata records paths and is not compared)."""
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.equals(tb), f"{a} differs from {b}"


def files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and needle.encode() in p.read_bytes():
            hits.append(str(p.relative_to(root)))
    return hits


def wipe(workdir: Path) -> Path:
    """Delete the whole working directory and check out a fresh copy at the same place."""
    shutil.rmtree(workdir)
    return make_workdir(workdir)


# ----------------------------------------------------------------------------- reference


class Reference:
    def __init__(self, workdir: Path, seconds: float):
        self.workdir = workdir
        self.seconds = seconds

    def data(self, rel: str) -> dict:
        return data_of(self.workdir / rel)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """One uninterrupted local run of every aggregate, in its own fresh directory."""
    workdir = make_workdir(tmp_path_factory.mktemp("reference") / "wf")
    start = time.monotonic()
    out = snakemake(workdir, *AGGREGATES)
    seconds = time.monotonic() - start
    print(f"\nreference run: {seconds:.1f} s; jobs {job_counts(out)}")
    for rel in (*AGGREGATES, *decode_shards(), *score_shards(), *upstream_files()):
        assert (workdir / rel).is_file(), rel
    return Reference(workdir, seconds)


def assert_matches_reference(
    ref: Reference, root: Path, aggregates=(TARGET,), shards: bool = True
) -> None:
    """`data` of the aggregates (and the rows of every decode and score shard) under `root`
    equal the reference's."""
    for rel in aggregates:
        assert data_of(root / rel) == ref.data(rel), rel
    if shards:
        for rel in decode_shards() + score_shards():
            assert_same_tables(root / rel, ref.workdir / rel)


# ----------------------------------------------------------------------------- fs storage


@pytest.fixture(scope="module")
def rsync() -> str:
    path = shutil.which("rsync")
    if path is None:
        pytest.skip("the fs storage plugin needs rsync (Debian package `rsync`)")
    return path


def storage_lines(output: str, n: int = 3) -> str:
    """A few of the lines in which Snakemake reports storage transfers (printed with -s)."""
    pattern = re.compile(r"retrieve from storage|send to storage|Retrieving|Storing in", re.I)
    lines = [ln.strip() for ln in output.splitlines() if pattern.search(ln)]
    return "\n    ".join(lines[:n])


def test_fs_storage_resume_on_a_fresh_machine(reference, rsync, tmp_path):
    """Stored: the demo builds, the eval split up to the activations and the decodes (seeded).
    Machine 1 scores the qwen AV's decodes against both ARs and is then wiped; machine 2 runs the
    full target and must run only the gemma AV's score jobs and the aggregate."""
    store = tmp_path / "store"
    storage = ("--default-storage-provider", "fs", "--default-storage-prefix", str(store))
    primary, other = PLAN.primary, next(f for f in PLAN.families if f != PLAN.primary)
    copy_artifacts(reference.workdir, store, demo_dirs() + upstream_files() + decode_shards())

    # machine 1
    workdir = make_workdir(tmp_path / "wf")
    out = snakemake(workdir, *score_shards(av=primary), extra=storage)
    assert job_counts(out) == {"score": 4}, out
    print("  machine 1:\n    " + storage_lines(out))
    for rel in score_shards(av=primary):
        assert (store / rel).is_file(), f"{rel} was not sent to storage"
    assert not (workdir / "results").exists()  # every output went to the store
    workdir = wipe(workdir)

    # machine 2: only what is missing from the store runs
    out = snakemake(workdir, TARGET, extra=storage)
    print("  machine 2:\n    " + storage_lines(out))
    assert job_counts(out) == {"score": 4, "stamp": 1, "record": 1, "transfer_matrix": 1}, out
    record = PLAN.aggregate_record("transfer_matrix")
    expected = [*score_shards(av=other), PLAN.stamp("transfer_matrix"), record, TARGET]
    assert job_outputs(out) == {str(store / rel) for rel in expected}, out
    assert not {*UPSTREAM, "decode"} & set(executed_rules(out)), out
    assert re.search(r"scores/\S+ \(retrieve from storage\)", out), out
    assert (store / TARGET).is_file()
    assert_matches_reference(reference, store)
    assert files_containing(workdir, CANARY_HF) == []

    # machine 3: everything is stored, nothing to do
    workdir = wipe(workdir)
    out = snakemake(workdir, TARGET, extra=(*storage, "-n"))
    assert "Nothing to be done" in out, out


# ----------------------------------------------------------------------------- s3 storage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"moto_server did not listen on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture
def moto(tmp_path):
    moto_server = Path(sys.executable).with_name("moto_server")
    if not moto_server.exists():
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    pytest.importorskip("boto3")
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    proc = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=run_env(),
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CANARY_S3_KEY,
        aws_secret_access_key=CANARY_S3_SECRET,
        region_name="us-east-1",
    )


def test_s3_storage_resume_on_a_fresh_machine(reference, moto, tmp_path):
    """Stored: everything up to the decodes and the qwen AV's score shards (seeded, uploaded).
    Machine 1 scores shard 0 of the gemma AV and is wiped; machine 2 runs the full target and
    must run only shard 1 of the gemma AV and the aggregate. No planted secret reaches a file."""
    prefix = "run1"
    storage = (
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{BUCKET}/{prefix}",
    )
    env = {
        "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": moto,
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": CANARY_S3_KEY,
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": CANARY_S3_SECRET,
    }
    primary, other = PLAN.primary, next(f for f in PLAN.families if f != PLAN.primary)
    first, last = eval_shards()[0], eval_shards()[-1]
    s3 = s3_client(moto)
    s3.create_bucket(Bucket=BUCKET)
    seeded = demo_dirs() + upstream_files() + decode_shards() + score_shards(av=primary)
    for rel in expand(reference.workdir, seeded):
        s3.upload_file(str(reference.workdir / rel), BUCKET, f"{prefix}/{rel}")

    def stored() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
        return {o["Key"][len(prefix) + 1 :] for page in pages for o in page.get("Contents", [])}

    # machine 1
    workdir = make_workdir(tmp_path / "wf")
    out1 = snakemake(workdir, *score_shards(av=other, shard=first), extra=storage, env=env)
    print("  machine 1:\n    " + storage_lines(out1))
    assert job_counts(out1) == {"score": 2}, out1
    assert set(score_shards(av=other, shard=first)) <= stored()
    workdir = wipe(workdir)

    # machine 2, keeping the local copies to compare them
    out2 = snakemake(workdir, TARGET, extra=(*storage, "--keep-storage-local-copies"), env=env)
    print("  machine 2:\n    " + storage_lines(out2))
    assert job_counts(out2) == {"score": 2, "stamp": 1, "record": 1, "transfer_matrix": 1}, out2
    record = PLAN.aggregate_record("transfer_matrix")
    expected = [*score_shards(av=other, shard=last), PLAN.stamp("transfer_matrix"), record, TARGET]
    assert job_outputs(out2) == {f"s3://{BUCKET}/{prefix}/{rel}" for rel in expected}, out2
    assert not {*UPSTREAM, "decode"} & set(executed_rules(out2)), out2
    keys = stored()
    assert {TARGET, *score_shards()} <= keys
    # what the store holds (not the local copies) is what the next machine would get
    fetched = tmp_path / "fetched"
    for rel in (TARGET, *decode_shards(), *score_shards()):
        (fetched / rel).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, f"{prefix}/{rel}", str(fetched / rel))
    assert_matches_reference(reference, fetched)
    local = workdir / ".snakemake" / "storage" / "s3" / BUCKET / prefix / TARGET
    assert data_of(local) == reference.data(TARGET)  # the kept local copy

    # no secret reaches a file: the working directory (results, logs, sidecars, local copies,
    # Snakemake's own logs and metadata), the store, or Snakemake's output
    for secret in (CANARY_HF, CANARY_S3_SECRET, CANARY_S3_KEY):
        assert files_containing(workdir, secret) == [], secret
        assert secret not in out1 + out2
        for key in keys:
            obj = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
            assert secret.encode() not in obj, (secret, key)


# ----------------------------------------------------------------------------- kill -9


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_commands(pgid: int) -> list[str]:
    """Command lines of the live processes of a process group (Linux /proc)."""
    cmds = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(d.name)) == pgid:
                cmds.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError):
            continue
    return cmds


def test_kill_during_decode_then_rerun(reference, tmp_path):
    """Present (seeded, without Snakemake metadata: identity lives in the paths): everything up
    to the decodes, and the qwen AV's decodes and scores. A run of both aggregates on one core
    is killed (SIGKILL to its process group) while a gemma decode is in flight, then rerun."""
    primary, other = PLAN.primary, next(f for f in PLAN.families if f != PLAN.primary)
    workdir = make_workdir(tmp_path / "wf")
    seeded = demo_dirs() + upstream_files() + decode_shards_of(primary) + score_shards(primary)
    copy_artifacts(reference.workdir, workdir, seeded)
    logs = {PLAN.decode_shard(other, "greedy", s): decode_log(other, s) for s in eval_shards()}
    log_path = tmp_path / "killed.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            snakemake_cmd(*AGGREGATES, cores=1),
            cwd=workdir,
            env=run_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pgid = proc.pid  # session and process group leader; the jobs' shells inherit the group
    in_flight = None
    try:
        deadline = time.monotonic() + 300
        while in_flight is None and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-6000:]
            in_flight = next((rel for rel, lg in logs.items() if (workdir / lg).exists()), None)
            time.sleep(0.05)
        assert in_flight is not None, "no decode job started within 300 s"
        time.sleep(2.0)  # into the job's work (loading the AV, generating)
        assert not (workdir / in_flight).exists(), "the decode job finished before the kill"
        if Path("/proc/self").exists():
            running = [c for c in group_commands(pgid) if "nlaprobe" in c and " decode " in c]
            assert running, f"no decode process in the group: {group_commands(pgid)}"
    finally:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while process_group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_group_alive(pgid), "a job of the killed run is still alive"
    done = [rel for rel in decode_shards_of(other) if (workdir / rel).exists()]
    assert in_flight not in done

    # nothing at a final name is partial; temporary files may stay, at hidden .tmp names
    for p in (workdir / "results").rglob("*"):
        if not p.is_file():
            continue
        if p.name.endswith(".tmp"):
            assert p.name.startswith("."), p
        elif p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
    assert not any((workdir / rel).exists() for rel in AGGREGATES)

    # a SIGKILL leaves Snakemake's lock behind: release it as Snakemake's message says, then
    # rerun (the default profile sets rerun-incomplete): only what is missing runs
    snakemake(workdir, *AGGREGATES, extra=("--unlock",))
    out = snakemake(workdir, *AGGREGATES)
    counts = job_counts(out)
    assert counts.get("decode") == len(logs) - len(done), out
    assert counts.get("score") == len(score_shards(other)), out
    assert not set(UPSTREAM) & set(counts), out
    assert_matches_reference(reference, workdir, aggregates=AGGREGATES)
    assert files_containing(workdir, CANARY_HF) == []
    leftovers = [p.name for p in (workdir / "results").rglob("*") if p.name.endswith(".tmp")]
    print(f"  killed during {in_flight} ({len(done)} decode done); .tmp left: {leftovers}")
