"""mteb over a SPLADE model: retrieval through an inverted index, reranking by dot product, and a hybrid
first stage that fuses the sparse and a dense retriever's scores.

Fusion is a convex combination of each query's min-max normalised scores over the whole corpus,
``sparse_weight * sparse' + (1 - sparse_weight) * cosine'``: the two scales differ (SPLADE dot
products run to tens, cosines to 1), and a convex combination of normalised scores is the fusion
that held up best in Bruch et al. (2023, "An analysis of fusion functions for hybrid retrieval").
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from ..hardware import autocast, default_device
from .mteb_eval import TaskScores, _dataset_texts, _model_meta, run_mteb


def min_max(scores: np.ndarray) -> np.ndarray:
    """Each row of ``scores`` ``(Q, N)`` mapped onto [0, 1] (a constant row becomes 0)."""
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    return (scores - low) / np.where(high > low, high - low, 1.0)


def fused_scores(sparse: np.ndarray, dense: np.ndarray | None, sparse_weight: float) -> np.ndarray:
    """The hybrid score ``(Q, N)``; with no dense scores, the sparse scores as they are."""
    if dense is None:
        return sparse
    return sparse_weight * min_max(sparse) + (1.0 - sparse_weight) * min_max(dense)


class MtebSparse:
    """mteb search protocol (``index`` + ``search``) over a :class:`~hf_ragtrain.modeling.splade.SpladeEncoder`.

    Retrieval tasks: the corpus encoded once into a :class:`~hf_ragtrain.data.sparse_index.SparseIndex`,
    each query's whole corpus ranked by dot product, or with a ``dense`` encoder (anything
    :func:`~hf_ragtrain.data.mining.encode_normalized` encodes) by the fused score above.
    Reranking tasks (mteb passes ``top_ranked``): each query's candidates scored by dot product.
    """

    def __init__(self, encoder: Any, name: str = "local/splade", revision: str | None = None, batch_size: int = 32,
                 dense: Any = None, sparse_weight: float = 1.0, shared: dict | None = None):
        if dense is None and sparse_weight != 1.0:
            raise ValueError("a sparse weight below 1 fuses with a dense retriever: give dense=")
        self.encoder, self.batch_size, self.dense, self.sparse_weight = encoder, batch_size, dense, sparse_weight
        self.shared = {} if shared is None else shared
        self.corpus_ids: list[str] = []
        self.corpus_texts: list[str] = []
        self.built: dict[str, Any] = {}
        self.active: dict[str, dict[str, float]] = {}  # task -> mean non-zero entries of its documents, queries
        self.mteb_model_meta = _model_meta(name, revision, "dot" if dense is None else "custom",
                                           n_parameters=sum(p.numel() for p in encoder.parameters()),
                                           max_tokens=encoder.settings.document_max_length,
                                           embed_dim=encoder.vocab_size)

    def index(self, corpus, *, task_metadata, hf_split=None, hf_subset=None, encode_kwargs=None, num_proc=None,
              **kwargs) -> None:
        from mteb.types import PromptType

        from ..data.mining import encode_normalized
        from ..data.sparse_index import SparseIndex

        self.corpus_ids = [row["id"] for row in corpus]
        self.corpus_texts = _dataset_texts(corpus, task_metadata, PromptType.document)
        key = hashlib.sha1("\n".join(self.corpus_ids + self.corpus_texts).encode()).hexdigest()
        built = self.shared.setdefault(key, {})
        if "sparse" not in built:
            built["vectors"] = self.encoder.encode(self.corpus_texts, "document", self.batch_size, show_progress=True)
            built["sparse"] = SparseIndex(built["vectors"])
        if self.dense is not None and "dense" not in built:
            built["dense"] = encode_normalized(self.dense, self.corpus_texts, 64, True, kind="document")
        self.built = built
        self.active.setdefault(task_metadata.name, {})["document"] = float(built["vectors"].getnnz(axis=1).mean())

    def search(self, queries, *, task_metadata, top_k: int, hf_split=None, hf_subset=None, encode_kwargs=None,
               top_ranked=None, num_proc=None, **kwargs) -> dict[str, dict[str, float]]:
        from mteb.types import PromptType

        from ..data.mining import encode_normalized, top_k_rows

        qids = [row["id"] for row in queries]
        texts = _dataset_texts(queries, task_metadata, PromptType.query)
        if top_ranked is not None:
            return self._rerank(qids, texts, top_ranked, top_k, task_metadata.name)
        index = self.built["sparse"]
        vectors = self.encoder.encode(texts, "query", self.batch_size)
        self.active.setdefault(task_metadata.name, {})["query"] = float(vectors.getnnz(axis=1).mean())
        out: dict[str, dict[str, float]] = {}
        for start in range(0, len(texts), 256):
            sparse = index.scores(vectors[start:start + 256])
            dense = None
            if self.dense is not None:
                dense = encode_normalized(self.dense, texts[start:start + 256], 64, kind="query") @ self.built["dense"].T
            scores, idx = top_k_rows(fused_scores(sparse, dense, self.sparse_weight), top_k)
            for row, qid in enumerate(qids[start:start + 256]):
                out[qid] = {self.corpus_ids[j]: float(v) for v, j in zip(scores[row], idx[row])}
        return out

    def _rerank(self, qids: list[str], texts: list[str], top_ranked, top_k: int, task: str
                ) -> dict[str, dict[str, float]]:
        """Each query's candidates by dot product with the corpus vectors :meth:`index` encoded."""
        position = {d: i for i, d in enumerate(self.corpus_ids)}
        missing = list(dict.fromkeys(d for q in qids for d in top_ranked.get(q, []) if d not in position))
        if missing:
            raise ValueError(f"{len(missing)} candidate ids are not in the task's corpus, e.g. {missing[:3]}")
        vectors = self.encoder.encode(texts, "query", self.batch_size)
        self.active.setdefault(task, {})["query"] = float(vectors.getnnz(axis=1).mean())
        out = {}
        for row, qid in enumerate(qids):
            candidates = list(top_ranked.get(qid, []))
            docs = self.built["vectors"][[position[d] for d in candidates]]
            scores = np.asarray(docs @ vectors[row].T.toarray()).ravel() if candidates else np.zeros(0)
            order = np.argsort(-scores, kind="stable")[:top_k]  # ties in candidate order
            out[qid] = {candidates[j]: float(scores[j]) for j in order}
        return out


