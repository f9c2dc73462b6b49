"""Planning at scale: our `snakemake -n` beside Snakemake's own floor on the same DAG.

Copies the workflow into a temporary folder, pins config/paper.yaml offline (made-up commit
shas, the same text edit `nlaprobe pin` makes; planning resolves none of them) and widens the
evaluation split to --shards shards of 50 documents with a `--config` override. It then times
`snakemake -n <target>` there, beside a trivial Snakefile with the same rules, the same output
patterns (read from the loaded workflow, wildcard constraints included) and, job by job, the
same input files (read from our dry run's job listing), whose only work is a table lookup per
job and `touch` as its shell: the same DAG, so its time is what Snakemake itself needs for it.
Both run with the workflow's default profile (profiles/default). Runs alternate and the best
of --repeats counts; the job counts of both must be equal, or the script stops.

Every `snakemake` start also pays a fixed cost of its own, printed as a third row: the time of
`snakemake --version` (on a machine with Slurm's client tools but no reachable controller, the
Slurm executor plugin waits ~9 s for `scontrol` at import). The ratio is printed with and
without it.

    python benchmarks/plan_scale.py [--shards 1000] [--target results/transfer_matrix.json]
        [--repeats 1] [--profile FILE] [--before OTHER_CHECKOUT]

--before times another checkout's workflow on the same DAG, alternating with ours (e.g. the
commit before a change: `git archive <commit> | tar -x -C /tmp/before`).

--profile FILE additionally runs our dry run once under cProfile and writes its stats to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "profiles", "envs")
SHARD_DOCS = 50  # the paper config's shard size
TARGET_RATIO = 1.5
TARGET_SECONDS = 20.0
LAST_CPU = [0.0]  # CPU seconds of the last `run`
LOAD_START = ""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=1000, help="evaluation shards of 50 documents")
    p.add_argument(
        "--target",
        default="results/transfer_matrix.json",
        help="what to plan (the issue's measurement: results/transfer_matrix.json; 'all' for "
        "the whole study)",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each; the best counts")
    p.add_argument("--profile", type=Path, help="also write cProfile stats of our dry run here")
    p.add_argument(
        "--before",
        type=Path,
        help="another checkout of this repository (e.g. `git worktree add /tmp/before main`): "
        "its workflow and package are timed too, alternating with ours, on the same DAG",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folders")
    return p.parse_args()


def env(repo: Path = REPO) -> dict[str, str]:
    """The environment of a Snakemake run of `repo`'s workflow: its package first."""
    workflow = str(repo / "workflow")
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": workflow if not path else f"{workflow}{os.pathsep}{path}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }


def run(cwd: Path, *args: str, repo: Path = REPO) -> tuple[float, str]:
    """Wall time and output (stdout and stderr) of `python -m snakemake ARGS` in `cwd`, with
    `repo`'s package; its CPU time (user + system of the child) is added to CPU_SECONDS under
    the same key as the wall time (the last run's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} in {cwd} failed:\n{proc.stdout[-4000:]}")
    return seconds, proc.stdout


def make_ours(
    root: Path, shards: int, repo: Path = REPO, name: str = "ours"
) -> tuple[Path, list[str]]:
    """The workflow with a pinned paper config; returns the folder and the Snakemake arguments
    that widen the eval split to `shards` shards."""
    sys.path.insert(0, str(REPO / "workflow"))
    from nlaprobe.config import floating_revisions, load_config, read_config_file
    from nlaprobe.pin import pin_text

    wd = root / name
    wd.mkdir()
    for item in WORKFLOW_FILES:
        src = repo / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, wd / item)
    paper = wd / "config" / "paper.yaml"
    floating = floating_revisions(load_config([paper]))
    pins = {key: (rev, f"{i:040x}") for i, (key, _repo, _kind, rev) in enumerate(floating)}
    pinned = wd / "config" / "paper.pinned.yaml"
    pinned.write_text(pin_text(paper.read_text(), pins, source=str(paper)))
    raw = read_config_file(pinned)
    if raw["corpus"]["shard_docs"] != SHARD_DOCS:
        sys.exit(f"config/paper.yaml's shard_docs is {raw['corpus']['shard_docs']}, not 50")
    start = raw["corpus"]["splits"]["eval"]["start"]
    stop = start + shards * SHARD_DOCS
    if stop > raw["corpus"]["splits"]["ridge"]["start"]:
        # the widened eval range must not overlap the ridge documents: move the ridge split on
        ridge = raw["corpus"]["splits"]["ridge"]
        width = ridge["stop"] - ridge["start"]
        split = f"eval: {{start: {start}, stop: {stop}}}, ridge: {{start: {stop}, stop: {stop + width}}}"
    else:
        split = f"eval: {{start: {start}, stop: {stop}}}"
    args = [
        "--configfile",
        "config/paper.pinned.yaml",
        "--config",
        f"corpus={{splits: {{{split}}}}}",
    ]
    return wd, args


def jobs_of(listing: str) -> list[dict]:
    """The jobs of a dry run's listing: rule, inputs, outputs."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \S+:\n)", listing):
        m = re.match(r"\s*(?:local)?rule (\S+):\n", block)
        if not m:
            continue
        fields = dict(re.findall(r"^    (input|output): (.*)$", block, flags=re.M))
        jobs.append(
            {
                "rule": m.group(1),
                "input": fields["input"].split(", ") if "input" in fields else [],
                "output": fields["output"].split(", ") if "output" in fields else [],
            }
        )
    return jobs


