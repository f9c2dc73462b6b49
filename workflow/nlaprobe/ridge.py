"""Kernel ridge regression between two families' activation vectors: the ridge baseline E8 of
SPEC §6 and its benchmark of §9. Pure functions: numpy in, numpy out, no I/O; the arithmetic
runs in torch float64 on the requested device ("cpu", "cuda", or "auto" = CUDA when present).

inputs -> outputs
    unit_rows(x[n,d])                                 -> [n,d], each row divided by its norm
    kernel_matrix(a[n,d], b[m,d], kernel, gamma)      -> K[n,m]: "linear" a_i·b_j,
                                                         "rbf" exp(-gamma ||a_i - b_j||^2)
    KernelSpec(kernel, gamma).name                    -> "linear", "rbf_g1", "rbf_g0.5"; "rbf"
                                                         when gamma is None (gamma = 1/d)
    alpha_path(K[n,n], Y[n,k], K_val[m,n], alphas[A]) -> [A,m,k] validation predictions
    val_split(n, val_fraction, seed)                  -> (train_idx, val_idx), sorted, disjoint,
                                                         together 0..n-1, both non-empty
    fit_kernel_ridge(x[n,d], y[n,k], spec, alphas)    -> RidgeFit (alpha chosen on an internal
                                                         validation split, refit on all n pairs)
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
  means 1/d as there. Predictions are not renormalised (nmse and cos do not need it).
- Selection: the validation score of an alpha is the mean over validation rows of
  nmse = 2(1 - cos(prediction, y)) (metrics.nmse_rows; cos clipped to [-1, 1]; a zero
  prediction scores 2, like an orthogonal one). The lowest score wins; ties (scores within
  1e-12 of the lowest, i.e. equal up to rounding) go to the larger alpha (more
  regularisation). The chosen alpha is then refitted on all n pairs with one Cholesky
  factorisation of K + alpha I.
- One eigendecomposition per (n, kernel, kernel parameter), reused for every alpha:
  K_train = V diag(w) V^T, coef(alpha) = V diag(1/(w + alpha)) V^T Y, pred = K_val coef.
  A kernel matrix is positive semi-definite, so eigenvalues that rounding pushed below 0 are
  set to 0 (a change at rounding level that keeps w + alpha >= alpha > 0).
- Deterministic given seed: the only random choice is val_split's permutation,
  np.random.default_rng(seed); two CPU runs give identical arrays.
- float64 throughout, whatever the input dtype (activation vectors arrive as float32).
- Bad input raises ValueError naming the argument and, for rows, the first offending row:
  non-2-D or empty arrays, width or row-count mismatches, NaN/inf, zero rows, alphas that are
  not finite and > 0 or that repeat, an unknown kernel or device (with the valid ones).
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
from nlaprobe.scaling import crossover, log_spaced_sizes  # noqa: F401  (the E8 API in one place)

log = logging.getLogger(__name__)

KERNELS = ("linear", "rbf")
DEVICES = ("auto", "cpu", "cuda")
CROSSOVER_STATUSES = ("reached", "extrapolated", "never")

_DTYPE = torch.float64

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


def _resolve_device(device: str | torch.device) -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but no CUDA GPU is available")
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")


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


def _tensor(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.as_tensor(a, dtype=_DTYPE, device=dev)


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
    sq = (a * a).sum(dim=1)[:, None] + (b * b).sum(dim=1)[None, :] - 2.0 * dots
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
    dev = _resolve_device(device)
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


# --- fitting ------------------------------------------------------------------------------------


@dataclass
class RidgeFit:
    """A kernel ridge fit on unit-normalised rows: predict(x) = K(unit(x), x_train) dual_coef."""

    spec: KernelSpec
    alpha: float
    x_train: np.ndarray  # [n, d_in], unit rows: every pair, not only the selection's train part
    dual_coef: np.ndarray  # [n, d_out]
    val_scores: dict[float, float] = field(default_factory=dict)  # alpha -> mean val nmse

    def predict(self, x: ArrayLike, device: str = "cpu") -> np.ndarray:
        """Predictions for the rows of `x` ([m, d_in] -> [m, d_out]); rows are unit-normalised
        first, as in training."""
        xu = unit_rows(x)
        if xu.shape[1] != self.x_train.shape[1]:
            raise ValueError(
                f"x must have width {self.x_train.shape[1]} (the training rows), got {xu.shape[1]}"
            )
        dev = _resolve_device(device)
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
    dev = _resolve_device(device)
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


def _pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xu, yu = unit_rows(x, name="x"), unit_rows(y, name="y")
    if xu.shape[0] != yu.shape[0]:
        raise ValueError(
            f"x and y must hold the same pairs (rows), got {xu.shape[0]} and {yu.shape[0]} rows"
        )
    return xu, yu


def _fit_unit(
    xu: np.ndarray,
    yu: np.ndarray,
    spec: KernelSpec,
    alphas: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    dev: torch.device,
) -> RidgeFit:
    x_all, y_all = _tensor(xu, dev), _tensor(yu, dev)
    x_tr = x_all[train]
    path = _path_t(
        _kernel_t(x_tr, x_tr, spec.kernel, spec.gamma),
        y_all[train],
        _kernel_t(x_all[val], x_tr, spec.kernel, spec.gamma),
        _tensor(alphas, dev),
    )
    scores = _numpy(_mean_nmse_t(path, y_all[val]))
    del path
    val_scores = {float(a): float(s) for a, s in zip(alphas, scores, strict=True)}
    best = min(val_scores.values())
    alpha = max(a for a, s in val_scores.items() if s <= best + _TIE_TOL)
    # The full Gram matrix is built only now, after the selection's matrices are released.
    coef = _solve_t(_kernel_t(x_all, x_all, spec.kernel, spec.gamma), y_all, alpha)
    log.info(
        "kernel ridge %s: alpha=%g chosen on %d validation rows (mean nmse %.6f); refit on %d pairs",
        spec.name,
        alpha,
        val.size,
        val_scores[alpha],
        xu.shape[0],
    )
    return RidgeFit(spec, alpha, xu, _numpy(coef), val_scores)


def fit_kernel_ridge(
    x: ArrayLike,
    y: ArrayLike,
    spec: KernelSpec,
    alphas: ArrayLike,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
) -> RidgeFit:
    """Kernel ridge from the [n, d_in] rows of x to the [n, d_out] rows of y (both unit-normalised
    here): alpha chosen by the lowest mean validation nmse on val_split(n, val_fraction, seed)
    (one eigendecomposition for all alphas; ties -> the larger alpha), then refitted on all n."""
    if not isinstance(spec, KernelSpec):
        raise ValueError(f"spec must be a KernelSpec, got {type(spec).__name__}")
    xu, yu = _pairs(x, y)
    al = _alphas(alphas)
    train, val = val_split(xu.shape[0], val_fraction, seed)
    return _fit_unit(xu, yu, spec, al, train, val, _resolve_device(device))


def fit_best(
    x: ArrayLike,
    y: ArrayLike,
    specs: Sequence[KernelSpec],
    alphas: ArrayLike,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
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
    dev = _resolve_device(device)
    return {s.name: _fit_unit(xu, yu, s, al, train, val, dev) for s in specs}
