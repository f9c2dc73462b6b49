"""Kernel ridge regression between two families' activation vectors: the ridge baseline E8 of
SPEC §6 and its benchmark of §9. Pure functions: numpy in, numpy out, no I/O; the arithmetic
runs in torch on the requested device ("cpu", "cuda", or "auto" = CUDA when present), float64
unless asked otherwise (float32 is the default on CUDA; see Precision).

inputs -> outputs
    unit_rows(x[n,d])                                 -> [n,d], each row divided by its norm
    kernel_matrix(a[n,d], b[m,d], kernel, gamma)      -> K[n,m]: "linear" a_i·b_j,
                                                         "rbf" exp(-gamma ||a_i - b_j||^2)
    KernelSpec(kernel, gamma).name                    -> "linear", "rbf_g1", "rbf_g0.5"; "rbf"
                                                         when gamma is None (gamma = 1/d)
    alpha_path(K[n,n], Y[n,k], K_val[m,n], alphas[A]) -> [A,m,k] validation predictions (eigh)
    val_split(n, val_fraction, seed)                  -> (train_idx, val_idx), sorted, disjoint,
                                                         together 0..n-1, both non-empty
    choose_solver(kernel, n, n_train, d, n_alphas)    -> "primal" | "band" | "cholesky"
    fit_kernel_ridge(x[n,d], y[n,k], spec, alphas,    -> RidgeFit (alpha chosen on an internal
                     solver="auto", dtype=None)          validation split, refit on all n pairs;
                                                         .solver, .dtype, .f32_check say how)
    fit_best(x, y, specs, alphas)                     -> {spec.name: RidgeFit}, in spec order
    RidgeFit.predict(x[m,d])                          -> [m,k]
    log_spaced_sizes, crossover                       -> re-exported from nlaprobe.scaling
                                                         (the n-scaling curve; numpy only)

Invariants
- Kernel ridge on unit-normalised vectors (SPEC §6 E8): fit_kernel_ridge and RidgeFit.predict
  divide every row of x and y by its norm before anything else; x_train of a fit holds the
  normalised rows. kernel_matrix and alpha_path take what they are given.
- The model is scikit-learn's KernelRidge, number for number: dual coefficients
  C = (K + alpha I)^-1 Y, prediction K(x, x_train) C; no intercept, no centring; gamma None
  means 1/d as there. Predictions are not renormalised (nmse and cos do not need it). Every
  solver below computes this model; they differ in rounding only (tests: validation scores
  within 1e-10 of one another, predictions within 1e-8).
- Selection: the validation score of an alpha is the mean over validation rows of
  nmse = 2(1 - cos(prediction, y)) (metrics.nmse_rows; cos clipped to [-1, 1]; a zero
  prediction scores 2, like an orthogonal one). The lowest score wins; ties (scores within
  1e-12 of the lowest, i.e. equal up to rounding) go to the larger alpha (more
  regularisation). The chosen alpha is then refitted on all n pairs.

Solvers (t: the selection's n_t training rows, v: its m validation rows, A alphas)
- "primal", the linear kernel only: G = X_t^T X_t = U diag(s) U^T once (d x d), predictions
  X_v U diag(1/(s + alpha)) U^T X_t^T Y_t for every alpha; refit W = (X^T X + alpha I)^-1 X^T Y
  by one d x d Cholesky, C = (Y - X W) / alpha, RidgeFit.weight = W. The same model: by
  X^T (X X^T + alpha I)^-1 = (X^T X + alpha I)^-1 X^T, x W = K(x, X) C. Always float64.
- "band": K_tt = Q B Q^T once, B symmetric with half-bandwidth BAND_WIDTH (blocked two-sided
  Householder transformations, all GEMMs: the first stage of a two-stage eigensolver); every
  alpha is one block-tridiagonal Cholesky of B + alpha I (O(n_t b^2)), predictions
  (K_vt Q) (B + alpha I)^-1 Q^T Y_t; refit by block elimination on the same reduction (the
  m x m Schur complement of K_tt + alpha I, one m x m Cholesky): no n x n matrix is built.
- "eigh": the same with K_tt = V diag(w) V^T (eigenvalues that rounding pushed below 0 are set
  to 0, a change at rounding level that keeps w + alpha >= alpha > 0), predictions
  (K_vt V) diag(1/(w + alpha)) V^T Y_t, the refit by the same block elimination.
- "cholesky": one Cholesky factorisation of K_tt + alpha I per alpha; refit with one Cholesky of
  K + alpha I (n x n, built after the selection's matrices are released).
- When rounding leaves K + alpha I (or B + alpha I) numerically indefinite (alpha tiny against
  ||K||), LU with a warning.
- Cost model of "auto" (choose_solver), in Cholesky factorisations of K_tt (n_t^3 / 3 flops):
  band costs BAND_COST (its reduction, ~2 n_t^3 flops of GEMMs, and the products by Q; measured
  4.8-6.5 at n_t = 3,200 with MKL on 1 thread, docs/measurements.md; its per-alpha O(n_t b^2) is
  neglected), cholesky A + (n / n_t)^3 (the refit on all n). "primal" whenever the kernel is
  linear and d < n_t; otherwise band when A + (n / n_t)^3 > BAND_COST, so from 4 alphas on at
  val_fraction 0.2. An eigendecomposition costs 11-36 Cholesky factorisations on the same
  machine (its
  tridiagonalisation is bound by memory bandwidth, which other work on the machine shares), so
  auto never takes eigh; it stays to be asked for (e.g. on a GPU, where it is one library call).

Precision
- dtype None is float32 on CUDA and float64 elsewhere; "float64" or "float32" force either.
  float32 applies to the kernel solvers (band, eigh, cholesky): kernels, factorisations and the
  refit.
- A float32 fit is checked at its chosen alpha: on F32_CHECK_ROWS validation rows (a seeded
  subsample) its predictions are compared with float64 ones obtained by one step of iterative
  refinement (the residual Y_t - (K_tt + alpha I) C in float64, from the rows themselves, solved
  with the float32 factorisation). The largest relative row difference is RidgeFit.f32_check;
  above f32_tol (F32_TOL = 1e-4) the fit raises FloatingPointError. Only the chosen alpha is
  checked: a float32 error that makes a better alpha look worse goes unseen.
- Deterministic given seed: the random choices are val_split's permutation and the float32
  check's rows, both np.random.default_rng(seed); two CPU runs give identical arrays.
- Bad input raises ValueError naming the argument and, for rows, the first offending row:
  non-2-D or empty arrays, width or row-count mismatches, NaN/inf, zero rows, alphas that are
  not finite and > 0 or that repeat, an unknown kernel, device, solver or dtype (with the valid
  ones), the primal solver with a non-linear kernel.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from nlaprobe.metrics import row_norms
from nlaprobe.models.device import resolve_device
from nlaprobe.scaling import crossover, log_spaced_sizes  # noqa: F401  (the E8 API in one place)

log = logging.getLogger(__name__)

KERNELS = ("linear", "rbf")
SOLVERS = ("auto", "primal", "band", "eigh", "cholesky")
DTYPES = ("float64", "float32")
CROSSOVER_STATUSES = ("reached", "extrapolated", "never")

# Validation scores (mean nmse, in [0, 4]) this close to the lowest are a tie: equal up to rounding.
_TIE_TOL = 1e-12


# --- input checks -------------------------------------------------------------------------------


def _matrix(x: ArrayLike, name: str) -> np.ndarray:
    """`x` as a finite float64 [n, d] matrix with n, d >= 1."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__} ({exc})") from None
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape [n, d], got shape {a.shape}")
    if a.size == 0:
        raise ValueError(
            f"{name} is empty (shape {a.shape}); expected at least one row of width >= 1"
        )
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{name} row {row} has a non-finite value (NaN or inf) at column {col}")
    return a


