"""Pure pieces of the demo training recipe (nlaprobe.train, nlaprobe.demo)."""

import numpy as np
import pytest

from nlaprobe import train as T
from nlaprobe.demo import training_documents


def test_target_explanation_quotes_last_words_without_nested_quotes():
    ctx = 'The "value" of x is \u201cnot\u201d the  same as y\'s'
    got = T.target_explanation(ctx, "typesseq-mutable", 3)
    assert got == 'Topic: typesseq mutable. The text reads "same as y\'s".'
    # quote characters inside the context never nest inside the quoted span
    got = T.target_explanation('he said "stop"', None, 2)
    assert got == 'Topic: text. The text reads "said stop".'
    got = T.target_explanation("he said \u300cstop\u300d", None, 2, ("'", "'"))
    assert got == "Topic: text. The text reads 'said stop'."


def test_quote_marks_follow_the_weights_and_the_context_only():
    import zlib

    contexts = [f"context number {i}" for i in range(2000)]
    marks = [T.quote_marks(c) for c in contexts]
    assert marks == [T.quote_marks(c) for c in contexts]  # stable
    for c, m in zip(contexts[:50], marks[:50], strict=True):
        h = zlib.crc32(c.encode()) % 20
        expected = ('"', '"') if h < 12 else ("'", "'") if h < 17 else ("\u300c", "\u300d")
        assert m == expected
    counts = {m: marks.count(m) for m in set(marks)}
    assert 0.5 < counts[('"', '"')] / 2000 < 0.7
    assert 0.15 < counts[("'", "'")] / 2000 < 0.35
    assert 0.05 < counts[("\u300c", "\u300d")] / 2000 < 0.25


def test_ridge_head_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(500, 8))
    w = rng.normal(size=(8, 8))
    y = h @ w.T
    est = T.ridge_head(h, y, alpha=1e-6)
    assert est.shape == (8, 8)
    np.testing.assert_allclose(est, w, atol=1e-4)
    # shrinkage grows with alpha
    assert np.linalg.norm(T.ridge_head(h, y, alpha=1e4)) < np.linalg.norm(est)


def test_lr_schedule_warms_up_and_decays():
    f = T._lr_lambda(100, warmup=10)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5, abs=0.01)
    assert f(99) >= 0.05


def test_training_documents_hold_out_the_eval_range():
    docs = training_documents([[0, 80]])
    idx = {d.doc_idx for d in docs}
    assert idx and min(idx) == 80
    assert len(training_documents(None)) == len(docs) + 80
    assert all(d.topic for d in docs)
