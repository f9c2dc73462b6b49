"""`python -m nlaprobe <stage> ...` / `nlaprobe <stage> ...`: the only place that parses
arguments and sets up logging. Each stage hands validated, typed parameters to one package
function. Known errors (NlaprobeError) become one message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from nlaprobe.errors import ConfigError, CorruptFileError, NlaprobeError

log = logging.getLogger("nlaprobe")


def _json_arg(text: str, what: str, kind: type = dict, expected: str = "a JSON object"):
    """The JSON value of option --`what`, which must be a `kind` (described as `expected`)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--{what}: not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise ConfigError(f"--{what}: expected {expected}, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------- commands


def cmd_validate_config(args) -> int:
    from nlaprobe.config import floating_revisions, load_config, validate_config

    cfg = validate_config(load_config(args.files), source=", ".join(map(str, args.files)))
    floating = floating_revisions(cfg)
    if floating and not cfg["run"]["allow_floating_revisions"]:
        log.warning(
            "%d floating hub revision(s) (%s): the workflow refuses them; pin with "
            "`nlaprobe pin %s`",
            len(floating),
            ", ".join(key for key, *_ in floating),
            args.files[-1],
        )
    if args.print:
        sys.stdout.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    log.info("config OK: %s (families: %s)", ", ".join(args.files), ", ".join(cfg["families"]))
    return 0


def cmd_pin(args) -> int:
    from nlaprobe.pin import pin_config

    out = args.out or str(Path(args.config).with_name(Path(args.config).stem + ".pinned.yaml"))
    pinned = pin_config(args.config, out)
    for key, p in pinned.items():
        log.info("%s: %s %s@%s -> %s", key, p["type"], p["repo"], p["from"], p["sha"])
    log.info("wrote %s (%d revision(s) pinned)", out, len(pinned))
    return 0


def cmd_plan(args) -> int:
    from nlaprobe.config import load_config
    from nlaprobe.plan import scale_summary

    cfg = load_config(args.files)
    sys.stdout.write(json.dumps(scale_summary(cfg), indent=2) + "\n")
    return 0


def cmd_corpus(args) -> int:
    from nlaprobe.corpus import CorpusParams, build_corpus_shard

    params = CorpusParams.from_json(_json_arg(args.params, "params"))
    n = build_corpus_shard(params, args.split, args.shard, Path(args.out))
    log.info("wrote %d documents to %s", n, args.out)
    return 0


def cmd_extract(args) -> int:
    from nlaprobe.checkpoints import resolve_source
    from nlaprobe.config import validate_checkpoint_entry
    from nlaprobe.extract import ExtractParams, extract_shard

    params = ExtractParams.from_json(_json_arg(args.params, "params"))
    entry = validate_checkpoint_entry(_json_arg(args.checkpoint, "checkpoint"), "--checkpoint")
    src = resolve_source(entry, "base", args.demo_root or None)
    provenance = _json_arg(args.provenance, "provenance") if args.provenance else {}
    extract_shard(
        src,
        args.corpus,
        args.out,
        params,
        positions_in=args.positions or None,
        provenance=provenance,
        device=args.device,
    )
    return 0


def cmd_positions(args) -> int:
    from nlaprobe.extract import write_positions

    write_positions(args.activations, args.out)
    return 0


def _source(args, role: str):
    from nlaprobe.checkpoints import resolve_source
    from nlaprobe.config import validate_checkpoint_entry

    entry = validate_checkpoint_entry(_json_arg(args.checkpoint, "checkpoint"), "--checkpoint")
    return resolve_source(entry, role, args.demo_root or None)


def cmd_decode(args) -> int:
    from nlaprobe.decode import DecodeParams, decode_shard
    from nlaprobe.models.generation import parse_condition

    p = DecodeParams.from_json(_json_arg(args.params, "params"))
    try:
        cond = parse_condition(args.cond, n_samples=p.n_samples, temperature=p.temperature)
    except ValueError as e:
        raise ConfigError(f"--cond: {e}") from None
    decode_shard(
        _source(args, "av"),
        args.activations,
        args.out,
        cond,
        p,
        device=args.device,
        provenance=_json_arg(args.provenance, "provenance") if args.provenance else {},
    )
    return 0


def cmd_score(args) -> int:
    from nlaprobe.score import ScoreParams, check_variant, score_shard

    p = ScoreParams.from_json(_json_arg(args.params, "params") if args.params else {})
    score_shard(
        _source(args, "ar"),
        args.decodes,
        args.gold,
        args.out,
        p,
        variant=check_variant(args.variant),
        device=args.device,
        provenance=_json_arg(args.provenance, "provenance") if args.provenance else {},
    )
    return 0


def cmd_aggregate(args) -> int:
    from nlaprobe.aggregates import get
    from nlaprobe.aggregates.stage import run_aggregate, run_planned
    from nlaprobe.config import validate_config
    from nlaprobe.io import read_json

    get(args.name)
    cfg = _json_arg(args.config, "config") if args.config else {}
    if args.spec_file:
        try:
            spec = read_json(args.spec_file)
        except NlaprobeError as e:
            raise ConfigError(f"--spec-file: {e}") from None
        if not isinstance(spec, dict):
            raise ConfigError(
                f"--spec-file {args.spec_file}: expected a JSON object, got {type(spec).__name__}"
            )
        run_aggregate(args.name, spec, args.out, cfg, record=args.record)
        return 0
    if not args.config or args.identity is None:
        raise ConfigError(
            "aggregate: give --config and --identity (as the rules do: the spec is planned from "
            "them), or --spec-file"
        )
    identity = _json_arg(
        args.identity, "identity", list, "a JSON list (nlaprobe.plan.Plan.identity)"
    )
    cfg = validate_config(cfg, source="--config")
    run_planned(args.name, cfg, identity, args.root, args.out, record=args.record)
    return 0


def cmd_redact(args) -> int:
    from nlaprobe.redact import redact_shard

    redact_shard(args.decodes, args.variant, args.out)
    return 0


def cmd_ridge(args) -> int:
    from nlaprobe.plan import shard_paths
    from nlaprobe.ridge_stage import RidgeParams, ridge_stage

    params = RidgeParams.from_json(_json_arg(args.params, "params"))
    for flag, n in (("--ridge-shards", args.ridge_shards), ("--eval-shards", args.eval_shards)):
        if n < 1:
            raise ConfigError(f"{flag}: expected a number of shards >= 1, got {n}")
    ridge_stage(
        params,
        n=args.n,
        src_ridge=shard_paths(args.src_ridge, args.ridge_shards),
        dst_ridge=shard_paths(args.dst_ridge, args.ridge_shards),
        src_eval=shard_paths(args.src_eval, args.eval_shards),
        dst_eval=shard_paths(args.dst_eval, args.eval_shards),
        out_json=args.out_json,
        out_npz=args.out_npz,
        device=args.device,
    )
    return 0


def cmd_report(args) -> int:
    from nlaprobe.report import write_report

    inputs = _json_arg(args.inputs, "inputs", list, "a JSON list of results JSON paths")
    write_report(inputs, args.out, args.figures)
    return 0


def cmd_stamp(args) -> int:
    from nlaprobe.io import write_json

    write_json(args.out, _json_arg(args.params, "params"))
    return 0


def cmd_record(args) -> int:
    from nlaprobe.aggregates.core import write_input_record

    params = _json_arg(args.params, "params")
    if not isinstance(params, dict) or set(params) != {"name", "n_inputs"}:
        raise ConfigError("--params: expected a JSON object with keys name and n_inputs")
    write_input_record(args.out, params["name"], params["n_inputs"])
    return 0


def cmd_exec(args) -> int:
    import subprocess

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        raise ConfigError("exec: expected a command after `--`")
    return subprocess.run(command, check=False).returncode


def cmd_build_demo(args) -> int:
    from nlaprobe.demo import DemoParams, build_demo

    build_demo(args.style, Path(args.out), DemoParams.from_json(_json_arg(args.params, "params")))
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nlaprobe", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--threads", type=int, help="torch CPU threads (Snakemake passes {threads})")
    p.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs to lease for the command (Snakemake passes {resources.gpu}): free visible "
        "devices, exported as CUDA_VISIBLE_DEVICES (nlaprobe.devices)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate-config", help="validate config files against config/schema.yaml")
    s.add_argument("files", nargs="+", help="YAML files, merged in order (later wins)")
    s.add_argument("--print", action="store_true", help="print the validated config with defaults")
    s.set_defaults(func=cmd_validate_config)

    s = sub.add_parser("pin", help="resolve every hub revision of a config to its commit sha")
    s.add_argument("config", help="a whole config file (as --configfile takes it)")
    s.add_argument("--out", help="the pinned config to write (default: CONFIG.pinned.yaml)")
    s.set_defaults(func=cmd_pin)

    s = sub.add_parser("plan", help="what a config asks for: rows, decodes, tokens, ridge pairs")
    s.add_argument("files", nargs="+", help="YAML files, merged in order (later wins)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("corpus", help="write one corpus shard")
    s.add_argument("--params", required=True, help="the `corpus` config section as JSON")
    s.add_argument("--split", required=True, choices=["eval", "ridge"])
    s.add_argument("--shard", required=True, type=int)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_corpus)

    s = sub.add_parser("extract", help="extract activations for one corpus shard")
    s.add_argument("--checkpoint", required=True, help="the base checkpoint entry as JSON")
    s.add_argument("--params", required=True, help="layers and sampling parameters as JSON")
    s.add_argument("--corpus", required=True, help="corpus shard (parquet)")
    s.add_argument("--out", required=True, help="activation shard to write (parquet)")
    s.add_argument("--positions", help="primary family's positions shard (aligned families)")
    s.add_argument("--demo-root", help="folder of the demo build, for `demo:` checkpoints")
    s.add_argument("--provenance", help="JSON stored in the sidecar (tag specs)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("positions", help="the (doc_id, char_end) positions of an activation shard")
    s.add_argument("--activations", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_positions)

    s = sub.add_parser("decode", help="AV: decode explanations for one activation shard")
    s.add_argument("--checkpoint", required=True, help="the AV checkpoint entry as JSON")
    s.add_argument("--activations", required=True, help="the AV family's activation shard")
    s.add_argument(
        "--cond", required=True, help="greedy, ban_dq, ban_dq_sq, sample_t1, greedy_L<k>"
    )
    s.add_argument("--params", required=True, help="seed, max_new_tokens, batch_size, ... as JSON")
    s.add_argument("--out", required=True)
    s.add_argument("--demo-root", help="folder of the demo build, for `demo:` checkpoints")
    s.add_argument("--provenance", help="JSON stored in the shard metadata")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("score", help="AR: reconstruct and score one decode shard")
    s.add_argument("--checkpoint", required=True, help="the AR checkpoint entry as JSON")
    s.add_argument("--decodes", required=True)
    s.add_argument("--gold", required=True, help="the AR family's aligned activation shard")
    s.add_argument("--variant", default="full")
    s.add_argument("--params", help="batch_size as JSON")
    s.add_argument("--out", required=True)
    s.add_argument("--demo-root", help="folder of the demo build, for `demo:` checkpoints")
    s.add_argument("--provenance", help="JSON stored in the shard metadata")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("aggregate", help="write a results JSON from score shards")
    s.add_argument("name", help="a registered aggregate (nlaprobe.aggregates)")
    s.add_argument("--config", help="the validated config as JSON (the plan; and `meta`)")
    s.add_argument(
        "--identity", help="the DAG's identity specs as JSON (nlaprobe.plan.Plan.identity)"
    )
    s.add_argument(
        "--root", default="", help="folder of the job's input copies (Plan.aggregate_root)"
    )
    s.add_argument(
        "--spec-file",
        help="a hand-made spec (paths by role + settings) as a JSON file, instead of planning",
    )
    s.add_argument("--out", required=True)
    s.add_argument(
        "--record", help="the job's input record (Plan.aggregate_record): its name is checked"
    )
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("redact", help="E4: edit greedy explanations for one redaction variant")
    s.add_argument("--decodes", required=True, help="a greedy decode shard")
    s.add_argument("--variant", required=True, help="a variant of nlaprobe.spans")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_redact)

    s = sub.add_parser("ridge", help="E8: fit kernel ridge on n ridge-split pairs, predict eval")
    s.add_argument("--n", required=True, type=int, help="training pairs (capped at what exists)")
    s.add_argument("--params", required=True, help="the ridge settings, seed and provenance")
    for side in ("src", "dst"):
        for split in ("ridge", "eval"):
            s.add_argument(
                f"--{side}-{split}",
                required=True,
                help=f"folder of the {side} family's {split} shards (shard-<i>.parquet)",
            )
    for split in ("ridge", "eval"):
        s.add_argument(
            f"--{split}-shards",
            required=True,
            type=int,
            help=f"number of {split} shards in each {split} folder (shard-00000 on)",
        )
    s.add_argument("--out-json", required=True)
    s.add_argument("--out-npz", required=True)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_ridge)

    s = sub.add_parser("report", help="results/report.html and its figures")
    s.add_argument("--inputs", required=True, help="JSON list of the aggregate results files")
    s.add_argument("--out", required=True)
    s.add_argument("--figures", required=True, help="folder for the figure files")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("stamp", help="write an aggregate's own parameters (a stamp file)")
    s.add_argument("--params", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_stamp)

    s = sub.add_parser(
        "record", help="write an aggregate's input record and drop its records of other inputs"
    )
    s.add_argument("--params", required=True, help="name and n_inputs as JSON (Plan)")
    s.add_argument("--out", required=True, help="results/.inputs/<name>-<tag>.json")
    s.set_defaults(func=cmd_record)

    s = sub.add_parser("build-demo", help="build one tiny NLA family of the embedded default")
    s.add_argument("--style", required=True, choices=["qwen", "gemma"])
    s.add_argument("--params", required=True, help="the demo settings as JSON")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_build_demo)

    s = sub.add_parser(
        "exec", help="run a command on leased GPUs: `nlaprobe --gpus N exec -- CMD ...`"
    )
    s.add_argument("command_line", nargs=argparse.REMAINDER, help="-- and the command")
    s.set_defaults(func=cmd_exec)
    return p


