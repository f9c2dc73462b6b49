"""The config contract: shipped configs validate, defaults fill in, bad configs fail naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from nlaprobe.config import (
    SCHEMA_PATH,
    apply_defaults,
    deep_merge,
    load_config,
    load_schema,
    primary_family,
    validate_checkpoint_entry,
    validate_config,
    validate_section,
)
from nlaprobe.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEFAULT = CONFIG_DIR / "config.yaml"
PAPER = CONFIG_DIR / "paper.yaml"


def _raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def cfg() -> dict[str, Any]:
    return _raw(DEFAULT)


def _fails(cfg: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, source="config.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------------------------------ schema


def test_schema_path_and_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA_PATH == CONFIG_DIR / "schema.yaml"
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")


def _walk(schema: dict[str, Any], where: str, out: list[tuple[str, dict, bool]]) -> None:
    """Collect (path, property schema, must_be_given) for every property at every level."""
    must_give = set(schema.get("required", []))
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        must_give |= set(branch.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        out.append((f"{where}.{name}", sub, name in must_give))
        _walk(sub, f"{where}.{name}", out)
    for pattern, sub in schema.get("patternProperties", {}).items():
        _walk(sub, f"{where}.<{pattern}>", out)
    if isinstance(schema.get("items"), dict):
        _walk(schema["items"], f"{where}[]", out)


def test_every_property_has_description_default_and_closed_objects() -> None:
    schema = load_schema()
    props: list[tuple[str, dict, bool]] = []
    _walk(schema, "", props)
    for name, sub in schema["$defs"].items():
        _walk(sub, f"$defs.{name}", props)
    assert len(props) > 40
    for path, sub, must_give in props:
        assert sub.get("description"), f"{path} has no description"
        if not must_give:
            assert "default" in sub, f"{path} has no default"
        if sub.get("type") == "object":
            assert sub.get("default") == {}, f"{path}: objects default to {{}}"
    objects = [sub for _, sub, _ in props if sub.get("type") == "object"]
    objects += [schema, *schema["$defs"].values()]
    objects += [p for _, sub, _ in props for p in sub.get("patternProperties", {}).values()]
    for sub in objects:
        assert sub.get("additionalProperties") is False


def test_every_default_is_valid_for_its_property() -> None:
    schema = load_schema()
    props: list[tuple[str, dict, bool]] = []
    _walk(schema, "", props)
    for path, sub, _ in props:
        if "default" not in sub or "$ref" in sub or path == ".families":
            continue  # checkpoint entries and families must be filled in by the config
        filled = apply_defaults(sub, copy.deepcopy(sub["default"]), root=schema)
        errors = list(Draft202012Validator({**sub, "$defs": schema["$defs"]}).iter_errors(filled))
        assert not errors, f"{path}: default {sub['default']!r} invalid: {errors[0].message}"


# --------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", [DEFAULT, PAPER], ids=["config", "paper"])
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config([path])
    assert set(cfg) <= {
        "run",
        "corpus",
        "sampling",
        "demo",
        "families",
        "metrics",
        "decode",
        "best_of_n",
        "verbatim",
        "ridge",
    }
    assert {"run", "corpus", "sampling", "families", "decode"} <= set(cfg)
    assert validate_config(cfg) == cfg  # idempotent: filled defaults are valid


def test_paper_config_values() -> None:
    cfg = load_config([PAPER])
    assert cfg["families"]["gemma"]["layer"] == 41
    assert cfg["families"]["gemma"]["av"]["id"] == "kitft/nla-gemma3-27b-L41-av"
    assert cfg["families"]["qwen"]["train_var"] == pytest.approx(0.7335)
    assert cfg["corpus"]["splits"]["ridge"] == {"start": 102000, "stop": 106000}
    assert cfg["decode"]["backend"] == "vllm"
    assert primary_family(cfg) == "gemma"


def test_defaults_are_filled(cfg: dict[str, Any]) -> None:
    del cfg["decode"]
    del cfg["sampling"]["min_position"]
    cfg["demo"] = None  # a section whose keys are all commented out
    out = validate_config(cfg)
    assert out["decode"] == {
        "backend": "hf",
        "max_new_tokens": 200,
        "batch_size": 16,
        "n_samples": 10,
        "temperature": 1.0,
        "tensor_parallel_size": 1,
    }
    assert out["sampling"]["min_position"] == 50
    assert out["sampling"]["device_map"] is None and out["sampling"]["gpus_per_job"] == 1
    assert out["sampling"]["positions_per_doc"] == 4  # given values are kept
    assert out["demo"]["num_layers"] == 4
    assert out["corpus"]["text_field"] == "text"
    assert out["corpus"]["dataset_config"] is None
    assert out["corpus"]["streaming"] is False
    entry = out["families"]["qwen"]["av"]
    assert entry == {
        "demo": "qwen",
        "dtype": "float32",
        "revision": "main",
        "trust_remote_code": False,
        "params_b": None,
    }
    assert out["families"]["gemma"]["train_var"] is None


def test_validate_does_not_mutate_input(cfg: dict[str, Any]) -> None:
    before = copy.deepcopy(cfg)
    validate_config(cfg)
    assert cfg == before


def test_minimal_config_gets_every_section() -> None:
    out = validate_config(
        {
            "families": {
                "llama": {
                    "layer": 3,
                    "base": {"id": "a/b"},
                    "av": {"path": "/m/av"},
                    "ar": {"path": "/m/ar"},
                }
            }
        }
    )
    assert out["run"] == {
        "seed": 42,
        "device": "auto",
        "primary_family": None,
        "allow_floating_revisions": False,
    }
    assert out["corpus"]["splits"]["eval"] == {"start": 0, "stop": 80}
    assert out["families"]["llama"]["adjacent_layers"] == []
    assert out["families"]["llama"]["base"]["dtype"] == "bfloat16"
    assert primary_family(out) == "llama"


def test_primary_family_defaults_to_first(cfg: dict[str, Any]) -> None:
    cfg["run"]["primary_family"] = None
    assert primary_family(validate_config(cfg)) == "qwen"


# ---------------------------------------------------------------------------- failing configs


def test_unknown_top_level_key(cfg: dict[str, Any]) -> None:
    _fails(cfg | {"sampler": {}}, "unknown key 'sampler'", "allowed: run, corpus")


def test_unknown_nested_key_typo(cfg: dict[str, Any]) -> None:
    cfg["sampling"]["postions_per_doc"] = 5
    msg = _fails(cfg, "config.yaml: unknown key 'sampling.postions_per_doc'")
    assert "did you mean 'positions_per_doc'" in msg


def test_unknown_key_in_checkpoint_entry(cfg: dict[str, Any]) -> None:
    cfg["families"]["gemma"]["ar"]["revison"] = "v1"
    _fails(cfg, "unknown key 'families.gemma.ar.revison'")


def test_bad_family_name(cfg: dict[str, Any]) -> None:
    cfg["families"]["Qwen-2"] = cfg["families"].pop("qwen")
    cfg["run"]["primary_family"] = None
    _fails(cfg, "unknown key 'families.Qwen-2'")


def test_wrong_type(cfg: dict[str, Any]) -> None:
    cfg["sampling"]["positions_per_doc"] = "five"
    msg = _fails(cfg)
    assert msg == (
        "config.yaml: key 'sampling.positions_per_doc': expected integer, got 'five' (str)"
    )


def test_float_is_not_an_integer(cfg: dict[str, Any]) -> None:
    cfg["corpus"]["shard_docs"] = 40.0
    _fails(cfg, "key 'corpus.shard_docs': expected integer")


def test_out_of_range_and_enum(cfg: dict[str, Any]) -> None:
    cfg["sampling"]["batch_size"] = 0
    cfg["run"]["device"] = "gpu"
    cfg["families"]["qwen"]["train_var"] = 0
    msg = _fails(
        cfg,
        "key 'sampling.batch_size': expected a value >= 1, got 0",
        "key 'run.device': expected one of auto, cpu, cuda, got 'gpu'",
        "key 'families.qwen.train_var': expected a value > 0",
    )
    lines = msg.splitlines()
    assert len(lines) == 3 and lines == sorted(lines)  # all errors, sorted, one per line


def test_checkpoint_entry_with_id_and_path(cfg: dict[str, Any]) -> None:
    cfg["families"]["qwen"]["av"] = {"id": "kitft/x", "path": "/ckpt/x"}
    _fails(cfg, "key 'families.qwen.av': give exactly one of id, path, demo (given: id, path)")


def test_checkpoint_entry_with_neither(cfg: dict[str, Any]) -> None:
    cfg["families"]["gemma"]["ar"] = {"dtype": "float32"}
    _fails(cfg, "key 'families.gemma.ar': give exactly one of id, path, demo (given: none)")


def test_missing_checkpoint_entry_and_layer(cfg: dict[str, Any]) -> None:
    del cfg["families"]["gemma"]["base"]
    del cfg["families"]["gemma"]["layer"]
    _fails(
        cfg,
        "key 'families.gemma.base': give exactly one of",
        "key 'families.gemma.layer': required key missing",
    )


def test_empty_families() -> None:
    _fails({"run": {"seed": 1}}, "key 'families': expected at least 1 entry")


def test_split_start_not_below_stop(cfg: dict[str, Any]) -> None:
    cfg["corpus"]["splits"]["ridge"] = {"start": 240, "stop": 240}
    _fails(cfg, "key 'corpus.splits.ridge': expected start < stop, got start=240, stop=240")


def test_unknown_split(cfg: dict[str, Any]) -> None:
    cfg["corpus"]["splits"]["test"] = {"start": 0, "stop": 1}
    _fails(cfg, "unknown key 'corpus.splits.test'")


def test_primary_family_not_in_families(cfg: dict[str, Any]) -> None:
    cfg["run"]["primary_family"] = "llama"
    _fails(cfg, "key 'run.primary_family'", "'llama'", "qwen, gemma")


def test_layer_beyond_demo_num_layers(cfg: dict[str, Any]) -> None:
    cfg["families"]["qwen"]["layer"] = 4
    cfg["families"]["gemma"]["adjacent_layers"] = [1, 7]
    _fails(
        cfg,
        "key 'families.qwen.layer': expected < demo.num_layers (4), got 4",
        "key 'families.gemma.adjacent_layers[1]': expected < demo.num_layers (4), got 7",
    )


def test_layer_range_not_checked_for_hub_models() -> None:
    assert load_config([PAPER])["families"]["gemma"]["layer"] == 41  # demo.num_layers is 4


def test_adjacent_layer_equal_or_negative(cfg: dict[str, Any]) -> None:
    cfg["families"]["qwen"]["adjacent_layers"] = [2, 1]
    cfg["families"]["gemma"]["adjacent_layers"] = [1, -1]
    cfg["decode"]["n_samples"] = "ten"
    # schema errors and semantic errors of other families/sections come in one report
    msg = _fails(
        cfg,
        "key 'families.qwen.adjacent_layers[0]': an adjacent layer must differ from layer 2",
        "key 'families.gemma.adjacent_layers[1]': expected a value >= 0",
        "key 'decode.n_samples': expected integer",
    )
    assert len(msg.splitlines()) == 3


def test_unknown_builtin_corpus(cfg: dict[str, Any]) -> None:
    cfg["corpus"]["dataset"] = "wikipedia"
    _fails(cfg, "key 'corpus.dataset': unknown builtin corpus 'wikipedia'")


def test_demo_heads_must_divide(cfg: dict[str, Any]) -> None:
    cfg["demo"]["hidden_size"] = 64
    cfg["demo"]["num_heads"] = 3
    _fails(cfg, "key 'demo.num_heads': must divide hidden_size 64")


def test_non_string_key(cfg: dict[str, Any]) -> None:
    cfg["decode"][True] = 1  # YAML 1.1 reads `on:` / `yes:` as True
    _fails(cfg, "key 'decode.True': keys must be strings")


def test_top_level_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="top level: expected a mapping"):
        validate_config([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config file"):
        load_config([DEFAULT, missing])


def test_unparsable_yaml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  seed: [42\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config([bad])


def test_duplicate_key_in_yaml(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("run:\n  seed: 1\n  seed: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dup\.yaml: not valid YAML.*duplicate key 'seed'"):
        load_config([dup])


def test_yaml_that_is_a_list(tmp_path: Path) -> None:
    lst = tmp_path / "list.yaml"
    lst.write_text("- run\n- corpus\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.yaml: top level: expected a mapping.*got list"):
        load_config([lst])


def test_errors_name_the_files(tmp_path: Path) -> None:
    over = tmp_path / "over.yaml"
    over.write_text("sampling:\n  max_length: long\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config([DEFAULT, over])
    assert str(info.value).startswith(f"{DEFAULT} + {over}: key 'sampling.max_length'")


def test_deep_merge_of_two_files(tmp_path: Path) -> None:
    over = tmp_path / "over.yaml"
    over.write_text(
        "sampling:\n  max_length: 128\n"
        "families:\n  qwen:\n    layer: 1\n    adjacent_layers: [0]\n",
        encoding="utf-8",
    )
    cfg = load_config([DEFAULT, over], overrides={"decode": {"n_samples": 2}})
    assert cfg["sampling"]["max_length"] == 128
    assert cfg["sampling"]["positions_per_doc"] == 4  # kept from the first file
    assert cfg["families"]["qwen"]["layer"] == 1
    assert cfg["families"]["qwen"]["adjacent_layers"] == [0]  # lists replace, not append
    assert cfg["families"]["qwen"]["av"]["demo"] == "qwen"  # untouched siblings survive
    assert cfg["decode"]["n_samples"] == 2
    assert cfg["decode"]["max_new_tokens"] == 48


def test_merged_checkpoint_entry_is_replaced_whole() -> None:
    base = {"families": {"qwen": {"av": {"demo": "qwen", "dtype": "float32"}, "layer": 2}}}
    over = {"families": {"qwen": {"av": {"id": "kitft/av"}}}}
    merged = deep_merge(base, over)
    assert merged["families"]["qwen"] == {"av": {"id": "kitft/av"}, "layer": 2}
    assert base["families"]["qwen"]["av"] == {"demo": "qwen", "dtype": "float32"}
    tweak = deep_merge(base, {"families": {"qwen": {"av": {"dtype": "bfloat16"}}}})
    assert tweak["families"]["qwen"]["av"] == {"demo": "qwen", "dtype": "bfloat16"}


def test_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n", encoding="utf-8")
    assert load_config([DEFAULT, empty]) == load_config([DEFAULT])


# -------------------------------------------------------------------------- sections, entries


def test_validate_section_fills_defaults() -> None:
    corpus = validate_section("corpus", {"dataset": "pydoc", "dataset_split": "topics"})
    assert corpus["splits"]["ridge"] == {"start": 80, "stop": 240}
    assert corpus["shard_docs"] == 50


def test_validate_section_errors_carry_the_section() -> None:
    with pytest.raises(ConfigError, match=r"key 'corpus\.splits\.eval\.start': expected integer"):
        validate_section("corpus", {"splits": {"eval": {"start": "0"}}})
    with pytest.raises(ConfigError, match=r"key 'corpus\.splits\.eval': expected start < stop"):
        validate_section("corpus", {"splits": {"eval": {"start": 9, "stop": 3}}})
    with pytest.raises(ConfigError, match="unknown config section 'extract'"):
        validate_section("extract", {})


def test_validate_section_families_resolves_refs() -> None:
    fams = validate_section(
        "families", {"x": {"layer": 0, "base": {"id": "a"}, "av": {"id": "b"}, "ar": {"id": "c"}}}
    )
    assert fams["x"]["ar"]["dtype"] == "bfloat16"


def test_validate_checkpoint_entry() -> None:
    entry = validate_checkpoint_entry({"path": "/ckpt/av"}, "families.qwen.av")
    assert entry == {
        "path": "/ckpt/av",
        "revision": "main",
        "dtype": "bfloat16",
        "trust_remote_code": False,
        "params_b": None,
    }
    with pytest.raises(
        ConfigError, match=r"'families\.qwen\.av': give exactly one of id, path, demo"
    ):
        validate_checkpoint_entry({"id": "a", "demo": "qwen"}, "families.qwen.av")
    with pytest.raises(ConfigError, match=r"'families\.qwen\.av\.dtype': expected one of"):
        validate_checkpoint_entry({"id": "a", "dtype": "fp8"}, "families.qwen.av")


def test_apply_defaults_follows_pattern_properties_and_refs() -> None:
    schema = load_schema()
    out = apply_defaults(schema, {"families": {"f": {"layer": 1, "av": {"id": "a"}}}})
    fam = out["families"]["f"]
    assert fam["adjacent_layers"] == []
    assert fam["av"]["revision"] == "main"
    assert fam["base"] == {
        "revision": "main",
        "dtype": "bfloat16",
        "trust_remote_code": False,
        "params_b": None,
    }
    assert out["sampling"]["positions_per_doc"] == 5


def test_validate_section_families_semantic_check() -> None:
    fam = {
        "layer": 1,
        "adjacent_layers": [1],
        "base": {"id": "a"},
        "av": {"id": "b"},
        "ar": {"id": "c"},
    }
    with pytest.raises(
        ConfigError, match=r"'families\.x\.adjacent_layers\[0\]': an adjacent layer"
    ):
        validate_section("families", {"x": fam})


def test_unknown_top_level_key_does_not_hide_semantic_errors(cfg: dict[str, Any]) -> None:
    cfg["extra"] = 1
    cfg["run"]["primary_family"] = "llama"
    _fails(cfg, "unknown key 'extra'", "key 'run.primary_family'")


def test_demo_base_models_validate_and_lift_the_tiny_layer_bound() -> None:
    cfg = load_config([DEFAULT])
    cfg["demo"]["base_models"] = {"qwen": {"id": "Qwen/Qwen2.5-0.5B", "revision": "abc"}}
    cfg["families"]["qwen"]["layer"] = 12  # beyond demo.num_layers: checked at build time
    cfg["families"]["qwen"]["adjacent_layers"] = [11, 13]
    out = validate_config(cfg)
    assert out["demo"]["base_models"] == {
        "qwen": {"id": "Qwen/Qwen2.5-0.5B", "revision": "abc"},
        "gemma": None,  # the default: a tiny model
    }
    cfg["families"]["gemma"]["layer"] = 12  # the gemma demo is still a tiny model
    with pytest.raises(ConfigError, match=r"families.gemma.layer.*demo.num_layers"):
        validate_config(cfg)
    cfg["families"]["gemma"]["layer"] = 2
    cfg["demo"]["base_models"]["llama"] = {"id": "x"}
    with pytest.raises(ConfigError, match="llama"):
        validate_config(cfg)
    del cfg["demo"]["base_models"]["llama"]
    cfg["demo"]["base_models"]["qwen"] = {"id": "x", "dtype": "float8"}
    with pytest.raises(ConfigError, match="demo.base_models.qwen"):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ridge.alphas", [float("nan")]),
        ("ridge.rbf_gammas", [1.0, float("inf")]),
        ("ridge.val_fraction", float("nan")),
        ("decode.temperature", float("nan")),
        ("metrics.alpha", float("-inf")),
    ],
)
def test_non_finite_numbers_are_refused(cfg: dict[str, Any], key: str, value: Any) -> None:
    """NaN passes every bound of JSON Schema (each comparison with it is false): the number type
    itself is finite-only, so YAML's .nan/.inf and JSON's NaN stop at validation."""
    section, name = key.split(".")
    cfg.setdefault(section, {})[name] = value
    _fails(cfg, f"key '{key}", "expected a finite number")


def test_stage_parameters_follow_the_config_schema() -> None:
    from nlaprobe.config import validate_params

    fields = {"batch_size": "decode.batch_size", "seed": "run.seed", "layer": "families.*.layer"}
    assert validate_params({"layer": 3}, fields, source="--params") == {
        "batch_size": 16,
        "seed": 42,
        "layer": 3,
    }
    for raw, needle in (
        ({"layer": 3, "batch_size": -1}, "key 'batch_size': expected a value >= 1, got -1"),
        ({"layer": 3, "seed": "42"}, "key 'seed': expected integer, got '42' (str)"),
        ({"layer": 3, "batch": 4}, "unknown key 'batch'"),
        ({}, "key 'layer': required key missing (config key families.*.layer)"),
        ({"layer": 3, "seed": "\ud800"}, "key 'seed': contains a lone surrogate"),
        ([1], "expected a JSON object of parameters"),
    ):
        with pytest.raises(ConfigError) as info:
            validate_params(raw, fields, source="--params")
        assert str(info.value).startswith("--params: ") and needle in str(info.value), info.value


# ------------------------------------------------------------------------- jobs on several GPUs


def test_gpus_per_job_keys_validate(cfg):
    cfg["run"]["device"] = "cuda"
    cfg["decode"].update(backend="vllm", tensor_parallel_size=4)
    cfg["sampling"].update(device_map="auto", gpus_per_job=2)
    out = validate_config(cfg)
    assert out["decode"]["tensor_parallel_size"] == 4
    assert (out["sampling"]["device_map"], out["sampling"]["gpus_per_job"]) == ("auto", 2)


def test_tensor_parallel_needs_vllm_and_a_gpu(cfg):
    cfg["run"]["device"] = "cpu"
    cfg["decode"].update(backend="hf", tensor_parallel_size=2)
    _fails(
        cfg,
        "key 'decode.tensor_parallel_size': 2 GPUs per decode need decode.backend vllm",
        "key 'decode.tensor_parallel_size': 2 GPUs per job need run.device cuda or auto, got 'cpu'",
    )
    cfg["decode"]["tensor_parallel_size"] = 0
    _fails(cfg, "decode.tensor_parallel_size")


def test_gpus_per_extraction_need_device_map_auto(cfg):
    cfg["sampling"]["gpus_per_job"] = 2
    _fails(cfg, "key 'sampling.gpus_per_job': 2 GPUs per extraction need sampling.device_map auto")
    cfg["sampling"].update(gpus_per_job=1, device_map="balanced")
    _fails(cfg, "sampling.device_map")


def test_device_map_null_from_the_command_line():
    from nlaprobe.config import workflow_config

    out = workflow_config(DEFAULT, [], {"sampling": {"device_map": "null", "gpus_per_job": "1"}})
    assert out["sampling"]["device_map"] is None and out["sampling"]["gpus_per_job"] == 1
    out = workflow_config(DEFAULT, [], {"sampling": {"device_map": "auto"}})
    assert out["sampling"]["device_map"] == "auto"
