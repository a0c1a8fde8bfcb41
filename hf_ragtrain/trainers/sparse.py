"""SparseTrainer: SPLADE models trained with InfoNCE over sparse dot products, cross-device negatives,
score distillation and the FLOPS regulariser, with the vectors' sparsity logged as training goes."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..arguments import SparseTrainingArguments
from ..distributed import gather_with_local_grad, scale_gradient, world_size
from ..losses import active_dimensions, flops, info_nce_from_scores, own_group
from .in_batch import SCORE_DISTILL_NAMES, InBatchTrainer


class SparseTrainer(InBatchTrainer):
    """Train a :class:`~hf_ragtrain.modeling.splade.SpladeEncoder` on query groups.

    Data: :class:`~hf_ragtrain.data.GroupDataset` with :class:`~hf_ragtrain.data.EmbeddingCollator`.
    Settings: :class:`~hf_ragtrain.arguments.SparseTrainingArguments`. The loss, over the batch
    (gathered from every process with cross-device negatives, so 1 and N processes give the same
    loss and update):

        contrastive_weight * InfoNCE(q . p / temperature, in-batch and hard negatives)
        + distill_weight * score distillation over each group (per-query KL, or MarginMSE)
        + w_q(t) * FLOPS(queries) + w_d(t) * FLOPS(documents)

    where ``w(t)`` rises as ``(t / warm-up steps)^2`` to its weight. The logs carry the mean active
    dimensions of the queries and documents of the steps since the last log, and the FLOPS weights
    in force. Inference-free models' query vectors have no parameters: their FLOPS term is left out.
    """

    args_class = SparseTrainingArguments

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sparsity: dict[str, list[float]] = {"query": [], "document": []}

    # ------------------------------------------------------------------ the regulariser's schedule
    def flops_weights(self, step: int | None = None) -> tuple[float, float]:
        """The query and document FLOPS weights at ``step`` (default: the step being taken, ``global_step``)."""
        a = self.args
        step = self.state.global_step if step is None else step
        warmup = a.flops_warmup_ratio * (self.state.max_steps or 0)
        ramp = 1.0 if warmup <= 0 else min(1.0, step / warmup) ** 2
        return a.query_flops_weight * ramp, a.document_flops_weight * ramp

    # ------------------------------------------------------------------ the loss
    @staticmethod
    def _encode(model, chunks: Sequence[dict[str, Tensor]], restore: Tensor, kind: str) -> Tensor:
        return torch.cat([model(kind=kind, **chunk) for chunk in chunks])[restore]

    def loss_from_vectors(self, q: Tensor, p: Tensor, teacher_scores: Tensor | None = None,
                          guide: Tensor | None = None) -> Tensor:
        """The loss from this process's sparse vectors ``q`` ``(B, V)`` and ``p`` ``(B*G, V)``."""
        if self.model.training:
            self._sparsity["query"].append(active_dimensions(q.detach()))
            self._sparsity["document"].append(active_dimensions(p.detach()))
        world = world_size() if self.cross_device else 1
        if world > 1:
            q, p = gather_with_local_grad(q), gather_with_local_grad(p)
            if teacher_scores is not None:
                teacher_scores = gather_with_local_grad(teacher_scores)
        scores = q @ p.T  # (B, B*G)
        loss = scores.new_zeros((), dtype=torch.float32)
        if self.contrastive_weight:
            candidates = scores if self.in_batch_negatives else own_group(scores)
            loss = loss + self.contrastive_weight * info_nce_from_scores(candidates, self.temperature,
                                                                         self.in_batch_negatives, guide)
        if self.distill_weight and teacher_scores is not None:
            loss = loss + self.distill_weight * self.score_distillation(own_group(scores), teacher_scores)
        query_weight, document_weight = self.flops_weights()
        if query_weight and not self.accelerator.unwrap_model(self.model).settings.inference_free:
            loss = loss + query_weight * flops(q)
        if document_weight:
            loss = loss + document_weight * flops(p)
        return scale_gradient(loss, world)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        q = self._encode(model, inputs["query_chunks"], inputs["query_restore"], "query")
        p = self._encode(model, inputs["passage_chunks"], inputs["passage_restore"], "document")
        loss = self.loss_from_vectors(q, p, inputs.get("teacher_scores"),
                                      self.guide_mask(inputs, q.device)) * self.loss_weight(inputs)
        for chunk in self.padding_chunks([*inputs["query_chunks"], *inputs["passage_chunks"]]):  # ZeRO-3 pass counts
            loss = loss + 0.0 * model(kind="document", **chunk).sum()
        if model.training:
            self.count_texts(inputs)
        return (loss, {"query_vectors": q, "passage_vectors": p}) if return_outputs else loss

    # ------------------------------------------------------------------ GradCache
    def training_step(self, model, inputs, num_items_in_batch=None):
        """GradCache (:meth:`InBatchTrainer.use_grad_cache`) caches each micro-batch's ``(N, V)`` vectors."""
        if not self.use_grad_cache(inputs):
            return super().training_step(model, inputs, num_items_in_batch)

        def loss_of(query_outputs, passage_outputs, inputs, guide) -> Tensor:
            q = torch.cat([o[0] for o in query_outputs])[inputs["query_restore"]]
            p = torch.cat([o[0] for o in passage_outputs])[inputs["passage_restore"]]
            return self.loss_from_vectors(q, p, inputs.get("teacher_scores"), guide) * self.loss_weight(inputs)

        return self.kind_grad_cache_step(model, inputs, loss_of)

    # ------------------------------------------------------------------ logs and the card
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for kind, values in self._sparsity.items():
                if values:
                    logs[f"active_dims_{kind}"] = round(sum(values) / len(values), 1)
                values.clear()
            # the weights of the step just taken (global_step already counts it)
            logs["query_flops_weight"], logs["document_flops_weight"] = self.flops_weights(self.state.global_step - 1)
        super().log(logs, start_time)

    def loss_description(self) -> tuple[str, dict[str, Any]]:
        name = "InfoNCE over sparse dot products" + (" with in-batch negatives" if self.in_batch_negatives else "")
        if self.distill_weight:
            name += f" + score distillation ({SCORE_DISTILL_NAMES[self.score_distill_loss]})"
        name += " + FLOPS regularisation"
        guide_name, guide_params = self.guide_description()
        a = self.args
        return name + guide_name, {"temperature": self.temperature, "cross_device_negatives": self.cross_device,
                                   "query_flops_weight": a.query_flops_weight,
                                   "document_flops_weight": a.document_flops_weight,
                                   "flops_warmup_ratio": a.flops_warmup_ratio, **guide_params}