def _alphas(alphas: ArrayLike) -> np.ndarray:
    try:
        a = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"alphas must be a sequence of numbers ({exc})") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"alphas must be a non-empty 1-D sequence, got shape {a.shape}")
    bad = np.nonzero(~(np.isfinite(a) & (a > 0)))[0]
    if bad.size:
        raise ValueError(
            f"alphas[{bad[0]}] = {float(a[bad[0]])!r}; every alpha must be finite and > 0"
        )
    uniq, counts = np.unique(a, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"alphas repeat {float(uniq[counts > 1][0])!r}; give each alpha once")
    return a


def _tensor(a: np.ndarray, dev: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(a, dtype=dtype, device=dev)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


# --- vectors and kernels ------------------------------------------------------------------------


def unit_rows(x: ArrayLike, *, name: str = "x") -> np.ndarray:
    """Every row of the [n, d] matrix `x` divided by its Euclidean norm (float64).
    A zero row (no direction) or a non-finite one is a ValueError naming the row."""
    a = _matrix(x, name)
    return a / row_norms(a, name)[:, None]


def _check_kernel(kernel: Any, gamma: Any) -> float | None:
    """Validated gamma (None = 1/d for rbf, always None for linear)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    if kernel == "linear":
        if gamma is not None:
            raise ValueError(f"the linear kernel takes no gamma, got gamma={gamma!r}")
        return None
    if gamma is None:
        return None
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise ValueError(f"gamma must be a number > 0 or None, got {gamma!r}")
    g = float(gamma)
    if not (math.isfinite(g) and g > 0):
        raise ValueError(f"gamma must be finite and > 0, got {gamma!r}")
    return g


def _kernel_t(a: torch.Tensor, b: torch.Tensor, kernel: str, gamma: float | None) -> torch.Tensor:
    """Kernel matrix of torch rows; `b is a` marks a Gram matrix (exact zero self-distances)."""
    dots = a @ b.T
    if kernel == "linear":
        return dots
    g = 1.0 / a.shape[1] if gamma is None else gamma
    # ||a_i||^2 + ||b_j||^2 - 2 a_i·b_j in the buffer of the products: one [n, m] matrix, no
    # temporaries of that size (a 20,000-pair kernel is 3.2 GB in float64)
    sq = dots.mul_(-2.0)
    sq += (a * a).sum(dim=1)[:, None]
    sq += (b * b).sum(dim=1)[None, :]
    sq.clamp_(min=0.0)
    if b is a:
        # ||a_i - a_i||^2 is 0; the expansion above leaves rounding residue on the diagonal.
        sq.fill_diagonal_(0.0)
    return sq.mul_(-g).exp_()


def kernel_matrix(
    a: ArrayLike,
    b: ArrayLike,
    kernel: str,
    gamma: float | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """K[i, j] = k(a_i, b_j) for [n, d] and [m, d] inputs -> [n, m] (float64).
    "linear": a_i·b_j; "rbf": exp(-gamma ||a_i - b_j||^2), gamma None = 1/d."""
    g = _check_kernel(kernel, gamma)
    am, bm = _matrix(a, "a"), _matrix(b, "b")
    if am.shape[1] != bm.shape[1]:
        raise ValueError(f"a and b must have the same width, got {am.shape[1]} and {bm.shape[1]}")
    dev = resolve_device(device)
    at = _tensor(am, dev)
    bt = at if b is a else _tensor(bm, dev)
    return _numpy(_kernel_t(at, bt, kernel, g))


@dataclass(frozen=True)
class KernelSpec:
    """A kernel and its parameter; each RBF gamma is its own spec."""

    kernel: str
    gamma: float | None = None

    def __post_init__(self) -> None:
        g = _check_kernel(self.kernel, self.gamma)
        object.__setattr__(self, "gamma", g)

    @property
    def name(self) -> str:
        """The spec's label: "linear"; "rbf_g<gamma>" in the shortest form that reads back as the
        same float ("rbf_g1", "rbf_g0.5", "rbf_g0.001"); "rbf" for gamma None (1/d)."""
        if self.gamma is None:
            return self.kernel
        text = f"{self.gamma:g}"
        if float(text) != self.gamma:
            text = repr(self.gamma)
        return f"{self.kernel}_g{text}"


# --- solvers and their cost --------------------------------------------------------------------

# Time of one band reduction of an n x n kernel matrix (with the products by its orthogonal
# factor) in Cholesky factorisations of the same matrix: torch 2.13 with MKL, float64, 1 thread,
# on this project's CPU machine (measured 4.8-6.5 at n = 3,200 over three runs, 7.0 at 1,200; an
# eigendecomposition, 11-36 as the machine's load varies; printed by
# benchmarks/ridge_alpha_path.py, docs/measurements.md "Benchmarks").
BAND_COST = 5.0
# Half-bandwidth of the band reduction: rows per Householder panel (GEMMs of this width).
BAND_WIDTH = 128

# float32 fits: the float64 check of the chosen alpha's validation predictions looks at this many
# validation rows (a seeded subsample) and accepts a largest relative row difference up to F32_TOL.
F32_CHECK_ROWS = 256
F32_TOL = 1e-4
# Rows of the float64 kernel built at a time by that check (a [rows, n] block).
_BLOCK_ROWS = 2048


def choose_solver(kernel: str, *, n: int, n_train: int, d: int, n_alphas: int) -> str:
    """The cheapest exact solver of a fit on n pairs of width d (n_train of them in the selection's
    training part) over n_alphas alphas: "primal" for the linear kernel with d < n_train; else
    "band" when n_alphas + (n / n_train)^3 > BAND_COST, "cholesky" otherwise (the cost model of
    the module docstring). "eigh" is never the cheapest on the CPU; it is there to be asked for."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    if kernel == "linear" and d < n_train:
        return "primal"
    return "band" if n_alphas + (n / n_train) ** 3 > BAND_COST else "cholesky"


def _resolve_solver(solver: str, kernel: str, **sizes: int) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
    if solver == "auto":
        return choose_solver(kernel, **sizes)
    if solver == "primal" and kernel != "linear":
        raise ValueError(f"solver 'primal' needs the linear kernel, got kernel {kernel!r}")
    return solver


def _resolve_dtype(dtype: str | None, dev: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32 if dev.type == "cuda" else torch.float64
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)} or None")
    return getattr(torch, dtype)


