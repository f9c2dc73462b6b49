"""Unit tests of nlaprobe.ridge against hand-computed values and closed forms written in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nlaprobe import ridge as R


def rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def rbf_by_hand(a, b, gamma):
    """exp(-gamma ||a_i - b_j||^2) by explicit differences (no dot-product expansion)."""
    return np.exp(-gamma * ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def mean_nmse(pred, gold):
    cos = (pred * gold).sum(1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(gold, axis=1)
    return float((2.0 * (1.0 - cos)).mean())


def orthonormal_map(d_in, d_out, seed):
    """[d_in, d_out] with orthonormal rows: x -> x @ W keeps norms, so unit x gives unit y."""
    q, _ = np.linalg.qr(rand((d_out, d_in), seed))
    return q.T


# --- unit_rows, kernels, specs ------------------------------------------------------------------


def test_unit_rows_by_hand():
    out = R.unit_rows(np.array([[3, 4], [0, -2]], dtype=np.float32))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, -1.0]], rtol=1e-15)


@pytest.mark.parametrize(
    "x, message",
    [
        ([[1.0, 0.0], [2.0, 1.0], [0.0, 0.0]], "x row 2 is a zero vector"),
        ([[1.0, 0.0], [np.nan, 1.0]], r"x row 1 has a non-finite value \(NaN or inf\) at column 0"),
        ([[1.0, np.inf]], "x row 0 has a non-finite value"),
        ([[1e200, 1e200]], "x row 0 has a norm too large"),
        ([1.0, 2.0], r"x must have shape \[n, d\], got shape \(2,\)"),
        (np.zeros((0, 3)), "x is empty"),
    ],
)
def test_unit_rows_errors_name_the_row(x, message):
    with pytest.raises(ValueError, match=message):
        R.unit_rows(x)


def test_kernel_matrix_by_hand():
    a = np.array([[1.0, 0.0], [0.6, 0.8]])
    b = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(R.kernel_matrix(a, b, "linear"), [[0.0, 1.0], [0.8, 0.6]])
    # ||a_0 - b_0||^2 = 2, ||a_0 - b_1||^2 = 0, ||a_1 - b_0||^2 = 0.36 + 0.04, ||a_1 - b_1||^2 = 0.16 + 0.64
    np.testing.assert_allclose(
        R.kernel_matrix(a, b, "rbf", gamma=0.5),
        [[math.exp(-1.0), 1.0], [math.exp(-0.2), math.exp(-0.4)]],
        rtol=1e-14,
    )
    # gamma None is 1/d (scikit-learn's default): here 1/2
    np.testing.assert_allclose(R.kernel_matrix(a, b, "rbf"), R.kernel_matrix(a, b, "rbf", 0.5))
    # a Gram matrix has exactly 1 on the diagonal
    x = unit(rand((6, 4)))
    gram = R.kernel_matrix(x, x, "rbf", gamma=3.0)
    assert (np.diag(gram) == 1.0).all()
    np.testing.assert_allclose(gram, rbf_by_hand(x, x, 3.0), rtol=1e-12, atol=1e-15)


def test_kernel_matrix_device_auto_matches_cpu():
    x, z = rand((5, 3), 1), rand((4, 3), 2)
    np.testing.assert_allclose(
        R.kernel_matrix(x, z, "rbf", 0.3, device="auto"),
        R.kernel_matrix(x, z, "rbf", 0.3, device="cpu"),
        rtol=1e-12,
    )


def test_unknown_kernel_device_and_bad_gamma():
    x = rand((3, 2))
    with pytest.raises(ValueError, match=r"unknown kernel 'poly'; valid: linear, rbf"):
        R.kernel_matrix(x, x, "poly")
    with pytest.raises(ValueError, match=r"unknown kernel 'sigmoid'; valid: linear, rbf"):
        R.KernelSpec("sigmoid")
    with pytest.raises(ValueError, match="the linear kernel takes no gamma"):
        R.KernelSpec("linear", gamma=1.0)
    with pytest.raises(ValueError, match="gamma must be finite and > 0"):
        R.KernelSpec("rbf", gamma=0.0)
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; valid: auto, cpu, cuda"):
        R.kernel_matrix(x, x, "linear", device="tpu")
    with pytest.raises(ValueError, match="a and b must have the same width, got 2 and 3"):
        R.kernel_matrix(x, rand((3, 3)), "linear")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            R.kernel_matrix(x, x, "linear", device="cuda")


def test_kernel_spec_names():
    assert R.KernelSpec("linear").name == "linear"
    assert R.KernelSpec("rbf", 1.0).name == "rbf_g1"
    assert R.KernelSpec("rbf", 2).name == "rbf_g2"
    assert R.KernelSpec("rbf", 0.5).name == "rbf_g0.5"
    assert R.KernelSpec("rbf", 1e-3).name == "rbf_g0.001"
    assert R.KernelSpec("rbf", 1 / 3).name == "rbf_g0.3333333333333333"  # %g would lose digits
    assert R.KernelSpec("rbf").name == "rbf"


# --- alpha path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel, gamma", [("rbf", 0.7), ("linear", None)])
def test_alpha_path_equals_a_direct_solve_per_alpha(kernel, gamma):
    # 40 training rows in d = 5: the linear Gram matrix has rank 5 (35 zero eigenvalues)
    x_tr, x_val = unit(rand((40, 5), 1)), unit(rand((10, 5), 2))
    y = rand((40, 3), 3)
    k = R.kernel_matrix(x_tr, x_tr, kernel, gamma)
    k_val = R.kernel_matrix(x_val, x_tr, kernel, gamma)
    alphas = [1e-3, 0.1, 1.0, 10.0]
    path = R.alpha_path(k, y, k_val, alphas)
    assert path.shape == (4, 10, 3)
    for i, alpha in enumerate(alphas):
        direct = k_val @ np.linalg.solve(k + alpha * np.eye(40), y)
        assert np.abs(path[i] - direct).max() < 1e-8


def test_alpha_path_both_multiplication_orders_agree():
    # 30 validation rows vs 2 alphas x 3 outputs = 6 columns, and 1 validation row vs 6: the two
    # orders of the matrix products give the same numbers.
    x_tr = unit(rand((25, 4), 4))
    y = rand((25, 3), 5)
    k = R.kernel_matrix(x_tr, x_tr, "rbf", 1.5)
    for m in (30, 1):
        x_val = unit(rand((m, 4), 6))
        k_val = R.kernel_matrix(x_val, x_tr, "rbf", 1.5)
        path = R.alpha_path(k, y, k_val, [0.01, 1.0])
        for i, alpha in enumerate([0.01, 1.0]):
            direct = k_val @ np.linalg.solve(k + alpha * np.eye(25), y)
            assert np.abs(path[i] - direct).max() < 1e-10


def test_alpha_path_input_errors():
    k, y = np.eye(3), rand((3, 2))
    with pytest.raises(ValueError, match=r"alphas\[1\] = 0.0; every alpha must be finite and > 0"):
        R.alpha_path(k, y, k, [1.0, 0.0])
    with pytest.raises(ValueError, match="alphas repeat 1.0"):
        R.alpha_path(k, y, k, [1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="k_train must be square"):
        R.alpha_path(rand((3, 2)), y, k, [1.0])
    with pytest.raises(ValueError, match="y_train must have 3 rows"):
        R.alpha_path(k, rand((2, 2)), k, [1.0])
    with pytest.raises(ValueError, match="k_val must have 3 columns"):
        R.alpha_path(k, y, rand((2, 4)), [1.0])


# --- fitting ------------------------------------------------------------------------------------


def test_linear_kernel_recovers_an_exact_linear_map():
    w = orthonormal_map(6, 10, seed=7)
    x = unit(rand((200, 6), 8))
    fit = R.fit_kernel_ridge(x, x @ w, R.KernelSpec("linear"), [1e-8, 1.0, 10.0], seed=0)
    assert fit.alpha == 1e-8
    assert fit.val_scores[1e-8] < 1e-10 < fit.val_scores[1.0] < fit.val_scores[10.0]
    x_new = rand((50, 6), 9)  # not normalised: predict normalises
    pred = fit.predict(x_new)
    cos = (pred * (unit(x_new) @ w)).sum(1) / np.linalg.norm(pred, axis=1)
    assert cos.min() > 0.999
    np.testing.assert_allclose(pred, unit(x_new) @ w, atol=1e-6)


@pytest.mark.parametrize("solver", ["band", "eigh", "cholesky"])
def test_refit_equals_numpy_closed_form_on_all_pairs(solver, monkeypatch):
    # band and eigh refit by block elimination on the selection's reduction, cholesky directly;
    # a band of 8 makes the 48 training rows 6 blocks
    monkeypatch.setattr(R, "BAND_WIDTH", 8)
    x, y, x_new = rand((60, 5), 10), rand((60, 4), 11), rand((7, 5), 12)
    gamma, alpha = 0.8, 0.1
    fit = R.fit_kernel_ridge(x, y, R.KernelSpec("rbf", gamma), [alpha], solver=solver)
    assert fit.solver == solver
    xu, yu = unit(x), unit(y)
    coef = np.linalg.solve(rbf_by_hand(xu, xu, gamma) + alpha * np.eye(60), yu)
    np.testing.assert_allclose(fit.x_train, xu, rtol=1e-15)
    np.testing.assert_allclose(fit.dual_coef, coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        fit.predict(x_new), rbf_by_hand(unit(x_new), xu, gamma) @ coef, atol=1e-10
    )


@pytest.mark.parametrize("solver", ["band", "eigh", "cholesky"])
def test_predictions_equal_scikit_learn_kernel_ridge(solver):
    kernel_ridge = pytest.importorskip("sklearn.kernel_ridge")
    x, y, x_new = rand((60, 5), 10), rand((60, 4), 11), rand((7, 5), 12)
    for gamma, alpha in [(0.8, 0.1), (3.0, 1e-3)]:
        fit = R.fit_kernel_ridge(x, y, R.KernelSpec("rbf", gamma), [alpha], solver=solver)
        ref = kernel_ridge.KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma)
        ref.fit(unit(x), unit(y))
        assert np.abs(fit.predict(x_new) - ref.predict(unit(x_new))).max() < 1e-6
    for alpha in [0.1, 1e-3]:
        fit = R.fit_kernel_ridge(x, y, R.KernelSpec("linear"), [alpha], solver="primal")
        ref = kernel_ridge.KernelRidge(alpha=alpha, kernel="linear").fit(unit(x), unit(y))
        assert np.abs(fit.predict(x_new) - ref.predict(unit(x_new))).max() < 1e-8
        np.testing.assert_allclose(fit.dual_coef, ref.dual_coef_, rtol=1e-7, atol=1e-9)


def _selection_by_hand(x, y, kernel, alphas, seed):
    train, val = R.val_split(len(x), 0.2, seed)
    xu, yu = unit(x), unit(y)
    k = kernel(xu[train], xu[train])
    k_val = kernel(xu[val], xu[train])
    scores = {}
    for a in alphas:
        pred = k_val @ np.linalg.solve(k + a * np.eye(len(train)), yu[train])
        scores[a] = mean_nmse(pred, yu[val])
    return scores


ALPHAS = [1e-4, 1e-2, 1.0, 100.0]


def test_selection_on_clean_data_picks_the_smallest_alpha():
    # y = an exact norm-preserving linear map of x: the least regularised linear fit wins.
    x = rand((80, 6), 1)
    y = unit(x) @ orthonormal_map(6, 8, seed=2)
    fit = R.fit_kernel_ridge(x, y, R.KernelSpec("linear"), ALPHAS, seed=0)
    by_hand = _selection_by_hand(x, y, lambda a, b: a @ b.T, ALPHAS, seed=0)
    assert list(fit.val_scores) == ALPHAS
    for a in ALPHAS:
        assert fit.val_scores[a] == pytest.approx(by_hand[a], abs=1e-9)
    assert by_hand[1e-4] < 1e-10 < by_hand[1e-2] < by_hand[1.0] < by_hand[100.0]
    assert fit.alpha == 1e-4


def test_selection_on_noisy_data_picks_the_largest_alpha():
    # targets drowned in noise (5x the signal): the most regularised fit wins.
    x = rand((80, 6), 1)
    y = np.tanh(x @ rand((6, 4), 2)) + 5.0 * rand((80, 4), 3)
    fit = R.fit_kernel_ridge(x, y, R.KernelSpec("rbf", 2.0), ALPHAS, seed=0)
    by_hand = _selection_by_hand(x, y, lambda a, b: rbf_by_hand(a, b, 2.0), ALPHAS, seed=0)
    for a in ALPHAS:
        assert fit.val_scores[a] == pytest.approx(by_hand[a], abs=1e-9)
    assert min(by_hand, key=by_hand.get) == 100.0
    assert fit.alpha == 100.0


def test_selection_ties_go_to_the_larger_alpha():
    # x_train rows are distinct basis vectors, so K_train = I under the linear kernel and every
    # alpha predicts K_val Y / (1 + alpha): one direction, one validation score.
    x = np.eye(10)
    y = rand((10, 3), 4)
    train, _ = R.val_split(10, 0.2, seed=0)
    fit = R.fit_kernel_ridge(x, y, R.KernelSpec("linear"), [0.5, 8.0, 2.0], seed=0)
    assert len(train) == 8
    scores = list(fit.val_scores.values())
    assert max(scores) - min(scores) < 1e-12
    assert fit.alpha == 8.0


def test_fit_is_deterministic_given_seed_and_split_depends_on_it():
    x, y = rand((50, 4), 5), rand((50, 3), 6)
    spec, alphas = R.KernelSpec("rbf", 1.0), [1e-3, 1e-1, 10.0]
    a = R.fit_kernel_ridge(x, y, spec, alphas, seed=3)
    b = R.fit_kernel_ridge(x, y, spec, alphas, seed=3)
    c = R.fit_kernel_ridge(x, y, spec, alphas, seed=4)
    assert a.val_scores == b.val_scores and a.alpha == b.alpha
    assert np.array_equal(a.dual_coef, b.dual_coef)
    assert a.val_scores != c.val_scores


def test_fit_best_one_fit_per_spec_name():
    x, y = rand((40, 4), 7), rand((40, 3), 8)
    specs = [R.KernelSpec("linear"), R.KernelSpec("rbf", 0.5), R.KernelSpec("rbf", 2.0)]
    fits = R.fit_best(x, y, specs, [0.01, 1.0], seed=1)
    assert list(fits) == ["linear", "rbf_g0.5", "rbf_g2"]
    for spec in specs:
        alone = R.fit_kernel_ridge(x, y, spec, [0.01, 1.0], seed=1)
        assert fits[spec.name].spec == spec
        assert fits[spec.name].val_scores == alone.val_scores
    with pytest.raises(ValueError, match=r"specs\[1\] repeats specs\[0\] \('rbf_g1'\)"):
        R.fit_best(x, y, [R.KernelSpec("rbf", 1.0), R.KernelSpec("rbf", 1)], [1.0])
    with pytest.raises(ValueError, match="specs is empty"):
        R.fit_best(x, y, [], [1.0])


def test_fit_input_errors():
    x = rand((10, 3))
    with pytest.raises(ValueError, match="x and y must hold the same pairs"):
        R.fit_kernel_ridge(x, rand((9, 2)), R.KernelSpec("linear"), [1.0])
    with pytest.raises(ValueError, match="y row 4 is a zero vector"):
        R.fit_kernel_ridge(
            x, np.where(np.arange(10)[:, None] == 4, 0.0, 1.0), R.KernelSpec("linear"), [1.0]
        )
    fit = R.fit_kernel_ridge(x, rand((10, 2)), R.KernelSpec("linear"), [1.0])
    with pytest.raises(ValueError, match="x must have width 3"):
        fit.predict(rand((2, 4)))


# --- solvers: primal, eigh, cholesky; float32 -----------------------------------------------------


def _scores_from_alpha_path(x, y, kernel, gamma, alphas, seed):
    """Validation scores the way fits were scored before the solvers (R.alpha_path: one
    eigendecomposition, every alpha)."""
    train, val = R.val_split(len(x), 0.2, seed)
    xu, yu = unit(x), unit(y)
    k = R.kernel_matrix(xu[train], xu[train], kernel, gamma)
    k_val = R.kernel_matrix(xu[val], xu[train], kernel, gamma)
    path = R.alpha_path(k, yu[train], k_val, alphas)
    return {a: mean_nmse(path[i], yu[val]) for i, a in enumerate(alphas)}


GRID = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0]


@pytest.mark.parametrize(
    "kernel, gamma, solvers",
    [
        ("linear", None, ["primal", "band", "eigh", "cholesky"]),
        ("rbf", 0.5, ["band", "eigh", "cholesky"]),
        ("rbf", 4.0, ["band", "eigh", "cholesky"]),
    ],
)
def test_solvers_select_the_same_alpha_with_the_same_scores(kernel, gamma, solvers, monkeypatch):
    # 150 noisy pairs in d = 10 (120 in the selection's training part, so d < n_train): every
    # solver scores every alpha as the eigendecomposition path did, and predicts the same; a
    # band of 16 makes the 120 training rows 7 full blocks and one of 8
    monkeypatch.setattr(R, "BAND_WIDTH", 16)
    x = rand((150, 10), 20)
    y = np.tanh(x @ rand((10, 6), 21)) + 0.3 * rand((150, 6), 22)
    x_new = rand((30, 10), 23)
    before = _scores_from_alpha_path(x, y, kernel, gamma, GRID, seed=2)
    fits = {
        s: R.fit_kernel_ridge(x, y, R.KernelSpec(kernel, gamma), GRID, seed=2, solver=s)
        for s in solvers
    }
    ref = fits[solvers[-1]]
    for solver, fit in fits.items():
        assert fit.solver == solver and fit.dtype == "float64" and fit.f32_check is None
        for a in GRID:
            assert abs(fit.val_scores[a] - before[a]) < 1e-10, (solver, a)
        assert fit.alpha == min(before, key=before.get) == ref.alpha
        assert np.abs(fit.predict(x_new) - ref.predict(x_new)).max() < 1e-8
        np.testing.assert_allclose(fit.dual_coef, ref.dual_coef, rtol=1e-8, atol=1e-10)


def test_primal_form_weight_is_the_closed_form_and_predicts_like_the_dual_form():
    x, y, x_new = rand((200, 12), 24), rand((200, 5), 25), rand((40, 12), 26)
    for alpha in [1e-4, 0.03, 3.0]:
        primal = R.fit_kernel_ridge(x, y, R.KernelSpec("linear"), [alpha], solver="primal")
        dual = R.fit_kernel_ridge(x, y, R.KernelSpec("linear"), [alpha], solver="cholesky")
        xu, yu = unit(x), unit(y)
        w = np.linalg.solve(xu.T @ xu + alpha * np.eye(12), xu.T @ yu)
        np.testing.assert_allclose(primal.weight, w, rtol=1e-10, atol=1e-12)
        assert dual.weight is None
        # the dual form predicts K(x_new, X) C; the primal form x_new W: the same to 1e-8
        assert np.abs(primal.predict(x_new) - dual.predict(x_new)).max() < 1e-8
        np.testing.assert_allclose(dual.x_train.T @ dual.dual_coef, w, rtol=1e-8, atol=1e-10)


def test_choose_solver_cost_model_by_hand():
    # n = 4,000 pairs at val_fraction 0.2: 3,200 in training, the refit costs 1.25^3 = 1.95
    # Cholesky factorisations of the training kernel; the band reduction BAND_COST = 5 of them
    sizes = {"n": 4000, "n_train": 3200, "d": 64}
    assert R.BAND_COST == 5.0
    assert R.choose_solver("linear", n_alphas=1, **sizes) == "primal"
    assert R.choose_solver("rbf", n_alphas=13, **sizes) == "band"
    assert R.choose_solver("rbf", n_alphas=4, **sizes) == "band"  # 4 + 1.95 > 5
    assert R.choose_solver("rbf", n_alphas=3, **sizes) == "cholesky"  # 3 + 1.95 < 5
    # the linear kernel is primal while d < n_train, dual (band or cholesky) from there on
    assert R.choose_solver("linear", n=4000, n_train=3200, d=3199, n_alphas=13) == "primal"
    assert R.choose_solver("linear", n=4000, n_train=3200, d=3200, n_alphas=13) == "band"
    assert R.choose_solver("linear", n=4000, n_train=3200, d=5376, n_alphas=1) == "cholesky"
    # a large refit favours band, whose refit reuses the reduction
    assert R.choose_solver("rbf", n=200, n_train=100, d=8, n_alphas=1) == "band"  # 1 + 8 > 5
    with pytest.raises(ValueError, match="unknown kernel 'poly'"):
        R.choose_solver("poly", n_alphas=1, **sizes)


def test_auto_solver_follows_the_cost_model():
    x, y = rand((100, 6), 27), rand((100, 3), 28)
    grid13 = np.geomspace(1e-4, 100, 13)
    assert R.fit_kernel_ridge(x, y, R.KernelSpec("linear"), grid13).solver == "primal"
    assert R.fit_kernel_ridge(x, y, R.KernelSpec("rbf", 1.0), grid13).solver == "band"
    assert R.fit_kernel_ridge(x, y, R.KernelSpec("rbf", 1.0), [0.1, 1.0]).solver == "cholesky"
    wide = rand((100, 90), 29)  # d = 90 >= 80 training rows: the linear kernel goes dual
    assert R.fit_kernel_ridge(wide, y, R.KernelSpec("linear"), grid13).solver == "band"
    fits = R.fit_best(x, y, [R.KernelSpec("linear"), R.KernelSpec("rbf", 1.0)], [1.0])
    assert [f.solver for f in fits.values()] == ["primal", "cholesky"]


def test_solver_and_dtype_errors():
    x, y = rand((20, 3), 30), rand((20, 2), 31)
    with pytest.raises(
        ValueError, match=r"unknown solver 'lu'; valid: auto, primal, band, eigh, cholesky"
    ):
        R.fit_kernel_ridge(x, y, R.KernelSpec("linear"), [1.0], solver="lu")
    with pytest.raises(
        ValueError, match="solver 'primal' needs the linear kernel, got kernel 'rbf'"
    ):
        R.fit_kernel_ridge(x, y, R.KernelSpec("rbf", 1.0), [1.0], solver="primal")
    with pytest.raises(
        ValueError, match=r"unknown dtype 'float16'; valid: float64, float32 or None"
    ):
        R.fit_best(x, y, [R.KernelSpec("rbf", 1.0)], [1.0], dtype="float16")


def test_dtype_defaults_to_float32_on_cuda_only():
    assert R._resolve_dtype(None, torch.device("cpu")) == torch.float64
    assert R._resolve_dtype(None, torch.device("cuda")) == torch.float32
    assert R._resolve_dtype("float64", torch.device("cuda")) == torch.float64


@pytest.mark.parametrize("solver", ["band", "eigh", "cholesky"])
def test_float32_fit_passes_its_float64_check_when_well_conditioned(solver):
    # float32 forced on the CPU: the arithmetic of a CUDA run, checked against float64
    x = rand((300, 8), 32)
    y = np.tanh(x @ rand((8, 4), 33)) + 0.5 * rand((300, 4), 34)
    spec, alphas = R.KernelSpec("rbf", 1.0), [0.1, 1.0, 10.0]
    f64 = R.fit_kernel_ridge(x, y, spec, alphas, solver=solver)
    f32 = R.fit_kernel_ridge(x, y, spec, alphas, solver=solver, dtype="float32")
    assert (f32.dtype, f64.dtype, f64.f32_check) == ("float32", "float64", None)
    assert 0 < f32.f32_check < R.F32_TOL
    assert f32.alpha == f64.alpha
    for a in alphas:
        assert f32.val_scores[a] == pytest.approx(f64.val_scores[a], abs=1e-5)
    assert f32.dual_coef.dtype == np.float64
    x_new = rand((20, 8), 35)
    assert np.abs(f32.predict(x_new) - f64.predict(x_new)).max() < 1e-4


@pytest.mark.parametrize("solver", ["band", "eigh", "cholesky"])
def test_float32_fit_raises_when_its_float64_check_fails(solver):
    # gamma 0.01 on unit rows: every kernel value is within 0.04 of 1, so K + alpha I at
    # alpha 1e-3 has a condition number near 240 / 1e-3 = 2.4e5 and float32 keeps about 2 digits
    x = rand((300, 8), 32)
    y = np.tanh(x @ rand((8, 4), 33)) + 0.5 * rand((300, 4), 34)
    spec = R.KernelSpec("rbf", 0.01)
    with pytest.raises(FloatingPointError, match=r"rbf_g0.01 in float32 at alpha=0.001 on 240 "):
        R.fit_kernel_ridge(x, y, spec, [1e-3], solver=solver, dtype="float32")
    # a looser tolerance accepts it and records what was measured
    fit = R.fit_kernel_ridge(x, y, spec, [1e-3], solver=solver, dtype="float32", f32_tol=1.0)
    assert R.F32_TOL < fit.f32_check < 1.0


def _band_path(n, seed):
    x = torch.as_tensor(unit(rand((n, 4), seed)))
    y = torch.as_tensor(rand((n, 2), seed + 1))
    x_v = torch.as_tensor(unit(rand((3, 4), seed + 2)))

    def kern(a, b):
        return R._kernel_t(a, b, "rbf", 2.0)

    return R._BandPath(kern, x, y, x_v), kern(x, x).numpy(), y.numpy()


@pytest.mark.parametrize("n, band", [(19, 4), (16, 4), (5, 8)])
def test_band_reduction_is_an_orthogonal_similarity_to_a_band(n, band, monkeypatch):
    # 19 rows in bands of 4: 4 full blocks and one of 3; 16: 4 full blocks; 5 < 8: one block
    monkeypatch.setattr(R, "BAND_WIDTH", band)
    path, k, y = _band_path(n, seed=40)
    b = path._dense(0.0).numpy()
    q = path._q(torch.eye(n, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(q.T @ q, np.eye(n), atol=1e-14)
    np.testing.assert_allclose(q @ b @ q.T, k, atol=1e-13)
    rows, cols = np.indices((n, n))
    assert (b[np.abs(rows - cols) > band] == 0.0).all()
    np.testing.assert_allclose(b, b.T, atol=1e-14)
    np.testing.assert_allclose(path._qt(torch.as_tensor(y)).numpy(), q.T @ y, atol=1e-14)
    for alpha in (1e-3, 1.0):
        direct = np.linalg.solve(k + alpha * np.eye(n), y)
        got = path.solve(torch.as_tensor(y), alpha).numpy()
        np.testing.assert_allclose(got, direct, rtol=1e-10, atol=1e-10)


def test_band_solve_falls_back_to_lu_when_a_block_is_indefinite(monkeypatch, caplog):
    monkeypatch.setattr(R, "BAND_WIDTH", 4)
    path, k, y = _band_path(19, seed=41)
    monkeypatch.setattr(path, "_factorise", lambda alpha: None)
    got = path.solve(torch.as_tensor(y), 0.1).numpy()
    np.testing.assert_allclose(got, np.linalg.solve(k + 0.1 * np.eye(19), y), atol=1e-10)
    assert "not numerically positive definite; using LU" in caplog.text


class _ScaledSolve:
    """A float64 'solver' that returns (1 + eps) times the exact (K + alpha I)^-1 rhs."""

    def __init__(self, k, eps):
        self.k, self.eps = k, eps

    def solve(self, rhs, alpha):
        a = self.k + alpha * torch.eye(self.k.shape[0], dtype=self.k.dtype)
        return (1.0 + self.eps) * torch.linalg.solve(a, rhs)


def test_f32_check_by_hand():
    # Solution off by a factor (1 + e): the refinement step lands on (1 - e^2) times the exact
    # coefficients, so the measured relative difference is (1 + e) - (1 - e^2) over (1 - e^2).
    xt = torch.as_tensor(unit(rand((40, 5), 36)))
    xs = torch.as_tensor(unit(rand((6, 5), 37)))
    yt = torch.as_tensor(unit(rand((40, 3), 38)))
    spec, alpha, e = R.KernelSpec("rbf", 1.5), 0.1, 1e-3
    k = R._kernel_t(xt, xt, "rbf", 1.5)
    got = R._f32_check(_ScaledSolve(k, e), alpha, spec, xt, xs, yt, xt, xs)
    assert got == pytest.approx((e + e**2) / (1 - e**2), rel=1e-8)
    assert R._f32_check(_ScaledSolve(k, 0.0), alpha, spec, xt, xs, yt, xt, xs) < 1e-13


# --- validation split ---------------------------------------------------------------------------


def test_val_split_is_deterministic_disjoint_and_complete():
    train, val = R.val_split(10, 0.2, seed=0)
    perm = np.random.default_rng(0).permutation(10)
    np.testing.assert_array_equal(val, np.sort(perm[:2]))
    np.testing.assert_array_equal(train, np.sort(perm[2:]))
    again = R.val_split(10, 0.2, seed=0)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(10))
    # 5 * 0.5 = 2.5 rounds half up: 3 validation rows
    assert [len(p) for p in R.val_split(5, 0.5, seed=1)] == [2, 3]
    assert any(
        not np.array_equal(R.val_split(100, 0.2, s)[1], R.val_split(100, 0.2, 0)[1]) for s in (1, 2)
    )


@pytest.mark.parametrize(
    "n, fraction, message",
    [
        (1, 0.5, "1 validation and 0 training rows"),
        (10, 0.01, "0 validation and 10 training rows"),
        (10, 0.99, "10 validation and 0 training rows"),
        (10, 0.0, r"val_fraction must be in \(0, 1\)"),
        (-1, 0.2, "n must be an integer >= 0"),
    ],
)
def test_val_split_errors(n, fraction, message):
    with pytest.raises(ValueError, match=message):
        R.val_split(n, fraction, seed=0)
