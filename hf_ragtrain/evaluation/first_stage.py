"""The first stage a reranker is measured against.

A reranker is worth shipping only when it orders its candidates better than the retriever that
supplied them. :class:`FirstStage` is that retriever as a scorer of (query, document) pairs: the
retriever that produced the candidates when it is known (a BEIR folder's dense first stage), and
otherwise the base embedder a user would rank the same candidates with (all-MiniLM-L6-v2 by
default). :func:`worse_than_first_stage` says, in a sentence, when the reranker lost to it;
:func:`hit_rate_rows` is the hit rate / MRR at k table RAG builders read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]

#: The metric the warning and the card compare first.
HEADLINE_METRIC = "ndcg@10"


@dataclass
class FirstStage:
    """A first stage as a pair scorer: ``scorer(queries, docs) -> scores`` (one per pair) and the
    ``name`` reports print (a model id and how it scores)."""

    name: str
    scorer: Scorer

    @classmethod
    def embedder(cls, encoder: Any, name: str | None = None, batch_size: int = 64) -> "FirstStage":
        """The cosine of a bi-encoder's normalised embeddings; ``encoder`` is anything with a
        sentence-transformers ``encode``, or a model folder / offline alias (``"minilm"``)."""
        from ..modeling.fusion import CosineScorer
        from ..offline import hub_name

        label = name or (hub_name(str(encoder)) if isinstance(encoder, str) else type(encoder).__name__)
        cosine = CosineScorer(encoder, batch_size)
        return cls(name=f"{label} (cosine)", scorer=cosine)

    @classmethod
    def bm25(cls, k1: float = 0.9, b: float = 0.4) -> "FirstStage":
        """Okapi BM25 (:class:`~hf_ragtrain.data.mining.BM25`) with the distinct candidate documents of
        the call as its collection (document frequencies and lengths come from them)."""
        from ..data.mining import BM25

        def lexical(queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
            unique_d = list(dict.fromkeys(docs))
            index, di = BM25(unique_d, k1=k1, b=b), {t: i for i, t in enumerate(unique_d)}
            out = np.zeros(len(docs))
            for query, rows in rows_by_query(queries).items():
                out[rows] = index.get_scores(query)[[di[docs[r]] for r in rows]]
            return out

        return cls(name=f"BM25 (k1 {k1}, b {b})", scorer=lexical)

    @classmethod
    def hybrid(cls, encoder: Any, name: str | None = None, rrf_k: int = 60) -> "FirstStage":
        """Reciprocal-rank fusion of BM25 and a bi-encoder's cosine over each query's candidates, as the
        hybrid miner fuses them: ``sum 1 / (rrf_k + rank + 1)`` (rank from 0; candidates with BM25 score
        0 get nothing from BM25; equal scores rank in the order given)."""
        dense, lexical = cls.embedder(encoder, name), cls.bm25()

        def fused(queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
            dense_scores, lexical_scores = dense.scorer(queries, docs), lexical.scorer(queries, docs)
            out = np.zeros(len(docs))
            for rows in rows_by_query(queries).values():
                for scores, matched in ((dense_scores[rows], None), (lexical_scores[rows], lexical_scores[rows] > 0)):
                    order = np.argsort(-scores, kind="stable")
                    ranks = np.empty(len(rows))
                    ranks[order] = np.arange(len(rows))
                    share = 1.0 / (rrf_k + ranks + 1)
                    out[rows] += share if matched is None else np.where(matched, share, 0.0)
            return out

        return cls(name=f"hybrid: RRF of {lexical.name} and {dense.name}", scorer=fused)

    @classmethod
    def kept_by(cls, fusion: Any) -> "FirstStage":
        """The first stage a reranker keeps (a :class:`~hf_ragtrain.modeling.fusion.FirstStageFusion`): its
        score is what the reranker adds to its logit, the hybrid's weighted cosine and BM25 included."""
        what = f"{fusion.weight:.4g} x cosine + {fusion.bm25_weight:.4g} x BM25" if fusion.hybrid else "cosine"
        return cls(name=f"{fusion.name} ({what})", scorer=fusion.scores)


def rows_by_query(queries: Sequence[str]) -> dict[str, list[int]]:
    """The positions of each distinct query in a flat list of pairs, in order."""
    rows: dict[str, list[int]] = {}
    for i, query in enumerate(queries):
        rows.setdefault(query, []).append(i)
    return rows


def worse_than_first_stage(reranked: Mapping[str, float], first: Mapping[str, float], first_stage: str,
                           what: str, metric: str = HEADLINE_METRIC) -> str | None:
    """A warning sentence when ``reranked[metric]`` is below ``first[metric]`` (plain metric names,
    no prefix), else ``None``; ``what`` names the candidates (e.g. "the 35 dev queries' candidates")."""
    if metric not in reranked or metric not in first or reranked[metric] >= first[metric]:
        return None
    return (f"the reranker ranks {what} worse than its first stage: {metric} {reranked[metric]:.4f} against "
            f"{first[metric]:.4f} for {first_stage} on the same candidates. Putting it behind that retriever "
            "would make retrieval worse; see 'Rerankers that beat their first stage' in hf_ragtrain's README.")


def hit_rate_rows(first: Mapping[str, float], reranked: Mapping[str, float],
                  k_values: Sequence[int] = (1, 3, 5, 10)) -> list[tuple[int, float, float, float, float]]:
    """``(k, hit rate first stage, hit rate reranked, MRR first stage, MRR reranked)`` for each k
    that both metric dicts (plain names) hold."""
    rows = []
    for k in k_values:
        keys = (f"hit_rate@{k}", f"mrr@{k}")
        if all(key in first and key in reranked for key in keys):
            rows.append((k, first[keys[0]], reranked[keys[0]], first[keys[1]], reranked[keys[1]]))
    return rows
