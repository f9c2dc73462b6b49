"""GPU leases (nlaprobe.devices): exclusive, all-or-none, released with the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nlaprobe.devices import lease_gpus, try_lease, visible_devices
from nlaprobe.errors import ConfigError


def test_visible_devices_follow_cuda_visible_devices():
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0,1, 3"}) == ["0", "1", "3"]
    uuid = "GPU-8e3c1b2a-0000-1111-2222-333344445555"
    assert visible_devices({"CUDA_VISIBLE_DEVICES": uuid}) == [uuid]
    # set but empty: CUDA sees no device
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_leases_are_exclusive_and_released(tmp_path):
    devices = ["0", "1", "2"]
    a = try_lease(1, devices, tmp_path)
    b = try_lease(2, devices, tmp_path)
    assert a.devices == ["0"] and b.devices == ["1", "2"]
    assert try_lease(1, devices, tmp_path) is None  # all three held
    b.release()
    c = try_lease(2, devices, tmp_path)
    assert c.devices == ["1", "2"]
    a.release()
    c.release()


def test_a_lease_is_all_or_none(tmp_path):
    devices = ["0", "1"]
    a = try_lease(1, devices, tmp_path)
    # one device free, two wanted: nothing taken, so the free one stays free
    assert try_lease(2, devices, tmp_path) is None
    d = try_lease(1, devices, tmp_path)
    assert d.devices == ["1"]
    a.release()
    d.release()


def test_the_kernel_releases_a_dead_process_lease(tmp_path):
    """A job killed without cleanup leaves its lock file, not its lock."""
    code = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from nlaprobe.devices import try_lease
        lease = try_lease(2, ["0", "1"], Path({str(tmp_path)!r}))
        print(",".join(lease.devices), flush=True)
        sys.stdin.readline()
        os._exit(9)  # no release, no finaliser
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "0,1"
    assert try_lease(1, ["0", "1"], tmp_path) is None  # held by the child
    child.communicate("\n", timeout=30)
    assert child.returncode == 9
    lease = try_lease(2, ["0", "1"], tmp_path)
    assert lease.devices == ["0", "1"]
    lease.release()


def test_lease_gpus_sets_nothing_when_there_is_nothing_to_lease(tmp_path):
    assert lease_gpus(0, env={"CUDA_VISIBLE_DEVICES": "0"}, lock_root=tmp_path) is None
    assert lease_gpus(1, env={"CUDA_VISIBLE_DEVICES": ""}, lock_root=tmp_path) is None
    slurm = {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "42"}
    assert lease_gpus(1, env=slurm, lock_root=tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # no lock taken


def test_lease_gpus_refuses_more_than_visible(tmp_path):
    with pytest.raises(ConfigError, match=r"decode\.tensor_parallel_size asks for 4 GPUs, but 2"):
        lease_gpus(
            4,
            env={"CUDA_VISIBLE_DEVICES": "0,1"},
            lock_root=tmp_path,
            what="decode.tensor_parallel_size",
        )


def test_lease_gpus_waits_for_a_free_device_and_times_out(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "5,7"}
    first = lease_gpus(2, env=env, lock_root=tmp_path)
    assert first.devices == ["5", "7"]
    with pytest.raises(ConfigError, match=r"no 1 of the GPUs 5,7 became free in 1 s"):
        lease_gpus(1, env=env, lock_root=tmp_path, timeout_s=1.0)
    first.release()
    again = lease_gpus(1, env=env, lock_root=tmp_path, timeout_s=1.0)
    assert again.devices == ["5"]
    again.release()
