"""Teacher scores for training records: any reranker or embedder the package loads scores every
(query, document) pair, and the scores are written into the records as ``pos_scores``/``neg_scores``
(``scores`` for records given as ``docs``/``labels``).

Scoring is resumable. Every scored pair is appended to a cache file (one JSON line per pair, keyed
by teacher, query and document) as soon as its chunk is done, so an interrupted run starts again
where it stopped and a second run over overlapping data scores only what is new. The output file
is written to a temporary name and renamed over the destination only when complete, so a half
file never replaces a good one.

    from hf_ragtrain.scoring import load_teacher, score_records
    teacher = load_teacher("runs/llm-reranker")
    stats = score_records("train.jsonl", "train.scored.jsonl", teacher)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .data.errors import DataFormatError
from .data.records import iter_text_lines, parse_json_line, parse_record, write_jsonl_atomically

logger = logging.getLogger(__name__)

class Teacher:
    """Scores (query, document) pairs. ``name`` identifies the teacher in the score cache."""

    name: str = "teacher"

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class FunctionTeacher(Teacher):
    """Any ``fn(queries, docs) -> scores`` as a teacher (tests, custom models)."""

    def __init__(self, fn: Callable[[Sequence[str], Sequence[str]], Any], name: str):
        self.fn, self.name = fn, name

    def score(self, queries, docs):
        return np.asarray(self.fn(list(queries), list(docs)), dtype=np.float64)


class HybridTeacher(Teacher):
    """A hybrid first stage as a teacher: ``dense_weight * cosine + bm25_weight * BM25`` of each pair, from
    a :class:`~hf_ragtrain.data.hybrid.HybridIndex` (its corpus's documents are not encoded again)."""

    def __init__(self, index: Any, dense_weight: float, bm25_weight: float, name: str):
        self.index, self.dense_weight, self.bm25_weight, self.name = index, dense_weight, bm25_weight, name

    def score(self, queries, docs):
        dense, lexical = self.index.pair_features(list(queries), list(docs))
        return self.dense_weight * dense + self.bm25_weight * lexical


class PlusQueryLikelihood(Teacher):
    """``base``'s score plus ``weight`` x a chat model's query likelihood of each pair (``scorer``, a
    :class:`~hf_ragtrain.modeling.query_likelihood.QueryLikelihood`: mean log-probability per query token)."""

    def __init__(self, base: Teacher, scorer: Any, weight: float):
        self.base, self.scorer, self.weight = base, scorer, weight
        self.name = f"{base.name}+{weight:g}*{scorer.name}"

    def score(self, queries, docs):
        return self.base.score(queries, docs) + self.weight * self.scorer.score(list(queries), list(docs))


class RerankerTeacher(Teacher):
    """Any folder :meth:`hf_ragtrain.Reranker.from_pretrained` loads, as a teacher; the score is its
    raw ``compute_score``: a cross-encoder's logit, an LLM reranker's yes-token logit (at its cutoff
    layer), a zero-shot chat model's ``logit(Yes) - logit(No)``, ColBERT's MaxSim, a bi-encoder's
    cosine. ``options`` go to the loader (``max_length``, ``batch_tokens`` for pair kinds, ...)."""

    def __init__(self, path: str, kind: str | None = None, bf16: bool = False, **options: Any):
        from .reranker import Reranker, reranker_kind

        kind = kind or reranker_kind(path)
        self.reranker = Reranker.from_pretrained(path, kind=kind, dtype="bf16" if bf16 else "fp32", **options)
        self.reranker.report_truncation = False  # called once per training step: one line, not one per call
        self.kind = kind
        self.name = f"{kind}:{_fingerprint(path)}:max_length={self.reranker.max_length}"
        self._warned = False

    def score(self, queries, docs):
        scores = np.asarray(self.reranker.compute_score(list(zip(queries, docs))), dtype=np.float64)
        total = self.reranker.total
        if total.truncated and not self._warned:
            self._warned = True
            logger.warning("the teacher cuts documents longer than its max length %d (%d of the first %d pairs); "
                           "the running count is in teacher.reranker.total", self.reranker.max_length,
                           total.truncated, total.pairs)
        return scores


def load_teacher(name_or_path: str, kind: str | None = None, max_length: int = 512, batch_tokens: int = 16384,
                 bf16: bool = False) -> RerankerTeacher:
    """Load a teacher from a folder (or the ``minilm``/``smollm2`` aliases); ``kind`` overrides the
    detection (:func:`hf_ragtrain.reranker.reranker_kind`). ``max_length`` is a cross-encoder's
    tokens per pair (the other kinds keep the lengths their folder records); ``batch_tokens`` bounds
    the padded tokens of one forward pass of a kind that reads pairs (cross-encoder, LLM)."""
    from .offline import resolve_model_path
    from .reranker import PAIR_KINDS, reranker_kind

    path = resolve_model_path(name_or_path)
    kind = kind or reranker_kind(path)
    options: dict[str, Any] = {"batch_tokens": batch_tokens} if kind in PAIR_KINDS else {}
    if kind == "cross-encoder":
        options["max_length"] = max_length
    return RerankerTeacher(path, kind, bf16=bf16, **options)


@dataclass
class ScoringStats:
    records: int = 0
    pairs: int = 0
    unique_pairs: int = 0
    from_cache: int = 0
    scored: int = 0

    def summary(self) -> str:
        return (f"{self.records} records, {self.pairs} (query, document) pairs ({self.unique_pairs} distinct): "
                f"{self.from_cache} from the cache, {self.scored} scored now")


def _key(teacher: str, query: str, doc: str) -> str:
    return hashlib.sha1("\x1f".join((teacher, query, doc)).encode("utf-8")).hexdigest()


def read_cache(path: str, teacher: str) -> dict[str, float]:
    """Scores this teacher already gave, from the cache file. A last line cut short by an
    interruption is ignored (its pairs are scored again)."""
    cache: dict[str, float] = {}
    if not os.path.isfile(path):
        return cache
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n >= len(lines) - 1:  # the final line, written when the run stopped
                logger.warning("%s: ignoring the incomplete last line %d", path, n)
                continue
            raise DataFormatError("not a JSON line of a score cache", path=path, line=n) from None
        if row.get("teacher") == teacher:
            cache[row["key"]] = float(row["score"])
    return cache


def _drop_incomplete_last_line(path: str) -> None:
    """Cut a cache file back to its last complete line, so new lines are not glued onto a broken one."""
    if not os.path.isfile(path):
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


def _read_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The non-blank lines of a records file as ``(line number, JSON value)`` (see :func:`iter_text_lines`)."""
    for n, line in iter_text_lines(path):
        if line.strip():
            yield n, parse_json_line(line, path, n)


def _pairs_of(row: dict[str, Any], record) -> tuple[str, list[str]]:
    query = (record.prompt or "") + record.query
    docs = list(row["docs"]) if "docs" in row else [*record.pos, *record.neg]
    return query, docs


def score_records(input_path: str, output_path: str, teacher: Teacher, cache_path: str | None = None,
                  chunk_pairs: int = 1024, overwrite_scores: bool = False,
                  show_progress: bool = True) -> ScoringStats:
    """Write ``input_path``'s records to ``output_path`` with the teacher's score of every document.

    Every field of every record is kept as given, in the same order; ``pos_scores``/``neg_scores``
    are added (``scores``, aligned with ``docs``, for records in the ``docs``/``labels`` form). A
    record's ``prompt`` is put before its query, as the reranker collator does. Records that
    already carry teacher scores are refused unless ``overwrite_scores``.

    Pairs are scored longest-first in chunks of ``chunk_pairs`` (the teacher sorts each chunk by
    length again); each finished chunk is appended to ``cache_path`` (default
    ``output_path + ".cache.jsonl"``) and flushed, so a rerun after an interruption scores only
    what is missing.
    """
    cache_path = cache_path or output_path + ".cache.jsonl"
    rows = _rows_to_score(input_path, overwrite_scores)
    pairs = [(query, d) for _, query, docs in rows for d in docs]
    stats = ScoringStats(records=len(rows), pairs=len(pairs))
    cache = read_cache(cache_path, teacher.name)
    todo: dict[str, tuple[str, str]] = {}
    for q, d in pairs:
        key = _key(teacher.name, q, d)
        if key not in cache:
            todo.setdefault(key, (q, d))
    stats.unique_pairs = len({_key(teacher.name, q, d) for q, d in pairs})
    stats.from_cache = stats.unique_pairs - len(todo)
    stats.scored = _score_into_cache(teacher, todo, cache, cache_path, chunk_pairs, show_progress)
    _write_scored(rows, cache, teacher.name, output_path)
    logger.info("%s -> %s: %s", input_path, output_path, stats.summary())
    return stats


def check_records_to_score(input_path: str, overwrite_scores: bool = False) -> int:
    """Validate a records file for :func:`score_records` before any teacher is loaded; returns its
    number of records, or raises :class:`DataFormatError` naming the file, line and field."""
    return len(_rows_to_score(input_path, overwrite_scores))


def _rows_to_score(input_path: str, overwrite_scores: bool) -> list[tuple[dict[str, Any], str, list[str]]]:
    """Each record of the file as ``(row as given, query with its prompt, documents)``, checked."""
    rows = []
    for line, row in _read_rows(input_path):
        record = parse_record(dict(row), source=input_path, line=line)
        has = [f for f in ("pos_scores", "neg_scores", "scores") if row.get(f) is not None]
        if has and not overwrite_scores:
            raise DataFormatError(f"the record already has teacher scores ({', '.join(has)}); pass "
                                  "overwrite_scores=True (--overwrite_scores) to replace them",
                                  path=input_path, line=line, field=has[0])
        rows.append((row, *_pairs_of(row, record)))
    if not rows:
        raise DataFormatError("expected at least one record, found none", path=input_path)
    return rows


def _score_into_cache(teacher: Teacher, todo: dict[str, tuple[str, str]], cache: dict[str, float], cache_path: str,
                      chunk_pairs: int, show_progress: bool) -> int:
    """Score the pairs of ``todo`` (cache key -> pair) longest first, chunk by chunk, appending each
    finished chunk to the cache file (flushed to disk); returns how many were scored."""
    from tqdm.auto import tqdm

    keys = sorted(todo, key=lambda k: -(len(todo[k][0]) + len(todo[k][1])))  # longest first: memory peaks early
    progress = tqdm(total=len(keys), desc="teacher scoring", unit="pair", disable=not show_progress)
    _drop_incomplete_last_line(cache_path)
    with open(cache_path, "a", encoding="utf-8") as fh:
        for start in range(0, len(keys), chunk_pairs):
            chunk = keys[start:start + chunk_pairs]
            scores = teacher.score([todo[k][0] for k in chunk], [todo[k][1] for k in chunk])
            if len(scores) != len(chunk):
                raise RuntimeError(f"teacher {teacher.name} returned {len(scores)} scores for {len(chunk)} pairs")
            for k, s in zip(chunk, scores):
                cache[k] = float(s)
                fh.write(json.dumps({"teacher": teacher.name, "key": k, "score": float(s)}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            progress.update(len(chunk))
    progress.close()
    return len(keys)


def _write_scored(rows: list[tuple[dict[str, Any], str, list[str]]], cache: dict[str, float], teacher: str,
                  output_path: str) -> None:
    """Every row with its scores added, written to a temporary file renamed over ``output_path`` when complete."""
    def scored_rows():
        for row, query, docs in rows:
            scores = [cache[_key(teacher, query, d)] for d in docs]
            out = dict(row)
            if "docs" in row:
                out["scores"] = scores
            else:
                n_pos = len(row["pos"])
                out["pos_scores"], out["neg_scores"] = scores[:n_pos], scores[n_pos:]
            yield out

    write_jsonl_atomically(output_path, scored_rows())


def _fingerprint(path: str) -> str:
    """The folder and the size and time of its weight files: a retrained model gets new cache keys."""
    path = os.path.abspath(path)
    parts = [path]
    for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
        if name.endswith((".safetensors", ".bin", ".json")):
            st = os.stat(os.path.join(path, name))
            parts.append(f"{name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16] + ":" + os.path.basename(path)
