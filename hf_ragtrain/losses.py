"""Losses as pure functions of score tensors.

Reranker losses take ``scores`` of shape ``(B, G)``: B queries, each with a group of G documents
whose column 0 is the positive (see :class:`hf_ragtrain.data.GroupDataset`), and ``labels`` of the
same shape holding each document's relevance grade (0 = non-relevant, 1..3 graded).

Every loss averages first within a query and then over queries, so each query weighs the same
and the mean of per-process losses equals the loss of the global batch (DDP averages gradients).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

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


def listnet(scores: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """ListNet (top-one probabilities): cross-entropy from ``softmax(labels)`` to ``softmax(scores / T)``
    within each group, averaged over queries. Unlike :func:`listwise_ce`, graded labels shape the target
    (a grade-2 document is wanted more than a grade-1 one) and several positives share it."""
    target = F.softmax(labels.float(), dim=-1)
    return -(target * F.log_softmax(scores.float() / temperature, dim=-1)).sum(-1).mean()


def lambda_loss(scores: Tensor, labels: Tensor, mu: float = 10.0, sigma: float = 1.0) -> Tensor:
    """LambdaLoss, NDCG-Loss2++ (Wang et al., 2018): RankNet's ``log2(1 + exp(-sigma (s_i - s_j)))`` over
    the pairs of a group with ``y_i > y_j``, each weighted by ``(rho_ij + mu * delta_ij) * |G_i - G_j|``.

    Ranks ``r`` come from the current scores (1 = best); ``D(r) = log2(1 + r)``; ``G = (2^y - 1) / maxDCG``
    (the group's ideal DCG, so the weights are NDCG changes); ``rho_ij = |1/D(r_i) - 1/D(r_j)|`` (LambdaRank's
    swap weight) and ``delta_ij = |1/D(|r_i - r_j|) - 1/D(|r_i - r_j| + 1)|``. Weights carry no gradient.
    Summed over each query's pairs, averaged over the queries that have one.
    """
    s, y = scores.float(), labels.float()
    ranks = s.argsort(dim=-1, descending=True).argsort(dim=-1).float() + 1  # (B, G), 1 = best
    gains = 2 ** y - 1
    ideal = (gains.sort(dim=-1, descending=True).values / torch.log2(torch.arange(
        2, y.size(-1) + 2, device=s.device, dtype=s.dtype))).sum(-1, keepdim=True)
    g = gains / ideal.clamp(min=1e-12)
    inv_d = 1 / torch.log2(1 + ranks)
    rho = (inv_d.unsqueeze(2) - inv_d.unsqueeze(1)).abs()
    gap = (ranks.unsqueeze(2) - ranks.unsqueeze(1)).abs()
    delta = (1 / torch.log2(1 + gap.clamp(min=1)) - 1 / torch.log2(2 + gap)).abs()
    weights = ((rho + mu * delta) * (g.unsqueeze(2) - g.unsqueeze(1)).abs()).detach()
    better = (y.unsqueeze(2) > y.unsqueeze(1)).to(s.dtype)
    per_pair = F.softplus(-sigma * (s.unsqueeze(2) - s.unsqueeze(1))) / math.log(2) * weights * better
    has_pairs = better.sum(dim=(1, 2)) > 0
    if not has_pairs.any():
        raise ValueError("lambda_loss needs groups with documents of different labels")
    return per_pair.sum(dim=(1, 2))[has_pairs].mean()


def margin_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """MarginMSE (Hofstätter et al., 2020): squared error between the student's and the teacher's margins
    ``score(positive) - score(negative_k)`` over each ``(B, G)`` group (positive in column 0), averaged over
    all negatives. Only differences are matched: an offset between the student's scores and the teacher's
    (a bi-encoder's similarities against a cross-encoder's logits) costs nothing."""
    s, t = student.float(), teacher.float()
    return F.mse_loss(s[:, :1] - s[:, 1:], t[:, :1] - t[:, 1:])


# ------------------------------------------------------------------ reranker distillation
# Student and teacher scores are (B, G) raw scores: logits for cross-encoders, the yes-token logit
# for LLM rerankers (what score_with_teacher writes). None of these losses applies a sigmoid or a
# softmax to its inputs before it is asked to.


def distill_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error between raw student and teacher scores (the logit scale, no activation)."""
    return F.mse_loss(student.float(), teacher.float())


