"""The portable-kernel pin (nlaprobe.kernels): what it sets, when it refuses, what it reports."""

import numpy  # noqa: F401  (loaded, as in any process that already computed something)
import pytest

from nlaprobe.kernels import PINNED, PORTABLE_ENV, cpu_vendor, pin_portable_kernels, unpinned


def test_pin_sets_every_variable_over_the_environment_and_returns_what_it_replaced():
    env = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "HOME": "/home/x"}
    replaced = pin_portable_kernels(env)
    assert env == {**PORTABLE_ENV, "HOME": "/home/x"}
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["MKL_CBWR"] == "AVX2,STRICT"
    assert env["OPENBLAS_CORETYPE"] == "Haswell"
    assert replaced == {
        **dict.fromkeys(PORTABLE_ENV, ""),
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_CBWR": "AUTO",
    }


def test_pin_refuses_once_numpy_or_torch_is_loaded():
    # the process environment would change, but the loaded libraries would ignore it
    with pytest.raises(RuntimeError, match="numpy"):
        pin_portable_kernels()


def test_numpy_pin_lists_every_avx512_target():
    disabled = PORTABLE_ENV["NPY_DISABLE_CPU_FEATURES"].split(",")
    assert "AVX2" not in disabled and "FMA3" not in disabled
    assert {"AVX512F", "AVX512_SKX", "AVX512_ICL", "AVX512_SPR"} <= set(disabled)


def test_unpinned_names_what_differs_and_skips_what_cannot_be_read():
    assert unpinned(dict(PINNED)) == {}
    got = unpinned({**PINNED, "aten": "AVX512", "mkl": "unknown", "numpy_above_avx2": "AVX512F"})
    assert got == {"aten": "AVX512", "numpy_above_avx2": "AVX512F"}
    assert unpinned({**PINNED, "mkl": "OFF", "openblas": "SkylakeX"}) == {
        "mkl": "OFF",
        "openblas": "SkylakeX",
    }


def test_cpu_vendor_reads_the_first_vendor_line():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\nvendor_id\t: Other\n"
    assert cpu_vendor(text) == "AuthenticAMD"
    assert cpu_vendor("processor\t: 0\n") == ""
