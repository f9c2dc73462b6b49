"""Generation: decode conditions, seeded requests and the generation loop over a backend.

inputs -> outputs: activation vectors + an AV's base prompt embeddings and marker position + a
condition + a backend (nlaprobe.models.backends) -> one row per (vector, sample): raw text,
extracted explanation (None on tag failure), token count, finish reason, seed, error, leaks.

Invariants (SPEC §4.6-§4.8):
- one request builder for every backend: the prompt embeddings of nlaprobe.models.forward, one
  request per (row, sample); only embeddings go to the engine, never ids too;
- sampling is seeded per (seed, doc_id, position, sample index): any shard reruns alone, in any
  batch composition, with identical samples;
- a zero or non-finite vector is an error recorded for its row, never sent to the engine;
- bans: every vocabulary id whose decoded text contains a banned character (`banned_token_ids`);
  banned characters leaking into outputs are counted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from nlaprobe import constants as C
from nlaprobe.models.forward import build_prompt_embeds

EXPLANATION_RE = re.compile(r"<explanation>\s*(.*?)\s*</explanation>", re.DOTALL)

BAN_SETS = {"ban_dq": C.DOUBLE_QUOTES, "ban_dq_sq": C.DOUBLE_QUOTES + C.SINGLE_QUOTES}
COND_RE = re.compile(r"^(greedy|ban_dq|ban_dq_sq|sample_t1|greedy_L(\d+))$")


# ----------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """A decode condition: greedy or sampled, which characters are banned, which layer's vector."""

    name: str
    temperature: float
    n_samples: int
    banned_chars: str = ""
    layer: int | None = None  # None: the family's own layer K (column activation_vector)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def parse_condition(
    name: str, *, n_samples: int | None = None, temperature: float | None = None
) -> Condition:
    """`greedy`, `ban_dq`, `ban_dq_sq`, `sample_t1` (n_samples at `temperature`, both required:
    `decode.n_samples`, `decode.temperature`), `greedy_L{k}`."""
    m = COND_RE.match(name)
    if not m:
        raise ValueError(
            f"unknown decode condition {name!r}; expected greedy, ban_dq, ban_dq_sq, sample_t1 "
            "or greedy_L<k>"
        )
    if name == "sample_t1":
        if n_samples is None or temperature is None:
            raise ValueError(
                "sample_t1 needs n_samples and temperature (decode.n_samples, decode.temperature)"
            )
        if n_samples < 1 or temperature <= 0:
            raise ValueError(
                f"sample_t1 needs n_samples ≥ 1 and temperature > 0, got {n_samples}, {temperature}"
            )
        return Condition(name, float(temperature), int(n_samples))
    if m.group(2) is not None:
        return Condition(name, 0.0, 1, layer=int(m.group(2)))
    return Condition(name, 0.0, 1, BAN_SETS.get(name, ""))


# ----------------------------------------------------------------------------- text


def extract_explanation(text: str) -> str | None:
    """First `<explanation>…</explanation>` span, stripped; None is a tag failure (SPEC §4.8)."""
    m = EXPLANATION_RE.search(text)
    return m.group(1).strip() if m else None


def count_leaks(text: str, chars: str) -> int:
    """Occurrences of banned characters in generated text (must be 0 under a ban)."""
    if not chars:
        return 0
    banned = set(chars)
    return sum(1 for ch in text if ch in banned)


def banned_token_ids(tokenizer, chars: str) -> list[int]:
    """Every vocabulary id whose decoded text contains any of `chars` (SPEC §4.7)."""
    if not chars:
        return []
    banned = set(chars)
    ids = []
    for i in range(len(tokenizer)):
        piece = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if any(ch in banned for ch in piece):
            ids.append(i)
    return ids


def sample_seed(seed: int, doc_id: str, position: int, sample: int) -> int:
    """Seed of one sample, from stable keys only (63 bits, valid for torch and vLLM)."""
    digest = hashlib.sha256(f"{seed}|{doc_id}|{position}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """One generation: a row of the activation shard and a sample index."""

    row: int
    doc_id: str
    position: int
    sample: int
    seed: int


def build_requests(
    doc_ids: Sequence[str], positions: Sequence[int], cond: Condition, seed: int
) -> list[Request]:
    return [
        Request(
            r, doc_ids[r], int(positions[r]), s, sample_seed(seed, doc_ids[r], int(positions[r]), s)
        )
        for r in range(len(doc_ids))
        for s in range(cond.n_samples)
    ]


@dataclass
class Generation:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" | "length"


# ----------------------------------------------------------------------------- generation


def decode_rows(
    backend,
    base_embeds: torch.Tensor,
    marker_pos: int,
    injection_scale: float,
    vectors: np.ndarray,
    doc_ids: Sequence[str],
    positions: Sequence[int],
    cond: Condition,
    seed: int,
    batch_size: int,
    progress: bool = True,
) -> list[dict]:
    """Generate for every (row, sample); rows with unusable vectors get an error, no text."""
    prompts = build_prompt_embeds(base_embeds, marker_pos, vectors, injection_scale)
    requests = build_requests(doc_ids, positions, cond, seed)
    todo = [r for r in requests if prompts.ok[r.row]]
    if getattr(backend, "schedules_itself", False):
        batch_size = max(1, len(todo))  # one call: the engine batches continuously
    results: dict[tuple[int, int], Generation] = {}
    for start in tqdm(
        range(0, len(todo), batch_size),
        desc=f"decode {cond.name}",
        unit="batch",
        disable=not progress,
    ):
        batch = todo[start : start + batch_size]
        embeds = prompts.embeds[[r.row for r in batch]]
        for r, g in zip(batch, backend.generate(embeds, batch, cond), strict=True):
            results[(r.row, r.sample)] = g
    rows = []
    for r in requests:
        g = results.get((r.row, r.sample))
        text = g.text if g else None
        rows.append(
            {
                "row": r.row,
                "doc_id": r.doc_id,
                "position": r.position,
                "sample": r.sample,
                "seed": r.seed,
                "text": text,
                "explanation": extract_explanation(text) if text is not None else None,
                "n_tokens": g.n_tokens if g else 0,
                "finish_reason": g.finish_reason if g else "error",
                "error": prompts.errors[r.row],
                "leaks": count_leaks(text or "", cond.banned_chars),
            }
        )
    return rows
