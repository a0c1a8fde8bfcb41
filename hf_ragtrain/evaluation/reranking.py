"""In-training reranking evaluation on a dev set of records (query, pos, neg candidates)."""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import numpy as np

from ..data.records import RetrievalRecord
from ..modeling.cross_encoder import ScoreReport, score_pairs
from ..modeling.fusion import FirstStageFusion
from .first_stage import FirstStage, worse_than_first_stage
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
    as ``{"ndcg@10": ..., "mrr@10": ..., "hit_rate@10": ..., "recall@10": ...}``.

    ``first_stage`` (a :class:`~hf_ragtrain.evaluation.first_stage.FirstStage`) is what the reranker
    is measured against: its metrics on the same candidates are computed once
    (:meth:`first_stage_metrics`), logged beside every in-training evaluation as ``first_stage_*``,
    and a warning is logged whenever the reranker is worse. Without one, the first evaluation says
    that nothing was compared.
    """

    def __init__(self, records: Sequence[RetrievalRecord], k_values: Iterable[int] = (1, 3, 5, 10),
                 name: str = "dev", max_length: int | None = None, batch_tokens: int = 16384,
                 first_stage: FirstStage | None = None):
        self.records = list(records)
        self.k_values = tuple(k_values)
        self.name = name
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.first_stage = first_stage
        self.last_report = ScoreReport()
        self.qids, self.dids, self.queries, self.docs, self.qrels = records_to_run_inputs(self.records)
        self._first_stage_metrics: dict[str, float] | None = None
        self._said_no_first_stage = False
        self.last_warning: str | None = None  # the last comparison's worse-than-first-stage sentence, for cards

    def __call__(self, scorer: Scorer) -> dict[str, float]:
        scores = np.asarray(scorer(self.queries, self.docs), dtype=np.float64)
        if scores.shape != (len(self.docs),):
            raise ValueError(f"the scorer returned {scores.shape} scores for {len(self.docs)} pairs; expected one "
                             "per pair")
        run: dict[str, dict[str, float]] = {}
        for qid, did, s in zip(self.qids, self.dids, scores):
            run.setdefault(qid, {})[did] = float(s)
        return ranking_metrics(run, self.qrels, self.k_values)

    def first_stage_metrics(self) -> dict[str, float] | None:
        """The first stage's metrics on these candidates (computed on the first call), or ``None``."""
        if self.first_stage is not None and self._first_stage_metrics is None:
            self._first_stage_metrics = self(self.first_stage.scorer)
        return self._first_stage_metrics

    @property
    def candidates(self) -> str:
        """The candidates in words, for reports."""
        return f"the {len(self.records)} {self.name} queries' {len(self.docs)} candidates"

    def compare(self, metrics: dict[str, float]) -> dict[str, float]:
        """``metrics`` (the reranker's, plain names) plus ``first_stage_*`` entries; logs a warning when
        the reranker is worse than its first stage, and once when there is no first stage."""
        first = self.first_stage_metrics()
        if first is None:
            if not self._said_no_first_stage:
                logger.warning("%s evaluation: no first stage to compare the reranker with; pass first_stage="
                               "FirstStage.embedder('minilm') (or the retriever you use) to RerankingEvaluator",
                               self.name)
                self._said_no_first_stage = True
            return metrics
        warning = self.last_warning = worse_than_first_stage(metrics, first, self.first_stage.name, self.candidates)
        if warning:
            logger.warning("%s evaluation: %s", self.name, warning)
        return {**metrics, **{f"first_stage_{k}": v for k, v in first.items()}}

    def scorer_for(self, model, tokenizer, max_length: int = 512, fusion: FirstStageFusion | None = None) -> Scorer:
        """A scorer over a cross-encoder (plus ``fusion``'s first-stage term when given); counts
        truncated pairs in ``self.last_report``."""
        self.last_report = ScoreReport()
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)

        def scorer(queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
            scores = score_pairs(model, tokenizer, queries, docs, max_length=max_length,
                                 batch_tokens=self.batch_tokens, report=self.last_report)
            return scores if fusion is None else scores + fusion.scores(queries, docs)

        return scorer

    def evaluate_with(self, trainer) -> dict[str, float]:
        """Evaluate the model a Trainer holds (the protocol of :class:`RetrievalTrainer`), beside the
        first stage (:meth:`compare`)."""
        max_length = self.max_length or getattr(trainer.data_collator, "max_length", 512)
        self.first_stage_metrics()  # in the first stage's own precision, not the trainer's autocast
        with trainer.accelerator.autocast():  # the training precision (transformers 5 left this to accelerate)
            scorer = self.scorer_for(trainer.model, trainer.processing_class, max_length,
                                     getattr(trainer, "first_stage_fusion", None))
            metrics = self.compare(self(scorer))
        if self.last_report.truncated:
            metrics["truncated_pairs"] = self.last_report.truncated
        return metrics

    def __len__(self) -> int:
        return len(self.records)
