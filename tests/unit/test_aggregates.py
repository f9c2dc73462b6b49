"""The aggregate registry (nlaprobe.aggregates): nothing to keep in sync by hand, a toy aggregate
is one module and no other edit, and planning stays light (the import graph's rules:
tests/unit/test_layering.py)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from contract import E1_E8
from matplotlib.figure import Figure as MplFigure
from snakemake_jobs import REPO, job_shell, parsed_workflow

from nlaprobe import aggregates as AG
from nlaprobe import constants as C
from nlaprobe import report as R
from nlaprobe.aggregates import Aggregate, Figure
from nlaprobe.cli import main
from nlaprobe.config import load_config
from nlaprobe.errors import ConfigError
from nlaprobe.io import read_table, vectors_to_arrow, write_table
from nlaprobe.plan import Plan, config_json, to_json
from nlaprobe.report import figures as RF
from nlaprobe.report import html as RH

PKG = REPO / "workflow" / "nlaprobe"
BUILTIN = E1_E8


@pytest.fixture(scope="module")
def plan() -> Plan:
    return Plan(load_config([REPO / "config" / "config.yaml"]))


# ----------------------------------------------------------------------------- the registry


def test_the_registry_holds_e1_to_e8_in_report_order():
    assert AG.names() == list(BUILTIN)
    assert [a.experiment for a in AG.aggregates()] == list(range(1, 9))
    assert AG.figure_names() == [
        "ban_conditions",
        "redaction",
        "best_of_n",
        "transfer_matrix",
        "ridge_scaling",
    ]


def test_an_unknown_aggregate_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown aggregate 'nope'; valid: \['fve_baseline'"):
        AG.get("nope")


def test_registering_a_taken_name_or_figure_fails():
    agg = AG.get("redaction")
    clone = Aggregate("redaction", 4, "again", agg.inputs, agg.compute)
    with pytest.raises(ConfigError, match="registered twice"):
        AG.register(clone)
    stolen = Aggregate(
        "thief", 50, "thief", agg.inputs, agg.compute, figures=(Figure("redaction", "", "x:y"),)
    )
    with pytest.raises(ConfigError, match="already drawn from 'redaction'"):
        AG.register(stolen)
    assert "thief" not in AG.names()
    with pytest.raises(ConfigError, match="expected"):
        AG.register(Aggregate("Bad-Name", 51, "x", agg.inputs, agg.compute))


# ----------------------------------------------------------------------------- nothing to sync


def test_every_aggregate_has_a_rule_a_stamp_a_report_section_and_its_figures(plan, tmp_path):
    with parsed_workflow(tmp_path / "wf") as wf:
        P = wf.globals["P"]
        rules = {r.name: r for r in wf.rules}
        for agg in AG.aggregates():
            rule = rules[agg.name]
            assert list(map(str, rule.output)) == [P.aggregate_file(agg.name)]
            assert list(map(str, rule.input)) == [
                *P.aggregate_inputs(agg.name),
                P.aggregate_record(agg.name),
            ]
            assert P.aggregate_inputs(agg.name)[-1] == P.stamp(agg.name)
            cmd = job_shell(wf, agg.name, P.aggregate_file(agg.name))
            assert cmd.startswith(f"python -m nlaprobe aggregate {agg.name} ")
        assert sorted(map(str, rules["report"].input)) == sorted(
            P.aggregate_file(n) for n in AG.names()
        )
        assert set(map(str, rules["all"].input)) >= {P.aggregate_file(n) for n in AG.names()}
        assert [str(f) for f in rules["report"].output][1:] == [
            f"results/figures/{n}.png" for n in AG.figure_names()
        ]
    for agg in AG.aggregates():
        assert callable(AG.resolve(agg.section)), agg.name
        for fig in agg.figures:
            # drawn from its aggregate; without it, a placeholder saying so
            drawn = AG.resolve(fig.draw)({})
            assert isinstance(drawn, MplFigure)
            assert any(agg.name in t.get_text() for ax in drawn.axes for t in ax.texts)
            assert fig.caption


def results_read(fn: ast.FunctionDef) -> set[str]:
    """The aggregate names a function of the report reads by name: `results.get("x")`,
    `results["x"]` and the source its placeholder names, `_placeholder(title, "x")`."""
    found = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "results.get":
            found.add(ast.literal_eval(node.args[0]))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "_placeholder":
            found.add(ast.literal_eval(node.args[1]))
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "results":
            if isinstance(node.slice, ast.Constant):
                found.add(node.slice.value)
    return found


def test_the_report_knows_only_registered_aggregates():
    """nlaprobe.report holds no section or figure for an aggregate that does not exist: its
    section renderers (html.section_<aggregate>) are exactly the sections the aggregates of
    those names register, its figure drawers (figures.figure_<figure>) exactly the registered
    figures of those names, each drawer reads the one aggregate that registers its figure, and
    no other function of it reads an aggregate by name."""
    sections = {n.removeprefix("section_") for n in vars(RH) if n.startswith("section_")}
    assert {a.name: a.section for a in AG.aggregates() if a.section} == {
        n: f"nlaprobe.report.html:section_{n}" for n in sections
    }
    # figure_png: the PNG bytes of any figure, not a drawer
    drawers = {f"figure_{f.name}" for f, _ in AG.figures()}
    assert {n for n in vars(RF) if n.startswith("figure_") and n != "figure_png"} == drawers
    assert {f.draw for f, _ in AG.figures()} == {f"nlaprobe.report.figures:{n}" for n in drawers}
    read = {}
    for path in sorted((PKG / "report").glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, ast.FunctionDef) and results_read(fn):
                read[f"{path.stem}.{fn.name}"] = results_read(fn)
    assert read == {f"figures.figure_{f.name}": {agg} for f, agg in AG.figures()}
    for gone in ("TITLES", "SECTIONS", "FIGURE_SOURCES", "FIGURE_CAPTIONS", "FIGURE_FUNCTIONS"):
        assert not any(hasattr(m, gone) for m in (R, RH, RF))
    assert not hasattr(C, "FIGURES")


def test_the_report_sections_are_the_registry_and_the_unknown_inputs():
    """One section per registered aggregate (registry order; figures of absent aggregates get
    theirs too), then the unregistered inputs; no entry for anything else. The one section that
    belongs to no aggregate is the documented "Other figures" (figures no aggregate draws)."""
    results = {n: {"meta": {}, "data": {}} for n in AG.names()}
    results["not_registered"] = {"meta": {}, "data": {"x": 1}}
    page = R.render_html(results, {n: b"png" for n in AG.figure_names()})
    toc = re.findall(r'<li><a href="#[^"]*">([^<]*)</a></li>', page)
    assert toc == [a.heading for a in AG.aggregates()] + ["not_registered"]
    page = R.render_html({}, {n: b"png" for n in AG.figure_names()})
    toc = re.findall(r'<li><a href="#[^"]*">([^<]*)</a></li>', page)
    assert toc == [a.heading for a in AG.aggregates() if a.figures]
    page = R.render_html(results, {n: b"png" for n in [*AG.figure_names(), "stray"]})
    assert re.findall(r'<section id="([^"]*)">', page) == [
        *(f"s-{n}" for n in AG.names()),
        "s-not_registered",
        "s-other-figures",
    ]
    assert page.count('<figure id="s-fig-stray">') == 1


def test_the_readme_lists_every_aggregate():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in AG.names():
        assert f"`results/{name}.json`" in readme, name


# ----------------------------------------------------------------------------- a toy aggregate


def toy_inputs(plan: Plan) -> dict:
    return {"gold": [plan.activation_shard(plan.primary, "eval", s) for s in plan.shards("eval")]}


def toy_compute(spec: dict) -> dict:
    return {
        "rows": sum(read_table(p, [C.COL_DOC_ID]).num_rows for p in spec["gold"]),
        "offset": spec["settings"]["offset"],
    }


def toy_section(data: dict) -> str:
    return f"<p>toy rows: {data.get('rows')}</p>"


def toy_figure(results: dict) -> MplFigure:
    fig = RF.new_figure(3, 2)
    fig.add_subplot().set_title(f"toy: {'toy_count' in results}")
    return fig


TOY = Aggregate(
    name="toy_count",
    experiment=99,
    title="toy count",
    inputs=toy_inputs,
    compute=toy_compute,
    settings=lambda cfg: {"offset": cfg["run"]["seed"]},
    section=toy_section,
    figures=(Figure("toy_figure", "a toy figure", toy_figure),),
)


@pytest.fixture
def toy():
    AG.register(TOY)
    yield TOY
    AG.unregister(TOY.name)


def write_gold(path: Path, n: int) -> None:
    vecs = np.arange(n * 4, dtype=np.float32).reshape(n, 4) + 1
    table = pa.table(
        {
            C.COL_DOC_ID: pa.array([f"doc:{i}" for i in range(n)]),
            C.COL_VECTOR: vectors_to_arrow(vecs, np.ones(n, dtype=bool)),
        }
    )
    write_table(path, table)


def test_a_toy_aggregate_is_planned_run_by_the_cli_and_reported(toy, plan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = Plan(plan.cfg, known=plan.identity())
    # the plan: its inputs, its stamp (its settings), its record, the report's inputs
    gold = toy_inputs(p)["gold"]
    assert p.aggregate_inputs("toy_count") == [*gold, p.stamp("toy_count")]
    assert p.aggregate_params("toy_count")["settings"] == {"offset": 42}
    assert p.aggregate_file("toy_count") in p.report_inputs()
    assert p.aggregate_record("toy_count").startswith("results/.inputs/toy_count-")
    # the CLI, as the rule calls it, with its inputs under a storage-like folder
    for g in gold:
        write_gold(tmp_path / "store" / g, 3)
    out, record = "results/toy_count.json", p.aggregate_record("toy_count")
    argv = ["aggregate", "toy_count", "--config", config_json(p.cfg), "--identity"]
    argv += [to_json(p.identity()), "--root=store/", "--out", out, "--record", record]
    assert main(argv) == 0
    doc = json.loads(Path(out).read_text())
    assert doc["data"] == {"rows": 3 * len(gold), "offset": 42}
    # its input record, as the `record` rule writes it
    itag = Path(record).name.removeprefix("toy_count-").removesuffix(".json")
    params = p.record_params_for("toy_count", itag)
    assert main(["record", "--params", to_json(params), "--out", record]) == 0
    assert json.loads(Path(record).read_text())["aggregate"] == "toy_count"
    # the report: its section under its heading, and its figure
    R.write_report([out], "results/report.html", "results/figures")
    page = Path("results/report.html").read_text(encoding="utf-8")
    assert "E99 toy count" in page and f"<p>toy rows: {3 * len(gold)}</p>" in page
    assert "a toy figure" in page
    assert Path("results/figures/toy_figure.png").read_bytes().startswith(b"\x89PNG")


def test_a_toy_aggregate_gets_its_rule_and_report_outputs(toy, tmp_path):
    with parsed_workflow(tmp_path / "wf") as wf:
        P = wf.globals["P"]
        rules = {r.name: r for r in wf.rules}
        assert [str(f) for f in rules["toy_count"].output] == ["results/toy_count.json"]
        assert str(rules["toy_count"].input[-1]) == P.aggregate_record("toy_count")
        assert "results/figures/toy_figure.png" in [str(f) for f in rules["report"].output]
        assert "results/toy_count.json" in [str(f) for f in rules["all"].input]
        cmd = job_shell(wf, "toy_count", "results/toy_count.json")
        assert cmd.startswith("python -m nlaprobe aggregate toy_count --config ")


TOY_MODULE = '''"""A toy aggregate: the rows of the primary family's eval activation shards."""

