"""Aggregates E2-E6 (nlaprobe.aggregates: quote_ablation, verbatim, redaction, best_of_n,
layers) on activation, decode and score shards written by hand: every figure against an
independent numpy computation or a hand count, intervals that hold their point estimate, and
deterministic output."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from nlaprobe import aggregates as AG
from nlaprobe import spans
from nlaprobe.aggregates import best_of_n as E5
from nlaprobe.aggregates import layers as E6
from nlaprobe.aggregates import quote_ablation as E2
from nlaprobe.aggregates import redaction as E4
from nlaprobe.aggregates import verbatim as E3
from nlaprobe.aggregates.core import Rows, paired_fve_diff
from nlaprobe.decode import decode_table
from nlaprobe.errors import DataError
from nlaprobe.io import read_table, vectors_to_arrow, write_table
from nlaprobe.redact import redact_shard

D = 5
METRICS = {"n_boot": 50, "alpha": 0.05, "null_seed": 3}
TRAIN_VAR = 0.9
# two eval shards of four rows each; two consecutive rows share a document
DOCS = [["doc:0", "doc:0", "doc:1", "doc:1"], ["doc:2", "doc:2", "doc:3", "doc:3"]]
KEYS = [(sh, r) for sh in range(2) for r in range(4)]
ERROR_ROW = (1, 2)  # its vector is unusable: a decode error in every condition


# ----------------------------------------------------------------------------- independent maths


def nrm(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.sqrt((v**2).sum(axis=1, keepdims=True)) * math.sqrt(v.shape[1])


def nmse_np(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return ((nrm(p) - nrm(g)) ** 2).mean(axis=1)


def cos_np(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return (nrm(p) * nrm(g)).sum(axis=1) / p.shape[1]


def var_np(g: np.ndarray) -> float:
    gn = nrm(g)
    return float(((gn - gn.mean(axis=0)) ** 2).sum() / gn.size)


def words(text: str) -> list[str]:
    """Normalised words for ASCII-word texts: apostrophes dropped, other marks -> spaces."""
    return re.sub(r"[^\w\s]", " ", re.sub("['\u2019]", "", text.lower())).split()


def run_np(a: str, b: str) -> int:
    """Longest run of words shared by two texts, by brute force."""
    x, y = words(a), words(b)
    best = 0
    for i in range(len(x)):
        for j in range(len(y)):
            k = 0
            while i + k < len(x) and j + k < len(y) and x[i + k] == y[j + k]:
                k += 1
            best = max(best, k)
    return best


def intervals(obj):
    """Every {"value", "lo", "hi"} dict nested in obj."""
    if isinstance(obj, dict):
        if {"value", "lo", "hi"} <= set(obj):
            yield obj
        for v in obj.values():
            yield from intervals(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from intervals(v)


def check_intervals(data) -> int:
    """lo <= value <= hi for every defined interval; returns how many were defined."""
    n = 0
    for iv in intervals(data):
        if iv["value"] is None or iv["lo"] is None:
            continue
        assert iv["lo"] - 1e-12 <= iv["value"] <= iv["hi"] + 1e-12, iv
        n += 1
    return n


def same_twice(fn, spec) -> dict:
    first = fn(spec)
    assert json.dumps(first, sort_keys=True) == json.dumps(fn(spec), sort_keys=True)
    json.dumps(first, allow_nan=False)  # JSON-ready, no NaN
    return first


# ----------------------------------------------------------------------------- shards by hand


def write_acts(path: Path, sh: int, gold: np.ndarray, *, contexts=None, layers=None) -> str:
    cols = {
        "doc_id": pa.array(DOCS[sh], pa.string()),
        "activation_vector": vectors_to_arrow(gold),
    }
    if contexts is not None:
        cols["detokenized_text_truncated"] = pa.array(contexts, pa.string())
    for k, v in (layers or {}).items():
        cols[f"activation_vector_L{k}"] = vectors_to_arrow(v)
    write_table(path, pa.table(cols))
    return str(path)


def write_decodes(
    path: Path, sh: int, expl: dict, *, samples=1, leaks=None, n_banned=0, errors=(ERROR_ROW,)
) -> str:
    """A decode shard (row-major over samples). expl: (sh, r[, s]) -> text or None; a row of
    `errors` is a decode error (no text, no explanation), any other None a tag failure."""
    rows = []
    for r in range(4):
        for s in range(samples):
            err = "vector is zero" if (sh, r) in errors else None
            e = None if err else expl.get((sh, r, s), expl.get((sh, r)))
            rows.append(
                {
                    "row": r,
                    "doc_id": DOCS[sh][r],
                    "position": 10 + r,
                    "sample": s,
                    "seed": 0,
                    "text": None if err else f"<explanation>{e}</explanation>" if e else "x",
                    "explanation": e,
                    "n_tokens": 0 if err else 7,
                    "finish_reason": "error" if err else "stop",
                    "error": err,
                    "leaks": (leaks or {}).get((sh, r), 0),
                }
            )
    meta = {"condition": {"name": "c"}, "summary": {"n_banned_tokens": n_banned}}
    write_table(path, decode_table(rows, meta))
    return str(path)


@dataclass
class ScoredSet:
    """One scored set: its score shards and the truth behind them."""

    scores: list[str]
    pred: dict = field(default_factory=dict)  # (sh, r, s) -> [D] float32
    status: dict = field(default_factory=dict)  # (sh, r, s) -> "ok" | "tag" | "err"

    def ok(self, keys) -> list[tuple]:
        return [k for k in keys if self.status[k] == "ok"]


class Fam:
    """Family "f": gold activation shards in `root` and scored sets on them."""

    def __init__(self, root: Path, seed: int, *, layers=()):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.rng = np.random.default_rng(seed)
        # anisotropic like real activations; float32 as stored
        self.gold = [(self.rng.normal(size=(4, D)) + 0.5).astype(np.float32) for _ in DOCS]
        self.layer = {
            k: [
                (g + self.rng.normal(scale=0.4 * k, size=g.shape)).astype(np.float32)
                for g in self.gold
            ]
            for k in layers
        }
        self.acts = [
            write_acts(
                root / f"acts-{sh}.parquet",
                sh,
                self.gold[sh],
                layers={k: v[sh] for k, v in self.layer.items()},
            )
            for sh in range(2)
        ]

    def g(self, key) -> np.ndarray:
        return self.gold[key[0]][key[1]]

    def score(self, name: str, status: dict | None = None, *, samples=1, scale=0.7) -> ScoredSet:
        """Score shards of set `name`: status (sh, r[, s]) -> "tag" | "err" (default "ok"; the
        error row is always "err"); shard 1's rows are written in reverse order."""
        status = status or {}
        st = ScoredSet([])
        for sh in range(2):
            order = [0, 1, 2, 3] if sh == 0 else [3, 2, 1, 0]
            rows, ids, samp, pred, tf, de = [], [], [], [], [], []
            for r in order:
                for s in range(samples):
                    k = (sh, r, s)
                    p = (self.gold[sh][r] + self.rng.normal(scale=scale, size=D)).astype(np.float32)
                    stat = "err" if (sh, r) == ERROR_ROW else status.get(k, status.get(k[:2], "ok"))
                    st.pred[k], st.status[k] = p, stat
                    rows.append(r)
                    ids.append(DOCS[sh][r])
                    samp.append(s)
                    pred.append(p)
                    tf.append(stat == "tag")
                    de.append(stat == "err")
            pred = np.stack(pred)
            ok = ~np.asarray(tf) & ~np.asarray(de)
            nmse = nmse_np(pred, self.gold[sh][rows])
            cos = cos_np(pred, self.gold[sh][rows])

            def masked(a, ok=ok):
                return pa.array([float(x) if k else None for x, k in zip(a, ok, strict=True)])

            path = self.root / f"{name}-scores-{sh}.parquet"
            table = pa.table(
                {
                    "row": pa.array(rows, pa.int64()),
                    "doc_id": pa.array(ids, pa.string()),
                    "sample": pa.array(samp, pa.int64()),
                    "tag_failure": pa.array(tf),
                    "decode_error": pa.array(de),
                    "pred_norm": masked(np.linalg.norm(pred, axis=1)),
                    "cos": masked(cos),
                    "nmse": masked(nmse),
                    "pred_vector": vectors_to_arrow(np.where(ok[:, None], pred, 0.0), ok),
                }
            )
            write_table(path, table)
            st.scores.append(str(path))
        return st

    def cell(self, st: ScoredSet, **extra) -> dict:
        return {"scores": st.scores, "gold": self.acts, **extra}

    # hand figures over explicit (sh, r, s) keys
    def arrays(self, st: ScoredSet, keys) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([st.pred[k] for k in keys]), np.stack([self.g(k) for k in keys])

    def fve(self, st: ScoredSet, keys) -> float:
        p, g = self.arrays(st, keys)
        return 1 - nmse_np(p, g).mean() / var_np(g)

    def nmse_mean(self, st: ScoredSet, keys) -> float:
        return float(nmse_np(*self.arrays(st, keys)).mean())

    def diff(self, a: ScoredSet, a_keys, b: ScoredSet, b_keys) -> float:
        """fve(a) - fve(b) on paired keys, b's Var as the denominator."""
        var = var_np(self.arrays(b, b_keys)[1])
        return (self.nmse_mean(b, b_keys) - self.nmse_mean(a, a_keys)) / var

    def diff_train(self, a: ScoredSet, a_keys, b: ScoredSet, b_keys) -> float:
        """fve_train(a) - fve_train(b) on paired keys: the training Var as the denominator."""
        return (self.nmse_mean(b, b_keys) - self.nmse_mean(a, a_keys)) / TRAIN_VAR


