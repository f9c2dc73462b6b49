"""E8 on files: kernel ridge fits between two families' aligned vectors (SPEC §6 E8); the
n-scaling aggregate that reads them is nlaprobe.aggregates.ridge_scaling.

inputs -> outputs
- ridge_stage: the ridge-split and eval-split activation shards of a source and a destination
  family (aligned row for row) + n -> `results/ridge/ridge-<tag>/<src>_to_<dst>/n-<n>.json`
  (per kernel: chosen alpha/gamma, validation curve, eval nmse, the solver and the dtype of its
  arithmetic, and for float32 fits the float64 check) and `.npz` (per kernel: the
  eval predictions, the dual coefficients, the training row indices; the linear kernel's primal
  weights W [d_src, d_dst]). No pickled objects.

Invariants:
- pairs are rows of the same (doc_id, position) in both families (checked by doc_id); vectors
  are unit-normalised before fitting (nlaprobe.ridge);
- the n training pairs are the first n of one seeded permutation of all ridge pairs, so the
  training sets are nested across n; n larger than the pairs that exist uses them all (the JSON
  records `n_requested` and the `n` used);
- alpha (and the RBF gamma) are chosen on an internal validation split of the n pairs by
  nlaprobe.ridge; the eval split is never seen during fitting;
- fve_own of a prediction = 1 - mean nmse / Var(v_nrm of the destination's eval gold), with a
  95% cluster-bootstrap interval over documents, as for the text route.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nlaprobe import metrics as M
from nlaprobe import ridge as R
from nlaprobe.config import StageParams
from nlaprobe.errors import ConfigError, DataError, show
from nlaprobe.io import read_vectors, write_json, write_npz
from nlaprobe.models.device import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RidgeParams(StageParams):
    """The parameters of one ridge job: the `ridge` section, the run's seed and the job's
    provenance (nlaprobe.plan), parsed by `from_json` (nlaprobe.config.StageParams)."""

    kernels: tuple[str, ...]
    rbf_gammas: tuple[float, ...]
    alphas: tuple[float, ...]
    val_fraction: float
    seed: int
    provenance: dict

    # each parameter follows the schema of its config key; `n_points`, `n_min` (which n the
    # plan asks for) and `device` (the CLI's --device) are checked and not kept
    FIELDS: ClassVar[dict[str, str]] = {
        **{
            k: f"ridge.{k}"
            for k in ("kernels", "rbf_gammas", "alphas", "val_fraction", "n_points", "n_min")
        },
        "seed": "run.seed",
        "device": "run.device",
    }
    FREE: ClassVar[tuple[str, ...]] = ("provenance",)

    @classmethod
    def from_values(cls, values: dict, source: str) -> RidgeParams:
        provenance = values.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ConfigError(
                f"{source}: key 'provenance': expected an object, got {show(provenance)}"
            )
        return cls(
            kernels=tuple(values["kernels"]),
            rbf_gammas=tuple(float(g) for g in values["rbf_gammas"]),
            alphas=tuple(float(a) for a in values["alphas"]),
            val_fraction=float(values["val_fraction"]),
            seed=values["seed"],
            provenance=provenance,
        )

    def specs(self) -> dict[str, list[R.KernelSpec]]:
        """Kernel name -> the specs tried for it (RBF: one per gamma)."""
        out: dict[str, list[R.KernelSpec]] = {}
        for k in self.kernels:
            if k == "linear":
                out[k] = [R.KernelSpec("linear")]
            elif k == "rbf":
                out[k] = [R.KernelSpec("rbf", g) for g in self.rbf_gammas]
            else:
                raise ConfigError(f"ridge.kernels: unknown kernel {k!r}; valid: linear, rbf")
        return out


def read_pairs(src: Sequence[str], dst: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Aligned (src, dst) vectors of shards listed in the same order, and the doc ids."""
    if len(src) != len(dst):
        raise DataError(f"{len(src)} source shards but {len(dst)} destination shards")
    xs, ys, docs = [], [], []
    for ps, pd in zip(src, dst, strict=True):
        x, ids_s = read_vectors([ps])
        y, ids_d = read_vectors([pd])
        if ids_s != ids_d:
            raise DataError(
                f"{ps} and {pd} are not aligned row for row (doc_ids differ); ridge pairs need "
                "the two families' activation shards of the same positions"
            )
        xs.append(x)
        ys.append(y)
        docs += ids_s
    if not docs:
        raise DataError(f"no pairs in {list(src)}")
    return np.concatenate(xs), np.concatenate(ys), docs


def ridge_stage(
    params: RidgeParams,
    *,
    n: int,
    src_ridge: Sequence[str],
    dst_ridge: Sequence[str],
    src_eval: Sequence[str],
    dst_eval: Sequence[str],
    out_json: str,
    out_npz: str,
    device: str = "cpu",
) -> dict:
    """Fit every kernel on the first n pairs of the seeded permutation; predict the eval split."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"ridge --n must be an integer >= 1, got {n!r}")
    x, y, _ = read_pairs(src_ridge, dst_ridge)
    xe, ye, _ = read_pairs(src_eval, dst_eval)
    if x.shape[1] != xe.shape[1] or y.shape[1] != ye.shape[1]:
        raise DataError(
            f"vector widths differ between the ridge split ({x.shape[1]} -> {y.shape[1]}, "
            f"{src_ridge[0]}) and the eval split ({xe.shape[1]} -> {ye.shape[1]}, {src_eval[0]})"
        )
    order = np.random.default_rng(params.seed).permutation(len(x))
    train = np.sort(order[: min(n, len(x))])
    dev = resolve_device(device)
    result: dict = {
        "n_requested": n,
        "n": len(train),
        "n_pairs": len(x),
        "n_eval": len(xe),
        "provenance": params.provenance,
        "kernels": {},
    }
    arrays: dict[str, np.ndarray] = {"train_rows": train}
    for name, specs in params.specs().items():
        fits = R.fit_best(
            x[train],
            y[train],
            specs,
            params.alphas,
            val_fraction=params.val_fraction,
            seed=params.seed,
            device=dev,
        )
        best = min(fits.values(), key=lambda f: (min(f.val_scores.values()), f.spec.name))
        pred = best.predict(R.unit_rows(xe), device=dev)
        nmse = M.nmse_rows(pred, ye)
        result["kernels"][name] = {
            "spec": best.spec.name,
            "gamma": best.spec.gamma,
            "alpha": best.alpha,
            "val_nmse": min(best.val_scores.values()),
            "val_curves": {
                f.spec.name: {repr(a): v for a, v in sorted(f.val_scores.items())}
                for f in fits.values()
            },
            "eval_nmse_mean": float(nmse.mean()),
            "solver": best.solver,
            "dtype": best.dtype,
            "f32_check": best.f32_check,
        }
        arrays[f"{name}_eval_pred"] = pred.astype(np.float32)
        arrays[f"{name}_dual_coef"] = best.dual_coef.astype(np.float32)
        if name == "linear":
            w = best.weight if best.weight is not None else best.x_train.T @ best.dual_coef
            arrays["linear_weight"] = w.astype(np.float32)
    # the archive's SHA-256 is recorded in the run's JSON, which itself records its own digest
    result["npz_sha256"] = write_npz(out_npz, arrays)
    write_json(out_json, result)
    log.info(
        "ridge n=%d: %s", len(train), {k: v["eval_nmse_mean"] for k, v in result["kernels"].items()}
    )
    return result