from nlaprobe import constants as C
from nlaprobe.aggregates.registry import Aggregate, register
from nlaprobe.io import read_table


def inputs(plan):
    return {"gold": [plan.activation_shard(plan.primary, "eval", s) for s in plan.shards("eval")]}


def compute(spec):
    return {"rows": sum(read_table(p, [C.COL_DOC_ID]).num_rows for p in spec["gold"])}


AGGREGATE = register(
    Aggregate(name="toy_count", experiment=99, title="toy count", inputs=inputs, compute=compute)
)
'''


def test_adding_a_toy_aggregate_is_one_new_module(tmp_path):
    """A copy of the workflow plus one file, aggregates/toy_count.py, and nothing else: the
    Snakefile has its rule, the CLI knows it, the report orders it."""
    for name in ("Snakefile", "rules", "config", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    shutil.copytree(
        PKG, tmp_path / "workflow" / "nlaprobe", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "workflow" / "nlaprobe" / "aggregates" / "toy_count.py").write_text(TOY_MODULE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "workflow")}
    snakemake = Path(sys.executable).with_name("snakemake")
    rules = subprocess.run(
        [str(snakemake), "--list-rules"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stderr
    assert "toy_count" in rules.stdout.split()
    code = (
        "from nlaprobe.aggregates import names; from nlaprobe.cli import build_parser; "
        "print(names()[-1]); build_parser().parse_args(['aggregate', 'toy_count', '--out', 'x'])"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "toy_count", proc.stderr


def test_planning_imports_neither_torch_nor_matplotlib():
    """The Snakefile's parse plans every aggregate: the registry and its modules stay light."""
    code = (
        "import sys\n"
        "from nlaprobe.config import load_config\n"
        "from nlaprobe.plan import Plan\n"
        f"p = Plan(load_config([{str(REPO / 'config' / 'config.yaml')!r}]))\n"
        "from nlaprobe.aggregates import names\n"
        "[p.aggregate_inputs(n) for n in names()]\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- job references


def test_the_aggregate_root_is_the_one_folder_of_the_job_inputs(plan):
    paths = plan.aggregate_inputs("transfer_matrix")
    assert plan.aggregate_root("transfer_matrix", paths) == ""
    store = ".snakemake/storage/fs/tmp/store/"
    assert plan.aggregate_root("transfer_matrix", [store + p for p in paths]) == store
    mixed = [store + p for p in paths[:-1]] + [paths[-1]]
    with pytest.raises(ConfigError, match="not under one common folder"):
        plan.aggregate_root("transfer_matrix", mixed)
    with pytest.raises(ConfigError, match=f"the job has 1 inputs, the plan {len(paths)}"):
        plan.aggregate_root("transfer_matrix", paths[:1])
    # the job's spec: the planned one, every path under the root
    spec = plan.aggregate_job_spec("transfer_matrix", [store + p for p in paths])
    cell = spec["cells"][f"{plan.primary}__{plan.primary}"]
    assert cell["scores"] == [
        store + p
        for p in plan.aggregate_spec("transfer_matrix")["cells"][f"{plan.primary}__{plan.primary}"][
            "scores"
        ]
    ]


def test_the_identity_specs_replan_the_same_paths_without_reading(plan):
    again = Plan(json.loads(config_json(plan.cfg)), known=json.loads(to_json(plan.identity())))
    for name in AG.names():
        assert again.aggregate_inputs(name) == plan.aggregate_inputs(name)
        assert again.aggregate_record(name) == plan.aggregate_record(name)
    with pytest.raises(ConfigError, match="identity specs: expected"):
        Plan(plan.cfg, known=[["nothing"]])


def test_sorting_the_config_keys_would_move_the_inputs_and_the_job_refuses(plan, tmp_path, caplog):
    """The family order is part of the plan (config_json keeps it): a job given a config whose
    plan has other inputs than the DAG's refuses to run, naming both records."""
    swapped = json.loads(to_json(plan.cfg))  # sorted keys: another family order
    assert list(swapped["families"]) != plan.families
    argv = ["aggregate", "fve_baseline", "--config", to_json(swapped), "--identity"]
    argv += [to_json(plan.identity()), "--out", str(tmp_path / "x.json")]
    argv += ["--record", str(tmp_path / Path(plan.aggregate_record("fve_baseline")).name)]
    assert main(argv) == 2
    assert not (tmp_path / "x.json").exists()
    assert "the inputs changed since the DAG was built" in caplog.text
    assert Path(plan.aggregate_record("fve_baseline")).name in caplog.text


def test_a_shard_list_is_a_folder_and_a_count():
    from nlaprobe.plan import shard_count, shard_folder, shard_paths

    paths = [f"results/a/shard-{C.shard_name(i)}.parquet" for i in range(3)]
    assert shard_folder(paths) == "results/a" and shard_paths("results/a", 3) == paths
    assert shard_count(paths, paths) == 3
    for bad in (paths[::-1], paths[1:], [*paths[:2], "results/b/shard-00002.parquet"], []):
        with pytest.raises(ConfigError):
            shard_folder(bad)
    with pytest.raises(ConfigError, match="different lengths"):
        shard_count(paths, paths[:2])
