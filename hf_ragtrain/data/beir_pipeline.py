"""From a BEIR folder to reranker training data (two-stage evaluation: :mod:`hf_ragtrain.evaluation.mteb_eval`)."""

from __future__ import annotations

import logging
import random
from typing import Any, Sequence

import numpy as np

from ..offline import resolve_model_path
from .beir import BeirData, beir_to_records_with_stats, load_beir
from .mining import dense_search, load_encoder, mine_hard_negatives
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
        records.append(parse_record(row, source=f"{data.path} (dev)", line=len(records) + 1))
    return records


def prepare_beir_rerank_data(args: Any, seed: int = 42):
    """Training and dev records from ``args.beir_dir`` (see :class:`hf_ragtrain.DataArguments`).

    Train queries of ``args.beir_train_split`` minus ``args.beir_dev_queries`` held-out ones get
    ``args.num_negatives`` hard negatives mined with ``args.negatives_method`` in ranks
    ``[args.negatives_rank_start, args.negatives_rank_end)``. Dev candidates are the first stage's
    top 30. Returns ``(train, dev, dataset descriptions, extras)``; extras carries the caching
    first-stage encoder so evaluation does not encode the corpus again.
    """
    data = load_beir(args.beir_dir, split=args.beir_train_split)
    encoder = CachingEncoder(load_encoder(resolve_model_path(args.first_stage_model)))
    train_ids, dev_ids = split_dev_queries(list(data.qrels), args.beir_dev_queries, seed)
    train_data, dev_data = subset_queries(data, train_ids), subset_queries(data, dev_ids)
    negatives, stats = mine_hard_negatives(
        train_data.queries, train_data.doc_texts(), train_data.qrels, method=args.negatives_method,
        encoder=encoder if args.negatives_method != "bm25" else None,
        rank_range=(args.negatives_rank_start, args.negatives_rank_end), num_negatives=args.num_negatives, seed=seed)
    logger.info("hard-negative mining: %s", stats.as_dict())
    rows, conv = beir_to_records_with_stats(train_data, negatives)
    train = [parse_record(r, source=f"{args.beir_dir} ({args.beir_train_split})", line=i + 1)
             for i, r in enumerate(rows)]
    dev = dev_records_from_run(dev_data, first_stage_run(encoder, dev_data, top_k=30)) if dev_ids else None
    datasets = [
        {"name": f"{args.beir_dir}", "split": f"{args.beir_train_split} ({len(train)} queries)", "size": len(train),
         "source": f"BEIR folder; {args.negatives_method} negatives, ranks {args.negatives_rank_start}-"
                   f"{args.negatives_rank_end}; {conv.get('skipped_no_positive', 0)} queries without positives skipped"},
    ]
    if dev:
        datasets.append({"name": f"{args.beir_dir}", "split": f"{args.beir_train_split} held out", "size": len(dev),
                         "source": "first-stage top 30 + judged positives"})
    return train, dev, datasets, {"first_stage": encoder, "mining": stats.as_dict()}
