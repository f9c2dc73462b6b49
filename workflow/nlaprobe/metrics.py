"""Metrics of SPEC §5 (the E1 table of §6 and the centred protocol of seeds/002) and their
bootstrap confidence intervals. Pure numpy: arrays in, arrays / floats / plain dicts out; no I/O,
no torch, no global RNG state.

inputs -> outputs
    v_nrm(v[n,d] | v[d])                         -> same shape, every row rescaled to norm √d
    cos_rows(p, g), nmse_rows(p, g)              -> [n] for [n,d] inputs, float for [d] inputs
    population_var(g[n,d])                       -> float, Var of v_nrm(g)
    fve(nmse[n], var) -> float;  fve_rows(nmse[n], var) -> [n]
    frac_negative_fve(nmse, var), frac_fve_gt(nmse, var, threshold=0.5) -> float in [0, 1]
    strict_nmse(nmse[n], k) -> [n+k];  strict_fve(nmse[n], k, var) -> float
    half_cos(h, v), half_cos_cen(h, v, mu_pool[d]) -> [n] for [n,d] inputs, float for [d]
    pool_mean(pool[n,d]) -> [d];  anisotropy(pool[n,d], unit=False) -> float
    rho(score, floor, ceiling)                   -> float (ndarray for an array of scores)
    bootstrap_replicates(stat_fn, *arrays)       -> [n_boot] replicates of stat_fn
    bootstrap_ci(stat_fn, *arrays)               -> (value, lo, hi)
    paired_bootstrap_diff(stat_fn, a, b)         -> (value, lo, hi) of stat(a) - stat(b)
    summarize(pred[n,d], gold[n,d], ...)         -> E1 dict (structure in `summarize`)

Invariants
- All arithmetic is float64 whatever the input dtype (activation vectors arrive as float32).
- Rows of v_nrm have squared norm d, hence nmse = mean_j (p_nrm - g_nrm)^2 = 2(1 - cos) in [0, 4]
  and Var(v_nrm) = 1 - ||mu||^2/d in [0, 1], mu the column mean of v_nrm(gold). fve = 1 -
  mean(nmse)/Var: a perfect predictor scores 1, an orthogonal one 1 - 2/Var, and the best constant
  prediction (the direction of mu) only (a - 1)/(a + 1) <= 0 with a = ||mu||/√d, because Var is
  measured around the un-normalised mean, which no normalised prediction can reach.
- `fve*` (SPEC §5) and `half_cos*` (seeds/002's "fve_nrm", "fve_nrm_cen") are different metrics
  and keep different names here.
- The centred metrics live in the raw activation space: mu_pool is the plain mean of the raw pool
  rows and anisotropy = ||mu_pool|| in activation units (seeds/002 quotes ||mu|| ~ 156 for
  Gemma-2-2B, 55 for Qwen2.5-7B, 7.2 for Llama-3.2-3B, values only raw rows can give);
  `anisotropy(pool, unit=True)` is the scale-free variant over unit-normalised rows, in [0, 1].
- Bad input raises ValueError naming the argument and, for rows, the first offending row: empty
  arrays, shape mismatches, NaN/inf, zero vectors (a direction is undefined), Var <= 0,
  ceiling == floor.
- Bootstrap: percentile intervals (np.quantile, linear) at level 1 - alpha. The resampling units
  are rows, or the distinct values of `groups` (documents) in order of first appearance, drawn
  with replacement; a drawn group contributes all its rows. Resample b is the b-th
  `rng.integers(0, G, size=G)` call of `np.random.default_rng(seed)` (G units), so results depend
  only on the seed, and the row bootstrap equals the cluster bootstrap with one row per group,
  resample for resample. Every array of one call is indexed with the same rows.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypedDict

import numpy as np
from numpy.typing import ArrayLike

# A tag failure is scored as an orthogonal prediction: nmse = 2(1 - 0).
STRICT_FAILURE_NMSE = 2.0

# Upper bound on the elements of one bootstrap weight matrix in `summarize` (float64: 32 MiB).
_MAX_WEIGHT_ELEMENTS = 1 << 22

# Var(v_nrm) at or below this is "all rows point the same way" up to rounding (Var is in [0, 1]).
_VAR_EPS = 1e-12


class Interval(TypedDict):
    """A point estimate with its bootstrap percentile interval."""

    value: float
    lo: float | None
    hi: float | None


# --- input checks -------------------------------------------------------------------------------


def _float_array(x: ArrayLike, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__} ({exc})") from None
    return a


def _check_finite(a: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0]
        if a.ndim == 2:
            at = f"row {where[0]}, column {where[1]}"
        elif a.ndim == 1:
            at = f"index {where[0]}"
        else:
            at = f"position {tuple(int(i) for i in where)}"
        raise ValueError(f"{name} has a non-finite value (NaN or inf) at {at}")


def _matrix(x: ArrayLike, name: str, *, allow_1d: bool = True) -> tuple[np.ndarray, bool]:
    """`x` as a finite float64 [n, d] matrix (n, d >= 1), and whether it was a single [d] vector."""
    a = _float_array(x, name)
    if a.ndim == 1 and allow_1d:
        a, single = a[None, :], True
    elif a.ndim == 2:
        single = False
    else:
        want = "[n, d] or [d]" if allow_1d else "[n, d]"
        raise ValueError(f"{name} must have shape {want}, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(
            f"{name} is empty (shape {a.shape}); expected at least one row of width >= 1"
        )
    _check_finite(a, name)
    return a, single


def _vector(x: ArrayLike, name: str, *, allow_empty: bool = False) -> np.ndarray:
    a = np.atleast_1d(_float_array(x, name))
    if a.ndim != 1:
        raise ValueError(f"{name} must be one value per row (1-D), got shape {a.shape}")
    if a.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty; expected at least one row")
    _check_finite(a, name)
    return a


def row_norms(a: np.ndarray, name: str) -> np.ndarray:
    """Euclidean norms of the rows of a float64 [n, d] array; a zero row (no direction) or one
    whose norm overflows is a ValueError naming the row."""
    with np.errstate(over="ignore"):
        norms = np.linalg.norm(a, axis=1)
    zero = np.nonzero(norms == 0)[0]
    if zero.size:
        raise ValueError(
            f"{name} row {zero[0]} is a zero vector ({zero.size} zero row(s) in all); "
            "its direction is undefined"
        )
    huge = np.nonzero(~np.isfinite(norms))[0]
    if huge.size:
        raise ValueError(f"{name} row {huge[0]} has a norm too large for float64")
    return norms


def _pair(
    p: ArrayLike, g: ArrayLike, pname: str, gname: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    a, single_a = _matrix(p, pname)
    b, single_b = _matrix(g, gname)
    if a.shape != b.shape or single_a != single_b:
        raise ValueError(
            f"{pname} and {gname} must have the same shape, got {np.shape(p)} and {np.shape(g)}"
        )
    return a, b, single_a


def _positive(x: Any, name: str) -> float:
    v = _finite_scalar(x, name)
    if v <= 0:
        raise ValueError(
            f"{name} must be a finite number > 0, got {v!r}"
            + ("; Var = 0 means every gold row points the same way" if v == 0 else "")
        )
    return v


def _finite_scalar(x: Any, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return v


def _count(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {x!r}")
    return int(x)


def _out(rows: np.ndarray, single: bool) -> np.ndarray | float:
    return float(rows[0]) if single else rows


# --- fidelity of a reconstruction (SPEC §5) -----------------------------------------------------


def v_nrm(v: ArrayLike) -> np.ndarray:
    """Each row (or the single vector) rescaled to norm √d: v / ||v|| * √d. Shape preserved."""
    a, single = _matrix(v, "v")
    out = a / row_norms(a, "v")[:, None] * math.sqrt(a.shape[1])
    return out[0] if single else out


def _cos(a: np.ndarray, b: np.ndarray, aname: str, bname: str) -> np.ndarray:
    dots = np.einsum("ij,ij->i", a, b)
    # Rounding can push |cos| a hair above 1; clip so that 2(1 - cos) >= 0 and half_cos in [0, 1].
    return np.clip(dots / (row_norms(a, aname) * row_norms(b, bname)), -1.0, 1.0)


def cos_rows(p: ArrayLike, g: ArrayLike) -> np.ndarray | float:
    """Row-wise cosine between p and g ([n, d] -> [n]; [d] -> float)."""
    a, b, single = _pair(p, g, "p", "g")
    return _out(_cos(a, b, "p", "g"), single)


def nmse_rows(p: ArrayLike, g: ArrayLike) -> np.ndarray | float:
    """Row-wise nmse = mean_j (p_nrm - g_nrm)^2 (= 2(1 - cos)); [n, d] -> [n], [d] -> float."""
    a, b, single = _pair(p, g, "p", "g")
    root_d = math.sqrt(a.shape[1])
    pn = a / row_norms(a, "p")[:, None] * root_d
    gn = b / row_norms(b, "g")[:, None] * root_d
    return _out(((pn - gn) ** 2).mean(axis=1), single)


def population_var(g: ArrayLike) -> float:
    """Var(v_nrm(g)) = mean over rows and dims of (g_nrm - mu)^2, mu the column mean of g_nrm
    (population variance, denominator n*d); equals 1 - ||mu||^2/d."""
    a, _ = _matrix(g, "g", allow_1d=False)
    gn = a / row_norms(a, "g")[:, None] * math.sqrt(a.shape[1])
    return float(((gn - gn.mean(axis=0)) ** 2).mean())


def fve(nmse: ArrayLike, var: float) -> float:
    """Fraction of variance explained: 1 - mean(nmse) / var."""
    n = _vector(nmse, "nmse")
    return float(1.0 - n.mean() / _positive(var, "var"))


def fve_rows(nmse: ArrayLike, var: float) -> np.ndarray:
    """Per-row fve_i = 1 - nmse_i / var ([n] -> [n])."""
    return 1.0 - _vector(nmse, "nmse") / _positive(var, "var")


def frac_negative_fve(nmse: ArrayLike, var: float) -> float:
    """Fraction of rows with fve_i < 0 (worse than predicting the mean)."""
    return float((fve_rows(nmse, var) < 0).mean())


def frac_fve_gt(nmse: ArrayLike, var: float, threshold: float = 0.5) -> float:
    """Fraction of rows with fve_i > threshold (strictly)."""
    return float((fve_rows(nmse, var) > threshold).mean())


def strict_nmse(nmse_scored: ArrayLike, n_failures: int) -> np.ndarray:
    """The scored rows' nmse followed by one nmse = 2 (orthogonal) per tag failure, as the
    release's training reward scores them (SPEC §4.8). [n] -> [n + n_failures]."""
    scored = _vector(nmse_scored, "nmse_scored", allow_empty=True)
    k = _count(n_failures, "n_failures")
    if scored.size + k == 0:
        raise ValueError("strict_nmse: no scored rows and no tag failures; nothing to score")
    return np.concatenate([scored, np.full(k, STRICT_FAILURE_NMSE)])