def evaluate_saved_sparse(model_dir: str, tasks: Sequence[Any], output_folder: str | None = None,
                          name: str = "local/splade", bf16: bool = False, batch_size: int = 32,
                          dense: Any = None, sparse_weights: Sequence[float] = ()) -> dict[str, Any]:
    """Load the SPLADE model saved in ``model_dir`` and evaluate it on ``tasks`` through mteb; with a
    ``dense`` encoder, also the hybrid at each of ``sparse_weights`` (the corpus encoded once).
    Returns ``{"sparse": {task: TaskScores}, "hybrid": {weight: {task: TaskScores}}, "active_dims": {task:
    {"document": mean non-zero entries, "query": ...}}}``."""
    from ..modeling.splade import SpladeEncoder

    device = default_device()
    encoder = SpladeEncoder.from_pretrained(model_dir).to(device).eval()
    shared: dict = {}
    out: dict[str, Any] = {"hybrid": {}}
    with autocast(device, torch.bfloat16 if bf16 else None):
        alone = MtebSparse(encoder, name=name, batch_size=batch_size, shared=shared)
        out["sparse"] = run_mteb(alone, tasks, output_folder)
        out["active_dims"] = alone.active
        for weight in sparse_weights if dense is not None else ():
            adapter = MtebSparse(encoder, name=f"{name}-hybrid{weight:g}", batch_size=batch_size, dense=dense,
                                 sparse_weight=float(weight), shared=shared)
            out["hybrid"][float(weight)] = run_mteb(adapter, tasks, output_folder)
    return out


__all__ = ["MtebSparse", "TaskScores", "evaluate_saved_sparse", "fused_scores", "min_max"]
