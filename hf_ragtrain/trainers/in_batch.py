"""InBatchTrainer: the settings the two encoder trainers share (bi-encoders and ColBERT): InfoNCE with
in-batch and cross-device negatives, plus score distillation from teacher scores in the records."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..arguments import ContrastiveLossArguments
from ..distributed import gather_with_local_grad, world_size
from ..losses import guide_mask, margin_mse, own_group, score_distillation_kl
from .base import RetrievalTrainer
from .grad_cache import grad_cache_step

#: how the model card names each ``score_distill_loss``
SCORE_DISTILL_NAMES = {"kl": "per-query KL", "margin_mse": "MarginMSE"}


class InBatchTrainer(RetrievalTrainer):
    """Reads :class:`~hf_ragtrain.arguments.ContrastiveLossArguments` into attributes the losses use:
    ``temperature``, ``in_batch_negatives``, ``cross_device``, ``contrastive_weight``,
    ``distill_weight``, ``teacher_temperature`` and ``score_distill_loss``; ``batch_sampler`` picks the
    training order (``no_duplicates``: :class:`~hf_ragtrain.data.no_duplicates.NoDuplicatesSampler`);
    ``guide_model`` loads GISTEmbed's guide (:meth:`guide_mask`).

    ``distill_weight=None`` (the default) is 1 when the data facts say every record carries teacher
    scores, else 0; a weight above 0 for data known to lack them is an error.
    """

    args_class = ContrastiveLossArguments

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        self.temperature = float(a.temperature)
        self.in_batch_negatives = bool(a.in_batch_negatives)
        self.cross_device = bool(a.cross_device_negatives)
        self.contrastive_weight = float(a.contrastive_weight)
        self.teacher_temperature = float(a.teacher_temperature)
        self.score_distill_loss = a.score_distill_loss
        self.grad_cache = a.grad_cache  # None: per step, see the trainer's use_grad_cache
        facts = self.data_facts
        self.distill_weight = float(a.distill_weight if a.distill_weight is not None else
                                    (1.0 if facts.teacher_scores else 0.0))
        if facts.partly_scored and a.distill_weight != 0:
            raise ValueError(f"{facts.scored_records} of {facts.records} training records carry teacher scores "
                             "(pos_scores/neg_scores) and the others none: score them all "
                             "(recipes/score_with_teacher.py), remove the scores, or set distill_weight 0 to train "
                             "on the labels alone")
        if self.distill_weight and facts.teacher_scores is False:
            raise ValueError("distill_weight > 0 needs teacher scores (pos_scores and neg_scores) in every record")
        if facts.group_size == 1 and self.contrastive_weight and not self.in_batch_negatives:
            raise ValueError("with in_batch_negatives off and train_group_size 1, each query's only candidate is its "
                             "positive: the loss would be 0 and nothing would train; use train_group_size 2 or "
                             "more, or in-batch negatives")
        self.guide = None
        if a.guide_model:
            from ..data.mining import load_encoder

            self.guide = load_encoder(a.guide_model)
            self.guide.eval()
            if not self.contrastive_weight:
                raise ValueError("--guide_model masks candidates of the InfoNCE loss, whose weight "
                                 "(--contrastive_weight) is 0; drop --guide_model or give InfoNCE a weight")
        self.guide_margin = float(a.guide_margin)
        self.guide_masked = 0  # candidates the guide removed, over the run (in the card)
        if facts.group_size == 1 and self.distill_weight:
            raise ValueError("score distillation compares the teacher's and the student's scores over each query's "
                             "group, and train_group_size is 1: that term would be 0; use train_group_size 2 or more "
                             "(or distill_weight 0)")

    def score_distillation(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The score-distillation term from ``(B, G)`` student similarities and teacher scores:
        ``kl`` (per-query KL, student at ``temperature``, teacher at ``teacher_temperature``) or
        ``margin_mse`` (the student's similarities divided by ``temperature``, the scale InfoNCE reads
        them at, against the teacher's raw margins)."""
        if self.score_distill_loss == "margin_mse":
            return margin_mse(student / self.temperature, teacher)
        return score_distillation_kl(student, teacher, self.temperature, self.teacher_temperature)

    def guide_mask(self, inputs: dict[str, Any], device: torch.device) -> Tensor | None:
        """GISTEmbed's mask for this step (``None`` without a guide): the guide's cosine of every query and
        passage text of the batch (gathered from all processes with cross-device negatives), masked by
        :func:`~hf_ragtrain.losses.guide_mask` in the shape InfoNCE reads: ``(B, B*G)`` with in-batch
        negatives, ``(B, G)`` without."""
        if self.guide is None:
            return None
        from ..data.mining import encode_normalized

        with torch.no_grad():
            q = torch.from_numpy(encode_normalized(self.guide, inputs["query_texts"], kind="query")).to(device)
            p = torch.from_numpy(encode_normalized(self.guide, inputs["passage_texts"], kind="document")).to(device)
            if self.cross_device and world_size() > 1:
                q, p = gather_with_local_grad(q), gather_with_local_grad(p)
            scores = q @ p.T
            if not self.in_batch_negatives:
                scores = own_group(scores)
            mask = guide_mask(scores, self.in_batch_negatives, self.guide_margin)
        if self.model.training:
            self.guide_masked += int(mask.sum())
        return mask

    def guide_description(self) -> tuple[str, dict[str, Any]]:
        """What the card says of the guide: a suffix for the loss name and its settings (empty when off)."""
        if self.guide is None:
            return "", {}
        return (", false negatives masked by a guide model (GISTEmbed)",
                {"guide_model": self.args.guide_model, "guide_margin": self.guide_margin,
                 "guide_masked_candidates": self.guide_masked})

    def use_grad_cache(self, inputs: dict[str, Any]) -> bool:
        """Whether this step runs GradCache: ``--grad_cache`` when given, else when the queries or the
        passages of the batch take more than one micro-batch on any process. The plain step would keep
        every micro-batch's activations until its backward; GradCache keeps one micro-batch's, for the
        same gradients. Processes decide together, since under DeepSpeed GradCache's backward passes are
        collective."""
        if self.grad_cache is not None:
            return bool(self.grad_cache)
        return self.max_over_processes(max(len(inputs["query_chunks"]), len(inputs["passage_chunks"]))) > 1

    def kind_grad_cache_step(self, model, inputs, loss_of: Callable[[list, list, dict, Tensor | None], Tensor]
                             ) -> Tensor:
        """A GradCache step (:mod:`~hf_ragtrain.trainers.grad_cache`) for a model called with ``kind="query"``
        or ``"document"``: ``loss_of(query outputs, passage outputs, inputs, guide mask)`` gives the loss from
        the micro-batches' cached outputs (tuples), in chunk order."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        queries, passages = inputs["query_chunks"], inputs["passage_chunks"]
        n_q = len(queries)
        padding = self.padding_chunks([*queries, *passages], every_pass_communicates=True)
        items = [("query", c) for c in queries] + [("document", c) for c in [*passages, *padding]]
        guide = self.guide_mask(inputs, inputs["query_restore"].device)  # once per step, not per pass

        def forward(m, item):
            out = m(kind=item[0], **item[1])
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

        loss = grad_cache_step(self, model, items, n_q + len(passages), forward,
                               lambda outputs: loss_of(outputs[:n_q], outputs[n_q:], inputs, guide),
                               inputs["query_restore"].device)
        self.count_texts(inputs)
        return loss

    def _get_train_sampler(self, train_dataset=None):
        """``batch_sampler="no_duplicates"``: a :class:`~hf_ragtrain.data.no_duplicates.NoDuplicatesSampler` over
        the global batch (per-device batch x processes), seeded as the run."""
        if self.args.batch_sampler != "no_duplicates":
            return super()._get_train_sampler(train_dataset)
        from ..data.multi_dataset import MultiDataset
        from ..data.no_duplicates import NoDuplicatesSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, MultiDataset):
            raise ValueError("--batch_sampler no_duplicates orders one training set; with several datasets each "
                             "batch already comes from one of them (drop --batch_sampler no_duplicates)")
        return NoDuplicatesSampler(dataset, self.args.per_device_train_batch_size * self.args.world_size,
                                   seed=self.args.seed)
