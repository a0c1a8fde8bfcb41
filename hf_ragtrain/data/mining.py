"""First-stage retrieval (BM25, dense) and hard-negative mining.

* :class:`BM25` is Okapi BM25 over scipy sparse matrices with the Lucene/Pyserini
  idf ``log(1 + (N - df + 0.5) / (df + 0.5))`` (always positive, no flooring) and
  the Pyserini defaults ``k1=0.9, b=0.4``; :class:`BM25Stats` is what it needs of its
  collection to score any (query, document) pair, saved with a reranker that adds BM25.
* :func:`dense_search` ranks documents by cosine similarity of normalised
  embeddings from any sentence-transformers style encoder.
* :func:`mine_hard_negatives` retrieves candidates with either (or both, fused
  by reciprocal rank), keeps non-relevant documents from a rank window and drops those a
  scorer rates too close to the positive (:mod:`hf_ragtrain.data.negative_filters`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import scipy.sparse as sp

from hf_ragtrain.data.beir import doc_text
from hf_ragtrain.data.negative_filters import NegativeFilters

__all__ = [
    "tokenize",
    "top_k_rows",
    "BM25",
    "BM25Stats",
    "load_encoder",
    "encode_normalized",
    "dense_search",
    "search_embeddings",
    "MiningStats",
    "mine_hard_negatives",
]

logger = logging.getLogger(__name__)

# Upper bound on the number of query x document scores held at once (float32/64 entries).
_MAX_CHUNK_ELEMENTS = 1 << 24

_TOKEN_RE = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it on anything that is not a letter or digit.

    Unicode-aware (``"Café_au-lait 2x"`` -> ``["café", "au", "lait", "2x"]``); no
    stemming and no stopword removal.
    """
    return _TOKEN_RE.findall(text.lower())


def stemming_tokenizer(language: str) -> Callable[[str], list[str]]:
    """:func:`tokenize`, then the Snowball stemmer of ``language`` (``"english"``, ``"german"``, ...;
    ``snowballstemmer.algorithms()`` lists them), each distinct word stemmed once per tokenizer."""
    import snowballstemmer

    try:
        stemmer = snowballstemmer.stemmer(language)
    except KeyError:
        raise ValueError(f"no Snowball stemmer for the language {language!r}; choose one of "
                         f"{', '.join(snowballstemmer.algorithms())}, or none (no stemming)") from None
    stems: dict[str, str] = {}

    def stemmed(text: str) -> list[str]:
        out = []
        for word in tokenize(text):
            stem = stems.get(word)
            if stem is None:
                stem = stems[word] = stemmer.stemWord(word)
            out.append(stem)
        return out

    return stemmed


