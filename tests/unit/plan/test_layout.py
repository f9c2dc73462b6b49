"""nlaprobe.plan.layout: the path of every artifact and the way back from a path's wildcards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from plan_configs import CONFIGS, REPO, config

from nlaprobe.aggregates import names as aggregate_names
from nlaprobe.errors import ConfigError
from nlaprobe.plan import Plan
from nlaprobe.plan.identity import SPLITS
from nlaprobe.plan.layout import VARIANTS, Layout

PACKAGE = REPO / "workflow" / "nlaprobe" / "plan"


@pytest.fixture(params=list(CONFIGS))
def name(request) -> str:
    return request.param


def paths(layout: Layout) -> dict:
    fams = layout.families
    last = layout.shards("eval")[-1]
    out = {
        "activations": layout.all_activations(),
        "corpus": [layout.corpus_shard(s, layout.shards(s)[-1]) for s in SPLITS],
        "positions": [layout.positions_shard(s, "00000") for s in SPLITS],
        "decodes": [layout.decode_shard(f, c, last) for f in fams for c in layout.conditions(f)],
        "redacted": [layout.redacted_shard(f, v, last) for f in fams for v in VARIANTS[1:]],
        "scores": [layout.score_shard(a, b, "greedy", "full", last) for a in fams for b in fams],
        "ridge": [layout.ridge_file(a, b, 8, "npz") for a, b in layout.ridge_directions()],
        "demo": [layout.demo_dir(s) for s in layout.demo_styles()],
        "report": layout.report_inputs(),
    }
    for agg in aggregate_names():
        out[agg] = [*layout.aggregate_inputs(agg), layout.aggregate_record(agg)]
    return out


def test_a_layout_alone_gives_the_paths_of_the_plan(name):
    cfg = config(name)
    assert paths(Layout(cfg)) == paths(Plan(cfg))


def test_every_path_holds_the_tag_of_its_artifact(name):
    layout = Layout(config(name))
    for fam in layout.families:
        for split in SPLITS:
            assert f"/base-{layout.activation_tag(fam, split)}/{split}/" in (
                layout.activation_shard(fam, split, "00000")
            )
            assert f"/corpus-{layout.corpus_tag(split)}/" in layout.corpus_shard(split, "00000")
        assert f"/av-{layout.decode_tag(fam)}/" in layout.decode_shard(fam, "greedy", "00000")
        assert f"__ar-{layout.ar_tag(fam)}/" in layout.score_shard(
            fam, fam, "greedy", "full", "00000"
        )
    assert f"/ridge-{layout.ridge_tag()}/" in layout.ridge_file("a", "b", 1, "json")
    for style in layout.demo_styles():
        assert layout.demo_dir(style) == f"results/demo/demo-{layout.demo_tag(style)}/{style}"


def test_every_tag_leads_back_to_its_family_or_split(name):
    layout = Layout(config(name))
    for fam in layout.families:
        assert layout.family_for_decode_tag(layout.decode_tag(fam)) == fam
        assert layout.family_for_ar_tag(layout.ar_tag(fam)) == fam
        for split in SPLITS:
            assert layout.family_for_activation_tag(layout.activation_tag(fam, split), split) == fam
            assert layout.split_for_corpus_tag(layout.corpus_tag(split), split) == split
        for cond in layout.conditions(fam):
            layout.check_condition(fam, cond)
        with pytest.raises(ConfigError, match="greedy_L99"):
            layout.check_condition(fam, "greedy_L99")
    with pytest.raises(ConfigError, match="av-0000000000"):
        layout.family_for_decode_tag("0000000000")


def test_the_aggregates_read_a_layout(name):
    """The aggregates' `inputs(plan)` need paths only: a Layout plans every aggregate's spec."""
    layout = Layout(config(name))
    for agg in aggregate_names():
        spec = layout.aggregate_spec(agg)
        assert spec["families"] == layout.families
        assert layout.aggregate_inputs(agg)[-1] == layout.stamp(agg)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return out | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


@pytest.mark.parametrize(
    ("module", "below"),
    [
        ("identity", set()),
        ("layout", {"identity"}),
        ("jobs", {"identity", "layout"}),
        ("requests", {"identity", "layout"}),
    ],
)
def test_each_layer_reads_only_the_layers_below_it(module, below):
    found = imports(PACKAGE / f"{module}.py")
    assert {m.removeprefix("nlaprobe.plan.") for m in found if m.startswith("nlaprobe.plan")} == {
        *below
    }
    assert not any(m.split(".")[0] == "snakemake" for m in found)
