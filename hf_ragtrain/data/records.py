"""The training record format, and loading with validation.

A record is one query with its judged documents::

    {"query": "how do I sort a dict?",
     "pos": ["sorted(d.items(), key=...) ..."],          # >= 1 relevant documents
     "neg": ["A list is ...", "Tuples are ..."],           # optional non-relevant documents
     "pos_labels": [2],                                    # optional graded relevance 1..3 of each pos
     "pos_scores": [0.93], "neg_scores": [0.10, 0.02],     # optional teacher scores, one per document
     "prompt": "Given a Python question, ..."}             # optional instruction

Graded judgements can also be given as one list of documents with labels, where label 0 means
non-relevant::

    {"query": "...", "docs": ["d1", "d2", "d3"], "labels": [3, 1, 0]}

which loads exactly as ``{"query": ..., "pos": ["d1", "d2"], "pos_labels": [3, 1], "neg": ["d3"]}``.
Optional id fields (``query_id``, ``pos_ids``, ``neg_ids``, ``doc_ids`` with ``docs``) are kept so
evaluation can refer back to a corpus.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from .errors import DataFormatError

logger = logging.getLogger(__name__)

MAX_LABEL = 3  # graded relevance scale 0..3 (TREC style); binary data uses labels 0 and 1

KNOWN_FIELDS = {
    "query", "pos", "neg", "pos_labels", "pos_scores", "neg_scores", "prompt",
    "docs", "labels", "doc_ids", "scores", "query_id", "pos_ids", "neg_ids",
}


@dataclass
class RetrievalRecord:
    """One validated training/evaluation record (see the module docstring)."""

    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    pos_labels: list[int] | None = None
    pos_scores: list[float] | None = None
    neg_scores: list[float] | None = None
    prompt: str | None = None
    query_id: str | None = None
    pos_ids: list[str] | None = None
    neg_ids: list[str] | None = None

    def labels_of_pos(self) -> list[int]:
        return self.pos_labels if self.pos_labels is not None else [1] * len(self.pos)

    def to_dict(self) -> dict[str, Any]:
        """The record as a json-ready dict, without the optional fields that are unset."""
        out = {"query": self.query, "pos": self.pos, "neg": self.neg}
        for name in ("pos_labels", "pos_scores", "neg_scores", "prompt", "query_id", "pos_ids", "neg_ids"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass
class LoadReport:
    """What loading saw: counts a user can check against their data."""

    source: str
    records: int = 0
    blank_lines: int = 0
    converted_docs_labels: int = 0
    unknown_fields: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"{self.source}: {self.records} records"]
        if self.blank_lines:
            parts.append(f"{self.blank_lines} blank lines skipped")
        if self.converted_docs_labels:
            parts.append(f"{self.converted_docs_labels} records given as docs/labels")
        if self.unknown_fields:
            fields = ", ".join(f"{k!r} ({v} records)" for k, v in sorted(self.unknown_fields.items()))
            parts.append(f"fields not used by hf_ragtrain and ignored: {fields}")
        return "; ".join(parts)


# ----------------------------------------------------------------------------- validation


def _where(source: str | None, line: int | None) -> dict[str, Any]:
    return {"path": source, "line": line}


def _expect_str(value: Any, name: str, source: str | None, line: int | None, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"expected a string, got {type(value).__name__} {_short(value)}",
                              field=name, **_where(source, line))
    if not allow_empty and not value.strip():
        raise DataFormatError("expected a non-empty string, got an empty one", field=name, **_where(source, line))
    return value


def _expect_str_list(value: Any, name: str, source: str | None, line: int | None, non_empty: bool) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise DataFormatError(f"expected a list of strings, got {type(value).__name__} {_short(value)}",
                              field=name, **_where(source, line))
    if non_empty and len(value) == 0:
        raise DataFormatError("expected a non-empty list of strings, got []", field=name, **_where(source, line))
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise DataFormatError(f"expected item {i} to be a non-empty string, got {_short(item)}",
                                  field=name, **_where(source, line))
    return list(value)


def _expect_numbers(value: Any, name: str, n: int, doc_field: str, source: str | None, line: int | None,
                    integer: bool = False, lo: float | None = None, hi: float | None = None) -> list:
    kind = "integers" if integer else "numbers"
    if not isinstance(value, (list, tuple)):
        raise DataFormatError(f"expected a list of {n} {kind} (one per '{doc_field}' document), "
                              f"got {type(value).__name__} {_short(value)}", field=name, **_where(source, line))
    if len(value) != n:
        raise DataFormatError(f"expected {n} {kind} (one per '{doc_field}' document), got {len(value)}",
                              field=name, **_where(source, line))
    out = []
    for i, item in enumerate(value):
        ok = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
        if integer:
            ok = ok and float(item).is_integer()
        if ok and lo is not None and item < lo or ok and hi is not None and item > hi:
            ok = False
        if not ok:
            rng = f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""
            raise DataFormatError(f"expected item {i} to be a finite {'integer' if integer else 'number'}{rng}, "
                                  f"got {_short(item)}", field=name, **_where(source, line))
        out.append(int(item) if integer else float(item))
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_record(obj: Any, source: str | None = None, line: int | None = None,
                 report: LoadReport | None = None) -> RetrievalRecord:
    """Validate one raw record (a dict) and return it as a :class:`RetrievalRecord`.

    Raises :class:`DataFormatError` naming ``source``, ``line`` and the offending field.
    """
    if not isinstance(obj, dict):
        raise DataFormatError(f"expected a JSON object, got {type(obj).__name__}", **_where(source, line))
    if "query" not in obj:
        raise DataFormatError("missing required field", field="query", **_where(source, line))
    query = _expect_str(obj["query"], "query", source, line)
    unknown = set(obj) - KNOWN_FIELDS
    if report is not None:
        report.unknown_fields.update(unknown)

    if "docs" in obj:
        obj = _docs_labels_to_pos_neg(obj, source, line)
        if report is not None:
            report.converted_docs_labels += 1
    elif "pos" not in obj:
        raise DataFormatError("missing required field (or give 'docs' with 'labels')", field="pos",
                              **_where(source, line))

    pos = _expect_str_list(obj["pos"], "pos", source, line, non_empty=True)
    neg = _expect_str_list(obj.get("neg", []) if obj.get("neg") is not None else [], "neg", source, line,
                           non_empty=False)
    rec = RetrievalRecord(query=query, pos=pos, neg=neg)
    if obj.get("pos_labels") is not None:
        rec.pos_labels = _expect_numbers(obj["pos_labels"], "pos_labels", len(pos), "pos", source, line,
                                         integer=True, lo=1, hi=MAX_LABEL)
    if obj.get("pos_scores") is not None:
        rec.pos_scores = _expect_numbers(obj["pos_scores"], "pos_scores", len(pos), "pos", source, line)
    if obj.get("neg_scores") is not None:
        rec.neg_scores = _expect_numbers(obj["neg_scores"], "neg_scores", len(neg), "neg", source, line)
    if (rec.pos_scores is None) != (rec.neg_scores is None) and neg:
        missing = "neg_scores" if rec.neg_scores is None else "pos_scores"
        raise DataFormatError("teacher scores must be given for both pos and neg documents", field=missing,
                              **_where(source, line))
    if obj.get("prompt") is not None:
        rec.prompt = _expect_str(obj["prompt"], "prompt", source, line, allow_empty=True)
    if obj.get("query_id") is not None:
        qid = obj["query_id"]
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise DataFormatError(f"expected a string id, got {_short(qid)}", field="query_id", **_where(source, line))
        rec.query_id = str(qid)
    for ids_name, docs in (("pos_ids", pos), ("neg_ids", neg)):
        if obj.get(ids_name) is not None:
            ids = obj[ids_name]
            if not isinstance(ids, (list, tuple)) or len(ids) != len(docs):
                raise DataFormatError(f"expected a list of {len(docs)} ids (one per '{ids_name[:3]}' document)",
                                      field=ids_name, **_where(source, line))
            setattr(rec, ids_name, [str(i) for i in ids])
    return rec


def _docs_labels_to_pos_neg(obj: dict, source: str | None, line: int | None) -> dict:
    for clash in ("pos", "neg", "pos_labels"):
        if clash in obj:
            raise DataFormatError(f"give either 'docs'/'labels' or '{clash}', not both", field=clash,
                                  **_where(source, line))
    docs = _expect_str_list(obj["docs"], "docs", source, line, non_empty=True)
    if "labels" not in obj:
        raise DataFormatError("missing: 'docs' needs 'labels' (0..3, one per document)", field="labels",
                              **_where(source, line))
    labels = _expect_numbers(obj["labels"], "labels", len(docs), "docs", source, line, integer=True,
                             lo=0, hi=MAX_LABEL)
    scores = None
    if obj.get("scores") is not None:
        scores = _expect_numbers(obj["scores"], "scores", len(docs), "docs", source, line)
    if not any(label > 0 for label in labels):
        raise DataFormatError("expected at least one document with label > 0", field="labels",
                              **_where(source, line))
    ids = obj.get("doc_ids")
    if ids is not None and (not isinstance(ids, (list, tuple)) or len(ids) != len(docs)):
        raise DataFormatError(f"expected a list of {len(docs)} ids (one per 'docs' document)", field="doc_ids",
                              **_where(source, line))
    out = {k: v for k, v in obj.items() if k not in ("docs", "labels", "scores", "doc_ids")}
    p = [i for i, lab in enumerate(labels) if lab > 0]
    n = [i for i, lab in enumerate(labels) if lab == 0]
    out["pos"] = [docs[i] for i in p]
    out["neg"] = [docs[i] for i in n]
    out["pos_labels"] = [labels[i] for i in p]
    if scores is not None:
        out["pos_scores"] = [scores[i] for i in p]
        out["neg_scores"] = [scores[i] for i in n]
    if ids is not None:
        out["pos_ids"] = [ids[i] for i in p]
        out["neg_ids"] = [ids[i] for i in n]
    return out


# ----------------------------------------------------------------------------- loading


def iter_jsonl_records(path: str | os.PathLike, report: LoadReport | None = None) -> Iterator[RetrievalRecord]:
    """Yield validated records from a jsonl file; the first bad line raises :class:`DataFormatError`."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                if report is not None:
                    report.blank_lines += 1
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"invalid JSON ({err.msg} at column {err.colno})", path=path,
                                      line=lineno) from None
            yield parse_record(obj, source=path, line=lineno, report=report)


