"""The config contract: load YAML configs, fill defaults and validate against config/schema.yaml.

inputs -> outputs: YAML files (merged in order) or a dict -> a NEW dict, validated, with every
default of the schema filled in.

Invariants:
- `config/schema.yaml` is the single definition of the config; this module adds only the checks
  a JSON Schema cannot express (split ranges, references between sections, layer ranges).
- Every failure raises `ConfigError` naming the source and the dotted key path; all problems of
  one config are reported at once, sorted, one per line.
- Pure: no network, no device probing, no mutation of the caller's data. The only I/O is reading
  the schema and the config files.
"""

from __future__ import annotations

import copy
import difflib
import functools
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import yaml
from jsonschema import Draft202012Validator

from nlaprobe.errors import ConfigError, show
from nlaprobe.io import load_yaml

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"

# Corpora that ship with Python or the repo (source `builtin`); the corpus stage implements them.
BUILTIN_CORPORA: tuple[str, ...] = ("pydoc",)

# Keys of a family that hold a checkpoint entry (`#/$defs/checkpoint`).
CHECKPOINT_ROLES: tuple[str, ...] = ("base", "av", "ar")
SPLITS: tuple[str, ...] = ("eval", "ridge")

_MAX_REPR = 60

# Strict integers: JSON Schema would accept 5.0 as an integer, but Python code downstream
# (range(), slicing) would not. Finite numbers: NaN passes every bound (each comparison with it
# is false) and YAML's .nan/.inf or JSON's NaN would reach the stages.
_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine_many(
    {
        "integer": lambda _checker, value: isinstance(value, int) and not isinstance(value, bool),
        "number": lambda _checker, value: (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (not isinstance(value, float) or math.isfinite(value))
        ),
    }
)
_Validator = jsonschema.validators.extend(Draft202012Validator, type_checker=_TYPE_CHECKER)

Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------------------- schema


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The parsed config/schema.yaml (cached; treat it as read-only)."""
    try:
        schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{SCHEMA_PATH}: cannot read the config schema: {exc}") from exc
    Draft202012Validator.check_schema(schema)
    return schema


def checkpoint_sources() -> tuple[str, ...]:
    """The exclusive keys of a checkpoint entry (`id`, `path`, `demo`), read from the schema."""
    branches = load_schema()["$defs"]["checkpoint"]["oneOf"]
    return tuple(branch["required"][0] for branch in branches)


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ConfigError(f"{SCHEMA_PATH}: only local $refs are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object"


def apply_defaults(
    schema: Mapping[str, Any], instance: Any, *, root: Mapping[str, Any] | None = None
) -> Any:
    """Return a copy of `instance` with the schema's defaults filled in, recursively.

    Follows `properties`, `patternProperties`, a schema-valued `additionalProperties`, `items`,
    `allOf` and local `$ref`s (resolved against `root`, by default `schema`). `oneOf`/`anyOf`
    branches are not entered (which branch applies is ambiguous). A missing key, or a key set to
    null whose schema is a non-nullable object (a YAML section whose children are all commented
    out), gets a copy of its default; values of the wrong type are left for validation to report.
    """
    root = schema if root is None else root
    out = copy.deepcopy(instance)
    _fill(schema, out, root)
    return out


def _fill(schema: Mapping[str, Any], instance: Any, root: Mapping[str, Any]) -> None:
    if "$ref" in schema:
        _fill(_resolve_ref(schema["$ref"], root), instance, root)
    for sub in schema.get("allOf", ()):
        _fill(sub, instance, root)
    if isinstance(instance, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for key, sub in props.items():
            if "default" in sub and (
                key not in instance or (instance[key] is None and _is_object_schema(sub))
            ):
                instance[key] = copy.deepcopy(sub["default"])
        patterns: Mapping[str, Any] = schema.get("patternProperties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if key in props:
                _fill(props[key], value, root)
                continue
            matched = False
            for pattern, sub in patterns.items():
                if isinstance(key, str) and re.search(pattern, key):
                    matched = True
                    _fill(sub, value, root)
            if not matched and isinstance(extra, Mapping):
                _fill(extra, value, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        for item in instance:
            _fill(schema["items"], item, root)


# ------------------------------------------------------------------------------------- messages


def _dotted(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    return show(value, _MAX_REPR)


def _got(value: Any) -> str:
    return f"got {_show(value)} ({_type_name(value)})"


def _line(source: str, path: Path_, message: str) -> str:
    where = f"key '{_dotted(path)}'" if path else "top level"
    return f"{source}: {where}: {message}"


def _allowed_keys(schema: Mapping[str, Any]) -> list[str]:
    allowed = list(schema.get("properties", {}))
    allowed += [f"names matching {p}" for p in schema.get("patternProperties", {})]
    return allowed


def _is_allowed(schema: Mapping[str, Any], key: Any) -> bool:
    if key in schema.get("properties", {}):
        return True
    return any(
        isinstance(key, str) and re.search(p, key) for p in schema.get("patternProperties", {})
    )


def _schema_error_lines(
    error: jsonschema.ValidationError,
    source: str,
    prefix: Path_,
    schema: Mapping[str, Any] | None = None,
) -> list[str]:
    path: Path_ = prefix + tuple(error.absolute_path)
    value = error.instance
    kind = error.validator
    spec = error.validator_value

    where = list(error.relative_schema_path)
    if len(where) >= 2 and where[-2] == "propertyNames":
        # a key that breaks the naming rule (`error.schema` is the rule, with its description);
        # a key no pattern admits at all is reported once, as an unknown key
        parent: Any = schema or {}
        for part in where[:-2]:
            parent = parent[part] if isinstance(parent, Mapping | list) else {}
        if isinstance(parent, Mapping) and not _is_allowed(parent, value):
            return []
        rule = error.schema.get("description", f"expected {kind} {spec}")
        key = value if isinstance(value, str) else _show(value)
        return [_line(source, (*path, key), f"not an allowed name: {rule}")]

    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = _allowed_keys(error.schema)
        lines = []
        for key in value:
            if _is_allowed(error.schema, key):
                continue
            hint = difflib.get_close_matches(str(key), list(error.schema.get("properties", {})), 1)
            more = f"; did you mean '{hint[0]}'?" if hint else ""
            lines.append(
                f"{source}: unknown key '{_dotted((*path, str(key)))}' "
                f"(allowed: {', '.join(allowed)}{more})"
            )
        return lines
    if kind == "required" and isinstance(value, dict):
        return [
            _line(source, (*path, key), "required key missing") for key in spec if key not in value
        ]
    if kind == "oneOf" and all(set(branch) == {"required"} for branch in spec):
        if not isinstance(value, dict):
            return []  # the type error on the same key says it all
        choices = [branch["required"][0] for branch in spec]
        given = [key for key in choices if key in value]
        return [
            _line(
                source,
                path,
                f"give exactly one of {', '.join(choices)} (given: {', '.join(given) or 'none'})",
            )
        ]
    if kind == "type":
        types = [spec] if isinstance(spec, str) else list(spec)
        if isinstance(value, float) and not math.isfinite(value):
            types = ["a finite number" if t == "number" else t for t in types]
        message = f"expected {' or '.join(types)}, {_got(value)}"
    elif kind == "enum":
        message = f"expected one of {', '.join(map(str, spec))}, {_got(value)}"
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        message = f"expected a value {op[kind]} {spec}, got {_show(value)}"
    elif kind == "minLength":
        message = f"expected a string of at least {spec} character(s), got {_show(value)}"
    elif kind == "minProperties":
        message = f"expected at least {spec} entr{'y' if spec == 1 else 'ies'}, got {len(value)}"
    elif kind == "uniqueItems":
        message = f"expected unique items, got {_show(value)}"
    else:
        message = error.message
    return [_line(source, path, message)]


def _non_string_keys(data: Any, path: Path_ = ()) -> list[Path_]:
    """Paths of mapping keys that are not strings (YAML turns `yes:`/`on:`/`1:` into non-strings)."""
    found: list[Path_] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                found.append((*path, _show(key)))
            else:
                found += _non_string_keys(value, (*path, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found += _non_string_keys(item, (*path, i))
    return found


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogates(data: Any, path: Path_ = ()) -> list[tuple[Path_, str]]:
    """(key path, the string) of every key or string value holding a lone surrogate: not valid
    Unicode text (a YAML escape such as "\\ud800", or undecodable bytes on a command line), it
    cannot be encoded, hashed into a tag or written to a file."""
    found: list[tuple[Path_, str]] = []
    if isinstance(data, str):
        if _SURROGATE.search(data):
            found.append((path, data))
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and _SURROGATE.search(key):
                found.append(((*path, _show(key)), key))
            else:
                found += lone_surrogates(value, (*path, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found += lone_surrogates(item, (*path, i))
    return found


def surrogate_lines(data: Any, source: str, prefix: Path_ = ()) -> list[str]:
    """One error line per lone surrogate in `data` (see `lone_surrogates`), naming the key."""
    lines = []
    for path, text in lone_surrogates(data, prefix):
        at = _SURROGATE.search(text).start()
        lines.append(
            _line(
                source,
                path,
                f"contains a lone surrogate (U+{ord(text[at]):04X} at character {at}), "
                "which is not valid Unicode text",
            )
        )
    return lines


def _raise(lines: Iterable[str]) -> None:
    unique = sorted(set(lines))
    if unique:
        raise ConfigError("\n".join(unique))


def _schema_check(
    schema: Mapping[str, Any],
    data: Any,
    *,
    source: str,
    prefix: Path_ = (),
    root: Mapping[str, Any],
) -> tuple[Any, list[str], set[Path_]]:
    """Fill defaults and validate against `schema` (whose $refs resolve against `root`).

    Returns the filled copy, the error lines and the key paths that have errors.
    """
    bad_keys = _non_string_keys(data, prefix)
    _raise(_line(source, path, "keys must be strings (quote it)") for path in bad_keys)
    _raise(surrogate_lines(data, source, prefix))
    filled = apply_defaults(schema, data, root=root)
    full = dict(schema)
    if "$defs" in root:
        full["$defs"] = root["$defs"]
    lines: list[str] = []
    bad_paths: set[Path_] = set()
    for error in _Validator(full).iter_errors(filled):
        found = _schema_error_lines(error, source, prefix, full)
        if found:
            lines += found
            bad_paths.add(prefix + tuple(error.absolute_path))
    return filled, lines, bad_paths


def _validate(
    schema: Mapping[str, Any],
    data: Any,
    *,
    source: str,
    prefix: Path_ = (),
    root: Mapping[str, Any],
) -> Any:
    filled, lines, _ = _schema_check(schema, data, source=source, prefix=prefix, root=root)
    _raise(lines)
    return filled


# ------------------------------------------------------------------------------ semantic checks

Problem = tuple[Path_, str]


def _check_corpus(corpus: Mapping[str, Any], prefix: Path_) -> list[Problem]:
    problems: list[Problem] = []
    for split in SPLITS:
        rng = corpus["splits"][split]
        if rng["start"] >= rng["stop"]:
            problems.append(
                (
                    (*prefix, "splits", split),
                    f"expected start < stop, got start={rng['start']}, stop={rng['stop']}",
                )
            )
    if corpus["source"] == "builtin" and corpus["dataset"] not in BUILTIN_CORPORA:
        problems.append(
            (
                (*prefix, "dataset"),
                f"unknown builtin corpus {corpus['dataset']!r} "
                f"(builtin corpora: {', '.join(BUILTIN_CORPORA)})",
            )
        )
    return problems


def _check_demo(demo: Mapping[str, Any], prefix: Path_) -> list[Problem]:
    problems: list[Problem] = []
    if demo["hidden_size"] % demo["num_heads"]:
        problems.append(
            (
                (*prefix, "num_heads"),
                f"must divide hidden_size {demo['hidden_size']}, got {demo['num_heads']}",
            )
        )
    if demo["num_heads"] % demo["num_kv_heads"]:
        problems.append(
            (
                (*prefix, "num_kv_heads"),
                f"must divide num_heads {demo['num_heads']}, got {demo['num_kv_heads']}",
            )
        )
    return problems


def _check_families(
    families: Mapping[str, Any], demo: Mapping[str, Any] | None, prefix: Path_
) -> list[Problem]:
    problems: list[Problem] = []
    for name, fam in families.items():
        where = (*prefix, name)
        layer = fam["layer"]
        for i, adj in enumerate(fam["adjacent_layers"]):
            if adj == layer:
                problems.append(
                    (
                        (*where, "adjacent_layers", i),
                        f"an adjacent layer must differ from layer {layer}, got {adj}",
                    )
                )
        styles = {fam[role]["demo"] for role in CHECKPOINT_ROLES if "demo" in fam[role]}
        # a real base model's depth is checked when the demo build loads it
        real = {k for k, v in ((demo or {}).get("base_models") or {}).items() if v}
        tiny = styles - real
        if demo is not None and tiny:
            n = demo["num_layers"]
            if layer >= n:
                problems.append(
                    ((*where, "layer"), f"expected < demo.num_layers ({n}), got {layer}")
                )
            for i, adj in enumerate(fam["adjacent_layers"]):
                if adj >= n:
                    problems.append(
                        (
                            (*where, "adjacent_layers", i),
                            f"expected < demo.num_layers ({n}), got {adj}",
                        )
                    )
    return problems


def _check_run(run: Mapping[str, Any], families: Mapping[str, Any]) -> list[Problem]:
    chosen = run["primary_family"]
    if chosen is not None and chosen not in families:
        return [
            (
                ("run", "primary_family"),
                f"expected one of the families ({', '.join(families)}), got {chosen!r}",
            )
        ]
    return []


def _check_gpus(cfg: Mapping[str, Any]) -> list[Problem]:
    """Jobs on several GPUs: vLLM's tensor parallelism for decodes, transformers' device_map
    for extraction; neither runs on the CPU."""
    problems: list[Problem] = []
    device = cfg["run"]["device"]
    tp = cfg["decode"]["tensor_parallel_size"]
    if tp > 1 and cfg["decode"]["backend"] != "vllm":
        problems.append(
            (
                ("decode", "tensor_parallel_size"),
                f"{tp} GPUs per decode need decode.backend vllm (the hf backend decodes on "
                f"one device), got backend {cfg['decode']['backend']!r}",
            )
        )
    per_job = cfg["sampling"]["gpus_per_job"]
    if per_job > 1 and cfg["sampling"]["device_map"] != "auto":
        problems.append(
            (
                ("sampling", "gpus_per_job"),
                f"{per_job} GPUs per extraction need sampling.device_map auto (the model on "
                "one device uses one)",
            )
        )
    for path, n in (
        (("decode", "tensor_parallel_size"), tp),
        (("sampling", "gpus_per_job"), per_job),
    ):
        if n > 1 and device == "cpu":
            problems.append((path, f"{n} GPUs per job need run.device cuda or auto, got 'cpu'"))
    return problems


def _check_families_alone(families: Mapping[str, Any], prefix: Path_) -> list[Problem]:
    """The family checks that need no other section (layer ranges need `demo`)."""
    return _check_families(families, None, prefix)


_SECTION_CHECKS: dict[str, Callable[[Any, Path_], list[Problem]]] = {
    "corpus": _check_corpus,
    "demo": _check_demo,
    "families": _check_families_alone,
}


def _raise_problems(problems: Iterable[Problem], source: str) -> None:
    _raise(_line(source, path, message) for path, message in problems)


# ---------------------------------------------------------------------------------- public API


def validate_config(cfg: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Validate a whole config; return a new dict with every default filled in.

    Raises ConfigError listing every problem, one per line, each naming `source` and the dotted
    key (e.g. ``config.yaml: key 'sampling.positions_per_doc': expected integer, got 'five'``).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(
            f"{source}: top level: expected a mapping of config sections, {_got(cfg)}"
        )
    schema = load_schema()
    filled, lines, bad_paths = _schema_check(schema, dict(cfg), source=source, root=schema)
    # Semantic checks run on the sections (families: on the families) that passed the schema,
    # so that one report lists every problem without tripping over values of the wrong type.
    # Root-level errors are unknown top-level keys, which leave the sections intact.
    bad = {path[0] for path in bad_paths if path}
    problems: list[Problem] = []
    if "corpus" not in bad:
        problems += _check_corpus(filled["corpus"], ("corpus",))
    if "demo" not in bad:
        problems += _check_demo(filled["demo"], ("demo",))
    families = filled["families"]
    if isinstance(families, dict) and ("families",) not in bad_paths:
        broken = {path[1] for path in bad_paths if len(path) > 1 and path[0] == "families"}
        ok = {name: fam for name, fam in families.items() if name not in broken}
        demo = None if "demo" in bad else filled["demo"]
        problems += _check_families(ok, demo, ("families",))
        if "run" not in bad:
            problems += _check_run(filled["run"], families)
    if not {"run", "decode", "sampling"} & bad:
        problems += _check_gpus(filled)
    _raise([*lines, *(_line(source, path, message) for path, message in problems)])
    logger.debug("validated config from %s", source)
    return filled


def validate_section(name: str, data: Any, *, source: str = "config") -> dict[str, Any]:
    """Validate one top-level section (e.g. the `corpus` dict given alone to a stage CLI).

    Checks `data` against `#/properties/<name>` plus the section's own semantic checks (those
    that need no other section); returns a new dict with defaults filled. Messages name keys with
    the section as prefix (``corpus.splits.eval``).
    """
    schema = load_schema()
    sections = schema["properties"]
    if name not in sections:
        raise ConfigError(
            f"{source}: unknown config section {name!r} (sections: {', '.join(sections)})"
        )
    sub = sections[name]
    if data is None and _is_object_schema(sub):
        data = {}
    filled = _validate(sub, data, source=source, prefix=(name,), root=schema)
    check = _SECTION_CHECKS.get(name)
    if check is not None:
        _raise_problems(check(filled, (name,)), source)
    return filled


def schema_of(key: str) -> Mapping[str, Any]:
    """The schema of one config key, given dotted (`decode.batch_size`); `*` stands for any
    entry of a mapping keyed by name (`families.*.layer`)."""
    root = load_schema()
    node: Mapping[str, Any] = root
    for part in key.split("."):
        while "$ref" in node:
            node = _resolve_ref(node["$ref"], root)
        try:
            if part == "*":
                (node,) = node["patternProperties"].values()
            else:
                node = node["properties"][part]
        except (KeyError, ValueError):
            raise ConfigError(f"{SCHEMA_PATH}: no config key {key!r}") from None
    return node


def validate_params(
    raw: Any,
    fields: Mapping[str, str],
    *,
    source: str,
    required: Sequence[str] = (),
    free: Sequence[str] = (),
) -> dict[str, Any]:
    """A stage's parameters checked against the config schema: `fields` maps each parameter
    name to the config key whose schema it follows (`{"batch_size": "decode.batch_size"}`), so
    a stage accepts exactly what the config does. A missing parameter takes that key's default
    (an error for those in `required`); an unknown one is an error; `free` names parameters
    passed through unchecked (provenance).
    Returns a new dict; raises ConfigError with one line per problem, naming the parameter."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a JSON object of parameters, {_got(raw)}")
    allowed = [*fields, *free]
    lines = [
        f"{source}: unknown key {_show(key)} (allowed: {', '.join(allowed)})"
        for key in raw
        if key not in allowed
    ]
    _raise(lines)
    _raise(surrogate_lines(raw, source))
    root = load_schema()
    out: dict[str, Any] = {}
    for name, key in fields.items():
        schema = schema_of(key)
        if name in raw:
            value = raw[name]
        elif "default" in schema and name not in required:
            value = copy.deepcopy(schema["default"])
        else:
            lines.append(_line(source, (name,), f"required key missing (config key {key})"))
            continue
        full = {**schema, "$defs": root["$defs"]}
        for error in _Validator(full).iter_errors(value):
            lines += _schema_error_lines(error, source, (name,), full)
        out[name] = value
    _raise(lines)
    out.update({key: copy.deepcopy(raw[key]) for key in free if key in raw})
    return out


