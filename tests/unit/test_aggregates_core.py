"""Aggregates (SPEC §5, §6 E1/E7, §8) on score and gold shards written by hand: row matching,
tag failures, fidelity and the shuffled-pair null against independent numpy computations, the
results JSON structure, atomic writes and determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from contract import CELL_KEYS, META_KEYS

from nlaprobe.aggregates import core as A
from nlaprobe.aggregates import fve_baseline, transfer_matrix
from nlaprobe.aggregates.stage import run_aggregate
from nlaprobe.errors import ConfigError, DataError
from nlaprobe.io import vectors_to_arrow, write_table

METRICS = {"n_boot": 50, "alpha": 0.05, "null_seed": 3}


# ----------------------------------------------------------------------------- independent maths


def nrm(v: np.ndarray) -> np.ndarray:
    """√d-normalised rows, written out independently of nlaprobe.metrics."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.sqrt((v**2).sum(axis=1, keepdims=True)) * math.sqrt(v.shape[1])


def nmse_np(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return ((nrm(p) - nrm(g)) ** 2).mean(axis=1)


def var_np(g: np.ndarray) -> float:
    gn = nrm(g)
    return float(((gn - gn.mean(axis=0)) ** 2).sum() / gn.size)  # population variance


# ----------------------------------------------------------------------------- shards by hand


def write_gold(path: Path, doc_ids: list[str], vectors: np.ndarray) -> str:
    write_table(
        path,
        pa.table(
            {
                "doc_id": pa.array(doc_ids, pa.string()),
                "activation_vector": vectors_to_arrow(vectors),
            }
        ),
    )
    return str(path)


def write_scores(
    path: Path,
    rows: list[int],
    doc_ids: list[str],
    pred: np.ndarray,
    gold: np.ndarray,
    *,
    tag_failure: list[bool] | None = None,
    decode_error: list[bool] | None = None,
    sample: list[int] | None = None,
) -> str:
    """A score shard as the score stage writes it: failures keep their row, with null numbers and
    a null pred_vector. `gold` is the gold shard's full matrix (indexed by `rows`)."""
    n = len(rows)
    tf = np.asarray(tag_failure or [False] * n)
    de = np.asarray(decode_error or [False] * n)
    ok = ~tf & ~de
    g = gold[rows]
    cos = (nrm(pred) * nrm(g)).sum(axis=1) / pred.shape[1]
    nmse = nmse_np(pred, g)
    norm = np.sqrt((pred.astype(np.float64) ** 2).sum(axis=1))

    def masked(a):
        return pa.array([float(x) if k else None for x, k in zip(a, ok, strict=True)], pa.float64())

    table = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "doc_id": pa.array(doc_ids, pa.string()),
            "sample": pa.array(sample or [0] * n, pa.int64()),
            "tag_failure": pa.array(tf.tolist()),
            "decode_error": pa.array(de.tolist()),
            "pred_norm": masked(norm),
            "cos": masked(cos),
            "nmse": masked(nmse),
            "pred_vector": vectors_to_arrow(np.where(ok[:, None], pred, 0.0), ok),
        }
    )
    write_table(path, table)
    return str(path)


def normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """float32, as vectors are stored: the independent computations then see the same values."""
    return rng.normal(size=shape).astype(np.float32)


def docs(shard: int, n: int, per_doc: int = 2) -> list[str]:
    """doc_ids of a shard's rows: `per_doc` consecutive rows share a document."""
    return [f"builtin:pydoc:topics:{shard * 100 + i // per_doc}" for i in range(n)]


