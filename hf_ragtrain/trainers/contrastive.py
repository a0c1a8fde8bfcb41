"""ContrastiveTrainer: bi-encoders trained with InfoNCE, Matryoshka, cross-device negatives,
GradCache, score distillation and embedding distillation."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import Tensor

from ..distributed import gather_with_local_grad, scale_gradient, world_size
from ..losses import EMBEDDING_DISTILL_LOSSES, group_scores, info_nce, matryoshka, relative_similarity_loss
from ..arguments import EmbeddingTrainingArguments
from .grad_cache import grad_cache_step
from .in_batch import SCORE_DISTILL_NAMES, InBatchTrainer

logger = logging.getLogger(__name__)


class ContrastiveTrainer(InBatchTrainer):
    """Train a :class:`~hf_ragtrain.modeling.bi_encoder.BiEncoder` on query groups.

    Use with :class:`~hf_ragtrain.data.GroupDataset` and :class:`~hf_ragtrain.data.EmbeddingCollator`.
    Settings come from :class:`~hf_ragtrain.arguments.EmbeddingTrainingArguments` (other
    ``TrainingArguments`` are converted with its defaults). The loss, per Matryoshka dimension ``d`` (or once at
    the full dimension), on re-normalised prefixes:

        contrastive_weight * InfoNCE(q_d, p_d; temperature, in-batch negatives)
        + distill_weight * score distillation over its group (per-query KL, or MarginMSE)

    averaged over the dims, plus embedding distillation against ``teacher`` vectors (cosine at the
    full dimension, through a trained projection where the teacher's dimension differs; similarity-matrix MSE and relative similarity at every dim).

    With several processes and ``cross_device_negatives``, queries, passages and teacher scores are
    gathered from all processes (gradients kept on the local slice) and every process computes the
    global loss; the update equals a single-process run over the global batch.
    """

    args_class = EmbeddingTrainingArguments

    def __init__(self, *args, teacher: Any = None, truncate_dim: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.truncate_dim = truncate_dim  # recorded in the saved folder for sentence-transformers
        a = self.args
        self.dims = list(a.matryoshka_dims or [])
        self.dim_weights = a.matryoshka_weights
        self.teacher = teacher
        self.embed_weights = {"cosine": float(a.cosine_weight), "similarity_mse": float(a.similarity_mse_weight),
                              "relative_similarity": float(a.relative_similarity_weight)}
        self.relative_margin = float(a.relative_margin)
        if any(self.embed_weights.values()) and teacher is None:
            raise ValueError("embedding distillation weights are set but no teacher (model or embeddings) was given")
        if teacher is not None and hasattr(teacher, "to"):
            teacher.to(self.args.device)
        encoder = self.accelerator.unwrap_model(self.model)
        if self.dims and max(self.dims) > encoder.embedding_dim:
            raise ValueError(f"matryoshka_dims {self.dims} exceed the embedding dimension {encoder.embedding_dim}")
        if teacher is not None and self.embed_weights["cosine"] and teacher.dim != encoder.embedding_dim \
                and encoder.distill_projection is None:
            encoder.add_distill_projection(teacher.dim)  # cosine needs the teacher's dimension
            logger.info("cosine distillation: a %d -> %d projection is trained with the student",
                        encoder.embedding_dim, teacher.dim)
        # the cosine distillation's projection is a parameter of the loss, which GradCache's cached
        # embeddings would leave untrained: GradCache is then off by default and refused when asked for
        self.loss_has_parameters = bool(self.embed_weights["cosine"]) and encoder.distill_projection is not None
        if self.loss_has_parameters and self.grad_cache:
            raise ValueError("--grad_cache cannot train the projection of the cosine embedding distillation (the "
                             "teacher's dimension differs from the student's); drop --grad_cache or --cosine_weight")
        logger.info("contrastive loss: temperature %s, in-batch negatives %s, cross-device %s, MRL dims %s, "
                    "distill weight %s, grad cache %s", self.temperature, self.in_batch_negatives,
                    self.cross_device, self.dims or "-", self.distill_weight, self.grad_cache)

    # ------------------------------------------------------------------ settings for the card
    def loss_description(self) -> tuple[str, dict[str, Any]]:
        parts = []
        if self.contrastive_weight:
            parts.append("InfoNCE" + (" with in-batch negatives" if self.in_batch_negatives else ""))
        if self.distill_weight:
            parts.append(f"score distillation ({SCORE_DISTILL_NAMES[self.score_distill_loss]})")
        parts += [f"{name} embedding distillation" for name, w in self.embed_weights.items() if w]
        guide_name, guide_params = self.guide_description()
        name = " + ".join(parts) + (" under Matryoshka" if self.dims else "") + guide_name
        params = {"temperature": self.temperature, "cross_device_negatives": self.cross_device,
                  "grad_cache": "when a batch takes several micro-batches" if self.grad_cache is None
                  else self.grad_cache, **guide_params}
        if self.dims:
            params["matryoshka_dims"] = self.dims
            if self.dim_weights:
                params["matryoshka_weights"] = self.dim_weights
        if self.distill_weight:
            params.update(distill_weight=self.distill_weight, teacher_temperature=self.teacher_temperature,
                          contrastive_weight=self.contrastive_weight, score_distill_loss=self.score_distill_loss)
        params.update({f"{k}_weight": v for k, v in self.embed_weights.items() if v})
        return name, params

    # ------------------------------------------------------------------ the loss
    @staticmethod
    def _embed(model: torch.nn.Module, chunks: Sequence[dict[str, Tensor]], restore: Tensor) -> Tensor:
        return torch.cat([model(**chunk) for chunk in chunks])[restore]


    def _teacher_vectors(self, inputs: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor] | None:
        if self.teacher is None or not any(self.embed_weights.values()):
            return None
        tq = self.teacher.vectors_for(inputs["query_texts"], "query").to(device)
        tp = self.teacher.vectors_for(inputs["passage_texts"], "passage").to(device)
        return tq, tp

    def loss_from_embeddings(self, q: Tensor, p: Tensor, teacher_scores: Tensor | None = None,
                             teacher_vectors: tuple[Tensor, Tensor] | None = None,
                             guide: Tensor | None = None) -> Tensor:
        """The training loss from this process's raw (unnormalised) embeddings ``q`` ``(B, D)``, ``p`` ``(B*G, D)``;
        ``guide`` is the GISTEmbed mask of InfoNCE's candidates (:meth:`guide_mask`, over the gathered batch)."""
        local_q, local_p = q, p
        world = world_size() if self.cross_device else 1
        if world > 1:
            q, p = gather_with_local_grad(q), gather_with_local_grad(p)
            if teacher_scores is not None:
                teacher_scores = gather_with_local_grad(teacher_scores)
        normalize = self.accelerator.unwrap_model(self.model).settings.normalize
        use_scores = self.distill_weight and teacher_scores is not None

        def per_dim(qd: Tensor, pd: Tensor) -> Tensor:
            loss = qd.new_zeros((), dtype=torch.float32)
            if self.contrastive_weight:
                loss = loss + self.contrastive_weight * info_nce(qd, pd, self.temperature, self.in_batch_negatives,
                                                                 guide)
            if use_scores:
                loss = loss + self.distill_weight * self.score_distillation(group_scores(qd, pd), teacher_scores)
            return loss

        loss = matryoshka(per_dim, q, p, self.dims or None, self.dim_weights, normalize=normalize)
        loss = scale_gradient(loss, world)
        if teacher_vectors is not None:  # embedding distillation: this process's texts
            student = torch.cat([local_q, local_p])
            teacher = torch.cat(teacher_vectors)
            if self.embed_weights["cosine"]:
                projection = self.accelerator.unwrap_model(self.model).distill_projection
                projected = projection(student) if projection is not None else student
                loss = loss + self.embed_weights["cosine"] * EMBEDDING_DISTILL_LOSSES["cosine"](projected, teacher)
            for d in self.dims or [student.size(-1)]:
                if self.embed_weights["similarity_mse"]:
                    loss = loss + self.embed_weights["similarity_mse"] * EMBEDDING_DISTILL_LOSSES["similarity_mse"](
                        student[:, :d], teacher) / max(len(self.dims), 1)
                if self.embed_weights["relative_similarity"]:
                    loss = loss + self.embed_weights["relative_similarity"] * relative_similarity_loss(
                        student[:, :d], teacher, self.relative_margin) / max(len(self.dims), 1)
        return loss

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        q = self._embed(model, inputs["query_chunks"], inputs["query_restore"])
        p = self._embed(model, inputs["passage_chunks"], inputs["passage_restore"])
        loss = self.loss_from_embeddings(q, p, inputs.get("teacher_scores"), self._teacher_vectors(inputs, q.device),
                                         self.guide_mask(inputs, q.device)) * self.loss_weight(inputs)
        for chunk in self.padding_chunks([*inputs["query_chunks"], *inputs["passage_chunks"]]):  # ZeRO-3 pass counts
            loss = loss + 0.0 * model(**chunk).sum()
        if model.training:
            self.count_texts(inputs)
        return (loss, {"query_embeddings": q, "passage_embeddings": p}) if return_outputs else loss

    # ------------------------------------------------------------------ GradCache
    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.use_grad_cache(inputs):
            return super().training_step(model, inputs, num_items_in_batch)
        return self._grad_cache_step(model, inputs)

    def use_grad_cache(self, inputs: dict[str, Any]) -> bool:
        """:meth:`InBatchTrainer.use_grad_cache`, but off where the loss has parameters of its own (the
        cosine distillation's projection), which GradCache would not train (the equality of its gradients
        with the plain step's: tests/test_contrastive_trainer.py)."""
        if self.grad_cache is None and self.loss_has_parameters:
            return False
        return super().use_grad_cache(inputs)

    def _grad_cache_step(self, model, inputs) -> Tensor:
        """One step with GradCache (:mod:`hf_ragtrain.trainers.grad_cache`): each micro-batch's
        embeddings cached, the memory of one micro-batch, the gradients of the plain step."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        chunks = [*inputs["query_chunks"], *inputs["passage_chunks"]]
        n_real, n_q = len(chunks), len(inputs["query_chunks"])
        chunks += self.padding_chunks(chunks, every_pass_communicates=True)
        device = inputs["query_restore"].device
        guide = self.guide_mask(inputs, device)  # once per step, not per GradCache pass

        def loss_of(outputs: list[tuple[Tensor, ...]]) -> Tensor:
            q = torch.cat([o[0] for o in outputs[:n_q]])[inputs["query_restore"]]
            p = torch.cat([o[0] for o in outputs[n_q:]])[inputs["passage_restore"]]
            return self.loss_from_embeddings(q, p, inputs.get("teacher_scores"), self._teacher_vectors(inputs, device),
                                             guide) * self.loss_weight(inputs)

        loss = grad_cache_step(self, model, chunks, n_real, lambda m, chunk: (m(**chunk),), loss_of, device)
        self.count_texts(inputs)
        return loss

    # ------------------------------------------------------------------ saving
    def save_options(self) -> dict[str, Any]:
        """The Matryoshka output dimension the saved sentence-transformers folder records."""
        return {"truncate_dim": self.truncate_dim}
