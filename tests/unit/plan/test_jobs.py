"""nlaprobe.plan.jobs: one frozen Job per job, built once from its wildcards."""

from __future__ import annotations

import dataclasses
import json

import pytest
from plan_configs import CONFIGS, config

from nlaprobe.aggregates import names as aggregate_names
from nlaprobe.errors import ConfigError
from nlaprobe.plan import Plan
from nlaprobe.plan import identity as identity_module
from nlaprobe.plan.jobs import Job, Jobs, to_json


@pytest.fixture(params=list(CONFIGS))
def name(request) -> str:
    return request.param


def wildcards(jobs: Jobs, shard: str = "00000") -> dict[str, list[tuple]]:
    """Per builder, the wildcards of some of its jobs (every family, split and aggregate)."""
    fams = jobs.families
    stag = {a: jobs.stamp(a).rsplit("-", 1)[1].removesuffix(".json") for a in aggregate_names()}
    itag = {
        a: jobs.aggregate_record(a).rsplit("-", 1)[1].removesuffix(".json")
        for a in aggregate_names()
    }
    a, b = jobs.ridge_directions()[0]
    return {
        "corpus_job": [(jobs.corpus_tag(s), s) for s in ("eval", "ridge")],
        "demo_job": [(jobs.demo_tag(s), s) for s in jobs.demo_styles()],
        "extract_job": [(jobs.activation_tag(f, s), s, shard) for f in fams for s in ("eval",)],
        "decode_job": [(jobs.decode_tag(f), "greedy", shard) for f in fams],
        "redact_job": [(jobs.decode_tag(f), "prose_only", shard) for f in fams],
        "score_job": [
            (jobs.decode_tag(f), jobs.ar_tag(g), "greedy", "full", shard)
            for f in fams
            for g in fams
        ],
        "ridge_job": [(jobs.ridge_tag(), a, b, n) for n in jobs.ridge_sizes()],
        "stamp_job": [(n, stag[n]) for n in aggregate_names()],
        "record_job": [(n, itag[n]) for n in aggregate_names()],
    }


def every_job(jobs: Jobs) -> list[tuple[str, tuple, Job]]:
    return [
        (builder, args, getattr(jobs, builder)(*args))
        for builder, calls in wildcards(jobs).items()
        for args in calls
    ]


def test_a_job_is_frozen(name):
    for builder, _args, job in every_job(Jobs(config(name))):
        assert isinstance(job, Job), builder
        for fld in dataclasses.fields(Job):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(job, fld.name, "changed")
        assert not hasattr(job, "__dict__")  # no field can be added either (slots)


def test_a_job_is_built_once_per_wildcards(name):
    jobs = Jobs(config(name))
    for builder, args, job in every_job(jobs):
        assert getattr(jobs, builder)(*args) is job, (builder, args)
    # other wildcards, other jobs; a Jobs of the same config builds equal ones
    decode = jobs.decode_job(jobs.decode_tag(jobs.primary), "greedy", "00000")
    other = jobs.decode_job(jobs.decode_tag(jobs.primary), "greedy", "00001")
    assert other is not decode and other.inputs != decode.inputs
    fresh = Jobs(config(name))
    assert [j for _, _, j in every_job(fresh)] == [j for _, _, j in every_job(jobs)]


def test_jobs_alone_build_the_jobs_of_the_plan(name):
    cfg = config(name)
    assert [j for _, _, j in every_job(Jobs(cfg))] == [j for _, _, j in every_job(Plan(cfg))]


def test_a_params_job_passes_what_its_check_returns(name):
    """The corpus, demo, stamp and record jobs pass their checked parameters as canonical JSON."""
    jobs = Jobs(config(name))
    checks = {
        "corpus_job": jobs.corpus_params_for,
        "demo_job": jobs.demo_params_for,
        "stamp_job": jobs.stamp_params_for,
        "record_job": jobs.record_params_for,
    }
    for builder, args, job in every_job(jobs):
        if builder in checks:
            assert job.params == to_json(checks[builder](*args))
            assert job.inputs == {} and job.checkpoint == job.provenance == ""
    for kind in ("decode_job", "score_job", "extract_job"):
        for _, _args, job in [j for j in every_job(jobs) if j[0] == kind]:
            assert json.loads(job.checkpoint)["dtype"] and json.loads(job.provenance)


def test_a_job_the_config_does_not_produce_is_refused_every_time(name):
    jobs = Jobs(config(name))
    for _ in range(2):  # a refusal is not memoised as a job
        with pytest.raises(ConfigError, match="corpus tag '0000000000'"):
            jobs.corpus_job("0000000000", "eval")
        with pytest.raises(ConfigError, match="demo-0000000000"):
            jobs.demo_job("0000000000", "qwen")
        with pytest.raises(ConfigError, match="av-0000000000"):
            jobs.redact_job("0000000000", "prose_only", "00000")
        with pytest.raises(ConfigError, match="stamp fve_baseline-0000000000"):
            jobs.stamp_job("fve_baseline", "0000000000")
        with pytest.raises(ConfigError, match="input record fve_baseline-0000000000"):
            jobs.record_job("fve_baseline", "0000000000")


def test_jobs_are_built_once_and_tags_hashed_once(monkeypatch):
    """Snakemake asks for a job's inputs, params, threads and resources through several
    functions: the Plan builds each job once, and hashes each tag once, whatever the shards."""
    plan = Plan(config("paper"))
    calls = []
    real = identity_module.tag_of
    monkeypatch.setattr(identity_module, "tag_of", lambda spec: calls.append(1) or real(spec))

    def build(shards):
        for shard in shards:
            for fam in plan.families:
                dtag, atag = plan.decode_tag(fam), plan.ar_tag(fam)
                btag = plan.activation_tag(fam, "eval")
                job = plan.decode_job(dtag, "greedy", shard)
                assert plan.decode_job(dtag, "greedy", shard) is job
                assert plan.score_job(dtag, atag, "greedy", "full", shard) is plan.score_job(
                    dtag, atag, "greedy", "full", shard
                )
                assert plan.extract_job(btag, "eval", shard) is plan.extract_job(
                    btag, "eval", shard
                )

    build([f"{i:05d}" for i in range(3)])
    first = len(calls)
    # every tag of these jobs: per family activations, positions, decode, AR; corpus
    assert 0 < first <= 12
    build([f"{i:05d}" for i in range(3, 200)])
    assert len(calls) == first
    # a job's content does not depend on how often it was asked for
    fresh = Plan(config("paper"))
    dtag = fresh.decode_tag("qwen")
    assert fresh.decode_job(dtag, "greedy", "00007") == plan.decode_job(dtag, "greedy", "00007")
