"""Queries generated from a corpus, the training data of domain adaptation, and how they are stored.

A :class:`GeneratedQuery` is a query text, the passage it was made from (``doc_id``), the text that
passage shows as the query's positive (for an inverse-cloze query, the passage without the sentence
that became the query), and the generator that made it. They are written one per line in jsonl
(:func:`write_generated`, :func:`read_generated`), so a stage's output can be read and checked by hand.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from .errors import DataFormatError
from .records import iter_text_lines, parse_json_line, write_jsonl_atomically

__all__ = ["GeneratedQuery", "read_generated", "write_generated", "count_by", "load_queries_file"]


@dataclass
class GeneratedQuery:
    """One generated query: ``query_id`` (unique), ``text``, the ``doc_id`` of its source passage, the
    ``positive`` text that passage shows in training, and the ``generator`` that made it."""

    query_id: str
    text: str
    doc_id: str
    positive: str
    generator: str


def write_generated(queries: Iterable[GeneratedQuery], path: str) -> None:
    """Write queries as jsonl, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_jsonl_atomically(path, (asdict(q) for q in queries))


def read_generated(path: str) -> list[GeneratedQuery]:
    """Read what :func:`write_generated` wrote; a malformed line names the file, the line and the field."""
    out, seen = [], {}
    for line_no, line in iter_text_lines(path):
        if not line.strip():
            continue
        row = parse_json_line(line, path, line_no)
        for name in ("query_id", "text", "doc_id", "positive", "generator"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise DataFormatError("expected a non-empty string", path, line_no, name)
        if row["query_id"] in seen:
            raise DataFormatError(f"duplicate query id {row['query_id']!r} (first on line {seen[row['query_id']]})",
                                  path, line_no, "query_id")
        seen[row["query_id"]] = line_no
        out.append(GeneratedQuery(**{k: row[k] for k in ("query_id", "text", "doc_id", "positive", "generator")}))
    return out


def count_by(queries: Sequence[GeneratedQuery]) -> dict[str, int]:
    """How many queries each generator made."""
    counts: dict[str, int] = {}
    for q in queries:
        counts[q.generator] = counts.get(q.generator, 0) + 1
    return counts


def load_queries_file(path: str) -> list[str]:
    """Unlabelled real queries: a BEIR ``queries.jsonl`` (``{"_id", "text"}``), or a text file of one
    query per line. An empty file is an error naming it."""
    texts = []
    for line_no, line in iter_text_lines(path):
        if not line.strip():
            continue
        if path.endswith((".jsonl", ".jsonl.gz")):
            row = parse_json_line(line, path, line_no)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
                raise DataFormatError("expected an object with a non-empty \"text\"", path, line_no, "text")
            texts.append(row["text"].strip())
        else:
            texts.append(line.strip())
    if not texts:
        raise DataFormatError("holds no query (expected one per line, or a queries.jsonl)", path)
    return texts
