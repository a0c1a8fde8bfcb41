"""In-training retrieval evaluation of a bi-encoder (dense search) or a ColBERT model (MaxSim search)
over the documents of dev records."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from ..data.records import RetrievalRecord
from .metrics import ranking_metrics


class RetrievalEvaluator:
    """Each dev query searches the corpus made of *all* dev records' documents (pos and neg).

    Documents are identified by their text, so one shared by several records is one corpus entry; a
    record's positives (with their grades) are its relevant documents. A record's ``prompt``
    replaces the model's query prompt. ``__call__(encoder)`` returns nDCG/MRR/MAP/Recall at
    ``k_values``; the top ``max(k_values)`` documents are kept per query.
    """

    def __init__(self, records: Sequence[RetrievalRecord], k_values: Iterable[int] = (1, 3, 5, 10, 100),
                 name: str = "dev", batch_size: int = 64):
        self.records, self.k_values, self.name, self.batch_size = list(records), tuple(k_values), name, batch_size
        doc_ids: dict[str, str] = {}
        self.qrels: dict[str, dict[str, int]] = {}
        for i, rec in enumerate(self.records):
            for doc in (*rec.pos, *rec.neg):
                doc_ids.setdefault(doc, f"d{len(doc_ids)}")
            qid = rec.query_id if rec.query_id is not None else str(i)
            if qid in self.qrels:
                raise ValueError(f"duplicate query_id {qid!r} in the evaluation records")
            self.qrels[qid] = {doc_ids[d]: g for d, g in zip(rec.pos, rec.labels_of_pos())}
        self.doc_texts = list(doc_ids)
        self.doc_ids = [doc_ids[t] for t in self.doc_texts]
        self.qids = list(self.qrels)

    def __len__(self) -> int:
        return len(self.records)

    @torch.no_grad()
    def __call__(self, encoder: Any) -> dict[str, float]:
        queries = [r.query for r in self.records]
        prompts = [r.prompt for r in self.records]
        k = min(max(self.k_values), len(self.doc_ids))
        if hasattr(encoder, "search"):  # late interaction (ColBERT): brute-force MaxSim
            scores, idx = encoder.search(queries, self.doc_texts, top_k=k, prompts=prompts)
            return self._metrics(scores, idx)
        q = torch.as_tensor(encoder.encode(queries, kind="query", prompts=prompts, batch_size=self.batch_size,
                                           convert_to_numpy=False))
        d = torch.as_tensor(encoder.encode(self.doc_texts, kind="passage", batch_size=self.batch_size,
                                           convert_to_numpy=False))
        q, d = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(d, dim=-1)
        scores, idx = (q @ d.T).topk(k, dim=1)
        return self._metrics(scores, idx)

    def _metrics(self, scores, idx) -> dict[str, float]:
        run = {qid: {self.doc_ids[j]: float(s) for s, j in zip(scores[i].tolist(), idx[i].tolist())}
               for i, qid in enumerate(self.qids)}
        return ranking_metrics(run, self.qrels, self.k_values)

    def evaluate_with(self, trainer) -> dict[str, float]:
        """Evaluate the bi-encoder a Trainer holds (the protocol of :class:`RetrievalTrainer`)."""
        encoder = trainer.accelerator.unwrap_model(trainer.model)
        with trainer.accelerator.autocast():  # the training precision (transformers 5 left this to accelerate)
            return self(encoder)
