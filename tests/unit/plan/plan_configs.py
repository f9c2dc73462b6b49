"""The two shipped configs, validated, for the plan's unit tests (tests/unit/plan/)."""

from __future__ import annotations

from pathlib import Path

from nlaprobe.config import read_config_file, validate_config

REPO = Path(__file__).resolve().parents[3]
CONFIGS = {"default": REPO / "config" / "config.yaml", "paper": REPO / "config" / "paper.yaml"}


def config(name: str) -> dict:
    return validate_config(read_config_file(CONFIGS[name]), source=name)
