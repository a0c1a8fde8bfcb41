"""How long the two-stage pipeline will take on this machine, said before it starts.

The estimate counts the tokens each stage pushes through a model (corpus and query encodings,
training pairs forward and backward, reranked pairs) and divides by this machine's speed, measured
by timing a forward pass of the base retriever on one batch. The factors below relate that speed
to each kind of work; they were fitted to the stage times of the default SciFact pipeline on 2 CPU
cores (Intel Xeon with AMX; BENCHMARKS.md, "Two-stage pipeline").
It is a guide, not a promise: other jobs on the machine, other lengths and other flags change it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

#: Tokens per second of each kind of work, as a multiple of the forward probe's (real text has padding,
#: tokenisation and data loading that the probe's one full batch has not).
ENCODE_FACTOR = 0.38  # a corpus through the bi-encoder
RETRIEVER_TRAIN_FACTOR = 0.14  # a bi-encoder training step: forward + backward of queries and passages
RERANKER_TRAIN_FACTOR = 0.18  # a cross-encoder training step over its pairs
RERANK_FACTOR = 0.54  # cross-encoder inference over candidate pairs
MAX_TOKENS = 256  # the recipes' default max length of a passage and of a pair
OVERHEAD_S = 20.0  # loading models and data, per stage


@dataclass
class PipelineEstimate:
    """Seconds each stage is expected to take (``None``: not known)."""

    data: float | None = None
    retriever: float | None = None
    fold: float | None = None
    candidates: float | None = None
    reranker: float | None = None
    evaluate: float | None = None

    @classmethod
    def unknown(cls) -> "PipelineEstimate":
        return cls()

    @classmethod
    def measure(cls, args: Any) -> "PipelineEstimate":
        """Count the work of ``args`` (:class:`~hf_ragtrain.arguments.PipelineArguments`) on its BEIR folder
        and time this machine; an estimate that cannot be made is :meth:`unknown`."""
        try:
            return cls.from_counts(count_work(args), probe_speed(args.retriever_model), args)
        except (OSError, ValueError, RuntimeError):
            return cls.unknown()

    @classmethod
    def from_counts(cls, work: dict[str, float], speed: float, args: Any) -> "PipelineEstimate":
        """The estimate from token counts (:func:`count_work`) and a forward speed in tokens per second."""
        encode = work["corpus_tokens"] / (speed * ENCODE_FACTOR)
        retriever = (3 * work["train_queries"] * (4 * work["doc_tokens"] + work["query_tokens"])
                     / (speed * RETRIEVER_TRAIN_FACTOR))
        pair = min(work["doc_tokens"] + work["query_tokens"], MAX_TOKENS)
        reranker = 2 * work["train_queries"] * 8 * pair / (speed * RERANKER_TRAIN_FACTOR)
        dev = 3 * work["dev_queries"] * args.top_k * pair / (speed * RERANK_FACTOR)  # before and after each epoch
        folds = max(args.folds, 1)
        test = work["eval_queries"] * args.top_k * pair / (speed * RERANK_FACTOR)
        return cls(data=OVERHEAD_S + encode, retriever=OVERHEAD_S + retriever,
                   fold=OVERHEAD_S + retriever * (folds - 1) / folds, candidates=OVERHEAD_S + (folds + 1) * encode,
                   reranker=OVERHEAD_S + reranker + dev, evaluate=OVERHEAD_S + encode + test)


def count_work(args: Any) -> dict[str, float]:
    """Corpus size and mean token lengths (from a sample of 500 documents and queries), and the
    numbers of training, dev and evaluation queries."""
    import random

    from transformers import AutoTokenizer

    from ..data.beir import load_beir
    from ..offline import resolve_model_path

    data = load_beir(args.beir_dir, split=args.train_split)
    texts = list(data.doc_texts().values())
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.retriever_model))
    rng = random.Random(0)
    docs = rng.sample(texts, min(500, len(texts)))
    queries = rng.sample(list(data.queries.values()), min(500, len(data.queries)))
    doc_tokens = sum(min(len(tokenizer(t).input_ids), MAX_TOKENS) for t in docs) / max(len(docs), 1)
    query_tokens = sum(len(tokenizer(t).input_ids) for t in queries) / max(len(queries), 1)
    judged = sum(1 for r in data.qrels.values() if any(g > 0 for g in r.values()))
    evaluated = 0
    if args.eval_split.lower() != "none":
        evaluated = sum(1 for r in load_beir(args.beir_dir, split=args.eval_split).qrels.values()
                        if any(g > 0 for g in r.values()))
    return {"corpus_tokens": len(texts) * doc_tokens, "doc_tokens": doc_tokens, "query_tokens": query_tokens,
            "train_queries": max(judged - args.dev_queries, 0), "dev_queries": min(args.dev_queries, judged),
            "eval_queries": evaluated}


def probe_speed(model: str, batch: int = 32, length: int = MAX_TOKENS) -> float:
    """Forward tokens per second of ``model`` on one ``batch x length`` batch, in the precision the
    recipes use here (bf16 where the CPU multiplies it natively); the second of two timed passes."""
    import torch
    from transformers import AutoModel

    from ..hardware import autocast, bf16_is_fast, default_device
    from ..offline import resolve_model_path

    device = default_device()
    net = AutoModel.from_pretrained(resolve_model_path(model)).to(device).eval()
    ids = torch.full((batch, length), 1000, dtype=torch.long, device=device)
    seconds = 0.0
    with torch.no_grad(), autocast(device, torch.bfloat16 if bf16_is_fast() else None):
        for _ in range(2):
            start = time.time()
            net(input_ids=ids)
            seconds = time.time() - start
    return batch * length / max(seconds, 1e-6)