def total_jobs(listing: str) -> int:
    m = re.search(r"^total\s+(\d+)$", listing, flags=re.M)
    if not m:
        sys.exit("no job total in the dry run's output")
    return int(m.group(1))


def rule_outputs(wd: Path, args: list[str]) -> dict[str, list[tuple[str | None, str, bool]]]:
    """Every rule's outputs as (name, pattern with its wildcard constraints, is a directory),
    from the loaded workflow (Snakemake's API, in a child process so that the workflow's
    imports and working directory stay out of this one)."""
    code = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from snakemake.api import SnakemakeApi
        from snakemake.cli import parse_config
        from snakemake.io import strip_wildcard_constraints
        from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

        configfile, config = sys.argv[1], sys.argv[2]
        with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
            wf = api.workflow(
                resource_settings=ResourceSettings(),
                config_settings=ConfigSettings(
                    configfiles=[Path(configfile)], config=parse_config([config])
                ),
                snakefile=Path("Snakefile"),
                workdir=Path("."),
            )
            out = {}
            for rule in wf._workflow.rules:
                ranges = {
                    start: (n, start + 1 if end is None else end)
                    for n, (start, end) in rule.output._names.items()
                }
                groups, i = [], 0
                while i < len(rule.output):
                    name, end = ranges.get(i, (None, i + 1))
                    files = rule.output[i:end]
                    groups.append([name, [str(f) for f in files], bool(files[0].is_directory)])
                    i = end
                first = strip_wildcard_constraints(str(rule.output[0])) if rule.output else None
                out[rule.name] = {"groups": groups, "first": first}
        print(json.dumps(out))
        """
    )
    configfile, config = args[1], args[3]
    proc = subprocess.run(
        [sys.executable, "-c", code, configfile, config],
        cwd=wd,
        env=env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"reading the rules failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_floor(root: Path, outputs: dict, jobs: list[dict]) -> Path:
    """The trivial Snakefile of the same DAG: per rule its output patterns, inputs looked up in
    a table keyed by the job's first output, `touch` as the shell."""
    wd = root / "floor"
    (wd / "profiles").mkdir(parents=True)
    shutil.copytree(REPO / "profiles" / "default", wd / "profiles" / "default")
    table: dict[str, dict[str, list[str]]] = {}
    for job in jobs:
        if job["output"]:
            table.setdefault(job["rule"], {})[job["output"][0]] = job["input"]
    (wd / "jobs.json").write_text(json.dumps(table))
    all_inputs = [i for job in jobs if job["rule"] == "all" for i in job["input"]]
    lines = [
        "import json",
        "",
        'JOBS = json.load(open("jobs.json"))',
        "",
        "",
        *([f"rule all:\n    input: {all_inputs!r}", "", ""] if all_inputs else []),
        "def inputs(rule, first):",
        "    return lambda w: JOBS[rule][first.format(**w)]",
        "",
        "",
    ]
    for rule, outs in outputs.items():
        if rule == "all":
            continue
        lines.append(f"rule {rule}:")
        if rule in table:
            lines.append(f"    input: inputs({rule!r}, {outs['first']!r})")
        lines.append("    output:")
        for name, patterns, is_dir in outs["groups"]:
            value = f"directory({patterns[0]!r})" if is_dir else repr(patterns[0])
            if len(patterns) > 1:
                value = repr(patterns)
            lines.append(f"        {name}={value}," if name else f"        {value},")
        lines.append('    shell: "mkdir -p $(dirname {output[0]}) && touch {output}"')
        lines.append("")
    (wd / "Snakefile").write_text("\n".join(lines) + "\n")
    return wd


