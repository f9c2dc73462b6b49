"""The published figures (nlaprobe.published): the packaged file and its validation, the
paper-checkpoint decision, path lookup and the verdict per figure, against hand-built results."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from nlaprobe import published as P
from nlaprobe.aggregates.core import Scored, fidelity
from nlaprobe.aggregates.verbatim import _run_stats
from nlaprobe.errors import DataError
from nlaprobe.plan import AGGREGATES, BAN_CONDITIONS
from nlaprobe.spans import REDACTION_VARIANTS

PAPER_IDS = {
    "gemma": (
        "google/gemma-3-27b-it",
        "kitft/nla-gemma3-27b-L41-av",
        "kitft/nla-gemma3-27b-L41-ar",
    ),
    "qwen": (
        "Qwen/Qwen2.5-7B-Instruct",
        "kitft/nla-qwen2.5-7b-L20-av",
        "kitft/nla-qwen2.5-7b-L20-ar",
    ),
}


@pytest.fixture(scope="module")
def paper() -> P.Published:
    return P.load_published()


def ckpts(**fams: tuple[str, str, str]) -> dict:
    """meta.checkpoints with the given ids per run family (revision and dtype arbitrary)."""
    return {
        fam: {
            role: {"id": i, "revision": "abc123", "dtype": "bfloat16"}
            for role, i in zip(P.ROLES, ids, strict=True)
        }
        for fam, ids in fams.items()
    }


def iv(value, lo, hi) -> dict:
    return {"value": value, "lo": lo, "hi": hi, "n": 10}


# ----------------------------------------------------------------------------- the file


def test_packaged_file_has_the_paper_checkpoints_and_figures(paper):
    assert paper.version == "paper-2026-06"
    assert paper.where.endswith("published_figures/paper-2026-06.yaml")
    assert {f: tuple(c[r] for r in P.ROLES) for f, c in paper.checkpoints.items()} == PAPER_IDS
    assert (paper.checkpoints["gemma"]["layer"], paper.checkpoints["qwen"]["layer"]) == (41, 20)
    ids = [f.id for f in paper.figures]
    assert len(ids) == len(set(ids)) == 110
    # every aggregate of E1-E8 has published figures
    assert {f.aggregate for f in paper.figures} == set(AGGREGATES)
    by_id = {f.id: f for f in paper.figures}
    f = by_id["e1.gemma.fve_train"]
    assert (f.aggregate, f.path, f.value, f.decimals) == (
        "fve_baseline",
        ("families", "{gemma}", "fve_train"),
        0.775,
        3,
    )
    assert f.tolerance == pytest.approx(0.0005)
    assert f.source.startswith("seeds/000 §Protocol table")
    assert by_id["e7.cross.qwen_to_gemma.null"].value == -0.66
    assert by_id["e6.gemma.L40.fve_own"].path == (
        "families",
        "{gemma}",
        "adjacent",
        "40",
        "fve_own",
    )
    assert by_id["e8.gemma_to_qwen.pairs"].path[-2:] == (-1, "n")
    assert by_id["e2.gemma.ban_dq_sq.n_banned_tokens"].value == 1651
    # ambiguities are recorded where the seeds disagree
    assert "garbled" in by_id["e7.within.gemma.fve_own"].note
    assert "seeds/000 is followed" in by_id["e1.qwen.fve_own"].note


def write(tmp_path: Path, obj) -> Path:
    p = tmp_path / "pub.yaml"
    p.write_text(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return p


def raw_paper() -> dict:
    path = Path(P.__file__).parent / P.PUBLISHED_PACKAGE_DIR / f"{P.DEFAULT_VERSION}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_a_file_path_loads_the_same_as_the_package(tmp_path, paper):
    loaded = P.load_published(write(tmp_path, raw_paper()))
    assert loaded.figures == paper.figures and loaded.checkpoints == paper.checkpoints


def _set(obj: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for k in head:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    if value is _DELETE:
        del obj[last]
    else:
        obj[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("figures.0.path", [{"gemma": None}], r"figures\[0\] \(id 'e1.gemma.fve_train'\): "
         r"field 'path'\[0\]: expected a string key or an integer index"),
        ("figures.1.path", ["families", "{llama}"], r"placeholder \{llama\} names no family"),
        ("figures.2.value", float("nan"), r"figures\[2\] .*field 'value': expected a finite"),
        ("figures.2.value", "0.5", r"field 'value': expected a finite number, found '0.5'"),
        ("figures.3.decimals", True, r"field 'decimals': expected an integer >= 0"),
        ("figures.4.aggregate", "fve", r"field 'aggregate' is 'fve'; valid: \['fve_baseline'"),
        ("figures.5.colour", "red", r"figures\[5\] .*unknown field\(s\) \['colour'\]"),
        ("figures.6.source", _DELETE, r"figures\[6\] .*missing field\(s\) \['source'\]"),
        ("figures.7.id", "e1.gemma.fve_train", r"duplicate id 'e1.gemma.fve_train'"),
        ("checkpoints.qwen.av", "", r"checkpoints.qwen.av: expected a non-empty string"),
        ("checkpoints.qwen.layer", -1, r"checkpoints.qwen.layer: expected an integer >= 0"),
        ("checkpoints.qwen", {"layer": 20, "base": "a", "av": "b"}, r"missing field\(s\) \['ar'\]"),
        ("version", _DELETE, r"missing field\(s\) \['version'\]"),
        ("figures", [], r"field 'figures' must be a non-empty list"),
    ],
)  # fmt: skip
def test_invalid_file_names_the_file_and_the_field(tmp_path, field, value, message):
    obj = raw_paper()
    _set(obj, field, value)
    path = write(tmp_path, obj)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": .*" + message):
        P.load_published(path)


def test_duplicate_checkpoint_ids_are_rejected(tmp_path):
    obj = raw_paper()
    obj["checkpoints"]["qwen"] = {**obj["checkpoints"]["gemma"], "layer": 20}
    with pytest.raises(DataError, match=r"checkpoints.qwen: the same base/av/ar ids as .*gemma"):
        P.load_published(write(tmp_path, obj))


def test_missing_or_broken_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(DataError, match=re.escape(f"{missing}: file not found")):
        P.load_published(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("figures: [\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{bad}: not valid YAML")):
        P.load_published(bad)
    bad.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{bad}: expected a mapping, found list")):
        P.load_published(bad)


# ----------------------------------------------------------------------------- checkpoints


def test_ids_match_whatever_the_family_keys_and_revisions(paper):
    m = P.match_checkpoints(paper, ckpts(big=PAPER_IDS["gemma"], small=PAPER_IDS["qwen"]))
    assert m.equals_paper and m.reason is None
    assert m.families == {"gemma": "big", "qwen": "small"}


def test_a_subset_of_the_paper_families_still_equals_the_paper(paper):
    m = P.match_checkpoints(paper, ckpts(gemma=PAPER_IDS["gemma"]))
    assert m.equals_paper and m.families == {"gemma": "gemma"}


@pytest.mark.parametrize(
    "checkpoints,reason",
    [
        # one role differs: a fine-tuned AR is not the paper's
        (
            ckpts(gemma=(*PAPER_IDS["gemma"][:2], "me/my-ar"), qwen=PAPER_IDS["qwen"]),
            "family 'gemma' has base/av/ar ids google/gemma-3-27b-it, "
            "kitft/nla-gemma3-27b-L41-av, me/my-ar, not those of a paper family",
        ),
        # the paper's ids under swapped roles
        (
            ckpts(gemma=PAPER_IDS["gemma"][::-1]),
            "family 'gemma' has base/av/ar ids kitft/nla-gemma3-27b-L41-ar",
        ),
        # an extra family
        (
            ckpts(gemma=PAPER_IDS["gemma"], qwen=PAPER_IDS["qwen"], llama=("a", "b", "c")),
            "family 'llama' has base/av/ar ids a, b, c",
        ),
        # two run families with the same paper checkpoints
        (
            ckpts(g1=PAPER_IDS["gemma"], g2=PAPER_IDS["gemma"]),
            "families 'g1' and 'g2' both have the paper's gemma checkpoints",
        ),
        ({}, "no checkpoint ids in meta.checkpoints"),
        (None, "no checkpoint ids in meta.checkpoints"),
    ],
)
def test_ids_differ(paper, checkpoints, reason):
    m = P.match_checkpoints(paper, checkpoints)
    assert not m.equals_paper and m.families == {}
    assert m.reason.startswith(reason)


def test_a_local_path_or_demo_is_not_the_paper(paper):
    ck = ckpts(gemma=PAPER_IDS["gemma"])
    ck["gemma"]["ar"] = {"path": "/models/kitft/nla-gemma3-27b-L41-ar"}
    m = P.match_checkpoints(paper, ck)
    assert m.reason == "family 'gemma' has no base/av/ar ids, not those of a paper family"


def test_match_run_needs_every_file_to_be_the_papers(paper):
    good = {"meta": {"checkpoints": ckpts(g=PAPER_IDS["gemma"], q=PAPER_IDS["qwen"])}, "data": {}}
    other = {"meta": {"checkpoints": ckpts(g=("x", "y", "z"))}, "data": {}}
    none = {"meta": {}, "data": {}}
    m = P.match_run(paper, {"fve_baseline": good, "layers": good, "diagnostics": none})
    assert m.equals_paper and m.families == {"gemma": "g", "qwen": "q"}
    m = P.match_run(paper, {"fve_baseline": good, "layers": other})
    assert (
        m.reason
        == "layers.json: family 'g' has base/av/ar ids x, y, z, not those of a paper family"
    )
    renamed = {"meta": {"checkpoints": ckpts(G=PAPER_IDS["gemma"], q=PAPER_IDS["qwen"])}}
    m = P.match_run(paper, {"fve_baseline": good, "layers": renamed})
    assert m.reason in (
        "layers.json keys the paper's families differently",
        "fve_baseline.json keys the paper's families differently",
    )
    assert P.match_run(paper, {"x": none}).reason == "no results file records checkpoint ids"


# ----------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    "run,expected",
    [
        # published 0.775 ± 0.0005
        (iv(0.78, 0.76, 0.79), ("within", None)),
        (iv(0.77, 0.7745, 0.7755), ("within", None)),  # the value itself may lie off
        (iv(0.79, 0.7755, 0.80), ("within", None)),  # lo touches 0.775 + tol
        (iv(0.80, 0.7756, 0.82), ("outside", "above")),
        (iv(0.70, 0.65, 0.7744), ("outside", "below")),
        (iv(0.7752, None, None), ("no interval", "equal")),
        (iv(0.76, 0.74, float("nan")), ("no interval", "below")),
        (0.7754, ("no interval", "equal")),
        (0.7756, ("no interval", "above")),
        (0.5, ("no interval", "below")),
        (1, ("no interval", "above")),
        (None, ("no data", None)),
        (float("nan"), ("no data", None)),
        (iv(None, None, None), ("no data", None)),
        (True, ("no data", None)),
        ("0.775", ("no data", None)),
        ({"fve_own": 0.775}, ("no data", None)),
    ],
)
def test_verdict_by_hand(run, expected):
    assert P.verdict(0.775, 0.0005, run) == expected


def test_verdict_of_a_count_is_exact():
    # decimals 0: tolerance 0.5, so 0 failures equal only 0
    assert P.verdict(0, 0.5, 0) == ("no interval", "equal")
    assert P.verdict(0, 0.5, 1) == ("no interval", "above")
    assert P.verdict(1651, 0.5, 1650) == ("no interval", "below")


def test_lookup_walks_keys_and_indices():
    data = {"a": {"b": [{"n": 1}, {"n": 2}], "c": None, "d": 3}}
    assert P.lookup(data, ("a", "b", -1, "n")) == (2, None)
    assert P.lookup(data, ("a", "b", 0, "n")) == (1, None)
    assert P.lookup(data, ("a", "x")) == (None, "no 'x' in data.a")
    assert P.lookup(data, ("a", "b", 2)) == (None, "data.a.b has no element [2]")
    assert P.lookup(data, ("a", "d", "e")) == (None, "data.a.d is not an object")
    assert P.lookup(data, ("a", 0)) == (None, "data.a is not a list")
    assert P.lookup(data, ("a", "c")) == (None, "data.a.c is null")
    assert P.lookup(None, ("a",)) == (None, "data is not an object")


def test_resolve_path_replaces_family_placeholders():
    fams = {"gemma": "G", "qwen": "Q"}
    assert P.resolve_path(("cells", "{gemma}__{qwen}", "fve_own"), fams) == (
        "cells",
        "G__Q",
        "fve_own",
    )
    assert P.resolve_path(("directions", "{qwen}_to_{gemma}", -1), fams) == (
        "directions",
        "Q_to_G",
        -1,
    )
    assert P.resolve_path(("families", "{qwen}"), {"gemma": "G"}) is None


# ----------------------------------------------------------------------------- compare


def small_paper() -> P.Published:
    """Five figures, one per verdict, plus one of a family the run lacks."""

    def fig(id_, agg, path, value, decimals):
        return {
            "id": id_,
            "aggregate": agg,
            "path": path,
            "value": value,
            "decimals": decimals,
            "label": id_,
            "source": "seeds/000 §test",
        }

    obj = {
        "version": "test",
        "checkpoints": {
            f: {"layer": 1, **dict(zip(P.ROLES, ids, strict=True))} for f, ids in PAPER_IDS.items()
        },
        "figures": [
            fig("in", "fve_baseline", ["families", "{gemma}", "fve_train"], 0.775, 3),
            fig("out", "fve_baseline", ["families", "{gemma}", "fve_own"], 0.774, 3),
            fig("plain", "fve_baseline", ["families", "{gemma}", "tag_failures"], 0, 0),
            fig("null", "fve_baseline", ["families", "{gemma}", "nmse_median"], 0.0111, 4),
            fig("key", "fve_baseline", ["families", "{gemma}", "nope"], 1, 0),
            fig("qwen", "fve_baseline", ["families", "{qwen}", "fve_own"], 0.752, 3),
            fig("cell", "transfer_matrix", ["cells", "{gemma}__{gemma}", "fve_own"], 0.774, 3),
            fig("absent", "layers", ["families", "{gemma}", "greedy", "fve_own"], 0.774, 3),
        ],
    }
    return P.parse_published(obj, "small.yaml")


def run_results(checkpoints: dict) -> dict:
    return {
        "fve_baseline": {
            "meta": {"checkpoints": checkpoints},
            "data": {
                "families": {
                    "big": {
                        "fve_train": iv(0.771, 0.761, 0.781),
                        "fve_own": iv(0.701, 0.650, 0.750),
                        "tag_failures": 0,
                        "nmse_median": None,
                    }
                }
            },
        },
        "transfer_matrix": {
            "meta": {"checkpoints": checkpoints},
            "data": {"cells": {"big__big": {"fve_own": iv(0.81, 0.79, 0.83)}}},
        },
    }


def test_compare_gives_each_verdict():
    pub = small_paper()
    res = run_results(ckpts(big=PAPER_IDS["gemma"]))
    got = {c.figure.id: (c.verdict, c.relation, c.reason) for c in P.compare(pub, res)}
    assert got == {
        "in": ("within", None, None),
        "out": ("outside", "below", None),
        "plain": ("no interval", "equal", None),
        "null": ("no data", None, "data.families.big.nmse_median is null"),
        "key": ("no data", None, "no 'nope' in data.families.big"),
        "qwen": ("no data", None, "the run has no family with the paper's qwen"),
        "cell": ("outside", "above", None),
        "absent": ("no data", None, "layers.json is not an input"),
    }
    comps = P.compare(pub, res)
    assert comps[0].run == iv(0.771, 0.761, 0.781) and comps[3].run is None
    assert P.tally(comps) == {"within": 1, "outside": 2, "no interval": 1, "no data": 4}


def test_compare_with_other_checkpoints_has_no_data():
    pub = small_paper()
    res = run_results(ckpts(big=("a/base", "a/av", "a/ar")))
    comps = P.compare(pub, res)
    assert {c.verdict for c in comps} == {"no data"}
    assert comps[0].reason == (
        "fve_baseline.json: family 'big' has base/av/ar ids a/base, a/av, a/ar, "
        "not those of a paper family"
    )


def test_compare_reports_a_value_that_is_not_a_number():
    pub = small_paper()
    res = run_results(ckpts(big=PAPER_IDS["gemma"]))
    res["fve_baseline"]["data"]["families"]["big"]["fve_own"] = {"oops": 1}
    res["fve_baseline"]["data"]["families"]["big"]["fve_train"] = iv(None, None, None)
    got = {c.figure.id: c.reason for c in P.compare(pub, res)}
    assert got["out"] == "data.families.big.fve_own is not a number or an interval (found dict)"
    assert got["in"] == "data.families.big.fve_train has no value"


# ----------------------------------------------------------------------------- layouts


def _fid() -> dict:
    """A real fidelity() dict (the E1 metrics keys as aggregate.fidelity writes them)."""
    rng = np.random.default_rng(0)
    gold = rng.normal(size=(6, 4)) + 1.0
    pred = gold + rng.normal(scale=0.1, size=gold.shape)
    s = Scored(pred, gold, [f"d{i // 2}" for i in range(6)], np.zeros(6), 6, 0, 0)
    return fidelity(s, train_var=0.06, n_boot=5, seed=0, alpha=0.05)


def layouts() -> dict[str, dict]:
    """The `data` of each aggregate in the layouts of aggregate.py, experiments.py and
    ridge_stage.py, for the paper's families, conditions, variants, layers and sizes."""
    f = _fid()
    spec = {"metrics": {"n_boot": 5, "null_seed": 0, "alpha": 0.05}}
    runs = _run_stats(np.array([0.0, 4, 7]), np.array([0.0, 1, 2]), ["a", "b", "c"], 6, spec)
    ivl = {"value": 0.5, "lo": 0.4, "hi": 0.6, "n": 3}
    cond = {**f, "n_banned_tokens": 975, "leaks": 0, "share_single_quotes": ivl}
    cond |= {"share_hatch": ivl, "hatch_kinds": {}, "diff_vs_greedy": None}
    adj = {**f, "cos_to_layer": ivl, "inter_layer_nmse": ivl, "vs_layer_K": f}
    cell = {"fve_own": f["fve_own"], "null_fve_own": -0.7, "nmse_mean": f["nmse_mean"]}
    crossover = {"slope": 0.1, "intercept": 0.1, "n_cross": 1e5, "log10_n_cross": 5.0}
    curve = [{"n": n, "n_requested": n, "fve_own": f["fve_own"]} for n in (100, 19995)]
    fams = ("gemma", "qwen")
    return {
        "fve_baseline": {"families": dict.fromkeys(fams, f)},
        "quote_ablation": {
            "families": {
                fam: {
                    "conditions": {
                        c: {**cond, "hatch_free": f, "hatch_using": f} if c == "ban_dq_sq" else cond
                        for c in BAN_CONDITIONS
                    }
                }
                for fam in fams
            }
        },
        "verbatim": {
            "families": {
                fam: {c: {**runs, "hatch_free": runs} for c in (*BAN_CONDITIONS, "sample_t1")}
                for fam in fams
            }
        },
        "redaction": {
            "variants": list(REDACTION_VARIANTS),
            "families": {
                fam: {
                    "spans": dict.fromkeys(("mean_spans_per_decode", "share_chars_in_spans"), ivl),
                    "variants": dict.fromkeys(REDACTION_VARIANTS, f),
                }
                for fam in fams
            },
        },
        "best_of_n": {
            "families": {
                fam: {
                    "greedy": f,
                    "sample_tag_failures": 0,
                    "best_of": {str(n): f for n in (1, 2, 3, 5, 10)},
                    "mean_over_samples": f,
                }
                for fam in fams
            }
        },
        "layers": {
            "families": {"gemma": {"layer": 41, "greedy": f, "adjacent": {"40": adj, "42": adj}}}
        },
        "transfer_matrix": {
            "cells": {f"{a}__{b}": cell for a in fams for b in fams},
            "alignment": {"mean_abs_error_chars": 0.3, "n_rows": 10},
        },
        "ridge_scaling": {
            "directions": {
                f"{a}_to_{b}": {
                    "kernels": {k: {"curve": curve, "crossover": crossover} for k in ("linear",)}
                }
                for a in fams
                for b in fams
                if a != b
            }
        },
    }