def strict_fve(nmse_scored: ArrayLike, n_failures: int, var: float) -> float:
    """fve over scored rows plus tag failures scored as nmse = 2."""
    return fve(strict_nmse(nmse_scored, n_failures), var)


# --- centred protocol (seeds/002) ---------------------------------------------------------------


def half_cos(h: ArrayLike, v: ArrayLike) -> np.ndarray | float:
    """½(1 + cos(h, v)) in [0, 1] (seeds/002's raw "fve_nrm"); [n, d] -> [n], [d] -> float."""
    a, b, single = _pair(h, v, "h", "v")
    return _out(0.5 * (1.0 + _cos(a, b, "h", "v")), single)


def half_cos_cen(h: ArrayLike, v: ArrayLike, mu_pool: ArrayLike) -> np.ndarray | float:
    """½(1 + cos(h - mu_pool, v - mu_pool)) (seeds/002's "fve_nrm_cen"); mu_pool = pool_mean of
    raw pool rows, [d]. [n, d] -> [n], [d] -> float. A row equal to mu_pool is an error."""
    a, b, single = _pair(h, v, "h", "v")
    mu = _vector(mu_pool, "mu_pool")
    if mu.shape[0] != a.shape[1]:
        raise ValueError(f"mu_pool must have length d = {a.shape[1]}, got {mu.shape[0]}")
    return _out(0.5 * (1.0 + _cos(a - mu, b - mu, "h - mu_pool", "v - mu_pool")), single)


