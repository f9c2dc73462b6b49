"""nlaprobe.plan.identity: specs and tags, alone (no paths, no jobs, no Snakemake)."""

from __future__ import annotations

import hashlib
import json

import pytest
from plan_configs import CONFIGS, config

from nlaprobe.errors import ConfigError
from nlaprobe.plan import Plan
from nlaprobe.plan import identity as identity_module
from nlaprobe.plan.identity import ROLES, SPLITS, Identity, tag_of


@pytest.fixture(params=list(CONFIGS))
def name(request) -> str:
    return request.param


def all_tags(ids: Identity) -> dict:
    out = {f"corpus/{s}": ids.corpus_tag(s) for s in SPLITS}
    for fam in ids.families:
        out |= {f"checkpoint/{fam}/{r}": ids.checkpoint_tag(fam, r) for r in ROLES}
        out |= {f"activations/{fam}/{s}": ids.activation_tag(fam, s) for s in SPLITS}
        out[f"decode/{fam}"] = ids.decode_tag(fam)
        out[f"ar/{fam}"] = ids.ar_tag(fam)
    out |= {f"positions/{s}": ids.positions_tag(s) for s in SPLITS}
    out |= {f"demo/{s}": ids.demo_tag(s) for s in ids.demo_styles()}
    out["ridge"] = ids.ridge_tag()
    return out


def test_an_identity_alone_gives_the_tags_of_the_plan(name):
    cfg = config(name)
    alone = all_tags(Identity(cfg))
    assert alone == all_tags(Plan(cfg))
    assert len(set(alone.values())) == len(alone)  # every artifact kind has its own tag


def test_an_identity_knows_no_paths_and_no_jobs():
    """Identity is what determines an artifact: where it lives is nlaprobe.plan.layout's."""
    for method in ("activation_shard", "decode_shard", "family_for_decode_tag", "decode_job"):
        assert not hasattr(Identity, method) and hasattr(Plan, method), method


def test_tag_of_hashes_the_canonical_json():
    spec = {"b": [1, "é"], "a": {"y": 2, "x": None}}
    blob = '{"a":{"x":null,"y":2},"b":[1,"é"]}'.encode()
    assert tag_of(spec) == hashlib.sha256(blob).hexdigest()[:10]
    assert tag_of(json.loads(json.dumps(spec, sort_keys=True))) == tag_of(spec)


def test_known_specs_are_read_nowhere(monkeypatch):
    """An Identity given the specs of another (`identity()`) reads no checkpoint folder and no
    built-in corpus, and gives the same tags: how an aggregate job plans the DAG's paths."""
    cfg = config("default")  # the built-in corpus and demo builds: both read outside the config
    first = Identity(cfg)
    known = json.loads(json.dumps(first.identity()))
    assert {k[0] for k, _ in known} == {"checkpoint", "corpus", "demo"}

    def refuse(*args, **kwargs):
        raise AssertionError("read outside the config")

    monkeypatch.setattr(identity_module, "builtin_corpus_digest", refuse)
    monkeypatch.setattr(identity_module, "checkpoint_fingerprint", refuse)
    again = Identity(cfg, known=known)
    assert all_tags(again) == all_tags(first)
    assert again.identity() == first.identity()
    with pytest.raises(AssertionError, match="outside the config"):
        Identity(cfg)


def test_malformed_known_specs_are_refused():
    with pytest.raises(ConfigError, match=r"identity specs: expected \[\[kind, \.\.\.\], spec\]"):
        Identity(config("paper"), known=[[["model", "qwen"], {}]])


def test_what_the_config_asks_for(name):
    ids = Identity(config(name))
    for fam in ids.families:
        layer = ids.cfg["families"][fam]["layer"]
        assert ids.layers(fam)[0] == layer and layer not in ids.layers(fam)[1:]
        assert ids.conditions(fam)[4:] == [f"greedy_L{k}" for k in ids.layers(fam)[1:]]
    assert ids.primary in ids.families