def test_every_published_path_exists_in_the_aggregate_layouts(paper):
    """A run of the paper's config holds a number or an interval at every published path."""
    data = layouts()
    fams = {"gemma": "gemma", "qwen": "qwen"}
    for fig in paper.figures:
        c = P.compare_figure(fig, data[fig.aggregate], fams)
        assert c.verdict != "no data", (fig.id, c.reason)
        run = c.run["value"] if P.is_interval(c.run) else c.run
        assert isinstance(run, int | float) and math.isfinite(run), fig.id


def test_the_papers_own_numbers_are_within(paper):
    """Published values filled into a run as tight intervals (or plain numbers) read within
    (or equal): the comparison agrees with itself."""
    data = json.loads(json.dumps(layouts()))  # no shared sub-dicts
    fams = {"gemma": "gemma", "qwen": "qwen"}
    for fig in paper.figures:
        path = P.resolve_path(fig.path, fams)
        parent, _ = P.lookup(data[fig.aggregate], path[:-1])
        if P.is_interval(parent[path[-1]]):
            parent[path[-1]] = iv(fig.value, fig.value - 1e-6, fig.value + 1e-6)
        else:
            parent[path[-1]] = fig.value
    for fig in paper.figures:
        c = P.compare_figure(fig, data[fig.aggregate], fams)
        assert (c.verdict, c.relation) in (("within", None), ("no interval", "equal")), fig.id