def spec_of(key: str, cells: dict, **extra) -> dict:
    return {
        "families": ["f"],
        "metrics": METRICS,
        "settings": {},
        "train_var": {"f": TRAIN_VAR},
        key: cells,
        **extra,
    }


def k0(*keys) -> list[tuple]:
    """(sh, r) keys -> sample-0 keys."""
    return [(*k, 0) for k in keys]


ALL0 = k0(*KEYS)


# ----------------------------------------------------------------------------- paired_fve_diff


def rows_of(keys, nmse, gold, docs, *, tag=(), err=()) -> Rows:
    n = len(keys)
    return Rows(
        shard=np.array([k[0] for k in keys], dtype=np.int64),
        row=np.array([k[1] for k in keys], dtype=np.int64),
        sample=np.array([k[2] if len(k) > 2 else 0 for k in keys], dtype=np.int64),
        doc_ids=list(docs),
        tag_failure=np.array([i in tag for i in range(n)], dtype=bool),
        decode_error=np.array([i in err for i in range(n)], dtype=bool),
        nmse=np.array(nmse, dtype=np.float64),
        pred=np.zeros((n, D), dtype=np.float32),
        gold=np.asarray(gold, dtype=np.float32),
    )


def test_paired_fve_diff_by_hand():
    rng = np.random.default_rng(0)
    ga = (rng.normal(size=(6, D)) + 0.5).astype(np.float32)
    gb = (rng.normal(size=(6, D)) + 0.5).astype(np.float32)
    spec = {"metrics": METRICS}
    # a: (0,2) a tag failure, (1,1) only in a; b: (1,0) a decode error, (1,2) only in b
    a = rows_of(
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 3)],
        [0.4, 0.6, np.nan, 0.9, 0.3, 0.2],
        ga,
        ["d0", "d0", "d1", "d2", "d2", "d3"],
        tag={2},
    )
    b = rows_of(
        [(0, 1), (0, 0), (0, 2), (1, 0), (1, 2), (1, 3)],
        [0.8, 0.5, 1.1, np.nan, 0.7, 0.6],
        gb,
        ["d0", "d0", "d1", "d2", "d3", "d3"],
        err={3},
    )
    out = paired_fve_diff(a, b, spec)
    # shared scored rows: (0,0), (0,1), (1,3); b's rows 1, 0, 5
    var = var_np(gb[[1, 0, 5]])
    want = ((0.5 + 0.8 + 0.6) / 3 - (0.4 + 0.6 + 0.2) / 3) / var
    assert out["n"] == 3
    assert out["var"] == pytest.approx(var, rel=1e-9)
    assert out["value"] == pytest.approx(want, rel=1e-9)
    assert out["value"] == pytest.approx((0.7 / 3) / var, rel=1e-9)
    assert out["lo"] <= out["value"] <= out["hi"]
    # b's Var, not a's, is the denominator
    assert out["value"] != pytest.approx((0.7 / 3) / var_np(ga[[0, 1, 5]]), rel=1e-6)
    # the reverse direction is the negative, with a's Var
    rev = paired_fve_diff(b, a, spec)
    assert rev["value"] == pytest.approx(-(0.7 / 3) / var_np(ga[[0, 1, 5]]), rel=1e-9)
    assert paired_fve_diff(a, b, spec) == out
    assert out["train"] is None  # no training Var in this spec


def test_paired_fve_diff_gives_the_fve_train_difference_by_hand():
    g = (np.random.default_rng(4).normal(size=(4, D)) + 0.5).astype(np.float32)
    keys, docs = [(0, 0), (0, 1), (0, 2), (0, 3)], ["d0", "d0", "d1", "d2"]
    a = rows_of(keys, [0.10, 0.20, 0.30, 0.40], g, docs)
    b = rows_of(keys, [0.30, 0.30, 0.50, 0.20], g, docs)
    spec = {"metrics": METRICS, "train_var": {"f": 0.25, "other": None}}
    out = paired_fve_diff(a, b, spec, "f")
    # by hand: mean nmse_a = 1.0 / 4 = 0.25, mean nmse_b = 1.3 / 4 = 0.325;
    # fve_train_a - fve_train_b = (1 - 0.25 / 0.25) - (1 - 0.325 / 0.25) = 0.075 / 0.25 = 0.3
    t = out["train"]
    assert t["value"] == pytest.approx(0.3, rel=1e-12)
    assert (t["n"], t["var_train"]) == (4, 0.25)
    # the fve_own difference divides the same 0.075 by b's own Var
    var = var_np(g)
    assert out["value"] == pytest.approx(0.075 / var, rel=1e-9)
    # same resamples, fixed denominators: the bounds scale by var / var_train
    assert t["lo"] == pytest.approx(out["lo"] * var / 0.25, rel=1e-9)
    assert t["hi"] == pytest.approx(out["hi"] * var / 0.25, rel=1e-9)
    assert t["lo"] <= t["value"] <= t["hi"]
    # no family, or a family without a training Var: no train entry
    assert paired_fve_diff(a, b, spec)["train"] is None
    assert paired_fve_diff(a, b, spec, "other")["train"] is None


