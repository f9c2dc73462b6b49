# nlaprobe: the experiment DAG. Rules are thin: every job calls `python -m nlaprobe <stage>`;
# all logic (validation, tags, paths, parameters) lives in workflow/nlaprobe and is unit-tested.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))

from nlaprobe.config import workflow_config
from nlaprobe.aggregates import figure_names, names as aggregate_names
from nlaprobe.plan import Plan, config_json, shard_count, shard_folder, to_json
from nlaprobe.quarantine import release_from_storage

# `--configfile X.yaml` replaces the embedded default; `--config k=v` refines whichever config
# is in use (told apart by what Snakemake was given, not by the keys present). Validated, with
# floating hub revisions refused unless run.allow_floating_revisions (see `nlaprobe pin`).
_validated = workflow_config(
    os.path.join(workflow.basedir, "config/config.yaml"),
    workflow.config_settings.configfiles,
    workflow.config_settings.config,
)
config.clear()
config.update(_validated)
P = Plan(config)

# Jobs run the package of the interpreter that runs Snakemake (e.g. .venv), unless a conda env
# from envs/ is active for the job (--use-conda), which puts its own python first. PATH is
# declared so that executors which pass variables explicitly hand the same search path on.


envvars:
    "PATH",


os.environ["PATH"] = (
    os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
)


wildcard_constraints:
    split="eval|ridge",
    shard=r"\d{5}",
    btag=r"[0-9a-f]{10}",
    ctag=r"[0-9a-f]{10}",
    dtag=r"[0-9a-f]{10}",
    style="qwen|gemma",
    avtag=r"[0-9a-f]{10}",
    artag=r"[0-9a-f]{10}",
    cond=r"greedy|ban_dq|ban_dq_sq|sample_t1|greedy_L\d+",
    variant=r"[a-z_]+",
    rtag=r"[0-9a-f]{10}",
    src="|".join(P.families),
    dst="|".join(P.families),
    n=r"\d+",
    stag=r"[0-9a-f]{10}",
    itag=r"[0-9a-f]{10}",
    name=r"[a-z_]+",


# A job that finds an input corrupt (its SHA-256 or page checksums do not match) sets it aside
# and fails; here, at the end of that run, the object behind it is removed from remote storage
# too, so that the next run rebuilds it instead of retrieving it again (nlaprobe.quarantine).
onerror:
    release_from_storage(workflow)


rule all:
    input:
        P.report_inputs(),
        "results/report.html",


include: "rules/demo.smk"
include: "rules/corpus.smk"
include: "rules/extract.smk"
include: "rules/decode.smk"
include: "rules/score.smk"
include: "rules/redact.smk"
include: "rules/ridge.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"
