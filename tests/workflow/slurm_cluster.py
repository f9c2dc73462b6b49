"""A one-node Slurm for the workflow tests: Debian's slurm-wlm and munge, run as root, without
accounting (../shared/recipes/slurm-one-node.md, checked on the CI machine kind).

`start(root)` writes /etc/slurm/slurm.conf (the path every Slurm command, and `srun` inside a
job, reads: the jobstep executor strips SLURM_CONF from the job's environment), a private munge
key and socket under `root`, starts munged, slurmctld and slurmd in the foreground as children
of the test (their pids are ours), waits until `sinfo` shows the node idle and returns a
`Cluster`. `Cluster.stop()` cancels what is left in the queue, stops the three daemons by pid
and removes the slurm.conf it wrote. An existing /etc/slurm/slurm.conf (a real cluster's) is
never overwritten: `unavailable()` names it as the reason to skip.

`MinJobAge` keeps finished jobs in slurmctld for an hour, so `squeue --states=all` (the status
command of profiles/slurm) and `Cluster.jobs()` see every job of a run: the scheduler's own
record of what was submitted, independent of Snakemake's log.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by nlaprobe tests/workflow/slurm_cluster.py"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "srun")
PARTITION = "main"
# what docs/running.md's cluster section and the issue assume: a node smaller than the paper needs
NODE_MEM_MB = 20000


def unavailable() -> str | None:
    """Why a one-node Slurm cannot be started here, or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (
            f"Slurm/munge binaries missing: {', '.join(missing)} "
            "(Debian: apt-get install -y slurm-wlm munge; .ci/run installs them)"
        )
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd and munged needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no `munge` user (installed with Debian's munge package)"
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
        return f"{SLURM_CONF} exists and was not written by this test; not overwriting it"
    return None


def memory_mb(text: str) -> int | None:
    """squeue's MIN_MEMORY (`1300M`, `20G`) in MB."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text.strip())
    if not m:
        return None
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "": 1}[m.group(2)]
    return round(float(m.group(1)) * scale)


def minutes(text: str) -> int | None:
    """squeue's TIME_LIMIT (`10:00`, `1:00:00`, `1-00:00:00`) in minutes."""
    days, _, clock = text.strip().rpartition("-")
    parts = [int(p) for p in clock.split(":")] if re.fullmatch(r"[\d:]+", clock) else None
    if not parts:
        return None
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_memory_mb() -> int:
    """NODE_MEM_MB, or 80% of this machine's memory if that is less (slurmd refuses a node
    configured with more memory than it has)."""
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return min(NODE_MEM_MB, int(total_kb / 1024 * 0.8) // 1000 * 1000)


def slurm_conf(root: Path, host: str, cpus: int, mem_mb: int, munge_socket: Path) -> str:
    return f"""{MARKER}
ClusterName=nlaprobe-test
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    root: Path
    host: str
    cpus: int
    mem_mb: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-o", "%T", check=False).strip()

    def jobs(self) -> list[dict]:
        """Every job slurmctld knows (pending, running and, thanks to MinJobAge, finished), in
        submission order: id, name (Snakemake's run id), comment (rule and wildcards), state,
        and what it requested: mem_mb, minutes (time limit), cpus."""
        out = self.run("squeue", "--states=all", "-h", "-o", "%i|%j|%k|%T|%m|%l|%C")
        rows = []
        for line in out.splitlines():
            jobid, name, comment, state, mem, limit, cpus = line.split("|")
            rows.append(
                {
                    "id": jobid,
                    "name": name,
                    "comment": comment,
                    "state": state,
                    "mem_mb": memory_mb(mem),
                    "minutes": minutes(limit),
                    "cpus": int(cpus),
                }
            )
        return sorted(rows, key=lambda r: int(r["id"]))

    def log(self, name: str) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Cancel every job left, stop slurmd, slurmctld and munged by their pids, remove the
        slurm.conf this cluster wrote and its directory."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--partition", PARTITION, check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    live = [j for j in self.jobs() if j["state"] in ("PENDING", "RUNNING")]
                except RuntimeError:
                    break
                if not live:
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text(errors="replace"):
            SLURM_CONF.unlink()
        shutil.rmtree(self.root, ignore_errors=True)


def _spawn(cluster: Cluster, name: str, cmd: list[str], **kw) -> None:
    log = (cluster.root / "log" / f"{name}.out").open("w")
    cluster.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
    log.close()


def _wait(what: str, ok, cluster: Cluster, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited {proc.returncode} while waiting for {what}:\n"
                    + cluster.log(f"{name}.out")[-3000:]
                    + cluster.log(f"{name}.log")[-3000:]
                )
        if ok():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s")


def start(cpus: int | None = None, mem_mb: int | None = None) -> Cluster:
    """Start munged, slurmctld and slurmd for a one-node cluster of this machine."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    # its own directory under /tmp (not pytest's, which the munge user cannot enter)
    root = Path(tempfile.mkdtemp(prefix="nlaprobe-slurm-", dir="/tmp"))
    root.chmod(0o755)
    host = socket.gethostname().split(".")[0]
    cluster = Cluster(
        root=root, host=host, cpus=cpus or os.cpu_count() or 1, mem_mb=mem_mb or node_memory_mb()
    )
    try:
        for sub in ("state", "spool", "log"):
            (root / sub).mkdir()
        munge = root / "munge"
        munge.mkdir()
        munge.chmod(0o755)  # munged wants its socket directory searchable by all
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        uid, gid = pwd.getpwnam("munge").pw_uid, grp.getgrnam("munge").gr_gid
        for p in (munge, key):
            os.chown(p, uid, gid)
        sock = munge / "munge.socket"
        _spawn(
            cluster,
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={munge}/munged.pid",
                f"--seed-file={munge}/munged.seed",
                f"--log-file={munge}/munged.log",
            ],
            user=uid,
            group=gid,
        )
        _wait("the munge socket", sock.exists, cluster, timeout=30)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(slurm_conf(root, host, cluster.cpus, cluster.mem_mb, sock))
        _spawn(cluster, "slurmctld", ["slurmctld", "-D", "-c", "-i"])
        _spawn(cluster, "slurmd", ["slurmd", "-D", "-N", host])
        _wait("the node idle in sinfo", lambda: cluster.node_state() == "idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster
