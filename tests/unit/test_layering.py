"""The package's layering, read from its imports (ast, function-level imports included; not
those under `if TYPE_CHECKING:`): no import cycle among nlaprobe modules; the aggregates import
no stage and the aggregate core no aggregate; no stage module imports another stage module, and
the layers below the stages (the models layer nlaprobe.models, the training library
nlaprobe.train) import no stage."""

from __future__ import annotations

import ast
from pathlib import Path

from snakemake_jobs import REPO

from nlaprobe import aggregates as AG

PKG = REPO / "workflow" / "nlaprobe"

# the modules holding a stage's entry point (a CLI command's package function) and nothing a
# stage shares: each depends on the layers below (models, documents, io, config, ...) only
STAGES = frozenset(
    {
        "nlaprobe.corpus",
        "nlaprobe.extract",
        "nlaprobe.decode",
        "nlaprobe.score",
        "nlaprobe.redact",
        "nlaprobe.ridge_stage",
        "nlaprobe.demo",
        "nlaprobe.report",
        "nlaprobe.aggregates.stage",
    }
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The package modules a module imports, at any depth (functions too), except under
    `if TYPE_CHECKING:` (never executed)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for a in child.names:
                    full = f"{child.module}.{a.name}"
                    found.add(full if full in MODULES else child.module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in MODULES}


def import_graph() -> dict[str, set[str]]:
    graph = {m: imports_of(p) for m, p in MODULES.items()}
    # the registry imports its aggregate modules by listing the package (importlib)
    aggregate_modules = {f"nlaprobe.aggregates.{n}" for n in AG.names()}
    graph["nlaprobe.aggregates"] |= aggregate_modules
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (cycle := dfs(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := dfs(m)):
            return cycle
    return None


def test_the_graph_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_package_modules():
    graph = import_graph()
    assert "nlaprobe.aggregates.transfer_matrix" in graph["nlaprobe.aggregates"]
    assert find_cycle(graph) is None


def test_the_core_imports_no_aggregate_and_the_aggregates_no_stage():
    graph = import_graph()
    aggregate_modules = {f"nlaprobe.aggregates.{n}" for n in AG.names()}
    assert not graph["nlaprobe.aggregates.core"] & (
        aggregate_modules | {"nlaprobe.aggregates", "nlaprobe.aggregates.stage", "nlaprobe.plan"}
    )
    for m in aggregate_modules:
        assert "nlaprobe.plan" not in graph[m]
    # an aggregate's compute runs inside the aggregate stage: importing another stage from it
    # (E8 once called nlaprobe.ridge_stage) would be a stage importing a stage
    crossings = {m: sorted(graph[m] & STAGES) for m in sorted(aggregate_modules)}
    assert {m: d for m, d in crossings.items() if d} == {}
    assert "nlaprobe.aggregate" not in MODULES and "nlaprobe.experiments" not in MODULES


def test_no_stage_imports_another_stage():
    graph = import_graph()
    assert STAGES <= set(graph), sorted(STAGES - set(graph))
    crossings = {m: sorted(graph[m] & STAGES - {m}) for m in sorted(STAGES)}
    assert {m: d for m, d in crossings.items() if d} == {}


def test_the_models_layer_and_training_import_no_stage():
    graph = import_graph()
    below = [m for m in graph if m.startswith("nlaprobe.models")] + ["nlaprobe.train"]
    assert "nlaprobe.models.forward" in below and "nlaprobe.models.backends" in below
    assert {m: sorted(graph[m] & STAGES) for m in below if graph[m] & STAGES} == {}
    # the models layer is below training too: train uses it, never the other way round
    assert not any("nlaprobe.train" in graph[m] for m in below if m != "nlaprobe.train")


def test_the_graph_check_sees_function_level_imports(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text(
        "def f():\n    from nlaprobe.decode import decode_shard\n    from nlaprobe import score\n"
    )
    assert imports_of(mod) == {"nlaprobe.decode", "nlaprobe.score"}
