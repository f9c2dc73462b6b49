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

from nlaprobe.config import load_config, read_config_file, validate_config
from nlaprobe.errors import ConfigError
from nlaprobe.plan import ROLES, SPLITS, Plan

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
    """Every tag of a plan, keyed by what it identifies."""
    out = {}
    for split in SPLITS:
        out[f"corpus/{split}"] = plan.corpus_tag(split)
        for fam in plan.families:
            out[f"activations/{fam}/{split}"] = plan.activation_tag(fam, split)
    for fam in plan.families:
        for role in ROLES:
            out[f"checkpoint/{fam}/{role}"] = plan.checkpoint_tag(fam, role)
    return out


def changed(a: Plan, b: Plan) -> set[str]:
    ta, tb = tags(a), tags(b)
    assert ta.keys() == tb.keys()
    return {k for k in ta if ta[k] != tb[k]}


def other_family(plan: Plan) -> str:
    (fam,) = [f for f in plan.families if f != plan.primary]
    return fam


def activation_keys(*fams: str, splits=SPLITS) -> set[str]:
    return {f"activations/{fam}/{split}" for fam in fams for split in splits}


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
    assert all(re.fullmatch(r"[0-9a-f]{10}", t) for t in first.values())
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
        assert changed(before, after) == {f"checkpoint/{fam}/ar"}
        assert before.all_activations() == after.all_activations()


def test_ar_dtype_alone_changes_the_ar_tag(name):
    before = plan_of(name)
    fam = other_family(before)

    def swap(raw):
        raw["families"][fam]["ar"]["dtype"] = "float16"

    assert changed(before, plan_of(name, swap)) == {f"checkpoint/{fam}/ar"}


def test_changing_the_primary_base_moves_every_activation_tag(name):
    before = plan_of(name)
    primary = before.primary

    def swap(raw):
        raw["families"][primary]["base"]["dtype"] = "float16"

    after = plan_of(name, swap)
    assert changed(before, after) == {
        f"checkpoint/{primary}/base",
        *activation_keys(*before.families),
    }
    for split in SPLITS:
        assert before.positions_shard(split, "00000") != after.positions_shard(split, "00000")


def test_changing_the_other_base_moves_only_its_own_activation_tags(name):
    before = plan_of(name)
    fam = other_family(before)

    def swap(raw):
        raw["families"][fam]["base"]["dtype"] = "float16"

    after = plan_of(name, swap)
    assert changed(before, after) == {f"checkpoint/{fam}/base", *activation_keys(fam)}
    for split in SPLITS:
        assert before.positions_shard(split, "00000") == after.positions_shard(split, "00000")


def test_paper_base_revision_is_part_of_the_identity():
    before = plan_of("paper")

    def swap(raw):
        raw["families"]["qwen"]["base"]["revision"] = "0123456789abcdef"

    after = plan_of("paper", swap)
    assert changed(before, after) == {"checkpoint/qwen/base", *activation_keys("qwen")}


def test_default_demo_settings_move_every_checkpoint_and_activation_tag():
    before = plan_of("default")

    def swap(raw):
        raw["demo"]["vocab_size"] = 512

    after = plan_of("default", swap)
    checkpoints = {f"checkpoint/{f}/{r}" for f in before.families for r in ROLES}
    assert changed(before, after) == checkpoints | activation_keys(*before.families)
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


def test_eval_range_moves_eval_tags_only(name):
    before = plan_of(name)

    def swap(raw):
        raw["corpus"]["splits"]["eval"]["stop"] += 1

    after = plan_of(name, swap)
    assert changed(before, after) == {
        "corpus/eval",
        *activation_keys(*before.families, splits=["eval"]),
    }


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
def test_sampling_parameters_move_activation_tags_only(name, mutate):
    before = plan_of(name)
    after = plan_of(name, mutate)
    assert changed(before, after) == activation_keys(*before.families)


def test_layers_are_part_of_the_activation_identity():
    before = plan_of("default")

    def swap(raw):
        raw["families"]["gemma"]["adjacent_layers"] = [1]

    after = plan_of("default", swap)
    assert changed(before, after) == activation_keys("gemma")


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
            assert job["family"] == fam
            assert job["inputs"]["corpus"] == plan.corpus_shard(split, "00000")
            assert ("positions" in job["inputs"]) == (fam != plan.primary)
            prov = json.loads(job["provenance"])
            assert prov["tag_spec"] == plan.activation_spec(fam, split)
    for style in plan.demo_styles():
        params = plan.demo_params_for(plan.demo_tag(style), style)
        assert params["layer"] == 2


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
    assert plan.n_shards("eval") == 2
    assert plan.n_shards("ridge") == 4
    assert len(plan.all_activations()) == 2 * (2 + 4)
    assert plan.demo_styles() == ["gemma", "qwen"]
