"""The training record format, and loading with validation.

A record is one query with its judged documents::

    {"query": "how do I sort a dict?",
     "pos": ["sorted(d.items(), key=...) ..."],          # >= 1 relevant documents
     "neg": ["A list is ...", "Tuples are ..."],           # optional non-relevant documents
     "pos_labels": [2],                                    # optional graded relevance 1..3 of each pos
     "pos_scores": [0.93], "neg_scores": [0.10, 0.02],     # optional teacher scores, one per document
     "pos_first_stage_scores": [14.2],                     # optional: the first stage's score of each
     "neg_first_stage_scores": [12.9, 11.0],               #   document (see below)
     "prompt": "Given a Python question, ..."}             # optional instruction

Graded judgements can also be given as one list of documents with labels, where label 0 means
non-relevant::

    {"query": "...", "docs": ["d1", "d2", "d3"], "labels": [3, 1, 0]}

which loads exactly as ``{"query": ..., "pos": ["d1", "d2"], "pos_labels": [3, 1], "neg": ["d3"]}``.
Optional id fields (``query_id``, ``pos_ids``, ``neg_ids``, ``doc_ids`` with ``docs``) are kept so
evaluation can refer back to a corpus. ``pos_first_stage_scores``/``neg_first_stage_scores``
(``first_stage_scores`` with ``docs``) are what a reranker that keeps its first stage's score
(:mod:`hf_ragtrain.modeling.fusion`) adds to its logit during training, in place of computing it:
the two-stage pipeline writes them from retrievers that were not trained on the query.
"""

from __future__ import annotations

import difflib
import gzip
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
    "pos_first_stage_scores", "neg_first_stage_scores", "first_stage_scores",
}
# fields of the docs/labels form, and what a record in the pos/neg form uses instead
DOCS_FORM_FIELDS = {"labels": "pos_labels", "scores": "pos_scores and neg_scores", "doc_ids": "pos_ids and neg_ids",
                    "first_stage_scores": "pos_first_stage_scores and neg_first_stage_scores"}
#: (field of the docs/labels form, its pos/neg fields): number lists given one per document
DOC_NUMBER_FIELDS = (("scores", ("pos_scores", "neg_scores")),
                     ("first_stage_scores", ("pos_first_stage_scores", "neg_first_stage_scores")))


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
    pos_first_stage_scores: list[float] | None = None
    neg_first_stage_scores: list[float] | None = None

    def labels_of_pos(self) -> list[int]:
        return self.pos_labels if self.pos_labels is not None else [1] * len(self.pos)

    def to_dict(self) -> dict[str, Any]:
        """The record as a json-ready dict, without the optional fields that are unset."""
        out = {"query": self.query, "pos": self.pos, "neg": self.neg}
        for name in ("pos_labels", "pos_scores", "neg_scores", "prompt", "query_id", "pos_ids", "neg_ids",
                     "pos_first_stage_scores", "neg_first_stage_scores"):
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
            parts.append(self.unknown_fields_note())
        return "; ".join(parts)

    def unknown_fields_note(self) -> str:
        """The fields hf_ragtrain does not read, and in how many records (kept in the data, not used)."""
        fields = ", ".join(f"{k!r} ({v} records)" for k, v in sorted(self.unknown_fields.items()))
        return f"fields hf_ragtrain does not use, ignored: {fields}"

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "records": self.records, "blank_lines": self.blank_lines,
                "converted_docs_labels": self.converted_docs_labels, "unknown_fields": dict(self.unknown_fields)}


# ----------------------------------------------------------------------------- validation


def _where(source: str | None, line: int | None) -> dict[str, Any]:
    return {"path": source, "line": line}


def _check_unicode(text: str, what: str, name: str, source: str | None, line: int | None) -> None:
    """A JSON string can hold a lone surrogate (``"\\ud800"``), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataFormatError(f"{what} holds a lone surrogate {text[err.start]!r} at character {err.start}, which is "
                              "not valid Unicode text; fix or remove that escape in the file", field=name,
                              **_where(source, line)) from None


def _expect_str(value: Any, name: str, source: str | None, line: int | None, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"expected a string, got {type(value).__name__} {_short(value)}",
                              field=name, **_where(source, line))
    if not allow_empty and not value.strip():
        raise DataFormatError("expected a non-empty string, got an empty one", field=name, **_where(source, line))
    _check_unicode(value, "the text", name, source, line)
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
        _check_unicode(item, f"item {i}", name, source, line)
    return list(value)


def _expect_ids(value: Any, name: str, n: int, doc_field: str, source: str | None, line: int | None) -> list[str]:
    """``n`` ids, each a string or an integer (kept as its decimal string)."""
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise DataFormatError(f"expected a list of {n} ids (one per '{doc_field}' document), got {_short(value)}",
                              field=name, **_where(source, line))
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int)) or isinstance(item, str) and not item.strip():
            raise DataFormatError(f"expected item {i} to be an id (a non-empty string or an integer), got "
                                  f"{_short(item)}", field=name, **_where(source, line))
    return [str(i) for i in value]


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
    unknown = _check_field_names(obj, source, line)
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
    for what, (pos_name, neg_name) in (("teacher scores", ("pos_scores", "neg_scores")),
                                       ("first-stage scores", ("pos_first_stage_scores", "neg_first_stage_scores"))):
        for name, docs in ((pos_name, pos), (neg_name, neg)):
            if obj.get(name) is not None:
                setattr(rec, name, _expect_numbers(obj[name], name, len(docs), name[:3], source, line))
        if (getattr(rec, pos_name) is None) != (getattr(rec, neg_name) is None) and neg:
            missing = neg_name if getattr(rec, neg_name) is None else pos_name
            raise DataFormatError(f"{what} must be given for both pos and neg documents", field=missing,
                                  **_where(source, line))
    if obj.get("prompt") is not None:
        rec.prompt = _expect_str(obj["prompt"], "prompt", source, line, allow_empty=True)
    if obj.get("query_id") is not None:
        rec.query_id = _expect_ids([obj["query_id"]], "query_id", 1, "query", source, line)[0]
    for ids_name, docs in (("pos_ids", pos), ("neg_ids", neg)):
        if obj.get(ids_name) is not None:
            setattr(rec, ids_name, _expect_ids(obj[ids_name], ids_name, len(docs), ids_name[:3], source, line))
    both = set(pos) & set(neg)
    if both:
        i = neg.index(next(iter(both)))
        raise DataFormatError(f"item {i} of 'neg' is also a positive of this record ({_short(neg[i])}); a document "
                              "cannot be relevant and non-relevant to the same query: remove one of the two",
                              field="neg", **_where(source, line))
    return rec


def _check_field_names(obj: dict, source: str | None, line: int | None) -> set[str]:
    """The fields hf_ragtrain does not use (returned, to be reported); an error for a field that is
    one letter or so off a known one (``pos_label``, ``negs``), or a docs/labels field next to ``pos``."""
    if "pos" in obj and "docs" not in obj:
        for name, instead in DOCS_FORM_FIELDS.items():
            if name in obj:
                raise DataFormatError(f"'{name}' belongs to the docs/labels form; with 'pos' and 'neg' give "
                                      f"{instead} instead (or give 'docs' with 'labels')", field=name,
                                      **_where(source, line))
    unknown = set(obj) - KNOWN_FIELDS
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, KNOWN_FIELDS, n=1, cutoff=0.75)
        if close:
            raise DataFormatError(f"unknown field; did you mean '{close[0]}'? (fields: {', '.join(sorted(KNOWN_FIELDS))})",
                                  field=name, **_where(source, line))
    return unknown


def _docs_labels_to_pos_neg(obj: dict, source: str | None, line: int | None) -> dict:
    for clash in ("pos", "neg", "pos_labels", "pos_scores", "neg_scores", "pos_ids", "neg_ids",
                  "pos_first_stage_scores", "neg_first_stage_scores"):
        if clash in obj:
            raise DataFormatError(f"give either 'docs'/'labels' or '{clash}', not both", field=clash,
                                  **_where(source, line))
    docs = _expect_str_list(obj["docs"], "docs", source, line, non_empty=True)
    if "labels" not in obj:
        raise DataFormatError("missing: 'docs' needs 'labels' (0..3, one per document)", field="labels",
                              **_where(source, line))
    labels = _expect_numbers(obj["labels"], "labels", len(docs), "docs", source, line, integer=True,
                             lo=0, hi=MAX_LABEL)
    numbers = {name: _expect_numbers(obj[name], name, len(docs), "docs", source, line)
               for name, _ in DOC_NUMBER_FIELDS if obj.get(name) is not None}
    if not any(label > 0 for label in labels):
        raise DataFormatError("expected at least one document with label > 0", field="labels",
                              **_where(source, line))
    first_label: dict[str, int] = {}
    for i, (doc, label) in enumerate(zip(docs, labels)):
        if first_label.setdefault(doc, label) != label:
            raise DataFormatError(f"item {i} is the same document as an earlier item with another label "
                                  f"({first_label[doc]} and {label}); give each document once", field="docs",
                                  **_where(source, line))
    ids = obj.get("doc_ids")
    if ids is not None:
        ids = _expect_ids(ids, "doc_ids", len(docs), "docs", source, line)
    out = {k: v for k, v in obj.items() if k not in ("docs", "labels", "doc_ids", *(n for n, _ in DOC_NUMBER_FIELDS))}
    p = [i for i, lab in enumerate(labels) if lab > 0]
    n = [i for i, lab in enumerate(labels) if lab == 0]
    out["pos"] = [docs[i] for i in p]
    out["neg"] = [docs[i] for i in n]
    out["pos_labels"] = [labels[i] for i in p]
    for name, (pos_name, neg_name) in DOC_NUMBER_FIELDS:
        if name in numbers:
            out[pos_name], out[neg_name] = [numbers[name][i] for i in p], [numbers[name][i] for i in n]
    if ids is not None:
        out["pos_ids"] = [ids[i] for i in p]
        out["neg_ids"] = [ids[i] for i in n]
    return out


# ----------------------------------------------------------------------------- loading


GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


def iter_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 text file, gzip-compressed or not (found from its first
    bytes, whatever its name); a byte-order mark is accepted. A folder, a missing file, a broken
    gzip stream or bytes that are not UTF-8 raise :class:`DataFormatError` naming the file and line."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataFormatError("is a folder; expected a .jsonl file (one JSON object per line, optionally "
                              "gzip-compressed)", path=path)
    if not os.path.isfile(path):
        raise DataFormatError("no such file", path=path)
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    opener = gzip.open if compressed else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM):]
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataFormatError(f"not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the "
                                          "line); save the file as UTF-8", path=path, line=lineno) from None
    except (OSError, EOFError) as err:  # a gzip stream cut short or corrupted
        if not compressed:
            raise
        raise DataFormatError(f"the gzip data is broken after line {lineno} ({err}); compress the file again",
                              path=path) from None


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a key given twice in one object is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def parse_json_line(raw: str, path: str, lineno: int) -> Any:
    """One JSON value from a line of a jsonl file; invalid JSON or a repeated key names the file and line."""
    try:
        return json.loads(raw, object_pairs_hook=_object_without_duplicate_keys)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON ({err.msg} at column {err.colno})", path=path, line=lineno) from None
    except _DuplicateKey as err:
        raise DataFormatError("the key appears twice in one object; keep one of the two", path=path, line=lineno,
                              field=err.key) from None


def iter_jsonl_records(path: str | os.PathLike, report: LoadReport | None = None) -> Iterator[RetrievalRecord]:
    """Yield validated records from a jsonl file (gzip-compressed or not); the first bad line raises
    :class:`DataFormatError`."""
    path = os.fspath(path)
    for lineno, raw in iter_text_lines(path):
        if not raw.strip():
            if report is not None:
                report.blank_lines += 1
            continue
        yield parse_record(parse_json_line(raw, path, lineno), source=path, line=lineno, report=report)


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
    (logger.warning if report.unknown_fields else logger.info)(report.summary())
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
    write_jsonl_atomically(path, (rec.to_dict() if isinstance(rec, RetrievalRecord) else rec for rec in records))


def write_jsonl_atomically(path: str, rows: Iterable[Any]) -> None:
    """Write ``rows`` as JSON lines into ``path + ".tmp"``, renamed over ``path`` once complete. On any
    failure (a full disk, an interruption) the temporary file is removed and ``path`` is untouched."""
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
