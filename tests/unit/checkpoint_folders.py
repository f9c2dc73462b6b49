"""Local checkpoint folders, shared by the fingerprint tests
(test_fingerprint.py) and the plan's "retrain in place" tests (test_plan.py)."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_FILES = {
    "config.json": b'{"model_type": "qwen2"}',
    "tokenizer.json": b'{"version": "1.0"}',
    "nla_meta.yaml": b"kind: nla_model\n",
    "model.safetensors": b"weights-0",
}


def write_checkpoint(folder: Path, **files: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in {**CHECKPOINT_FILES, **files}.items():
        (folder / name).write_bytes(data)
    return folder