def test_paired_fve_diff_needs_two_shared_rows():
    g = (np.arange(3 * D, dtype=np.float32).reshape(3, D) + 1) % 7 + 0.5
    spec = {"metrics": METRICS}
    a = rows_of([(0, 0), (0, 1), (0, 2)], [0.1, 0.2, 0.3], g, ["a", "b", "c"], tag={1})
    b = rows_of([(0, 0), (0, 1), (0, 3)], [0.4, 0.5, 0.6], g, ["a", "b", "c"])
    assert paired_fve_diff(a, b, spec) == {
        "value": None,
        "lo": None,
        "hi": None,
        "n": 1,
        "var": None,
        "train": None,
    }
    with_train = paired_fve_diff(a, b, {**spec, "train_var": {"f": 0.5}}, "f")
    assert with_train["train"] == {"value": None, "lo": None, "hi": None, "n": 1, "var_train": 0.5}
    c = rows_of([(1, 0), (1, 1)], [0.1, 0.2], g[:2], ["a", "b"])
    assert paired_fve_diff(a, c, spec)["n"] == 0


def test_paired_fve_diff_with_sample_matches_samples_too():
    g = (np.random.default_rng(1).normal(size=(3, D)) + 0.5).astype(np.float32)
    spec = {"metrics": METRICS}
    a = rows_of([(0, 0, 1), (0, 1, 0), (0, 2, 0)], [0.1, 0.2, 0.3], g, ["a", "b", "c"])
    b = rows_of([(0, 0, 0), (0, 1, 0), (0, 2, 0)], [0.5, 0.5, 0.9], g, ["a", "b", "c"])
    by_row = paired_fve_diff(a, b, spec)
    assert by_row["n"] == 3
    assert by_row["value"] == pytest.approx((1.9 / 3 - 0.6 / 3) / var_np(g), rel=1e-9)
    by_sample = paired_fve_diff(a, b, spec, with_sample=True)
    assert by_sample["n"] == 2
    assert by_sample["value"] == pytest.approx((1.4 / 2 - 0.5 / 2) / var_np(g[1:]), rel=1e-9)


# ----------------------------------------------------------------------------- select_best


def sample_rows() -> Rows:
    """Three samples of four rows (row-major); nan = not scored."""
    table = {
        (0, 0): [0.9, 0.4, 0.1],
        (0, 1): ["tag", 0.7, 0.3],
        (1, 0): ["tag", "tag", 0.2],
        (1, 1): [0.5, "err", 0.6],
    }
    keys, nmse, tag, err = [], [], set(), set()
    for (sh, r), vals in table.items():
        for s, v in enumerate(vals):
            i = len(keys)
            keys.append((sh, r, s))
            nmse.append(np.nan if isinstance(v, str) else v)
            if v == "tag":
                tag.add(i)
            if v == "err":
                err.add(i)
    g = (np.random.default_rng(2).normal(size=(len(keys), D)) + 0.5).astype(np.float32)
    return rows_of(keys, nmse, g, [f"d{k[0]}{k[1]}" for k in keys], tag=tag, err=err)


def picked(rows: Rows) -> dict:
    return {
        (int(sh), int(r)): (int(s), bool(ok), None if not ok else float(x))
        for sh, r, s, ok, x in zip(
            rows.shard, rows.row, rows.sample, rows.ok, rows.nmse, strict=True
        )
    }


def test_select_best_by_hand():
    rows = sample_rows()
    assert picked(E5.select_best(rows, 1)) == {
        (0, 0): (0, True, 0.9),
        (0, 1): (0, False, None),
        (1, 0): (0, False, None),
        (1, 1): (0, True, 0.5),
    }
    assert picked(E5.select_best(rows, 2)) == {
        (0, 0): (1, True, 0.4),
        (0, 1): (1, True, 0.7),
        (1, 0): (0, False, None),  # both first samples failed: still a failure
        (1, 1): (0, True, 0.5),
    }
    assert picked(E5.select_best(rows, 3)) == {
        (0, 0): (2, True, 0.1),
        (0, 1): (2, True, 0.3),
        (1, 0): (2, True, 0.2),
        (1, 1): (0, True, 0.5),  # 0.5 < 0.6; the errored sample 1 never wins
    }
    assert picked(E5.select_best(rows, 10)) == picked(E5.select_best(rows, 3))


def test_select_best_of_one_is_sample_zero():
    rows = sample_rows()
    one = E5.select_best(rows, 1)
    zero = rows.subset(rows.sample == 0)
    for f in ("shard", "row", "sample", "tag_failure", "decode_error", "gold"):
        np.testing.assert_array_equal(getattr(one, f), getattr(zero, f))
    np.testing.assert_array_equal(one.nmse, zero.nmse)
    assert one.doc_ids == zero.doc_ids == ["d00", "d01", "d10", "d11"]


# ----------------------------------------------------------------------------- E2 quote ablation

QA_EXPL = {
    "greedy": {
        (0, 0): 'The code says "return x" at the end.',
        (0, 1): None,
        (0, 2): 'A docstring about "lists" and the model\'s output.',
        (0, 3): "Plain prose \u2014 with an aside \u2014 about loops.",
        (1, 0): 'It reads "for i in range" here.',
        (1, 1): 'Mentions "dict" keys.',
        (1, 2): None,
        (1, 3): "Plain words only.",
    },
    "ban_dq": {
        (0, 0): "The code says 'return x' at the end.",
        (0, 1): None,
        (0, 2): "A docstring about lists and the model's output.",
        (0, 3): "Quoted \u2018while\u2019 loops.",
        (1, 0): "It reads *for i in range* here.",
        (1, 1): "Mentions \u300cdict\u300d keys.",
        (1, 2): None,
        (1, 3): "Plain words only.",
    },
    "ban_dq_sq": {
        (0, 0): "The code says \u300creturn x\u300d at the end.",
        (0, 1): "An aside \u2014 the value x \u2014 is returned.",
        (0, 2): "A docstring about lists (not cued) here.",
        (0, 3): "The line reads (while True) forever.",
        (1, 0): "It says *for i in range* here.",
        (1, 1): None,
        (1, 2): None,
        (1, 3): "Plain words only.",
    },
}
QA_LEAKS = {"greedy": {}, "ban_dq": {(0, 1): 1, (1, 3): 2}, "ban_dq_sq": {(1, 0): 1}}
QA_BANNED = {"greedy": 0, "ban_dq": 7, "ban_dq_sq": 12}


@pytest.fixture
def qa(tmp_path):
    fam = Fam(tmp_path, seed=11)
    sets, cells = {}, {}
    for i, (cond, expl) in enumerate(QA_EXPL.items()):
        status = {k: "tag" for k, e in expl.items() if e is None and k != ERROR_ROW}
        sets[cond] = fam.score(cond, status, scale=0.5 + 0.3 * i)
        decodes = [
            write_decodes(
                tmp_path / f"{cond}-dec-{sh}.parquet",
                sh,
                expl,
                leaks=QA_LEAKS[cond],
                n_banned=QA_BANNED[cond],
            )
            for sh in range(2)
        ]
        cells[f"f/{cond}"] = fam.cell(sets[cond], decodes=decodes)
    return fam, sets, spec_of("cells", cells)


