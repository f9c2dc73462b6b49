"""Portable CPU kernels for the demo build: the same floating-point operations on every Intel
x86-64 CPU with AVX2, whatever kernels the CPU would otherwise select.

inputs -> outputs: the process environment before torch and numpy load -> the same environment
with each library's kernel dispatch pinned (`pin_portable_kernels`); once they have loaded, the
kernels actually in use (`kernels_in_use`) and whatever differs from the pin (`unpinned`).

Why: torch's own kernels (ATen), its BLAS (MKL), numpy's BLAS/LAPACK (OpenBLAS) and numpy's own
loops each pick kernels by the CPU they find at run time. Kernels of another vector width add in
another order, so the demo build trained different weights on another machine (docs/behaviour.md,
"The same demo models on another x86-64 machine", has the measured effect of each library and
the cost of the pin).

Invariants: a variable takes effect only if it is set before its library loads, so
`pin_portable_kernels` refuses to run once torch or numpy is imported; the pin overrides what the
environment says (a user's own `ATEN_CPU_CAPABILITY` included), so the build depends neither on
the CPU nor on the shell. The pinned levels need AVX2 and FMA (every x86-64 server CPU since 2013
to 2015); on a CPU without them a library falls back to its own choice, and `unpinned` names it.
MKL documents its AVX2 branch as reproducible across Intel CPUs; on other vendors' CPUs it takes
its automatic branch (oneMKL developer guide, "Getting Started with Conditional Numerical
Reproducibility"; measured on an AMD EPYC: `mkl_cbwr_get` reads AUTO under MKL_CBWR=AVX2,STRICT),
so there the build is reproducible on that CPU model only, and `unpinned` names MKL's branch.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

# numpy's dispatch targets above AVX2 (names unknown to a numpy build, or unsupported by the CPU,
# are ignored; disabling AVX512F alone leaves its successors enabled, so all are listed)
NUMPY_ABOVE_AVX2 = (
    "AVX512F",
    "AVX512CD",
    "AVX512_KNL",
    "AVX512_KNM",
    "AVX512_SKX",
    "AVX512_CLX",
    "AVX512_CNL",
    "AVX512_ICL",
    "AVX512_SPR",
)

PORTABLE_ENV = {
    # ATen's vectorised kernels: the AVX2 build (the default CPU capability picks AVX512 here)
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL (torch's matmuls): conditional numerical reproducibility on the AVX2 code branch;
    # STRICT also makes gemm independent of data alignment and thread count
    "MKL_CBWR": "AVX2,STRICT",
    # oneDNN: not called by the demo build's float32 training (measured), pinned for any path
    # that does reach it
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # numpy's OpenBLAS (the AR value head's ridge init): Haswell kernels, one thread
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    # numpy's own SIMD loops (e.g. the norms giving the injection scale): nothing above AVX2
    "NPY_DISABLE_CPU_FEATURES": ",".join(NUMPY_ABOVE_AVX2),
}

# MKL's CNR constants (mkl_cbwr.h): the branch codes mkl_cbwr_get(MKL_CBWR_BRANCH) returns
MKL_CBWR_BRANCH = 1
MKL_CBWR_STRICT = 0x10000
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 10: "AVX2", 12: "AVX512"}
# the pinned settings as kernels_in_use reports them
PINNED = {
    "aten": "AVX2",
    "mkl": "AVX2,STRICT",
    "openblas": "Haswell",
    "numpy_above_avx2": "",
}


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """The CPU's vendor string as Linux reports it (`GenuineIntel`, `AuthenticAMD`, ...), from
    /proc/cpuinfo (or the text `cpuinfo`); "" when it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip()
    return ""


def pin_portable_kernels(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set PORTABLE_ENV in `environ` (default: this process's environment) and return the
    values it replaced (absent ones as ""). Raises RuntimeError when torch or numpy has
    already loaded in this process and `environ` is the process environment, since the pin
    would then be silently ignored."""
    if environ is None:
        loaded = [m for m in ("torch", "numpy") if m in sys.modules]
        if loaded:
            raise RuntimeError(
                f"pin_portable_kernels: {', '.join(loaded)} already imported; the kernel "
                "settings must be in the environment before they load"
            )
        environ = os.environ
    replaced = {k: environ.get(k, "") for k in PORTABLE_ENV}
    environ.update(PORTABLE_ENV)
    return replaced


def _mkl_setting() -> str:
    """MKL's active CNR branch (and ',STRICT'), read from the MKL linked into torch; 'unknown'
    when this torch build exports no MKL service functions."""
    import torch

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return "unknown"
    get.restype = ctypes.c_int
    get.argtypes = [ctypes.c_int]
    branch = MKL_BRANCHES.get(get(MKL_CBWR_BRANCH), f"code {get(MKL_CBWR_BRANCH)}")
    return branch + (",STRICT" if get(-1) & MKL_CBWR_STRICT else "")


def _openblas_core() -> str:
    """The kernel family numpy's OpenBLAS runs, read from the library numpy ships
    (numpy.libs/libscipy_openblas*); 'unknown' for a numpy linked otherwise."""
    import numpy

    libs = sorted((Path(numpy.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas*"))
    for path in libs:
        lib = ctypes.CDLL(str(path))
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return "unknown"


def kernels_in_use() -> dict[str, str]:
    """What this process runs: ATen's CPU capability, MKL's CNR setting, numpy's OpenBLAS
    kernel family and numpy's enabled dispatch targets above AVX2 (comma-separated)."""
    import torch
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return {
        "aten": torch.backends.cpu.get_cpu_capability(),
        "mkl": _mkl_setting(),
        "openblas": _openblas_core(),
        "numpy_above_avx2": ",".join(
            f for f in __cpu_dispatch__ if f in NUMPY_ABOVE_AVX2 and __cpu_features__[f]
        ),
    }


def unpinned(in_use: dict[str, str]) -> dict[str, str]:
    """The entries of `in_use` (kernels_in_use) that differ from the pin; 'unknown' entries
    (nothing to read them from) are not counted."""
    return {k: v for k, v in in_use.items() if v != "unknown" and v != PINNED[k]}