class Cell:
    """Two shards of one (AV, AR) pair: gold [n, d] per shard, scores of every row (rows in a
    scrambled order), some tag failures. Keeps the truth for the independent checks."""

    def __init__(self, root: Path, name: str, d: int, seed: int, failures=((0, 1), (1, 4))):
        rng = np.random.default_rng(seed)
        root.mkdir(parents=True, exist_ok=True)
        self.scores, self.gold = [], []
        self.pred_ok, self.gold_ok, self.docs_ok = [], [], []
        self.n_rows = self.tag_failures = 0
        for shard, n in enumerate((6, 5)):
            # anisotropic, like real activations; float32 as stored, so the truth is exact
            gold = (rng.normal(size=(n, d)) + 0.5).astype(np.float32)
            ids = docs(shard, n)
            order = list(rng.permutation(n))  # score rows need not follow the gold order
            pred = (gold[order] + rng.normal(scale=0.7, size=(n, d))).astype(np.float32)
            tf = [(shard, int(r)) in failures for r in order]
            self.gold.append(write_gold(root / f"{name}-gold-{shard}.parquet", ids, gold))
            self.scores.append(
                write_scores(
                    root / f"{name}-scores-{shard}.parquet",
                    [int(r) for r in order],
                    [ids[r] for r in order],
                    pred,
                    gold,
                    tag_failure=tf,
                )
            )
            keep = ~np.asarray(tf)
            self.pred_ok.append(pred[keep])
            self.gold_ok.append(gold[np.asarray(order)[keep]])
            self.docs_ok += [ids[r] for r, t in zip(order, tf, strict=True) if not t]
            self.n_rows += n
            self.tag_failures += sum(tf)
        self.pred_ok = np.concatenate(self.pred_ok)
        self.gold_ok = np.concatenate(self.gold_ok)

    @property
    def inputs(self) -> dict:
        return {"scores": self.scores, "gold": self.gold}


@pytest.fixture
def cell(tmp_path) -> Cell:
    return Cell(tmp_path / "cell", "x", d=8, seed=1)


# ----------------------------------------------------------------------------- load_scored


def test_load_scored_matches_rows_across_shards(cell):
    s = A.load_scored(cell.scores, cell.gold)
    assert s.n_rows == 11
    assert s.tag_failures == 2 == cell.tag_failures
    assert s.decode_errors == 0
    assert len(s.pred) == len(s.gold) == len(s.doc_ids) == len(s.nmse) == 9
    np.testing.assert_allclose(s.pred, cell.pred_ok, rtol=0)
    # each prediction sits next to the gold vector of its own row, not of its position
    np.testing.assert_allclose(s.gold, cell.gold_ok, rtol=0)
    np.testing.assert_allclose(s.nmse, nmse_np(cell.pred_ok, cell.gold_ok), rtol=1e-5)
    assert s.doc_ids == cell.docs_ok


def test_load_scored_excludes_and_counts_failures_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    gold = normal(rng, 4, 3)
    ids = docs(0, 4)
    gp = write_gold(tmp_path / "g.parquet", ids, gold)
    sp = write_scores(
        tmp_path / "s.parquet",
        [0, 1, 2, 3],
        ids,
        gold + np.float32(0.1),
        gold,
        tag_failure=[True, False, False, False],
        decode_error=[False, False, True, False],
    )
    s = A.load_scored([sp], [gp])
    assert (s.n_rows, s.tag_failures, s.decode_errors) == (4, 1, 1)
    np.testing.assert_allclose(s.gold, gold[[1, 3]], rtol=0)
    assert s.doc_ids == [ids[1], ids[3]]


def test_load_scored_keeps_one_sample_unless_asked(tmp_path):
    rng = np.random.default_rng(0)
    gold = normal(rng, 2, 3)
    ids = docs(0, 2, per_doc=1)
    gp = write_gold(tmp_path / "g.parquet", ids, gold)
    rows = [0, 0, 1, 1]
    pred = normal(rng, 4, 3)
    sp = write_scores(
        tmp_path / "s.parquet", rows, [ids[r] for r in rows], pred, gold, sample=[0, 1, 0, 1]
    )
    s0 = A.load_scored([sp], [gp])
    np.testing.assert_allclose(s0.pred, pred[[0, 2]], rtol=0)
    s1 = A.load_scored([sp], [gp], sample=1)
    np.testing.assert_allclose(s1.pred, pred[[1, 3]], rtol=0)
    both = A.load_scored([sp], [gp], sample=None)
    assert both.n_rows == 4 and len(both.pred) == 4
    np.testing.assert_allclose(both.gold, gold[rows], rtol=0)


