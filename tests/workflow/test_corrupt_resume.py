"""A corrupted shard is detected and rebuilt, not used (issue 14, item 4; docs/behaviour.md).

A three-job DAG (corpus -> extract -> positions) of one tiny `path:` family (the session's
`qwen_family`, no demo builds), so the test stays small:

- fs storage: an intact run stores every artifact; then bytes 2000-4000 of the stored
  activation shard are flipped (its modification time kept, as bit rot would) and the positions
  shard is removed from the store. On a fresh machine the positions job retrieves the damaged
  activation shard, refuses it (exit 2, one line naming it) and the run fails; the Snakefile's
  onerror removes the damaged object from the store. The next run, on another fresh machine,
  rebuilds it (extract) and then the positions; the stored shards equal the intact run's.
- s3 (a moto server, as tests/workflow/test_resume.py): the same through the S3 plugin.
- local: the same damage in a working directory without storage; the failing job sets the shard
  aside and the next run rebuilds it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_resume import BUCKET, CANARY_S3_KEY, CANARY_S3_SECRET, moto, s3_client  # noqa: F401
from workflow_common import copy_workflow, reduced_config, snakemake

from nlaprobe.config import validate_config
from nlaprobe.io import read_table
from nlaprobe.plan import Plan

pytestmark = pytest.mark.slow

CONFIG = "integrity.yaml"


def config_for(family: Path) -> dict:
    raw = reduced_config(shard_docs=8)
    raw["corpus"]["splits"] = {"eval": {"start": 0, "stop": 8}, "ridge": {"start": 8, "stop": 16}}
    raw["run"]["primary_family"] = "qwen"
    raw["families"] = {
        "qwen": {
            "layer": 2,
            **{
                role: {"path": str(family / role), "dtype": "float32", "params_b": 0.001}
                for role in ("base", "av", "ar")
            },
        }
    }
    return raw


@pytest.fixture(scope="module")
def setup(qwen_family) -> tuple[dict, Plan]:
    raw = config_for(qwen_family)
    return raw, Plan(validate_config(raw, source=CONFIG))


def fresh_workdir(path: Path, raw: dict) -> Path:
    if path.exists():
        shutil.rmtree(path)
    copy_workflow(path)
    (path / CONFIG).write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(
    workdir: Path, target: str, *extra: str, check: bool = True, env: dict | None = None
) -> tuple[int, str]:
    proc = snakemake(
        workdir, target, "--cores", "2", *extra, "--configfile", CONFIG, check=check, env=env
    )
    return proc.returncode, proc.stdout


def executed(output: str) -> list[str]:
    return sorted(re.findall(r"^(?:local)?rule (\w+):", output, flags=re.M))


def flip_keeping_mtime(path: Path, start: int = 2000, stop: int = 4000) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    assert len(data) > stop, f"{path} has only {len(data)} bytes"
    for i in range(start, stop):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_tree(src: Path, dst: Path) -> None:
    """Copy keeping modification times (what a machine that ran the jobs left)."""
    shutil.copytree(src, dst, copy_function=shutil.copy2, dirs_exist_ok=True)


def storage_args(store: Path) -> tuple[str, ...]:
    return ("--default-storage-provider", "fs", "--default-storage-prefix", str(store))


@pytest.fixture(scope="module")
def intact(setup, tmp_path_factory) -> Path:
    """One intact run of the three jobs into an fs store; the store's folder."""
    if shutil.which("rsync") is None:
        pytest.skip("the fs storage plugin needs rsync (Debian package `rsync`)")
    raw, plan = setup
    root = tmp_path_factory.mktemp("intact")
    store = root / "store"
    _, out = run(
        fresh_workdir(root / "wf", raw), plan.positions_shard("eval", "00000"), *storage_args(store)
    )
    assert executed(out) == ["corpus", "extract", "positions"], out
    return store


