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
    from nlaprobe.corpus import pydoc_documents

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