def test_misaligned_doc_id_names_the_files(tmp_path):
    rng = np.random.default_rng(0)
    gold = normal(rng, 3, 4)
    ids = docs(0, 3, per_doc=1)
    gp = write_gold(tmp_path / "gold.parquet", ids, gold)
    wrong = [ids[0], ids[2], ids[1]]  # rows 1 and 2 claim each other's documents
    sp = write_scores(tmp_path / "scores.parquet", [0, 1, 2], wrong, gold + np.float32(0.1), gold)
    with pytest.raises(DataError, match="gold.parquet") as err:
        A.load_scored([sp], [gp])
    assert "scores.parquet" in str(err.value) and ids[2] in str(err.value)


def test_row_beyond_the_gold_shard_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    gold = normal(rng, 2, 4)
    ids = docs(0, 2, per_doc=1)
    gp = write_gold(tmp_path / "gold.parquet", ids, gold)
    big = np.concatenate([gold, gold[:1]])
    sp = write_scores(tmp_path / "s.parquet", [0, 1, 2], [*ids, "builtin:pydoc:topics:9"], big, big)
    with pytest.raises(DataError, match="gold.parquet"):
        A.load_scored([sp], [gp])


def test_shard_lists_must_pair_up(cell):
    with pytest.raises(DataError, match="2 score shards but 1 gold"):
        A.load_scored(cell.scores, cell.gold[:1])


def test_missing_score_shard_is_a_data_error(cell, tmp_path):
    with pytest.raises(DataError, match="nope.parquet"):
        A.load_scored([str(tmp_path / "nope.parquet"), cell.scores[1]], cell.gold)


# ----------------------------------------------------------------------------- fidelity and null


def test_fidelity_against_numpy(cell):
    s = A.load_scored(cell.scores, cell.gold)
    out = A.fidelity(s, train_var=0.5, n_boot=50, seed=0, alpha=0.05)
    nmse = nmse_np(cell.pred_ok, cell.gold_ok)
    var = var_np(cell.gold_ok)
    assert out["n"] == 9 and out["n_rows"] == 11
    assert out["tag_failures"] == 2 and out["decode_errors"] == 0
    assert out["var_own"] == pytest.approx(var, rel=1e-9)
    assert out["fve_own"]["value"] == pytest.approx(1 - nmse.mean() / var, rel=1e-9)
    assert out["fve_train"]["value"] == pytest.approx(1 - nmse.mean() / 0.5, rel=1e-9)
    assert out["nmse_mean"]["value"] == pytest.approx(nmse.mean(), rel=1e-9)
    assert out["nmse_median"] == pytest.approx(np.median(nmse), rel=1e-9)
    cos = 1 - nmse / 2
    assert out["cos_mean"]["value"] == pytest.approx(cos.mean(), rel=1e-9)
    assert out["frac_fve_neg"] == pytest.approx(np.mean(1 - nmse / var < 0))
    assert out["frac_fve_gt_half"] == pytest.approx(np.mean(1 - nmse / var > 0.5))
    # strict: each tag failure scored as nmse = 2
    strict = (nmse.sum() + 2 * 2) / 11
    assert out["nmse_mean_strict"] == pytest.approx(strict, rel=1e-9)
    assert out["fve_own_strict"] == pytest.approx(1 - strict / var, rel=1e-9)
    assert out["fve_train_strict"] == pytest.approx(1 - strict / 0.5, rel=1e-9)
    for key in ("fve_own", "fve_train", "nmse_mean", "cos_mean"):
        assert out[key]["lo"] <= out[key]["value"] <= out[key]["hi"], key
    # documents, not rows, are resampled: 2 rows per document, 6 documents with a scored row
    assert out["bootstrap"]["unit"] == "group"
    assert out["bootstrap"]["n_units"] == len(set(cell.docs_ok))
    json.dumps(out)  # JSON-ready