def pool_mean(pool: ArrayLike) -> np.ndarray:
    """Column mean of the raw (not normalised) pool rows: [n, d] -> [d]."""
    a, _ = _matrix(pool, "pool", allow_1d=False)
    return a.mean(axis=0)


def anisotropy(pool: ArrayLike, *, unit: bool = False) -> float:
    """||mean of the pool rows||. Raw rows by default (activation units, as seeds/002 reports it
    and as half_cos_cen subtracts it); unit=True normalises each row to norm 1 first, giving a
    scale-free value in [0, 1] comparable across backbones."""
    a, _ = _matrix(pool, "pool", allow_1d=False)
    if unit:
        a = a / row_norms(a, "pool")[:, None]
    return float(np.linalg.norm(a.mean(axis=0)))


def rho(score: ArrayLike, floor: float, ceiling: float) -> np.ndarray | float:
    """(score - floor) / (ceiling - floor): 0 at the floor, 1 at the ceiling (may exceed both)."""
    s = _float_array(score, "score")
    if s.size == 0:
        raise ValueError("score is empty")
    _check_finite(s, "score")
    lo, hi = _finite_scalar(floor, "floor"), _finite_scalar(ceiling, "ceiling")
    if hi == lo:
        raise ValueError(
            f"rho is undefined: ceiling == floor ({hi!r}); the anchors do not separate scores"
        )
    r = (s - lo) / (hi - lo)
    return float(r) if r.ndim == 0 else r