def bm25_tokenizer(language: str | None) -> Callable[[str], list[str]]:
    """The tokenizer of BM25 for ``language``: :func:`tokenize`, stemmed unless ``language`` is ``None``."""
    return stemming_tokenizer(language) if language else tokenize


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` values per row of a dense matrix, best first, ties broken by lower column."""
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0:
        return np.zeros((n_rows, 0), scores.dtype), np.zeros((n_rows, 0), np.int64)
    if k == n_cols:
        order = np.argsort(-scores, axis=1, kind="stable")
    else:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        order = np.empty((n_rows, k), dtype=np.int64)
        for r in range(n_rows):
            row = scores[r]
            above = np.flatnonzero(row > kth[r])
            ties = np.flatnonzero(row == kth[r])[: k - above.size]
            cand = np.concatenate([above, ties])
            order[r] = cand[np.argsort(-row[cand], kind="stable")]
    return np.take_along_axis(scores, order, axis=1), order.astype(np.int64)


def bm25_idf(df: np.ndarray | float, num_docs: int) -> np.ndarray | float:
    """The Lucene/Pyserini idf ``log(1 + (N - df + 0.5) / (df + 0.5))`` (positive for every df <= N)."""
    return np.log1p((num_docs - df + 0.5) / (df + 0.5))


@dataclass
class BM25Stats:
    """What Okapi BM25 needs of a collection to score any (query, document) pair: each term's document
    frequency ``df``, the number of documents and their mean length (in tokens of :func:`tokenize`,
    stemmed for ``language`` when it is set, see :func:`bm25_tokenizer`).

    A document need not be in the collection: its terms and length are counted when it is scored, and
    a term the collection never saw has ``df = 0``. For a document of the collection the score equals
    :meth:`BM25.get_scores`. Saved beside a reranker whose score adds BM25
    (:mod:`hf_ragtrain.modeling.fusion`) as JSON (:meth:`save`, :meth:`load`).
    """

    df: dict[str, int]
    num_docs: int
    avgdl: float
    k1: float = 0.9
    b: float = 0.4
    language: str | None = None

    def __post_init__(self):
        self._tokenize = bm25_tokenizer(self.language)

    @classmethod
    def of(cls, docs: Sequence[str], k1: float = 0.9, b: float = 0.4, language: str | None = None) -> "BM25Stats":
        """The statistics of a collection of texts."""
        return BM25(docs, k1=k1, b=b, language=language).stats()

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """BM25 of each ``(queries[i], docs[i])``: ``(N,)`` float64; each distinct text is tokenised once."""
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        counted: dict[str, tuple[dict[str, int], int]] = {}
        terms: dict[str, list[str]] = {}
        out = np.zeros(len(docs), dtype=np.float64)
        for i, (query, doc) in enumerate(zip(queries, docs)):
            if doc not in counted:
                tokens = self._tokenize(doc)
                tf: dict[str, int] = {}
                for tok in tokens:
                    tf[tok] = tf.get(tok, 0) + 1
                counted[doc] = (tf, len(tokens))
            if query not in terms:
                terms[query] = self._tokenize(query)
            tf, length = counted[doc]
            norm = self.k1 * (1.0 - self.b + self.b * length / self.avgdl)
            out[i] = sum(bm25_idf(self.df.get(t, 0), self.num_docs) * tf[t] * (self.k1 + 1.0) / (tf[t] + norm)
                         for t in terms[query] if t in tf)
        return out

    def save(self, path: str) -> None:
        """Write the statistics as JSON (terms sorted, so equal collections give equal files)."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"k1": self.k1, "b": self.b, "num_docs": self.num_docs, "avgdl": self.avgdl,
                       "language": self.language,
                       "tokenizer": "lowercase, split on anything that is not a letter or digit"
                                    + (f", Snowball stemmer '{self.language}'" if self.language else ""),
                       "df": dict(sorted(self.df.items()))}, fh, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> "BM25Stats":
        """Read what :meth:`save` wrote; a file that is not such JSON is a ``ValueError`` naming it."""
        try:
            with open(path, encoding="utf-8") as fh:
                saved = json.load(fh)
            stats = cls(df={str(t): int(n) for t, n in saved["df"].items()}, num_docs=int(saved["num_docs"]),
                        avgdl=float(saved["avgdl"]), k1=float(saved["k1"]), b=float(saved["b"]),
                        language=saved.get("language"))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: expected BM25 statistics (JSON with 'df', 'num_docs', 'avgdl', 'k1', 'b') "
                             f"({type(err).__name__}: {err})") from None
        if stats.num_docs < 1 or stats.avgdl <= 0:
            raise ValueError(f"{path}: num_docs must be at least 1 and avgdl positive, got {stats.num_docs} and "
                             f"{stats.avgdl}")
        return stats


class BM25:
    """Okapi BM25 index over a list of documents.

    ``score(q, d) = sum over query tokens t (repeats included) of
    idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))``
    with ``idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))``.

    Defaults ``k1=0.9, b=0.4`` are Pyserini's BEIR BM25 settings. Query tokens not
    in the corpus contribute nothing. Tokens are :func:`tokenize`'s, or ``tokenizer``'s, or
    :func:`tokenize`'s stemmed for ``language`` (``"english"``: what Lucene's English analyzer does
    with Porter's stemmer; see :func:`stemming_tokenizer`).
    """

    def __init__(
        self,
        docs: Sequence[str],
        k1: float = 0.9,
        b: float = 0.4,
        tokenizer: Callable[[str], list[str]] = tokenize,
        language: str | None = None,
    ) -> None:
        self.k1 = float(k1)
        self.b = float(b)
        self.language = language
        if language is not None and tokenizer is not tokenize:
            raise ValueError("give a tokenizer or a stemming language, not both")
        self.tokenizer = bm25_tokenizer(language) if language else tokenizer
        self.vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        doc_len = np.zeros(len(docs), dtype=np.float64)
        for i, doc in enumerate(docs):
            ids = [self.vocab.setdefault(tok, len(self.vocab)) for tok in self.tokenizer(doc)]
            cols.extend(ids)
            rows.extend([i] * len(ids))
            doc_len[i] = len(ids)
        n_docs, n_terms = len(docs), len(self.vocab)
        tf = sp.csr_matrix(
            (np.ones(len(cols)), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(n_docs, n_terms),
        )
        tf.sum_duplicates()
        df = np.bincount(tf.indices, minlength=n_terms).astype(np.float64)
        self.df = df
        self.idf = bm25_idf(df, n_docs)
        self.doc_len = doc_len
        self.avgdl = float(doc_len.mean()) if n_docs and doc_len.sum() > 0 else 1.0
        length_norm = self.k1 * (1.0 - self.b + self.b * doc_len / self.avgdl)
        entry_doc = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
        weights = tf.copy()
        weights.data = (
            self.idf[tf.indices] * tf.data * (self.k1 + 1.0) / (tf.data + length_norm[entry_doc])
        )
        # terms x docs, so a (queries x terms) count matrix times this gives scores.
        self._term_doc = weights.T.tocsr()

    @property
    def num_docs(self) -> int:
        """Number of indexed documents."""
        return self._term_doc.shape[1]

    def _query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        rows: list[int] = []
        cols: list[int] = []
        for i, query in enumerate(queries):
            ids = [self.vocab[t] for t in self.tokenizer(query) if t in self.vocab]
            cols.extend(ids)
            rows.extend([i] * len(ids))
        qm = sp.csr_matrix(
            (np.ones(len(cols)), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(len(queries), len(self.vocab)),
        )
        qm.sum_duplicates()
        return qm

    def stats(self) -> BM25Stats:
        """The collection statistics that score any pair as this index scores its own documents."""
        if self.tokenizer is not tokenize and self.language is None:
            raise ValueError("BM25Stats scores with hf_ragtrain's tokenize() (stemmed for a language); this index "
                             "was built with another tokenizer, so its statistics would not match its scores")
        return BM25Stats(df={t: int(self.df[i]) for t, i in self.vocab.items()}, num_docs=self.num_docs,
                         avgdl=self.avgdl, k1=self.k1, b=self.b, language=self.language)

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for one query, shape ``[num_docs]`` (float64)."""
        return (self._query_matrix([query]) @ self._term_doc).toarray()[0]

    def search(
        self, queries: Sequence[str], top_k: int = 100, chunk_size: Optional[int] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``top_k`` documents per query.

        Returns ``(scores, indices)``: float32 ``[Q, k]`` and int64 ``[Q, k]`` with
        ``k = min(top_k, num_docs)``, best first; equal scores are ordered by lower
        document index (documents with score 0 fill the list when few match).
        Queries are scored ``chunk_size`` at a time (default: as many as fit in
        about 16M scores).
        """
        n_docs = self.num_docs
        k = min(int(top_k), n_docs)
        out_scores = np.zeros((len(queries), k), dtype=np.float32)
        out_indices = np.zeros((len(queries), k), dtype=np.int64)
        if not len(queries) or k == 0:
            return out_scores, out_indices
        chunk = chunk_size or max(1, _MAX_CHUNK_ELEMENTS // n_docs)
        qm = self._query_matrix(queries)
        for start in range(0, len(queries), chunk):
            stop = min(start + chunk, len(queries))
            dense = (qm[start:stop] @ self._term_doc).toarray()
            scores, indices = top_k_rows(dense, k)
            out_scores[start:stop] = scores
            out_indices[start:stop] = indices
        return out_scores, out_indices


# ---------------------------------------------------------------------------
# dense retrieval
# ---------------------------------------------------------------------------

Encoder = Any  # anything with .encode(list[str], batch_size=, convert_to_numpy=, normalize_embeddings=)


def load_encoder(encoder: Union[Encoder, str, os.PathLike, None]) -> Encoder:
    """Return ``encoder`` itself, or load a ``SentenceTransformer`` from a path/alias.

    ``None`` and ``"minilm"`` give the offline all-MiniLM-L6-v2 (see
    :func:`hf_ragtrain.offline.resolve_model_path`).
    """
    if encoder is None:
        encoder = "minilm"
    if isinstance(encoder, (str, os.PathLike)):
        from sentence_transformers import SentenceTransformer

        from hf_ragtrain.distributed import outside_zero3
        from hf_ragtrain.offline import resolve_model_path

        with outside_zero3():  # a frozen encoder, never given to DeepSpeed: load it whole
            return SentenceTransformer(resolve_model_path(os.fspath(encoder)))
    if not callable(getattr(encoder, "encode", None)):
        raise TypeError(f"encoder must have an .encode() method or be a model path, got {encoder!r}")
    return encoder


def _accepts_kwarg(func: Callable, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def encode_normalized(encoder: Encoder, texts: Sequence[str], batch_size: int = 64,
                      show_progress: bool = False, kind: str | None = None) -> np.ndarray:
    """``[len(texts), dim]`` L2-normalised float32 embeddings of ``texts`` (the dot product is the cosine).

    ``kind`` (``"query"`` or ``"document"``) encodes with the encoder's ``encode_query`` /
    ``encode_document`` when it has them (sentence-transformers 6: each side's prompt and max length),
    else with ``encode``."""
    method = getattr(encoder, f"encode_{kind}", None) if kind in ("query", "document") else None
    encode = method if callable(method) else encoder.encode
    kwargs: dict[str, Any] = dict(batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    if _accepts_kwarg(encode, "show_progress_bar"):
        kwargs["show_progress_bar"] = show_progress
    emb = np.asarray(encode(list(texts), **kwargs), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"encoder returned shape {emb.shape} for {len(texts)} texts; expected [n, dim]")
    # Normalise again in case the encoder ignored normalize_embeddings: scores are cosines.
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def dense_search(
    encoder: Union[Encoder, str, os.PathLike],
    queries: Sequence[str],
    docs: Sequence[str],
    top_k: int = 100,
    batch_size: int = 64,
    show_progress: bool = True,
    chunk_size: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` documents per query by cosine similarity of normalised embeddings.

    ``encoder`` is an object with a sentence-transformers style ``.encode`` or a
    model path/alias loaded with :func:`load_encoder`. Similarities are computed
    ``chunk_size`` queries at a time (default: about 16M scores per chunk) and
    reduced with ``torch.topk``, so the full ``Q x N`` matrix is never built.
    Returns ``(scores, indices)``: float32 and int64 arrays of shape ``[Q, min(top_k, N)]``.
    """
    k = min(int(top_k), len(docs))
    if not len(queries) or k == 0:
        return np.zeros((len(queries), k), dtype=np.float32), np.zeros((len(queries), k), dtype=np.int64)
    return search_embeddings(*_embeddings(encoder, list(queries), list(docs), batch_size, show_progress), k,
                             chunk_size)


def search_embeddings(query_emb: np.ndarray, doc_emb: np.ndarray, top_k: int = 100,
                      chunk_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` rows of ``doc_emb`` ``[N, D]`` per row of ``query_emb`` ``[Q, D]`` by dot product (the
    cosine for :func:`encode_normalized`'s vectors), ``chunk_size`` queries at a time; returns float32
    and int64 ``[Q, min(top_k, N)]``, best first."""
    import torch

    if doc_emb.shape[1] != query_emb.shape[1]:
        raise ValueError(f"query dim {query_emb.shape[1]} != document dim {doc_emb.shape[1]}")
    k = min(int(top_k), len(doc_emb))
    scores = np.zeros((len(query_emb), k), dtype=np.float32)
    indices = np.zeros((len(query_emb), k), dtype=np.int64)
    if not len(query_emb) or k == 0:
        return scores, indices
    docs_t = torch.from_numpy(np.ascontiguousarray(doc_emb, dtype=np.float32))
    queries_t = torch.from_numpy(np.ascontiguousarray(query_emb, dtype=np.float32))
    chunk = chunk_size or max(1, _MAX_CHUNK_ELEMENTS // len(doc_emb))
    with torch.no_grad():
        for start in range(0, len(query_emb), chunk):
            values, idx = torch.topk(queries_t[start:start + chunk] @ docs_t.T, k, dim=1, largest=True, sorted=True)
            scores[start:start + chunk] = values.numpy()
            indices[start:start + chunk] = idx.numpy()
    return scores, indices


# ---------------------------------------------------------------------------
# hard-negative mining
# ---------------------------------------------------------------------------


@dataclass
class MiningStats:
    """Counts reported by :func:`mine_hard_negatives`."""

    queries: int = 0  # queries mined (judged, with at least one qrel score > 0)
    skipped_no_positive: int = 0  # judged queries without a positive: not mined
    num_negatives: int = 0  # negatives requested per query
    negatives: int = 0  # negatives returned in total
    short: int = 0  # queries that got fewer than num_negatives
    empty: int = 0  # queries that got none
    dropped_positive: int = 0  # relevant docs found inside the rank window and removed
    dropped_duplicate: int = 0  # docs removed because their text equals a positive's text
    scored_pairs: int = 0  # (query, document) pairs scored for the filters
    dropped_max_score: int = 0  # candidates scored above max_score
    dropped_absolute_margin: int = 0  # candidates within absolute_margin of the weakest positive's score
    dropped_relative_margin: int = 0  # candidates within relative_margin of it

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict."""
        return asdict(self)

    @property
    def dropped_by_filters(self) -> int:
        """Candidates the score filters removed (all three together)."""
        return self.dropped_max_score + self.dropped_absolute_margin + self.dropped_relative_margin


def _ranked_lists(scores: np.ndarray, indices: np.ndarray, positive_only: bool) -> list[np.ndarray]:
    if not positive_only:
        return list(indices)
    return [idx[s > 0] for s, idx in zip(scores, indices)]


def _as_text(doc: Union[str, Mapping[str, str]]) -> str:
    return doc if isinstance(doc, str) else doc_text(doc)


def _rrf(lists: Sequence[list[np.ndarray]], depth: int, k: int) -> list[np.ndarray]:
    """Reciprocal-rank fusion: sum of ``1 / (k + rank + 1)`` over the lists; ties -> lower doc index."""
    fused = []
    for per_query in zip(*lists):
        totals: dict[int, float] = {}
        for ranked in per_query:
            for rank, doc in enumerate(ranked.tolist()):
                totals[doc] = totals.get(doc, 0.0) + 1.0 / (k + rank + 1)
        order = sorted(totals, key=lambda d: (-totals[d], d))[:depth]
        fused.append(np.asarray(order, dtype=np.int64))
    return fused


def mine_hard_negatives(
    queries: Mapping[str, str],
    corpus: Mapping[str, Union[str, Mapping[str, str]]],
    qrels: Mapping[str, Mapping[str, int]],
    method: str = "dense",
    encoder: Union[Encoder, str, os.PathLike, None] = None,
    rank_range: tuple[int, int] = (10, 100),
    num_negatives: int = 15,
    seed: int = 42,
    strategy: str = "random",
    batch_size: int = 64,
    show_progress: bool = True,
    rrf_k: int = 60,
    bm25_k1: float = 0.9,
    bm25_b: float = 0.4,
    filters: Optional[NegativeFilters] = None,
    teacher: Any = None,
) -> tuple[dict[str, list[str]], MiningStats]:
    """Mine hard negatives for every judged query with at least one relevant document.

    * ``method``: ``"bm25"`` (:class:`BM25`; documents with BM25 score 0 count as not retrieved),
      ``"dense"`` (:func:`dense_search` with ``encoder``, default the offline MiniLM) or
      ``"hybrid"``: both to depth ``2 * rank_range[1]``, fused by reciprocal rank
      (``sum 1 / (rrf_k + rank + 1)``).
    * ``rank_range=(start, end)`` is half-open and 0-based, counted on the retrieved list
      **before** positives are removed: ``(10, 100)`` skips the ten best hits (likely unlabelled
      relevant documents) whatever their labels.
    * Candidates drop documents with qrel score > 0 for the query and copies of a positive's text.
    * ``filters`` (:mod:`~hf_ragtrain.data.negative_filters`) drop likely false negatives, scored by
      ``teacher`` (``score(queries, docs) -> scores``, e.g. :func:`hf_ragtrain.scoring.load_teacher`'s), else
      by ``encoder``'s cosine (for ``method="bm25"`` too); ``stats`` counts what each filter removed.
    * ``strategy="random"`` samples ``num_negatives`` of the remaining candidates, seeded by ``(seed,
      crc32(query_id))``, kept in rank order; ``strategy="top"`` takes the best-ranked.

    ``corpus`` values may be texts or BEIR docs (``{"title", "text"}``). Returns ``(negatives, stats)``:
    query id -> doc ids (best rank first), and a :class:`MiningStats`.
    """
    start, end = _check_mining_options(method, strategy, rank_range, num_negatives)
    filters = _check_filters(filters, teacher)
    stats = MiningStats(num_negatives=num_negatives)
    qids = _queries_with_a_positive(queries, qrels, stats)
    negatives: dict[str, list[str]] = {}
    if not qids:
        return negatives, stats
    doc_ids = list(corpus)
    texts = [_as_text(v) for v in corpus.values()]
    query_texts = [queries[qid] for qid in qids]
    needs_vectors = method != "bm25" or (filters is not None and teacher is None)
    embeddings = _embeddings(encoder, query_texts, texts, batch_size, show_progress) if needs_vectors else None
    ranked = _retrieve(method, query_texts, texts, end, embeddings, rrf_k, bm25_k1, bm25_b)
    windows = [_window_candidates(hits.tolist()[start:end], doc_ids, texts, qrels[qid], corpus, stats)
               for qid, hits in zip(qids, ranked)]
    if filters is not None:
        windows = _filtered(windows, [qrels[q] for q in qids], query_texts, texts, doc_ids, filters, teacher,
                            embeddings, stats)
    for qid, candidates in zip(qids, windows):
        negatives[qid] = _choose(candidates, num_negatives, strategy, seed, qid)
    _count_chosen(negatives, num_negatives, stats)
    return negatives, stats


def _embeddings(encoder: Any, query_texts: list[str], texts: list[str], batch_size: int,
                show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """The normalised vectors of the queries and of the documents (:func:`encode_normalized`)."""
    logger.info("encoding %d queries and %d docs", len(query_texts), len(texts))
    model = load_encoder(encoder)
    return (encode_normalized(model, query_texts, batch_size, show_progress, kind="query"),
            encode_normalized(model, texts, batch_size, show_progress, kind="document"))


def _count_chosen(negatives: Mapping[str, list[str]], num_negatives: int, stats: MiningStats) -> None:
    """Count the negatives returned and the queries left short or empty (a warning when any are)."""
    for chosen in negatives.values():
        stats.negatives += len(chosen)
        stats.short += int(len(chosen) < num_negatives)
        stats.empty += int(not chosen and num_negatives > 0)
    if stats.short:
        logger.warning("mine_hard_negatives: %d of %d queries got fewer than %d negatives (%d got none)",
                       stats.short, stats.queries, num_negatives, stats.empty)


def _check_filters(filters: Optional[NegativeFilters], teacher: Any) -> Optional[NegativeFilters]:
    """``filters`` when any is on, else ``None``; a teacher without a filter is an error."""
    filters = filters if filters is not None and filters.active else None
    if teacher is not None and filters is None:
        raise ValueError("a teacher scores candidates for the score filters; give at least one of absolute_margin, "
                         "relative_margin, max_score, or leave the teacher out")
    return filters


def _filtered(windows: list[list[str]], judged: list[Mapping[str, int]], query_texts: list[str], texts: list[str],
              doc_ids: Sequence[str], filters: NegativeFilters, teacher: Any,
              embeddings: tuple[np.ndarray, np.ndarray] | None, stats: MiningStats) -> list[list[str]]:
    """Each query's candidates that ``filters`` keep, scored by ``teacher`` or else by the cosine of
    ``embeddings`` (queries, documents); the weakest judged positive is the reference. A query whose
    positives are all missing from the corpus keeps its candidates (no reference to compare with)."""
    position = {d: i for i, d in enumerate(doc_ids)}
    positive_rows = [[position[d] for d, score in j.items() if score > 0 and d in position] for j in judged]
    rows = [[position[d] for d in window] for window in windows]
    if teacher is not None:
        pair_queries = [q for q, pos, cand in zip(query_texts, positive_rows, rows)
                        for _ in range(len(pos) + len(cand))]
        pair_docs = [texts[i] for pos, cand in zip(positive_rows, rows) for i in (*pos, *cand)]
        logger.info("scoring %d (query, document) pairs with the teacher %s for the negative filters",
                    len(pair_docs), getattr(teacher, "name", type(teacher).__name__))
        flat = np.asarray(teacher.score(pair_queries, pair_docs), dtype=np.float64)
        if flat.shape != (len(pair_docs),):
            raise ValueError(f"the teacher returned {flat.shape} scores for {len(pair_docs)} pairs")
        bounds = np.cumsum([0] + [len(pos) + len(cand) for pos, cand in zip(positive_rows, rows)])
        scored = [(flat[a:a + len(pos)], flat[a + len(pos):b]) for a, b, pos in zip(bounds[:-1], bounds[1:],
                                                                                      positive_rows)]
    else:
        query_emb, doc_emb = embeddings
        scored = [(doc_emb[pos] @ query_emb[i], doc_emb[cand] @ query_emb[i])
                  for i, (pos, cand) in enumerate(zip(positive_rows, rows))]
    stats.scored_pairs += sum(len(p) + len(c) for p, c in scored)
    kept = []
    for window, (pos_scores, cand_scores) in zip(windows, scored):
        if not len(pos_scores):
            kept.append(window)
            continue
        reasons = filters.reasons(float(pos_scores.min()), cand_scores)
        for reason in reasons:
            if reason is not None:
                setattr(stats, f"dropped_{reason}", getattr(stats, f"dropped_{reason}") + 1)
        kept.append([doc for doc, reason in zip(window, reasons) if reason is None])
    return kept


def _queries_with_a_positive(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                             stats: MiningStats) -> list[str]:
    """The judged query ids with a qrel score > 0 (``stats`` counts them and the others); a judged
    query without a text is an error."""
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise ValueError(f"{len(missing)} qrels query id(s) have no query text, e.g. {missing[:5]}")
    qids = [qid for qid, judged in qrels.items() if any(score > 0 for score in judged.values())]
    stats.queries, stats.skipped_no_positive = len(qids), len(qrels) - len(qids)
    return qids


def _retrieve(method: str, queries: list[str], texts: list[str], end: int,
              embeddings: tuple[np.ndarray, np.ndarray] | None, rrf_k: int, bm25_k1: float,
              bm25_b: float) -> list[np.ndarray]:
    """Each query's retrieved corpus positions, best first, at least ``end`` deep: BM25 (positive
    scores only), dense (from ``embeddings``: the queries' and the documents' normalised vectors), or
    both to ``2 * end`` fused by reciprocal rank (``hybrid``)."""
    depth = end if method != "hybrid" else 2 * end
    lists = []
    if method in ("bm25", "hybrid"):
        logger.info("BM25 search: %d queries over %d docs", len(queries), len(texts))
        bm25 = BM25(texts, k1=bm25_k1, b=bm25_b)
        lists.append(_ranked_lists(*bm25.search(queries, depth), positive_only=True))
    if method in ("dense", "hybrid"):
        logger.info("dense search: %d queries over %d docs", len(queries), len(texts))
        lists.append(_ranked_lists(*search_embeddings(*embeddings, depth), positive_only=False))
    return lists[0] if len(lists) == 1 else _rrf(lists, end, rrf_k)


def _check_mining_options(method: str, strategy: str, rank_range: tuple[int, int], num_negatives: int) -> tuple[int, int]:
    """The rank window ``(start, end)``, after checking every option of :func:`mine_hard_negatives`."""
    if method not in ("bm25", "dense", "hybrid"):
        raise ValueError(f"method must be 'bm25', 'dense' or 'hybrid', got {method!r}")
    if strategy not in ("random", "top"):
        raise ValueError(f"strategy must be 'random' or 'top', got {strategy!r}")
    start, end = (int(r) for r in rank_range)
    if not 0 <= start < end:
        raise ValueError(f"rank_range must satisfy 0 <= start < end, got {rank_range!r}")
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    return start, end


def _window_candidates(window: Sequence[int], doc_ids: Sequence[str], texts: Sequence[str],
                       judged: Mapping[str, int], corpus: Mapping[str, Any], stats: MiningStats) -> list[str]:
    """The ids of the documents in a rank window (corpus positions, best first) that are neither judged
    relevant (``judged`` score > 0) nor a copy of a relevant document's text; ``stats`` counts what was dropped."""
    positives = {d for d, score in judged.items() if score > 0}
    positive_texts = {_as_text(corpus[d]) for d in positives if d in corpus}
    candidates = []
    for doc_index in window:
        if doc_ids[doc_index] in positives:
            stats.dropped_positive += 1
        elif texts[doc_index] in positive_texts:
            stats.dropped_duplicate += 1
        else:
            candidates.append(doc_ids[doc_index])
    return candidates


def _choose(candidates: list[str], k: int, strategy: str, seed: int, qid: str) -> list[str]:
    """``k`` of a query's candidates: the best-ranked (``top``), or a sample seeded by ``(seed, crc32(qid))``
    kept in rank order (``random``)."""
    if strategy == "top" or len(candidates) <= k:
        return candidates[:k]
    rng = np.random.default_rng([seed, zlib.crc32(qid.encode("utf-8"))])
    return [candidates[i] for i in np.sort(rng.choice(len(candidates), size=k, replace=False))]
