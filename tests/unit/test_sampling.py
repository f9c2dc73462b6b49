"""Stage-0 sampling (SPEC §4.3) against the release's test vectors, and cross-tokenizer
alignment (SPEC §4.4) against hand-computed cases."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from nlaprobe.sampling import (
    align_to_char_ends,
    candidate_positions,
    doc_id_for,
    doc_rng,
    sample_positions,
)

FINEWEB_0 = "HuggingFaceFW/fineweb:train:0"
ULTRA_7 = "openbmb/Ultra-FineWeb:en:7"


def plain_ids(n: int) -> list[int]:
    """n non-special token ids."""
    return list(range(1000, 1000 + n))


def reference_sample(ids, special, seed, doc_id, k, min_position):
    """The release's procedure written out independently of nlaprobe.sampling."""
    rng = random.Random(hashlib.sha256(f"{seed}|{doc_id}".encode()).digest())
    cands = [i for i in range(len(ids)) if i >= min_position and ids[i] not in special]
    return rng.sample(cands, min(k, len(cands)))


# ----------------------------------------------------------------------------- test vectors


def test_release_vector_fineweb():
    got = sample_positions(plain_ids(100), set(), seed=42, doc_id=FINEWEB_0, k=10, min_position=50)
    assert got == [95, 68, 51, 88, 79, 96, 87, 93, 56, 50]


def test_release_vector_ultra_fineweb():
    got = sample_positions(plain_ids(55), set(), seed=42, doc_id=ULTRA_7, k=5, min_position=50)
    assert got == [51, 50, 52, 54, 53]


def test_positions_kept_in_sampled_order_not_sorted():
    got = sample_positions(plain_ids(100), set(), seed=42, doc_id=FINEWEB_0, k=10, min_position=50)
    assert got != sorted(got)


# ----------------------------------------------------------------------------- candidates


def test_special_tokens_are_never_candidates():
    ids = plain_ids(100)
    special = {7, 8, 9}
    for i in (0, 50, 60, 61, 75, 99):
        ids[i] = 7 + i % 3
    cands = candidate_positions(ids, special, 50)
    assert cands == [i for i in range(50, 100) if i not in (50, 60, 61, 75, 99)]
    got = sample_positions(ids, special, seed=42, doc_id=FINEWEB_0, k=40, min_position=50)
    assert len(got) == 40
    assert not {50, 60, 61, 75, 99} & set(got)
    assert got == reference_sample(ids, special, 42, FINEWEB_0, 40, 50)


def test_bos_at_index_zero_shifts_candidates():
    """With a BOS (a special token) prepended the sequence has 101 tokens: index 100 becomes a
    candidate and the sample changes accordingly."""
    ids = [2, *plain_ids(100)]
    got = sample_positions(ids, {2}, seed=42, doc_id=FINEWEB_0, k=10, min_position=50)
    assert got == reference_sample(ids, {2}, 42, FINEWEB_0, 10, 50)
    assert got != [95, 68, 51, 88, 79, 96, 87, 93, 56, 50]


def test_k_larger_than_candidates_gives_all_candidates():
    got = sample_positions(plain_ids(55), set(), seed=42, doc_id=ULTRA_7, k=50, min_position=50)
    assert sorted(got) == [50, 51, 52, 53, 54]
    assert got == reference_sample(plain_ids(55), set(), 42, ULTRA_7, 50, 50)


@pytest.mark.parametrize("n", [0, 1, 49, 50])
def test_fewer_than_min_position_tokens_gives_nothing(n):
    assert (
        sample_positions(plain_ids(n), set(), seed=42, doc_id=ULTRA_7, k=5, min_position=50) == []
    )


def test_only_special_tokens_after_min_position_gives_nothing():
    ids = [*plain_ids(50), 3, 3, 3]
    assert sample_positions(ids, {3}, seed=42, doc_id=ULTRA_7, k=5, min_position=50) == []


def test_min_position_is_a_parameter():
    got = sample_positions(plain_ids(30), set(), seed=1, doc_id="c:s:3", k=4, min_position=16)
    assert got == reference_sample(plain_ids(30), set(), 1, "c:s:3", 4, 16)
    assert all(16 <= p < 30 for p in got)


# ----------------------------------------------------------------------------- rng and doc ids


