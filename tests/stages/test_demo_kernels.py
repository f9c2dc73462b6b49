"""The demo build runs the portable CPU kernels (nlaprobe.kernels), whatever kernels the machine
or the environment would pick: `nlaprobe build-demo` on this CPU as it is and on an emulated
older one (ATen's dispatch level, MKL's code branch, numpy's OpenBLAS kernels and SIMD loops)
trains bit-identical weights, while the same build without the pin trains different ones under
the same two environments (so the environments do emulate a difference that matters). On a CPU
that is not Intel's, MKL keeps its automatic branch under the pin (MKL_CBWR=AVX2 is honoured on
Intel CPUs only): the weights are still identical across the emulated levels, and the build's
log says which kernel is not the portable one and why."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nlaprobe.kernels import NUMPY_ABOVE_AVX2, PORTABLE_ENV, cpu_vendor

TINY = {
    "vocab_size": 512,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 3,
    "num_heads": 1,
    "num_kv_heads": 1,
    "seed": 0,
    "layer": 1,
    "held_out": [[0, 360]],  # train on the last few documents only: seconds
    "train": {
        "base_steps": 6,
        "av_steps": 4,
        "ar_steps": 4,
        "positions_per_doc": 4,
        "ar_mix": True,
        "ar_mix_rows": 8,
    },
}
# two machines as the libraries see them: this CPU as it is (AVX-512 on the CI machine), and an
# older one
MACHINES = {
    "this": {"MKL_CBWR": "AUTO"},
    "older": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "OPENBLAS_CORETYPE": "Prescott",
        "NPY_DISABLE_CPU_FEATURES": ",".join(NUMPY_ABOVE_AVX2 + ("AVX2", "FMA3")),
    },
}
UNPINNED_BUILD = (
    "import json, sys, torch; from pathlib import Path; "
    "from nlaprobe.demo import DemoParams, build_demo; torch.set_num_threads(1); "
    "build_demo('qwen', Path(sys.argv[2]), DemoParams.from_json(json.loads(sys.argv[1])))"
)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}


pytestmark = pytest.mark.skipif(
    not {"avx2", "fma"} <= _cpu_flags(),
    reason="the portable kernels need an x86-64 CPU with AVX2 and FMA (read from Linux's cpuinfo)",
)


def _weights_digest(family: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(family.rglob("*.safetensors")):
        h.update(str(f.relative_to(family)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _build(tmp_path: Path, name: str, machine: dict, pinned: bool) -> tuple[str, str]:
    """(weights digest, log) of a tiny qwen build in a fresh process under `machine`."""
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    env.update(machine)
    out = tmp_path / name
    params = json.dumps(TINY)
    if pinned:
        cmd = [sys.executable, "-m", "nlaprobe", "--threads", "1", "build-demo", "--style", "qwen"]
        cmd += ["--params", params, "--out", str(out)]
    else:
        cmd = [sys.executable, "-c", UNPINNED_BUILD, params, str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return _weights_digest(out), p.stderr


def test_build_demo_trains_identical_weights_on_emulated_cpus(tmp_path):
    runs = [(m, pinned) for pinned in (True, False) for m in MACHINES]
    with ThreadPoolExecutor(2) as pool:
        done = list(
            pool.map(
                lambda r: _build(tmp_path, f"{r[0]}-{r[1]}", MACHINES[r[0]], r[1]),
                runs,
            )
        )
    got = dict(zip(runs, done, strict=True))
    pinned = [got[(m, True)] for m in MACHINES]
    unpinned = [got[(m, False)] for m in MACHINES]
    # without the pin, the two environments train different weights ...
    assert unpinned[0][0] != unpinned[1][0]
    assert "CPU kernels not the portable ones" in unpinned[1][1]
    # ... with it (the CLI), identical ones, and the log names the kernels it ran
    assert pinned[0][0] == pinned[1][0]
    vendor = cpu_vendor()
    for _digest, log in pinned:
        if vendor == "GenuineIntel":
            assert (
                "portable CPU kernels: aten AVX2, mkl AVX2,STRICT, openblas Haswell, "
                "numpy_above_avx2 -" in log
            )
        else:
            # MKL ignores the AVX2 branch here; everything else is pinned
            assert (
                "CPU kernels not the portable ones (mkl AUTO,STRICT): this build may differ on "
                f"another CPU; MKL honours its AVX2 branch on Intel CPUs only (this CPU: {vendor})"
                in log
            ), log[-2000:]
    if "avx512f" in _cpu_flags():
        # this CPU's own kernels (AVX-512) are not the pinned ones: the pin chose the kernels
        assert pinned[0][0] not in {d for d, _ in unpinned}