def owned_outputs(args) -> list[Path]:
    """The files a command writes (each atomically, see nlaprobe.io.atomic_path)."""
    from nlaprobe import constants as C

    outs = [Path(p) for p in (getattr(args, k, None) for k in ("out", "out_json", "out_npz")) if p]
    if args.command == "extract":
        shard = outs[0]
        outs.append(shard.with_name(shard.name.removesuffix(".parquet") + C.DATASET_SIDECAR_SUFFIX))
    if args.command == "report":
        from nlaprobe.aggregates import figure_names

        outs += [Path(args.figures) / f"{name}.png" for name in figure_names()]
    if args.command == "build-demo":
        return []  # a folder, built under a temporary name that the build itself clears
    return outs


def clean_leftovers(args) -> None:
    """A job killed between a temporary write and its rename leaves `.<name>.XXXXXXXX.tmp`
    beside its output; the next run of the job that owns the output removes them first."""
    from nlaprobe.io import remove_stale_temps

    for out in owned_outputs(args):
        for path in remove_stale_temps(out):
            log.info("removed %s, left by an earlier run that was killed", path)


def lease_devices(count: int):
    """Lease `count` GPUs for this process and export them as CUDA_VISIBLE_DEVICES (see
    nlaprobe.devices); None when nothing is leased."""
    from nlaprobe.devices import lease_gpus

    lease = lease_gpus(
        count,
        what="--gpus (the job's `gpu` resource: run.device, decode.tensor_parallel_size, "
        "sampling.gpus_per_job)",
    )
    if lease is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(lease.devices)
    return lease


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "build-demo":
        # before torch and numpy load: their kernel dispatch reads the environment once
        from nlaprobe.kernels import pin_portable_kernels

        pin_portable_kernels()
    clean_leftovers(args)
    lease = None
    try:
        # before torch (or vLLM) can read it: the job's devices are the leased ones
        lease = lease_devices(args.gpus)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except CorruptFileError as e:
        # set aside (and recorded for the Snakefile's onerror): the workflow rebuilds it
        from nlaprobe.quarantine import handle_corrupt

        moved = handle_corrupt(e.path, str(e))
        if moved:
            log.error("%s (moved to %s; the next run of the workflow rebuilds it)", e, moved)
        else:
            log.error("%s (not a workflow result: left in place)", e)
        sys.stderr.flush()
        return 2
    except NlaprobeError as e:
        log.error("%s", e)
        sys.stderr.flush()
        return 2
    finally:
        if lease is not None:
            lease.release()
