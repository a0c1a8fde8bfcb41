"""A reranker that keeps its first stage's score: ``score = logit + weight * cosine(query, doc)``.

A cross-encoder trained from a bi-encoder checkpoint on a few hundred queries starts far behind the
bi-encoder it reranks (on the bundled data: 0.16 nDCG@10 against 0.955). Adding the first stage's
cosine to its logit, with the classification head started at zero, makes the untrained reranker
rank exactly as its first stage does; training then learns only what the first stage gets wrong
(the listwise loss sees the fused scores). The first stage travels with the model: its encoder is
saved in ``<folder>/first_stage/`` and the weight in ``first_stage_fusion.json``, and
:class:`hf_ragtrain.Reranker` adds the term whenever it finds them. sentence-transformers'
``CrossEncoder`` reads the folder as a plain cross-encoder, whose logit is the reranker's part only:
add ``weight * cos_sim(SentenceTransformer(folder + "/first_stage"))`` to it for the same score.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

#: The file that says a saved reranker fuses its first stage's score, and the encoder's subfolder.
FUSION_FILE = "first_stage_fusion.json"
FUSION_DIR = "first_stage"


class CosineScorer:
    """The cosine of a bi-encoder's normalised embeddings for (query, document) pairs: ``(N,)``
    float32. Each distinct text is encoded once per call; ``cache_size`` texts (0: none) are kept
    between calls, so a trainer that sees the same documents every epoch encodes them once."""

    def __init__(self, encoder: Any, batch_size: int = 64, cache_size: int = 0):
        from ..data.mining import load_encoder

        self.encoder, self.batch_size, self.cache_size = load_encoder(encoder), batch_size, cache_size
        self._cache: dict[str, np.ndarray] = {}

    def _vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        from ..data.mining import encode_normalized

        found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        new = [t for t in dict.fromkeys(texts) if t not in found]
        if new:
            vectors = encode_normalized(self.encoder, new, self.batch_size, show_progress=False)
            fresh = dict(zip(new, vectors))
            if self.cache_size:
                if len(self._cache) + len(fresh) > self.cache_size:
                    self._cache.clear()
                self._cache.update(list(fresh.items())[: self.cache_size])
            found.update(fresh)
        return found

    def __call__(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        if not len(docs):
            return np.zeros(0, dtype=np.float32)
        q, d = self._vectors(queries), self._vectors(docs)
        return np.einsum("ij,ij->i", np.stack([q[t] for t in queries]), np.stack([d[t] for t in docs]))


@dataclass
class FirstStageFusion:
    """``weight * cosine(query, doc)`` of the first stage's encoder, added to a reranker's raw score.

    ``source`` is the encoder's folder (or offline alias) and ``name`` what reports call it."""

    weight: float
    source: str
    name: str
    batch_size: int = 64
    cache_size: int = 200_000
    scorer: CosineScorer = field(init=False, repr=False)

    def __post_init__(self):
        if not np.isfinite(self.weight) or self.weight <= 0:
            raise ValueError(f"the first stage's weight must be a positive number, got {self.weight}")
        self.scorer = CosineScorer(self.source, self.batch_size, self.cache_size)

    def scores(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """The term added to each pair's raw score: ``(N,)``."""
        return self.weight * self.scorer(queries, docs)

    def term_like(self, scores: torch.Tensor, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """The term as a tensor of ``scores``' shape, dtype and device (``len(docs)`` pairs in order)."""
        term = torch.as_tensor(self.scores(queries, docs), dtype=scores.dtype, device=scores.device)
        return term.view(scores.shape)

    def save(self, folder: str) -> None:
        """Write the encoder to ``folder/first_stage`` and the weight to ``folder/first_stage_fusion.json``."""
        self.scorer.encoder.save(os.path.join(folder, FUSION_DIR))
        with open(os.path.join(folder, FUSION_FILE), "w", encoding="utf-8") as fh:
            json.dump({"weight": self.weight, "encoder": FUSION_DIR, "first_stage": self.name,
                       "score": "logit + weight * cosine(first_stage(query), first_stage(document))"}, fh, indent=2)
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
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: expected a JSON object with a numeric 'weight' and the 'encoder' subfolder "
                             f"({type(err).__name__}: {err}); delete the file to use the reranker without its "
                             "first stage") from None
        if not os.path.isdir(encoder):
            raise FileNotFoundError(f"{path} names the first stage's encoder {encoder}, which is missing; copy it back "
                                    f"or delete {FUSION_FILE} to use the reranker without its first stage")
        return cls(weight=weight, source=encoder, name=str(saved.get("first_stage", encoder)))


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
