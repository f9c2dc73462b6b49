"""The E8 ridge job on hand-made aligned shards: `ridge_stage` and the `nlaprobe ridge` CLI
(exit codes, the files it writes, and clean errors that leave nothing behind)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stage_files import (
    ALPHAS,
    D_DST,
    D_SRC,
    GAMMAS,
    N_EVAL,
    N_RIDGE,
    PARAMS,
    PROVENANCE,
    SEED,
    Pairs,
    activation_table,
    nlaprobe,
    run_ridge,
    unit,
    write_pairs,
)

from nlaprobe.errors import ConfigError, DataError
from nlaprobe.io import write_table
from nlaprobe.plan import shard_folder, to_json

# ----------------------------------------------------------------------------- ridge_stage


@pytest.fixture(scope="module")
def exact(tmp_path_factory) -> tuple[Pairs, dict[int, tuple[dict, dict]]]:
    """An exact linear map, fitted at n = 20, 40 and 500 (more than the 60 pairs that exist)."""
    root = tmp_path_factory.mktemp("exact")
    pairs = write_pairs(root, noise=0.0)
    return pairs, {n: run_ridge(pairs, root / "ridge", n) for n in (20, 40, 500)}


def test_ridge_stage_records_sizes_and_nested_training_rows(exact):
    _, runs = exact
    perm = np.random.default_rng(SEED).permutation(N_RIDGE)
    for n_req, n_used in ((20, 20), (40, 40), (500, N_RIDGE)):
        result, arrays = runs[n_req]
        assert result["n_requested"] == n_req
        assert result["n"] == n_used
        assert result["n_pairs"] == N_RIDGE
        assert result["n_eval"] == N_EVAL
        assert result["provenance"] == PROVENANCE
        assert arrays["train_rows"].tolist() == sorted(perm[:n_used].tolist())
        assert set(arrays) == {
            "train_rows",
            "linear_eval_pred",
            "linear_dual_coef",
            "linear_weight",
            "rbf_eval_pred",
            "rbf_dual_coef",
        }
        assert arrays["linear_eval_pred"].shape == (N_EVAL, D_DST)
        assert arrays["rbf_eval_pred"].shape == (N_EVAL, D_DST)
        assert arrays["linear_dual_coef"].shape == (n_used, D_DST)
        assert arrays["rbf_dual_coef"].shape == (n_used, D_DST)
        assert arrays["linear_weight"].shape == (D_SRC, D_DST)
        assert arrays["linear_eval_pred"].dtype == np.float32
    small, large = runs[20][1]["train_rows"], runs[40][1]["train_rows"]
    assert set(small.tolist()) < set(large.tolist())
    assert runs[500][1]["train_rows"].tolist() == list(range(N_RIDGE))


def test_ridge_stage_linear_kernel_recovers_the_map(exact):
    pairs, runs = exact
    for result, arrays in runs.values():
        pred = arrays["linear_eval_pred"]
        cos = (unit(pred) * unit(pairs.ye)).sum(axis=1)
        assert cos.min() > 0.99
        k = result["kernels"]["linear"]
        assert k["spec"] == "linear" and k["gamma"] is None
        assert k["alpha"] in ALPHAS
        curve = k["val_curves"]["linear"]
        assert set(curve) == {repr(a) for a in ALPHAS}
        best = min(curve.values())
        # the chosen alpha scores the lowest validation nmse; ties go to the larger alpha
        assert k["alpha"] == max(a for a in ALPHAS if curve[repr(a)] <= best + 1e-12)
        assert k["val_nmse"] == best
        assert k["eval_nmse_mean"] == pytest.approx(float((2 * (1 - cos)).mean()), abs=1e-6)
        # the primal weights give the same predictions from the unit source rows
        w = arrays["linear_weight"].astype(np.float64)
        np.testing.assert_allclose(unit(pairs.xe) @ w, pred, atol=1e-5)


def test_ridge_stage_rbf_gamma_comes_from_the_grid(exact):
    pairs, runs = exact
    for result, arrays in runs.values():
        k = result["kernels"]["rbf"]
        assert k["gamma"] in GAMMAS
        assert k["spec"] == f"rbf_g{k['gamma']:g}"
        assert k["alpha"] in ALPHAS
        assert set(k["val_curves"]) == {"rbf_g0.5", "rbf_g1", "rbf_g2"}
        lowest = min(min(c.values()) for c in k["val_curves"].values())
        assert k["val_nmse"] == lowest == min(k["val_curves"][k["spec"]].values())
        cos = (unit(arrays["rbf_eval_pred"]) * unit(pairs.ye)).sum(axis=1)
        assert k["eval_nmse_mean"] == pytest.approx(float((2 * (1 - cos)).mean()), abs=1e-6)


def test_ridge_stage_misaligned_shards_name_both_files_and_write_nothing(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    # the second destination ridge shard holds other documents than the source's
    bad = tmp_path / "acts" / "dst" / "ridge" / "shifted.parquet"
    docs = [f"builtin:pydoc:topics:{900 + i // 2}" for i in range(N_RIDGE // 2)]
    write_table(bad, activation_table(docs, pairs.y[N_RIDGE // 2 :], 3))
    pairs.paths["dst_ridge"][1] = str(bad)
    out = tmp_path / "results" / "ridge"
    with pytest.raises(DataError) as e:
        run_ridge(pairs, out, 20)
    msg = str(e.value)
    assert pairs.paths["src_ridge"][1] in msg and str(bad) in msg
    assert "not aligned" in msg
    assert not out.exists()


def test_ridge_stage_shard_count_mismatch_is_a_data_error(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    pairs.paths["dst_eval"] = pairs.paths["dst_eval"][:1]
    out = tmp_path / "results" / "ridge"
    with pytest.raises(DataError, match="2 source shards but 1 destination shards"):
        run_ridge(pairs, out, 20)
    assert not out.exists()


@pytest.mark.parametrize("n", [-1, 0])
def test_ridge_stage_rejects_a_training_size_below_one(tmp_path, n):
    pairs = write_pairs(tmp_path, noise=0.0)
    out = tmp_path / "results" / "ridge"
    # the message names n and the value given
    with pytest.raises(ConfigError, match=rf"\bn\b.*{n}"):
        run_ridge(pairs, out, n)
    assert not out.exists()


# ----------------------------------------------------------------------------- ridge CLI


def ridge_args(pairs: Pairs, out: Path, n: int, params: dict) -> list[str]:
    """The command line of rules/ridge.smk: each shard list as its folder, and the counts."""
    return [
        "--threads",
        "1",
        "ridge",
        "--n",
        str(n),
        "--params",
        to_json(params),
        "--src-ridge",
        shard_folder(pairs.paths["src_ridge"]),
        "--dst-ridge",
        shard_folder(pairs.paths["dst_ridge"]),
        "--src-eval",
        shard_folder(pairs.paths["src_eval"]),
        "--dst-eval",
        shard_folder(pairs.paths["dst_eval"]),
        "--ridge-shards",
        str(len(pairs.paths["src_ridge"])),
        "--eval-shards",
        str(len(pairs.paths["src_eval"])),
        "--out-json",
        str(out / f"n-{n}.json"),
        "--out-npz",
        str(out / f"n-{n}.npz"),
        "--device",
        "cpu",
    ]


def test_ridge_cli_writes_json_and_npz(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    out = tmp_path / "results" / "ridge" / "ridge-0123456789" / "srcfam_to_dstfam"
    proc = nlaprobe(*ridge_args(pairs, out, 40, PARAMS))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["n-40.json", "n-40.npz"]
    result = json.loads((out / "n-40.json").read_text())
    assert (result["n_requested"], result["n"], result["n_pairs"], result["n_eval"]) == (
        40,
        40,
        N_RIDGE,
        N_EVAL,
    )
    assert result["provenance"] == PROVENANCE
    assert sorted(result["kernels"]) == ["linear", "rbf"]
    with np.load(out / "n-40.npz", allow_pickle=False) as z:
        perm = np.random.default_rng(SEED).permutation(N_RIDGE)
        assert z["train_rows"].tolist() == sorted(perm[:40].tolist())
        cos = (unit(z["linear_eval_pred"]) * unit(pairs.ye)).sum(axis=1)
    assert cos.min() > 0.99


def test_ridge_cli_bad_params_exit_2_naming_the_field(tmp_path):
    pairs = write_pairs(tmp_path, noise=0.0)
    out = tmp_path / "results" / "ridge"
    params = {**PARAMS, "alphas": [0.1, -1.0]}
    proc = nlaprobe(*ridge_args(pairs, out, 40, params))
    assert proc.returncode == 2
    assert "alphas" in proc.stderr and "--params" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