class StageParams:
    """Base of every stage's `Params` (a frozen dataclass without defaults): `from_json` parses
    the job's `--params` JSON object, the one path for the CLI and for tests alike. Each field in
    `FIELDS` follows the schema of the config key it names (`validate_params`); with `SECTION`
    set, every other key of the object belongs to that config section (`validate_section`, with
    the section's own checks). Either way a missing value takes the schema's default (the only
    place defaults live) and an unknown or bad key is a ConfigError naming it; `FREE` keys pass
    unchecked to `from_values`, which turns the checked values into fields."""

    FIELDS: ClassVar[Mapping[str, str]] = {}
    SECTION: ClassVar[str | None] = None
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    FREE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_json(cls, raw: Any, source: str = "--params"):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: expected a JSON object of parameters, {_got(raw)}")
        own = (*cls.FIELDS, *cls.FREE)
        values = {}
        if cls.SECTION is not None:
            section = {k: v for k, v in raw.items() if k not in own}
            values = validate_section(cls.SECTION, section, source=source)
            raw = {k: v for k, v in raw.items() if k in own}
        values.update(
            validate_params(raw, cls.FIELDS, source=source, required=cls.REQUIRED, free=cls.FREE)
        )
        return cls.from_values(values, source)

    @classmethod
    def from_values(cls, values: dict[str, Any], source: str):
        return cls(**values)