def test_quote_ablation_by_hand(qa):
    fam, sets, spec = qa
    data = same_twice(E2.compute, spec)
    conds = data["families"]["f"]["conditions"]
    assert list(conds) == ["greedy", "ban_dq", "ban_dq_sq"]
    # hand counts over the rows with an explanation (6 in each condition)
    hand = {
        "greedy": dict(single=0, hatch=1, kinds={"emdash": 1}, leaks=0, tag=(0, 1)),
        "ban_dq": dict(single=2, hatch=2, kinds={"corner": 1, "italic": 1}, leaks=3, tag=(0, 1)),
        "ban_dq_sq": dict(
            single=0,
            hatch=4,
            kinds={"corner": 1, "emdash": 1, "italic": 1, "paren": 1},
            leaks=1,
            tag=(1, 1),
        ),
    }
    for cond, h in hand.items():
        c = conds[cond]
        ok = [k for k in ALL0 if k[:2] not in (h["tag"], ERROR_ROW)]
        assert sets[cond].ok(ALL0) == ok
        assert (c["n"], c["n_rows"], c["tag_failures"], c["decode_errors"]) == (6, 8, 1, 1)
        assert c["fve_own"]["value"] == pytest.approx(fam.fve(sets[cond], ok), rel=1e-9)
        nm = fam.nmse_mean(sets[cond], ok)
        assert c["nmse_mean"]["value"] == pytest.approx(nm, rel=1e-9)
        assert c["fve_train"]["value"] == pytest.approx(1 - nm / TRAIN_VAR, rel=1e-9)
        assert c["share_single_quotes"]["value"] == pytest.approx(h["single"] / 6)
        assert c["share_single_quotes"]["n"] == 6
        assert c["share_hatch"]["value"] == pytest.approx(h["hatch"] / 6)
        assert c["hatch_kinds"] == h["kinds"]
        assert c["n_banned_tokens"] == QA_BANNED[cond]
        assert c["leaks"] == h["leaks"]
    assert conds["greedy"]["diff_vs_greedy"] is None
    # ban_dq vs greedy: the same 6 rows scored; ban_dq_sq: 5 rows scored in both
    g = sets["greedy"]
    shared = [k for k in ALL0 if k[:2] not in ((0, 1), ERROR_ROW)]
    diff = conds["ban_dq"]["diff_vs_greedy"]
    assert diff["n"] == 6
    assert diff["value"] == pytest.approx(fam.diff(sets["ban_dq"], shared, g, shared), rel=1e-9)
    shared = [k for k in ALL0 if k[:2] not in ((0, 1), (1, 1), ERROR_ROW)]
    diff = conds["ban_dq_sq"]["diff_vs_greedy"]
    assert diff["n"] == 5
    assert diff["var"] == pytest.approx(var_np(fam.arrays(g, shared)[1]), rel=1e-9)
    assert diff["value"] == pytest.approx(fam.diff(sets["ban_dq_sq"], shared, g, shared), rel=1e-9)
    train = diff["train"]
    assert (train["n"], train["var_train"]) == (5, TRAIN_VAR)
    assert train["value"] == pytest.approx(
        fam.diff_train(sets["ban_dq_sq"], shared, g, shared), rel=1e-9
    )
    # per condition nmse_mean, cos_mean, fve_own, fve_train and two shares; two paired diffs,
    # each with its fve_train difference; four in each hatch subset
    assert check_intervals(data) == 3 * 6 + 2 * 2 + 2 * 4


def test_quote_ablation_hatch_subsets(qa):
    fam, sets, spec = qa
    sq = E2.compute(spec)["families"]["f"]["conditions"]["ban_dq_sq"]
    assert "hatch_using" not in E2.compute(spec)["families"]["f"]["conditions"]["ban_dq"]
    using = k0((0, 0), (0, 1), (0, 3), (1, 0))  # corner, em dash, cued paren, italic
    free = k0((0, 2), (1, 3))  # an uncued parenthetical and plain prose
    u, f = sq["hatch_using"], sq["hatch_free"]
    assert (u["n"], u["n_rows"], u["tag_failures"], u["decode_errors"]) == (4, 4, 0, 0)
    # the tag failure and the decode error have no explanation: they land in the free subset
    assert (f["n"], f["n_rows"], f["tag_failures"], f["decode_errors"]) == (2, 4, 1, 1)
    assert u["fve_own"]["value"] == pytest.approx(fam.fve(sets["ban_dq_sq"], using), rel=1e-9)
    assert f["fve_own"]["value"] == pytest.approx(fam.fve(sets["ban_dq_sq"], free), rel=1e-9)
    assert u["var_own"] == pytest.approx(var_np(fam.arrays(sets["ban_dq_sq"], using)[1]))


def test_quote_ablation_rejects_decode_shards_that_disagree_on_bans(qa, tmp_path):
    fam, sets, spec = qa
    cell = spec["cells"]["f/ban_dq"]
    other = write_decodes(tmp_path / "other.parquet", 1, QA_EXPL["ban_dq"], n_banned=8)
    bad = {
        **spec,
        "cells": {**spec["cells"], "f/ban_dq": {**cell, "decodes": [cell["decodes"][0], other]}},
    }
    with pytest.raises(DataError, match=r"banned-token count: \[7, 8\]"):
        E2.compute(bad)


def test_explanations_must_hold_every_scored_row(qa, tmp_path):
    fam, sets, spec = qa
    cell = spec["cells"]["f/ban_dq"]
    path = tmp_path / "short.parquet"
    write_decodes(path, 1, QA_EXPL["ban_dq"])
    # drop row 3 from the decode shard: the score shard still holds it
    t = read_table(path)
    write_table(path, t.filter(pc.not_equal(t.column("row"), 3)))
    bad = {
        **spec,
        "cells": {
            **spec["cells"],
            "f/ban_dq": {**cell, "decodes": [cell["decodes"][0], str(path)]},
        },
    }
    with pytest.raises(DataError, match=r"short.parquet: no row 3 sample 0"):
        E2.compute(bad)


# ----------------------------------------------------------------------------- E3 verbatim

CONTEXTS = [
    [
        "The quick brown fox jumps over the lazy dog.",
        "def add(a, b): return a + b",
        "Hello, world! It's a well-known greeting.",
        "for i in range(10): print(i)",
    ],
    [
        "Lists are mutable sequences of items.",
        "The dict maps keys to values.",
        "Errors should never pass silently.",
        "Beautiful is better than ugly.",
    ],
]
VB_EXPL = {
    "greedy": {
        (0, 0): 'The text says "quick brown fox jumps" near the end.',
        (0, 1): 'A function: "return a + b" adds.',
        (0, 2): None,
        (0, 3): "Loop: for i in range.",
        (1, 0): "Mentions mutable sequences.",
        (1, 1): "Plain prose here.",
        (1, 2): "Errors should never pass silently, it says.",
        (1, 3): "Nothing shared.",
    },
    "ban_dq_sq": {
        (0, 0): "The text says \u300cquick brown fox\u300d near the end.",
        (0, 1): "A function *return a* adds.",
        (0, 2): "Greeting \u2014 hello world \u2014 here.",
        (0, 3): None,
        (1, 0): "Lists are mutable.",
        (1, 1): "About keys.",
        (1, 2): None,
        (1, 3): "Better (than ugly) they say.",
    },
}
# longest shared runs with the row's own context, counted by hand
VB_RUNS = {
    "greedy": {(0, 0): 4, (0, 1): 3, (0, 3): 4, (1, 0): 2, (1, 1): 0, (1, 2): 5, (1, 3): 0},
    "ban_dq_sq": {(0, 0): 3, (0, 1): 2, (0, 2): 2, (1, 0): 3, (1, 1): 1, (1, 3): 3},
}


@pytest.fixture
def vb(tmp_path):
    # no decode errors here: (1, 2) has a greedy explanation and a ban_dq_sq tag failure
    acts = [
        write_acts(
            tmp_path / f"acts-{sh}.parquet",
            sh,
            np.eye(4, D, dtype=np.float32) + 1,
            contexts=CONTEXTS[sh],
        )
        for sh in range(2)
    ]
    sets = {}
    for cond, expl in VB_EXPL.items():
        decodes = []
        for sh in range(2):
            path = tmp_path / f"{cond}-dec-{sh}.parquet"
            write_decodes(path, sh, expl, errors=())
            decodes.append(str(path))
        sets[f"f/{cond}"] = {"decodes": decodes, "acts": acts}
    return spec_of("sets", sets, settings={"threshold": 2})


