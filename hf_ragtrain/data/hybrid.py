"""A hybrid first stage over a corpus: a bi-encoder's cosine, Okapi BM25, and their weighted sum.

:class:`HybridIndex` encodes the corpus once and builds its BM25 index; :meth:`HybridIndex.features`
gives each query's candidates (the union of the dense and the BM25 top k) with both scores, the
input of :func:`hf_ragtrain.modeling.fusion.fit_fusion_weights`; :meth:`HybridIndex.search` ranks
the whole corpus by ``dense_weight * cosine + bm25_weight * BM25``, the score a reranker that keeps
its hybrid first stage adds to its logit (:mod:`hf_ragtrain.modeling.fusion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .mining import BM25, encode_normalized, load_encoder, top_k_rows


@dataclass
class QueryCandidates:
    """One query's candidates: corpus positions ``(C,)``, their cosine and their BM25 score ``(C,)``."""

    index: np.ndarray
    dense: np.ndarray
    bm25: np.ndarray

    def fused(self, dense_weight: float, bm25_weight: float) -> np.ndarray:
        """The first stage's score of each candidate ``(C,)``."""
        return dense_weight * self.dense + bm25_weight * self.bm25


class HybridIndex:
    """``texts`` (the corpus, in order) searchable by ``encoder``'s cosine (documents encoded as
    documents, queries as queries) and by BM25 (``k1``, ``b``, tokens stemmed for ``bm25_language``
    unless it is ``None``; or ``bm25``, an index of the same texts already built); ``encoder=None`` is
    BM25 alone."""

    def __init__(self, encoder: Any, texts: Sequence[str], batch_size: int = 64, show_progress: bool = True,
                 k1: float = 0.9, b: float = 0.4, vectors: np.ndarray | None = None, bm25_language: str | None = None,
                 bm25: BM25 | None = None):
        self.encoder = load_encoder(encoder) if encoder is not None else None
        self.batch_size = batch_size
        self.texts = list(texts)
        if self.encoder is not None and vectors is None:
            vectors = encode_normalized(self.encoder, texts, batch_size, show_progress, kind="document")
        self.vectors = vectors
        if vectors is not None and len(vectors) != len(texts):
            raise ValueError(f"{len(vectors)} document vectors for {len(texts)} texts")
        if bm25 is not None and bm25.num_docs != len(texts):
            raise ValueError(f"a BM25 index of {bm25.num_docs} documents for {len(texts)} texts")
        self.bm25 = bm25 if bm25 is not None else BM25(texts, k1=k1, b=b, language=bm25_language)
        self._stats = None
        self._row = {text: i for i, text in enumerate(texts)}  # a corpus text's vector is not encoded again,
        self._other: dict[str, np.ndarray] = {}  # nor that of another document pair_features has met,
        self._queries: dict[str, np.ndarray] = {}  # nor a query's

    def pair_features(self, queries: Sequence[str], docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The cosine and the BM25 score (with this corpus's statistics) of each ``(queries[i], docs[i])``,
        ``(N,)`` each; the documents need not be in the corpus (e.g. a passage with a sentence cut out)."""
        if self._stats is None:
            self._stats = self.bm25.stats()
        lexical = self._stats.score_pairs(queries, docs)
        if self.vectors is None:
            return np.zeros(len(docs)), lexical
        self.encode_texts(queries, docs)
        dense = np.zeros(len(docs))
        for i, (query, doc) in enumerate(zip(queries, docs)):
            vector = self.vectors[self._row[doc]] if doc in self._row else self._other[doc]
            dense[i] = float(self._queries[query] @ vector)
        return dense, lexical

    def encode_texts(self, queries: Sequence[str], docs: Sequence[str]) -> None:
        """Encode the queries and the documents outside the corpus that are not encoded yet, and keep their
        vectors. Encoding all of a job's texts first makes its scores independent of how it is cut into
        chunks (a vector can differ in its last bits with the texts it was padded beside)."""
        if self.vectors is None:
            return
        new_queries = [q for q in dict.fromkeys(queries) if q not in self._queries]
        if new_queries:
            self._queries.update(zip(new_queries, encode_normalized(self.encoder, new_queries, self.batch_size,
                                                                    show_progress=False, kind="query")))
        new = [d for d in dict.fromkeys(docs) if d not in self._row and d not in self._other]
        if new:
            self._other.update(zip(new, encode_normalized(self.encoder, new, self.batch_size,
                                                          show_progress=len(new) > 1000, kind="document")))

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray | None:
        """The queries' normalised vectors ``(Q, D)``, ``None`` without an encoder."""
        if self.vectors is None:
            return None
        return encode_normalized(self.encoder, queries, self.batch_size, show_progress=False, kind="query")

    def cosine(self, vectors: np.ndarray | None, i: int) -> np.ndarray:
        """Query ``i``'s cosine with every document ``(N,)`` (zeros without an encoder)."""
        if vectors is None:
            return np.zeros(self.bm25.num_docs)
        return (self.vectors @ vectors[i]).astype(np.float64)

    def features(self, queries: Sequence[str], top_k: int, always: Sequence[Sequence[int]] | None = None
                 ) -> list[QueryCandidates]:
        """Each query's candidates: the union of its dense top ``top_k`` and BM25 top ``top_k`` (dense
        order, then BM25's additions), plus the corpus positions in ``always[i]`` (e.g. its judged
        documents) when missing, each with its cosine and BM25 score."""
        vectors = self.query_vectors(queries)
        out = []
        for i, query in enumerate(queries):
            dense = self.cosine(vectors, i)
            lexical = self.bm25.get_scores(query)
            k = min(top_k, len(dense))
            chosen = list(_top(dense, k))
            seen = set(chosen)
            matched = [j for j in _top(lexical, k) if lexical[j] > 0]  # BM25 retrieves only what shares a term
            for j in [*matched, *(always[i] if always is not None else ())]:
                if j not in seen:
                    seen.add(j)
                    chosen.append(int(j))
            idx = np.asarray(chosen, dtype=np.int64)
            out.append(QueryCandidates(index=idx, dense=dense[idx], bm25=lexical[idx]))
        return out

    def search(self, queries: Sequence[str], top_k: int, dense_weight: float, bm25_weight: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``top_k`` of the whole corpus by ``dense_weight * cosine + bm25_weight * BM25``:
        ``(scores, positions)``, each ``(Q, k)``, best first (equal scores: lower position first)."""
        if dense_weight and self.vectors is None:
            raise ValueError("a dense weight needs an encoder; this index is BM25 alone")
        vectors = self.query_vectors(queries)
        k = min(top_k, self.bm25.num_docs)
        scores, positions = np.zeros((len(queries), k)), np.zeros((len(queries), k), dtype=np.int64)
        for i, query in enumerate(queries):
            total = dense_weight * self.cosine(vectors, i)
            if bm25_weight:
                total = total + bm25_weight * self.bm25.get_scores(query)
            positions[i] = _top(total, k)
            scores[i] = total[positions[i]]
        return scores, positions


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first; equal scores by lower position."""
    return top_k_rows(scores[None, :], k)[1][0]
