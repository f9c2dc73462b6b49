"""Unit tests of nlaprobe.scaling (the E8 training-size curve): the log-spaced sizes and the
crossover of the fitted line with the text route, against values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nlaprobe import scaling as S


def test_log_spaced_sizes_by_hand():
    assert S.log_spaced_sizes(4000, 5, 250) == [250, 500, 1000, 2000, 4000]
    # 10, 10^(5/3) = 46.4, 10^(7/3) = 215.4, 1000
    assert S.log_spaced_sizes(1000, 4, 10) == [10, 46, 215, 1000]
    # 1, 1.29, 1.67, 2.15, 2.78, 3.59, 4.64, 5.99, 7.74, 10 -> duplicates dropped
    assert S.log_spaced_sizes(10, 10, 1) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert S.log_spaced_sizes(100, 5, 200) == [100]
    assert S.log_spaced_sizes(100, 1, 10) == [100]
    with pytest.raises(ValueError, match="n_points must be an integer >= 1"):
        S.log_spaced_sizes(100, 0, 10)


def test_crossover_on_an_exact_line():
    # fve = 0.1 + 0.1 log10(n): target 0.8 at n = 10^7
    out = S.crossover([100, 1000, 10000], [0.3, 0.4, 0.5], 0.8)
    assert out["status"] == "extrapolated"
    assert out["slope"] == pytest.approx(0.1, rel=1e-12)
    assert out["intercept"] == pytest.approx(0.1, rel=1e-12)
    assert out["log10_n_cross"] == pytest.approx(7.0, rel=1e-12)
    assert out["n_cross"] == pytest.approx(1e7, rel=1e-9)


def test_crossover_reached_is_the_smallest_observed_n():
    out = S.crossover([100, 1000, 10000], [0.3, 0.4, 0.5], 0.35)
    assert out["status"] == "reached"
    assert out["n_cross"] == 1000.0
    assert out["slope"] == pytest.approx(0.1, rel=1e-12)
    # a falling curve that starts above the target still reached it (at its first point)
    out = S.crossover([100, 1000], [0.9, 0.2], 0.5)
    assert (out["status"], out["n_cross"]) == ("reached", 100.0)


@pytest.mark.parametrize(
    "ns, fves, slope",
    [
        ([100, 1000, 10000], [0.3, 0.3, 0.3], 0.0),  # flat
        ([100, 1000, 10000], [0.5, 0.4, 0.3], -0.1),  # falling
        ([100, 100], [0.2, 0.3], None),  # one distinct n: no line
    ],
)
def test_crossover_never(ns, fves, slope):
    out = S.crossover(ns, fves, 0.6)
    assert out["status"] == "never"
    assert out["n_cross"] is None and out["log10_n_cross"] is None
    if slope is None:
        assert out["slope"] is None and out["intercept"] is None
    else:
        assert out["slope"] == pytest.approx(slope, abs=1e-12)


def test_crossover_beyond_float_range_keeps_the_exponent():
    # slope 1e-5 per decade from 0.1 at n = 10: 0.9 needs 8e4 more decades
    out = S.crossover([10, 100], [0.1, 0.10001], 0.9)
    assert out["status"] == "extrapolated"
    assert out["n_cross"] == math.inf
    assert out["log10_n_cross"] == pytest.approx(1.0 + 0.8 / 1e-5, rel=1e-6)


def test_crossover_errors():
    with pytest.raises(ValueError, match="equal length"):
        S.crossover([1, 2], [0.1], 0.5)
    with pytest.raises(ValueError, match=r"ns\[1\] = 0.0; every n must be finite and > 0"):
        S.crossover([1, 0], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match=r"fves\[0\] = nan"):
        S.crossover([1, 2], [np.nan, 0.2], 0.5)