def vb_rows(cond: str) -> tuple[list[tuple], list[str], list[str]]:
    """Keys, explanations and contexts of the rows with an explanation, in shard order."""
    keys = [k for k in KEYS if VB_EXPL[cond][k] is not None]
    return keys, [VB_EXPL[cond][k] for k in keys], [CONTEXTS[k[0]][k[1]] for k in keys]


def test_verbatim_hand_runs_are_right():
    for cond, runs in VB_RUNS.items():
        for k, run in runs.items():
            assert run_np(VB_EXPL[cond][k], CONTEXTS[k[0]][k[1]]) == run, (cond, k)


def test_verbatim_by_hand(vb):
    data = same_twice(E3.compute, vb)
    assert (data["threshold"], data["null_seed"]) == (2, METRICS["null_seed"])
    fam = data["families"]["f"]
    assert list(fam) == ["greedy", "ban_dq_sq"]
    for cond in fam:
        keys, expl, ctx = vb_rows(cond)
        runs = np.array([VB_RUNS[cond][k] for k in keys if k in VB_RUNS[cond]], dtype=float)
        assert len(runs) == len(keys)
        perm = spans.shuffled_pairing(len(keys), METRICS["null_seed"])
        null = np.array([run_np(expl[i], ctx[j]) for i, j in enumerate(perm)], dtype=float)
        e = fam[cond]
        assert e["runs"] == {
            "n": len(runs),
            "median": float(np.median(runs)),
            "p90": float(np.quantile(runs, 0.9)),
            "mean": float(runs.mean()),
            "share_ge": float((runs >= 2).mean()),
            "max": int(runs.max()),
        }
        assert e["null"]["n"] == len(null)
        assert e["null"]["mean"] == pytest.approx(null.mean())
        assert e["null"]["max"] == int(null.max())
        assert e["median"]["value"] == np.median(runs)
        assert e["p90"]["value"] == pytest.approx(np.quantile(runs, 0.9))
        assert e["share_ge"]["value"] == pytest.approx((runs >= 2).mean())
        assert e["null_share_ge"]["value"] == pytest.approx((null >= 2).mean())
        assert e["diff_share_ge_vs_null"]["value"] == pytest.approx(
            (runs >= 2).mean() - (null >= 2).mean()
        )
    g, sq = fam["greedy"], fam["ban_dq_sq"]
    # by hand: greedy runs 4 3 4 2 0 5 0 -> 5 of 7 reach 2; ban_dq_sq 3 2 2 3 1 3 -> 5 of 6
    assert g["share_ge"]["value"] == pytest.approx(5 / 7) and g["share_ge"]["n"] == 7
    assert sq["share_ge"]["value"] == pytest.approx(5 / 6) and sq["share_ge"]["n"] == 6
    assert g["runs"]["median"] == 3.0 and sq["runs"]["median"] == 2.5
    assert "diff_share_ge_vs_greedy" not in g
    # rows with an explanation in both: (0,0) (0,1) (1,0) (1,1) (1,3):
    # ban_dq_sq 3 2 3 1 3 (4 of 5 >= 2), greedy 4 3 2 0 0 (3 of 5)
    d = sq["diff_share_ge_vs_greedy"]
    assert d["n"] == 5 and d["value"] == pytest.approx(4 / 5 - 3 / 5)
    # hatch-free under ban_dq_sq: (1,0) (1,1) (1,3), runs 3 1 3
    hf = sq["hatch_free"]
    assert hf["runs"]["n"] == 3 and hf["runs"]["share_ge"] == pytest.approx(2 / 3)
    assert hf["share_ge"]["value"] == pytest.approx(2 / 3)
    keys, expl, ctx = vb_rows("ban_dq_sq")
    perm = spans.shuffled_pairing(len(keys), METRICS["null_seed"])
    null_free = [run_np(expl[i], ctx[perm[i]]) for i in (3, 4, 5)]
    assert hf["null"]["mean"] == pytest.approx(np.mean(null_free))
    # median, p90, share_ge, null_share_ge, diff vs null per set and in the hatch-free subset;
    # the paired difference vs greedy
    assert check_intervals(data) == 3 * 5 + 1


def test_verbatim_null_pairs_other_rows(vb):
    keys, expl, ctx = vb_rows("greedy")
    perm = spans.shuffled_pairing(len(keys), METRICS["null_seed"])
    assert sorted(perm.tolist()) == list(range(len(keys)))
    assert all(i != j for i, j in enumerate(perm))
    # the null runs differ from the real ones for this crafted set
    null = [run_np(expl[i], ctx[j]) for i, j in enumerate(perm)]
    data = E3.compute(vb)["families"]["f"]["greedy"]
    assert data["null"]["mean"] == pytest.approx(np.mean(null))
    assert data["null"]["mean"] < data["runs"]["mean"]


# ----------------------------------------------------------------------------- E4 redaction

RD_EXPL = {
    (0, 0): 'The code says "return x" at the end.',
    (0, 1): None,
    (0, 2): "Both \"a\" and 'b' appear.",
    (0, 3): "Plain prose about loops.",
    (1, 0): "It reads \u300cfor i\u300d \u2014 twice \u2014 here.",
    (1, 1): "\u201cCurly\u201d quotes.",
    (1, 2): None,
    (1, 3): "Says *x* and **y**.",
}
# n_spans, span_chars (quoted spans: double, single, corner), n_hatches, hatch_chars (italic,
# cued paren, em dash: counted apart), total_chars of each explanation, by hand:
# (1,0): 「for i」 7 is a quoted span, "— twice —" 9 a hatch; (1,3): *x* 3 and **y** 5, hatches
RD_STATS = {
    (0, 0): (1, 10, 0, 0, 36),
    (0, 2): (2, 6, 0, 0, 24),
    (0, 3): (0, 0, 0, 0, 24),
    (1, 0): (1, 7, 1, 9, 32),
    (1, 1): (1, 7, 0, 0, 15),
    (1, 3): (0, 0, 2, 8, 19),
}
RD_VARIANTS = ("full", "prose_only", "spans_redacted", "spans_only_bare")


@pytest.fixture
def rd(tmp_path):
    fam = Fam(tmp_path, seed=21)
    decodes = [write_decodes(tmp_path / f"dec-{sh}.parquet", sh, RD_EXPL) for sh in range(2)]
    sets, cells = {}, {}
    for i, v in enumerate(RD_VARIANTS):
        sets[v] = fam.score(v, {(0, 1): "tag"}, scale=0.4 + 0.4 * i)
        red = decodes
        if v != "full":  # the AR read the redacted shards; the aggregate reads only full's
            red = [str(tmp_path / v / f"shard-{sh}.parquet") for sh in range(2)]
            for src, out in zip(decodes, red, strict=True):
                redact_shard(src, v, out)
        cells[f"f/{v}"] = fam.cell(sets[v], decodes=red)
    return fam, sets, spec_of("cells", cells)


def test_redaction_span_statistics_by_hand(rd):
    for k, (n, chars, nh, hchars, total) in RD_STATS.items():
        assert spans.span_stats(RD_EXPL[k]) == {
            "n_spans": n,
            "span_chars": chars,
            "n_hatches": nh,
            "hatch_chars": hchars,
            "total_chars": total,
        }
        assert len(RD_EXPL[k]) == total
    _, _, spec = rd
    data = same_twice(E4.compute, spec)
    assert data["variants"] == list(spans.REDACTION_VARIANTS)
    assert data["span_kinds"] == ["double", "single", "corner"]
    assert data["hatch_kinds"] == ["italic", "paren", "emdash"]
    s = data["families"]["f"]["spans"]
    # 6 explanations: quoted spans 1 2 0 1 1 0; their characters 10+6+0+7+7+0 = 30 of
    # 36+24+24+32+15+19 = 150
    assert s["mean_spans_per_decode"]["value"] == pytest.approx(5 / 6)
    assert s["mean_spans_per_decode"]["n"] == 6
    assert s["share_chars_in_spans"]["value"] == pytest.approx(30 / 150)
    assert s["share_decodes_with_spans"]["value"] == pytest.approx(4 / 6)
    # hatches 0 0 0 1 0 2; their characters 9 + 8 = 17 of 150
    assert s["mean_hatches_per_decode"]["value"] == pytest.approx(3 / 6)
    assert s["mean_hatches_per_decode"]["n"] == 6
    assert s["share_chars_in_hatches"]["value"] == pytest.approx(17 / 150)
    assert s["share_decodes_with_hatches"]["value"] == pytest.approx(2 / 6)
    assert check_intervals(s) == 6


