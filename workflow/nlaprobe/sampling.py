"""Stage-0 position sampling, bit-for-bit as the release (SPEC §4.3), and cross-tokenizer
alignment by character offset (SPEC §4.4). Pure functions: ids and offsets in, indices out.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence

import numpy as np


def doc_id_for(corpus: str, split: str, index: int) -> str:
    """`{corpus}:{split}:{absolute_doc_index}` (no dataset config name)."""
    return f"{corpus}:{split}:{index}"


def doc_rng(seed: int, doc_id: str) -> random.Random:
    """Per-document RNG keyed by the raw 32-byte SHA-256 digest of f"{seed}|{doc_id}"."""
    return random.Random(hashlib.sha256(f"{seed}|{doc_id}".encode()).digest())


def candidate_positions(
    input_ids: Sequence[int], special_ids: Collection[int], min_position: int
) -> list[int]:
    """Token indices i ≥ min_position whose id is not a special token, in order."""
    special = set(special_ids)
    return [i for i in range(min_position, len(input_ids)) if input_ids[i] not in special]


def sample_positions(
    input_ids: Sequence[int],
    special_ids: Collection[int],
    *,
    seed: int,
    doc_id: str,
    k: int,
    min_position: int,
) -> list[int]:
    """`rng.sample(candidates, min(k, len(candidates)))`, kept in sampled order."""
    candidates = candidate_positions(input_ids, special_ids, min_position)
    return doc_rng(seed, doc_id).sample(candidates, min(k, len(candidates)))


def align_to_char_ends(
    char_ends: Sequence[int],
    token_ends: Sequence[int],
    valid: Sequence[bool],
) -> tuple[np.ndarray, np.ndarray]:
    """For each target character offset, the valid token whose span end is nearest.

    `token_ends[i]` is the end offset of token i in the document, `valid[i]` false for special
    tokens (and padding). Ties go to the earlier token. Returns (token indices, |error| in chars).
    """
    ends = np.asarray(token_ends, dtype=np.int64)
    ok = np.asarray(valid, dtype=bool)
    if not ok.any():
        raise ValueError("no valid token to align to")
    idx_valid = np.nonzero(ok)[0]
    cand = ends[idx_valid]
    targets = np.asarray(char_ends, dtype=np.int64)
    dist = np.abs(cand[None, :] - targets[:, None])
    best = dist.argmin(axis=1)  # argmin returns the first (earliest) minimum
    return idx_valid[best], dist[np.arange(len(targets)), best]
