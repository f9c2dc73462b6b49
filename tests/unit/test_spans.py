"""Unit tests of nlaprobe.spans: span detection, redaction and the verbatim check, on hand-written
texts with hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest

from nlaprobe import constants as C
from nlaprobe import spans as S


def found(text: str) -> list[tuple[str, str, str]]:
    """(kind, span with marks, content) of every span of `text`."""
    return [
        (s.kind, text[s.start : s.end], text[s.inner_start : s.inner_end])
        for s in S.find_spans(text)
    ]


# --- quote roles --------------------------------------------------------------------------------


def test_every_quote_character_has_a_role():
    assert set(S._DOUBLE_OPENERS + S._DOUBLE_CLOSERS + "\u201c") == set(C.DOUBLE_QUOTES)
    assert set(S._SINGLE_OPENERS + S._SINGLE_CLOSERS + "\u2018") == set(C.SINGLE_QUOTES)


def test_span_fields():
    assert S.find_spans('a "bc" d') == [
        S.Span(start=2, end=6, inner_start=3, inner_end=5, kind="double")
    ]
    assert S.KINDS == S.QUOTE_KINDS + S.HATCH_KINDS


# --- double quotes ------------------------------------------------------------------------------


def test_straight_and_typographic_double_quotes():
    text = (
        'He said "hi", \u201cbye\u201d, \u201eguten\u201c, '
        "\u201ex\u201d, \u201fy\u201d, \u00abz\u00bb"
    )
    assert found(text) == [
        ("double", '"hi"', "hi"),
        ("double", "\u201cbye\u201d", "bye"),
        ("double", "\u201eguten\u201c", "guten"),
        ("double", "\u201ex\u201d", "x"),
        ("double", "\u201fy\u201d", "y"),
        ("double", "\u00abz\u00bb", "z"),
    ]


def test_fullwidth_and_empty_double_quotes():
    assert found('\uff02ab\uff02 and ""') == [
        ("double", "\uff02ab\uff02", "ab"),
        ("double", '""', ""),
    ]


def test_left_double_quote_closes_only_a_low_opened_span():
    # “a “b” : the second “ does not close the first, the ” does
    assert found("\u201ca \u201cb\u201d") == [("double", "\u201ca \u201cb\u201d", "a \u201cb")]


# --- single quotes and apostrophes --------------------------------------------------------------


def test_straight_and_typographic_single_quotes():
    text = "x 'a b' \u2018c\u2019 \u201ad\u2018 \u201be\u2019 \uff07f\uff07"
    assert found(text) == [
        ("single", "'a b'", "a b"),
        ("single", "\u2018c\u2019", "c"),
        ("single", "\u201ad\u2018", "d"),
        ("single", "\u201be\u2019", "e"),
        ("single", "\uff07f\uff07", "f"),
    ]


def test_apostrophes_inside_words_are_not_quotes():
    assert found("don't do it, the model's view, rock\u2019n\u2019roll, it\u2019s fine") == []
    assert found("the model's 'answer' isn't it") == [("single", "'answer'", "answer")]
    assert found("'don't stop'") == [("single", "'don't stop'", "don't stop")]


def test_plural_possessive():
    # not an opener ...
    assert found("the students' work was good") == []
    # ... but it closes an open span
    assert found("'the students' work'") == [("single", "'the students'", "the students")]
    assert found("\u2018the students\u2019 work\u2019") == [
        ("single", "\u2018the students\u2019", "the students")
    ]


def test_single_quote_whitespace_rules():
    assert found("a ' b ' c") == []  # opener followed by a space, closer after a space
    assert found("''") == []
    assert found("x 'a 'b' c") == [("single", "'a 'b'", "a 'b")]


# --- nesting and unterminated spans -------------------------------------------------------------


def test_single_inside_double_is_one_double_span():
    text = "\"He said 'hi' today\""
    assert found(text) == [("double", text, "He said 'hi' today")]
    assert S.uses_single_quotes(text) is False


def test_double_inside_single_is_one_single_span():
    text = "'He said \"hi\" today'"
    assert found(text) == [("single", text, 'He said "hi" today')]
    assert S.uses_single_quotes(text) is True


def test_overlapping_candidates_first_start_wins():
    assert found("'a \"b' c\"") == [("single", "'a \"b'", 'a "b')]


def test_unterminated_quotes_yield_no_span():
    assert found('a "b c') == []
    assert found("a \u201cb c") == []
    assert found("x 'y z") == []
    assert found('a \'b and "c" d') == [("double", '"c"', "c")]
    assert S.redact('a \'b and "c" d', "prose_only") == "a 'b and d"


# --- escape hatches -----------------------------------------------------------------------------


def test_corner_brackets_with_nesting():
    text = "\u300ca\u300eb\u300fc\u300d and \u300ex\u300f and \u300copen"
    assert found(text) == [
        ("corner", "\u300ca\u300eb\u300fc\u300d", "a\u300eb\u300fc"),
        ("corner", "\u300ex\u300f", "x"),
    ]
    assert found("\u300ca\u300cb\u300dc\u300d") == [
        ("corner", "\u300ca\u300cb\u300dc\u300d", "a\u300cb\u300dc")
    ]


def test_italic_bold_and_bullets():
    text = "*italic* and **bold text** and **a *b* c**"
    assert found(text) == [
        ("italic", "*italic*", "italic"),
        ("italic", "**bold text**", "bold text"),
        ("italic", "**a *b* c**", "a *b* c"),
    ]
    assert found("* bullet one\n* bullet two") == []
    assert found("a lone * star") == []
    assert found("2 * 3 * 4") == []
    assert found("*a\nb*") == []
    assert found("*** not bold ***") == []
    assert found("*a *b*") == [("italic", "*a *b*", "a *b")]
    assert found("**half*") == []


def test_cued_and_uncued_parentheses():
    assert found("it reads (the cat sat)") == [("paren", "(the cat sat)", "the cat sat")]
    assert found("the Word(cat)") == [("paren", "(cat)", "cat")]
    assert found("the tokens (a (b) c) here") == [("paren", "(a (b) c)", "a (b) c")]
    assert found("x (Verbatim: on the mat) y") == [
        ("paren", "(Verbatim: on the mat)", "on the mat")
    ]
    assert found("(text:foo)") == [("paren", "(text:foo)", "foo")]
    # ordinary parentheticals are prose
    assert found("a sentence (an aside) here") == []
    assert found("it threads (x) through") == []  # the word is "threads", not "reads"
    assert found("it reads  (x)") == []  # only one space is ignored
    assert found("it reads (unclosed") == []


def test_em_dash_pairs():
    assert found("word \u2014 an aside \u2014 word") == [
        ("emdash", "\u2014 an aside \u2014", "an aside")
    ]
    assert found("a\u2014b\u2014c") == [("emdash", "\u2014b\u2014", "b")]
    assert found("a lone \u2014 dash") == []
    assert found("one \u2014 line\nother \u2014 line") == []
    assert found("a \u2014\u2014 b") == []
    assert found("a -- an aside -- b") == [("emdash", "-- an aside --", "an aside")]
    assert found("a -- lone dash") == []
    assert found("a --x-- b") == []
    assert found("a \u2014 mixed -- b") == []


def test_mixed_kinds():
    text = (
        "It says \"hello\" and 'bye', \u300cko\u300d, *emph*, the phrase (on the mat) "
        "\u2014 a pet \u2014 end"
    )
    assert [k for k, _, _ in found(text)] == [
        "double",
        "single",
        "corner",
        "italic",
        "paren",
        "emdash",
    ]
    assert S.span_kinds(text) == set(S.KINDS)
    assert S.hatch_kinds(text) == {"corner", "italic", "paren", "emdash"}
    assert S.uses_hatch(text) is True
    assert S.uses_single_quotes(text) is True
    plain = 'It says "hello" only'
    assert S.span_kinds(plain) == {"double"}
    assert S.hatch_kinds(plain) == set()
    assert S.uses_hatch(plain) is False
    assert S.uses_single_quotes(plain) is False


def test_spans_are_sorted_disjoint_and_well_formed():
    text = "a 'b' \"c 'd' e\" *f* (g) says (h) \u2014 i \u2014 \u300cj\u300d \"unterminated"
    spans = S.find_spans(text)
    assert len(spans) == 6
    for s in spans:
        assert s.start < s.inner_start <= s.inner_end < s.end
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:], strict=False))


# --- redaction ----------------------------------------------------------------------------------

SENTENCE = (
    "The AV says \"the cat\" \u2014 a pet \u2014 and 'sat' (verbatim: on the mat), then *fine*."
)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("full", SENTENCE),
        # the quoted spans "the cat" and 'sat' are edited; the hatches (em-dash aside, cued
        # parenthetical, italic) stay as they are
        ("prose_only", "The AV says \u2014 a pet \u2014 and (verbatim: on the mat), then *fine*."),
        (
            "spans_empty",
            'The AV says "" \u2014 a pet \u2014 and "" (verbatim: on the mat), then *fine*.',
        ),
        (
            "spans_ellipsis",
            "The AV says \u2026 \u2014 a pet \u2014 and \u2026 (verbatim: on the mat), then *fine*.",
        ),
        (
            "spans_redacted",
            "The AV says REDACTED \u2014 a pet \u2014 and REDACTED (verbatim: on the mat), "
            "then *fine*.",
        ),
        ("spans_only_marked", "\"the cat\" 'sat'"),
        ("spans_only_bare", "the cat sat"),
    ],
)
def test_redaction_variants(variant, expected):
    assert S.redact(SENTENCE, variant) == expected


# Quoted spans of every family mixed with hatches; a quote inside an em-dash aside.
MIXED = (
    'The AV quotes "the cat" and \'sat\' \u2014 an aside with "mat" \u2014 then *soft* and '
    "\u300cok\u300d (verbatim: rug)."
)


def test_mixed_quotes_and_hatches_spans_by_hand():
    # quoted spans (the quote families scanned alone): "the cat" 9 chars, 'sat' 5, "mat" 5 (inside
    # the em-dash aside, still a quoted span), 「ok」 4: 4 spans, 23 characters
    assert [(s.kind, MIXED[s.start : s.end]) for s in S.quoted_spans(MIXED)] == [
        ("double", '"the cat"'),
        ("single", "'sat'"),
        ("double", '"mat"'),
        ("corner", "\u300cok\u300d"),
    ]
    # hatches (italic, paren, em dash scanned alone): the aside "— an aside with "mat" —" is 23
    # characters, 18 of them outside the quoted "mat"; *soft* 6; (verbatim: rug) 15
    assert [(s.kind, MIXED[s.start : s.end]) for s in S.unquoted_hatches(MIXED)] == [
        ("emdash", '\u2014 an aside with "mat" \u2014'),
        ("italic", "*soft*"),
        ("paren", "(verbatim: rug)"),
    ]
    # total: "The AV quotes " 14 + 9 + " and " 5 + 5 + " " 1 + 23 + " then " 6 + 6 + " and " 5
    # + 4 + " " 1 + 15 + "." 1 = 95
    assert len(MIXED) == 95
    assert S.span_stats(MIXED) == {
        "n_spans": 4,
        "span_chars": 23,
        "n_hatches": 3,
        "hatch_chars": 18 + 6 + 15,
        "total_chars": 95,
    }


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("full", MIXED),
        # each quoted span -> one space, then runs of spaces collapse
        (
            "prose_only",
            "The AV quotes and \u2014 an aside with \u2014 then *soft* and (verbatim: rug).",
        ),
        (
            "spans_empty",
            'The AV quotes "" and "" \u2014 an aside with "" \u2014 then *soft* and "" '
            "(verbatim: rug).",
        ),
        (
            "spans_ellipsis",
            "The AV quotes \u2026 and \u2026 \u2014 an aside with \u2026 \u2014 then *soft* and "
            "\u2026 (verbatim: rug).",
        ),
        (
            "spans_redacted",
            "The AV quotes REDACTED and REDACTED \u2014 an aside with REDACTED \u2014 then *soft* "
            "and REDACTED (verbatim: rug).",
        ),
        ("spans_only_marked", '"the cat" \'sat\' "mat" \u300cok\u300d'),
        ("spans_only_bare", "the cat sat mat ok"),
    ],
)
def test_mixed_quotes_and_hatches_redaction_by_hand(variant, expected):
    assert S.redact(MIXED, variant) == expected


def test_hatches_inside_or_across_quoted_spans():
    # an italic wholly inside a quoted span is part of the quote, not a hatch
    text = 'a "b *c* d" e'
    assert S.span_stats(text) == {
        "n_spans": 1,
        "span_chars": 9,
        "n_hatches": 0,
        "hatch_chars": 0,
        "total_chars": 13,
    }
    assert S.redact(text, "prose_only") == "a e"
    # an italic *a "b* that runs into the quoted span "b* c": a hatch, whose characters outside
    # the quote are *a and the space (3)
    text = '*a "b* c"'
    assert [text[h.start : h.end] for h in S.unquoted_hatches(text)] == ['*a "b*']
    assert S.span_stats(text) == {
        "n_spans": 1,
        "span_chars": 6,
        "n_hatches": 1,
        "hatch_chars": 3,
        "total_chars": 9,
    }
    # E2 still sees the outermost span of every kind: the aside hides its quote there
    aside = 'x \u2014 he said "hi" \u2014 y'
    assert S.span_kinds(aside) == {"emdash"}
    assert [s.kind for s in S.quoted_spans(aside)] == ["double"]


def test_find_spans_restricted_to_kinds():
    text = "\u300ca\u300d *b* 'c' reads (d)"
    assert [s.kind for s in S.find_spans(text)] == ["corner", "italic", "single", "paren"]
    assert [s.kind for s in S.find_spans(text, ("single", "paren"))] == ["single", "paren"]
    assert S.find_spans(text, ()) == []
    with pytest.raises(ValueError, match=r"kinds has unknown kind\(s\) \['bold'\]; valid: double"):
        S.find_spans(text, ("italic", "bold"))
    with pytest.raises(ValueError, match="kinds must be a collection of kinds, got the str"):
        S.find_spans(text, "italic")


def test_redaction_without_spans():
    text = "No quotes here."
    assert S.redact(text, "prose_only") == "No quotes here."
    assert S.redact(text, "spans_only_marked") == ""
    assert S.redact(text, "spans_only_bare") == ""
    # hatches only: nothing is redacted
    hatches = "An *aside* \u2014 here \u2014 only."
    assert S.redact(hatches, "spans_redacted") == hatches
    assert S.redact(hatches, "spans_only_marked") == ""


def test_redaction_whitespace_cleanup():
    text = 'Line one "x"\n\n  line two ( y ) .'
    assert S.redact(text, "full") == text
    assert S.redact(text, "spans_redacted") == "Line one REDACTED line two ( y)."
    assert S.redact(text, "prose_only") == "Line one line two ( y)."
    # a deleted span never merges the words on either side; a placeholder is inserted as is
    assert S.redact('a"b"c', "prose_only") == "a c"
    assert S.redact('a"b"c', "spans_empty") == 'a""c'
    assert S.redact('"Hi" he said.', "prose_only") == "he said."


def test_redaction_bare_skips_blank_contents():
    assert S.redact('a "" b "c"', "spans_only_bare") == "c"
    assert S.redact('a "" b "c"', "spans_only_marked") == '"" "c"'


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(
        ValueError, match="unknown redaction variant 'bogus'; valid: full, prose_only"
    ):
        S.redact("text", "bogus")


def test_non_str_text_is_rejected():
    with pytest.raises(ValueError, match="text must be a str, got NoneType"):
        S.find_spans(None)
    with pytest.raises(ValueError, match="context must be a str, got int"):
        S.longest_shared_run_text("a", 3)


# --- span_stats ---------------------------------------------------------------------------------


def test_span_stats():
    # a _ "bc" _ d _ *ef* : 13 chars, the quoted span "bc" (4) and the hatch *ef* (4)
    assert S.span_stats('a "bc" d *ef*') == {
        "n_spans": 1,
        "span_chars": 4,
        "n_hatches": 1,
        "hatch_chars": 4,
        "total_chars": 13,
    }
    zero = {"n_spans": 0, "span_chars": 0, "n_hatches": 0, "hatch_chars": 0}
    assert S.span_stats("plain") == {**zero, "total_chars": 5}
    assert S.span_stats("") == {**zero, "total_chars": 0}
    # quoted: "the cat" 9, 'sat' 5; hatches: — a pet — 9, (verbatim: on the mat) 22, *fine* 6
    assert S.span_stats(SENTENCE) == {
        "n_spans": 2,
        "span_chars": 14,
        "n_hatches": 3,
        "hatch_chars": 37,
        "total_chars": 78,
    }


# --- verbatim check -----------------------------------------------------------------------------


def test_normalize_words():
    assert S.normalize_words("Don't STOP, the model's \u201cwell-known\u201d 3.14 $5!") == [
        "dont",
        "stop",
        "the",
        "models",
        "well",
        "known",
        "3",
        "14",
        "5",
    ]
    assert S.normalize_words("the cat\u2014a dog") == S.normalize_words("the cat \u2014 a dog")
    assert S.normalize_words("  a\tb\n\nc ") == ["a", "b", "c"]
    assert S.normalize_words("\u2014 ... !!") == []
    assert S.normalize_words("") == []
    assert S.normalize_words("\u00c9T\u00c9 caf\u00e9") == ["\u00e9t\u00e9", "caf\u00e9"]


def test_longest_shared_run_by_hand():
    assert S.longest_shared_run(["a", "b"], ["c", "d"]) == 0
    assert S.longest_shared_run([], ["a"]) == 0
    assert S.longest_shared_run(["a"], []) == 0
    # run in the middle of both
    a = ["x", "y", "the", "cat", "sat", "z"]
    b = ["q", "the", "cat", "sat", "on"]
    assert S.longest_shared_run(a, b) == 3
    assert S.longest_shared_run(b, a) == 3
    # repeated words
    assert S.longest_shared_run(["a", "a", "a"], ["a", "a"]) == 2
    assert S.longest_shared_run(["a", "b", "a", "b", "a"], ["b", "a", "b", "a", "c"]) == 4
    assert S.longest_shared_run(["x", "y", "x", "y", "z"], ["x", "y", "z"]) == 3
    # the common words are not contiguous in b
    assert S.longest_shared_run(["a", "b", "c"], ["a", "x", "b", "x", "c"]) == 1


def test_longest_shared_run_text_ignores_case_and_punctuation():
    assert S.longest_shared_run_text('It reads "The CAT, sat!" here', "and the cat sat down") == 3
    assert S.longest_shared_run_text("Don't stop", "dont STOP now") == 2
    assert S.longest_shared_run_text("nothing shared", "at all") == 0
    assert S.longest_shared_run_text("", "a b") == 0


def test_shuffled_pairing_small_n():
    assert S.shuffled_pairing(0, 0).shape == (0,)
    assert S.shuffled_pairing(1, 5).tolist() == [0]
    assert S.shuffled_pairing(2, 5).tolist() == [1, 0]
    assert S.shuffled_pairing(4, 0).dtype == np.int64


def test_shuffled_pairing_is_a_deterministic_derangement():
    for n in (2, 3, 4, 5, 10, 50):
        for seed in range(8):
            p = S.shuffled_pairing(n, seed)
            assert sorted(p.tolist()) == list(range(n))
            assert int(np.sum(p == np.arange(n))) == 0
            assert np.array_equal(p, S.shuffled_pairing(n, seed))
    assert not np.array_equal(S.shuffled_pairing(50, 0), S.shuffled_pairing(50, 1))


def test_shuffled_pairing_is_the_first_derangement_drawn():
    rng = np.random.default_rng(7)
    while True:
        want = rng.permutation(6)
        if not np.any(want == np.arange(6)):
            break
    assert S.shuffled_pairing(6, 7).tolist() == want.tolist()


@pytest.mark.parametrize(("n", "seed"), [(-1, 0), (3, -1), (2.5, 0), (True, 0)])
def test_shuffled_pairing_rejects_bad_arguments(n, seed):
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        S.shuffled_pairing(n, seed)


def test_verbatim_stats_by_hand():
    # sorted 0..8, 20: median (4 + 5)/2; p90 at 0.9 * 9 = 8.1 -> 8 + 0.1 * (20 - 8) = 9.2;
    # mean 56/10; runs >= 6: 6, 7, 8, 20
    stats = S.verbatim_stats([0, 1, 2, 3, 4, 5, 6, 7, 8, 20])
    assert stats["n"] == 10
    assert stats["median"] == 4.5
    assert stats["p90"] == pytest.approx(9.2)
    assert stats["mean"] == pytest.approx(5.6)
    assert stats["share_ge"] == 0.4
    assert stats["max"] == 20
    # [3, 1, 2]: sorted 1, 2, 3; p90 at 0.9 * 2 = 1.8 -> 2 + 0.8 * 1 = 2.8; runs >= 2: 2 of 3
    stats = S.verbatim_stats(np.array([3, 1, 2]), threshold=2)
    assert stats == {
        "n": 3,
        "median": 2.0,
        "p90": pytest.approx(2.8),
        "mean": 2.0,
        "share_ge": pytest.approx(2 / 3),
        "max": 3,
    }


def test_verbatim_stats_empty_and_bad():
    assert S.verbatim_stats([]) == {
        "n": 0,
        "median": None,
        "p90": None,
        "mean": None,
        "share_ge": None,
        "max": None,
    }
    with pytest.raises(ValueError, match="index 1 is -1.0"):
        S.verbatim_stats([2, -1])
    with pytest.raises(ValueError, match="index 0 is 1.5"):
        S.verbatim_stats([1.5])
    with pytest.raises(ValueError, match="must be 1-D"):
        S.verbatim_stats([[1, 2]])
