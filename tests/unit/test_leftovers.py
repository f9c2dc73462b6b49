"""Leftovers after a kill (issue 14, item 8): a SIGKILL between the temporary write and the
rename leaves `.<name>.XXXXXXXX.tmp` beside the output; the next run of the job that owns the
output removes them at its start (also when it then fails), and nothing else."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

from nlaprobe.cli import main
from nlaprobe.io import DIGEST_KEY, atomic_path, remove_stale_temps

KILLED_WRITER = """
import os, signal, sys
from nlaprobe.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half a file")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(out: Path) -> list[Path]:
    """Run a writer that is SIGKILLed inside atomic_path; return what it left beside `out`."""
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    return sorted(out.parent.iterdir())


def test_a_killed_atomic_write_leaves_a_temp_that_the_owner_removes(tmp_path):
    out = tmp_path / "results" / ".stamps" / "fve_baseline-0123456789.json"
    (left,) = killed_write(out)
    assert left.name.startswith(f".{out.name}.") and left.name.endswith(".tmp")
    # another output's leftover and files that only look alike are not this job's
    other = out.parent / f".other.json{left.name.removeprefix('.' + out.name)}"
    other.write_text("x")
    lookalike = out.parent / f".{out.name}.notmine.tmp"
    lookalike.write_text("x")
    assert main(["stamp", "--params", json.dumps({"a": 1}), "--out", str(out)]) == 0
    assert {k: v for k, v in json.loads(out.read_text()).items() if k != DIGEST_KEY} == {"a": 1}
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, other.name, lookalike.name]
    )


def test_leftovers_go_even_when_the_job_then_fails(tmp_path, caplog):
    """extract owns its shard and the sidecar beside it; bad parameters fail the job after the
    clean-up (exit 2), leaving the folder empty."""
    caplog.set_level(logging.INFO)
    out = tmp_path / "shard-00000.parquet"
    sidecar = tmp_path / "shard-00000.nla_meta.yaml"
    killed_write(out)
    killed_write(sidecar)
    assert len(list(tmp_path.iterdir())) == 2
    args = ["extract", "--checkpoint", '{"path": "/nowhere"}', "--params", '{"layers": []}']
    assert main([*args, "--corpus", "c.parquet", "--out", str(out)]) == 2
    assert list(tmp_path.iterdir()) == []
    assert "left by an earlier run that was killed" in caplog.text


def test_remove_stale_temps_matches_what_atomic_path_creates(tmp_path):
    out = tmp_path / "a.b.parquet"
    with atomic_path(out) as tmp:
        tmp.write_text("x")
        assert remove_stale_temps(out) == [tmp]  # the name pattern is exactly mkstemp's
        tmp.write_text("y")  # the writer recreates it; the rename still completes
    assert out.read_text() == "y"
    assert remove_stale_temps(tmp_path / "missing-folder" / "x") == []
