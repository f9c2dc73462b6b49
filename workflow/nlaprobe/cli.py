"""`python -m nlaprobe <stage> ...` / `nlaprobe <stage> ...`: the only place that parses
arguments and sets up logging. Each stage hands validated, typed parameters to one package
function. Known errors (NlaprobeError) become one message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nlaprobe.errors import ConfigError, NlaprobeError

log = logging.getLogger("nlaprobe")


def _json_arg(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--{what}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--{what}: expected a JSON object, got {type(value).__name__}")
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
    from nlaprobe.config import validate_section
    from nlaprobe.corpus import build_corpus_shard

    corpus = validate_section("corpus", _json_arg(args.params, "params"))
    n = build_corpus_shard(corpus, args.split, args.shard, Path(args.out))
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
    from nlaprobe.decode import DecodeParams, decode_shard, parse_condition

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
        seed=p.seed,
        max_new_tokens=p.max_new_tokens,
        batch_size=p.batch_size,
        backend=p.backend,
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
        variant=check_variant(args.variant),
        batch_size=p.batch_size,
        device=args.device,
        provenance=_json_arg(args.provenance, "provenance") if args.provenance else {},
    )
    return 0


def cmd_aggregate(args) -> int:
    from nlaprobe.aggregate import run_aggregate

    cfg = _json_arg(args.config, "config") if args.config else {}
    run_aggregate(args.name, _json_arg(args.spec, "spec"), args.out, cfg, record=args.record)
    return 0


def cmd_redact(args) -> int:
    from nlaprobe.redact import redact_shard

    redact_shard(args.decodes, args.variant, args.out)
    return 0


def cmd_ridge(args) -> int:
    from nlaprobe.ridge_stage import RidgeParams, ridge_stage

    params = RidgeParams.from_json(_json_arg(args.params, "params"))
    ridge_stage(
        params,
        n=args.n,
        src_ridge=args.src_ridge,
        dst_ridge=args.dst_ridge,
        src_eval=args.src_eval,
        dst_eval=args.dst_eval,
        out_json=args.out_json,
        out_npz=args.out_npz,
        device=args.device,
    )
    return 0


def cmd_report(args) -> int:
    from nlaprobe.report import write_report

    try:
        inputs = json.loads(args.inputs)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--inputs: not valid JSON ({e})") from None
    if not isinstance(inputs, list):
        raise ConfigError("--inputs: expected a JSON list of results JSON paths")
    write_report(inputs, args.out, args.figures)
    return 0


def cmd_stamp(args) -> int:
    from nlaprobe.io import write_json

    write_json(args.out, _json_arg(args.params, "params"))
    return 0


def cmd_build_demo(args) -> int:
    from nlaprobe.demo import build_demo

    build_demo(args.style, Path(args.out), _json_arg(args.params, "params"))
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nlaprobe", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--threads", type=int, help="torch CPU threads (Snakemake passes {threads})")
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
    s.add_argument("name", help="an aggregate of nlaprobe.plan.AGGREGATES")
    s.add_argument("--spec", required=True, help="inputs and parameters as JSON (nlaprobe.plan)")
    s.add_argument("--config", help="the validated config as JSON (for `meta` only)")
    s.add_argument("--out", required=True)
    s.add_argument("--record", help="the input record to write (nlaprobe.plan.aggregate_record)")
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
                f"--{side}-{split}", required=True, nargs="+", help=f"{side} {split} shards"
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

    s = sub.add_parser("build-demo", help="build one tiny NLA family of the embedded default")
    s.add_argument("--style", required=True, choices=["qwen", "gemma"])
    s.add_argument("--params", required=True, help="the demo settings as JSON")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_build_demo)
    return p


def owned_outputs(args) -> list[Path]:
    """The files a command writes (each atomically, see nlaprobe.io.atomic_path)."""
    from nlaprobe import constants as C

    outs = [Path(p) for p in (getattr(args, k, None) for k in ("out", "out_json", "out_npz")) if p]
    if args.command == "extract":
        shard = outs[0]
        outs.append(shard.with_name(shard.name.removesuffix(".parquet") + C.DATASET_SIDECAR_SUFFIX))
    if args.command == "report":
        outs += [Path(args.figures) / f"{name}.png" for name in C.FIGURES]
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
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except NlaprobeError as e:
        log.error("%s", e)
        sys.stderr.flush()
        return 2