def distill_soft_ce(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy with soft labels over each query's group: ``-sum_j p_j log q_j`` with
    ``p = softmax(teacher / T)`` and ``q = softmax(student / T)`` within the group (never across the
    batch), averaged over queries. Its gradient equals that of KL(p || q)."""
    p = F.softmax(teacher.float() / temperature, dim=-1)
    return -(p * F.log_softmax(student.float() / temperature, dim=-1)).sum(-1).mean()


def distill_bce(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Pointwise binary cross-entropy with the teacher's probability ``sigmoid(teacher / T)`` as the
    target of the student's logit ``student / T``, averaged over all pairs."""
    target = torch.sigmoid(teacher.float() / temperature)
    return F.binary_cross_entropy_with_logits(student.float() / temperature, target)


DISTILL_LOSSES: dict[str, Callable[..., Tensor]] = {
    "mse": lambda s, t, temperature=1.0: distill_mse(s, t),
    "soft_ce": distill_soft_ce,
    "bce": distill_bce,
    "margin_mse": lambda s, t, temperature=1.0: margin_mse(s, t),
}


RERANK_LOSSES: dict[str, Callable[..., Tensor]] = {
    "pointwise": pointwise_bce,
    "pairwise": pairwise_ranknet,
    "listwise": listwise_ce,
    "listnet": listnet,
    "lambdaloss": lambda_loss,
}


# ------------------------------------------------------------------------------------ embedding losses
#
# Embedding losses take query vectors ``q`` of shape ``(B, D)`` and passage vectors ``p`` of shape
# ``(B * G, D)`` laid out group by group: rows ``i*G .. i*G + G-1`` are query i's group, its
# positive first (as :class:`hf_ragtrain.data.GroupDataset` builds them).


def group_scores(q: Tensor, p: Tensor) -> Tensor:
    """``(B, G)`` similarities of each query with the documents of its own group."""
    b = q.size(0)
    return torch.einsum("bd,bgd->bg", q, p.view(b, -1, p.size(-1)))


def info_nce(q: Tensor, p: Tensor, temperature: float = 0.02, in_batch_negatives: bool = True,
             mask: Tensor | None = None) -> Tensor:
    """InfoNCE over similarities divided by ``temperature``; query i's target is its positive ``p[i*G]``.

    With ``in_batch_negatives`` every passage in the batch (other queries' positives and hard
    negatives too) is a candidate; without, only the query's own group is. ``mask`` (bool, the shape
    of the score matrix, see :func:`guide_mask`) removes candidates from the softmax.
    """
    b = q.size(0)
    if p.size(0) % b:
        raise ValueError(f"{p.size(0)} passages do not split into groups for {b} queries")
    scores = q @ p.T if in_batch_negatives else group_scores(q, p)
    return info_nce_from_scores(scores, temperature, in_batch_negatives, mask)


def positive_columns(scores: Tensor, in_batch_negatives: bool = True) -> Tensor:
    """Each query's positive column in a score matrix: ``i * G`` in ``(B, B*G)``, 0 in ``(B, G)``."""
    b = scores.size(0)
    if not in_batch_negatives:
        return torch.zeros(b, dtype=torch.long, device=scores.device)
    if scores.size(1) % b:
        raise ValueError(f"{scores.size(1)} passages do not split into groups for {b} queries")
    return torch.arange(b, device=scores.device) * (scores.size(1) // b)


def info_nce_from_scores(scores: Tensor, temperature: float = 0.02, in_batch_negatives: bool = True,
                         mask: Tensor | None = None) -> Tensor:
    """InfoNCE from a score matrix: ``(B, B*G)`` against every passage of the batch (query i's positive in
    column ``i*G``), or ``(B, G)`` against its own group (positive in column 0). Candidates where the
    bool ``mask`` is True leave the softmax (:func:`guide_mask`; it never masks a positive)."""
    target = positive_columns(scores, in_batch_negatives)
    logits = scores.float() / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, target)


def guide_mask(guide_scores: Tensor, in_batch_negatives: bool = True, margin: float = 0.0) -> Tensor:
    """GISTEmbed's false-negative mask from a guide model's score matrix (the shape InfoNCE reads, see
    :func:`info_nce_from_scores`): True where a candidate scores above the query's own positive minus
    ``margin`` in the guide's eyes, so it is likely relevant too and must not be pushed away. The
    positives themselves are never masked. Bool, the shape of ``guide_scores``."""
    target = positive_columns(guide_scores, in_batch_negatives)
    rows = torch.arange(guide_scores.size(0), device=guide_scores.device)
    positive = guide_scores[rows, target].unsqueeze(1)
    mask = guide_scores > positive - margin
    mask[rows, target] = False
    return mask


def flops(vectors: Tensor) -> Tensor:
    """The FLOPS regulariser of sparse vectors ``(N, V)`` (Paria et al., 2020): ``sum_v (mean_n |w_nv|)^2``,
    a smooth stand-in for the expected number of multiplications an inverted index spends per query
    and document pair; it pushes down the entries many texts share more than the rare ones."""
    return vectors.abs().float().mean(dim=0).pow(2).sum()


def active_dimensions(vectors: Tensor) -> float:
    """The mean count of non-zero entries per row of ``vectors`` ``(N, V)``."""
    return float((vectors != 0).sum(dim=1).float().mean()) if vectors.numel() else 0.0


def own_group(scores: Tensor) -> Tensor:
    """The ``(B, G)`` block of a ``(B, B*G)`` score matrix where each query meets its own group."""
    b = scores.size(0)
    group = scores.size(1) // b
    return scores.view(b, b, group)[torch.arange(b, device=scores.device), torch.arange(b, device=scores.device)]


def score_distillation_kl(student_scores: Tensor, teacher_scores: Tensor, temperature: float = 0.02,
                          teacher_temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) between per-query distributions over each query's group, averaged over queries.

    Both ``(B, G)``. Each row is a distribution of its own (softmax within the group, never over the
    batch): the teacher's ``softmax(teacher_scores / teacher_temperature)`` and the student's
    ``softmax(student_scores / temperature)``.
    """
    log_student = F.log_softmax(student_scores.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_scores.float() / teacher_temperature, dim=-1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(-1).mean()


def matryoshka(loss_fn: Callable[[Tensor, Tensor], Tensor], q: Tensor, p: Tensor, dims: Sequence[int] | None,
               weights: Sequence[float] | None = None, normalize: bool = True) -> Tensor:
    """Matryoshka (MRL) loss: ``loss_fn`` on the first ``d`` dimensions for each ``d`` in ``dims``.

    Each prefix is re-normalised (when ``normalize``) before ``loss_fn(q_d, p_d)``; the result is
    the weighted mean ``sum(w_d * L_d) / sum(w_d)`` (equal weights by default). ``dims=None`` is the
    plain loss on the full vectors. One forward pass serves all dimensions.
    """
    full = q.size(-1)
    dims = list(dims) if dims else [full]
    if any(d < 1 or d > full for d in dims):
        raise ValueError(f"matryoshka dims {dims} must lie in [1, {full}]")
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} matryoshka weights for {len(dims)} dims")
    total = q.new_zeros((), dtype=torch.float32)
    for d, w in zip(dims, weights):
        qd, pd = q[:, :d], p[:, :d]
        if normalize:
            qd, pd = F.normalize(qd, dim=-1), F.normalize(pd, dim=-1)
        total = total + w * loss_fn(qd, pd)
    return total / sum(weights)


# ------------------------------------------------------------------------------ embedding distillation
#
# A student learns a teacher's embedding space (Jasper/Stella style): ``s`` ``(N, D)`` are the
# student's vectors (projected to the teacher's dimension where they differ), ``t`` ``(N, D)`` the
# teacher's for the same N texts.


def cosine_embedding_loss(s: Tensor, t: Tensor) -> Tensor:
    """Mean of ``1 - cos(s_i, t_i)``: each student vector points where the teacher's does."""
    return (1 - F.cosine_similarity(s.float(), t.float(), dim=-1)).mean()


def similarity_mse_loss(s: Tensor, t: Tensor) -> Tensor:
    """MSE between the student's and the teacher's ``(N, N)`` cosine-similarity matrices.

    Needs no projection: the matrices have the same shape whatever the two dimensions.
    """
    sn, tn = F.normalize(s.float(), dim=-1), F.normalize(t.float(), dim=-1)
    return F.mse_loss(sn @ sn.T, tn @ tn.T)


def relative_similarity_loss(s: Tensor, t: Tensor, margin: float = 0.015, chunk_size: int = 64) -> Tensor:
    """Triplet-margin loss on similarity orderings: where the teacher has ``sim(i,j) > sim(i,k)``,
    the student should too, by at least ``margin``: ``relu(margin - (s_ij - s_ik))``.

    Compared per anchor i over all pairs ``(j, k)`` with ``j, k != i``; averaged over the triplets
    the teacher orders strictly. Anchors are processed ``chunk_size`` at a time, so memory is
    ``O(chunk_size * N^2)``, never ``O(N^3)`` at once (and no ``O(N^4)`` pair-of-pairs tensor).
    """
    sn, tn = F.normalize(s.float(), dim=-1), F.normalize(t.float(), dim=-1)
    n = sn.size(0)
    s_sim, t_sim = sn @ sn.T, tn @ tn.T
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    total = s.new_zeros((), dtype=torch.float32)
    count = 0
    for start in range(0, n, chunk_size):
        rows = slice(start, min(start + chunk_size, n))
        ss, ts = s_sim[rows], t_sim[rows]  # (c, N)
        valid = ~eye[rows]  # j != i
        pair_ok = valid.unsqueeze(2) & valid.unsqueeze(1)  # (c, N, N): j, k both != i
        teacher_orders = (ts.unsqueeze(2) > ts.unsqueeze(1)) & pair_ok  # teacher: sim(i,j) > sim(i,k)
        hinge = F.relu(margin - (ss.unsqueeze(2) - ss.unsqueeze(1)))
        total = total + (hinge * teacher_orders).sum()
        count += int(teacher_orders.sum())
    return total / max(count, 1)


EMBEDDING_DISTILL_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": cosine_embedding_loss,
    "similarity_mse": similarity_mse_loss,
    "relative_similarity": relative_similarity_loss,
}