# --- fitting ------------------------------------------------------------------------------------


@dataclass
class RidgeFit:
    """A kernel ridge fit on unit-normalised rows: predict(x) = K(unit(x), x_train) dual_coef,
    computed as unit(x) weight when the primal weight is present (the linear kernel's primal form;
    the same numbers up to rounding)."""

    spec: KernelSpec
    alpha: float
    x_train: np.ndarray  # [n, d_in], unit rows: every pair, not only the selection's train part
    dual_coef: np.ndarray  # [n, d_out]
    val_scores: dict[float, float] = field(default_factory=dict)  # alpha -> mean val nmse
    weight: np.ndarray | None = None  # [d_in, d_out], primal form only: x_train^T dual_coef
    solver: str = "eigh"  # "primal", "eigh" or "cholesky"
    dtype: str = "float64"  # of the kernel arithmetic ("float32": see f32_check)
    f32_check: float | None = None  # float32 fits: largest relative row difference measured

    def predict(self, x: ArrayLike, device: str = "cpu") -> np.ndarray:
        """Predictions for the rows of `x` ([m, d_in] -> [m, d_out]); rows are unit-normalised
        first, as in training."""
        xu = unit_rows(x)
        if xu.shape[1] != self.x_train.shape[1]:
            raise ValueError(
                f"x must have width {self.x_train.shape[1]} (the training rows), got {xu.shape[1]}"
            )
        dev = resolve_device(device)
        if self.weight is not None:
            return _numpy(_tensor(xu, dev) @ _tensor(self.weight, dev))
        k = _kernel_t(
            _tensor(xu, dev), _tensor(self.x_train, dev), self.spec.kernel, self.spec.gamma
        )
        return _numpy(k @ _tensor(self.dual_coef, dev))


