"""Shared fixtures: tiny release-layout NLA families built once per session, offline mode, and
seeded RNGs for every test."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

# Nothing is ever fetched at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (and vLLM)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything():
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def fixture_texts() -> list[str]:
    from nlaprobe.documents import pydoc_documents

    return [text for _topic, text in pydoc_documents()]


def _build(tmp_path_factory, style: str, texts, **kw) -> Path:
    from nlaprobe.fixtures import TinySizes, build_family

    out = tmp_path_factory.mktemp(f"family-{style}") / style
    return build_family(style, out, texts, sizes=TinySizes(vocab_size=512), layer=2, **kw)


@pytest.fixture(scope="session")
def qwen_family(tmp_path_factory, fixture_texts) -> Path:
    """Qwen2-style family: base/, av/, ar/ (K=2 of 4 layers, d=64)."""
    return _build(tmp_path_factory, "qwen", fixture_texts)


@pytest.fixture(scope="session")
def gemma_family(tmp_path_factory, fixture_texts) -> Path:
    """Gemma3-style family; base/ is the multimodal Gemma3ForConditionalGeneration wrapper,
    av/ and ar/ are text-only gemma3_text."""
    return _build(tmp_path_factory, "gemma", fixture_texts)


@pytest.fixture(scope="session")
def legacy_family(tmp_path_factory, fixture_texts) -> Path:
    """Gemma3-style family with a text-only base and the older sidecar key names."""
    return _build(
        tmp_path_factory, "gemma", fixture_texts, multimodal_base=False, legacy_sidecar=True
    )


@pytest.fixture
def copy_dir(tmp_path):
    """Copy a checkpoint folder into tmp_path so a test may corrupt it."""

    def _copy(src: Path, name: str = "ckpt") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return _copy


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fingerprints(tmp_path, monkeypatch):
    """A fresh fingerprint cache file for the test (and no process-wide memory of others): for
    test_fingerprint.py and the plan's "retrain in place" tests in test_plan.py."""
    from nlaprobe import fingerprint

    cache = tmp_path / "cache" / "fingerprints.json"
    monkeypatch.setenv(fingerprint.CACHE_ENV, str(cache))
    monkeypatch.setattr(fingerprint, "_caches", {})
    return cache


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A function (repo, files, commit) that puts `files` into an HF hub cache as snapshot
    `commit` of `repo` (refs/main -> commit), and the cache in use, offline.

    huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE into `huggingface_hub.constants` at
    import; both transformers 5 and huggingface_hub 2 look the constants up at call time, so
    patching the constants (besides the environment, for subprocesses) is what takes effect."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    def add(repo: str, files: Path, commit: str = HUB_COMMIT, repo_type: str = "model") -> Path:
        from nlaprobe.fixtures import add_to_hub_cache

        add_to_hub_cache(cache, repo, files, commit, repo_type=repo_type)
        return cache

    return add


# ----------------------------------------------------------------------------- trained AVs
# The vLLM tests need AVs that write `<explanation>` tags: tiny demo families trained briefly
# (nlaprobe.demo, the reduced default's recipe and sizes) with one attention head, so the head
# size is 32, which vLLM's CPU attention supports (it has no kernel for 8 or 16). Built once per
# session, only when asked for.

TRAINED_EVAL_DOCS = 40  # documents 0..39: held out from training, the eval rows of the tests
TRAINED_LAYER = 2
TRAINED_DEMO = {
    "vocab_size": 512,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 1,
    "num_kv_heads": 1,
    "max_position_embeddings": 1024,
    "seed": 0,
    "train": {
        "base_steps": 20,
        "av_steps": 150,
        "av_lr": 0.005,
        "ar_steps": 40,
        "positions_per_doc": 4,
        "ar_mix": True,
        "ar_mix_rows": 256,
    },
}
TRAINED_SAMPLING = {"seed": 42, "positions_per_doc": 4, "min_position": 16, "max_length": 256}


def build_trained_family(style: str, root: Path) -> dict:
    """A trained tiny family under `root/<style>` and the activations of its eval documents:
    {"family": dir with base/av/ar, "corpus": corpus shard, "acts": activation shard}."""
    from nlaprobe.checkpoints import resolve_source
    from nlaprobe.corpus import CorpusParams, build_corpus_shard
    from nlaprobe.demo import DemoParams, build_demo
    from nlaprobe.extract import ExtractParams, extract_shard

    fam = build_demo(
        style,
        root / style,
        DemoParams.from_json(
            {**TRAINED_DEMO, "layer": TRAINED_LAYER, "held_out": [[0, TRAINED_EVAL_DOCS]]}
        ),
    )
    corpus = {
        "source": "builtin",
        "dataset": "pydoc",
        "dataset_split": "topics",
        "shard_docs": TRAINED_EVAL_DOCS,
        "splits": {"eval": {"start": 0, "stop": TRAINED_EVAL_DOCS}},
    }
    shard = root / f"{style}-corpus.parquet"
    build_corpus_shard(CorpusParams.from_json(corpus), "eval", 0, shard)
    acts = root / f"{style}-acts.parquet"
    extract_shard(
        resolve_source({"path": str(fam / "base"), "dtype": "float32"}, "base"),
        shard,
        acts,
        ExtractParams.from_json({"layers": [TRAINED_LAYER], **TRAINED_SAMPLING}),
    )
    return {"family": fam, "corpus": shard, "acts": acts}


def _build_trained_family_1_thread(style: str, root: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    return build_trained_family(style, root)


@pytest.fixture(scope="session")
def trained_families(tmp_path_factory) -> dict[str, dict]:
    """Both families, trained side by side in two spawned processes of one thread each (a tiny
    model gains little from a second thread; the two builds gain a core each)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    root = tmp_path_factory.mktemp("trained")
    styles = ("qwen", "gemma")
    with ProcessPoolExecutor(len(styles), mp_context=multiprocessing.get_context("spawn")) as pool:
        built = list(pool.map(_build_trained_family_1_thread, styles, [root] * len(styles)))
    return dict(zip(styles, built, strict=True))


@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    """One local run of the reduced default (every aggregate and the report) on 2 cores, once
    per session: test_workflow checks it, test_slurm compares the cluster's `data` with it.
    (Here rather than in tests/workflow/conftest.py: a second module named `conftest` shadows
    this one for pickle, which the spawned family builds above need.)"""
    import sys
    import time

    sys.path.insert(0, str(Path(__file__).parent / "workflow"))
    from workflow_common import Run, copy_workflow, snakemake, write_config

    workdir = copy_workflow(tmp_path_factory.mktemp("real") / "wf")
    plan = write_config(workdir, "reduced.yaml")
    start = time.monotonic()
    snakemake(workdir, "--cores", "2", "--configfile", "reduced.yaml")
    seconds = time.monotonic() - start
    print(f"\nreduced default run: {seconds:.1f} s on 2 cores")
    return Run(workdir, plan, seconds)