def test_corrupt_object_in_storage_is_detected_and_rebuilt(setup, intact, tmp_path):
    raw, plan = setup
    acts = plan.activation_shard("qwen", "eval", "00000")
    target = plan.positions_shard("eval", "00000")
    store = tmp_path / "store"
    copy_tree(intact, store)
    storage = storage_args(store)
    intact_bytes = {rel: (store / rel).read_bytes() for rel in (acts, target)}

    # damage in the store: the activation shard rots, the positions shard is to be rebuilt
    flip_keeping_mtime(store / acts)
    (store / target).unlink()

    # machine 2: the positions job meets the damaged shard; the run fails and drops the object
    workdir = fresh_workdir(tmp_path / "wf", raw)
    code, out = run(workdir, target, *storage, check=False)
    assert code != 0, out
    assert executed(out) == ["positions"], out
    # the job's log (sent to storage like every file of the job)
    log = (store / target.replace("results/", "logs/", 1)).with_suffix(".log").read_text()
    errors = [line for line in log.splitlines() if " ERROR nlaprobe: " in line]
    assert len(errors) == 1 and f"{acts}: corrupt" in errors[0], log
    assert "Traceback" not in log
    assert f"removed {store / acts} from storage" in out, out
    assert not (store / acts).exists()
    assert not (store / target).exists()

    # machine 3: the damaged shard is rebuilt, not used
    workdir = fresh_workdir(workdir, raw)
    _, out = run(workdir, target, *storage)
    assert executed(out) == ["extract", "positions"], out
    for rel, data in intact_bytes.items():
        assert (store / rel).read_bytes() == data, rel  # byte-identical, digest included
        read_table(store / rel)  # and it verifies


def test_corrupt_local_shard_is_set_aside_and_rebuilt(setup, intact, tmp_path):
    """Without storage: the results of the intact run in a working directory (no Snakemake
    metadata: identity lives in the paths), the same damage."""
    raw, plan = setup
    acts = plan.activation_shard("qwen", "eval", "00000")
    target = plan.positions_shard("eval", "00000")
    workdir = fresh_workdir(tmp_path / "wf", raw)
    copy_tree(intact / "results", workdir / "results")
    intact_bytes = {rel: (workdir / rel).read_bytes() for rel in (acts, target)}
    flip_keeping_mtime(workdir / acts)
    (workdir / target).unlink()

    code, out = run(workdir, target, check=False)
    assert code != 0 and executed(out) == ["positions"], out
    log = (workdir / target.replace("results/", "logs/", 1)).with_suffix(".log").read_text()
    errors = [line for line in log.splitlines() if " ERROR nlaprobe: " in line]
    assert len(errors) == 1 and f"{acts}: corrupt" in errors[0], log
    assert not (workdir / acts).exists()
    aside = workdir / Path(acts).with_name(f".{Path(acts).name}.corrupt")
    assert aside.exists()

    _, out = run(workdir, target)
    assert executed(out) == ["extract", "positions"], out
    for rel, data in intact_bytes.items():
        assert (workdir / rel).read_bytes() == data, rel


def test_corrupt_object_in_s3_is_detected_and_rebuilt(setup, intact, moto, tmp_path):  # noqa: F811
    """The same through the S3 plugin: the intact run's files uploaded in the DAG's order (S3
    stamps an object with its upload time), the activation shard uploaded damaged."""
    raw, plan = setup
    acts = plan.activation_shard("qwen", "eval", "00000")
    target = plan.positions_shard("eval", "00000")
    prefix = "integrity"
    storage = ("--default-storage-provider", "s3", "--default-storage-prefix",
               f"s3://{BUCKET}/{prefix}")  # fmt: skip
    env = {
        "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": moto,
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": CANARY_S3_KEY,
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": CANARY_S3_SECRET,
    }
    s3 = s3_client(moto)
    s3.create_bucket(Bucket=BUCKET)
    damaged = tmp_path / "damaged.parquet"
    shutil.copy2(intact / acts, damaged)
    flip_keeping_mtime(damaged)
    corpus = plan.corpus_shard("eval", "00000")
    sidecar = plan.activation_sidecar("qwen", "eval", "00000")
    for rel, src in ((corpus, intact / corpus), (acts, damaged), (sidecar, intact / sidecar)):
        s3.upload_file(str(src), BUCKET, f"{prefix}/{rel}")

    def stored(rel: str) -> bool:
        return "Contents" in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{rel}")

    workdir = fresh_workdir(tmp_path / "wf", raw)
    code, out = run(workdir, target, *storage, check=False, env=env)
    assert code != 0 and executed(out) == ["positions"], out
    assert f"removed s3://{BUCKET}/{prefix}/{acts} from storage" in out, out
    assert not stored(acts) and not stored(target)

    workdir = fresh_workdir(workdir, raw)
    _, out = run(workdir, target, *storage, env=env)
    assert executed(out) == ["extract", "positions"], out
    for rel in (acts, target):
        body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{rel}")["Body"].read()
        assert body == (intact / rel).read_bytes(), rel