def test_shuffled_null_equals_an_independent_permutation(cell):
    s = A.load_scored(cell.scores, cell.gold)
    for seed in (0, 3):
        perm = np.random.default_rng(seed).permutation(len(cell.pred_ok))
        nmse = nmse_np(cell.pred_ok[perm], cell.gold_ok)
        want = 1 - nmse.mean() / var_np(cell.gold_ok)
        assert A.shuffled_null_fve(s, seed) == pytest.approx(want, rel=1e-9)
    assert A.shuffled_null_fve(s, 0) != A.shuffled_null_fve(s, 3)
    # the pairs are close (noise 0.7 on an anisotropic gold): the null sits well below the cell
    own = A.fidelity(s, train_var=None, n_boot=10, seed=0, alpha=0.05)["fve_own"]["value"]
    assert A.shuffled_null_fve(s, 0) < own


def test_null_needs_two_rows(tmp_path):
    gold = np.array([[1.0, 2.0, 0.5]])
    ids = docs(0, 1)
    s = A.load_scored(
        [write_scores(tmp_path / "s.parquet", [0], ids, gold + np.float32(0.1), gold)],
        [write_gold(tmp_path / "g.parquet", ids, gold)],
    )
    assert A.shuffled_null_fve(s, 0) is None


def all_failures(root: Path, name: str, d: int = 4) -> Cell:
    return Cell(root, name, d=d, seed=2, failures={(s, r) for s in (0, 1) for r in range(6)})


def test_all_tag_failures_give_null_figures_and_counts(tmp_path):
    c = all_failures(tmp_path, "f")
    s = A.load_scored(c.scores, c.gold)
    assert (len(s.pred), s.n_rows, s.tag_failures) == (0, 11, 11)
    out = A.fidelity(s, train_var=0.7, n_boot=50, seed=0, alpha=0.05)
    assert out["n"] == 0 and out["n_rows"] == out["tag_failures"] == 11
    assert out["fve_own"] == {"value": None, "lo": None, "hi": None}
    assert out["fve_train"] == {"value": None, "lo": None, "hi": None}
    assert out["nmse_mean"]["value"] is None and out["var_own"] is None
    # every row is a failure scored as nmse = 2: the strict figures need only train_var
    assert out["nmse_mean_strict"] == 2.0
    assert out["fve_train_strict"] == pytest.approx(1 - 2 / 0.7)
    assert out["fve_own_strict"] is None
    assert A.shuffled_null_fve(s, 0) is None
    json.dumps(out)
    no_train = A.fidelity(s, train_var=None, n_boot=50, seed=0, alpha=0.05)
    assert no_train["fve_train"] is None and no_train["fve_train_strict"] is None


def test_a_single_scored_row_gives_null_fve_not_a_crash(tmp_path):
    """A barely trained AV may close its tags once: Var of one gold row is undefined (0), so the
    FVE figures are null, as with no scored row, and the aggregate is still written."""
    keep = (0, 2)  # shard 0, row 2 is the only row with an explanation
    c = Cell(
        tmp_path, "one", d=4, seed=5, failures={(s, r) for s in (0, 1) for r in range(6)} - {keep}
    )
    s = A.load_scored(c.scores, c.gold)
    assert (len(s.pred), s.n_rows, s.tag_failures) == (1, 11, 10)
    out = A.fidelity(s, train_var=0.5, n_boot=50, seed=0, alpha=0.05)
    assert out["n"] == 1 and out["fve_own"]["value"] is None and out["fve_train"]["value"] is None
    strict = (nmse_np(c.pred_ok, c.gold_ok)[0] + 2 * 10) / 11
    assert out["nmse_mean_strict"] == pytest.approx(strict, rel=1e-9)
    assert out["fve_train_strict"] == pytest.approx(1 - strict / 0.5, rel=1e-9)
    assert A.shuffled_null_fve(s, 0) is None
    spec = {
        "families": ["f"],
        "metrics": METRICS,
        "train_var": {"f": None},
        "cells": {"f__f": c.inputs},
    }
    cell = transfer_matrix.compute(spec)["cells"]["f__f"]
    assert (cell["n"], cell["n_rows"], cell["tag_failures"]) == (1, 11, 10)
    assert cell["fve_own"]["value"] is None and cell["null_fve_own"] is None


# ----------------------------------------------------------------------------- aggregates


