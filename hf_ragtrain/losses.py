"""Losses as pure functions of score tensors.

Reranker losses take ``scores`` of shape ``(B, G)``: B queries, each with a group of G documents
whose column 0 is the positive (see :class:`hf_ragtrain.data.GroupDataset`), and ``labels`` of the
same shape holding each document's relevance grade (0 = non-relevant, 1..3 graded).

Every loss averages first within a query and then over queries, so each query weighs the same
and the mean of per-process losses equals the loss of the global batch (DDP averages gradients).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def pointwise_bce(scores: Tensor, labels: Tensor, max_label: float = 1.0) -> Tensor:
    """Binary cross-entropy on each (query, document) logit, target ``label / max_label`` in [0, 1].

    Binary data (labels 0/1) uses ``max_label=1``; graded 0..3 labels use ``max_label=3`` so a
    grade-2 document has target 2/3.
    """
    targets = labels.to(scores.dtype) / max_label
    if targets.min() < 0 or targets.max() > 1:
        raise ValueError(f"labels must lie in [0, {max_label}] for pointwise BCE, got "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    return F.binary_cross_entropy_with_logits(scores, targets)


def pairwise_ranknet(scores: Tensor, labels: Tensor, sigma: float = 1.0) -> Tensor:
    """RankNet: ``log(1 + exp(-sigma * (s_i - s_j)))`` over the pairs of a group with ``y_i > y_j``.

    Averaged over each query's pairs, then over the queries that have at least one such pair.
    """
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # (B, G, G): s_i - s_j
    better = (labels.unsqueeze(2) > labels.unsqueeze(1)).to(scores.dtype)
    per_pair = F.softplus(-sigma * diff) * better
    n_pairs = better.sum(dim=(1, 2))
    has_pairs = n_pairs > 0
    if not has_pairs.any():
        raise ValueError("pairwise_ranknet needs groups with documents of different labels")
    per_query = per_pair.sum(dim=(1, 2))[has_pairs] / n_pairs[has_pairs]
    return per_query.mean()


def listwise_ce(scores: Tensor, labels: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """Cross-entropy of a softmax over each group (not over the batch), the positive in column 0."""
    if labels is not None and (labels[:, :1] <= labels[:, 1:]).any():
        raise ValueError("listwise_ce expects column 0 to hold each group's strictly most relevant document")
    target = torch.zeros(scores.size(0), dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores / temperature, target)


RERANK_LOSSES: dict[str, Callable[..., Tensor]] = {
    "pointwise": pointwise_bce,
    "pairwise": pairwise_ranknet,
    "listwise": listwise_ce,
}