def validate_checkpoint_entry(data: Any, where: str, *, source: str = "config") -> dict[str, Any]:
    """Validate one checkpoint entry (`#/$defs/checkpoint`); `where` is its dotted key path
    (e.g. ``families.qwen.av``) used in messages. Returns a new dict with defaults filled."""
    schema = load_schema()
    prefix: Path_ = tuple(where.split(".")) if where else ()
    return _validate(schema["$defs"]["checkpoint"], data, source=source, prefix=prefix, root=schema)


def primary_family(cfg: Mapping[str, Any]) -> str:
    """The family that samples positions: `run.primary_family`, or else the first family."""
    chosen = cfg.get("run", {}).get("primary_family")
    if chosen is not None:
        return chosen
    families = cfg.get("families") or {}
    if not families:
        raise ConfigError("config: key 'families': expected at least 1 entry, got 0")
    return next(iter(families))


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`: mappings merge key by key, other values replace.

    One exception: a checkpoint entry (`families.<fam>.<base|av|ar>`) in `override` that names
    its checkpoint (id, path or demo) replaces the earlier entry as a whole, since merging
    `{demo: qwen}` with `{id: ...}` would describe two checkpoints at once.
    """
    return _merge(base, override, ())


def _merge(base: Mapping[str, Any], override: Mapping[str, Any], path: Path_) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        here = (*path, key)
        if (
            isinstance(value, Mapping)
            and isinstance(out.get(key), Mapping)
            and not _replaces_checkpoint(here, value)
        ):
            out[key] = _merge(out[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _replaces_checkpoint(path: Path_, value: Mapping[str, Any]) -> bool:
    return (
        len(path) == 3
        and path[0] == "families"
        and path[2] in CHECKPOINT_ROLES
        and any(key in value for key in checkpoint_sources())
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let the default constructor report it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_show(key)}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse one YAML config file into a mapping (an empty file is an empty mapping)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{p}: cannot read config file: {reason}") from exc
    try:
        data = load_yaml(text, _UniqueKeyLoader)  # bounded: no alias bombs
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{p}: not valid YAML: {detail}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: top level: expected a mapping of config sections, got {_type_name(data)}"
        )
    return data


def load_config(
    paths: Sequence[str | os.PathLike[str]], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read YAML config files, merge them in order (later wins, see `deep_merge`), merge
    `overrides` last, and return the validated config with defaults filled."""
    merged: dict[str, Any] = {}
    names = [str(p) for p in paths]
    for path in paths:
        merged = deep_merge(merged, read_config_file(path))
        logger.debug("read config file %s", path)
    if overrides:
        merged = deep_merge(merged, overrides)
        names.append("overrides")
    return validate_config(merged, source=" + ".join(names) or "config")


# ------------------------------------------------------------------------- workflow assembly

# A hub id is `name` or `owner/name`; anything else in `corpus.dataset` is a filesystem path.
HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*(/[\w.-]+)?$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def is_commit(revision: Any) -> bool:
    """True for a full 40-hex commit sha (the only revision that names a fixed snapshot)."""
    return isinstance(revision, str) and bool(COMMIT_SHA.match(revision))


def corpus_is_hub(corpus: Mapping[str, Any]) -> bool:
    """The hf corpus names a hub repository (not a local folder)."""
    dataset = corpus.get("dataset")
    return (
        corpus.get("source") == "hf"
        and isinstance(dataset, str)
        and bool(HUB_ID.match(dataset))
        and not Path(dataset).expanduser().is_dir()
    )


def hub_entries(cfg: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """Every hub reference of a validated config as (dotted key of its revision, repo id,
    repo type `model`/`dataset`, revision): checkpoint entries with an `id` (families and the
    demo's real base models) and an `hf` corpus given by hub id."""
    out: list[tuple[str, str, str, str]] = []
    for fam, f in cfg.get("families", {}).items():
        for role in CHECKPOINT_ROLES:
            entry = f.get(role) or {}
            if entry.get("id"):
                out.append(
                    (f"families.{fam}.{role}.revision", entry["id"], "model", entry["revision"])
                )
    for style, entry in ((cfg.get("demo") or {}).get("base_models") or {}).items():
        if entry and entry.get("id"):
            out.append(
                (f"demo.base_models.{style}.revision", entry["id"], "model", entry["revision"])
            )
    corpus = cfg.get("corpus") or {}
    if corpus_is_hub(corpus):
        out.append(("corpus.revision", corpus["dataset"], "dataset", corpus["revision"]))
    return out


def floating_revisions(cfg: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The hub entries whose revision is a branch or tag, not a commit sha."""
    return [e for e in hub_entries(cfg) if not is_commit(e[3])]


def require_pinned(cfg: Mapping[str, Any], *, source: str, configfile: str | None) -> None:
    """Refuse floating hub revisions unless `run.allow_floating_revisions` (ConfigError naming
    every key and how to pin)."""
    floating = floating_revisions(cfg)
    if not floating or cfg.get("run", {}).get("allow_floating_revisions"):
        return
    target = configfile or "CONFIG"
    if configfile and Path(configfile).is_absolute():
        try:
            target = str(Path(configfile).relative_to(Path.cwd()))
        except ValueError:
            pass
    pinned = (
        str(Path(target).with_name(Path(target).stem + ".pinned.yaml"))
        if configfile
        else "PINNED.yaml"
    )
    lines = [
        f"{source}: key '{key}': revision {rev!r} of {repo} ({kind}) is a branch or tag, "
        "not a commit sha"
        for key, repo, kind, rev in floating
    ]
    lines.append(
        "a floating revision names no fixed snapshot, so an upstream re-upload would change "
        "results without changing any path. Pin every revision (needs the hub, or a local cache "
        f"with HF_HUB_OFFLINE=1): `nlaprobe pin {target} --out {pinned}`, then run with "
        f"`--configfile {pinned}`; or set run.allow_floating_revisions: true to accept them"
    )
    _raise(lines)


def coerce_cli_values(
    values: Any, schema: Mapping[str, Any] | None = None, path: Path_ = ()
) -> Any:
    """Snakemake parses `--config key=VALUE` with YAML's BaseLoader, so every scalar nested in a
    mapping (`--config "decode={batch_size: 4}"`) arrives as a string. Re-read a string as YAML
    where the schema asks for a number, a boolean or null at that key (and the YAML value has
    that type); everything else is left as given, for validation to judge."""
    root = load_schema()
    schema = root if schema is None else schema
    while "$ref" in schema:
        schema = _resolve_ref(schema["$ref"], root)
    if isinstance(values, Mapping):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, value in values.items():
            sub = props.get(key, extra if isinstance(extra, Mapping) else {})
            for pattern, psub in schema.get("patternProperties", {}).items():
                if isinstance(key, str) and re.search(pattern, key):
                    sub = psub
            out[key] = coerce_cli_values(value, sub, (*path, key))
        return out
    if isinstance(values, list):
        items = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
        return [coerce_cli_values(v, items, (*path, i)) for i, v in enumerate(values)]
    if isinstance(values, str):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else list(types)
        wanted = {"integer", "number", "boolean", "null"} & set(types)
        if "null" in wanted and values in ("null", "Null", "NULL", "~"):
            return None  # YAML's null, also where a string would do (a nullable string)
        if wanted and "string" not in types:
            try:
                parsed = yaml.safe_load(values)
            except yaml.YAMLError:
                return values
            if _has_type(parsed, wanted):
                return parsed
    return values


def _has_type(value: Any, types: set[str]) -> bool:
    if isinstance(value, bool):
        return "boolean" in types
    if value is None:
        return "null" in types
    if isinstance(value, int):
        return bool({"integer", "number"} & types)
    if isinstance(value, float):
        return "number" in types
    return False


def workflow_config(
    default: str | os.PathLike[str],
    configfiles: Sequence[str | os.PathLike[str]],
    cli: Mapping[str, Any],
) -> dict[str, Any]:
    """The config a Snakemake run uses, validated: the `--configfile`s merged in order (or, when
    Snakemake was given none, the embedded default `default`), then the `--config` values
    (coerced, see `coerce_cli_values`) merged on top. Which of the two Snakemake was given is
    decided by what it was given, never by the keys present, so `--config "families={...}"`
    refines the default rather than replacing it."""
    files = [str(f) for f in configfiles] or [str(default)]
    merged: dict[str, Any] = {}
    for f in files:
        merged = deep_merge(merged, read_config_file(f))
    names = list(files)
    if cli:
        merged = deep_merge(merged, coerce_cli_values(dict(cli)))
        names.append("--config")
    source = " + ".join(names)
    cfg = validate_config(merged, source=source)
    require_pinned(cfg, source=source, configfile=str(configfiles[-1]) if configfiles else None)
    return cfg
