"""Checkpoints: sources, sidecars, checkpoint files and the live checks of SPEC §4.5.

inputs -> outputs: a checkpoint entry from config ({id | path | demo, revision, dtype,
trust_remote_code}) -> a `Source` (hub ids resolved to their snapshot folder and commit), a parsed
sidecar (`NlaMeta`), the checkpoint's stop ids, embedding rows and value head read from its files.
Turning a source into live models and tokenizers is the models layer's (nlaprobe.models.loading):
this module never instantiates a model, so its checks run without transformers' model classes.

Invariants:
- safetensors only, `trust_remote_code=False` unless the entry opts in;
- hub ids load at a pinned revision through the real `from_pretrained` path (offline mode and a
  local cache in tests); local directories load as they are;
- both sidecar key generations are accepted (`av`/`ar` and `actor`/`critic`,
  `critic.extraction_layer_index` and `critic.num_hidden_layers`), scales may be the string
  `sqrt_d_model`; unknown keys are ignored;
- every check compares the sidecar with the live tokenizer and model config and fails with an
  error naming the field and both values.
"""

from __future__ import annotations

import logging
import math
import os
import string
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nlaprobe import constants as C
from nlaprobe.config import is_commit
from nlaprobe.errors import CheckpointError, SidecarError, show
from nlaprobe.io import read_yaml

log = logging.getLogger(__name__)

SQRT_D_SENTINEL = "sqrt_d_model"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------- config


def get_text_config(config) -> Any:
    """`config.text_config` for multimodal wrappers (Gemma-3 base), else `config` itself."""
    sub = getattr(config, "text_config", None)
    return sub if sub is not None else config


# ----------------------------------------------------------------------------- sidecar