def sidecar(path: Path, n_rows: int, err: float | None) -> str:
    al = None if err is None else {"mean_abs_error_chars": err, "positions": "p.parquet"}
    path.write_text(yaml.safe_dump({"n_rows": n_rows, "alignment": al}))
    return str(path)


def two_family_spec(root: Path, *, fail: str | None = None) -> dict:
    """The spec Plan.aggregate_spec writes, for families p (d=6, primary) and q (d=4): a cell's
    vectors have the width of its AR family. `fail`: an AV family whose decodes all failed."""
    fams, d = ["p", "q"], {"p": 6, "q": 4}
    cells = {}
    for i, av in enumerate(fams):
        for j, ar in enumerate(fams):
            name = f"{av}__{ar}"
            if av == fail:
                cells[name] = all_failures(root / name, name, d=d[ar]).inputs
            else:
                cells[name] = Cell(root / name, name, d=d[ar], seed=10 + 2 * i + j).inputs
    return {
        "families": fams,
        "metrics": METRICS,
        "train_var": {"p": 0.25, "q": None},
        "cells": cells,
        "alignment_sidecars": [
            sidecar(root / "q0.nla_meta.yaml", 6, 0.5),
            sidecar(root / "q1.nla_meta.yaml", 2, 1.5),
        ],
    }


def config() -> dict:
    fam = {
        "layer": 2,
        **{r: {"demo": "x", "dtype": "float32", "revision": "main"} for r in ("base", "av", "ar")},
    }
    return {
        "run": {"seed": 42, "device": "cpu"},
        "metrics": METRICS,
        "families": {"p": fam, "q": fam},
    }


def test_fve_baseline_structure(tmp_path):
    spec = two_family_spec(tmp_path)
    data = fve_baseline.compute(spec)
    assert set(data) == {"families"}
    assert list(data["families"]) == ["p", "q"]
    p, q = data["families"]["p"], data["families"]["q"]
    assert p["var_train"] == 0.25 and p["fve_train"]["value"] is not None
    assert q["var_train"] is None and q["fve_train"] is None
    for fam, out in data["families"].items():
        s = A.load_scored(*spec["cells"][f"{fam}__{fam}"].values())
        nmse, var = nmse_np(s.pred, s.gold), var_np(s.gold)
        assert out["fve_own"]["value"] == pytest.approx(1 - nmse.mean() / var, rel=1e-9)
        assert out["bootstrap"]["n_boot"] == METRICS["n_boot"]
        assert out["bootstrap"]["seed"] == METRICS["null_seed"]
        assert (out["n"], out["n_rows"], out["tag_failures"]) == (9, 11, 2)


def test_transfer_matrix_structure(tmp_path):
    spec = two_family_spec(tmp_path)
    spec = {**spec, "alignment": A.alignment_summary(spec["alignment_sidecars"])}
    data = transfer_matrix.compute(spec)
    assert set(data) == {"families", "matrix", "nulls", "cells", "alignment"}
    assert data["families"] == ["p", "q"]
    assert set(data["cells"]) == {"p__p", "p__q", "q__p", "q__q"}
    for name, c in data["cells"].items():
        av, ar = name.split("__")
        assert CELL_KEYS <= set(c)
        assert (c["av"], c["ar"]) == (av, ar)
        assert c["route"] == ("within" if av == ar else "cross")
        assert (c["n"], c["n_rows"], c["tag_failures"]) == (9, 11, 2)
        assert data["matrix"][av][ar] == c["fve_own"]["value"]
        assert data["nulls"][av][ar] == c["null_fve_own"]
        s = A.load_scored(*spec["cells"][name].values())
        assert s.pred.shape[1] == {"p": 6, "q": 4}[ar]
        assert c["fve_own"]["value"] == pytest.approx(
            1 - nmse_np(s.pred, s.gold).mean() / var_np(s.gold), rel=1e-9
        )
        assert c["null_fve_own"] == pytest.approx(A.shuffled_null_fve(s, METRICS["null_seed"]))
        assert c["null_fve_own"] < c["fve_own"]["value"]
    # rows-weighted mean alignment error over the aligned family's sidecars: (6·0.5 + 2·1.5)/8
    assert data["alignment"] == {"mean_abs_error_chars": 0.75, "n_rows": 8}


