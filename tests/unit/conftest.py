"""Fixtures shared by several unit test modules (the session-wide ones are in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def fingerprints(tmp_path, monkeypatch):
    """A fresh fingerprint cache file for the test (and no process-wide memory of others): for
    test_fingerprint.py and the plan's "retrain in place" tests in test_plan.py."""
    from nlaprobe import fingerprint

    cache = tmp_path / "cache" / "fingerprints.json"
    monkeypatch.setenv(fingerprint.CACHE_ENV, str(cache))
    monkeypatch.setattr(fingerprint, "_caches", {})
    return cache