def test_redaction_variants_by_hand(rd):
    fam, sets, spec = rd
    out = E4.compute(spec)["families"]["f"]["variants"]
    assert list(out) == list(RD_VARIANTS)  # in REDACTION_VARIANTS order, only those scored
    ok = [k for k in ALL0 if k[:2] not in ((0, 1), ERROR_ROW)]
    for v in RD_VARIANTS:
        o = out[v]
        assert (o["n"], o["n_rows"], o["tag_failures"], o["decode_errors"]) == (6, 8, 1, 1)
        assert o["fve_own"]["value"] == pytest.approx(fam.fve(sets[v], ok), rel=1e-9)
        p, g = fam.arrays(sets[v], ok)
        var = var_np(g)
        assert o["frac_fve_neg"] == pytest.approx(np.mean(1 - nmse_np(p, g) / var < 0))
    assert out["full"]["diff_vs_full"] is None
    for v in RD_VARIANTS[1:]:
        d = out[v]["diff_vs_full"]
        assert d["n"] == 6
        assert d["value"] == pytest.approx(fam.diff(sets[v], ok, sets["full"], ok), rel=1e-9)
        assert d["value"] == pytest.approx(
            out[v]["fve_own"]["value"] - out["full"]["fve_own"]["value"], rel=1e-9
        )  # same rows, same gold: the paired difference is the difference of fve_own
        t = d["train"]
        assert (t["n"], t["var_train"]) == (6, TRAIN_VAR)
        assert t["value"] == pytest.approx(fam.diff_train(sets[v], ok, sets["full"], ok), rel=1e-9)
        assert t["value"] == pytest.approx(
            out[v]["fve_train"]["value"] - out["full"]["fve_train"]["value"], rel=1e-9
        )  # and likewise of fve_train
    # nmse_mean, cos_mean, fve_own, fve_train per variant; three paired differences, each with
    # its fve_train difference
    assert check_intervals(out) == 4 * 4 + 2 * 3


# ----------------------------------------------------------------------------- E5 best-of-N


@pytest.fixture
def bo(tmp_path):
    fam = Fam(tmp_path, seed=31)
    greedy = fam.score("greedy", {(0, 1): "tag"}, scale=0.6)
    # two samples per row: (0,0) fails on sample 0 only, (0,1) on both, (1,0) on sample 1
    status = {(0, 0, 0): "tag", (0, 1): "tag", (1, 0, 1): "tag"}
    samples = fam.score("sample_t1", status, samples=2, scale=0.9)
    cells = {"f/greedy": fam.cell(greedy), "f/sample_t1": fam.cell(samples)}
    return fam, greedy, samples, spec_of("cells", cells, settings={"ns": [1, 2]})


def best_keys(fam, st: ScoredSet, n: int) -> list[tuple]:
    """Per row, the scored sample of lowest nmse among the first n (by hand)."""
    out = []
    for sh, r in KEYS:
        cand = [(sh, r, s) for s in range(n) if st.status[(sh, r, s)] == "ok"]
        if cand:
            nm = [float(nmse_np(st.pred[k][None], fam.g(k)[None])[0]) for k in cand]
            out.append(cand[int(np.argmin(nm))])
    return out


def test_best_of_n_by_hand(bo):
    fam, greedy, samples, spec = bo
    data = same_twice(E5.compute, spec)
    assert data["ns"] == [1, 2]
    f = data["families"]["f"]
    assert f["n_samples"] == 2
    assert f["sample_tag_failures"] == 4  # (0,0,0), (0,1,0), (0,1,1), (1,0,1)
    g_ok = [k for k in ALL0 if k[:2] not in ((0, 1), ERROR_ROW)]
    assert f["greedy"]["fve_own"]["value"] == pytest.approx(fam.fve(greedy, g_ok), rel=1e-9)
    b1, b2 = best_keys(fam, samples, 1), best_keys(fam, samples, 2)
    assert b1 == k0((0, 2), (0, 3), (1, 0), (1, 1), (1, 3))
    assert len(b2) == 6 and b2[0] == (0, 0, 1) and (1, 0, 0) in b2
    assert {k[2] for k in b2} == {0, 1}  # the crafted draw picks both samples somewhere
    for n, keys, tags in ((1, b1, 2), (2, b2, 1)):
        o = f["best_of"][str(n)]
        assert (o["n"], o["n_rows"], o["tag_failures"], o["decode_errors"]) == (
            len(keys),
            8,
            tags,
            1,
        )
        assert o["fve_own"]["value"] == pytest.approx(fam.fve(samples, keys), rel=1e-9)
        shared = [k for k in keys if k[:2] in {g[:2] for g in g_ok}]
        d = o["diff_vs_greedy"]
        assert d["n"] == len(shared)
        assert d["value"] == pytest.approx(
            fam.diff(samples, shared, greedy, [(*k[:2], 0) for k in shared]), rel=1e-9
        )
        assert d["train"]["value"] == pytest.approx(
            fam.diff_train(samples, shared, greedy, [(*k[:2], 0) for k in shared]), rel=1e-9
        )
    # mean over samples: every scored sample, gold repeated per sample
    every = [k for k in samples.status if samples.status[k] == "ok"]
    assert len(every) == 10
    m = f["mean_over_samples"]
    assert (m["n"], m["n_rows"], m["tag_failures"], m["decode_errors"]) == (10, 16, 4, 2)
    assert m["fve_own"]["value"] == pytest.approx(fam.fve(samples, every), rel=1e-9)
    # nmse_mean, cos_mean, fve_own, fve_train of greedy, each best-of and the mean; two diffs,
    # each with its fve_train difference
    assert check_intervals(data) == 4 * 4 + 2 * 2


# ----------------------------------------------------------------------------- E6 layers


@pytest.fixture
def ly(tmp_path):
    fam = Fam(tmp_path, seed=41, layers=(1, 3))
    greedy = fam.score("greedy", {(0, 1): "tag"}, scale=0.6)
    l1 = fam.score("greedy_L1", {(1, 1): "tag"}, scale=0.9)
    l3 = fam.score("greedy_L3", {}, scale=1.2)
    cells = {
        "f/greedy": fam.cell(greedy, acts=fam.acts),
        "f/greedy_L1": fam.cell(l1, acts=fam.acts),
        "f/greedy_L3": fam.cell(l3, acts=fam.acts),
    }
    return fam, {"greedy": greedy, 1: l1, 3: l3}, spec_of("cells", cells, layers={"f": [2, 1, 3]})


