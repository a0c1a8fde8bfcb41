"""Information-retrieval metrics over a run (``{qid: {docid: score}}``) and qrels (``{qid: {docid: grade}}``).

Definitions follow trec_eval (which MTEB uses through pytrec_eval): documents are ranked by score,
ties broken by document id in descending order; a document is relevant when its grade is >= 1;
nDCG uses the grade as gain with a log2 discount; MAP@k divides by the number of relevant
documents (not by k); Recall@k is the share of relevant documents in the top k; MRR@k is the
reciprocal rank of the first relevant document within the top k; hit rate@k is 1 when any relevant
document is in the top k (what RAG builders call the hit rate: did the context contain an answer). Each metric is averaged over
the queries of ``qrels`` (a query missing from the run scores 0).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

DEFAULT_K = (1, 3, 5, 10, 100)


def rank(scores: Mapping[str, float]) -> list[str]:
    """Document ids by descending score, ties by descending id (trec_eval's order)."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def query_metrics(ranking: list[str], rels: Mapping[str, int], k_values: Iterable[int] = DEFAULT_K) -> dict[str, float]:
    """Metrics of one query's ranking against its judgements."""
    relevant = {d for d, g in rels.items() if g >= 1}
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)
    out: dict[str, float] = {}
    for k in k_values:
        top = ranking[:k]
        dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(top))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        hits, ap, first = 0, 0.0, 0.0
        for i, d in enumerate(top):
            if d in relevant:
                hits += 1
                ap += hits / (i + 1)
                if not first:
                    first = 1.0 / (i + 1)
        n_rel = len(relevant)
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"map@{k}"] = ap / n_rel if n_rel else 0.0
        out[f"recall@{k}"] = hits / n_rel if n_rel else 0.0
        out[f"mrr@{k}"] = first
        out[f"hit_rate@{k}"] = 1.0 if hits else 0.0
    return out


def ranking_metrics(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                    k_values: Iterable[int] = DEFAULT_K) -> dict[str, float]:
    """Mean of :func:`query_metrics` over the queries in ``qrels``."""
    k_values = tuple(k_values)
    totals: dict[str, float] = {}
    n = 0
    for qid, rels in qrels.items():
        per_query = query_metrics(rank(run.get(qid, {})), rels, k_values)
        for name, value in per_query.items():
            totals[name] = totals.get(name, 0.0) + value
        n += 1
    return {name: value / n for name, value in totals.items()} if n else {}
