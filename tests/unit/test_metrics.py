"""Unit tests of nlaprobe.metrics against hand-computed values (arithmetic written out)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from nlaprobe import metrics as M

R2 = math.sqrt(2.0)
R3 = math.sqrt(3.0)


def rand(shape, seed=0, offset=0.0):
    return np.random.default_rng(seed).normal(size=shape) + offset


# --- v_nrm, cos, nmse ---------------------------------------------------------------------------


def test_v_nrm_by_hand():
    # [3, 4]: norm 5, d = 2 -> [3/5, 4/5] * √2
    np.testing.assert_allclose(M.v_nrm([3.0, 4.0]), [0.6 * R2, 0.8 * R2])
    # rows [3, 4] and [0, 2]: [0, 2]/2 * √2 = [0, √2]
    out = M.v_nrm(np.array([[3.0, 4.0], [0.0, 2.0]]))
    np.testing.assert_allclose(out, [[0.6 * R2, 0.8 * R2], [0.0, R2]])
    # every row has squared norm d
    np.testing.assert_allclose((M.v_nrm(rand((7, 5))) ** 2).sum(axis=1), 5.0)


def test_v_nrm_keeps_float32_input_exact_in_float64():
    out = M.v_nrm(np.array([[3, 4]], dtype=np.float32))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.6 * R2, 0.8 * R2]], rtol=1e-15)


def test_cos_and_nmse_2d_by_hand():
    # p = [1, 0], g = [1, 1]: cos = 1/(1·√2) = 1/√2
    # p_nrm = [√2, 0], g_nrm = [1, 1]: nmse = ((√2 − 1)² + (0 − 1)²)/2 = (4 − 2√2)/2 = 2 − √2
    p, g = [1.0, 0.0], [1.0, 1.0]
    assert M.cos_rows(p, g) == pytest.approx(1 / R2, abs=1e-15)
    assert M.nmse_rows(p, g) == pytest.approx(2 - R2, abs=1e-15)
    assert 2 - R2 == pytest.approx(2 * (1 - 1 / R2), abs=1e-15)
    assert isinstance(M.cos_rows(p, g), float)


def test_cos_and_nmse_3d_by_hand():
    # p = [1, 2, 2] (norm 3), g = [0, 0, 5] (norm 5): cos = 10/15 = 2/3
    # p_nrm = √3·[1, 2, 2]/3, g_nrm = [0, 0, √3]; p_nrm − g_nrm = √3·[1/3, 2/3, −1/3]
    # nmse = 3·(1/9 + 4/9 + 1/9)/3 = 2/3 = 2(1 − 2/3)
    p = np.array([[1.0, 2.0, 2.0], [1.0, 0.0, 0.0]])
    g = np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 0.0]])
    np.testing.assert_allclose(M.cos_rows(p, g), [2 / 3, 1.0], atol=1e-15)
    np.testing.assert_allclose(M.nmse_rows(p, g), [2 / 3, 0.0], atol=1e-15)


def test_nmse_equals_two_one_minus_cos_on_random_data():
    p, g = rand((200, 17), 1), rand((200, 17), 2, offset=0.5)
    np.testing.assert_allclose(M.nmse_rows(p, g), 2 * (1 - M.cos_rows(p, g)), atol=1e-6)


def test_opposite_vectors():
    # g = −p: cos = −1, nmse = 2(1 − (−1)) = 4
    assert M.cos_rows([1.0, 2.0], [-2.0, -4.0]) == pytest.approx(-1.0)
    assert M.nmse_rows([1.0, 2.0], [-2.0, -4.0]) == pytest.approx(4.0)


# --- Var, fve -----------------------------------------------------------------------------------


def test_population_var_by_hand():
    # g = [[1, 0], [0, 1]]: g_nrm = [[√2, 0], [0, √2]], μ = [√2/2, √2/2]
    # deviations ±√2/2 in each of 4 cells -> squares 1/2 -> Var = 1/2;  1 − ||μ||²/d = 1 − 1/2
    assert M.population_var([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.5, abs=1e-15)
    # g = [[2, 0], [0, 3], [−1, 0]]: g_nrm = [[√2, 0], [0, √2], [−√2, 0]], μ = [0, √2/3]
    # squares: row 0: 2 + 2/9; row 1: (2√2/3)² = 8/9; row 2: 2 + 2/9 -> sum 16/3, /(3·2) = 8/9
    # and 1 − ||μ||²/d = 1 − (2/9)/2 = 8/9
    assert M.population_var([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]) == pytest.approx(8 / 9)
    # same direction everywhere: Var = 0
    assert M.population_var([[1.0, 0.0], [3.0, 0.0]]) == pytest.approx(0.0, abs=1e-15)


def test_population_var_equals_one_minus_mu_sq_over_d():
    g = rand((300, 11), 3, offset=0.7)
    mu = M.v_nrm(g).mean(axis=0)
    assert M.population_var(g) == pytest.approx(1 - (mu @ mu) / 11, abs=1e-12)


def test_fve_family_by_hand():
    # nmse = [0.1, 0.3], Var 0.5: fve = 1 − 0.2/0.5 = 0.6; fve_i = [1 − 0.2, 1 − 0.6] = [0.8, 0.4]
    assert M.fve([0.1, 0.3], 0.5) == pytest.approx(0.6)
    np.testing.assert_allclose(M.fve_rows([0.1, 0.3], 0.5), [0.8, 0.4])
    assert M.frac_negative_fve([0.1, 0.3], 0.5) == 0.0
    assert M.frac_fve_gt([0.1, 0.3], 0.5) == 0.5
    # nmse = [0, 0.25, 0.75], Var 0.5: fve_i = [1, 0.5, −0.5] (exact in binary);
    # fve = 1 − (1/3)/0.5 = 1/3; one row < 0; one row > 0.5 (0.5 itself is not above 0.5)
    nmse = [0.0, 0.25, 0.75]
    np.testing.assert_array_equal(M.fve_rows(nmse, 0.5), [1.0, 0.5, -0.5])
    assert M.fve(nmse, 0.5) == pytest.approx(1 / 3)
    assert M.frac_negative_fve(nmse, 0.5) == pytest.approx(1 / 3)
    assert M.frac_fve_gt(nmse, 0.5) == pytest.approx(1 / 3)
    assert M.frac_fve_gt(nmse, 0.5, threshold=-1.0) == 1.0


def test_fve_end_to_end_2d():
    # gold [[1, 0], [0, 1]]: Var = 1/2 (above). pred [[1, 0], [1, 1]]:
    # row 0 exact: nmse 0; row 1: nmse(p=[1,1], g=[0,1]) = (1² + (1 − √2)²)/2 = 2 − √2
    # mean nmse = (2 − √2)/2 = 1 − √2/2;  fve = 1 − (1 − √2/2)/(1/2) = √2 − 1
    gold = np.array([[1.0, 0.0], [0.0, 1.0]])
    pred = np.array([[1.0, 0.0], [1.0, 1.0]])
    nmse = M.nmse_rows(pred, gold)
    np.testing.assert_allclose(nmse, [0.0, 2 - R2], atol=1e-15)
    assert M.fve(nmse, M.population_var(gold)) == pytest.approx(R2 - 1)


def test_fve_perfect_predictor_is_one():
    gold = rand((50, 8), 4, offset=0.3)
    pred = gold * 7.5  # same directions, other norms
    assert M.fve(M.nmse_rows(pred, gold), M.population_var(gold)) == pytest.approx(1.0, abs=1e-12)


def test_fve_orthogonal_predictor_is_one_minus_two_over_var():
    # by hand: gold [[1, 0], [0, 1]], pred [[0, 1], [1, 0]]: nmse = 2 each, fve = 1 − 2/0.5 = −3
    gold = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert M.fve(M.nmse_rows([[0.0, 1.0], [1.0, 0.0]], gold), 0.5) == pytest.approx(-3.0)
    # random: pred_i = a random vector with its gold component removed
    gold = rand((40, 6), 5, offset=1.0)
    r = rand((40, 6), 6)
    pred = r - (np.einsum("ij,ij->i", r, gold) / np.einsum("ij,ij->i", gold, gold))[:, None] * gold
    var = M.population_var(gold)
    assert M.fve(M.nmse_rows(pred, gold), var) == pytest.approx(1 - 2 / var, abs=1e-9)


def test_fve_of_predicting_the_mean_direction():
    # Constant prediction p (norm √d) for every row: nmse_i = (d − 2 p·g_i + d)/d, so
    # mean nmse = 2 − 2 p·μ/d, which p = μ/||μ||·√d minimises at 2 − 2a with a = ||μ||/√d.
    # Var = 1 − a², so fve = 1 − (2 − 2a)/(1 − a²) = 1 − 2/(1 + a) = (a − 1)/(a + 1) <= 0.
    # By hand, gold [[1, 0], [0, 1]]: μ = [√2/2, √2/2], a = 1/√2,
    # fve = (1/√2 − 1)/(1/√2 + 1) = (1 − √2)/(1 + √2) = 2√2 − 3 ≈ −0.1716
    gold = np.array([[1.0, 0.0], [0.0, 1.0]])
    pred = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert M.fve(M.nmse_rows(pred, gold), M.population_var(gold)) == pytest.approx(2 * R2 - 3)
    # random anisotropic gold
    gold = rand((500, 9), 7, offset=0.8)
    mu = M.v_nrm(gold).mean(axis=0)
    a = np.linalg.norm(mu) / 3.0
    pred = np.tile(mu, (500, 1))
    got = M.fve(M.nmse_rows(pred, gold), M.population_var(gold))
    assert got == pytest.approx((a - 1) / (a + 1), abs=1e-12)
    assert got < 0


def test_strict_nmse_and_fve():
    # [0.1, 0.3] + 2 failures -> [0.1, 0.3, 2, 2]; mean 4.4/4 = 1.1; fve = 1 − 1.1/0.5 = −1.2
    np.testing.assert_allclose(M.strict_nmse([0.1, 0.3], 2), [0.1, 0.3, 2.0, 2.0])
    assert M.strict_fve([0.1, 0.3], 2, 0.5) == pytest.approx(-1.2)
    assert M.strict_fve([0.1, 0.3], 0, 0.5) == pytest.approx(M.fve([0.1, 0.3], 0.5))
    np.testing.assert_allclose(M.strict_nmse([], 3), [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="nothing to score"):
        M.strict_nmse([], 0)
    with pytest.raises(ValueError, match="n_failures"):
        M.strict_nmse([0.1], -1)


# --- centred protocol ---------------------------------------------------------------------------


def test_half_cos_by_hand():
    # h = [1, 0], v = [1, 1]: cos = 1/√2 -> ½(1 + 1/√2)
    assert M.half_cos([1.0, 0.0], [1.0, 1.0]) == pytest.approx(0.5 * (1 + 1 / R2))
    np.testing.assert_allclose(
        M.half_cos([[1.0, 2.0], [1.0, 2.0]], [[2.0, 4.0], [-1.0, -2.0]]), [1.0, 0.0], atol=1e-15
    )


def test_half_cos_cen_by_hand():
    # h = [2, 1], v = [1, 2], μ = [1, 1]: h − μ = [1, 0], v − μ = [0, 1] -> cos 0 -> ½
    # raw: cos = 4/5 -> ½(1 + 4/5) = 0.9 (the shared mean inflates the raw score)
    assert M.half_cos_cen([2.0, 1.0], [1.0, 2.0], [1.0, 1.0]) == pytest.approx(0.5)
    assert M.half_cos([2.0, 1.0], [1.0, 2.0]) == pytest.approx(0.9)
    # 3-D: h = [2, 2, 1], v = [3, 1, 1], μ = [1, 1, 1]: [1, 1, 0]·[2, 0, 0] = 2, norms √2·2
    # cos = 1/√2 -> ½(1 + 1/√2)
    got = M.half_cos_cen([[2.0, 2.0, 1.0]], [[3.0, 1.0, 1.0]], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(got, [0.5 * (1 + 1 / R2)])
    with pytest.raises(ValueError, match="h - mu_pool row 0 is a zero vector"):
        M.half_cos_cen([1.0, 1.0], [1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="mu_pool must have length d = 2"):
        M.half_cos_cen([1.0, 1.0], [1.0, 2.0], [1.0, 1.0, 1.0])


def test_pool_mean_and_anisotropy_by_hand():
    # raw: mean of [3, 0] and [0, 4] is [1.5, 2] -> norm √(2.25 + 4) = 2.5
    pool = np.array([[3.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(M.pool_mean(pool), [1.5, 2.0])
    assert M.anisotropy(pool) == pytest.approx(2.5)
    # unit rows [1, 0], [0, 1] -> mean [½, ½] -> norm √½
    assert M.anisotropy(pool, unit=True) == pytest.approx(math.sqrt(0.5))
    # a pool of identical directions: unit anisotropy 1
    assert M.anisotropy([[1.0, 1.0], [3.0, 3.0]], unit=True) == pytest.approx(1.0)


def test_rho_by_hand_and_against_seed_002():
    # (0.6 − 0.5)/(0.7 − 0.5) = 0.5
    assert M.rho(0.6, 0.5, 0.7) == pytest.approx(0.5)
    # seeds/002 Gemma-2-2B: best-of-64 0.631, floor 0.498, paraphrase ceiling 0.598 -> ρ 1.33
    assert M.rho(0.631, 0.498, 0.598) == pytest.approx(1.33)
    np.testing.assert_allclose(M.rho(np.array([0.5, 0.7, 0.4]), 0.5, 0.7), [0.0, 1.0, -0.5])
    with pytest.raises(ValueError, match="ceiling == floor"):
        M.rho(0.6, 0.5, 0.5)
    with pytest.raises(ValueError, match="score has a non-finite"):
        M.rho(float("nan"), 0.5, 0.7)


# --- input errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: M.v_nrm([[1.0, 2.0], [0.0, 0.0]]), "v row 1 is a zero vector"),
        (lambda: M.cos_rows([[1.0, 0.0]], [[0.0, 0.0]]), "g row 0 is a zero vector"),
        (lambda: M.nmse_rows([[1.0, 0.0]], [[1.0, 0.0, 0.0]]), "same shape"),
        (lambda: M.nmse_rows([1.0, 0.0], [[1.0, 0.0]]), "same shape"),
        (lambda: M.nmse_rows([[1.0, np.nan]], [[1.0, 0.0]]), r"p has a non-finite .* row 0"),
        (lambda: M.cos_rows([[1.0, 0.0]], [[1.0, np.inf]]), "g has a non-finite"),
        (lambda: M.v_nrm(np.zeros((0, 3))), "v is empty"),
        (lambda: M.v_nrm(np.ones((2, 2, 2))), "shape"),
        (lambda: M.population_var([1.0, 2.0]), r"\[n, d\]"),
        (lambda: M.fve([], 0.5), "nmse is empty"),
        (lambda: M.fve([0.1, np.nan], 0.5), "nmse has a non-finite value .* index 1"),
        (lambda: M.fve([0.1], 0.0), "var must be a finite number > 0"),
        (lambda: M.fve([0.1], float("nan")), "var must be finite"),
        (lambda: M.anisotropy(np.zeros((0, 2))), "pool is empty"),
    ],
)
def test_input_errors_name_the_problem(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_ci_contains_point_estimate_and_is_deterministic():
    x = rand(500, 8)
    value, lo, hi = M.bootstrap_ci(np.mean, x, seed=3)
    assert value == pytest.approx(x.mean())
    assert lo < value < hi
    # the 95% interval of a mean is about ±1.96·sd/√n
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / math.sqrt(500), rel=0.2)
    assert M.bootstrap_ci(np.mean, x, seed=3) == (value, lo, hi)
    assert M.bootstrap_ci(np.mean, x, seed=4) != (value, lo, hi)
    # default seed is 0: same as seed=0
    assert M.bootstrap_ci(np.mean, x) == M.bootstrap_ci(np.mean, x, seed=0)


def test_bootstrap_ci_constant_data_is_degenerate():
    x = np.full(40, 0.25)  # 0.25·k and 0.25·k/k are exact in float64
    assert M.bootstrap_ci(np.mean, x, n_boot=200) == (0.25, 0.25, 0.25)
    groups = np.repeat(np.arange(8), [1, 2, 3, 4, 5, 6, 7, 12])
    assert M.bootstrap_ci(np.mean, x, groups=groups, n_boot=200) == (0.25, 0.25, 0.25)


def test_bootstrap_resamples_all_arrays_with_the_same_rows():
    x = rand(60, 9)
    # mean(2x)/mean(x) is exactly 2 only if both arrays get the same rows
    assert M.bootstrap_ci(lambda a, b: b.mean() / a.mean(), x, 2 * x, n_boot=100) == (2, 2, 2)
    # rows of a 2-D array are kept whole
    xy = np.stack([x, 3 * x], axis=1)
    reps = M.bootstrap_replicates(lambda m: np.ptp(m[:, 1] - 3 * m[:, 0]), xy, n_boot=50)
    np.testing.assert_array_equal(reps, 0.0)


def test_cluster_bootstrap_keeps_groups_whole():
    sizes = np.array([1, 3, 2, 5, 4])
    groups = np.repeat(np.array(["e", "b", "d", "a", "c"]), sizes)

    def whole(g):
        labels, counts = np.unique(g, return_counts=True)
        size = dict(zip(["e", "b", "d", "a", "c"], sizes, strict=True))
        ok = all(c % size[lab] == 0 for lab, c in zip(labels, counts, strict=True))
        # a resample has as many groups as the data (5), whatever its row count
        n_groups = sum(c // size[lab] for lab, c in zip(labels, counts, strict=True))
        return 0.0 if ok and n_groups == 5 else 1.0

    reps = M.bootstrap_replicates(whole, groups, groups=groups, n_boot=200)
    np.testing.assert_array_equal(reps, 0.0)


def test_cluster_bootstrap_is_wider_when_variation_is_between_groups():
    # 10 documents × 50 identical rows: 10 independent values, not 500
    x = np.repeat(rand(10, 10), 50)
    groups = np.repeat(np.arange(10), 50)
    _, lo_r, hi_r = M.bootstrap_ci(np.mean, x, seed=1)
    _, lo_c, hi_c = M.bootstrap_ci(np.mean, x, groups=groups, seed=1)
    # the widths differ by about √50 ≈ 7
    assert hi_c - lo_c > 3 * (hi_r - lo_r)


def test_cluster_bootstrap_with_singleton_groups_is_the_row_bootstrap():
    x = rand(37, 11)
    row = M.bootstrap_replicates(np.mean, x, seed=5, n_boot=300)
    # string ids whose sorted order differs from row order ("doc10" < "doc2"): units are taken
    # in order of first appearance, so unit k is row k and the draws coincide exactly
    ids = np.array([f"doc{i}" for i in range(37)])
    np.testing.assert_array_equal(
        M.bootstrap_replicates(np.mean, x, groups=ids, seed=5, n_boot=300), row
    )
    np.testing.assert_array_equal(
        M.bootstrap_replicates(np.mean, x, groups=np.arange(37)[::-1], seed=5, n_boot=300), row
    )
    assert M.bootstrap_ci(np.mean, x, groups=ids, seed=5) == M.bootstrap_ci(np.mean, x, seed=5)


def test_cluster_bootstrap_ignores_the_spelling_of_group_ids():
    x = rand(5, 12)
    a = M.bootstrap_replicates(np.mean, x, groups=[5, 5, 3, 3, 9], n_boot=100)
    b = M.bootstrap_replicates(np.mean, x, groups=["a", "a", "b", "b", "c"], n_boot=100)
    np.testing.assert_array_equal(a, b)


def test_bootstrap_is_fast_for_a_mean():
    x = rand(10_000, 13)
    t0 = time.perf_counter()
    M.bootstrap_ci(np.mean, x, n_boot=1000)
    assert time.perf_counter() - t0 < 1.0


def test_bootstrap_errors():
    x = rand(10, 14)
    with pytest.raises(ValueError, match="same number of rows"):
        M.bootstrap_ci(lambda a, b: a.mean(), x, x[:5])
    with pytest.raises(ValueError, match="one id per row"):
        M.bootstrap_ci(np.mean, x, groups=np.arange(9))
    with pytest.raises(ValueError, match="groups contains NaN"):
        M.bootstrap_ci(np.mean, x, groups=np.r_[np.arange(9.0), np.nan])
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_ci(np.mean, x, alpha=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_ci(np.mean, x, n_boot=0)
    with pytest.raises(ValueError, match="empty"):
        M.bootstrap_ci(np.mean, np.array([]))
    with pytest.raises(ValueError, match="non-finite value on"):
        M.bootstrap_ci(lambda a: np.nan if a.min() == 0 else 1.0, np.r_[0.0, np.ones(3)])
    with pytest.raises(ValueError, match="scalar"):
        M.bootstrap_ci(lambda a: a, x)


def test_paired_diff_of_identical_conditions_is_exactly_zero():
    x = rand(80, 15)
    assert M.paired_bootstrap_diff(np.mean, x, x.copy()) == (0.0, 0.0, 0.0)
    groups = np.repeat(np.arange(16), 5)
    assert M.paired_bootstrap_diff(np.mean, [x], [x.copy()], groups=groups) == (0.0, 0.0, 0.0)


def test_paired_diff_value_and_constant_shift():
    a = rand(100, 16)
    b = a + 0.5
    value, lo, hi = M.paired_bootstrap_diff(np.mean, a, b, seed=2)
    assert value == pytest.approx(a.mean() - b.mean())
    assert lo == pytest.approx(-0.5, abs=1e-12) and hi == pytest.approx(-0.5, abs=1e-12)


def test_paired_interval_is_narrower_for_correlated_conditions():
    rng = np.random.default_rng(17)
    shared = rng.normal(size=400)
    a = shared + 0.1 * rng.normal(size=400)
    b = shared + 0.2 + 0.1 * rng.normal(size=400)
    _, lo_p, hi_p = M.paired_bootstrap_diff(np.mean, a, b, seed=0)
    unpaired = M.bootstrap_replicates(np.mean, a, seed=1) - M.bootstrap_replicates(
        np.mean, b, seed=2
    )
    lo_u, hi_u = np.quantile(unpaired, [0.025, 0.975])
    assert lo_p < -0.2 < hi_p
    assert hi_p - lo_p < 0.5 * (hi_u - lo_u)


def test_paired_diff_rejects_different_rows():
    with pytest.raises(ValueError, match="same rows"):
        M.paired_bootstrap_diff(np.mean, np.ones(4), np.ones(5))


# --- summarize ----------------------------------------------------------------------------------


def test_summarize_by_hand():
    # the 2-D example above: nmse = [0, 2 − √2], Var 1/2, fve_own = √2 − 1
    # cos = [1, 1/√2]; fve_i = [1, 1 − (2 − √2)/½] = [1, 2√2 − 3 ≈ −0.17]
    # strict with 2 failures: nmse mean (0 + 2 − √2 + 2 + 2)/4 = (6 − √2)/4,
    # fve_own_strict = 1 − (6 − √2)/2 = (√2 − 4)/2; fve_train_strict (Var 0.25) = 1 − (6 − √2)
    gold = np.array([[1.0, 0.0], [0.0, 1.0]])
    pred = np.array([[1.0, 0.0], [1.0, 1.0]])
    s = M.summarize(pred, gold, train_var=0.25, tag_failures=2, n_boot=50)
    assert s["n"] == 2 and s["tag_failures"] == 2
    assert s["nmse_mean"]["value"] == pytest.approx(1 - R2 / 2)
    assert s["nmse_median"] == pytest.approx(1 - R2 / 2)
    assert s["cos_mean"]["value"] == pytest.approx((1 + 1 / R2) / 2)
    assert s["var_own"] == pytest.approx(0.5)
    assert s["var_train"] == 0.25
    assert s["fve_own"]["value"] == pytest.approx(R2 - 1)
    assert s["fve_train"]["value"] == pytest.approx(1 - (1 - R2 / 2) / 0.25)
    assert s["frac_fve_neg"] == 0.5
    assert s["frac_fve_gt_half"] == 0.5
    assert s["nmse_mean_strict"] == pytest.approx((6 - R2) / 4)
    assert s["fve_own_strict"] == pytest.approx((R2 - 4) / 2)
    assert s["fve_train_strict"] == pytest.approx(1 - (6 - R2))
    # resamples that drew the same gold row twice have Var 0: left out of fve_own, counted
    assert 0 < s["bootstrap"]["degenerate"] < 50
    assert s["bootstrap"] == {
        "n_boot": 50,
        "seed": 0,
        "alpha": 0.05,
        "unit": "row",
        "n_units": 2,
        "degenerate": s["bootstrap"]["degenerate"],
    }


def test_summarize_structure_and_agreement_with_the_functions():
    gold = rand((120, 16), 18, offset=0.4)
    pred = gold + rand((120, 16), 19)
    groups = np.repeat([f"doc{i}" for i in range(24)], 5)
    s = M.summarize(pred, gold, groups=groups, seed=7, n_boot=300)
    assert set(s) == {
        "n", "tag_failures", "nmse_mean", "nmse_median", "cos_mean", "var_own", "var_train",
        "fve_own", "fve_train", "frac_fve_neg", "frac_fve_gt_half", "nmse_mean_strict",
        "fve_own_strict", "fve_train_strict", "bootstrap",
    }  # fmt: skip
    assert s["fve_train"] is None and s["var_train"] is None and s["fve_train_strict"] is None
    nmse, cos = M.nmse_rows(pred, gold), M.cos_rows(pred, gold)
    var = M.population_var(gold)
    assert s["var_own"] == pytest.approx(var, abs=1e-12)
    assert s["nmse_median"] == pytest.approx(np.median(nmse))
    assert s["fve_own_strict"] == pytest.approx(M.fve(nmse, var))
    assert s["bootstrap"]["unit"] == "group" and s["bootstrap"]["n_units"] == 24
    assert s["bootstrap"]["degenerate"] == 0
    for key in ("nmse_mean", "cos_mean", "fve_own"):
        iv = s[key]
        assert set(iv) == {"value", "lo", "hi"}
        assert iv["lo"] < iv["value"] < iv["hi"]
    # the same resamples as bootstrap_ci with the same seed and groups
    kw = {"groups": groups, "seed": 7, "n_boot": 300}
    checks = {
        "nmse_mean": M.bootstrap_ci(np.mean, nmse, **kw),
        "cos_mean": M.bootstrap_ci(np.mean, cos, **kw),
        "fve_own": M.bootstrap_ci(lambda n, g: M.fve(n, M.population_var(g)), nmse, gold, **kw),
    }
    for key, (value, lo, hi) in checks.items():
        got = s[key]
        assert (got["value"], got["lo"], got["hi"]) == pytest.approx((value, lo, hi), abs=1e-10)


def test_summarize_fve_train_uses_a_fixed_denominator():
    gold = rand((200, 8), 20, offset=0.5)
    pred = gold + 0.8 * rand((200, 8), 21)
    s = M.summarize(pred, gold, train_var=0.6, seed=3, n_boot=400)
    nmse = M.nmse_rows(pred, gold)
    value, lo, hi = M.bootstrap_ci(lambda n: M.fve(n, 0.6), nmse, seed=3, n_boot=400)
    assert s["fve_train"] == pytest.approx({"value": value, "lo": lo, "hi": hi}, abs=1e-12)
    assert s["fve_train"]["value"] == pytest.approx(1 - nmse.mean() / 0.6)
    # summarize keeps JSON-ready Python types
    assert all(isinstance(v, float) for v in s["fve_train"].values())
    assert isinstance(s["n"], int) and isinstance(s["frac_fve_neg"], float)


def test_summarize_perfect_predictor():
    gold = rand((30, 5), 22, offset=0.2)
    s = M.summarize(2 * gold, gold, train_var=0.5, n_boot=100)
    assert s["fve_own"]["value"] == pytest.approx(1.0, abs=1e-12)
    assert s["fve_own"]["lo"] == pytest.approx(1.0, abs=1e-12)
    assert s["nmse_mean"]["hi"] == pytest.approx(0.0, abs=1e-12)
    assert s["frac_fve_gt_half"] == 1.0 and s["frac_fve_neg"] == 0.0


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"pred": np.ones((3, 4)), "gold": np.ones((3, 5))}, "same shape"),
        (
            {"gold": np.r_[[[1.0, np.nan]], np.eye(2)]},
            r"gold has a non-finite value \(NaN or inf\) at row 0",
        ),
        ({"pred": np.r_[np.eye(2), [[0.0, 0.0]]]}, "pred row 2 is a zero vector"),
        ({"pred": np.zeros((0, 2)), "gold": np.zeros((0, 2))}, "pred is empty"),
        ({"gold": np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])}, "point the same way"),
        ({"train_var": 0.0}, "train_var"),
        ({"tag_failures": -1}, "tag_failures"),
        ({"groups": [1, 2]}, "one id per row"),
    ],
)
def test_summarize_errors(kw, pattern):
    args = {"pred": np.r_[np.eye(2), [[1.0, 1.0]]], "gold": np.r_[np.eye(2), [[1.0, 2.0]]]}
    args.update(kw)
    pred, gold = args.pop("pred"), args.pop("gold")
    with pytest.raises(ValueError, match=pattern):
        M.summarize(pred, gold, n_boot=10, **args)
