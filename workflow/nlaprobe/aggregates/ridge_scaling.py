"""E8 ridge baseline: kernel-ridge fve_own against the number of training pairs n, and where it
would match the text route (SPEC §6 E8).

inputs -> outputs: per direction src -> dst the ridge fits of every size n (JSON + npz), the
destination family's eval gold, and `results/transfer_matrix.json` (the text route: AV src ->
AR dst) -> `results/ridge_scaling.json` (nlaprobe.ridge_stage.ridge_scaling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlaprobe.aggregates.registry import Aggregate, Figure, register

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
    # imported here: nlaprobe.ridge imports torch, which planning (this registry) must not
    from nlaprobe.ridge_stage import ridge_scaling

    return ridge_scaling(spec)


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
