"""Documents: the corpus shard format and the built-in corpus text, shared by the corpus stage
(writer), extraction (reader) and the demo build (training text).

inputs -> outputs: a corpus shard (parquet) -> `Document`s; nothing -> the built-in `pydoc`
corpus as (topic, text) pairs.

Invariants
    - A corpus shard has the columns ``doc_id`` (string), ``doc_idx`` (int64), ``text``
      (string) and ``topic`` (string, null unless the built-in corpus names one); a row of any
      other type is a DataError naming the file and row.
    - The built-in ``pydoc`` corpus (English prose shipped with CPython) is deterministic for a
      given Python version: the same indices always give the same paragraphs.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
from dataclasses import dataclass

import pyarrow as pa

from nlaprobe.constants import COL_DOC_ID, COL_DOC_IDX, COL_TEXT, COL_TOPIC, CORPUS_COLUMNS
from nlaprobe.errors import DataError
from nlaprobe.io import read_table

logger = logging.getLogger(__name__)

# Built-in pydoc corpus: which paragraphs count as prose, and the fixed shuffle seed.
PYDOC_MIN_WORDS = 40
PYDOC_MIN_WORD_SHARE = 0.7
PYDOC_SHUFFLE_SEED = 12345
# Lines that belong to grammar productions, doctest sessions, tables or commented code.
_CODE_LINE = re.compile(r"^\s*(>>>|\.\.\.|\||\+[-=])|::=|\S\s{2,}#\s")
# A word of prose: letters (with apostrophes/hyphens), optionally quoted, emphasised or
# followed by punctuation. Identifiers with dots, brackets or operators do not match.
_PROSE_WORD = re.compile(r"^[\"“(*]*[A-Za-z][A-Za-z'’-]*[\"”)*]*[.,;:!?]?[\"”)]*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

CORPUS_SCHEMA = pa.schema(
    [
        pa.field(COL_DOC_ID, pa.string(), nullable=False),
        pa.field(COL_DOC_IDX, pa.int64(), nullable=False),
        pa.field(COL_TEXT, pa.string(), nullable=False),
        pa.field(COL_TOPIC, pa.string(), nullable=True),
    ]
)


@dataclass(frozen=True)
class Document:
    doc_id: str
    doc_idx: int
    text: str
    topic: str | None = None


def _is_prose(paragraph: str) -> bool:
    if any(_CODE_LINE.search(line) for line in paragraph.splitlines()):
        return False
    words = paragraph.split()
    if len(words) < PYDOC_MIN_WORDS:
        return False
    prose = sum(1 for w in words if _PROSE_WORD.match(w))
    return prose / len(words) >= PYDOC_MIN_WORD_SHARE


@functools.cache
def pydoc_documents() -> tuple[tuple[str, str], ...]:
    """The built-in corpus as (topic, text) pairs, in document-index order.

    Paragraphs of `pydoc_data.topics.topics` that read as prose (>= 40 words, no grammar,
    doctest or table lines, mostly plain words), whitespace-normalised, de-duplicated (several
    topics share sections; the first by (topic, paragraph index) is kept), then shuffled with a
    fixed seed so that any index range mixes topics.
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    docs: list[tuple[str, str]] = []
    for topic in sorted(topics):
        for paragraph in _PARAGRAPH_BREAK.split(topics[topic]):
            if not _is_prose(paragraph):
                continue
            text = " ".join(paragraph.split())
            if text in seen:
                continue
            seen.add(text)
            docs.append((topic, text))
    random.Random(PYDOC_SHUFFLE_SEED).shuffle(docs)
    logger.debug("built-in pydoc corpus: %d documents", len(docs))
    return tuple(docs)


def read_corpus_shard(path: str | os.PathLike) -> list[Document]:
    """Documents of a corpus shard; DataError on a missing/corrupt file, column or value."""
    table = read_table(path, columns=CORPUS_COLUMNS)
    topics = (
        table.column(COL_TOPIC).to_pylist()
        if COL_TOPIC in table.column_names
        else [None] * table.num_rows
    )
    docs = []
    for row, (doc_id, doc_idx, text, topic) in enumerate(
        zip(
            table.column(COL_DOC_ID).to_pylist(),
            table.column(COL_DOC_IDX).to_pylist(),
            table.column(COL_TEXT).to_pylist(),
            topics,
            strict=True,
        )
    ):
        if not isinstance(doc_id, str) or not isinstance(doc_idx, int) or not isinstance(text, str):
            raise DataError(
                f"{path}: row {row} has doc_id={doc_id!r}, doc_idx={doc_idx!r}, text of type "
                f"{type(text).__name__}; expected string, integer, string"
            )
        docs.append(Document(doc_id, doc_idx, text, topic))
    return docs
