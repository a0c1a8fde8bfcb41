"""DistillTrainer: a reranker (typically a small BERT cross-encoder) learns a teacher's scores."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from ..arguments import DistillTrainingArguments
from ..losses import DISTILL_LOSSES
from .rerank import RerankTrainer, group_of_one

logger = logging.getLogger(__name__)


class DistillTrainer(RerankTrainer):
    """Distil a teacher reranker into the model being trained.

    Teacher scores come from the records (``pos_scores``/``neg_scores``, written by
    ``recipes/score_with_teacher.py``), or, when ``teacher`` is given (a
    :class:`hf_ragtrain.scoring.Teacher`, e.g. ``load_teacher("runs/llm-reranker")``), from that
    frozen model during training (it reads the pair texts that :class:`~hf_ragtrain.RerankCollator`
    puts in each batch): without gradients, each distinct (query, document) pair scored once and
    cached. Settings come from :class:`~hf_ragtrain.arguments.DistillTrainingArguments`:

    - ``distill_loss``: ``mse`` (raw scores), ``soft_ce`` (per-query softmax over the group, soft
      labels) or ``bce`` (pointwise, target ``sigmoid(teacher / T)``); see :mod:`hf_ragtrain.losses`;
    - ``distill_temperature`` ``T``; ``distill_weight``;
    - ``hard_label_weight``: adds the ordinary ranking loss (``rerank_loss``) on the labels.
    """

    args_class = DistillTrainingArguments

    def __init__(self, *args, teacher: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        self.distill_loss = a.distill_loss
        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"unknown distill loss {self.distill_loss!r}; choose one of {sorted(DISTILL_LOSSES)}")
        self.distill_temperature = float(a.distill_temperature)
        self.distill_weight = float(a.distill_weight)
        self.hard_label_weight = float(a.hard_label_weight)
        self.teacher = teacher
        self.teacher_cache: dict[tuple[str, str], float] = {}
        self.teacher_pairs_scored = 0
        facts = self.data_facts
        if teacher is None and facts.teacher_scores is False:
            raise ValueError(f"DistillTrainer learns a teacher's scores, and {facts.records - (facts.scored_records or 0)} "
                             f"of {facts.records} training records have none (pos_scores/neg_scores): add them with "
                             "recipes/score_with_teacher.py, or give teacher= to score pairs during training")
        self._check_distill_group_size()

    def check_group_size(self) -> None:
        """Checked once the distillation settings are read (:meth:`_check_distill_group_size`)."""

    def _check_distill_group_size(self) -> None:
        if self.data_facts.group_size != 1:
            return
        if self.distill_loss in ("soft_ce", "margin_mse"):
            raise ValueError(group_of_one(f"the {self.distill_loss} distillation loss", "or distill_loss mse or bce"))
        if self.hard_label_weight and self.loss_name != "pointwise":
            raise ValueError(group_of_one(f"the {self.loss_name} loss on the labels (hard_label_weight)",
                                          "or rerank_loss pointwise"))

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.teacher is not None:  # the whole batch scored in one call, before group steps read it set by set
            self.teacher_scores(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def teacher_scores(self, inputs: dict[str, Any]) -> Tensor:
        """``(B, G)`` teacher scores of the batch: from the online teacher if there is one, else the records'."""
        if self.teacher is None:
            if "teacher_scores" not in inputs:
                raise ValueError("DistillTrainer needs teacher scores: records with pos_scores/neg_scores "
                                 "(recipes/score_with_teacher.py) or a teacher= model")
            return inputs["teacher_scores"]
        if "pair_queries" not in inputs:
            raise ValueError("an online teacher scores the pair texts of each batch (pair_queries, pair_docs), "
                             "which RerankCollator provides; use it as the data collator")
        pairs = list(zip(inputs["pair_queries"], inputs["pair_docs"]))
        missing = list(dict.fromkeys(p for p in pairs if p not in self.teacher_cache))
        if missing:
            with torch.no_grad():
                scores = self.teacher.score([q for q, _ in missing], [d for _, d in missing])
            self.teacher_cache.update(zip(missing, (float(s) for s in scores)))
            self.teacher_pairs_scored += len(missing)
        return torch.tensor([self.teacher_cache[p] for p in pairs], dtype=torch.float32).view(inputs["labels"].shape)

    def group_loss(self, scores: Tensor, layer_scores: Tensor | None, inputs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The distillation loss (plus the ranking loss on the labels, weighted) from the ``(B, G)`` scores;
        layer scores are not distilled."""
        teacher = self.teacher_scores(inputs).to(scores.device)
        loss = self.distill_weight * DISTILL_LOSSES[self.distill_loss](scores, teacher,
                                                                       temperature=self.distill_temperature)
        if self.hard_label_weight:
            loss = loss + self.hard_label_weight * self.loss_from_scores(scores, inputs["labels"])
        return loss, scores

    def loss_description(self) -> tuple[str, dict[str, Any]]:
        name = {"mse": "MSE of raw scores", "soft_ce": "soft-label cross-entropy over each group",
                "bce": "pointwise BCE to the teacher's probability",
                "margin_mse": "MarginMSE of positive-minus-negative score margins"}[self.distill_loss]
        params: dict[str, Any] = {"distill_weight": self.distill_weight}
        if self.distill_loss in ("soft_ce", "bce"):
            params["temperature"] = self.distill_temperature
        if self.hard_label_weight:
            name += f" + {self.loss_name} loss on the labels"
            params["hard_label_weight"] = self.hard_label_weight
        return f"distillation: {name}", params
