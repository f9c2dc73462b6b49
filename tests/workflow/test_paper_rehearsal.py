"""The paper run, rehearsed offline: `config/paper.yaml` exactly as shipped, pinned by `nlaprobe
pin` against a hub cache that holds tiny stand-ins under the paper's own ids (see
paper_standins.py), run by Snakemake through every aggregate and the report with
`HF_HUB_OFFLINE=1` and `HF_DATASETS_OFFLINE=1`, changed only by `--config` overrides of sizes
(document ranges, shard size, samples, max new tokens, ridge sizes) and the CPU backend (`hf`:
vLLM is the decode issue's). Nothing here special-cases the stand-ins: the jobs take the code
path of a GPU box (hub ids resolved through the cache, the multimodal Gemma-3 base, the
Ultra-FineWeb repo's own split definitions and its `content` column, bf16 weights).

What it proves: the paper config's every job runs on checkpoints and data laid out as the real
releases are, and the results carry the commits loaded. What it does not: the real weights'
numbers, GPU memory, vLLM, sizes beyond a shard per split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from paper_standins import DATASET, PAPER_FAMILIES, build_paper_cache
from workflow_common import copy_workflow

from nlaprobe.config import floating_revisions, load_config
from nlaprobe.plan import AGGREGATES

pytestmark = pytest.mark.slow

EVAL = (100000, 100008)  # the paper's first eval documents
RIDGE = (102000, 102008)  # the paper's first ridge documents
# the only changes to config/paper.yaml: sizes, and the decode backend for a CPU
OVERRIDES = [
    f"corpus={{shard_docs: 8, splits: {{eval: {{start: {EVAL[0]}, stop: {EVAL[1]}}}, "
    f"ridge: {{start: {RIDGE[0]}, stop: {RIDGE[1]}}}}}}}",
    "decode={backend: hf, max_new_tokens: 48, n_samples: 2}",
    "ridge={n_min: 8, n_points: 2}",
]
PAPER_IDS = {
    style: {"base": base, "av": av, "ar": ar} for style, _k, base, av, ar in PAPER_FAMILIES.values()
}


def run(workdir: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-8000:]}")
    return proc


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-rehearsal")
    cache = root / "hub"
    commits = build_paper_cache(
        cache, root / "build", real=[(EVAL[0], EVAL[0] + 16), (RIDGE[0], RIDGE[0] + 16)],
        total=RIDGE[0] + 16,
    )  # fmt: skip
    workdir = copy_workflow(root / "wf")
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(root / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    refused = run(
        workdir, env, "-m", "snakemake", "-n", "--configfile", "config/paper.yaml", check=False
    )
    run(workdir, env, "-m", "nlaprobe", "pin", "config/paper.yaml", "--out", "config/pinned.yaml")
    proc = run(
        workdir, env, "-m", "snakemake", "--cores", "2", "--configfile", "config/pinned.yaml",
        "--config", *OVERRIDES,
    )  # fmt: skip
    return {"workdir": workdir, "commits": commits, "refused": refused, "run": proc, "env": env}


def results(workdir: Path, name: str) -> dict:
    return json.loads((workdir / "results" / f"{name}.json").read_text())


def test_unpinned_paper_config_is_refused_and_pin_fixes_it(rehearsal):
    assert rehearsal["refused"].returncode != 0
    assert "nlaprobe pin config/paper.yaml" in rehearsal["refused"].stdout
    workdir, commits = rehearsal["workdir"], rehearsal["commits"]
    pinned = load_config([workdir / "config" / "pinned.yaml"])
    assert floating_revisions(pinned) == []
    for fam, ids in PAPER_IDS.items():
        for role, repo in ids.items():
            assert pinned["families"][fam][role]["revision"] == commits[repo]
    assert pinned["corpus"]["revision"] == commits[DATASET]
    # apart from the pins, the file is config/paper.yaml
    orig = (workdir / "config" / "paper.yaml").read_text().splitlines()
    new = (workdir / "config" / "pinned.yaml").read_text().splitlines()
    assert [a for a, b in zip(orig, new, strict=True) if a != b] == ["  revision: main"] + [
        "      revision: main"
    ] * 6


def test_every_aggregate_and_the_report_are_built(rehearsal):
    workdir = rehearsal["workdir"]
    for name in AGGREGATES:
        res = results(workdir, name)
        assert res["data"], name
        # meta names the paper's checkpoints with the pinned revisions
        for fam, ids in PAPER_IDS.items():
            for role, repo in ids.items():
                entry = res["meta"]["checkpoints"][fam][role]
                assert entry["id"] == repo
                assert entry["revision"] == rehearsal["commits"][repo]
    base = results(workdir, "fve_baseline")["data"]["families"]
    for fam in PAPER_IDS:
        # the trained stand-in AVs write their tags: real (meaningless) numbers, not nulls
        assert base[fam]["n"] > 0 and base[fam]["tag_failures"] < base[fam]["n"]
        assert base[fam]["fve_own"]["value"] is not None
        assert base[fam]["var_train"] == {"gemma": 0.0579, "qwen": 0.7335}[fam]
    layers = results(workdir, "layers")["data"]["families"]
    assert sorted(layers["gemma"]["adjacent"]) == ["40", "42"] and layers["qwen"]["adjacent"] == {}
    assert (workdir / "results" / "report.html").stat().st_size > 10_000


def test_documents_come_from_the_repo_split_at_absolute_indices(rehearsal):
    workdir = rehearsal["workdir"]
    (shard,) = (workdir / "results" / "corpus").glob("corpus-*/eval/shard-00000.parquet")
    t = pq.read_table(shard)
    assert t.column("doc_id").to_pylist() == [f"openbmb/Ultra-FineWeb:en:{i}" for i in range(*EVAL)]
    assert all(not x.startswith("Filler") for x in t.column("text").to_pylist())
    prov = json.loads(t.schema.metadata[b"nlaprobe.corpus"])
    assert prov["commit"] == rehearsal["commits"][DATASET] and prov["text_field"] == "content"


def test_every_artifact_records_the_commit_loaded(rehearsal):
    workdir, commits = rehearsal["workdir"], rehearsal["commits"]
    names = {}
    for sidecar in (workdir / "results" / "activations").glob("*/*/*.nla_meta.yaml"):
        base = yaml.safe_load(sidecar.read_text())["base_model"]
        names[base["name"]] = base["commit"]
    for kind, key in (("decodes", b"nlaprobe.decode"), ("scores", b"nlaprobe.score")):
        for shard in (workdir / "results" / kind).rglob("shard-*.parquet"):
            meta = json.loads(pq.read_schema(shard).metadata[key])
            entry = meta["av" if kind == "decodes" else "ar"]
            names[entry["name"]] = entry["commit"]
    assert names == {repo: c for repo, c in commits.items() if repo != DATASET}


def test_report_sets_the_published_figures_beside_the_run(rehearsal):
    html = (rehearsal["workdir"] / "results" / "report.html").read_text()
    # one comparison table per section, and the count at the top
    assert html.count("This run vs published</h3>") == len(AGGREGATES)
    assert "within this run's interval" in html
    assert "outside" in html  # tiny stand-ins: far from the paper's figures, as expected