def main() -> None:
    global LOAD_START
    args = parse_args()
    LOAD_START = f"{os.getloadavg()[0]:.1f}"
    root = Path(tempfile.mkdtemp(prefix="plan-scale-"))
    try:
        ours, config_args = make_ours(root, args.shards)
        target = [] if args.target == "all" else [args.target]
        dry = [*target, "-n", *config_args]
        seconds, listing = run(ours, *dry)
        first_cpu = LAST_CPU[0]
        jobs = jobs_of(listing)
        n_jobs = total_jobs(listing)
        if len(jobs) != n_jobs:
            sys.exit(f"parsed {len(jobs)} jobs from the listing, Snakemake counts {n_jobs}")
        floor = make_floor(root, rule_outputs(ours, config_args), jobs)
        floor_dry = [*target, "-n"]
        _, floor_listing = run(floor, *floor_dry)
        if total_jobs(floor_listing) != n_jobs:
            sys.exit(f"the floor plans {total_jobs(floor_listing)} jobs, ours {n_jobs}")

        before = None
        if args.before:
            before, _ = make_ours(root, args.shards, args.before.resolve(), "before")
            if total_jobs(run(before, *dry, repo=args.before.resolve())[1]) != n_jobs:
                sys.exit(f"{args.before} plans another number of jobs than ours")
        inf = float("inf")
        best = {"ours": seconds, "floor": inf, "startup": inf, "before": inf}
        cpu = {"ours": first_cpu, "floor": inf, "startup": inf, "before": inf}

        def measure(key: str, wd: Path, *a: str, repo: Path = REPO) -> None:
            best[key] = min(best[key], run(wd, *a, repo=repo)[0])
            cpu[key] = min(cpu[key], LAST_CPU[0])

        for i in range(args.repeats):
            if i:
                measure("ours", ours, *dry)
            if before is not None:
                measure("before", before, *dry, repo=args.before.resolve())
            measure("floor", floor, *floor_dry)
            measure("startup", floor, "--version")

        if args.profile:
            proc = subprocess.run(
                [sys.executable, "-m", "cProfile", "-o", str(args.profile.resolve())]
                + ["-m", "snakemake", *dry],
                cwd=ours,
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if proc.returncode != 0:
                sys.exit("the profiled run failed")

        rows = [("ours (snakemake -n)", "ours")]
        if before is not None:
            rows.append((f"before ({args.before})", "before"))
        rows += [
            ("floor (trivial Snakefile)", "floor"),
            ("startup (snakemake --version)", "startup"),
        ]
        print(f"eval shards: {args.shards} ({args.shards * SHARD_DOCS} documents)")
        print(f"target: {args.target}; jobs planned: {n_jobs} (ours and the floor)")
        print(f"repeats: {args.repeats} (best of each; runs alternate)")
        print(f"load average before/after: {LOAD_START} / {os.getloadavg()[0]:.1f}")
        print(f"{'':32}{'wall s':>8}{'wall - startup':>16}{'CPU s':>8}{'CPU - startup':>15}")
        for label, key in rows:
            net = "" if key == "startup" else f"{best[key] - best['startup']:16.2f}"
            net_cpu = "" if key == "startup" else f"{cpu[key] - cpu['startup']:15.2f}"
            print(f"{label:32}{best[key]:8.2f}{net:>16}{cpu[key]:8.2f}{net_cpu:>15}")

        def ratio(a: str, b: str) -> str:
            w = (best[a] - best["startup"]) / max(best[b] - best["startup"], 1e-9)
            c = (cpu[a] - cpu["startup"]) / max(cpu[b] - cpu["startup"], 1e-9)
            return f"{best[a] / best[b]:.2f}x wall, {w:.2f}x wall - startup, {c:.2f}x CPU - startup"

        print(f"ours / floor: {ratio('ours', 'floor')} (target <= {TARGET_RATIO}x)")
        if before is not None:
            print(f"before / floor: {ratio('before', 'floor')}")
            print(f"before / ours: {ratio('before', 'ours')}")
        print(
            f"ours: {best['ours']:.1f} s wall, {cpu['ours']:.1f} s CPU (target < {TARGET_SECONDS:.0f} s)"
        )
        if args.profile:
            print(f"cProfile stats of our dry run: {args.profile}")
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
