"""The steps from a BEIR folder to training and dev records: a caching first stage, held-out dev
queries, first-stage runs, dev records over a run (put together by
:func:`hf_ragtrain.data.sources.prepare_beir_rerank_data`)."""

from __future__ import annotations

import logging
import random
from typing import Any, Sequence

import numpy as np

from .beir import BeirData
from .mining import dense_search
from .records import RetrievalRecord, parse_record

logger = logging.getLogger(__name__)


class CachingEncoder:
    """Wrap a sentence-transformers style encoder so each distinct text is embedded once.

    Mining, the dev set and the final evaluation all search the same corpus; with this wrapper the
    corpus is encoded on the first search only.
    """

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self._cache: dict[tuple[str, bool], np.ndarray] = {}

    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize_embeddings: bool = True,
               show_progress_bar: bool = False, **kwargs) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if (t, normalize_embeddings) not in self._cache))
        if missing:
            vectors = self.encoder.encode(missing, batch_size=batch_size, convert_to_numpy=True,
                                          normalize_embeddings=normalize_embeddings,
                                          show_progress_bar=show_progress_bar)
            for text, vec in zip(missing, vectors):
                self._cache[(text, normalize_embeddings)] = vec
        return np.stack([self._cache[(t, normalize_embeddings)] for t in texts])


def split_dev_queries(qids: Sequence[str], n_dev: int, seed: int) -> tuple[list[str], list[str]]:
    """Deterministically hold out ``n_dev`` query ids; returns (train ids, dev ids), both sorted."""
    ordered = sorted(qids)
    random.Random(seed).shuffle(ordered)
    n_dev = min(max(n_dev, 0), max(len(ordered) - 1, 0))
    return sorted(ordered[n_dev:]), sorted(ordered[:n_dev])


def subset_queries(data: BeirData, qids: Sequence[str]) -> BeirData:
    """``data`` with only the queries (and their qrels) in ``qids``; the corpus is shared."""
    keep = set(qids)
    return BeirData(corpus=data.corpus, queries={q: t for q, t in data.queries.items() if q in keep},
                    qrels={q: r for q, r in data.qrels.items() if q in keep}, split=data.split, path=data.path)


def first_stage_run(encoder: Any, data: BeirData, top_k: int) -> dict[str, dict[str, float]]:
    """Dense retrieval of the top ``top_k`` corpus documents for every query of ``data``."""
    doc_ids = list(data.corpus)
    texts = data.doc_texts()
    qids = list(data.queries)
    scores, idx = dense_search(encoder, [data.queries[q] for q in qids], [texts[d] for d in doc_ids], top_k=top_k)
    return {q: {doc_ids[j]: float(s) for s, j in zip(scores[i], idx[i])} for i, q in enumerate(qids)}


def dev_records_from_run(data: BeirData, run: dict[str, dict[str, float]]) -> list[RetrievalRecord]:
    """Dev records whose candidates are a first-stage run: judged positives plus the retrieved non-positives."""
    texts = data.doc_texts()
    records = []
    for qid in sorted(data.qrels):
        rels = {d: g for d, g in data.qrels[qid].items() if g > 0}
        if not rels:
            continue
        pos_ids = sorted(rels)
        neg_ids = [d for d in sorted(run.get(qid, {}), key=lambda d: -run[qid][d]) if d not in rels]
        row = {"query": data.queries[qid], "query_id": qid, "pos": [texts[d] for d in pos_ids], "pos_ids": pos_ids,
               "neg": [texts[d] for d in neg_ids], "neg_ids": neg_ids}
        if any(g > 1 for g in rels.values()):
            row["pos_labels"] = [rels[d] for d in pos_ids]
        records.append(parse_record(row, source=f"{data.path} (dev), the record of query {qid!r}"))
    return records
