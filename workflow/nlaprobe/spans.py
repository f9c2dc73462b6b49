"""Quoted spans and escape hatches in NLA explanations (SPEC §6 E2, E4), their post-hoc redaction,
and the verbatim check against the source context (SPEC §6 E3). Pure functions: str / word lists /
numpy in, str / lists / numpy / plain dicts out; no I/O, no torch, no global RNG state.

inputs -> outputs
    find_spans(text, kinds=KINDS)         -> [Span], outermost, non-overlapping, sorted by start
    quoted_spans(text) -> [Span] of QUOTED_KINDS;  unquoted_hatches(text) -> [Span] (E4)
    span_kinds(text) -> set of KINDS;     hatch_kinds(text) -> set of HATCH_KINDS
    uses_single_quotes(text), uses_hatch(text) -> bool
    redact(text, variant)                 -> str; variant one of REDACTION_VARIANTS
    span_stats(text)                      -> {"n_spans", "span_chars", "n_hatches",
                                              "hatch_chars", "total_chars"} (ints)
    normalize_words(text)                 -> [str]
    longest_shared_run(a[words], b[words]) -> int;  longest_shared_run_text(expl, ctx) -> int
    shuffled_pairing(n, seed)             -> int64 [n], a permutation with no fixed point (n >= 2)
    verbatim_stats(runs[n], threshold=6)  -> {"n", "median", "p90", "mean", "share_ge", "max"}

Span model
- A span is text[start:end] = opening mark text[start:inner_start] + content
  text[inner_start:inner_end] + closing mark text[inner_end:end], so start < inner_start <=
  inner_end < end. `kind` is one of KINDS; "double" and "single" are QUOTE_KINDS, the rest are the
  escape hatches (HATCH_KINDS) that replace quotes when quote tokens are banned at decode time.
- find_spans scans left to right. At each position it tries the one kind whose opening mark is
  there, if that kind is among `kinds` (every kind by default); a match is reported and the scan
  resumes after its closing mark, a failed opener (or one of a kind not asked for) is left in the
  prose and the scan moves one character on. Hence: spans never overlap (of two overlapping
  candidates the one that starts first wins), a span inside another is never reported (outermost
  wins: `"He said 'hi' today"` is one double span), and an opener without a closer
  (unterminated) yields no span. span_kinds, uses_single_quotes, hatch_kinds and uses_hatch
  (E2, E3) see the outermost spans of every kind.
- E4 splits the kinds differently (SPEC §6 E4: the published 9.4 spans per decode and 23% of
  characters are quoted spans). QUOTED_KINDS (double, single, corner: the quote families,
  corner brackets included) are what the redaction variants act on and what span_stats counts as
  spans; UNQUOTED_HATCH_KINDS (italic, paren, emdash) are counted apart and never redacted.
  quoted_spans scans the quote families alone, so an em-dash aside or a cued parenthetical never
  hides the quotes inside it (`— he said "hi" —` has the quoted span `"hi"`). unquoted_hatches
  scans the unquoted hatches alone and drops any that lies wholly inside a quoted span
  (`"*x*"` is one quoted span and no hatch); a hatch may contain quoted spans.
- Quote families are the characters of constants.DOUBLE_QUOTES and constants.SINGLE_QUOTES; every
  character of each family is an opener, a closer or both, as below.

Detection rules, per kind
- double: an opener “ „ ‟ « " ＂ closes at the next closer ” » " ＂ after it (any closer of the
  family closes any opener; “ additionally closes a „-opened span, as in „…“). Straight " and
  fullwidth ＂ are symmetric (open = close). »…« (Danish) is not recognised. No whitespace rules;
  the content may be empty (`""` is a span, so the placeholders of spans_empty are spans again).
- single: openers ‘ ‚ ‛ ' ＇; closers ’ ' ＇ (and ‘, which closes only a ‚-opened span, mirroring
  „…“). Apostrophes are not quotes: a ' or ’ with a letter or digit on both sides (don't, the
  model's, rock’n’roll) is neither opener nor closer. A ' directly after a letter or digit is
  never an opener (plural possessive "students' work"), but it may close an open span, so
  'the students' work' is the span 'the students'. An opener must be followed by a character
  that is neither whitespace nor a single-family mark (so '' is not a span); a closer must be
  preceded by a non-space character. The content is therefore never empty.
- corner: 「…」 and 『…』, each with its own closer, matched with nesting depth per pair (so
  『』 may nest inside 「」, and 「a「b」c」 is one span).
- italic: `*text*` or `**text**` (asterisks only, no underscores). The opening run of stars is a
  maximal run of exactly one or two (a run of three or more, such as `***`, is never a mark); it
  closes at the next maximal run of the same length on the same line that follows a non-space
  character. The content is non-empty, starts and ends with a non-space character and has no
  newline; a lone `*`, a `* bullet` or `2 * 3` is not a span.
- paren: `( … )` matched with nesting depth, and only when cued: the maximal run of letters right
  before `(` (ignoring one space) is, case-insensitively, one of _PAREN_CUE_WORDS (reads, read,
  says, said, saying, text, phrase, phrases, word, words, quote, quotes, quoting, verbatim,
  literally, like, token, tokens, string, line, passage, writes, written), or the content starts,
  case-insensitively, with `verbatim:`, `literally:`, `quote:` or `text:`. Such a prefix and the
  whitespace after it belong to the opening mark, not the content. Uncued parentheticals are prose.
- emdash: text between two em dashes U+2014 on one line (`— aside —`, `a—b—c`), or between two
  ` -- ` (space, two hyphens, space) on one line; an em dash pairs only with an em dash and `--`
  only with `--`. The marks are the dashes themselves (the padding spaces stay in the prose) and
  the padding whitespace next to the marks is not content. The content must contain a non-space
  character (`——` is no span); a single unpaired dash is no span.

Redaction (REDACTION_VARIANTS), on the quoted spans only (hatches stay as they are)
- full: unchanged. prose_only: every quoted span deleted with its marks; spans_empty,
  spans_ellipsis, spans_redacted: every quoted span (marks included) replaced by `""`, `…`
  (U+2026) or `REDACTED`.
  These four then get one clean-up: runs of whitespace (newlines included) collapse to one space,
  a space before any of `.,;:!?)` is removed, and the result is stripped. A deleted span leaves
  one space behind, so the words on either side never merge (`a—b—c` -> `a c`); a placeholder is
  inserted as is (`a—b—c` -> `a""c`). The placeholder variants thus differ only in the placeholder.
- spans_only_marked: the quoted spans with their marks, joined by one space; spans_only_bare:
  their contents, joined by one space, blank contents skipped. Both are joined verbatim (no
  clean-up); no quoted span gives "". A hatch survives in these two only inside a quoted span.
- span_stats: n_spans and span_chars count the quoted spans and their characters, marks
  included; n_hatches counts unquoted_hatches and hatch_chars the characters inside them that are
  not inside a quoted span (so span_chars + hatch_chars <= total_chars = len(text)).

Verbatim check
- normalize_words: lowercase (str.lower), delete apostrophes (' and ’: "don't" -> "dont"), turn
  every other character of Unicode category P* or S* into a space ("well-known" -> "well known",
  "a—b" -> "a b", "3.14" -> "3 14"), split on whitespace; explanation and context are normalised
  the same way, so a dash spaced differently on the two sides does not break a run.
- longest_shared_run: longest common substring of two word sequences (the longest contiguous run
  of words present in both), by the DP L[i][j] = L[i-1][j-1] + 1 if a[i] == b[j] else 0, one row
  (len(b) + 1 ints) at a time; 0 when either side is empty or nothing is shared.
- shuffled_pairing: entry i is the row whose context is paired with explanation i in the null.
  It is the first draw of `rng.permutation(n)`, rng = np.random.default_rng(seed), that has no
  fixed point (rejection sampling: uniform over derangements, e draws on average); n = 1 -> [0],
  n = 0 -> []. Depends only on (n, seed).
- verbatim_stats: median, p90 (np.quantile, linear) and mean as floats, share_ge = share of runs
  >= threshold, max as an int; for no runs n = 0 and every other value None.

Bad input raises ValueError naming the argument: a text that is not a str, an unknown variant
or kind (with the list of valid ones), a negative or non-integer n or seed, runs that are not finite
non-negative integers.
"""