def test_layers_by_hand(ly):
    fam, sets, spec = ly
    data = same_twice(E6.compute, spec)
    f = data["families"]["f"]
    assert f["layer"] == 2 and list(f["adjacent"]) == ["1", "3"]
    g_ok = [k for k in ALL0 if k[:2] not in ((0, 1), ERROR_ROW)]
    intrinsic = fam.nmse_mean(sets["greedy"], g_ok)
    assert f["greedy"]["fve_own"]["value"] == pytest.approx(fam.fve(sets["greedy"], g_ok), rel=1e-9)
    main = np.concatenate(fam.gold)
    for k, tag in ((1, (1, 1)), (3, None)):
        a = f["adjacent"][str(k)]
        vk = np.concatenate(fam.layer[k])
        # every activation row (8), the layer-k vector against the layer-K vector
        cos = cos_np(vk, main)
        inter = nmse_np(vk, main)
        assert a["cos_to_layer"]["n"] == 8
        assert a["cos_to_layer"]["value"] == pytest.approx(cos.mean(), rel=1e-9)
        assert a["inter_layer_nmse"]["value"] == pytest.approx(inter.mean(), rel=1e-9)
        assert a["inter_layer_nmse"]["value"] == pytest.approx(2 * (1 - cos.mean()), rel=1e-9)
        assert a["intrinsic_nmse"] == pytest.approx(intrinsic, rel=1e-9)
        assert a["additive_bound_nmse"] == pytest.approx(intrinsic + inter.mean(), rel=1e-9)
        ok = [x for x in ALL0 if x[:2] not in (tag, ERROR_ROW)]
        # headline: the predictions against each row's own layer-k vector, Var of those v_k
        pred = np.stack([sets[k].pred[x] for x in ok])
        own_gold = np.stack([fam.layer[k][x[0]][x[1]] for x in ok])
        own_nmse = nmse_np(pred, own_gold)
        assert a["n"] == len(ok) and a["tag_failures"] == (tag is not None)
        assert a["var_own"] == pytest.approx(var_np(own_gold), rel=1e-9)
        assert a["nmse_mean"]["value"] == pytest.approx(own_nmse.mean(), rel=1e-9)
        assert a["cos_mean"]["value"] == pytest.approx(cos_np(pred, own_gold).mean(), rel=1e-9)
        assert a["fve_own"]["value"] == pytest.approx(
            1 - own_nmse.mean() / var_np(own_gold), rel=1e-9
        )
        assert a["var_train"] is None and a["fve_train"] is None  # layer K's Var does not apply
        # secondary: the same predictions against v_K (the score shards' gold)
        vs = a["vs_layer_K"]
        assert vs["n"] == len(ok)
        assert vs["fve_own"]["value"] == pytest.approx(fam.fve(sets[k], ok), rel=1e-9)
        assert vs["var_own"] == pytest.approx(var_np(fam.arrays(sets[k], ok)[1]), rel=1e-9)
        assert vs["fve_train"]["value"] == pytest.approx(
            1 - fam.nmse_mean(sets[k], ok) / TRAIN_VAR, rel=1e-9
        )
        assert a["fve_own"]["value"] != pytest.approx(vs["fve_own"]["value"], rel=1e-3)
        shared = [x for x in ok if x in g_ok]
        d = a["diff_vs_greedy"]
        assert d["n"] == len(shared)
        assert d["value"] == pytest.approx(
            fam.diff(sets[k], shared, sets["greedy"], shared), rel=1e-9
        )
        assert d["train"]["value"] == pytest.approx(
            fam.diff_train(sets[k], shared, sets["greedy"], shared), rel=1e-9
        )
    # noise grows with k in the fixture: layer 3 is farther from layer K than layer 1
    assert f["adjacent"]["3"]["cos_to_layer"]["value"] < f["adjacent"]["1"]["cos_to_layer"]["value"]
    # greedy's four (fve_train included); per adjacent layer the headline's three (no
    # fve_train), vs_layer_K's four, cos, inter-layer nmse and the paired difference with its
    # fve_train difference
    assert check_intervals(data) == 4 + 2 * (3 + 4 + 2 + 2)


# Two-dimensional vectors, one document per row, so every figure is computed by hand below.
#            v_K (gold of the scores)  v_k (layer k = 1)   greedy pred   greedy_L1 pred
# row 0      (1, 0)                    (1, 0)              (1, 0)        (1, 0)
# row 1      (0, 1)                    (1, 0)              (1, 1)        (1, 1)
# row 2      (-1, 0)                   (0, 1)              (-1, 0)       (0, 1)
# row 3      (0, -1)                   (0, 1)              (0, -1)       tag failure
HAND_VK = [[1, 0], [0, 1], [-1, 0], [0, -1]]
HAND_V1 = [[1, 0], [1, 0], [0, 1], [0, 1]]
HAND_PRED = {"greedy": [[1, 0], [1, 1], [-1, 0], [0, -1]], "greedy_L1": [[1, 0], [1, 1], [0, 1]]}
HAND_TRAIN_VAR = 0.5


def write_hand_layers(root: Path, v1=HAND_V1) -> dict:
    docs = [f"d{r}" for r in range(4)]
    acts = str(root / "acts.parquet")
    write_table(
        acts,
        pa.table(
            {
                "doc_id": pa.array(docs, pa.string()),
                "activation_vector": vectors_to_arrow(np.array(HAND_VK, dtype=np.float32)),
                "activation_vector_L1": vectors_to_arrow(np.array(v1, dtype=np.float32)),
            }
        ),
    )
    cells = {}
    for cond, preds in HAND_PRED.items():
        ok = np.array([r < len(preds) for r in range(4)])
        pred = np.zeros((4, 2), dtype=np.float32)
        pred[: len(preds)] = preds
        nmse = [float(x) for x in nmse_np(pred[ok], np.array(HAND_VK, dtype=np.float32)[ok])]
        path = str(root / f"{cond}.parquet")
        write_table(
            path,
            pa.table(
                {
                    "row": pa.array(range(4), pa.int64()),
                    "doc_id": pa.array(docs, pa.string()),
                    "sample": pa.array([0] * 4, pa.int64()),
                    "tag_failure": pa.array((~ok).tolist()),
                    "decode_error": pa.array([False] * 4),
                    "nmse": pa.array(nmse + [None] * int((~ok).sum()), pa.float64()),
                    "pred_vector": vectors_to_arrow(pred, ok),
                }
            ),
        )
        cells[f"f/{cond}"] = {"scores": [path], "gold": [acts], "acts": [acts]}
    return {
        "families": ["f"],
        "metrics": METRICS,
        "settings": {},
        "train_var": {"f": HAND_TRAIN_VAR},
        "layers": {"f": [2, 1]},
        "cells": cells,
    }


