"""No command line grows with the data (issue 12): every rule's job command, as Snakemake formats
it, stays below 64 KiB for the paper config widened to 1,000 evaluation shards.

Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN), and Snakemake runs a job as
`bash -c '<the whole command>'`, so the whole command is one argument. Before aggregate jobs
planned their own spec, `transfer_matrix`'s command was 633 KB at 1,000 shards.
"""

from __future__ import annotations

import shlex

import pytest
from snakemake_jobs import REPO, job_shell, parsed_workflow, shell_rules

from nlaprobe.aggregates import names as aggregate_names
from nlaprobe.cli import build_parser
from nlaprobe.plan import SPLITS, VARIANTS, shard_paths

LIMIT = 64 * 1024
EVAL_SHARDS = 1000
SHA = "0123456789abcdef0123456789abcdef01234567"


def widened_paper() -> dict:
    """`--config` values on top of config/paper.yaml: 1,000 eval shards of 50 documents (50,000
    documents, as the issue measured) and every hub revision pinned."""
    roles = ("base", "av", "ar")
    return {
        "corpus": {
            "revision": SHA,
            "splits": {"eval": {"start": 100_000, "stop": 100_000 + 50 * EVAL_SHARDS}},
        },
        "families": {f: {r: {"revision": SHA} for r in roles} for f in ("gemma", "qwen")},
    }


def targets(plan) -> dict[str, list[str]]:
    """Per rule, the outputs of its jobs with the longest commands: every family, condition,
    variant, direction and aggregate, at the last shard and the largest ridge size (a shard
    index or a size only changes digits)."""
    fams = plan.families
    last = {split: plan.shards(split)[-1] for split in SPLITS}
    greedy_variants = [v for v in VARIANTS if v != "full"]
    out: dict[str, list[str]] = {
        "corpus": [plan.corpus_shard(s, last[s]) for s in SPLITS],
        "extract": [plan.activation_shard(f, s, last[s]) for f in fams for s in SPLITS],
        "positions": [plan.positions_shard(s, last[s]) for s in SPLITS],
        "decode": [plan.decode_shard(f, c, last["eval"]) for f in fams for c in plan.conditions(f)],
        "redact": [plan.redacted_shard(f, v, last["eval"]) for f in fams for v in greedy_variants],
        "score": [
            plan.score_shard(av, ar, c, v, last["eval"])
            for av in fams
            for ar in fams
            for c in plan.conditions(av)
            for v in (VARIANTS if c == "greedy" else ("full",))
        ],
        "ridge": [
            plan.ridge_file(a, b, max(plan.ridge_sizes()), "json")
            for a, b in plan.ridge_directions()
        ],
        "stamp": [plan.stamp(name) for name in aggregate_names()],
        "record": [plan.aggregate_record(name) for name in aggregate_names()],
        "report": ["results/report.html"],
    }
    for name in aggregate_names():
        out[name] = [plan.aggregate_file(name)]
    return out


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> tuple[dict[str, list[str]], set[str], int, dict]:
    """{rule: [command of each target]}, the rules with a shell command, the eval shards, and
    the first ridge job's (command, input lists)."""
    workdir = tmp_path_factory.mktemp("wide")
    paper = REPO / "config" / "paper.yaml"
    with parsed_workflow(workdir, [paper], widened_paper()) as wf:
        plan = wf.globals["P"]
        out = {rule: [job_shell(wf, rule, t) for t in outs] for rule, outs in targets(plan).items()}
        a, b = plan.ridge_directions()[0]
        ridge = plan.ridge_job(plan.ridge_tag(), a, b, max(plan.ridge_sizes())).inputs
        return out, shell_rules(wf), plan.n_shards("eval"), ridge


def test_the_widened_paper_config_has_1000_eval_shards(commands):
    assert commands[2] == EVAL_SHARDS


def test_every_rule_with_a_shell_command_is_measured(commands):
    measured, rules = commands[:2]
    # build_demo has no job here (the paper's checkpoints are hub ids): it is measured below
    assert set(measured) == rules - {"build_demo"}
    assert all(measured.values())


def test_every_job_command_is_below_64_kib(commands):
    measured = commands[0]
    sizes = {rule: max(len(c.encode()) for c in cmds) for rule, cmds in measured.items()}
    too_long = {rule: n for rule, n in sizes.items() if n >= LIMIT}
    assert not too_long, f"commands of {LIMIT} bytes or more: {too_long}"
    # the aggregates and ridge list no shard: their commands name no shard file
    for rule in (*aggregate_names(), "ridge"):
        for cmd in measured[rule]:
            assert "shard-" not in cmd, (rule, cmd[:300])
    print("\nlongest command per rule (bytes, 1,000 eval shards):", sizes)


def test_the_demo_build_command_is_bounded_too(tmp_path):
    with parsed_workflow(tmp_path / "default") as wf:
        plan = wf.globals["P"]
        cmds = [job_shell(wf, "build_demo", plan.demo_dir(s)) for s in plan.demo_styles()]
    assert cmds and max(len(c.encode()) for c in cmds) < LIMIT


def test_the_ridge_command_reads_the_same_shards_as_its_input(commands):
    """The folder + count the ridge command passes expand to exactly the job's input lists."""
    cmd, job = commands[0]["ridge"][0], commands[3]
    argv = shlex.split(cmd.split(" > ")[0])[3:]  # after `python -m nlaprobe`
    args = build_parser().parse_args(argv)
    assert shard_paths(args.src_ridge, args.ridge_shards) == job["src_ridge"]
    assert shard_paths(args.dst_ridge, args.ridge_shards) == job["dst_ridge"]
    assert shard_paths(args.src_eval, args.eval_shards) == job["src_eval"]
    assert shard_paths(args.dst_eval, args.eval_shards) == job["dst_eval"]
    assert args.eval_shards == EVAL_SHARDS
