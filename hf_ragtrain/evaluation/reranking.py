"""In-training reranking evaluation on a dev set of records (query, pos, neg candidates)."""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import numpy as np

from ..data.records import RetrievalRecord
from ..modeling.cross_encoder import ScoreReport, score_pairs
from .metrics import ranking_metrics

logger = logging.getLogger(__name__)

Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def records_to_run_inputs(records: Sequence[RetrievalRecord]):
    """Flatten records into (qid, docid, query, doc) lists and build their qrels.

    Ids come from the records (``query_id``, ``pos_ids``, ``neg_ids``) when given, else from positions.
    """
    qids, dids, queries, docs = [], [], [], []
    qrels: dict[str, dict[str, int]] = {}
    for i, rec in enumerate(records):
        qid = rec.query_id if rec.query_id is not None else str(i)
        if qid in qrels:
            raise ValueError(f"duplicate query_id {qid!r} in the evaluation records")
        # Positional ids when none are given: ties are broken by descending id (trec_eval), so a
        # tie ranks the later candidate (a negative) first and never favours the positives.
        n = len(rec.pos) + len(rec.neg)
        ids = [f"{j:06d}" for j in range(n)]
        pos_ids = rec.pos_ids or ids[: len(rec.pos)]
        neg_ids = rec.neg_ids or ids[len(rec.pos):]
        qrels[qid] = {d: g for d, g in zip(pos_ids, rec.labels_of_pos())}
        query = (rec.prompt or "") + rec.query
        for did, doc in zip([*pos_ids, *neg_ids], [*rec.pos, *rec.neg]):
            qids.append(qid)
            dids.append(did)
            queries.append(query)
            docs.append(doc)
    return qids, dids, queries, docs, qrels


class RerankingEvaluator:
    """Rerank each record's candidates (its pos and neg documents) and compute IR metrics.

    ``__call__(scorer)`` takes a function mapping (queries, docs) to scores and returns a dict such
    as ``{"ndcg@10": ..., "mrr@10": ..., "map@10": ..., "recall@10": ...}``.
    """

    def __init__(self, records: Sequence[RetrievalRecord], k_values: Iterable[int] = (1, 3, 5, 10),
                 name: str = "dev", max_length: int | None = None, batch_tokens: int = 16384):
        self.records = list(records)
        self.k_values = tuple(k_values)
        self.name = name
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.last_report = ScoreReport()
        self.qids, self.dids, self.queries, self.docs, self.qrels = records_to_run_inputs(self.records)

    def __call__(self, scorer: Scorer) -> dict[str, float]:
        scores = np.asarray(scorer(self.queries, self.docs), dtype=np.float64)
        run: dict[str, dict[str, float]] = {}
        for qid, did, s in zip(self.qids, self.dids, scores):
            run.setdefault(qid, {})[did] = float(s)
        return ranking_metrics(run, self.qrels, self.k_values)

    def __len__(self) -> int:
        return len(self.records)

    def scorer_for(self, model, tokenizer, max_length: int = 512) -> Scorer:
        """A scorer over a cross-encoder; counts truncated pairs in ``self.last_report``."""
        self.last_report = ScoreReport()
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        return lambda q, d: score_pairs(model, tokenizer, q, d, max_length=max_length,
                                        batch_tokens=self.batch_tokens, report=self.last_report)

    def evaluate_with(self, trainer) -> dict[str, float]:
        """Evaluate the model a Trainer holds (the protocol of :class:`RetrievalTrainer`)."""
        max_length = self.max_length or getattr(trainer.data_collator, "max_length", 512)
        with trainer.accelerator.autocast():  # the training precision (transformers 5 left this to accelerate)
            metrics = self(self.scorer_for(trainer.model, trainer.processing_class, max_length))
        if self.last_report.truncated:
            metrics["truncated_pairs"] = self.last_report.truncated
        return metrics
