"""Training records for generated queries: hard negatives from a hybrid first stage, false negatives skipped.

Each generated query's candidates are the union of its dense and BM25 top ``top_k`` over the corpus
(:meth:`HybridIndex.features`), scored by the first stage ``dense_weight * cosine + bm25_weight *
BM25``. Its source passage is the positive (as its ``positive`` text). A candidate the first stage
scores at or above that positive is likely a passage the query fits as well as its source (a false
negative): it is skipped and counted. The hardest ``num_negatives`` of the rest are the negatives.
The records carry the first stage's score of every document, which a reranker that keeps its first
stage adds to its logit (:mod:`hf_ragtrain.modeling.fusion`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .generated import GeneratedQuery
from .hybrid import HybridIndex

__all__ = ["MiningCounts", "mine_generated"]


@dataclass
class MiningCounts:
    """What mining did: ``records`` written, ``negatives`` in them, candidates ``skipped`` as likely false
    negatives, and queries ``without_negatives`` (every candidate skipped; left out)."""

    records: int = 0
    negatives: int = 0
    skipped: int = 0
    without_negatives: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.records} records with {self.negatives} hard negatives; {self.skipped} candidates skipped as "
                f"likely false negatives (scored at or above the query's own passage); {self.without_negatives} "
                "queries left out with no negative left")


def mine_generated(index: HybridIndex, queries: Sequence[GeneratedQuery], doc_ids: Sequence[str], texts: Sequence[str],
                   dense_weight: float, bm25_weight: float, top_k: int = 50, num_negatives: int = 15,
                   skip_false_negatives: bool = True) -> tuple[list[dict[str, Any]], MiningCounts]:
    """Records (dicts in the training format, with ids and first-stage scores) for ``queries`` over
    the corpus ``doc_ids`` / ``texts`` that ``index`` was built on; see the module docstring. Evaluation
    records keep every candidate (``skip_false_negatives=False``): the hardest are what they measure."""
    position = {d: i for i, d in enumerate(doc_ids)}
    candidates = index.features([q.text for q in queries], top_k)
    dense, lexical = index.pair_features([q.text for q in queries], [q.positive for q in queries])
    own = dense_weight * dense + bm25_weight * lexical
    rows, counts = [], MiningCounts()
    for query, cands, pos_score in zip(queries, candidates, own):
        fused = cands.fused(dense_weight, bm25_weight)
        order = [k for k in np.argsort(-fused, kind="stable") if cands.index[k] != position[query.doc_id]]
        below = [k for k in order if fused[k] < pos_score or not skip_false_negatives]
        counts.skipped += len(order) - len(below)
        chosen = below[:num_negatives]
        if not chosen:
            counts.without_negatives += 1
            continue
        rows.append({"query": query.text, "pos": [query.positive], "neg": [texts[cands.index[k]] for k in chosen],
                     "query_id": query.query_id, "pos_ids": [query.doc_id],
                     "neg_ids": [doc_ids[cands.index[k]] for k in chosen],
                     "pos_first_stage_scores": [float(pos_score)],
                     "neg_first_stage_scores": [float(fused[k]) for k in chosen]})
        counts.records += 1
        counts.negatives += len(chosen)
    return rows, counts
