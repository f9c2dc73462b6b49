"""E8 ridge baseline: kernel-ridge fve_own against the number of training pairs n, and where it
would match the text route (SPEC §6 E8).

inputs -> outputs: per direction src -> dst the ridge fits of every size n (JSON + npz), the
destination family's eval gold, and `results/transfer_matrix.json` (the text route: AV src ->
AR dst) -> `results/ridge_scaling.json`.

Invariants: fve_own of a fit's eval predictions = 1 - mean nmse / Var(v_nrm of the destination's
eval gold), with a 95% cluster-bootstrap interval over documents, as for the text route;
requested sizes above the pairs that exist collapse onto one point per n; numpy only (no torch:
the registry is imported when the DAG is planned).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlaprobe import metrics as M
from nlaprobe.aggregates.registry import Aggregate, Figure, register
from nlaprobe.errors import DataError
from nlaprobe.io import read_json, read_npz_array, read_vectors
from nlaprobe.scaling import crossover

if TYPE_CHECKING:
    from nlaprobe.plan import Plan


def inputs(plan: Plan) -> dict:
    return {
        "directions": {
            f"{a}_to_{b}": {
                "src": a,
                "dst": b,
                "runs": [
                    {
                        "n": n,
                        "json": plan.ridge_file(a, b, n, "json"),
                        "npz": plan.ridge_file(a, b, n, "npz"),
                    }
                    for n in plan.ridge_sizes()
                ],
                "gold": [plan.activation_shard(b, "eval", s) for s in plan.shards("eval")],
            }
            for a, b in plan.ridge_directions()
        },
        "text_route": plan.aggregate_file("transfer_matrix"),
    }


def settings(cfg: dict) -> dict:
    return {"kernels": cfg["ridge"]["kernels"]}


def compute(spec: dict) -> dict:
    """E8: ridge fve_own vs n per direction and kernel, and the crossover with the text route."""
    m = spec["metrics"]
    text = read_json(spec["text_route"])["data"] if spec.get("directions") else {}
    out: dict = {"kernels": spec["settings"]["kernels"], "directions": {}}
    for key, d in spec["directions"].items():
        gold, docs = read_vectors(d["gold"])
        route = (text.get("cells", {}).get(f"{d['src']}__{d['dst']}") or {}).get("fve_own") or {}
        target = route.get("value")
        kernels: dict = {}
        for name in spec["settings"]["kernels"]:
            curve = []
            for run in d["runs"]:
                meta = read_json(run["json"])
                k = meta["kernels"][name]
                pred = read_npz_array(run["npz"], f"{name}_eval_pred", meta.get("npz_sha256"))
                if len(pred) != len(gold):
                    raise DataError(
                        f"{run['npz']}: {len(pred)} eval predictions, gold has {len(gold)}"
                    )
                s = M.summarize(
                    pred,
                    gold,
                    groups=docs,
                    n_boot=m["n_boot"],
                    seed=m["null_seed"],
                    alpha=m["alpha"],
                )
                curve.append(
                    {
                        "n": meta["n"],
                        "n_requested": meta["n_requested"],
                        "alpha": k["alpha"],
                        "gamma": k["gamma"],
                        "fve_own": s["fve_own"],
                        "nmse_mean": s["nmse_mean"],
                        "cos_mean": s["cos_mean"],
                        "var_own": s["var_own"],
                    }
                )
            # requested sizes above the pairs that exist collapse onto one fit: keep one point per n
            curve = list({p["n"]: p for p in curve}.values())
            kernels[name] = {
                "curve": curve,
                "crossover": crossover(
                    [p["n"] for p in curve], [p["fve_own"]["value"] for p in curve], target
                )
                if target is not None and len(curve) >= 1
                else None,
            }
        out["directions"][key] = {
            "src": d["src"],
            "dst": d["dst"],
            "text_route": {"fve_own": target, "lo": route.get("lo"), "hi": route.get("hi")},
            "kernels": kernels,
        }
    return out


AGGREGATE = register(
    Aggregate(
        name="ridge_scaling",
        experiment=8,
        title="ridge baseline",
        inputs=inputs,
        compute=compute,
        settings=settings,
        section="nlaprobe.report.html:section_ridge_scaling",
        figures=(
            Figure(
                "ridge_scaling",
                "Kernel-ridge fve_own against the number of training pairs n (E8, log x), per "
                "direction and kernel; the dashed line is the text route (the E7 cross cell).",
                "nlaprobe.report.figures:figure_ridge_scaling",
            ),
        ),
    )
)