from __future__ import annotations

import numbers
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlaprobe import constants as C

KINDS = ("double", "single", "corner", "italic", "paren", "emdash")
# E2: quotes proper, and the escape hatches that replace them when quote tokens are banned
QUOTE_KINDS = ("double", "single")
HATCH_KINDS = ("corner", "italic", "paren", "emdash")
# E4: the quote families (corner brackets included), redacted; the hatches without quote marks,
# counted apart and never redacted
QUOTED_KINDS = ("double", "single", "corner")
UNQUOTED_HATCH_KINDS = ("italic", "paren", "emdash")
REDACTION_VARIANTS = (
    "full",
    "prose_only",
    "spans_empty",
    "spans_ellipsis",
    "spans_redacted",
    "spans_only_marked",
    "spans_only_bare",
)


@dataclass(frozen=True)
class Span:
    """text[start:end] is the span, text[inner_start:inner_end] its content (see module doc)."""

    start: int
    end: int
    inner_start: int
    inner_end: int
    kind: str


# --- roles of the quote characters (every character of each family has one) ---------------------

_LOW_DOUBLE = "\u201e"  # „ opens a span that “ may close
_LOW_SINGLE = "\u201a"  # ‚ opens a span that ‘ may close
_DOUBLE_OPENERS = '\u201c\u201e\u201f\u00ab"\uff02'
_DOUBLE_CLOSERS = '\u201d\u00bb"\uff02'
_SINGLE_OPENERS = "\u2018\u201a\u201b'\uff07"
_SINGLE_CLOSERS = "\u2019'\uff07"
_APOSTROPHES = "'\u2019"

