"""InBatchTrainer: the settings the two encoder trainers share (bi-encoders and ColBERT): InfoNCE with
in-batch and cross-device negatives, plus score distillation from teacher scores in the records."""

from __future__ import annotations

from ..arguments import ContrastiveLossArguments
from .base import RetrievalTrainer


class InBatchTrainer(RetrievalTrainer):
    """Reads :class:`~hf_ragtrain.arguments.ContrastiveLossArguments` into attributes the losses use:
    ``temperature``, ``in_batch_negatives``, ``cross_device``, ``contrastive_weight``,
    ``distill_weight`` and ``teacher_temperature``.

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
        has_scores = self.data_facts.teacher_scores
        self.distill_weight = float(a.distill_weight if a.distill_weight is not None else (1.0 if has_scores else 0.0))
        if self.distill_weight and has_scores is False:
            raise ValueError("distill_weight > 0 needs teacher scores (pos_scores and neg_scores) in every record")
