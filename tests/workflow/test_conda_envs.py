"""Issue 13, item 4: with `--use-conda`, each job runs in the environment its hardware and
backend need. Dry runs (`-n --use-conda`) of targets that stop at one rule after another list the env files Snakemake would create for the planned jobs. (`-n` with
`--conda-create-envs-only` is not a dry run in Snakemake 9.27.1: it creates the envs, which the
stand-in below refuses; plain `-n --use-conda` is.)

Conda itself is absent on this machine kind and in CI (its channels are not reachable; only
PyPI, Debian's and npm's registries are), so creating the envs is not verified here. Snakemake's
dry run only asks conda three questions (`conda --version`, `conda info --json`, `conda config
--get channel_priority --json`); a stand-in on PATH answers them and nothing else (any other
call fails the test), so the dry run reads the rules' `conda:` directives for real."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from workflow_common import copy_workflow, snakemake, write_config

from nlaprobe.plan import ENV_FILES

STAND_IN = """#!/bin/sh
case "$1" in
  --version) echo "conda 24.11.3";;
  info) echo '{{"conda_prefix": "{prefix}", "platform": "linux-64"}}';;
  config) echo '{{"get": {{"channel_priority": "strict"}}}}';;
  *) echo "conda stand-in: unexpected call: $*" >&2; exit 1;;
esac
"""


@pytest.fixture
def conda_dry_run(tmp_path):
    """A function (config mutation, target) -> the env names the dry run would create."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    conda = bindir / "conda"
    conda.write_text(STAND_IN.format(prefix=tmp_path / "conda"))
    conda.chmod(conda.stat().st_mode | stat.S_IEXEC)
    wd = copy_workflow(tmp_path / "wf")
    names = {Path(p).name: env for env, p in ENV_FILES.items()}
    path = f"{bindir}{os.pathsep}{os.environ['PATH']}"

    def run(mutate, target: str | None = None):
        plan = write_config(wd, "envs.yaml", mutate)
        target = target(plan) if callable(target) else target
        args = [*([target] if target else []), "-n", "--use-conda"]
        out = snakemake(wd, *args, "--configfile", "envs.yaml", env={"PATH": path}).stdout
        found = re.findall(r"Conda environment envs/(\S+\.yaml) will be created", out)
        assert found, out
        return {names[f] for f in found}

    return run


def backend(name: str, device: str):
    def mutate(raw):
        raw["decode"]["backend"] = name
        raw["run"]["device"] = device

    return mutate


def test_the_cpu_default_runs_every_job_in_the_cpu_env(conda_dry_run):
    assert conda_dry_run(backend("hf", "cpu")) == {"cpu"}


def test_vllm_on_the_cpu_gives_the_decode_jobs_vllms_cpu_build(conda_dry_run):
    mutate = backend("vllm", "cpu")
    first_act = lambda p: p.activation_shard(p.primary, "eval", p.shards("eval")[0])  # noqa: E731
    first_dec = lambda p: p.decode_shard(p.primary, "greedy", p.shards("eval")[0])  # noqa: E731
    # up to extraction nothing decodes; the decode job adds vLLM's CPU env, and the full DAG
    # (scores, ridge, aggregates) nothing else
    assert conda_dry_run(mutate, first_act) == {"cpu"}
    assert conda_dry_run(mutate, first_dec) == {"cpu", "vllm-cpu"}
    assert conda_dry_run(mutate) == {"cpu", "vllm-cpu"}


@pytest.mark.parametrize("decoder", ["hf", "vllm"])
def test_on_a_gpu_the_model_jobs_take_the_cuda_env(conda_dry_run, decoder):
    mutate = backend(decoder, "cuda")
    corpus = lambda p: p.corpus_shard("eval", p.shards("eval")[0])  # noqa: E731
    first_act = lambda p: p.activation_shard(p.primary, "eval", p.shards("eval")[0])  # noqa: E731
    # the corpus and the demo builds (CPU training) stay in the CPU env; extraction, decoding,
    # scoring and ridge move to the CUDA env
    assert conda_dry_run(mutate, corpus) == {"cpu"}
    assert conda_dry_run(mutate, first_act) == {"cpu", "gpu"}
    assert conda_dry_run(mutate) == {"cpu", "gpu"}
