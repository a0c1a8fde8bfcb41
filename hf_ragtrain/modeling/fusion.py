"""A reranker that keeps its first stage's score: ``score = logit + weight * cosine(query, doc)
[+ bm25_weight * BM25(query, doc)]``.

A cross-encoder trained from a bi-encoder checkpoint on a few hundred queries starts far behind the
bi-encoder it reranks (on the bundled data: 0.16 nDCG@10 against 0.955). Adding the first stage's
score to its logit, with the classification head started at zero, makes the untrained reranker
rank exactly as its first stage does; training then learns only what the first stage gets wrong
(the listwise loss sees the fused scores). The first stage is a bi-encoder's cosine and, for a
hybrid first stage, Okapi BM25 with the collection's statistics. It travels with the model: the
encoder is saved in ``<folder>/first_stage/``, the BM25 statistics in ``first_stage_bm25.json`` and
the weights in ``first_stage_fusion.json``, and :class:`hf_ragtrain.Reranker` adds the term whenever
it finds them. sentence-transformers' ``CrossEncoder`` reads the folder as a plain cross-encoder,
whose logit is the reranker's part only: add ``weight * cos_sim(SentenceTransformer(folder +
"/first_stage"))`` (and the BM25 term) to it for the same score.

:func:`fit_fusion_weights` chooses the weights of the first stage's scores from judged queries.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..data.mining import BM25Stats

#: The file that says a saved reranker fuses its first stage's score, the encoder's subfolder, and the
#: BM25 statistics of a hybrid first stage.
FUSION_FILE = "first_stage_fusion.json"
FUSION_DIR = "first_stage"
BM25_FILE = "first_stage_bm25.json"


class CosineScorer:
    """The cosine of a bi-encoder's normalised embeddings for (query, document) pairs: ``(N,)``
    float32. Queries and documents are encoded as such (``encode_query`` / ``encode_document`` where
    the encoder has them); each distinct text is encoded once per call, and ``cache_size`` texts (0:
    none) are kept between calls, so a trainer that sees the same documents every epoch encodes them once."""

    def __init__(self, encoder: Any, batch_size: int = 64, cache_size: int = 0):
        from ..data.mining import load_encoder

        self.encoder, self.batch_size, self.cache_size = load_encoder(encoder), batch_size, cache_size
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _vectors(self, texts: Sequence[str], kind: str) -> dict[str, np.ndarray]:
        from ..data.mining import encode_normalized

        distinct = list(dict.fromkeys(texts))
        found = {t: self._cache[(kind, t)] for t in distinct if (kind, t) in self._cache}
        new = [t for t in distinct if t not in found]
        if new:
            vectors = encode_normalized(self.encoder, new, self.batch_size, show_progress=False, kind=kind)
            fresh = dict(zip(new, vectors))
            if self.cache_size:
                if len(self._cache) + len(fresh) > self.cache_size:
                    self._cache.clear()
                self._cache.update({(kind, t): v for t, v in list(fresh.items())[: self.cache_size]})
            found.update(fresh)
        return found

    def __call__(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        if not len(docs):
            return np.zeros(0, dtype=np.float32)
        q, d = self._vectors(queries, "query"), self._vectors(docs, "document")
        return np.einsum("ij,ij->i", np.stack([q[t] for t in queries]), np.stack([d[t] for t in docs]))


@dataclass
class FirstStageFusion:
    """The first stage's score, added to a reranker's raw score: ``weight * cosine(query, doc)`` of a
    bi-encoder, plus ``bm25_weight * BM25(query, doc)`` when ``bm25`` statistics are given (a hybrid
    first stage). ``source`` is the encoder's folder (or offline alias) and ``name`` what reports call it."""

    weight: float
    source: str
    name: str
    bm25_weight: float = 0.0
    bm25: BM25Stats | None = None
    batch_size: int = 64
    cache_size: int = 200_000
    scorer: CosineScorer = field(init=False, repr=False)

    def __post_init__(self):
        if not np.isfinite(self.weight) or self.weight <= 0:
            raise ValueError(f"the first stage's weight must be a positive number, got {self.weight}")
        if not np.isfinite(self.bm25_weight) or self.bm25_weight < 0:
            raise ValueError(f"the BM25 weight must be 0 (no BM25) or a positive number, got {self.bm25_weight}")
        if self.bm25_weight > 0 and self.bm25 is None:
            raise ValueError("a BM25 weight needs the collection's BM25 statistics (bm25=BM25Stats...)")
        self.scorer = CosineScorer(self.source, self.batch_size, self.cache_size)

    @property
    def hybrid(self) -> bool:
        """Whether BM25 is part of the first stage's score."""
        return self.bm25_weight > 0

    def formula(self) -> str:
        """The fused score in words, with the weights."""
        bm25 = f" + {self.bm25_weight:.4g} * BM25(query, document)" if self.hybrid else ""
        return f"logit + {self.weight:.4g} * cosine(first_stage(query), first_stage(document)){bm25}"

    def scores(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """The term added to each pair's raw score: ``(N,)``."""
        term = self.weight * self.scorer(queries, docs)
        return term + self.bm25_weight * self.bm25.score_pairs(queries, docs) if self.hybrid else term

    def term_like(self, scores: torch.Tensor, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """The term as a tensor of ``scores``' shape, dtype and device (``len(docs)`` pairs in order)."""
        term = torch.as_tensor(self.scores(queries, docs), dtype=scores.dtype, device=scores.device)
        return term.view(scores.shape)

    def save(self, folder: str) -> None:
        """Write the encoder to ``folder/first_stage``, the BM25 statistics to ``first_stage_bm25.json``
        and the weights to ``first_stage_fusion.json``."""
        self.scorer.encoder.save(os.path.join(folder, FUSION_DIR))
        saved: dict[str, Any] = {"weight": self.weight, "encoder": FUSION_DIR, "first_stage": self.name}
        if self.hybrid:
            self.bm25.save(os.path.join(folder, BM25_FILE))
            saved.update(bm25_weight=self.bm25_weight, bm25=BM25_FILE)
        with open(os.path.join(folder, FUSION_FILE), "w", encoding="utf-8") as fh:
            json.dump({**saved, "score": self.formula()}, fh, indent=2)
            fh.write("\n")

    @classmethod
    def from_folder(cls, folder: str) -> "FirstStageFusion | None":
        """The fusion a saved reranker folder declares, or ``None`` when it declares none."""
        path = os.path.join(folder, FUSION_FILE)
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                saved = json.load(fh)
            weight, encoder = float(saved["weight"]), os.path.join(folder, saved["encoder"])
            bm25_weight, bm25_file = float(saved.get("bm25_weight", 0.0)), saved.get("bm25")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: expected a JSON object with a numeric 'weight' and the 'encoder' subfolder "
                             f"({type(err).__name__}: {err}); delete the file to use the reranker without its "
                             "first stage") from None
        for needed, what in ((encoder, "the first stage's encoder"),
                             (os.path.join(folder, bm25_file) if bm25_file else None, "the BM25 statistics")):
            if needed is not None and not os.path.exists(needed):
                raise FileNotFoundError(f"{path} names {what} {needed}, which is missing; copy it back or delete "
                                        f"{FUSION_FILE} to use the reranker without its first stage")
        bm25 = BM25Stats.load(os.path.join(folder, bm25_file)) if bm25_file and bm25_weight > 0 else None
        return cls(weight=weight, source=encoder, name=str(saved.get("first_stage", encoder)),
                   bm25_weight=bm25_weight if bm25 is not None else 0.0, bm25=bm25)


def fit_fusion_weights(features: Sequence[np.ndarray], relevant: Sequence[np.ndarray],
                       init: Sequence[float] | None = None) -> np.ndarray:
    """Weights ``w`` ``(F,)`` of a linear fused score ``features[q] @ w`` that maximise the listwise
    likelihood of the judged candidates: the mean over queries of ``log sum_{d relevant}
    softmax(features[q] @ w)_d``, the loss a fused reranker is trained with. The objective is convex,
    so the optimum does not depend on ``init`` (where L-BFGS starts; default: zeros).

    ``features[q]`` is ``(C_q, F)`` (one row per candidate of query q) and ``relevant[q]`` ``(C_q,)``
    booleans; queries with no relevant candidate carry no information and are left out (count them
    before calling, to report them).
    """
    data = [(torch.as_tensor(np.asarray(x, dtype=np.float64)), torch.as_tensor(np.asarray(r, dtype=bool)))
            for x, r in zip(features, relevant)]
    data = [(x, r) for x, r in data if r.any()]
    if not data:
        raise ValueError("no query has a relevant candidate: nothing to fit the first stage's weights on")
    width = data[0][0].shape[1]
    if any(x.ndim != 2 or x.shape[1] != width or x.shape[0] != r.shape[0] for x, r in data):
        raise ValueError("every query needs a (candidates, features) matrix with the same number of features and "
                         "one relevance flag per candidate")
    weights = torch.zeros(width, dtype=torch.float64) if init is None else torch.tensor(list(init), dtype=torch.float64)
    weights.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights], max_iter=1000, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.stack([torch.logsumexp(x @ weights, 0) - torch.logsumexp((x @ weights)[r], 0)
                            for x, r in data]).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach().numpy()


def score_head_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of the score head: every ``Linear`` with one output (a cross-encoder's classifier)."""
    return [p for module in model.modules() if isinstance(module, torch.nn.Linear) and module.out_features == 1
            for p in module.parameters()]


def zero_score_head(model: torch.nn.Module) -> int:
    """Zero the output layer of a fresh classification head (every ``Linear`` with one output), so the
    fused reranker starts as its first stage; returns how many layers were zeroed (0: an error)."""
    zeroed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == 1:
            with torch.no_grad():
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
            zeroed += 1
    if not zeroed:
        raise ValueError(f"{type(model).__name__} has no one-output Linear layer to start at zero")
    return zeroed