_CORNERS = {"\u300c": "\u300d", "\u300e": "\u300f"}  # 「」 『』
_EM_DASH = "\u2014"
_DASHDASH = " -- "

_PAREN_CUE_WORDS = frozenset(
    {
        "reads",
        "read",
        "says",
        "said",
        "saying",
        "text",
        "phrase",
        "phrases",
        "word",
        "words",
        "quote",
        "quotes",
        "quoting",
        "verbatim",
        "literally",
        "like",
        "token",
        "tokens",
        "string",
        "line",
        "passage",
        "writes",
        "written",
    }
)
_PAREN_CUE_PREFIXES = ("verbatim:", "literally:", "quote:", "text:")

_PLACEHOLDERS = {
    "prose_only": " ",
    "spans_empty": '""',
    "spans_ellipsis": "\u2026",
    "spans_redacted": "REDACTED",
}
_SINGLE_MARK = re.compile(f"[{re.escape(C.SINGLE_QUOTES)}]")
_WHITESPACE_RUN = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r" (?=[.,;:!?)])")


# --- input checks -------------------------------------------------------------------------------


def _check_text(text: Any, name: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a str, got {type(text).__name__}")
    return text


def _count(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {x!r}")
    return int(x)


# --- matchers: each returns the span opening at i, or None --------------------------------------


def _at(text: str, i: int) -> str:
    """text[i], or "" outside the text (so "".isalnum() and "".isspace() are False)."""
    return text[i] if 0 <= i < len(text) else ""


def _trimmed(text: str, start: int, end: int, inner_start: int, inner_end: int, kind: str) -> Span:
    """Span whose content excludes the whitespace next to its marks."""
    while inner_start < inner_end and text[inner_start].isspace():
        inner_start += 1
    while inner_end > inner_start and text[inner_end - 1].isspace():
        inner_end -= 1
    return Span(start, end, inner_start, inner_end, kind)


def _match_double(text: str, i: int) -> Span | None:
    closers = _DOUBLE_CLOSERS + ("\u201c" if text[i] == _LOW_DOUBLE else "")
    hits = [k for k in (text.find(c, i + 1) for c in closers) if k >= 0]
    if not hits:
        return None
    k = min(hits)
    return Span(i, k + 1, i + 1, k, "double")


def _is_apostrophe(text: str, k: int) -> bool:
    return text[k] in _APOSTROPHES and _at(text, k - 1).isalnum() and _at(text, k + 1).isalnum()


def _match_single(text: str, i: int) -> Span | None:
    after = _at(text, i + 1)
    if not after or after.isspace() or after in C.SINGLE_QUOTES:
        return None
    if text[i] == "'" and _at(text, i - 1).isalnum():
        return None  # elision or possessive, not an opener
    closers = _SINGLE_CLOSERS + ("\u2018" if text[i] == _LOW_SINGLE else "")
    for m in _SINGLE_MARK.finditer(text, i + 2):  # only quote characters are visited
        k = m.start()
        if text[k] in closers and not text[k - 1].isspace() and not _is_apostrophe(text, k):
            return Span(i, k + 1, i + 1, k, "single")
    return None


def _balanced_close(text: str, i: int, opener: str, closer: str) -> int | None:
    """Index of the closer matching the opener at i (nesting depth of this pair only)."""
    depth = 0
    for m in re.finditer(f"[{re.escape(opener + closer)}]", text[i:]):
        depth += 1 if m.group() == opener else -1
        if depth == 0:
            return i + m.start()
    return None


def _match_corner(text: str, i: int) -> Span | None:
    k = _balanced_close(text, i, text[i], _CORNERS[text[i]])
    return None if k is None else Span(i, k + 1, i + 1, k, "corner")


def _star_run(text: str, k: int) -> int:
    end = k
    while end < len(text) and text[end] == "*":
        end += 1
    return end - k


def _match_italic(text: str, i: int) -> Span | None:
    if text[i - 1 : i] == "*":
        return None  # inside a run of stars, not at its start
    width = _star_run(text, i)
    first = _at(text, i + width)
    if width > 2 or not first or first.isspace():
        return None
    k = i + width
    while k < len(text):
        if text[k] == "\n":
            return None
        if text[k] != "*":
            k += 1
            continue
        run = _star_run(text, k)
        if run == width and not text[k - 1].isspace():
            return Span(i, k + width, i + width, k, "italic")
        k += run
    return None


def _match_paren(text: str, i: int) -> Span | None:
    word_end = i - 1 if text[i - 1 : i] == " " else i
    word_start = word_end
    while word_start > 0 and text[word_start - 1].isalpha():
        word_start -= 1
    cued = text[word_start:word_end].lower() in _PAREN_CUE_WORDS
    inner_start = i + 1
    head = text[i + 1 : i + 1 + max(map(len, _PAREN_CUE_PREFIXES))].lower()
    prefix = next((p for p in _PAREN_CUE_PREFIXES if head.startswith(p)), None)
    if prefix is not None:
        cued, inner_start = True, i + 1 + len(prefix)
    if not cued:
        return None
    k = _balanced_close(text, i, "(", ")")
    if k is None:
        return None
    inner_start = min(inner_start, k)
    while inner_start < k and text[inner_start].isspace():
        inner_start += 1
    return Span(i, k + 1, inner_start, k, "paren")


def _line_end(text: str, i: int) -> int:
    k = text.find("\n", i)
    return len(text) if k < 0 else k


def _match_emdash(text: str, i: int) -> Span | None:
    k = text.find(_EM_DASH, i + 1, _line_end(text, i))
    if k < 0 or not text[i + 1 : k].strip():
        return None
    return _trimmed(text, i, k + 1, i + 1, k, "emdash")


def _match_dashdash(text: str, i: int) -> Span | None:
    if text[i - 1 : i + 3] != _DASHDASH:  # the opener must itself be " -- "
        return None
    k = text.find(_DASHDASH, i + 2, _line_end(text, i))  # k: the space before the closing "--"
    if k < 0 or not text[i + 2 : k + 1].strip():
        return None
    return _trimmed(text, i, k + 3, i + 2, k + 1, "emdash")


_MATCHERS = {
    "double": _match_double,
    "single": _match_single,
    "corner": _match_corner,
    "italic": _match_italic,
    "paren": _match_paren,
    "emdash": _match_emdash,
}


def _kind_at(text: str, i: int) -> str | None:
    """The one kind whose opening mark can start at text[i] (the opener sets are disjoint)."""
    ch = text[i]
    if ch in _DOUBLE_OPENERS:
        return "double"
    if ch in _SINGLE_OPENERS:
        return "single"
    if ch in _CORNERS:
        return "corner"
    if ch == "*":
        return "italic"
    if ch == "(":
        return "paren"
    if ch == _EM_DASH or (ch == "-" and i > 0):
        return "emdash"
    return None


def _match_at(text: str, i: int, kinds: frozenset[str]) -> Span | None:
    kind = _kind_at(text, i)
    if kind is None or kind not in kinds:
        return None
    if kind == "emdash" and text[i] == "-":
        return _match_dashdash(text, i)
    return _MATCHERS[kind](text, i)


def _check_kinds(kinds: Any) -> frozenset[str]:
    if isinstance(kinds, str):
        raise ValueError(f"kinds must be a collection of kinds, got the str {kinds!r}")
    try:
        out = frozenset(kinds)
    except TypeError:
        raise ValueError(f"kinds must be a collection of kinds, got {kinds!r}") from None
    unknown = sorted(str(k) for k in out - set(KINDS))
    if unknown:
        raise ValueError(f"kinds has unknown kind(s) {unknown}; valid: {', '.join(KINDS)}")
    return out


# --- detection ----------------------------------------------------------------------------------


def find_spans(text: str, kinds: Sequence[str] = KINDS) -> list[Span]:
    """Outermost, non-overlapping spans of `text` among the given kinds, sorted by start (rules
    in the module doc; openers of other kinds are prose)."""
    _check_text(text, "text")
    wanted = _check_kinds(kinds)
    spans: list[Span] = []
    i = 0
    while i < len(text):
        span = _match_at(text, i, wanted)
        if span is None:
            i += 1
        else:
            spans.append(span)
            i = span.end
    return spans


def quoted_spans(text: str) -> list[Span]:
    """The quote-family spans of `text` (QUOTED_KINDS, scanned alone): what E4 redacts."""
    return find_spans(text, QUOTED_KINDS)


def unquoted_hatches(text: str) -> list[Span]:
    """The hatch spans of `text` without quote marks (UNQUOTED_HATCH_KINDS, scanned alone),
    except those lying wholly inside a quoted span: what E4 counts apart and keeps."""
    quoted = quoted_spans(text)
    return [
        h
        for h in find_spans(text, UNQUOTED_HATCH_KINDS)
        if not any(q.start <= h.start and h.end <= q.end for q in quoted)
    ]


def span_kinds(text: str) -> set[str]:
    """Kinds of the (outermost) spans of `text`."""
    return {s.kind for s in find_spans(text)}


def uses_single_quotes(text: str) -> bool:
    """Whether `text` has an outermost span of kind "single"."""
    return "single" in span_kinds(text)


def hatch_kinds(text: str) -> set[str]:
    """Escape-hatch kinds (HATCH_KINDS) among the outermost spans of `text`."""
    return span_kinds(text) & set(HATCH_KINDS)


def uses_hatch(text: str) -> bool:
    """Whether `text` has an outermost escape-hatch span."""
    return bool(hatch_kinds(text))


# --- redaction ----------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return _SPACE_BEFORE_PUNCT.sub("", _WHITESPACE_RUN.sub(" ", text)).strip()


def redact(text: str, variant: str) -> str:
    """`text` as edited by one of REDACTION_VARIANTS, on its quoted spans (module doc)."""
    _check_text(text, "text")
    if variant not in REDACTION_VARIANTS:
        raise ValueError(
            f"unknown redaction variant {variant!r}; valid: {', '.join(REDACTION_VARIANTS)}"
        )
    if variant == "full":
        return text
    spans = quoted_spans(text)
    if variant == "spans_only_marked":
        return " ".join(text[s.start : s.end] for s in spans)
    if variant == "spans_only_bare":
        contents = (text[s.inner_start : s.inner_end] for s in spans)
        return " ".join(c for c in contents if c.strip())
    placeholder = _PLACEHOLDERS[variant]
    pieces: list[str] = []
    prev = 0
    for s in spans:
        pieces += [text[prev : s.start], placeholder]
        prev = s.end
    pieces.append(text[prev:])
    return _clean("".join(pieces))


def span_stats(text: str) -> dict:
    """{"n_spans", "span_chars"}: the quoted spans and their characters, marks included;
    {"n_hatches", "hatch_chars"}: the unquoted hatches and their characters outside any quoted
    span; "total_chars": len(text)."""
    quoted = quoted_spans(text)
    hatches = unquoted_hatches(text)
    in_quote = np.zeros(len(text), dtype=bool)
    for q in quoted:
        in_quote[q.start : q.end] = True
    in_hatch = np.zeros(len(text), dtype=bool)
    for h in hatches:
        in_hatch[h.start : h.end] = True
    return {
        "n_spans": len(quoted),
        "span_chars": int(in_quote.sum()),
        "n_hatches": len(hatches),
        "hatch_chars": int((in_hatch & ~in_quote).sum()),
        "total_chars": len(text),
    }


# --- verbatim check -----------------------------------------------------------------------------


def normalize_words(text: str) -> list[str]:
    """Lowercased words of `text`: apostrophes (' and U+2019) deleted, so "don't" -> "dont" on
    both sides alike; every other punctuation and symbol character (P*, S*) becomes a space, so
    "well-known" -> "well known" and "cat—a" -> "cat a" however the dash is spaced."""
    _check_text(text, "text")
    kept = "".join(
        "" if ch in "'\u2019" else " " if unicodedata.category(ch)[0] in "PS" else ch
        for ch in text.lower()
    )
    return kept.split()


def longest_shared_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of words that occurs in both `a` and `b`."""
    if len(a) == 0 or len(b) == 0:
        return 0
    ids: dict[str, int] = {}
    b_ids = np.fromiter((ids.setdefault(w, len(ids)) for w in b), dtype=np.int64, count=len(b))
    prev = np.zeros(len(b) + 1, dtype=np.int64)  # prev[j + 1]: run ending at a[i - 1], b[j]
    best = 0
    for word in a:
        cur = np.zeros_like(prev)
        wid = ids.get(word)
        if wid is not None:
            cur[1:] = np.where(b_ids == wid, prev[:-1] + 1, 0)
            best = max(best, int(cur.max()))
        prev = cur
    return best


def longest_shared_run_text(explanation: str, context: str) -> int:
    """longest_shared_run over the normalised words of an explanation and its context."""
    return longest_shared_run(
        normalize_words(_check_text(explanation, "explanation")),
        normalize_words(_check_text(context, "context")),
    )


def shuffled_pairing(n: int, seed: int) -> np.ndarray:
    """int64 [n]: the first rng.permutation(n) draw without a fixed point (n >= 2)."""
    n = _count(n, "n")
    rng = np.random.default_rng(_count(seed, "seed"))
    if n < 2:
        return np.arange(n, dtype=np.int64)
    while True:
        perm = rng.permutation(n).astype(np.int64)
        if not np.any(perm == np.arange(n)):
            return perm


def verbatim_stats(runs: Sequence[int], threshold: int = 6) -> dict:
    """{"n", "median", "p90", "mean", "share_ge" (share of runs >= threshold), "max"}."""
    try:
        arr = np.asarray(runs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"runs must be a sequence of integers, got {runs!r}") from None
    if arr.ndim != 1:
        raise ValueError(f"runs must be 1-D (one run per row), got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr != np.round(arr))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"runs must be integers >= 0; index {i} is {float(arr[i])!r}")
    if arr.size == 0:
        return {"n": 0, "median": None, "p90": None, "mean": None, "share_ge": None, "max": None}
    return {
        "n": int(arr.size),
        "median": float(np.median(arr)),
        "p90": float(np.quantile(arr, 0.9)),
        "mean": float(arr.mean()),
        "share_ge": float(np.mean(arr >= threshold)),
        "max": int(arr.max()),
    }
