"""Ridge benchmark (SPEC §9): kernel ridge alpha selection from one eigendecomposition reused for
every alpha (nlaprobe.ridge.fit_kernel_ridge) vs scikit-learn refitting KernelRidge per alpha in a
grid search, on the same synthetic pairs and the same train/validation split.

    python benchmarks/ridge_alpha_path.py [--n 4000] [--d 64] [--n-alphas 12] [--seed 0]

Needs scikit-learn (`pip install -e ".[bench]"`). Pairs: x ~ N(0, 1) [n, d], y = unit(tanh(x W) +
noise), both unit-normalised; the RBF kernel at one gamma over a log-spaced alpha grid.
Ours: fit_kernel_ridge (selection on val_split(n, 0.2, seed), then a refit on all n pairs).
Reference: GridSearchCV(KernelRidge(kernel="rbf", gamma), {"alpha": grid}, cv=PredefinedSplit
(the same split), scoring = the same mean nmse = 2(1 - cos) with row-normalised predictions,
refit=True); the grid is passed largest alpha first, so that its tie rule (first best in grid
order) is ours (the larger alpha). Each side's time covers its selection and its refit (best of
--repeats, runs interleaved); both sides run under the same thread settings. Exits non-zero when
the chosen alphas differ or the validation scores of the chosen alpha differ by more than 1e-6.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from bench_common import best_times

from nlaprobe.ridge import KernelSpec, fit_kernel_ridge, unit_rows, val_split

SCORE_TOL = 1e-6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="pairs (train + validation)")
    p.add_argument("--d", type=int, default=64, help="width of x and y")
    p.add_argument(
        "--n-alphas",
        type=int,
        nargs="+",
        default=[12, 25, 100],
        help="alpha grid sizes, each benchmarked in turn (the gain grows with the grid)",
    )
    p.add_argument("--alpha-min", type=float, default=1e-5)
    p.add_argument("--alpha-max", type=float, default=1e2)
    p.add_argument("--gamma", type=float, default=1.0, help="RBF gamma (rows are unit vectors)")
    p.add_argument("--noise", type=float, default=0.5, help="noise scale added to tanh(x W)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="data and split seed")
    p.add_argument("--repeats", type=int, default=3, help="timings are the best of this many")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for torch and for every BLAS/OpenMP pool of both sides "
        "(1 keeps timings stable on a shared machine; 0 = library defaults)",
    )
    return p.parse_args(argv)


def synthetic_pairs(n: int, d: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(d, d)) / np.sqrt(d)
    y = np.tanh(x @ w) + noise * rng.normal(size=(n, d))
    return unit_rows(x), unit_rows(y)


def mean_nmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over rows of 2(1 - cos): predictions and targets row-normalised, cos clipped."""
    p = y_pred / np.linalg.norm(y_pred, axis=1, keepdims=True)
    g = y_true / np.linalg.norm(y_true, axis=1, keepdims=True)
    return float((2.0 * (1.0 - np.clip((p * g).sum(axis=1), -1.0, 1.0))).mean())


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        import sklearn  # noqa: F401  (the reference side; imported per grid below)
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError as exc:
        raise SystemExit(f"needs scikit-learn ({exc}); pip install -e '.[bench]'") from None

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    pools = ", ".join(
        sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
    )

    x, y = synthetic_pairs(args.n, args.d, args.noise, args.seed)
    print(f"threads: torch intra-op {torch.get_num_threads()}; threadpoolctl pools: {pools}")
    failures = [run_grid(args, k, x, y) for k in args.n_alphas]
    if any(failures):
        raise SystemExit("; ".join(f for f in failures if f))
    return 0


def run_grid(args, n_alphas: int, x: np.ndarray, y: np.ndarray) -> str | None:
    """Benchmark one grid of n_alphas alphas; print the comparison; return a failure or None."""
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    alphas = np.geomspace(args.alpha_min, args.alpha_max, n_alphas)
    spec = KernelSpec("rbf", args.gamma)
    train, val = val_split(args.n, args.val_fraction, args.seed)
    test_fold = np.full(args.n, -1)
    test_fold[val] = 0
    scorer = make_scorer(mean_nmse, greater_is_better=False)

    def ours(x=x, y=y):
        return fit_kernel_ridge(
            x, y, spec, alphas, val_fraction=args.val_fraction, seed=args.seed, device="cpu"
        )

    def reference(x=x, y=y, test_fold=test_fold):
        search = GridSearchCV(
            KernelRidge(kernel="rbf", gamma=args.gamma),
            {"alpha": sorted(alphas.tolist(), reverse=True)},
            cv=PredefinedSplit(test_fold),
            scoring=scorer,
            refit=True,
        )
        return search.fit(x, y)

    # Warm-up (allocators, LAPACK workspaces, lazy imports) on a small prefix.
    m = min(args.n, 100)
    ours(x[:m], y[:m])
    reference(x[:m], y[:m], np.where(np.arange(m) < m // 5, 0, -1))

    (t_ours, t_ref), (fit, search) = best_times([ours, reference], args.repeats)

    ref_alpha = float(search.best_params_["alpha"])
    ours_score = fit.val_scores[fit.alpha]
    ref_score = -float(search.best_score_)
    ref_scores = {
        float(p["alpha"]): -float(s)
        for p, s in zip(
            search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
        )
    }
    grid_diff = max(abs(fit.val_scores[a] - ref_scores[a]) for a in fit.val_scores)
    probe = x[: min(args.n, 200)]
    pred_diff = float(np.abs(fit.predict(probe) - search.best_estimator_.predict(probe)).max())

    print(
        f"kernel ridge alpha selection, RBF gamma={args.gamma:g}: n={args.n} pairs "
        f"({train.size} train / {val.size} validation, seed {args.seed}), d={args.d}, "
        f"{n_alphas} alphas in [{args.alpha_min:g}, {args.alpha_max:g}], float64 on the CPU, "
        f"best of {args.repeats}"
    )
    print(f"  ours, one eigendecomposition + refit   : {t_ours:8.3f} s")
    print(f"  scikit-learn GridSearchCV(KernelRidge) : {t_ref:8.3f} s")
    print(f"  ratio scikit-learn / ours              : {t_ref / t_ours:8.2f}x")
    print(f"  chosen alpha      ours {fit.alpha:.6g}   scikit-learn {ref_alpha:.6g}")
    print(f"  validation nmse   ours {ours_score:.10f}   scikit-learn {ref_score:.10f}")
    print(f"  max |diff| of validation nmse over the grid : {grid_diff:.3g}")
    print(f"  max |diff| of refit predictions ({probe.shape[0]} rows)  : {pred_diff:.3g}")

    if fit.alpha != ref_alpha:
        return f"{n_alphas} alphas: chosen alphas differ: ours {fit.alpha!r}, sklearn {ref_alpha!r}"
    if abs(ours_score - ref_score) > SCORE_TOL:
        return (
            f"{n_alphas} alphas: validation scores differ by "
            f"{abs(ours_score - ref_score):.3g} > {SCORE_TOL:g}"
        )
    return None


if __name__ == "__main__":
    raise SystemExit(main())
