"""ColbertTrainer: late-interaction models trained with InfoNCE over MaxSim scores, cross-device
negatives and score distillation (the contrastive trainer's data path and losses)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..arguments import ColbertTrainingArguments
from ..distributed import gather_with_local_grad, scale_gradient, world_size
from ..losses import info_nce_from_scores, own_group
from ..modeling.colbert import maxsim
from .in_batch import SCORE_DISTILL_NAMES, InBatchTrainer

logger = logging.getLogger(__name__)


def _pad_tokens(t: Tensor, length: int) -> Tensor:
    """Pad dimension 1 (tokens) of ``t`` with zeros up to ``length``."""
    if t.size(1) == length:
        return t
    pad = t.new_zeros(t.size(0), length - t.size(1), *t.shape[2:])
    return torch.cat([t, pad], dim=1)


class ColbertTrainer(InBatchTrainer):
    """Train a :class:`~hf_ragtrain.modeling.colbert.ColbertEncoder` on query groups.

    Data: :class:`~hf_ragtrain.data.GroupDataset` with :class:`~hf_ragtrain.data.EmbeddingCollator`
    (the model tokenises and pads). Settings come from
    :class:`~hf_ragtrain.arguments.ColbertTrainingArguments` (temperature 1 by default, for summed
    MaxSim scores; other ``TrainingArguments`` are converted with its defaults): ``temperature``,
    ``in_batch_negatives``, ``cross_device_negatives``, ``contrastive_weight``, ``distill_weight`` and
    ``teacher_temperature``. The loss is InfoNCE over MaxSim scores plus, when the records carry
    teacher scores, the per-query KL to the teacher over each group. With several processes and
    cross-device negatives, token vectors are padded to a common length and gathered (the local
    slice keeps its gradient), so the update equals a single-process run over the global batch.
    """

    args_class = ColbertTrainingArguments

    def _encode(self, model, chunks: Sequence[dict[str, Tensor]], restore: Tensor, kind: str) -> tuple[Tensor, Tensor]:
        return self._join([model(kind=kind, **chunk) for chunk in chunks], restore)

    @staticmethod
    def _join(outputs: Sequence[tuple[Tensor, Tensor]], restore: Tensor) -> tuple[Tensor, Tensor]:
        """The micro-batches' ``(vectors, mask)`` padded to one token count, in batch order."""
        length = max(v.size(1) for v, _ in outputs)
        vectors = torch.cat([_pad_tokens(v, length) for v, _ in outputs])[restore]
        mask = torch.cat([_pad_tokens(m, length) for _, m in outputs])[restore]
        return vectors, mask

    @staticmethod
    def _gather_tokens(vectors: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pad to the longest token count of any process, then gather (local slice with its gradient)."""
        length = torch.tensor([vectors.size(1)], device=vectors.device)
        dist.all_reduce(length, op=dist.ReduceOp.MAX)
        vectors, mask = _pad_tokens(vectors, int(length)), _pad_tokens(mask, int(length))
        return gather_with_local_grad(vectors), gather_with_local_grad(mask.to(torch.uint8)).bool()

    def loss_from_tokens(self, q: Tensor, qm: Tensor, p: Tensor, pm: Tensor,
                         teacher_scores: Tensor | None = None, guide: Tensor | None = None) -> Tensor:
        """The loss from this process's token vectors and masks; ``guide``: the GISTEmbed mask (:meth:`guide_mask`)."""
        world = world_size() if self.cross_device else 1
        if world > 1:
            (q, qm), (p, pm) = self._gather_tokens(q, qm), self._gather_tokens(p, pm)
            if teacher_scores is not None:
                teacher_scores = gather_with_local_grad(teacher_scores)
        scores = maxsim(q, qm, p, pm)  # (B, B*G): every query against every passage
        loss = scores.new_zeros((), dtype=torch.float32)
        if self.contrastive_weight:
            candidates = scores if self.in_batch_negatives else own_group(scores)
            loss = loss + self.contrastive_weight * info_nce_from_scores(candidates, self.temperature,
                                                                         self.in_batch_negatives, guide)
        if self.distill_weight and teacher_scores is not None:
            loss = loss + self.distill_weight * self.score_distillation(own_group(scores), teacher_scores)
        return scale_gradient(loss, world)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        q, qm = self._encode(model, inputs["query_chunks"], inputs["query_restore"], "query")
        p, pm = self._encode(model, inputs["passage_chunks"], inputs["passage_restore"], "document")
        loss = self.loss_from_tokens(q, qm, p, pm, inputs.get("teacher_scores"),
                                     self.guide_mask(inputs, q.device)) * self.loss_weight(inputs)
        for chunk in self.padding_chunks([*inputs["query_chunks"], *inputs["passage_chunks"]]):  # ZeRO-3 pass counts
            loss = loss + 0.0 * model(kind="document", **chunk)[0].sum()
        if model.training:
            self.count_texts(inputs)
        return (loss, {"query_vectors": q, "passage_vectors": p}) if return_outputs else loss

    # ------------------------------------------------------------------ GradCache
    def training_step(self, model, inputs, num_items_in_batch=None):
        """GradCache (:meth:`InBatchTrainer.use_grad_cache`) caches each micro-batch's token vectors and masks."""
        if not self.use_grad_cache(inputs):
            return super().training_step(model, inputs, num_items_in_batch)

        def loss_of(query_outputs, passage_outputs, inputs, guide) -> Tensor:
            q, qm = self._join(query_outputs, inputs["query_restore"])
            p, pm = self._join(passage_outputs, inputs["passage_restore"])
            return self.loss_from_tokens(q, qm, p, pm, inputs.get("teacher_scores"), guide) * self.loss_weight(inputs)

        return self.kind_grad_cache_step(model, inputs, loss_of)

    def loss_description(self) -> tuple[str, dict[str, Any]]:
        name = "InfoNCE over MaxSim" + (" with in-batch negatives" if self.in_batch_negatives else "")
        if self.distill_weight:
            name += f" + score distillation ({SCORE_DISTILL_NAMES[self.score_distill_loss]})"
        guide_name, guide_params = self.guide_description()
        return name + guide_name, {"temperature": self.temperature, "cross_device_negatives": self.cross_device,
                                   **guide_params}