def _resolve_scale(value: Any, d_model: int, field_name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip() == SQRT_D_SENTINEL:
            return math.sqrt(d_model)
        raise SidecarError(
            f"{where}: {field_name} is {show(value)}; expected a number or {SQRT_D_SENTINEL!r}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SidecarError(
            f"{where}: {field_name} is {show(value)}; expected a number or {SQRT_D_SENTINEL!r}"
        )
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise SidecarError(
            f"{where}: {field_name} is {show(value)}; expected a positive finite number"
        )
    return number


def _section(meta: dict, name: str, where: str) -> dict:
    """A mapping-valued sidecar field (absent or null: empty)."""
    value = meta.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SidecarError(
            f"{where}: {name} is {show(value)} ({type(value).__name__}); expected a mapping"
        )
    return value


def _text(value: Any, name: str, where: str) -> str | None:
    """A string-valued sidecar field (None when absent): a string of valid Unicode text."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SidecarError(
            f"{where}: {name} is {show(value)} ({type(value).__name__}); expected a string"
        )
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise SidecarError(f"{where}: {name} contains a lone surrogate; expected Unicode text")
    return value


def _template(value: Any, name: str, placeholder: str, where: str) -> str | None:
    """A prompt template: a string whose only replacement field is `{placeholder}` (literal
    braces doubled), so that `.format(placeholder=...)` cannot fail or read anything else."""
    text = _text(value, name, where)
    if text is None:
        return None
    try:
        fields = [
            (f, conv, spec)
            for _lit, f, spec, conv in string.Formatter().parse(text)
            if f is not None
        ]
    except ValueError as e:
        raise SidecarError(
            f"{where}: {name} is not a valid template ({e}); write a literal brace as {{{{ or }}}}"
        ) from None
    for f, conv, spec in fields:
        if f != placeholder or conv is not None or spec:
            got = "{" + f + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise SidecarError(
                f"{where}: {name} has the replacement field {show(got)}; the only one allowed is "
                f"{{{placeholder}}} (write a literal brace as {{{{ or }}}})"
            )
    return text


@dataclass(frozen=True)
class NlaMeta:
    """The fields of `nla_meta.yaml` that nlaprobe uses, normalised across key generations."""

    path: str
    role: str  # "av" or "ar"
    d_model: int
    injection_scale: float | None
    mse_scale: float
    injection_char: str | None
    injection_token_id: int | None
    left_neighbor_id: int | None
    right_neighbor_id: int | None
    critic_suffix_ids: tuple[int, ...] | None
    av_template: str | None
    ar_template: str | None
    layer: (
        int | None
    )  # K: from critic.extraction_layer_index / critic.num_hidden_layers - 1 / top level
    raw: dict = field(default_factory=dict, repr=False, compare=False)


ROLE_ALIASES = {"av": "av", "actor": "av", "ar": "ar", "critic": "ar"}


def parse_sidecar(meta: dict, where: str) -> NlaMeta:
    """Normalise a parsed `nla_meta.yaml` (either key generation). Pure; raises SidecarError."""
    if not isinstance(meta, dict):
        raise SidecarError(f"{where}: expected a mapping, got {type(meta).__name__}")
    kind = meta.get("kind", C.KIND_MODEL)
    if kind != C.KIND_MODEL:
        raise SidecarError(f"{where}: kind is {show(kind)}; expected {C.KIND_MODEL!r}")
    role_raw = meta.get("role")
    if not isinstance(role_raw, str) or role_raw not in ROLE_ALIASES:
        raise SidecarError(
            f"{where}: role is {show(role_raw)}; expected one of {sorted(ROLE_ALIASES)}"
        )
    role = ROLE_ALIASES[role_raw]
    d = meta.get("d_model")
    if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
        raise SidecarError(f"{where}: d_model is {show(d)}; expected a positive integer")
    extraction = _section(meta, "extraction", where)
    tokens = _section(meta, "tokens", where)
    templates = _section(meta, "prompt_templates", where)
    critic = _section(meta, "critic", where)
    inj = _resolve_scale(extraction.get("injection_scale"), d, "extraction.injection_scale", where)
    mse = _resolve_scale(extraction.get("mse_scale"), d, "extraction.mse_scale", where)
    av_key = "av" if "av" in templates else "actor"
    ar_key = "ar" if "ar" in templates else "critic"
    av_t = _template(templates.get(av_key), f"prompt_templates.{av_key}", "injection_char", where)
    ar_t = _template(templates.get(ar_key), f"prompt_templates.{ar_key}", "explanation", where)

    def _index(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SidecarError(
                f"{where}: extraction layer ({name}) is {show(value)}; expected an integer ≥ 0"
            )
        return value

    layer = None
    if critic.get("extraction_layer_index") is not None:
        layer = _index(critic["extraction_layer_index"], "critic.extraction_layer_index")
    elif critic.get("num_hidden_layers") is not None:
        # Older sidecars store the number of kept blocks (K+1); see docs/conventions.md, Decisions.
        kept = _index(critic["num_hidden_layers"], "critic.num_hidden_layers")
        if kept < 1:
            raise SidecarError(
                f"{where}: critic.num_hidden_layers is {kept}; expected ≥ 1 (the kept blocks, K+1)"
            )
        layer = kept - 1
    elif meta.get("extraction_layer_index") is not None:
        layer = _index(meta["extraction_layer_index"], "extraction_layer_index")
    elif extraction.get("layer_index") is not None:
        layer = _index(extraction["layer_index"], "extraction.layer_index")

    def _int(name: str) -> int | None:
        v = tokens.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SidecarError(f"{where}: tokens.{name} is {show(v)}; expected an integer token id")
        return v

    suffix = tokens.get("critic_suffix_ids")
    if suffix is not None and not (
        isinstance(suffix, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in suffix)
    ):
        raise SidecarError(
            f"{where}: tokens.critic_suffix_ids is {show(suffix)}; expected a list of ids"
        )
    injection_char = _text(tokens.get("injection_char"), "tokens.injection_char", where)
    if injection_char == "":
        raise SidecarError(f"{where}: tokens.injection_char is empty; expected the marker")

    nla = NlaMeta(
        path=where,
        role=role,
        d_model=d,
        injection_scale=inj,
        mse_scale=mse if mse is not None else math.sqrt(d),
        injection_char=injection_char,
        injection_token_id=_int("injection_token_id"),
        left_neighbor_id=_int("injection_left_neighbor_id"),
        right_neighbor_id=_int("injection_right_neighbor_id"),
        critic_suffix_ids=tuple(suffix) if suffix is not None else None,
        av_template=av_t,
        ar_template=ar_t,
        layer=layer,
        raw=meta,
    )
    _check_role_fields(nla, where)
    return nla


def _check_role_fields(nla: NlaMeta, where: str) -> None:
    if nla.role == "av":
        required = {
            "extraction.injection_scale": nla.injection_scale,
            "tokens.injection_char": nla.injection_char,
            "tokens.injection_token_id": nla.injection_token_id,
            "tokens.injection_left_neighbor_id": nla.left_neighbor_id,
            "tokens.injection_right_neighbor_id": nla.right_neighbor_id,
            "prompt_templates.av": nla.av_template,
        }
        for name, value in required.items():
            if value is None:
                raise SidecarError(f"{where}: {name} is missing; the AV sidecar needs it")
        if "{injection_char}" not in nla.av_template:
            raise SidecarError(
                f"{where}: prompt_templates.av does not contain '{{injection_char}}'"
            )
    else:
        if nla.ar_template is None:
            raise SidecarError(f"{where}: prompt_templates.ar is missing; the AR sidecar needs it")
        if "{explanation}" not in nla.ar_template:
            raise SidecarError(f"{where}: prompt_templates.ar does not contain '{{explanation}}'")
        if nla.layer is None:
            raise SidecarError(
                f"{where}: critic.extraction_layer_index is missing (also looked for "
                "critic.num_hidden_layers and a top-level extraction_layer_index)"
            )


def read_sidecar(directory: str | os.PathLike) -> NlaMeta:
    path = Path(directory) / C.SIDECAR_NAME
    if not path.exists():
        raise SidecarError(f"{path}: missing; every AV/AR directory needs an {C.SIDECAR_NAME}")
    return parse_sidecar(read_yaml(path), str(path))


# ----------------------------------------------------------------------------- live checks


def chat_prompt_ids(tokenizer, content: str) -> list[int]:
    """Chat-templated ids of one user message, in one step (never re-tokenized: no double BOS)."""
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
    )
    ids = out["input_ids"] if hasattr(out, "keys") else out
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]


def check_av_tokenizer(nla: NlaMeta, tokenizer) -> tuple[list[int], int]:
    """Validate the AV sidecar against the live tokenizer; return (prompt ids, marker index)."""
    where = nla.path
    enc = tokenizer(nla.injection_char, add_special_tokens=False)["input_ids"]
    if enc != [nla.injection_token_id]:
        raise SidecarError(
            f"{where}: tokens.injection_token_id is {nla.injection_token_id}, but the tokenizer "
            f"encodes injection_char {show(nla.injection_char)} as {show(enc)}"
        )
    if tokenizer.unk_token_id is not None and nla.injection_token_id == tokenizer.unk_token_id:
        raise SidecarError(
            f"{where}: injection_char {show(nla.injection_char)} encodes to the UNK token"
        )
    ids = chat_prompt_ids(tokenizer, nla.av_template.format(injection_char=nla.injection_char))
    hits = [i for i, t in enumerate(ids) if t == nla.injection_token_id]
    if len(hits) != 1:
        raise SidecarError(
            f"{where}: prompt_templates.av: the chat-templated AV prompt contains the marker id "
            f"{nla.injection_token_id} {len(hits)} times; expected exactly once"
        )
    pos = hits[0]
    if pos == 0 or pos == len(ids) - 1:
        raise SidecarError(
            f"{where}: prompt_templates.av: the marker is at position {pos} of {len(ids)} in the "
            "chat-templated AV prompt; "
            "expected it neither first nor last"
        )
    for name, expected, got in (
        ("tokens.injection_left_neighbor_id", nla.left_neighbor_id, ids[pos - 1]),
        ("tokens.injection_right_neighbor_id", nla.right_neighbor_id, ids[pos + 1]),
    ):
        if expected != got:
            raise SidecarError(
                f"{where}: {name} is {expected}, but the live prompt has {got} there"
            )
    return ids, pos


def check_ar_tokenizer(nla: NlaMeta, tokenizer) -> None:
    """The AR template's suffix must tokenize to the pinned critic_suffix_ids (when given)."""
    if nla.critic_suffix_ids is None:
        return
    probe = nla.ar_template.format(explanation="A probe explanation.")
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    k = len(nla.critic_suffix_ids)
    if tuple(ids[len(ids) - k :]) != nla.critic_suffix_ids:
        raise SidecarError(
            f"{nla.path}: tokens.critic_suffix_ids is {list(nla.critic_suffix_ids)}, but the "
            f"tokenizer ends the filled AR template with {ids[len(ids) - k :]}"
        )


def check_model_config(nla: NlaMeta, config) -> None:
    text = get_text_config(config)
    if text.hidden_size != nla.d_model:
        raise SidecarError(
            f"{nla.path}: d_model is {nla.d_model}, but the model's hidden_size is {text.hidden_size}"
        )
    if nla.role == "ar" and text.num_hidden_layers != nla.layer + 1:
        raise SidecarError(
            f"{nla.path}: the AR reads layer K={nla.layer}, so its config needs K+1="
            f"{nla.layer + 1} layers, but num_hidden_layers is {text.num_hidden_layers}"
        )


# ----------------------------------------------------------------------------- sources and files


@dataclass(frozen=True)
class Source:
    """Where a checkpoint comes from: a hub id at a revision, or a local directory."""

    name: str  # hub id or local path
    revision: str | None
    local: bool
    dtype: torch.dtype
    trust_remote_code: bool
    hub_id: str | None = None  # a hub id resolved to its snapshot folder: the id (name: folder)
    commit: str | None = None  # ... and the commit sha of that snapshot

    def describe(self) -> dict:
        """What was loaded, for provenance: name (hub id or path), configured revision, the
        commit sha of the snapshot read (hub ids) and the dtype."""
        return {
            "name": self.hub_id or self.name,
            "revision": self.revision,
            "commit": self.commit,
            "dtype": str(self.dtype),
        }


def resolve_source(entry: dict, role: str, demo_root: str | os.PathLike | None = None) -> Source:
    """Config checkpoint entry -> Source. `demo: <style>` entries resolve under `demo_root`."""
    dtype_name = entry.get("dtype", "bfloat16")
    if dtype_name not in DTYPES:
        raise CheckpointError(
            f"checkpoint dtype {show(dtype_name)}; expected one of {sorted(DTYPES)}"
        )
    trust = bool(entry.get("trust_remote_code", False))
    if entry.get("demo"):
        if demo_root is None:
            raise CheckpointError(
                f"demo checkpoint {show(entry)} needs the demo folder (demo_root)"
            )
        path = Path(demo_root) / role
        return Source(str(path), None, True, DTYPES[dtype_name], trust)
    if entry.get("path"):
        return Source(str(entry["path"]), None, True, DTYPES[dtype_name], trust)
    if entry.get("id"):
        return Source(
            str(entry["id"]), entry.get("revision") or "main", False, DTYPES[dtype_name], trust
        )
    raise CheckpointError(f"checkpoint entry {show(entry)}: give exactly one of id, path, demo")


def pretrained_kwargs(src: Source) -> dict:
    kw: dict = {"trust_remote_code": src.trust_remote_code}
    if not src.local:
        kw["revision"] = src.revision
    return kw


@contextmanager
def load_errors(src: Source, what: str):
    """Turn from_pretrained / snapshot_download failures (missing files, a repo or revision not
    in the cache, offline mode, a bad repo id) into a CheckpointError naming id and revision."""
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    try:
        yield
    except (OSError, EntryNotFoundError, HFValidationError) as e:
        at = src.name if src.local else f"{src.name} (revision {src.revision})"
        raise CheckpointError(f"{at}: cannot load the {what}: {type(e).__name__}: {e}") from e


def check_local(src: Source) -> None:
    if src.local and not Path(src.name).is_dir():
        raise CheckpointError(f"{src.name}: checkpoint directory not found")


def local_dir(src: Source) -> Path:
    """The directory holding the checkpoint files (downloads / resolves hub ids via the cache)."""
    check_local(src)
    if src.local:
        return Path(src.name)
    from huggingface_hub import snapshot_download

    with load_errors(src, "checkpoint files"):
        return Path(
            snapshot_download(
                src.name,
                revision=src.revision,
                allow_patterns=[
                    *C.CHECKPOINT_FILES,
                    # remote code, only for an entry that opted in (trust_remote_code)
                    *(C.REMOTE_CODE_FILES if src.trust_remote_code else ()),
                ],
            )
        )


# weight files that unpickle (or may) when loaded: never read by nlaprobe (SPEC §8)
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def require_safetensors(directory: str | os.PathLike) -> Path:
    """Refuse a checkpoint folder whose weights are not safetensors, before an engine with its
    own loader (vLLM) is given the folder: HF loads pass `use_safetensors=True`, but vLLM would
    fall back to pickled `*.bin`/`*.pt` weights. CheckpointError naming the files found."""
    folder = Path(directory)
    if any(folder.glob("*.safetensors")):
        return folder
    pickled = sorted({p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern)})
    if pickled:
        raise CheckpointError(
            f"{folder}: the weights are only {show(pickled, 120)}, which load by unpickling; "
            "nlaprobe loads safetensors only (convert them, e.g. with safetensors' save_file)"
        )
    raise CheckpointError(f"{folder}: no *.safetensors weights; nlaprobe loads safetensors only")