# --- bootstrap ----------------------------------------------------------------------------------


class _Units:
    """Resampling units (rows, or groups in order of first appearance) and how to expand a draw
    of units into row indices (index form) or per-row multiplicities (weight form)."""

    def __init__(self, n_rows: int, groups: ArrayLike | None) -> None:
        if groups is None:
            self.row_unit = np.arange(n_rows)
            self.n_units = n_rows
            self.grouped = False
        else:
            g = np.asarray(groups)
            if g.ndim != 1 or g.shape[0] != n_rows:
                raise ValueError(
                    f"groups must hold one id per row ({n_rows} rows), got shape {g.shape}"
                )
            if g.dtype.kind in "fc" and not np.isfinite(g).all():
                raise ValueError("groups contains NaN or inf; every row needs a group id")
            try:
                _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
            except TypeError as exc:
                raise ValueError(f"groups must be mutually comparable ids ({exc})") from None
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            self.row_unit = rank[inverse.reshape(-1)]
            self.n_units = int(order.size)
            self.grouped = True
        self.sizes = np.bincount(self.row_unit, minlength=self.n_units)
        self.starts = np.cumsum(self.sizes) - self.sizes
        self.members = np.argsort(self.row_unit, kind="stable")
        # One row per unit: units are rows in row order, so a draw of units is a draw of rows.
        self.singleton = bool((self.sizes == 1).all())

    @property
    def unit_name(self) -> str:
        return "group" if self.grouped else "row"

    def draws(self, n_boot: int, seed: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            yield rng.integers(0, self.n_units, size=self.n_units)

    def rows(self, draw: np.ndarray) -> np.ndarray:
        if self.singleton:
            return draw
        lengths = self.sizes[draw]
        offsets = np.cumsum(lengths) - lengths
        pos = np.repeat(self.starts[draw] - offsets, lengths) + np.arange(lengths.sum())
        return self.members[pos]

    def weights(self, draw: np.ndarray) -> np.ndarray:
        return np.bincount(draw, minlength=self.n_units)[self.row_unit].astype(np.float64)


def _as_arrays(arrays: Sequence[ArrayLike], name: str) -> list[np.ndarray]:
    out = [np.asarray(a) for a in arrays]
    if not out:
        raise ValueError(f"{name}: give at least one array to resample")
    for i, a in enumerate(out):
        if a.ndim == 0:
            raise ValueError(f"{name}[{i}] is a scalar; arrays to resample need a row axis")
    n = out[0].shape[0]
    for i, a in enumerate(out):
        if a.shape[0] != n:
            raise ValueError(
                f"{name}: all arrays must have the same number of rows; array 0 has {n}, "
                f"array {i} has {a.shape[0]}"
            )
    if n == 0:
        raise ValueError(f"{name}: the arrays are empty; nothing to resample")
    return out


def _check_n_boot(n_boot: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")


def _check_alpha(alpha: Any) -> None:
    if not (isinstance(alpha, numbers.Real) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _scalar(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        raise ValueError(f"stat_fn must return a scalar, got {type(x).__name__}") from None


def _percentiles(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_replicates(
    stat_fn: Callable[..., Any],
    *arrays: ArrayLike,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """stat_fn(*[a[rows_b] for a in arrays]) for each resample b: [n_boot] float64.

    Resamples rows (groups=None) or whole groups (`groups`: one id per row, e.g. doc_id) with
    replacement; every array is indexed with the same rows. A non-finite replicate is an error.
    """
    arrs = _as_arrays(arrays, "arrays")
    _check_n_boot(n_boot)
    units = _Units(arrs[0].shape[0], groups)
    reps = np.empty(n_boot)
    for b, draw in enumerate(units.draws(n_boot, seed)):
        rows = units.rows(draw)
        reps[b] = _scalar(stat_fn(*(a[rows] for a in arrs)))
    bad = np.nonzero(~np.isfinite(reps))[0]
    if bad.size:
        raise ValueError(
            f"stat_fn returned a non-finite value on {bad.size} of {n_boot} bootstrap resamples "
            f"(first: resample {bad[0]}); make the statistic defined on every resample"
        )
    return reps


def bootstrap_ci(
    stat_fn: Callable[..., Any],
    *arrays: ArrayLike,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(stat_fn(*arrays), lo, hi): the point estimate on all rows and the (1 - alpha) percentile
    interval of `bootstrap_replicates` (cluster bootstrap when `groups` is given)."""
    _check_n_boot(n_boot)
    _check_alpha(alpha)
    arrs = _as_arrays(arrays, "arrays")
    value = _scalar(stat_fn(*arrs))
    reps = bootstrap_replicates(stat_fn, *arrs, groups=groups, n_boot=n_boot, seed=seed)
    return (value, *_percentiles(reps, alpha))


def paired_bootstrap_diff(
    stat_fn: Callable[..., Any],
    a_arrays: ArrayLike | Sequence[ArrayLike],
    b_arrays: ArrayLike | Sequence[ArrayLike],
    *,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(stat(a) - stat(b), lo, hi) for two conditions on the SAME rows, both resampled with the
    same rows in each resample (paired bootstrap). `a_arrays`/`b_arrays`: one np.ndarray, or a
    list/tuple of arrays passed to stat_fn as positional arguments."""
    a = _as_arrays([a_arrays] if isinstance(a_arrays, np.ndarray) else a_arrays, "a_arrays")
    b = _as_arrays([b_arrays] if isinstance(b_arrays, np.ndarray) else b_arrays, "b_arrays")
    if a[0].shape[0] != b[0].shape[0]:
        raise ValueError(
            f"paired conditions must cover the same rows: a has {a[0].shape[0]} rows, "
            f"b has {b[0].shape[0]}"
        )
    k = len(a)

    def diff(*xs: np.ndarray) -> float:
        return _scalar(stat_fn(*xs[:k])) - _scalar(stat_fn(*xs[k:]))

    return bootstrap_ci(diff, *a, *b, groups=groups, n_boot=n_boot, seed=seed, alpha=alpha)


# --- E1 summary ---------------------------------------------------------------------------------


def _interval(value: float, reps: np.ndarray, alpha: float) -> Interval:
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        return {"value": value, "lo": None, "hi": None}
    lo, hi = _percentiles(finite, alpha)
    return {"value": value, "lo": lo, "hi": hi}


def summarize(
    pred: ArrayLike,
    gold: ArrayLike,
    *,
    train_var: float | None = None,
    tag_failures: int = 0,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The E1 metrics of the scored rows: predicted and gold raw vectors [n, d] (tag failures
    excluded, their count given as `tag_failures`), JSON-ready::

        {"n": int,                      scored rows
         "tag_failures": int,
         "nmse_mean": Interval, "nmse_median": float, "cos_mean": Interval,
         "var_own": float,              population_var(gold)
         "var_train": float | None,     the published training-set Var, as given
         "fve_own": Interval,           denominator var_own, recomputed on every resample
         "fve_train": Interval | None,  denominator var_train, fixed; None without train_var
         "frac_fve_neg": float,         share of rows with fve_i < 0 (denominator var_own)
         "frac_fve_gt_half": float,     share of rows with fve_i > 0.5 (denominator var_own)
         "nmse_mean_strict": float,     tag failures scored as nmse = 2 (SPEC §4.8) ...
         "fve_own_strict": float,       ... over scored rows + failures, denominator var_own
         "fve_train_strict": float | None,
         "bootstrap": {"n_boot", "seed", "alpha", "unit": "row" | "group", "n_units",
                       "degenerate": resamples whose gold has Var 0, left out of fve_own}}

    with Interval = {"value", "lo", "hi"} (value on all rows, lo/hi the 1 - alpha percentile
    interval; None only if every resample is degenerate). The resamples are those of
    `bootstrap_ci(..., groups=groups, n_boot=n_boot, seed=seed)`, computed in weighted form.
    """
    p, _ = _matrix(pred, "pred", allow_1d=False)
    g, _ = _matrix(gold, "gold", allow_1d=False)
    if p.shape != g.shape:
        raise ValueError(f"pred and gold must have the same shape, got {p.shape} and {g.shape}")
    tv = None if train_var is None else _positive(train_var, "train_var")
    failures = _count(tag_failures, "tag_failures")
    _check_n_boot(n_boot)
    _check_alpha(alpha)
    n, d = p.shape

    root_d = math.sqrt(d)
    pn = p / row_norms(p, "pred")[:, None] * root_d
    gn = g / row_norms(g, "gold")[:, None] * root_d
    nmse = ((pn - gn) ** 2).mean(axis=1)
    cos = np.clip(np.einsum("ij,ij->i", pn, gn) / d, -1.0, 1.0)
    var_own = float(((gn - gn.mean(axis=0)) ** 2).mean())
    if var_own <= _VAR_EPS:
        raise ValueError(
            f"gold has Var(v_nrm) = {var_own!r}: all {n} gold rows point the same way, so fve "
            "is undefined; at least two distinct directions are needed"
        )

    # Weighted form of the resamples: row multiplicities W [chunk, n] instead of gathered rows,
    # so Var of a resample is one matrix product rather than a copy of gold per resample.
    units = _Units(n, groups)
    per_row = np.stack([nmse, cos, np.einsum("ij,ij->i", gn, gn)], axis=1)
    chunk = max(1, min(n_boot, _MAX_WEIGHT_ELEMENTS // n))
    stats = np.empty((n_boot, 3))
    draws = units.draws(n_boot, seed)
    for start in range(0, n_boot, chunk):
        w = np.stack([units.weights(next(draws)) for _ in range(min(chunk, n_boot - start))])
        m = w.sum(axis=1)
        means = w @ per_row / m[:, None]
        mu = w @ gn / m[:, None]
        var_b = means[:, 2] / d - np.einsum("ij,ij->i", mu, mu) / d
        stats[start : start + len(w), :2] = means[:, :2]
        stats[start : start + len(w), 2] = var_b
    nmse_b, cos_b, var_b = stats.T
    # Var of a resample drawn from one direction only is 0 (up to rounding): fve_own undefined.
    degenerate = var_b <= _VAR_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        fve_own_b = np.where(degenerate, np.nan, 1.0 - nmse_b / np.where(degenerate, 1.0, var_b))

    nmse_mean = float(nmse.mean())
    fve_own_value = 1.0 - nmse_mean / var_own
    fve_train: Interval | None = None
    if tv is not None:
        fve_train = _interval(1.0 - nmse_mean / tv, 1.0 - nmse_b / tv, alpha)
    return {
        "n": n,
        "tag_failures": failures,
        "nmse_mean": _interval(nmse_mean, nmse_b, alpha),
        "nmse_median": float(np.median(nmse)),
        "cos_mean": _interval(float(cos.mean()), cos_b, alpha),
        "var_own": var_own,
        "var_train": tv,
        "fve_own": _interval(fve_own_value, fve_own_b, alpha),
        "fve_train": fve_train,
        "frac_fve_neg": frac_negative_fve(nmse, var_own),
        "frac_fve_gt_half": frac_fve_gt(nmse, var_own, 0.5),
        "nmse_mean_strict": float(strict_nmse(nmse, failures).mean()),
        "fve_own_strict": strict_fve(nmse, failures, var_own),
        "fve_train_strict": None if tv is None else strict_fve(nmse, failures, tv),
        "bootstrap": {
            "n_boot": int(n_boot),
            "seed": int(seed) if isinstance(seed, numbers.Integral) else seed,
            "alpha": float(alpha),
            "unit": units.unit_name,
            "n_units": units.n_units,
            "degenerate": int(degenerate.sum()),
        },
    }
