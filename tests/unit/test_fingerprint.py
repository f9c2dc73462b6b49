"""Unit tests of nlaprobe.fingerprint: a local checkpoint's content fingerprint (what a load
reads, wherever the folder is) and its cache, which re-hashes only files whose size or timestamps
changed. What a moved fingerprint reruns is the plan's (test_plan.py, "retrain in place")."""

from __future__ import annotations

from checkpoint_folders import CHECKPOINT_FILES, write_checkpoint


def hashed_names(monkeypatch) -> list[str]:
    """The names of the files fingerprint hashes from now on, in order (it still hashes them)."""
    from nlaprobe import fingerprint

    hashed: list[str] = []
    real = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    return hashed


def test_remote_code_is_content_only_for_an_entry_that_trusts_it(tmp_path, fingerprints):
    from nlaprobe.fingerprint import checkpoint_fingerprint

    folder = write_checkpoint(tmp_path / "ckpt")
    plain = checkpoint_fingerprint(str(folder), where="k")
    trusted = checkpoint_fingerprint(str(folder), where="k", remote_code=True)
    (folder / "modeling_x.py").write_text("code")
    assert checkpoint_fingerprint(str(folder), where="k") == plain
    assert checkpoint_fingerprint(str(folder), where="k", remote_code=True) != trusted


def test_same_bytes_give_the_same_fingerprint_anywhere(tmp_path, fingerprints):
    from nlaprobe.fingerprint import checkpoint_fingerprint

    a = checkpoint_fingerprint(str(write_checkpoint(tmp_path / "a")), where="k")
    b = checkpoint_fingerprint(str(write_checkpoint(tmp_path / "elsewhere" / "b")), where="k")
    assert a == b and a["files"] == len(CHECKPOINT_FILES) and len(a["sha256"]) == 64


def test_the_cache_hashes_only_files_whose_size_or_times_changed(
    tmp_path, fingerprints, monkeypatch
):
    from nlaprobe import fingerprint

    folder = write_checkpoint(tmp_path / "ckpt")
    hashed = hashed_names(monkeypatch)
    monkeypatch.setattr(fingerprint, "RACY_SECONDS", -1.0)  # the files are seconds old

    first = fingerprint.checkpoint_fingerprint(str(folder), where="k")
    assert sorted(hashed) == sorted(CHECKPOINT_FILES) and fingerprints.exists()
    hashed.clear()
    monkeypatch.setattr(fingerprint, "_caches", {})  # a new process: read from the file
    assert fingerprint.checkpoint_fingerprint(str(folder), where="k") == first
    assert hashed == []
    (folder / "model.safetensors").write_bytes(b"weights-2")
    assert fingerprint.checkpoint_fingerprint(str(folder), where="k") != first
    assert hashed == ["model.safetensors"]


def test_a_just_written_file_is_hashed_until_its_timestamps_settle(
    tmp_path, fingerprints, monkeypatch
):
    from nlaprobe import fingerprint

    folder = write_checkpoint(tmp_path / "ckpt")
    hashed = hashed_names(monkeypatch)
    fingerprint.checkpoint_fingerprint(str(folder), where="k")
    fingerprint.checkpoint_fingerprint(str(folder), where="k")
    assert len(hashed) == 2 * len(CHECKPOINT_FILES)  # seconds old: never trusted to the cache
