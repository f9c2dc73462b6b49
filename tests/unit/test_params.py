"""Stage parameters (issue 11): every stage's Params is parsed by one path
(nlaprobe.config.StageParams.from_json), takes its defaults from config/schema.yaml only, and
refuses an unknown or bad key with a ConfigError naming it."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from nlaprobe.config import StageParams, load_schema, schema_of
from nlaprobe.corpus import CorpusParams
from nlaprobe.decode import DecodeParams
from nlaprobe.demo import DemoParams
from nlaprobe.errors import ConfigError
from nlaprobe.extract import ExtractParams
from nlaprobe.ridge_stage import RidgeParams
from nlaprobe.score import ScoreParams

# each stage's Params and the least --params it accepts (required keys only)
MINIMAL = {
    CorpusParams: {},
    ExtractParams: {"layers": [2]},
    DecodeParams: {},
    ScoreParams: {},
    RidgeParams: {},
    DemoParams: {"layer": 1},
}


def schema_default(node: dict):
    """A property's default as the schema states it, with the defaults of an object's own
    properties filled in (read from the schema text, independently of nlaprobe.config)."""
    value = copy.deepcopy(node.get("default"))
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if "default" in sub:
                value.setdefault(key, schema_default(sub))
    return value


def plain(value):
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def config_keys(cls) -> dict[str, str]:
    """Field -> the config key whose schema it follows."""
    keys = dict(cls.FIELDS)
    if cls.SECTION is not None:
        section = load_schema()["properties"][cls.SECTION]["properties"]
        keys |= {k: f"{cls.SECTION}.{k}" for k in section}
    return keys


def test_every_stage_has_a_params():
    assert all(issubclass(cls, StageParams) for cls in MINIMAL)


@pytest.mark.parametrize("cls", MINIMAL, ids=lambda c: c.__name__)
def test_params_defaults_are_the_schema_defaults(cls):
    params = cls.from_json(MINIMAL[cls])
    keys = config_keys(cls)
    checked = 0
    for field in (f.name for f in dataclasses.fields(cls)):
        if field in MINIMAL[cls] or field not in keys:
            continue  # given, or not a config key (provenance, held_out)
        assert plain(getattr(params, field)) == schema_default(schema_of(keys[field])), field
        checked += 1
    assert checked >= 1
    # the dataclass itself holds no default: the schema is the only place they live
    assert all(
        f.default is dataclasses.MISSING is f.default_factory for f in dataclasses.fields(cls)
    ), cls.__name__


@pytest.mark.parametrize("cls", MINIMAL, ids=lambda c: c.__name__)
def test_params_refuse_an_unknown_key_naming_it(cls):
    with pytest.raises(ConfigError, match=r"bogus_key"):
        cls.from_json({**MINIMAL[cls], "bogus_key": 1})


@pytest.mark.parametrize(
    ("cls", "raw", "needle"),
    [
        (CorpusParams, {"shard_docs": -1}, "corpus.shard_docs"),
        (ExtractParams, {"layers": [2], "batch_size": 0}, "batch_size"),
        (ExtractParams, {"layers": []}, "layers"),
        (DecodeParams, {"temperature": "hot"}, "temperature"),
        (DecodeParams, {"backend": "hf", "tensor_parallel_size": 2}, "tensor_parallel_size"),
        (ScoreParams, {"batch_size": 0}, "batch_size"),
        (RidgeParams, {"kernels": ["poly"]}, "kernels"),
        (RidgeParams, {"provenance": [1]}, "provenance"),
        (DemoParams, {}, "layer"),
        (DemoParams, {"layer": 1, "train": {"av_lr": 0}}, "demo.train.av_lr"),
        (DemoParams, {"layer": 1, "num_heads": 3}, "demo.num_heads"),
        (DemoParams, {"layer": 1, "held_out": [[0]]}, "held_out"),
    ],
)
def test_params_refuse_a_bad_value_naming_its_key(cls, raw, needle):
    with pytest.raises(ConfigError, match=needle):
        cls.from_json(raw)


def test_params_refuse_a_non_object():
    for cls in MINIMAL:
        with pytest.raises(ConfigError, match=r"--params: expected a JSON object"):
            cls.from_json([1, 2])


def test_given_values_are_kept():
    p = DecodeParams.from_json({"backend": "vllm", "tensor_parallel_size": 4, "seed": 7})
    assert (p.backend, p.tensor_parallel_size, p.seed) == ("vllm", 4, 7)
    e = ExtractParams.from_json({"layers": [3, 1], "device_map": "auto"})
    assert e.layers == (3, 1) and e.device_map == "auto"
    d = DemoParams.from_json({"layer": 2, "held_out": [[0, 40]], "train": {"av_steps": 3}})
    assert d.held_out == ((0, 40),) and d.train["av_steps"] == 3 and d.train["ar_steps"] == 800
    assert d.sizes().hidden_size == 64 and d.train_settings().av_steps == 3