def test_layers_headline_is_v_k_against_itself_by_hand(tmp_path):
    spec = write_hand_layers(tmp_path)
    f = E6.compute(spec)["families"]["f"]
    a = f["adjacent"]["1"]
    r2 = math.sqrt(2)
    # headline, scored rows 0-2 against v_1: nmse = 2(1 - cos) = 0, 2 - √2 (cos 1/√2), 0;
    # mean (2 - √2)/3. Var of v_1's v_nrm rows (√2,0), (√2,0), (0,√2): mu = (2√2/3, √2/3),
    # Var = 1 - |mu|²/d = 1 - (10/9)/2 = 4/9. fve_own = 1 - 3(2 - √2)/4 = (3√2 - 2)/4 ≈ 0.5607
    assert (a["n"], a["tag_failures"]) == (3, 1)
    assert a["var_own"] == pytest.approx(4 / 9, rel=1e-12)
    assert a["nmse_mean"]["value"] == pytest.approx((2 - r2) / 3, rel=1e-6)
    assert a["cos_mean"]["value"] == pytest.approx((2 + 1 / r2) / 3, rel=1e-6)
    assert a["fve_own"]["value"] == pytest.approx((3 * r2 - 2) / 4, rel=1e-6)
    assert a["fve_train"] is None
    # secondary, against v_K: nmse 0, 2 - √2 (cos((1,1),(0,1)) = 1/√2), 2 ((0,1) ⟂ (-1,0));
    # mean (4 - √2)/3. Var of v_K's rows (√2,0), (0,√2), (-√2,0): mu = (0, √2/3), Var = 1 - 1/9
    # = 8/9. fve_own = 1 - 3(4 - √2)/8 = (3√2 - 4)/8 ≈ 0.0303; fve_train (Var 0.5) =
    # 1 - 2(4 - √2)/3 = (2√2 - 5)/3
    vs = a["vs_layer_K"]
    assert vs["n"] == 3
    assert vs["var_own"] == pytest.approx(8 / 9, rel=1e-12)
    assert vs["nmse_mean"]["value"] == pytest.approx((4 - r2) / 3, rel=1e-6)
    assert vs["fve_own"]["value"] == pytest.approx((3 * r2 - 4) / 8, rel=1e-5)
    assert vs["fve_train"]["value"] == pytest.approx((2 * r2 - 5) / 3, rel=1e-6)
    # cos(v_1, v_K) over all four rows: 1, 0, 0, -1 -> 0; inter-layer nmse 0, 2, 2, 4 -> 2
    assert a["cos_to_layer"]["value"] == pytest.approx(0.0, abs=1e-7)
    assert a["inter_layer_nmse"]["value"] == pytest.approx(2.0, rel=1e-7)
    # greedy at K: nmse 0, 2 - √2, 0, 0 -> intrinsic (2 - √2)/4; the bound adds 2
    assert a["intrinsic_nmse"] == pytest.approx((2 - r2) / 4, rel=1e-6)
    assert a["additive_bound_nmse"] == pytest.approx((2 - r2) / 4 + 2, rel=1e-6)
    # diff vs greedy on rows 0-2 (both against v_K): greedy nmse 0, 2 - √2, 0 minus L1's
    # 0, 2 - √2, 2 -> mean -2/3, over greedy's Var 8/9 -> -3/4; over the train Var 0.5 -> -4/3
    d = a["diff_vs_greedy"]
    assert d["n"] == 3
    assert d["value"] == pytest.approx(-0.75, rel=1e-6)
    assert d["train"]["value"] == pytest.approx(-4 / 3, rel=1e-6)


def test_layers_headline_rejects_inputs_that_disagree(tmp_path):
    # a scored row whose layer-1 vector is zero: its decode injected that vector, impossible
    spec = write_hand_layers(tmp_path, v1=[[1, 0], [0, 0], [0, 1], [0, 1]])
    with pytest.raises(
        DataError, match=r"acts.parquet: row 1 has an unusable activation_vector_L1"
    ):
        E6.compute(spec)
    # the layer-1 cell reading another document's activations
    spec = write_hand_layers(tmp_path)
    other = tmp_path / "other.parquet"
    t = read_table(spec["cells"]["f/greedy_L1"]["acts"][0])
    write_table(other, t.set_column(0, "doc_id", pa.array(["x0", "x1", "x2", "x3"])))
    spec["cells"]["f/greedy_L1"]["acts"] = [str(other)]
    with pytest.raises(DataError, match=r"other.parquet: row 0 does not hold 'd0'"):
        E6.compute(spec)


def test_experiments_registry():
    """E2-E6 are registered under their names and numbers, each with its module's compute."""
    for number, module in ((2, E2), (3, E3), (4, E4), (5, E5), (6, E6)):
        agg = AG.get(module.AGGREGATE.name)
        assert agg is module.AGGREGATE and agg.compute is module.compute
        assert agg.experiment == number and agg.heading.startswith(f"E{number} ")


def test_layers_skip_rows_whose_adjacent_vector_is_unusable(ly, tmp_path):
    fam, sets, spec = ly
    # layer 1's vector of the error row is zero: decode records an error for that row of
    # greedy_L1 (SPEC §4.6, "never a crash") and score marks it; E6 must not fail on it either
    fam.layer[1][1][2] = 0.0
    for sh in range(2):
        write_acts(
            Path(fam.acts[sh]), sh, fam.gold[sh], layers={k: v[sh] for k, v in fam.layer.items()}
        )
    keep = [i for i, k in enumerate(KEYS) if k != ERROR_ROW]
    main = np.concatenate(fam.gold)[keep]
    vk = np.concatenate(fam.layer[1])[keep]
    a = E6.compute(spec)["families"]["f"]["adjacent"]["1"]
    assert a["cos_to_layer"]["n"] == 7
    assert a["cos_to_layer"]["value"] == pytest.approx(cos_np(vk, main).mean(), rel=1e-9)
    assert a["inter_layer_nmse"]["value"] == pytest.approx(nmse_np(vk, main).mean(), rel=1e-9)


# ----------------------------------------------------------------------------- nothing scored


def test_a_condition_without_any_explanation_gives_null_figures(tmp_path):
    fam = Fam(tmp_path, seed=51)
    nothing = {k: None for k in KEYS}
    cells = {}
    for cond, expl in (("greedy", QA_EXPL["greedy"]), ("ban_dq_sq", nothing)):
        status = {k: "tag" for k, e in expl.items() if e is None and k != ERROR_ROW}
        st = fam.score(cond, status)
        decodes = [write_decodes(tmp_path / f"{cond}-{sh}.parquet", sh, expl) for sh in range(2)]
        cells[f"f/{cond}"] = fam.cell(st, decodes=decodes)
    sq = E2.compute(spec_of("cells", cells))["families"]["f"]["conditions"]["ban_dq_sq"]
    assert (sq["n"], sq["n_rows"], sq["tag_failures"], sq["decode_errors"]) == (0, 8, 7, 1)
    assert sq["fve_own"] == {"value": None, "lo": None, "hi": None}
    assert sq["share_single_quotes"] == {"value": None, "lo": None, "hi": None, "n": 0}
    assert sq["share_hatch"] == {"value": None, "lo": None, "hi": None, "n": 0}
    assert sq["hatch_kinds"] == {}
    none = {"value": None, "lo": None, "hi": None, "n": 0}
    assert sq["diff_vs_greedy"] == {**none, "var": None, "train": {**none, "var_train": TRAIN_VAR}}
    assert (sq["hatch_using"]["n"], sq["hatch_using"]["n_rows"]) == (0, 0)
    assert (sq["hatch_free"]["n_rows"], sq["hatch_free"]["tag_failures"]) == (8, 7)
    assert sq["nmse_mean_strict"] == 2.0  # seven failures at nmse = 2, the error row uncounted

    sets = {}
    for cond, expl in (("greedy", VB_EXPL["greedy"]), ("ban_dq_sq", nothing)):
        paths = [str(tmp_path / f"vb-{cond}-{sh}.parquet") for sh in range(2)]
        for sh, p in enumerate(paths):
            write_decodes(Path(p), sh, expl, errors=())
        acts = [
            write_acts(tmp_path / f"vb-acts-{sh}.parquet", sh, fam.gold[sh], contexts=CONTEXTS[sh])
            for sh in range(2)
        ]
        sets[f"f/{cond}"] = {"decodes": paths, "acts": acts}
    vb = E3.compute(spec_of("sets", sets, settings={"threshold": 2}))["families"]["f"]
    empty = vb["ban_dq_sq"]
    assert empty["runs"] == {
        "n": 0,
        "median": None,
        "p90": None,
        "mean": None,
        "share_ge": None,
        "max": None,
    }
    assert empty["share_ge"]["n"] == 0 and empty["share_ge"]["value"] is None
    assert empty["diff_share_ge_vs_greedy"]["n"] == 0
    assert vb["greedy"]["runs"]["n"] == 7  # (0,2) is a greedy tag failure