def load_records(data: Any, name: str | None = None) -> tuple[list[RetrievalRecord], LoadReport]:
    """Load and validate records from a jsonl path, a list of paths, a ``datasets.Dataset`` or dicts.

    Returns the records in input order and a :class:`LoadReport`. Nothing is dropped silently: the
    only lines skipped are blank ones, and they are counted in the report.
    """
    if isinstance(data, (str, os.PathLike)):
        report = LoadReport(source=os.fspath(data))
        records = list(iter_jsonl_records(data, report))
    elif isinstance(data, (list, tuple)) and data and all(isinstance(d, (str, os.PathLike)) for d in data):
        records, reports = [], []
        for path in data:
            rep = LoadReport(source=os.fspath(path))
            records.extend(iter_jsonl_records(path, rep))
            reports.append(rep)
        report = LoadReport(source=", ".join(r.source for r in reports))
        report.blank_lines = sum(r.blank_lines for r in reports)
        report.converted_docs_labels = sum(r.converted_docs_labels for r in reports)
        for r in reports:
            report.unknown_fields.update(r.unknown_fields)
    else:
        source = name or _source_name(data)
        report = LoadReport(source=source)
        # a datasets.Dataset fills absent optional columns with None; parse_record treats None as absent
        records = [parse_record(dict(obj), source=source, line=i + 1, report=report)
                   for i, obj in enumerate(_iter_rows(data))]
    report.records = len(records)
    if not records:
        raise DataFormatError("expected at least one record, found none", path=report.source)
    logger.info(report.summary())
    return records, report


def _iter_rows(data: Any) -> Iterable[Any]:
    if isinstance(data, dict):
        raise DataFormatError("expected a path, a datasets.Dataset or a list of records, got a dict "
                              "(wrap a single record in a list)")
    return data


def _source_name(data: Any) -> str:
    info = getattr(data, "info", None)
    name = getattr(info, "dataset_name", None) if info is not None else None
    return f"<dataset {name}>" if name else f"<{type(data).__name__}>"


def write_records(records: Sequence[RetrievalRecord | dict], path: str | os.PathLike) -> None:
    """Write records as jsonl, atomically (a crash never leaves a half-written file at ``path``)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            obj = rec.to_dict() if isinstance(rec, RetrievalRecord) else rec
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
