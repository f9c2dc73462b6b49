"""GPU leases: each model job on its own device(s) when Snakemake runs several at once.

inputs -> outputs: a count of GPUs a job asked the scheduler for (`--gpus {resources.gpu}`),
the devices visible to the job (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`) -> a lease on that
many of them, which the job exports as its CUDA_VISIBLE_DEVICES before torch or vLLM starts.

Snakemake's local executor counts a `gpu` resource (`--resources gpu=8` runs jobs whose `gpu`
requests sum to at most 8) but gives a job no slot number to tell its devices from those of
the jobs beside it. Here each device is a lock file, `.snakemake/nlaprobe-gpus/<host>/<id>.lock`
under the working directory: a job takes devices whose file it can `flock` (exclusive,
non-blocking) and holds the locks until it exits; the kernel releases them when the process
ends, also when it is killed, so no lease outlives its job and none is left to clean up.

Invariants:
- two live leases never share a device (the locks are exclusive);
- a job takes all of its devices or none: when fewer than it needs are free it releases what
  it took and waits, so two jobs never hold half of what each needs (no deadlock);
- a count above the visible devices is an error at once (it could never be met), naming the
  config key that asked for it;
- under Slurm (SLURM_JOB_ID set) the scheduler has already bound the job's devices, and with
  no device visible (a CPU machine) there is nothing to lease: both run without a lease.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nlaprobe.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_ROOT = Path(".snakemake") / "nlaprobe-gpus"
POLL_S = 0.5
WAIT_LOG_S = 60.0


def visible_devices(env: Mapping[str, str] | None = None) -> list[str]:
    """The devices a job may use: the entries of CUDA_VISIBLE_DEVICES when it is set (indices,
    UUIDs or MIG ids, kept as given; set but empty means none), else the indices of the GPUs
    `nvidia-smi -L` lists, else none."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def _lock_name(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".lock"


@dataclass
class Lease:
    """Devices held by this process; `release` (or the process's exit) frees them."""

    devices: list[str]
    _files: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for f in self._files:
            f.close()  # closing the descriptor drops its flock
        self._files.clear()


def _try_lock(path: Path):
    f = open(path, "a+")  # noqa: SIM115  (held open for the lease's lifetime)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def try_lease(count: int, devices: list[str], lock_dir: Path) -> Lease | None:
    """One attempt: `count` of `devices` whose locks are free, in their order, or None (and
    nothing held) when fewer are free."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    taken, files = [], []
    for device in devices:
        f = _try_lock(lock_dir / _lock_name(device))
        if f is None:
            continue
        taken.append(device)
        files.append(f)
        if len(taken) == count:
            return Lease(taken, files)
    for f in files:
        f.close()
    return None


def lease_gpus(
    count: int,
    *,
    env: Mapping[str, str] | None = None,
    lock_root: Path = LOCK_ROOT,
    what: str = "the job's `gpu` resource",
    timeout_s: float | None = None,
) -> Lease | None:
    """A lease on `count` free visible devices, waiting while they are taken (at most
    `timeout_s` seconds, None: without end); None when there is nothing to lease (count 0,
    under Slurm, or no device visible). `what` names the setting that asked for `count`, for
    the error when it exceeds the visible devices."""
    env = os.environ if env is None else env
    if count <= 0:
        return None
    if env.get("SLURM_JOB_ID"):
        log.info("GPUs: Slurm job %s, devices bound by Slurm", env["SLURM_JOB_ID"])
        return None
    devices = visible_devices(env)
    if not devices:
        log.info("GPUs: none visible, %d requested: no lease (the job runs as configured)", count)
        return None
    if count > len(devices):
        raise ConfigError(
            f"{what} asks for {count} GPUs, but {len(devices)} are visible ({','.join(devices)})"
        )
    lock_dir = lock_root / socket.gethostname()
    start, logged = time.monotonic(), None
    while True:
        lease = try_lease(count, devices, lock_dir)
        if lease is not None:
            log.info("GPUs: leased %s of %s", ",".join(lease.devices), ",".join(devices))
            return lease
        now = time.monotonic()
        if timeout_s is not None and now - start > timeout_s:
            raise ConfigError(
                f"{what}: no {count} of the GPUs {','.join(devices)} became free in "
                f"{timeout_s:.0f} s (locks under {lock_dir})"
            )
        if logged is None or now - logged >= WAIT_LOG_S:
            log.info("GPUs: waiting for %d free of %s (locks under %s)", count, devices, lock_dir)
            logged = now
        time.sleep(POLL_S)
