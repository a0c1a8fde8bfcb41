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
from .data.records import parse_record

logger = logging.getLogger(__name__)

TEACHER_KINDS = ("cross-encoder", "llm", "bi-encoder", "colbert", "zero-shot")


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


class CrossEncoderTeacher(Teacher):
    """A sequence-classification cross-encoder; the score is its raw logit."""

    def __init__(self, path: str, max_length: int = 512, batch_tokens: int = 16384, bf16: bool = False):
        import torch

        from .modeling.cross_encoder import load_cross_encoder

        self.model, self.tokenizer = load_cross_encoder(path)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.max_length, self.batch_tokens, self.bf16 = max_length, batch_tokens, bf16
        self.name = f"cross-encoder:{_fingerprint(path)}:max_length={max_length}"

    def score(self, queries, docs):
        from .modeling.cross_encoder import score_pairs

        with _autocast(self.model, self.bf16):
            return score_pairs(self.model, self.tokenizer, queries, docs, max_length=self.max_length,
                               batch_tokens=self.batch_tokens).astype(np.float64)


class LlmTeacher(Teacher):
    """An :class:`~hf_ragtrain.LlmReranker`; the score is its yes-token logit (or head output)."""

    def __init__(self, path: str, batch_tokens: int = 16384, bf16: bool = False, cutoff_layer: int | None = None):
        import torch

        from .modeling.llm_reranker import LlmReranker

        self.model = LlmReranker.from_pretrained(path)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.batch_tokens, self.bf16, self.cutoff_layer = batch_tokens, bf16, cutoff_layer
        self.name = f"llm:{_fingerprint(path)}:cutoff={cutoff_layer}"

    def score(self, queries, docs):
        with _autocast(self.model, self.bf16):
            return self.model.score(queries, docs, batch_tokens=self.batch_tokens,
                                    cutoff_layer=self.cutoff_layer).astype(np.float64)


class BiEncoderTeacher(Teacher):
    """A bi-encoder; the score is the dot product of the query and document vectors (cosine when
    the model normalises)."""

    def __init__(self, path: str, batch_size: int = 64, bf16: bool = False):
        import torch

        from .modeling.bi_encoder import BiEncoder

        self.model = BiEncoder.from_pretrained(path)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.batch_size, self.bf16 = batch_size, bf16
        self.name = f"bi-encoder:{_fingerprint(path)}"

    def score(self, queries, docs):
        unique_q = list(dict.fromkeys(queries))
        unique_d = list(dict.fromkeys(docs))
        with _autocast(self.model, self.bf16):
            qv = np.asarray(self.model.encode(unique_q, kind="query", batch_size=self.batch_size), dtype=np.float64)
            dv = np.asarray(self.model.encode(unique_d, kind="passage", batch_size=self.batch_size), dtype=np.float64)
        qi = {q: i for i, q in enumerate(unique_q)}
        di = {d: i for i, d in enumerate(unique_d)}
        return np.array([qv[qi[q]] @ dv[di[d]] for q, d in zip(queries, docs)])


class RerankerTeacher(Teacher):
    """Any kind :meth:`hf_ragtrain.Reranker.from_pretrained` loads (used for ColBERT and zero-shot
    chat-model teachers); the score is its ``compute_score``."""

    def __init__(self, path: str, kind: str, bf16: bool = False, **options: Any):
        from .reranker import Reranker

        self.reranker = Reranker.from_pretrained(path, kind=kind, dtype="bf16" if bf16 else "fp32", **options)
        self.reranker.report_truncation = False  # called once per training step: one line, not one per call
        self.name = f"{kind}:{_fingerprint(path)}"
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


def teacher_kind(path: str) -> str:
    """Which teacher a folder holds, read from its saved files (:func:`hf_ragtrain.reranker.reranker_kind`;
    a layerwise LLM reranker is an ``llm`` teacher)."""
    from .reranker import reranker_kind

    kind = reranker_kind(path)
    return "llm" if kind == "layerwise-llm" else kind


def load_teacher(name_or_path: str, kind: str | None = None, max_length: int = 512, batch_tokens: int = 16384,
                 bf16: bool = False) -> Teacher:
    """Load a teacher from a folder (or the ``minilm``/``smollm2`` aliases); ``kind`` overrides detection."""
    from .offline import resolve_model_path

    path = resolve_model_path(name_or_path)
    kind = kind or teacher_kind(path)
    if kind == "llm":
        return LlmTeacher(path, batch_tokens=batch_tokens, bf16=bf16)
    if kind == "bi-encoder":
        return BiEncoderTeacher(path, bf16=bf16)
    if kind == "cross-encoder":
        return CrossEncoderTeacher(path, max_length=max_length, batch_tokens=batch_tokens, bf16=bf16)
    if kind in ("colbert", "zero-shot"):
        return RerankerTeacher(path, kind, bf16=bf16)
    raise ValueError(f"unknown teacher kind {kind!r}; choose one of {TEACHER_KINDS}")


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
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataFormatError(f"not valid JSON ({err.msg})", path=path, line=n) from None


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
    from tqdm.auto import tqdm

    cache_path = cache_path or output_path + ".cache.jsonl"
    rows, pairs = [], []
    for line, row in _read_rows(input_path):
        record = parse_record(dict(row), source=input_path, line=line)
        has = [f for f in ("pos_scores", "neg_scores", "scores") if row.get(f) is not None]
        if has and not overwrite_scores:
            raise DataFormatError(f"the record already has teacher scores ({', '.join(has)}); pass "
                                  "overwrite_scores=True (--overwrite_scores) to replace them",
                                  path=input_path, line=line, field=has[0])
        query, docs = _pairs_of(row, record)
        rows.append((row, query, docs))
        pairs.extend((query, d) for d in docs)
    if not rows:
        raise DataFormatError("expected at least one record, found none", path=input_path)
    stats = ScoringStats(records=len(rows), pairs=len(pairs))
    cache = read_cache(cache_path, teacher.name)
    todo: dict[str, tuple[str, str]] = {}
    for q, d in pairs:
        key = _key(teacher.name, q, d)
        if key not in cache:
            todo.setdefault(key, (q, d))
    stats.unique_pairs = len({_key(teacher.name, q, d) for q, d in pairs})
    stats.from_cache = stats.unique_pairs - len(todo)
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
            stats.scored += len(chunk)
            progress.update(len(chunk))
    progress.close()

    tmp = output_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for row, query, docs in rows:
            scores = [cache[_key(teacher.name, query, d)] for d in docs]
            out = dict(row)
            if "docs" in row:
                out["scores"] = scores
            else:
                n_pos = len(row["pos"])
                out["pos_scores"], out["neg_scores"] = scores[:n_pos], scores[n_pos:]
            fh.write(json.dumps(out, ensure_ascii=False) + "\n")
    os.replace(tmp, output_path)
    logger.info("%s -> %s: %s", input_path, output_path, stats.summary())
    return stats


def _fingerprint(path: str) -> str:
    """The folder and the size and time of its weight files: a retrained model gets new cache keys."""
    path = os.path.abspath(path)
    parts = [path]
    for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
        if name.endswith((".safetensors", ".bin", ".json")):
            st = os.stat(os.path.join(path, name))
            parts.append(f"{name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16] + ":" + os.path.basename(path)


def _autocast(model, bf16: bool):
    import contextlib

    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)