def _path_t(
    k_train: torch.Tensor, y: torch.Tensor, k_val: torch.Tensor, alphas: torch.Tensor
) -> torch.Tensor:
    w, v = torch.linalg.eigh(k_train)
    w.clamp_(min=0.0)
    q = v.T @ y  # [n, k]
    scaled = q[None, :, :] / (w[None, :, None] + alphas[:, None, None])  # [A, n, k]
    n_val, n = k_val.shape
    n_alpha, _, k = scaled.shape
    # Same numbers either way; multiply in the order with fewer flops.
    if n_val <= n_alpha * k:
        return (k_val @ v) @ scaled  # [m, n] @ [A, n, k]
    coef = (v @ scaled.permute(1, 0, 2).reshape(n, n_alpha * k)).reshape(n, n_alpha, k)
    return (k_val @ coef.reshape(n, n_alpha * k)).reshape(n_val, n_alpha, k).permute(1, 0, 2)


def alpha_path(
    k_train: ArrayLike,
    y_train: ArrayLike,
    k_val: ArrayLike,
    alphas: ArrayLike,
    device: str = "cpu",
) -> np.ndarray:
    """Validation predictions K_val (K_train + alpha I)^-1 Y for every alpha from one
    eigendecomposition of K_train: [n, n], [n, k], [m, n], [A] -> [A, m, k] (alphas in the
    given order)."""
    kt, yt, kv = _matrix(k_train, "k_train"), _matrix(y_train, "y_train"), _matrix(k_val, "k_val")
    n = kt.shape[0]
    if kt.shape != (n, n):
        raise ValueError(f"k_train must be square, got shape {kt.shape}")
    if yt.shape[0] != n:
        raise ValueError(f"y_train must have {n} rows (one per k_train row), got {yt.shape[0]}")
    if kv.shape[1] != n:
        raise ValueError(f"k_val must have {n} columns (one per training row), got {kv.shape[1]}")
    al = _alphas(alphas)
    dev = resolve_device(device)
    out = _path_t(_tensor(kt, dev), _tensor(yt, dev), _tensor(kv, dev), _tensor(al, dev))
    return _numpy(out)


