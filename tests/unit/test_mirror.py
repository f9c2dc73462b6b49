"""The tests mirror the package (docs/development.md, "Lint and tests"), read from the files and
their imports (ast, function-level imports included).

The rule, for the test modules in tests/unit and tests/stages (tests/workflow runs the whole DAG
and mirrors nothing):
- a module `nlaprobe.x` is mirrored by `test_x.py` or `test_x_<topic>.py`;
- a module `nlaprobe.p.m` of a subpackage `p` by `test_p.py`, `test_p_<module or topic>.py` or
  `tests/unit/p/test_m.py`;
- and one of its mirrors imports it (`import nlaprobe.x`, `from nlaprobe.x import ...`,
  `from nlaprobe import x`, `from nlaprobe.p import m`; a subpackage-level `test_p*.py` by any
  import of `nlaprobe.p...`), itself or through a helper module of tests/ it imports;
- packaged data (non-Python files in the package) is named, by its path in the package, by a
  test module.
Modules tested under another name are listed in EXCEPTIONS, test modules that mirror no module
in CROSS_CUTTING, each with its reason; both lists are checked for stale entries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "workflow" / "nlaprobe"
TESTS = REPO / "tests"
MIRROR_DIRS = ("unit", "stages")

# module -> (the test module covering it, relative to tests/, or None; why it is not mirrored by
# name). A named file must exist and import the module; None only for modules with no behaviour.
EXCEPTIONS: dict[str, tuple[str | None, str]] = {
    "nlaprobe.cli": (
        "unit/test_io_integrity.py",
        "the argparse front of the stages: each command is tested beside its stage, mostly "
        "through `python -m nlaprobe`: extract and positions in stages/test_extract, decode "
        "and score in stages/test_decode_score, redact in stages/test_redact_stage, ridge in "
        "stages/test_ridge_stage, aggregate and stamp in stages/test_aggregates_stage, record "
        "in unit/test_aggregates, report in stages/test_report_stage, build-demo in "
        "stages/test_demo_kernels, validate-config and pin in unit/test_pin and "
        "unit/test_hostile_yaml, damaged inputs to every stage in stages/test_hostile_inputs "
        "(corpus runs in tests/workflow); test_io_integrity runs cli.main in process for the "
        "exit code of a damaged shard",
    ),
    "nlaprobe.score": (
        "stages/test_decode_score.py",
        "scoring runs the AR on decodes: tested with the decode stage that produces them",
    ),
    "nlaprobe.quarantine": (
        "unit/test_io_integrity.py",
        "moving a damaged file aside is the second half of the integrity check of stored shards",
    ),
    "nlaprobe.fixtures": (
        "conftest.py",
        "the tiny families are built once per session by the fixtures of tests/conftest.py; "
        "stages/test_fixtures.py checks those families against the released layout with "
        "expectations written out by hand, not imported from the builder",
    ),
    "nlaprobe.constants": (None, "names only (column names, file names, metadata keys)"),
    "nlaprobe.errors": (
        None,
        "the exception classes only; every test that expects a ConfigError/DataError uses them",
    ),
}

# test modules (relative to tests/) that mirror no single module: checks across the package
CROSS_CUTTING: dict[str, str] = {
    "unit/test_command_length.py": "every rule's command line stays within the OS limit",
    "unit/test_docs.py": "the docs agree with the code (keys, commands, figures)",
    "unit/test_hostile_yaml.py": "hostile config files through load_config and the Snakefile",
    "stages/test_hostile_inputs.py": "damaged and hostile inputs through every stage's CLI",
    "unit/test_leftovers.py": "no stage leaves partial files behind, across stages",
    "unit/test_layering.py": "the package's import graph (no cycles, the layers)",
    "unit/test_params.py": "every stage's Params: one JSON path from the plan to the CLI",
    "stages/test_vllm.py": "the vLLM engine end to end (decode backend, scoring), marked vllm",
    "unit/test_mirror.py": "this check",
}


def package_modules() -> list[str]:
    names = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        names.append(".".join(path.relative_to(PKG.parent).with_suffix("").parts))
    return names


def package_data() -> list[str]:
    return sorted(
        p.relative_to(PKG).as_posix()
        for p in PKG.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


def subpackages() -> set[str]:
    return {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}


def mirror_test_modules() -> list[str]:
    """Test modules of tests/unit and tests/stages, relative to tests/."""
    return sorted(
        p.relative_to(TESTS).as_posix() for d in MIRROR_DIRS for p in (TESTS / d).rglob("test_*.py")
    )


def helper_modules() -> dict[str, Path]:
    """The importable helpers of tests/ (prepend import mode: by bare module name)."""
    return {
        p.stem: p
        for p in TESTS.rglob("*.py")
        if not p.name.startswith("test_") and p.name != "conftest.py"
    }


def imports(path: Path, helpers: dict[str, Path], seen: frozenset = frozenset()) -> set[str]:
    """The nlaprobe names a file imports (a module, or a module's attribute), with those of the
    helper modules of tests/ it imports."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "nlaprobe" or name.startswith("nlaprobe."):
                out.add(name)
            elif name in helpers and name not in seen:
                out |= imports(helpers[name], helpers, seen | {name})
    return out


def mirrors(module: str, tests: list[str]) -> list[str]:
    """The test modules that mirror `module` by name."""
    parts = module.split(".")[1:]
    top = parts[0]
    found = []
    for rel in tests:
        folder, name = rel.rsplit("/", 1)
        stem = name.removesuffix(".py")
        if folder in MIRROR_DIRS and (stem == f"test_{top}" or stem.startswith(f"test_{top}_")):
            found.append(rel)
        elif len(parts) == 2 and folder == f"unit/{top}" and stem == f"test_{parts[1]}":
            found.append(rel)
    return found


def covers(rel: str, module: str, helpers: dict[str, Path]) -> bool:
    """Does the test module `rel` import `module` (a subpackage-level test: any of it)?"""
    names = imports(TESTS / rel, helpers)
    if module in names:
        return True
    package = module.rsplit(".", 1)[0]
    subpackage_level = "/" not in rel.removeprefix("unit/").removeprefix("stages/")
    return (
        package != "nlaprobe"
        and subpackage_level
        and any(n == package or n.startswith(f"{package}.") for n in names)
    )


def mirrored(rel: str, modules: list[str]) -> bool:
    """Does the test module `rel` mirror some module or subpackage by name?"""
    return any(rel in mirrors(m, [rel]) for m in modules)


@pytest.fixture(scope="module")
def layout():
    return package_modules(), mirror_test_modules(), helper_modules()


def test_every_module_has_a_mirroring_test_that_imports_it(layout):
    modules, tests, helpers = layout
    missing = []
    for module in modules:
        if module in EXCEPTIONS:
            continue
        found = mirrors(module, tests)
        if not any(covers(rel, module, helpers) for rel in found):
            missing.append(f"{module}: mirrors {found or 'none'}, none imports it")
    assert missing == [], "modules without a mirroring test:\n" + "\n".join(missing)


def test_the_exceptions_name_a_test_that_imports_the_module(layout):
    modules, tests, helpers = layout
    for module, (rel, why) in EXCEPTIONS.items():
        assert module in modules, f"EXCEPTIONS: {module} is no module of the package"
        assert why, f"EXCEPTIONS: {module} needs its reason"
        found = [r for r in mirrors(module, tests) if covers(r, module, helpers)]
        assert found == [], f"EXCEPTIONS: {module} is mirrored by {found}: drop the entry"
        if rel is not None:
            assert (TESTS / rel).is_file(), f"EXCEPTIONS: {module} -> {rel}: no such test module"
            assert covers(rel, module, helpers), f"EXCEPTIONS: {rel} does not import {module}"


def test_every_test_module_mirrors_a_module_or_is_cross_cutting(layout):
    modules, tests, _ = layout
    names = modules + [f"nlaprobe.{p}" for p in subpackages()]
    stray = [rel for rel in tests if rel not in CROSS_CUTTING and not mirrored(rel, names)]
    assert stray == [], "test modules that mirror no module (rename, or CROSS_CUTTING):\n" + (
        "\n".join(stray)
    )
    for rel in CROSS_CUTTING:
        assert rel in tests, f"CROSS_CUTTING: {rel}: no such test module"
        assert not mirrored(rel, names), f"CROSS_CUTTING: {rel} mirrors a module: drop the entry"


def test_packaged_data_is_named_by_a_test(layout):
    _, tests, _ = layout
    texts = {rel: (TESTS / rel).read_text(encoding="utf-8") for rel in tests}
    unnamed = [d for d in package_data() if not any(d in text for text in texts.values())]
    assert unnamed == [], f"packaged data no test names by its path in the package: {unnamed}"


def test_test_module_names_are_unique():
    """pytest's prepend import mode (no __init__.py in tests/) needs unique basenames."""
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_there_is_one_conftest():
    """tests/conftest.py is the only conftest: a second module named `conftest` (prepend import
    mode) comes first on sys.path in the processes the vLLM tests spawn and shadows the root
    one, whose family builders they unpickle by module name."""
    assert sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("conftest.py")) == [
        "conftest.py"
    ]