def test_transfer_matrix_with_an_av_that_wrote_no_tags(tmp_path):
    data = transfer_matrix.compute(two_family_spec(tmp_path, fail="q"))
    for ar in ("p", "q"):
        c = data["cells"][f"q__{ar}"]
        assert c["fve_own"]["value"] is None and c["null_fve_own"] is None
        assert c["n"] == 0 and c["tag_failures"] == c["n_rows"] == 11
        assert data["matrix"]["q"][ar] is None and data["nulls"]["q"][ar] is None
        assert data["matrix"]["p"][ar] is not None
    json.dumps(data)


def test_run_aggregate_writes_meta_and_data_atomically(tmp_path):
    spec = two_family_spec(tmp_path / "in")
    out_dir = tmp_path / "results"
    first = {}
    for name in ("fve_baseline", "transfer_matrix"):
        out = out_dir / f"{name}.json"
        data = run_aggregate(name, spec, str(out), config())
        doc = json.loads(out.read_text())
        assert set(doc) == {"meta", "data"}
        assert doc["data"] == json.loads(json.dumps(data))
        meta = doc["meta"]
        assert META_KEYS <= set(meta)
        assert meta["schema_version"] == A.RESULTS_SCHEMA_VERSION
        assert meta["config_hash"] == A.config_hash(config())
        assert meta["device"] == "cpu"
        assert meta["seeds"] == {"run": 42, "metrics": METRICS}
        assert meta["checkpoints"]["q"]["ar"] == {
            "demo": "x",
            "dtype": "float32",
            "revision": "main",
        }
        first[name] = doc["data"]
    assert first["transfer_matrix"]["alignment"]["mean_abs_error_chars"] == 0.75
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "fve_baseline.json",
        "transfer_matrix.json",
    ]

    # two runs give identical data (meta may differ: created_at)
    for name in first:
        out = out_dir / f"{name}.json"
        run_aggregate(name, spec, str(out), config())
        assert json.loads(out.read_text())["data"] == first[name]

    # a failing run leaves the previous result untouched and no temporary file behind
    before = (out_dir / "transfer_matrix.json").read_bytes()
    broken = {
        **spec,
        "cells": {**spec["cells"], "q__p": {"scores": ["nope.parquet"], "gold": ["g"]}},
    }
    with pytest.raises(DataError, match="nope.parquet"):
        run_aggregate("transfer_matrix", broken, str(out_dir / "transfer_matrix.json"), config())
    assert (out_dir / "transfer_matrix.json").read_bytes() == before
    with pytest.raises(DataError):
        run_aggregate("transfer_matrix", broken, str(out_dir / "new.json"), config())
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "fve_baseline.json",
        "transfer_matrix.json",
    ]


def test_run_aggregate_rejects_an_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown aggregate 'centred_eval'; valid: .*layers"):
        run_aggregate("centred_eval", {}, str(tmp_path / "x.json"), config())
    assert not (tmp_path / "x.json").exists()


def test_results_meta_spells_out_the_checkpoints():
    cfg = config()
    cfg["families"]["q"] = {
        "layer": 20,
        "base": {
            "id": "org/base",
            "revision": "abc",
            "dtype": "bfloat16",
            "trust_remote_code": False,
        },
        "av": {"path": "/models/av", "dtype": "bfloat16"},
        "ar": {"id": "org/ar", "revision": "main", "dtype": "bfloat16"},
    }
    meta = A.results_meta(cfg, {"aggregate": "fve_baseline"})
    assert META_KEYS | {"aggregate"} == set(meta)
    assert meta["checkpoints"]["q"]["base"] == {
        "id": "org/base",
        "revision": "abc",
        "dtype": "bfloat16",
    }
    assert meta["checkpoints"]["q"]["av"] == {"path": "/models/av", "dtype": "bfloat16"}
    assert meta["config_hash"] == A.config_hash(json.loads(json.dumps(cfg)))
    assert meta["config_hash"] != A.config_hash(config())
