"""Training records for a reranker that keeps its first stage's score, made by cross-fitting.

A reranker trained behind a retriever learns what that retriever gets wrong. If the retriever was
fine-tuned on the same queries, it ranks them far better than it will rank new ones (on SciFact the
fine-tuned MiniLM scores nDCG@10 0.84 on its training queries and 0.74 on held-out ones), so the
reranker would learn to trust it too much and to correct too little. Cross-fitting removes that:
the training queries are dealt into folds (:func:`assign_folds`), a retriever is trained on all
folds but one, and only it scores the queries of the fold it did not see. Every training query's
candidates and first-stage scores then come from a retriever that has never seen that query, as at
test time. :func:`first_stage_records` writes them as records whose ``pos_first_stage_scores`` /
``neg_first_stage_scores`` the reranker adds to its logit in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .hybrid import QueryCandidates


def assign_folds(qids: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each query id's fold, ``0 .. folds - 1``: the sorted ids shuffled with ``seed`` and dealt in turn,
    so fold sizes differ by at most one and do not depend on the input order."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    if len(set(qids)) < folds:
        raise ValueError(f"{len(set(qids))} queries cannot be dealt into {folds} folds")
    order = sorted(set(qids))
    random.Random(seed).shuffle(order)
    return {qid: i % folds for i, qid in enumerate(order)}


@dataclass
class RecordCounts:
    """What :func:`first_stage_records` wrote and left out."""

    records: int = 0
    skipped_no_positive: int = 0  # queries without a judged document of grade > 0
    empty_documents: int = 0  # judged or retrieved documents with no text, left out
    short: int = 0  # records with fewer than the negatives asked for
    positives_retrieved: int = 0  # judged positives among the first stage's top k
    positives: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "notes"}


def first_stage_records(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                        candidates: Mapping[str, QueryCandidates], doc_ids: Sequence[str], texts: Sequence[str],
                        dense_weight: float, bm25_weight: float, num_negatives: int, top_k: int
                        ) -> tuple[list[dict[str, Any]], RecordCounts]:
    """Reranker training records with their first stage's scores.

    For each query of ``candidates`` (corpus positions with cosine and BM25, judged positives among
    them): the judged documents of grade > 0 are the positives (``pos_labels`` when graded) and the
    ``num_negatives`` best other candidates of the first stage's top ``top_k`` (by ``dense_weight *
    cosine + bm25_weight * BM25``) the negatives, each with that score. Documents with no text are
    left out and counted.
    """
    counts = RecordCounts()
    position = {d: i for i, d in enumerate(doc_ids)}
    rows = []
    for qid, cand in candidates.items():
        rels = {d: g for d, g in qrels.get(qid, {}).items() if g > 0}
        if not rels:
            counts.skipped_no_positive += 1
            continue
        score = {doc_ids[j]: float(s) for j, s in zip(cand.index, cand.fused(dense_weight, bm25_weight))}
        top = sorted(score, key=lambda d: -score[d])[:top_k]
        counts.positives += len(rels)
        counts.positives_retrieved += sum(d in rels for d in top)
        judged = [d for d in sorted(rels) if d in score]
        others = [d for d in top if d not in rels]
        counts.empty_documents += sum(not texts[position[d]] for d in [*judged, *others])
        pos = [d for d in judged if texts[position[d]]]
        neg = [d for d in others if texts[position[d]]][:num_negatives]
        if not pos:
            counts.skipped_no_positive += 1
            continue
        counts.short += len(neg) < num_negatives
        row = {"query": queries[qid], "query_id": qid, "pos": [texts[position[d]] for d in pos], "pos_ids": pos,
               "neg": [texts[position[d]] for d in neg], "neg_ids": neg,
               "pos_first_stage_scores": [score[d] for d in pos], "neg_first_stage_scores": [score[d] for d in neg]}
        if any(rels[d] > 1 for d in pos):
            row["pos_labels"] = [rels[d] for d in pos]
        rows.append(row)
    counts.records = len(rows)
    return rows, counts
