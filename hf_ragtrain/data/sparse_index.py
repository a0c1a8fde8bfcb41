"""An inverted index over sparse vectors (SPLADE, or any bag of weighted terms): exact top-k search by
dot product.

The corpus is a ``scipy.sparse`` CSR matrix ``(documents, vocabulary)``; its transpose in CSR form is
the posting lists (for each term, the documents holding it and their weights). A block of queries
is scored term-at-a-time by one sparse product, touching only the postings of the terms the queries
hold, and the best ``top_k`` of each query are kept.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .mining import top_k_rows


class SparseIndex:
    """Posting lists of ``documents`` (a ``(N, V)`` sparse matrix, or anything ``scipy.sparse.csr_matrix``
    takes); :meth:`search` ranks all ``N`` documents for each query vector by dot product."""

    def __init__(self, documents, query_block: int = 256):
        matrix = sp.csr_matrix(documents, dtype=np.float32)
        self.num_docs, self.vocab_size = matrix.shape
        self.postings = matrix.T.tocsr()  # (V, N): one row per term
        self.query_block = query_block

    @property
    def num_postings(self) -> int:
        """Stored (term, document) weights: the index's size."""
        return int(self.postings.nnz)

    def scores(self, queries) -> np.ndarray:
        """Dot products ``(Q, N)`` of ``queries`` (sparse ``(Q, V)``) with every document."""
        queries = sp.csr_matrix(queries, dtype=np.float32)
        if queries.shape[1] != self.vocab_size:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions; the index has {self.vocab_size}")
        return (queries @ self.postings).toarray()

    def search(self, queries, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``top_k`` documents of each query: ``(scores, positions)``, each ``(Q, k)``, best
        first (equal scores: lower position first)."""
        queries = sp.csr_matrix(queries, dtype=np.float32)
        k = min(top_k, self.num_docs)
        scores = np.zeros((queries.shape[0], k), dtype=np.float32)
        positions = np.zeros((queries.shape[0], k), dtype=np.int64)
        for start in range(0, queries.shape[0], self.query_block):
            block = self.scores(queries[start:start + self.query_block])
            s, p = top_k_rows(block, k)
            scores[start:start + len(block)], positions[start:start + len(block)] = s, p
        return scores, positions