def test_rng_seed_is_the_raw_sha256_digest():
    digest = hashlib.sha256(f"42|{FINEWEB_0}".encode()).digest()
    assert len(digest) == 32
    ours = doc_rng(42, FINEWEB_0)
    ref = random.Random(digest)
    assert [ours.random() for _ in range(20)] == [ref.random() for _ in range(20)]
    # not the hex digest, nor the digest as an integer
    hexed = random.Random(hashlib.sha256(f"42|{FINEWEB_0}".encode()).hexdigest())
    as_int = random.Random(int.from_bytes(digest, "big"))
    first = doc_rng(42, FINEWEB_0).random()
    assert first != hexed.random()
    assert first != as_int.random()


def test_rng_depends_on_seed_and_doc_id_and_not_process_state():
    random.seed(123)
    a = sample_positions(plain_ids(100), set(), seed=42, doc_id=FINEWEB_0, k=10, min_position=50)
    random.seed(456)
    b = sample_positions(plain_ids(100), set(), seed=42, doc_id=FINEWEB_0, k=10, min_position=50)
    assert a == b
    other_seed = sample_positions(
        plain_ids(100), set(), seed=43, doc_id=FINEWEB_0, k=10, min_position=50
    )
    other_doc = sample_positions(
        plain_ids(100),
        set(),
        seed=42,
        doc_id="HuggingFaceFW/fineweb:train:1",
        k=10,
        min_position=50,
    )
    assert other_seed != a
    assert other_doc != a


def test_doc_id_for():
    assert doc_id_for("HuggingFaceFW/fineweb", "train", 0) == FINEWEB_0
    assert doc_id_for("openbmb/Ultra-FineWeb", "en", 7) == ULTRA_7
    assert doc_id_for("builtin:pydoc", "topics", 100200) == "builtin:pydoc:topics:100200"


# ----------------------------------------------------------------------------- alignment

#                 token: 0  1  2   3
TOKEN_ENDS = [3, 7, 12, 20]


@pytest.mark.parametrize(
    ("target", "index", "error"),
    [
        (7, 1, 0),  # exact end
        (9, 1, 2),  # |7-9|=2 < |12-9|=3
        (10, 2, 2),  # |12-10|=2 < |7-10|=3
        (16, 2, 4),  # tie |12-16| = |20-16|: the earlier token
        (5, 0, 2),  # tie |3-5| = |7-5|: the earlier token
        (0, 0, 3),  # before everything
        (100, 3, 80),  # after everything
    ],
)
def test_align_hand_computed(target, index, error):
    idx, err = align_to_char_ends([target], TOKEN_ENDS, [True] * 4)
    assert idx.tolist() == [index]
    assert err.tolist() == [error]


def test_align_many_targets_keep_order():
    idx, err = align_to_char_ends([100, 7, 16, 0], TOKEN_ENDS, [True] * 4)
    assert idx.tolist() == [3, 1, 2, 0]
    assert err.tolist() == [80, 0, 4, 3]


def test_align_skips_invalid_tokens():
    valid = [False, True, True, False]
    idx, err = align_to_char_ends([3, 25, 16], TOKEN_ENDS, valid)
    # 3: token 0 (end 3) is invalid -> token 1 (end 7); 25: token 3 invalid -> token 2 (end 12);
    # 16: the tie with token 3 disappears -> token 2
    assert idx.tolist() == [1, 2, 2]
    assert err.tolist() == [4, 13, 4]


def test_align_bos_with_zero_width_span_is_skipped():
    """Gemma's BOS has the offset (0, 0); a target at 0 must land on the first real token."""
    idx, err = align_to_char_ends([0, 1], [0, 1, 4], [False, True, True])
    assert idx.tolist() == [1, 1]
    assert err.tolist() == [1, 0]


def test_align_returns_integer_arrays():
    idx, err = align_to_char_ends([9], TOKEN_ENDS, [True] * 4)
    assert isinstance(idx, np.ndarray) and isinstance(err, np.ndarray)
    assert np.issubdtype(idx.dtype, np.integer) and np.issubdtype(err.dtype, np.integer)


def test_align_no_targets():
    idx, err = align_to_char_ends([], TOKEN_ENDS, [True] * 4)
    assert idx.tolist() == [] and err.tolist() == []


@pytest.mark.parametrize(
    ("ends", "valid"),
    [([3, 7], [False, False]), ([], [])],
    ids=["all-invalid", "no-tokens"],
)
def test_align_without_a_valid_token_is_an_error(ends, valid):
    with pytest.raises(ValueError, match="no valid token"):
        align_to_char_ends([5], ends, valid)
