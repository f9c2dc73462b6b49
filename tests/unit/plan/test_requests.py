"""nlaprobe.plan.requests: resource requests and envs of the jobs, alone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from plan_configs import CONFIGS, config

from nlaprobe.errors import ConfigError
from nlaprobe.plan import Plan
from nlaprobe.plan.requests import REQUEST_WILDCARDS, Requests


@pytest.fixture(params=list(CONFIGS))
def name(request) -> str:
    return request.param


def test_requests_alone_give_the_summary_and_envs_of_the_plan(name):
    cfg = config(name)
    alone, plan = Requests(cfg), Plan(cfg)
    assert alone.resource_summary() == plan.resource_summary()
    assert (alone.decode_env(), alone.model_env()) == (plan.decode_env(), plan.model_env())
    assert {r: alone.rule_gpus(r) for r in REQUEST_WILDCARDS} == {
        r: plan.rule_gpus(r) for r in REQUEST_WILDCARDS
    }


def test_a_job_request_is_built_once_per_job(name):
    req = Requests(config(name))
    fam = req.families[0]
    w = SimpleNamespace(avtag=req.decode_tag(fam), cond="greedy", shard="00000")
    first = req.job_request("decode", w)
    # another shard of the same family and condition: the same request, not rebuilt
    assert req.job_request("decode", SimpleNamespace(**{**vars(w), "shard": "00001"})) is first
    assert req.job_threads("decode")(w) == first.threads
    assert req.job_resource("decode", "mem_mb")(w) == first.resources()["mem_mb"]
    with pytest.raises(ConfigError, match="no resource estimate for rule 'redact'"):
        req.job_request("redact", w)
