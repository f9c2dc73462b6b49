"""What the tests check against SPEC.md and Snakemake's output, written once for every test
folder: the keys of a results JSON's `meta` (SPEC §8) and of a transfer-matrix cell (SPEC §6),
and the "Job stats" table of a (dry) run."""

from __future__ import annotations

# SPEC §8: the `meta` of every results JSON (the checkpoints' dtypes are spelled out under
# `checkpoints`; the aggregate job adds its own name as `aggregate`)
META_KEYS = frozenset(
    {
        "schema_version",
        "package_version",
        "git_sha",
        "config_hash",
        "checkpoints",
        "seeds",
        "device",
        "created_at",
    }
)
# SPEC §1: the aggregates of E1-E8 (results/<name>.json), in the order of the experiment number
E1_E8 = (
    "fve_baseline",
    "quote_ablation",
    "verbatim",
    "redaction",
    "best_of_n",
    "layers",
    "transfer_matrix",
    "ridge_scaling",
)
# one cell of results/transfer_matrix.json
CELL_KEYS = frozenset(
    {"av", "ar", "route", "fve_own", "null_fve_own", "n", "n_rows", "tag_failures"}
)


def job_counts(output: str) -> dict[str, int]:
    """The first "Job stats" table of a (dry) run's output: {rule: count}, without the total."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts
