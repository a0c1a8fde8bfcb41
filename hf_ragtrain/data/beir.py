"""Read (and write) BEIR-format retrieval data sets and turn them into training/eval records.

A BEIR folder looks like::

    corpus.jsonl          {"_id": "d1", "title": "...", "text": "..."} per line
    queries.jsonl         {"_id": "q1", "text": "..."} per line
    qrels/<split>.tsv     "query-id<TAB>corpus-id<TAB>score" per line, with that header

Every problem in those files raises :class:`DataFormatError` naming the file, the
line and the field involved; nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from hf_ragtrain.data.errors import DataFormatError
from hf_ragtrain.data.records import MAX_LABEL, iter_text_lines, parse_json_line

__all__ = [
    "BeirData",
    "load_beir",
    "load_beir_corpus",
    "load_beir_queries",
    "load_beir_qrels",
    "write_beir",
    "doc_text",
    "beir_to_records",
    "beir_to_records_with_stats",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
QRELS_HEADER = ("query-id", "corpus-id", "score")
_MAX_IDS_SHOWN = 5


@dataclass
class BeirData:
    """A loaded BEIR split.

    ``corpus`` maps doc id -> ``{"title": str, "text": str}``, ``queries`` maps
    query id -> text and ``qrels`` maps query id -> {doc id: integer score}.
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    path: Optional[str] = None

    def doc_texts(self) -> dict[str, str]:
        """Doc id -> passage text as fed to models (see :func:`doc_text`)."""
        return {doc_id: doc_text(doc) for doc_id, doc in self.corpus.items()}


def doc_text(doc: Mapping[str, Any]) -> str:
    """Text of a BEIR document: ``title + " " + text`` when the title is non-empty, else ``text``.

    This is the convention sentence-transformers and MTEB use for BEIR corpora.
    """
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    if title and text:
        return f"{title} {text}"
    return title or text


# ---------------------------------------------------------------------------
# low-level readers
# ---------------------------------------------------------------------------


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line (UTF-8, gzip or not); bad JSON raises."""
    for line_no, line in iter_text_lines(path):
        if not line.strip():
            continue
        obj = parse_json_line(line, os.fspath(path), line_no)
        if not isinstance(obj, dict):
            raise DataFormatError(
                f"expected a JSON object, got {type(obj).__name__}", path, line_no
            )
        yield line_no, obj


def _get_id(obj: dict, path: Path, line_no: int) -> str:
    if "_id" not in obj:
        raise DataFormatError("missing required id", path, line_no, "_id")
    value = obj["_id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(
            f"expected a string (or integer) id, got {value!r}", path, line_no, "_id"
        )
    value = str(value)
    if not value.strip():
        raise DataFormatError("expected a non-empty id, got ''", path, line_no, "_id")
    return value


def _get_str(obj: dict, key: str, path: Path, line_no: int, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DataFormatError("missing required string", path, line_no, key)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise DataFormatError(
            f"expected a string, got {type(value).__name__} {value!r:.60}", path, line_no, key
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataFormatError(f"holds a lone surrogate {value[err.start]!r} at character {err.start}, which is not "
                              "valid Unicode text; fix or remove that escape", path, line_no, key) from None
    return value


def _iter_unique(path: Path, kind: str) -> Iterator[tuple[int, dict, str]]:
    """Yield ``(line number, object, id)`` from a BEIR jsonl file, rejecting repeated ids."""
    first_line: dict[str, int] = {}
    for line_no, obj in _iter_jsonl(path):
        item_id = _get_id(obj, path, line_no)
        if item_id in first_line:
            raise DataFormatError(
                f"duplicate {kind} id {item_id!r} (first seen on line {first_line[item_id]})",
                path, line_no, "_id",
            )
        first_line[item_id] = line_no
        yield line_no, obj, item_id


def load_beir_corpus(path: PathLike) -> dict[str, dict[str, str]]:
    """Read a BEIR ``corpus.jsonl`` into doc id -> ``{"title", "text"}``."""
    path = Path(path)
    corpus: dict[str, dict[str, str]] = {}
    for line_no, obj, doc_id in _iter_unique(path, "document"):
        title = _get_str(obj, "title", path, line_no, required=False)
        text = _get_str(obj, "text", path, line_no, required=True)
        corpus[doc_id] = {"title": title, "text": text}
    return corpus


def load_beir_queries(path: PathLike) -> dict[str, str]:
    """Read a BEIR ``queries.jsonl`` into query id -> text."""
    path = Path(path)
    queries: dict[str, str] = {}
    for line_no, obj, query_id in _iter_unique(path, "query"):
        text = _get_str(obj, "text", path, line_no, required=True)
        if not text.strip():
            raise DataFormatError("expected a non-empty query text, got ''", path, line_no, "text")
        queries[query_id] = text
    return queries


def load_beir_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id  corpus-id  score``) into qid -> {docid: score}.

    The header line is optional. Scores must be integers. A repeated
    (query, doc) pair with a different score is an error.
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line_no, raw in iter_text_lines(path):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        cols = line.split("\t")
        if line_no == 1 and tuple(c.strip().lower() for c in cols) == QRELS_HEADER:
            continue
        if len(cols) != 3:
            raise DataFormatError(
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}: {line!r:.80}",
                path, line_no,
            )
        query_id, doc_id, score_str = (c.strip() for c in cols)
        if not query_id:
            raise DataFormatError("expected a non-empty query id", path, line_no, "query-id")
        if not doc_id:
            raise DataFormatError("expected a non-empty corpus id", path, line_no, "corpus-id")
        score = _qrels_grade(score_str, path, line_no)
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != score:
            raise DataFormatError(
                f"conflicting scores for ({query_id!r}, {doc_id!r}): {judged[doc_id]} earlier, {score} here",
                path, line_no, "score",
            )
        judged[doc_id] = score
    return qrels


def write_beir(path: PathLike, corpus: Mapping[str, Mapping[str, str]], queries: Mapping[str, str],
               qrels: Mapping[str, Mapping[str, Mapping[str, int]]]) -> None:
    """Write a BEIR folder that :func:`load_beir` reads back: ``corpus`` ``{doc id: {"title", "text"}}``,
    ``queries`` ``{query id: text}`` and ``qrels`` ``{split: {query id: {doc id: grade}}}`` (one
    ``qrels/<split>.tsv`` per split), each in the order given."""
    path = Path(path)
    (path / "qrels").mkdir(parents=True, exist_ok=True)
    with open(path / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"_id": i, "title": d.get("title", ""), "text": d["text"]}) + "\n"
                      for i, d in corpus.items())
    with open(path / "queries.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"_id": i, "text": q}) + "\n" for i, q in queries.items())
    for split, judged in qrels.items():
        with open(path / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
            fh.write("\t".join(QRELS_HEADER) + "\n")
            fh.writelines(f"{q}\t{d}\t{g}\n" for q, docs in judged.items() for d, g in docs.items())


def _qrels_grade(text: str, path: Path, line_no: int) -> int:
    """A qrels score: an integer, at most 3 (TREC's graded scale, which training records use); 0 and
    negative grades (TREC's -2 for spam) mean not relevant."""
    try:
        score = int(text)
    except ValueError:
        raise DataFormatError(f"expected an integer relevance score, got {text!r}", path, line_no, "score") from None
    if score > MAX_LABEL:
        raise DataFormatError(f"expected a grade of at most {MAX_LABEL} (graded relevance 0..{MAX_LABEL}, as training "
                              f"records use), got {score}; rescale the qrels to that range", path, line_no, "score")
    return score


def _preview(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_IDS_SHOWN])
    return shown + (", ..." if len(ids) > _MAX_IDS_SHOWN else "")


def load_beir(
    beir_dir: PathLike,
    split: str = "test",
    keep_all_queries: bool = False,
) -> BeirData:
    """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

    Only queries judged in the split's qrels are kept unless ``keep_all_queries``.
    Qrels naming a query or document id missing from ``queries.jsonl`` /
    ``corpus.jsonl`` raise :class:`DataFormatError` with the count and the first ids.
    """
    root = Path(beir_dir)
    corpus_path = root / "corpus.jsonl"
    queries_path = root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    for needed in (corpus_path, queries_path):
        if not needed.is_file():
            raise FileNotFoundError(f"BEIR folder {root} has no {needed.name}")
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise FileNotFoundError(
            f"BEIR folder {root} has no qrels/{split}.tsv (available splits: {available or 'none'})"
        )

    corpus = load_beir_corpus(corpus_path)
    queries = load_beir_queries(queries_path)
    qrels = load_beir_qrels(qrels_path)

    unknown_queries = [qid for qid in qrels if qid not in queries]
    if unknown_queries:
        raise DataFormatError(
            f"{len(unknown_queries)} query id(s) are not in {queries_path.name}: "
            f"{_preview(unknown_queries)}",
            qrels_path, field="query-id",
        )
    unknown_docs = sorted({d for judged in qrels.values() for d in judged if d not in corpus})
    if unknown_docs:
        raise DataFormatError(
            f"{len(unknown_docs)} corpus id(s) are not in {corpus_path.name}: "
            f"{_preview(unknown_docs)}",
            qrels_path, field="corpus-id",
        )

    if not keep_all_queries:
        queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return BeirData(corpus=corpus, queries=queries, qrels=qrels, split=split, path=str(root))


# ---------------------------------------------------------------------------
# conversion to training/eval records
# ---------------------------------------------------------------------------


def beir_to_records_with_stats(
    data: BeirData,
    negatives: Optional[Mapping[str, Sequence[str]]] = None,
) -> tuple[list[dict], dict[str, int]]:
    """Like :func:`beir_to_records` but also return counts.

    The stats dict has ``records``, ``skipped_no_positive`` (queries without any
    qrel score > 0), ``negatives`` (total written), ``negatives_dropped_positive``
    (given negative ids that are judged relevant for that query and were removed),
    ``empty_documents_dropped`` (documents whose title and text are both empty: a record
    cannot hold them) and ``skipped_empty_positives`` (queries whose every positive is empty).
    """
    negatives = negatives or {}
    unknown_neg = sorted({d for ids in negatives.values() for d in ids if d not in data.corpus})
    if unknown_neg:
        raise ValueError(
            f"{len(unknown_neg)} negative doc id(s) are not in the corpus: {_preview(unknown_neg)}"
        )

    records: list[dict] = []
    stats = {"records": 0, "skipped_no_positive": 0, "negatives": 0, "negatives_dropped_positive": 0,
             "empty_documents_dropped": 0, "skipped_empty_positives": 0}
    text_cache: dict[str, str] = {}

    def text_of(doc_id: str) -> str:
        if doc_id not in text_cache:
            text_cache[doc_id] = doc_text(data.corpus[doc_id])
        return text_cache[doc_id]

    for query_id, query in data.queries.items():
        record = _beir_record(query_id, query, data.qrels.get(query_id, {}), negatives.get(query_id, ()), text_of,
                              stats)
        if record is not None:
            records.append(record)

    stats["records"] = len(records)
    if stats["skipped_no_positive"]:
        logger.warning(
            "beir_to_records: skipped %d of %d queries with no qrel score > 0",
            stats["skipped_no_positive"], len(data.queries),
        )
    if stats["negatives_dropped_positive"]:
        logger.warning(
            "beir_to_records: removed %d negative(s) that are judged relevant for their query",
            stats["negatives_dropped_positive"],
        )
    if stats["empty_documents_dropped"]:
        logger.warning("beir_to_records: left out %d document(s) with no title and no text (%d queries had only "
                       "such positives and were skipped)", stats["empty_documents_dropped"],
                       stats["skipped_empty_positives"])
    return records, stats


def _beir_record(query_id: str, query: str, judged: Mapping[str, int], negative_ids: Sequence[str],
                 text_of: Any, stats: dict[str, int]) -> dict | None:
    """One query's record (judged positives sorted by id, then the given negatives that are not judged
    relevant), or ``None`` for a query without a positive; ``stats`` counts both."""
    pos_ids = sorted(d for d, score in judged.items() if score > 0)
    if not pos_ids:
        stats["skipped_no_positive"] += 1
        return None
    with_text = [d for d in pos_ids if text_of(d).strip()]
    stats["empty_documents_dropped"] += len(pos_ids) - len(with_text)
    if not with_text:
        stats["skipped_empty_positives"] += 1
        return None
    pos_ids = with_text
    neg_ids = []
    for doc_id in negative_ids:
        if judged.get(doc_id, 0) > 0:
            stats["negatives_dropped_positive"] += 1
        elif not text_of(doc_id).strip():
            stats["empty_documents_dropped"] += 1
        else:
            neg_ids.append(doc_id)
    record: dict[str, Any] = {"query": query, "pos": [text_of(d) for d in pos_ids], "neg": [text_of(d) for d in neg_ids]}
    labels = [judged[d] for d in pos_ids]
    if any(label > 1 for label in labels):
        record["pos_labels"] = labels
    record.update(query_id=query_id, pos_ids=pos_ids, neg_ids=neg_ids)
    stats["negatives"] += len(neg_ids)
    return record


def beir_to_records(
    data: BeirData,
    negatives: Optional[Mapping[str, Sequence[str]]] = None,
) -> list[dict]:
    """Turn a BEIR split into one record per query with at least one relevant doc.

    ``pos`` holds the texts (:func:`doc_text`) of docs with qrel score > 0, sorted
    by doc id; ``pos_labels`` (the raw scores) is added only when a score is > 1.
    ``neg`` holds the texts of ``negatives[query_id]`` in the given order (ids that
    are judged relevant for the query are removed). ``query_id``, ``pos_ids`` and
    ``neg_ids`` map texts back to BEIR ids. Skipped queries are logged; use
    :func:`beir_to_records_with_stats` to get the counts.
    """
    records, _ = beir_to_records_with_stats(data, negatives)
    return records
