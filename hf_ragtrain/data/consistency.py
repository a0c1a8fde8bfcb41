"""Round-trip consistency: keep a generated query only when a retriever finds its source passage.

A generated query is worth training on when it points back at the passage it was made from: the
retriever (a hybrid of an embedder and BM25, :class:`~hf_ragtrain.data.hybrid.HybridIndex`) ranks the
whole corpus for the query, the source passage scored as the query's positive text (for an
inverse-cloze query, the passage without the query sentence, so that the copied sentence cannot
find it), and the query is kept when that passage is in the top ``top_k`` (Promptagator's filter,
with a hybrid retriever). The ranks are kept so the choice of ``top_k`` can be read off the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .generated import GeneratedQuery
from .hybrid import HybridIndex

__all__ = ["source_ranks", "round_trip_filter", "FilterCounts"]


@dataclass
class FilterCounts:
    """Per generator: queries made, and queries kept."""

    made: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    def add(self, generator: str, kept: bool) -> None:
        self.made[generator] = self.made.get(generator, 0) + 1
        self.kept[generator] = self.kept.get(generator, 0) + int(kept)

    def as_dict(self) -> dict[str, Any]:
        return {g: {"made": n, "kept": self.kept.get(g, 0)} for g, n in sorted(self.made.items())}

    def describe(self) -> str:
        return "; ".join(f"{g}: kept {self.kept.get(g, 0)} of {n}" for g, n in sorted(self.made.items()))


def source_ranks(index: HybridIndex, queries: Sequence[GeneratedQuery], doc_position: dict[str, int],
                 dense_weight: float, bm25_weight: float) -> np.ndarray:
    """Each query's source passage's rank ``(Q,)`` (1 = first) among the corpus when the corpus is
    ranked by ``dense_weight * cosine + bm25_weight * BM25``, the source scored as the query's positive
    text; ties count against the source."""
    dense, lexical = index.pair_features([q.text for q in queries], [q.positive for q in queries])
    own = dense_weight * dense + bm25_weight * lexical
    vectors = index.query_vectors([q.text for q in queries])
    ranks = np.zeros(len(queries), dtype=np.int64)
    for i, query in enumerate(queries):
        total = dense_weight * index.cosine(vectors, i)
        if bm25_weight:
            total = total + bm25_weight * index.bm25.get_scores(query.text)
        total[doc_position[query.doc_id]] = -np.inf  # the source competes as its positive text, above
        ranks[i] = 1 + int((total >= own[i]).sum())
    return ranks


def round_trip_filter(queries: Sequence[GeneratedQuery], ranks: np.ndarray, top_k: int
                      ) -> tuple[list[GeneratedQuery], FilterCounts]:
    """The queries whose source rank is at most ``top_k`` (``top_k <= 0`` keeps every query), and counts."""
    counts = FilterCounts()
    kept = []
    for query, rank in zip(queries, ranks):
        keep = top_k <= 0 or rank <= top_k
        counts.add(query.generator, keep)
        if keep:
            kept.append(query)
    return kept, counts