def val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) of rows 0..n-1: round(n * val_fraction) rows (halves up) drawn by
    np.random.default_rng(seed).permutation(n) form the validation part; both parts sorted.
    A part that would be empty is a ValueError."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    f = float(val_fraction)
    if not (0.0 < f < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    n_val = math.floor(n * f + 0.5)
    if n_val < 1 or n_val > n - 1:
        raise ValueError(
            f"val_split of n={n} rows at val_fraction={f} gives {n_val} validation and "
            f"{n - n_val} training rows; both parts must be non-empty"
        )
    perm = np.random.default_rng(int(seed)).permutation(int(n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _mean_nmse_t(pred: torch.Tensor, y_unit: torch.Tensor) -> torch.Tensor:
    """Mean over rows of 2(1 - cos(pred, y)) for unit rows y; pred [..., m, k] -> [...]."""
    norms = torch.linalg.vector_norm(pred, dim=-1)
    dots = (pred * y_unit).sum(dim=-1)
    cos = torch.where(norms > 0, dots / torch.where(norms > 0, norms, 1.0), 0.0)
    return (2.0 * (1.0 - cos.clamp(-1.0, 1.0))).mean(dim=-1)


def _solve_t(k: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """(K + alpha I)^-1 Y by Cholesky; K is overwritten."""
    k.diagonal().add_(alpha)
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) == 0:
        return torch.cholesky_solve(y, chol)
    # Rounding can leave K + alpha I numerically indefinite when alpha is tiny against ||K||.
    log.warning("K + alpha I (alpha=%g) is not numerically positive definite; using LU", alpha)
    return torch.linalg.solve(k, y)


class _EighPath:
    """Selection and refit from one eigendecomposition K_tt = V diag(w) V^T of the training part's
    kernel (t: the selection's training rows, v: its validation rows)."""

    def __init__(self, kern, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor) -> None:
        k_tt = kern(x_t, x_t)
        self.w, self.v = torch.linalg.eigh(k_tt)
        del k_tt
        self.w.clamp_(min=0.0)
        self.p = kern(x_v, x_t) @ self.v  # [m, n_t] = K_vt V
        self.q = self.v.T @ y_t  # [n_t, k] = V^T Y_t
        self.kern, self.x_v = kern, x_v

    def val_pred(self, alpha: float) -> torch.Tensor:
        return self.p @ (self.q / (self.w + alpha)[:, None])

    def solve(self, rhs: torch.Tensor, alpha: float) -> torch.Tensor:
        """(K_tt + alpha I)^-1 rhs."""
        return self.v @ ((self.v.T @ rhs) / (self.w + alpha)[:, None])

    def refit(self, y_v: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Dual coefficients (C_t, C_v) of all pairs by block elimination of
        [[K_tt, K_tv], [K_vt, K_vv]] + alpha I: the Schur complement
        S = K_vv + alpha I - K_vt (K_tt + alpha I)^-1 K_tv (m x m, one Cholesky), then
        C_v = S^-1 (Y_v - K_vt (K_tt + alpha I)^-1 Y_t), C_t = (K_tt + alpha I)^-1 (Y_t - K_tv C_v);
        every inverse of K_tt + alpha I through the eigendecomposition."""
        h = 1.0 / (self.w + alpha)
        s = self.kern(self.x_v, self.x_v)
        s -= (self.p * h) @ self.p.T
        c_v = _solve_t(s, y_v - self.val_pred(alpha), alpha)
        c_t = self.v @ (h[:, None] * (self.q - self.p.T @ c_v))
        return c_t, c_v


class _CholeskyPath:
    """Selection with one Cholesky factorisation of K_tt + alpha I per alpha."""

    def __init__(self, kern, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor) -> None:
        self.k_tt = kern(x_t, x_t)
        self.k_vt = kern(x_v, x_t)
        self.y_t = y_t

    def val_pred(self, alpha: float) -> torch.Tensor:
        return self.k_vt @ self.solve(self.y_t, alpha)

    def solve(self, rhs: torch.Tensor, alpha: float) -> torch.Tensor:
        """(K_tt + alpha I)^-1 rhs."""
        return _solve_t(self.k_tt.clone(), rhs, alpha)


def _larft(v: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Upper triangular T with H_1 H_2 ... H_k = I - V T V^T for the Householder reflectors
    H_i = I - tau_i v_i v_i^T of torch.geqrf (unit lower trapezoidal V)."""
    k = tau.shape[0]
    t = torch.zeros(k, k, dtype=v.dtype, device=v.device)
    vtv = v.T @ v
    for i in range(k):
        t[i, i] = tau[i]
        if i:
            t[:i, i] = -tau[i] * (t[:i, :i] @ vtv[:i, i])
    return t


class _BandPath:
    """Selection and refit from one orthogonal reduction K_tt = Q B Q^T to a symmetric band matrix
    B of half-bandwidth b (BAND_WIDTH): blocked two-sided Householder transformations, GEMMs
    throughout (the first stage of a two-stage eigensolver, without the second). B + alpha I is
    block tridiagonal with b x b blocks, so every alpha costs one block Cholesky, O(n b^2)."""

    def __init__(self, kern, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor) -> None:
        a = kern(x_t, x_t)  # reduced in place
        n, b = a.shape[0], BAND_WIDTH
        self.reflectors: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.sub: list[torch.Tensor] = []  # B[block k+1, block k], upper trapezoidal
        for j0 in range(0, n - b, b):
            r0 = j0 + b
            qr, tau = torch.geqrf(a[r0:, j0:r0])
            k = tau.shape[0]
            v = torch.tril(qr[:, :k], -1)
            v.diagonal().fill_(1.0)
            t = _larft(v, tau)
            self.sub.append(torch.triu(qr[:k, :]))
            # trailing C <- H^T C H with H = I - V T V^T: C - Z V^T - V Z^T, where W = C V T,
            # Z = W - V (T^T V^T W) / 2
            c = a[r0:, r0:]
            w = (c @ v) @ t
            z = w - 0.5 * (v @ (t.T @ (v.T @ w)))
            c.addmm_(z, v.T, alpha=-1.0).addmm_(v, z.T, alpha=-1.0)
            self.reflectors.append((r0, v, t))
        self.diag = [a[i : i + b, i : i + b].clone() for i in range(0, n, b)]
        del a
        self.pt = self._qt(kern(x_v, x_t).T)  # [n_t, m] = Q^T K_tv
        self.yt = self._qt(y_t)  # [n_t, k] = Q^T Y_t
        self.kern, self.x_v = kern, x_v
        self._factor: tuple[float, list[torch.Tensor], list[torch.Tensor]] | None = None

    def _qt(self, y: torch.Tensor) -> torch.Tensor:
        """Q^T y = H_p^T ... H_1^T y."""
        y = y.clone()
        for r0, v, t in self.reflectors:
            y[r0:] -= v @ (t.T @ (v.T @ y[r0:]))
        return y

    def _q(self, z: torch.Tensor) -> torch.Tensor:
        """Q z = H_1 ... H_p z."""
        for r0, v, t in reversed(self.reflectors):
            z[r0:] -= v @ (t @ (v.T @ z[r0:]))
        return z

    def _factorise(self, alpha: float) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """Block Cholesky of B + alpha I: diagonal factors L_k and F_k = B[k, k-1] L_(k-1)^-T;
        None when rounding leaves a block numerically indefinite."""
        if self._factor is not None and self._factor[0] == alpha:
            return self._factor[1], self._factor[2]
        ls: list[torch.Tensor] = []
        fs: list[torch.Tensor] = []
        for k, d in enumerate(self.diag):
            m = d.clone()
            m.diagonal().add_(alpha)
            if k:
                f = torch.linalg.solve_triangular(ls[-1].T, self.sub[k - 1], upper=True, left=False)
                m -= f @ f.T
                fs.append(f)
            chol, info = torch.linalg.cholesky_ex(m)
            if int(info) != 0:
                return None
            ls.append(chol)
        self._factor = (alpha, ls, fs)
        return ls, fs

    def _band_solve(self, r: torch.Tensor, alpha: float) -> torch.Tensor:
        """(B + alpha I)^-1 r."""
        factor = self._factorise(alpha)
        if factor is None:
            log.warning(
                "B + alpha I (alpha=%g) is not numerically positive definite; using LU", alpha
            )
            return torch.linalg.solve(self._dense(alpha), r)
        ls, fs = factor
        b = BAND_WIDTH
        z = r.clone()
        for k, chol in enumerate(ls):
            blk = z[k * b : k * b + chol.shape[0]]
            if k:
                blk -= fs[k - 1] @ z[(k - 1) * b : k * b]
            blk.copy_(torch.linalg.solve_triangular(chol, blk, upper=False))
        for k in range(len(ls) - 1, -1, -1):
            chol = ls[k]
            blk = z[k * b : k * b + chol.shape[0]]
            if k + 1 < len(ls):
                blk -= fs[k].T @ z[(k + 1) * b : (k + 1) * b + ls[k + 1].shape[0]]
            blk.copy_(torch.linalg.solve_triangular(chol.T, blk, upper=True))
        return z

    def _dense(self, alpha: float) -> torch.Tensor:
        n, b = sum(d.shape[0] for d in self.diag), BAND_WIDTH
        out = torch.zeros(n, n, dtype=self.diag[0].dtype, device=self.diag[0].device)
        for k, d in enumerate(self.diag):
            out[k * b : k * b + d.shape[0], k * b : k * b + d.shape[0]] = d
        for k, e in enumerate(self.sub):
            rows = slice((k + 1) * b, (k + 1) * b + e.shape[0])
            out[rows, k * b : (k + 1) * b] = e
            out[k * b : (k + 1) * b, rows] = e.T
        out.diagonal().add_(alpha)
        return out

    def val_pred(self, alpha: float) -> torch.Tensor:
        return self.pt.T @ self._band_solve(self.yt, alpha)

    def solve(self, rhs: torch.Tensor, alpha: float) -> torch.Tensor:
        """(K_tt + alpha I)^-1 rhs = Q (B + alpha I)^-1 Q^T rhs."""
        return self._q(self._band_solve(self._qt(rhs), alpha))

    def refit(self, y_v: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Dual coefficients (C_t, C_v) of all pairs by block elimination, as _EighPath.refit,
        with (K_tt + alpha I)^-1 = Q (B + alpha I)^-1 Q^T."""
        s = self.kern(self.x_v, self.x_v)
        s -= self.pt.T @ self._band_solve(self.pt, alpha)
        c_v = _solve_t(s, y_v - self.val_pred(alpha), alpha)
        c_t = self._q(self._band_solve(self.yt - self.pt @ c_v, alpha))
        return c_t, c_v


def _f32_check(
    path: _BandPath | _EighPath | _CholeskyPath,
    alpha: float,
    spec: KernelSpec,
    x_t: torch.Tensor,
    x_s: torch.Tensor,
    y_t64: torch.Tensor,
    x_t64: torch.Tensor,
    x_s64: torch.Tensor,
) -> float:
    """Largest relative row difference ||p64 - p32|| / ||p64|| of the validation predictions of
    the rows x_s at `alpha`: p32 from the float32 solve, p64 after one step of iterative
    refinement with the float64 residual Y_t - (K_tt + alpha I) C computed from the rows
    themselves (kernel in float64, [_BLOCK_ROWS, n_t] at a time)."""
    dt = x_t.dtype
    coef = path.solve(y_t64.to(dt), alpha)
    p32 = (_kernel_t(x_s, x_t, spec.kernel, spec.gamma) @ coef).to(torch.float64)
    c64 = coef.to(torch.float64)
    resid = y_t64 - alpha * c64
    for i in range(0, x_t64.shape[0], _BLOCK_ROWS):
        block = _kernel_t(x_t64[i : i + _BLOCK_ROWS], x_t64, spec.kernel, spec.gamma)
        resid[i : i + _BLOCK_ROWS] -= block @ c64
    c64 += path.solve(resid.to(dt), alpha).to(torch.float64)
    p64 = _kernel_t(x_s64, x_t64, spec.kernel, spec.gamma) @ c64
    norms = torch.linalg.vector_norm(p64, dim=1)
    diff = torch.linalg.vector_norm(p64 - p32, dim=1) / torch.where(norms > 0, norms, 1.0)
    return float(diff.max())


def _pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xu, yu = unit_rows(x, name="x"), unit_rows(y, name="y")
    if xu.shape[0] != yu.shape[0]:
        raise ValueError(
            f"x and y must hold the same pairs (rows), got {xu.shape[0]} and {yu.shape[0]} rows"
        )
    return xu, yu


def _choose_alpha(alphas: np.ndarray, scores: Sequence[float]) -> tuple[dict[float, float], float]:
    val_scores = {float(a): float(s) for a, s in zip(alphas, scores, strict=True)}
    best = min(val_scores.values())
    return val_scores, max(a for a, s in val_scores.items() if s <= best + _TIE_TOL)


def _fit_primal(
    xu: np.ndarray,
    yu: np.ndarray,
    spec: KernelSpec,
    alphas: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    dev: torch.device,
) -> RidgeFit:
    """The linear kernel in primal form, float64: G = X_t^T X_t = U diag(s) U^T once, then
    predictions X_v U diag(1/(s + alpha)) U^T X_t^T Y_t for every alpha; the refit solves
    (X^T X + alpha I) W = X^T Y on all pairs by Cholesky, and C = (Y - X W) / alpha."""
    x_all, y_all = _tensor(xu, dev), _tensor(yu, dev)
    x_t, y_t = x_all[train], y_all[train]
    s, u = torch.linalg.eigh(x_t.T @ x_t)
    s.clamp_(min=0.0)
    q = u.T @ (x_t.T @ y_t)  # [d, k]
    p = x_all[val] @ u  # [m, d]
    y_v = y_all[val]
    scores = [float(_mean_nmse_t(p @ (q / (s + a)[:, None]), y_v)) for a in alphas.tolist()]
    val_scores, alpha = _choose_alpha(alphas, scores)
    weight = _solve_t(x_all.T @ x_all, x_all.T @ y_all, alpha)
    coef = (y_all - x_all @ weight) / alpha
    return RidgeFit(
        spec, alpha, xu, _numpy(coef), val_scores, weight=_numpy(weight), solver="primal"
    )


def _fit_dual(
    xu: np.ndarray,
    yu: np.ndarray,
    spec: KernelSpec,
    alphas: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    dev: torch.device,
    solver: str,
    dt: torch.dtype,
    seed: int,
    f32_tol: float,
) -> RidgeFit:
    def kern(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _kernel_t(a, b, spec.kernel, spec.gamma)

    x_all, y_all = _tensor(xu, dev, dt), _tensor(yu, dev, dt)
    x_t, x_v, y_v = x_all[train], x_all[val], y_all[val]
    path_cls = {"band": _BandPath, "eigh": _EighPath, "cholesky": _CholeskyPath}[solver]
    path = path_cls(kern, x_t, y_all[train], x_v)
    y_v64 = y_v.to(torch.float64)
    scores = [
        float(_mean_nmse_t(path.val_pred(a).to(torch.float64), y_v64)) for a in alphas.tolist()
    ]
    val_scores, alpha = _choose_alpha(alphas, scores)
    check = None
    if dt != torch.float64:
        rows = np.sort(
            np.random.default_rng(seed).choice(
                val.size, size=min(val.size, F32_CHECK_ROWS), replace=False
            )
        )
        x64 = _tensor(xu, dev)
        check = _f32_check(
            path,
            alpha,
            spec,
            x_t,
            x_v[rows],
            _tensor(yu[train], dev),
            x64[train],
            x64[val[rows]],
        )
        if check > f32_tol:
            raise FloatingPointError(
                f"kernel ridge {spec.name} in {str(dt).removeprefix('torch.')} at alpha={alpha:g} "
                f"on {train.size} training pairs: validation predictions differ from float64 by "
                f"up to {check:.3g} (relative, {rows.size} rows checked), above the tolerance "
                f"{f32_tol:g}; fit in float64 (dtype='float64' or device='cpu') or use larger "
                "alphas"
            )
        log.info(
            "kernel ridge %s: float32 vs float64 check %.3g (rows %d)", spec.name, check, rows.size
        )
    if isinstance(path, _BandPath | _EighPath):
        c_t, c_v = path.refit(y_v, alpha)
        coef = torch.empty_like(y_all)
        coef[train], coef[val] = c_t, c_v
    else:
        # The full Gram matrix is built only now, after the selection's matrices are released.
        del path
        coef = _solve_t(kern(x_all, x_all), y_all, alpha)
    return RidgeFit(
        spec,
        alpha,
        xu,
        _numpy(coef.to(torch.float64)),
        val_scores,
        solver=solver,
        dtype=str(dt).removeprefix("torch."),
        f32_check=check,
    )


def _fit_unit(
    xu: np.ndarray,
    yu: np.ndarray,
    spec: KernelSpec,
    alphas: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    dev: torch.device,
    solver: str,
    dtype: str | None,
    seed: int,
    f32_tol: float,
) -> RidgeFit:
    chosen = _resolve_solver(
        solver, spec.kernel, n=xu.shape[0], n_train=train.size, d=xu.shape[1], n_alphas=alphas.size
    )
    if chosen == "primal":
        fit = _fit_primal(xu, yu, spec, alphas, train, val, dev)
    else:
        dt = _resolve_dtype(dtype, dev)
        fit = _fit_dual(xu, yu, spec, alphas, train, val, dev, chosen, dt, seed, f32_tol)
    log.info(
        "kernel ridge %s (%s, %s): alpha=%g chosen on %d validation rows (mean nmse %.6f); "
        "refit on %d pairs",
        spec.name,
        fit.solver,
        fit.dtype,
        fit.alpha,
        val.size,
        fit.val_scores[fit.alpha],
        xu.shape[0],
    )
    return fit


def fit_kernel_ridge(
    x: ArrayLike,
    y: ArrayLike,
    spec: KernelSpec,
    alphas: ArrayLike,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    solver: str = "auto",
    dtype: str | None = None,
    f32_tol: float = F32_TOL,
) -> RidgeFit:
    """Kernel ridge from the [n, d_in] rows of x to the [n, d_out] rows of y (both unit-normalised
    here): alpha chosen by the lowest mean validation nmse on val_split(n, val_fraction, seed)
    (ties -> the larger alpha), then refitted on all n. `solver` "auto" takes the cheapest of
    "primal", "eigh", "cholesky" (choose_solver); `dtype` None is float32 on CUDA, float64
    elsewhere; float32 fits are checked against float64 (f32_tol; module docstring)."""
    if not isinstance(spec, KernelSpec):
        raise ValueError(f"spec must be a KernelSpec, got {type(spec).__name__}")
    xu, yu = _pairs(x, y)
    al = _alphas(alphas)
    train, val = val_split(xu.shape[0], val_fraction, seed)
    dev = resolve_device(device)
    return _fit_unit(xu, yu, spec, al, train, val, dev, solver, dtype, seed, f32_tol)


def fit_best(
    x: ArrayLike,
    y: ArrayLike,
    specs: Sequence[KernelSpec],
    alphas: ArrayLike,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    solver: str = "auto",
    dtype: str | None = None,
    f32_tol: float = F32_TOL,
) -> dict[str, RidgeFit]:
    """fit_kernel_ridge for every spec on the same split: {spec.name: RidgeFit}, in spec order.
    The caller decides the grids (each RBF gamma is its own spec)."""
    specs = list(specs)
    if not specs:
        raise ValueError("specs is empty; give at least one KernelSpec")
    names: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, KernelSpec):
            raise ValueError(f"specs[{i}] must be a KernelSpec, got {type(spec).__name__}")
        if spec.name in names:
            raise ValueError(f"specs[{i}] repeats specs[{names[spec.name]}] ({spec.name!r})")
        names[spec.name] = i
    xu, yu = _pairs(x, y)
    al = _alphas(alphas)
    train, val = val_split(xu.shape[0], val_fraction, seed)
    dev = resolve_device(device)
    return {
        s.name: _fit_unit(xu, yu, s, al, train, val, dev, solver, dtype, seed, f32_tol)
        for s in specs
    }