def resolve_snapshot(src: Source) -> Source:
    """A hub checkpoint -> the same checkpoint as its snapshot folder in the hub cache (fetched
    when online), with the commit sha of that snapshot recorded, so that tokenizer, config and
    weights all come from one commit and provenance names it. A revision pinned to a commit
    that resolves to another snapshot is an error. Local sources are returned as they are."""
    if src.local:
        return src
    directory = local_dir(src)
    commit = directory.name if directory.parent.name == "snapshots" else None
    if is_commit(src.revision) and commit != src.revision:
        raise CheckpointError(
            f"{src.name}: pinned to revision {src.revision} but the snapshot loaded is "
            f"{commit or directory}"
        )
    return replace(src, name=str(directory), local=True, hub_id=src.name, commit=commit)


def stop_token_ids(directory: Path, config, tokenizer) -> list[int]:
    """EOS ids from generation_config.json, else the model config, else the tokenizer."""
    import json

    candidates: Any = None
    where = "the model config's eos_token_id"
    gen = directory / "generation_config.json"
    if gen.exists():
        try:
            data = json.loads(gen.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{gen}: not valid JSON ({str(e)[:120]})") from None
        if not isinstance(data, dict):
            raise CheckpointError(
                f"{gen}: expected a JSON object, got {show(data)} ({type(data).__name__})"
            )
        candidates = data.get("eos_token_id")
        where = f"{gen}: eos_token_id"
    if candidates is None:
        candidates = getattr(get_text_config(config), "eos_token_id", None)
        where = "the model config's eos_token_id"
    if candidates is None:
        candidates = tokenizer.eos_token_id
        where = "the tokenizer's eos_token_id"
    if candidates is None:
        return []
    ids = candidates if isinstance(candidates, list) else [candidates]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise CheckpointError(
            f"{where} is {show(candidates)}; expected a token id or a list of token ids"
        )
    return ids


def embedding_rows(directory: Path, ids: list[int]) -> torch.Tensor:
    """Rows `ids` of the input embedding matrix in the stored dtype, read lazily from the
    safetensors files."""
    from safetensors import safe_open

    files = sorted(Path(directory).glob("*.safetensors"))
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                if key.endswith("embed_tokens.weight"):
                    sl = st.get_slice(key)
                    return torch.stack([sl[i : i + 1][0] for i in ids])
    raise CheckpointError(
        f"{directory}: no '*embed_tokens.weight' tensor in {[f.name for f in files]}"
    )


def load_value_head(directory: Path, d_model: int) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / C.VALUE_HEAD_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: value head missing; the AR needs {C.VALUE_HEAD_FILE}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if C.VALUE_HEAD_KEY not in tensors:
        raise CheckpointError(
            f"{path}: expected a tensor named {C.VALUE_HEAD_KEY!r}, found {show(sorted(tensors))}"
        )
    w = tensors[C.VALUE_HEAD_KEY]
    if tuple(w.shape) != (d_model, d_model):
        raise CheckpointError(
            f"{path}: {C.VALUE_HEAD_KEY} has shape {tuple(w.shape)}, expected [{d_model}, {d_model}]"
        )
    return w
