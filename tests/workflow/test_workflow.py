"""The Snakemake DAG: dry runs of the default and paper configs, lint, and one real CPU run of a
reduced default config (tiny training) whose results JSONs are checked, followed by reruns that
must plan exactly the dependent jobs, and a partial rebuild that must give identical `data`.

Every test runs Snakemake in a copy of the workflow files under tmp_path, so no `.snakemake/`
state or result is shared with the repository or between tests that do not ask for it.
"""

from __future__ import annotations

import copy
import json
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
from workflow_common import copy_workflow, reduced_config

from nlaprobe.config import validate_config
from nlaprobe.plan import AGGREGATES, VARIANTS, Plan

NOTHING_TO_DO = "Nothing to be done"


def make_workdir(dst: Path) -> Path:
    return copy_workflow(dst)


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
    out = snakemake(workdir, "-n").stdout
    # 2 demo builds; eval 1 shard, ridge 2 shards (80 documents per shard), 3 corpus shards, an
    # extraction per family and shard, positions of the primary family; per family 6 decode
    # conditions (greedy, ban_dq, ban_dq_sq, sample_t1, greedy_L1, greedy_L3) and 6 redaction
    # variants of its greedy decodes; scores: 4 transfer cells + per family 2 bans, 1 sampled,
    # 2 adjacent layers and 6 redaction variants (26); ridge: 2 directions x 6 sizes; 8
    # aggregates with their stamps, the report
    assert job_counts(out) == {
        "build_demo": 2,
        "corpus": 3,
        "extract": 6,
        "positions": 3,
        "decode": 12,
        "redact": 12,
        "score": 26,
        "ridge": 12,
        "stamp": 8,
        **dict.fromkeys(AGGREGATES, 1),
        "report": 1,
        "all": 1,
    }
    assert {job["split"] for job in planned_wildcards(out, "corpus")} == {"eval", "ridge"}
    conds = {job["cond"] for job in planned_wildcards(out, "decode")}
    assert conds == {"greedy", "ban_dq", "ban_dq_sq", "sample_t1", "greedy_L1", "greedy_L3"}
    variants = {job["variant"] for job in planned_wildcards(out, "redact")}
    assert variants == set(VARIANTS) - {"full"}
    assert not (workdir / "results").exists()


def test_dry_run_of_the_transfer_matrix_alone(workdir):
    """`snakemake results/transfer_matrix.json` builds everything the matrix needs (SPEC §2)
    and nothing else: greedy decodes, eval split only."""
    out = snakemake(workdir, "-n", "results/transfer_matrix.json").stdout
    assert job_counts(out) == {
        "build_demo": 2,
        "corpus": 1,
        "extract": 2,
        "positions": 1,
        "decode": 2,
        "score": 4,
        "stamp": 1,
        "transfer_matrix": 1,
    }
    assert [job["name"] for job in planned_wildcards(out, "stamp")] == ["transfer_matrix"]
    assert {job["cond"] for job in planned_wildcards(out, "decode")} == {"greedy"}


def test_dry_run_paper_needs_no_network(workdir):
    # Planning resolves no hub id and loads no dataset: a dead proxy would make any request fail.
    dead = "http://127.0.0.1:9"
    proxies = {k: dead for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    out = snakemake(workdir, "-n", "--configfile", "config/paper.yaml", env=proxies).stdout
    # eval 200/50 = 4 shards, ridge 4000/50 = 80; no demo builds; gemma has adjacent layers
    # 40/42 (6 decode conditions), qwen none (4); scores per eval shard: 4 transfer cells, 2x2
    # bans, 2 sampled, 2 adjacent layers (gemma), 2x6 redaction variants = 24
    assert job_counts(out) == {
        "corpus": 84,
        "extract": 168,
        "positions": 84,
        "decode": 40,
        "redact": 48,
        "score": 96,
        "ridge": 12,
        "stamp": 8,
        **dict.fromkeys(AGGREGATES, 1),
        "report": 1,
        "all": 1,
    }


def test_lint(workdir):
    for extra in ([], ["--configfile", "config/paper.yaml"]):
        proc = snakemake(workdir, "--lint", *extra, check=False)
        assert proc.returncode == 0, proc.stdout


# ----------------------------------------------------------------------------- one real run

EVAL = "eval"
FAMILIES = ("qwen", "gemma")
META_KEYS = {
    "schema_version",
    "package_version",
    "git_sha",
    "config_hash",
    "checkpoints",
    "seeds",
    "device",
    "created_at",
}
CELL_KEYS = {"av", "ar", "route", "fve_own", "null_fve_own", "n", "n_rows", "tag_failures"}
NULL = {"value": None, "lo": None, "hi": None}


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

    def json(self, name: str) -> dict:
        return json.loads((self.workdir / "results" / f"{name}.json").read_text())

    def eval_rows(self, fam: str) -> int:
        return sum(
            pq.read_metadata(self.workdir / self.plan.activation_shard(fam, EVAL, s)).num_rows
            for s in self.plan.shards(EVAL)
        )


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


def score_paths(plan: Plan) -> set[str]:
    return {
        plan.score_shard(av, ar, "greedy", "full", s)
        for av in plan.families
        for ar in plan.families
        for s in plan.shards(EVAL)
    }


def dry_run(run: Run, configfile: str) -> str:
    return snakemake(run.workdir, "-n", "--configfile", configfile).stdout


@pytest.mark.slow
def test_real_run_writes_every_shard(real_run):
    wd, plan = real_run.workdir, real_run.plan
    assert plan.families == list(FAMILIES)
    assert plan.n_shards(EVAL) == 2
    shards = plan.shards(EVAL)
    acts = {plan.activation_shard(f, EVAL, s) for f in plan.families for s in shards}
    sidecars = {plan.activation_sidecar(f, EVAL, s) for f in plan.families for s in shards}
    assert len(acts) == 4
    assert files_under(wd, "results/activations") == acts | sidecars
    assert files_under(wd, "results/positions") == {plan.positions_shard(EVAL, s) for s in shards}
    assert files_under(wd, "results/corpus") == {plan.corpus_shard(EVAL, s) for s in shards}
    assert files_under(wd, "results/decodes") == {
        plan.decode_shard(f, "greedy", s) for f in plan.families for s in shards
    }
    assert files_under(wd, "results/scores") == score_paths(plan)
    assert files_under(wd, "results/.stamps") == {
        plan.stamp("fve_baseline"),
        plan.stamp("transfer_matrix"),
    }
    assert {p.name for p in (wd / "results").glob("*.json")} == {
        "fve_baseline.json",
        "transfer_matrix.json",
    }
    for style in plan.demo_styles():
        for role in ("base", "av", "ar"):
            assert (wd / plan.demo_dir(style) / role / "config.json").is_file()
    leftovers = [p for p in (wd / "results").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_real_run_sidecars(real_run):
    wd, plan = real_run.workdir, real_run.plan
    other = next(f for f in plan.families if f != plan.primary)
    for fam in plan.families:
        for shard in plan.shards(EVAL):
            meta = yaml.safe_load((wd / plan.activation_sidecar(fam, EVAL, shard)).read_text())
            rows = pq.read_metadata(wd / plan.activation_shard(fam, EVAL, shard)).num_rows
            assert meta["n_rows"] == rows > 0
            assert meta["layers"] == plan.layers(fam)
            assert meta["provenance"]["family"] == fam
            assert meta["provenance"]["tag"] == plan.activation_tag(fam, EVAL)
            assert meta["provenance"]["tag_spec"] == plan.activation_spec(fam, EVAL)
            if fam == other:
                assert meta["alignment"]["mean_abs_error_chars"] < 2
                assert meta["alignment"]["positions"] == plan.positions_shard(EVAL, shard)
            else:
                assert meta["alignment"] is None
    # the aligned family extracts exactly the primary's rows
    for shard in plan.shards(EVAL):
        a = pq.read_table(wd / plan.activation_shard(plan.primary, EVAL, shard))
        b = pq.read_table(wd / plan.activation_shard(other, EVAL, shard))
        assert a.column("doc_id").to_pylist() == b.column("doc_id").to_pylist()


@pytest.mark.slow
def test_results_jsons_have_meta_and_data(real_run):
    plan = real_run.plan
    for name in ("fve_baseline", "transfer_matrix"):
        doc = real_run.json(name)
        assert set(doc) == {"meta", "data"}, name
        meta = doc["meta"]
        assert META_KEYS <= set(meta), name
        assert meta["device"] == "cpu"
        assert meta["seeds"]["run"] == plan.cfg["run"]["seed"]
        assert meta["seeds"]["metrics"] == plan.cfg["metrics"]
        for fam in plan.families:
            for role in ("base", "av", "ar"):
                ckpt = meta["checkpoints"][fam][role]
                assert ckpt["demo"] == fam and ckpt["dtype"] == "float32"


@pytest.mark.slow
def test_fve_baseline_with_an_av_that_writes_no_tags(real_run):
    """20 + 30 training steps teach the AVs no `<explanation>` tags: every row is a tag failure,
    which is legitimate; the aggregate is written with null FVE and full counts."""
    data = real_run.json("fve_baseline")["data"]
    assert set(data["families"]) == set(real_run.plan.families)  # JSON objects: sorted keys
    for fam, out in data["families"].items():
        rows = real_run.eval_rows(fam)
        assert rows == 32  # 16 documents x 2 positions
        assert out["n_rows"] == rows and out["tag_failures"] == rows, (fam, out)
        assert out["n"] == 0 and out["decode_errors"] == 0
        assert out["fve_own"] == NULL and out["var_own"] is None
        assert out["fve_train"] is None  # no train_var in the default config
        assert out["nmse_mean_strict"] == 2.0


@pytest.mark.slow
def test_transfer_matrix_structure(real_run):
    plan = real_run.plan
    data = real_run.json("transfer_matrix")["data"]
    fams = plan.families
    assert set(data) == {"families", "matrix", "nulls", "cells", "alignment"}
    assert data["families"] == fams
    assert set(data["cells"]) == {f"{a}__{b}" for a in fams for b in fams}
    for av in fams:
        assert set(data["matrix"][av]) == set(data["nulls"][av]) == set(fams)
        for ar in fams:
            cell = data["cells"][f"{av}__{ar}"]
            assert CELL_KEYS <= set(cell)
            assert (cell["av"], cell["ar"]) == (av, ar)
            assert cell["route"] == ("within" if av == ar else "cross")
            # the AR family's rows are the AV family's rows (aligned extraction)
            assert cell["n_rows"] == real_run.eval_rows(ar) == real_run.eval_rows(av)
            assert cell["tag_failures"] == cell["n_rows"] and cell["n"] == 0
            assert cell["fve_own"] == NULL and cell["null_fve_own"] is None
            assert data["matrix"][av][ar] is None and data["nulls"][av][ar] is None
    other = next(f for f in fams if f != plan.primary)
    assert data["alignment"]["n_rows"] == real_run.eval_rows(other)
    assert 0 <= data["alignment"]["mean_abs_error_chars"] < 2


@pytest.mark.slow
def test_rerun_does_nothing(real_run):
    out = dry_run(real_run, "reduced.yaml")
    assert NOTHING_TO_DO in out, out


@pytest.mark.slow
def test_swapping_an_ar_plans_only_its_scores_and_the_aggregates(real_run):
    def swap(raw):
        assert raw["families"]["gemma"]["ar"]["dtype"] == "float32"
        raw["families"]["gemma"]["ar"]["dtype"] = "bfloat16"

    swapped = write_config(real_run.workdir, "swap_ar.yaml", swap)
    assert swapped.ar_tag("gemma") != real_run.plan.ar_tag("gemma")
    out = dry_run(real_run, "swap_ar.yaml")
    # 2 cells (qwen -> gemma, gemma -> gemma) x 2 shards; decodes and stamps are reused
    assert job_counts(out) == {"score": 4, "fve_baseline": 1, "transfer_matrix": 1, "all": 1}
    jobs = {(j["avtag"], j["artag"], j["shard"]) for j in planned_wildcards(out, "score")}
    assert jobs == {
        (swapped.decode_tag(av), swapped.ar_tag("gemma"), s)
        for av in swapped.families
        for s in swapped.shards(EVAL)
    }


@pytest.mark.slow
def test_changing_the_gemma_base_plans_only_what_reads_gemma_vectors(real_run):
    """The non-primary family's activations depend on its base; its decodes (the AV reads them)
    and every score with gemma as AV or as AR (the gold) follow; qwen's side is reused."""

    def swap(raw):
        assert raw["families"]["gemma"]["base"]["dtype"] == "float32"
        raw["families"]["gemma"]["base"]["dtype"] = "bfloat16"

    before = real_run.plan
    swapped = write_config(real_run.workdir, "swap_base.yaml", swap)
    out = dry_run(real_run, "swap_base.yaml")
    assert job_counts(out) == {
        "extract": 2,
        "decode": 2,
        "score": 6,
        "fve_baseline": 1,
        "transfer_matrix": 1,
        "all": 1,
    }
    shards = swapped.shards(EVAL)
    extract = planned_wildcards(out, "extract")
    assert {(j["btag"], j["split"], j["shard"]) for j in extract} == {
        (swapped.activation_tag("gemma", EVAL), EVAL, s) for s in shards
    }
    assert swapped.activation_tag("gemma", EVAL) != before.activation_tag("gemma", EVAL)
    assert swapped.activation_tag("qwen", EVAL) == before.activation_tag("qwen", EVAL)
    decode = planned_wildcards(out, "decode")
    assert {(j["avtag"], j["shard"]) for j in decode} == {
        (swapped.decode_tag("gemma"), s) for s in shards
    }
    score = planned_wildcards(out, "score")
    assert {(j["avtag"], j["artag"], j["shard"]) for j in score} == {
        (swapped.decode_tag(av), swapped.ar_tag(ar), s)
        for av in swapped.families
        for ar in swapped.families
        if "gemma" in (av, ar)
        for s in shards
    }


@pytest.mark.slow
def test_changing_n_boot_plans_only_new_stamps_and_the_aggregates(real_run):
    def swap(raw):
        raw["metrics"]["n_boot"] = 60

    swapped = write_config(real_run.workdir, "n_boot.yaml", swap)
    out = dry_run(real_run, "n_boot.yaml")
    assert job_counts(out) == {"stamp": 2, "fve_baseline": 1, "transfer_matrix": 1, "all": 1}
    stamps = {
        f"results/.stamps/{j['name']}-{j['stag']}.json" for j in planned_wildcards(out, "stamp")
    }
    assert stamps == {swapped.stamp("fve_baseline"), swapped.stamp("transfer_matrix")}
    assert stamps.isdisjoint(files_under(real_run.workdir, "results/.stamps"))


def table_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.mark.slow
def test_rebuilding_scores_gives_identical_data(real_run):
    """Determinism (SPEC §8): delete every score shard, one decode shard and both results JSONs
    and run again: the same decodes, scores and `data`."""
    wd, plan = real_run.workdir, real_run.plan
    data = {name: real_run.json(name)["data"] for name in ("fve_baseline", "transfer_matrix")}
    decode = plan.decode_shard(plan.primary, "greedy", plan.shards(EVAL)[0])
    shards = sorted(score_paths(plan)) + [decode]
    before = {p: table_rows(wd / p) for p in shards}
    assert any(row["text"] for row in before[decode])
    for p in shards:
        (wd / p).unlink()
    for name in data:
        (wd / "results" / f"{name}.json").unlink()

    start = time.monotonic()
    out = snakemake(wd, "--cores", "2", "--configfile", "reduced.yaml").stdout
    print(f"\nrebuild of 1 decode, 8 scores and the aggregates: {time.monotonic() - start:.1f} s")
    assert job_counts(out) == {
        "decode": 1,
        "score": 8,
        "fve_baseline": 1,
        "transfer_matrix": 1,
        "all": 1,
    }
    for p in shards:
        assert table_rows(wd / p) == before[p], p
    for name in data:
        assert real_run.json(name)["data"] == data[name], name


@pytest.mark.slow
def test_without_snakemake_metadata_nothing_is_rerun(real_run):
    """Identity lives in the paths: a fresh checkout with the results (and no .snakemake/)
    plans nothing for the unchanged config."""
    shutil.rmtree(real_run.workdir / ".snakemake")
    out = dry_run(real_run, "reduced.yaml")
    assert NOTHING_TO_DO in out, out
