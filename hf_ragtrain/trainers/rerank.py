"""RerankTrainer: cross-encoder rerankers trained on query groups with a pointwise, pairwise or listwise loss."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..arguments import RerankerTrainingArguments
from ..data.records import MAX_LABEL
from ..losses import RERANK_LOSSES, pointwise_bce, score_distillation_kl
from ..modeling.cross_encoder import mark_for_sentence_transformers
from ..modeling.fusion import FirstStageFusion, score_head_parameters
from .base import RetrievalTrainer
from .grad_cache import grad_cache_step
from .group_steps import group_step, lookup_embeddings, with_embeddings

logger = logging.getLogger(__name__)


def group_of_one(what: str, instead: str) -> str:
    """The error for a loss that needs at least two documents per group, given groups of one."""
    return (f"{what} compares the documents of each query's group, and the groups hold one document "
            f"(train_group_size 1): the loss would be 0 and nothing would train; use train_group_size 2 or more "
            f"({instead})")


def chunk_scores(model: torch.nn.Module, chunk: dict[str, Any]) -> tuple[Tensor, ...]:
    """A micro-batch's ``logits``, and its ``layer_logits`` when the model has layerwise heads."""
    output = model(**chunk)
    layers = getattr(output, "layer_logits", None)
    return (output.logits,) if layers is None else (output.logits, layers)


class RerankTrainer(RetrievalTrainer):
    """Train an ``AutoModelForSequenceClassification`` (1 logit) as a reranker.

    Use with :class:`~hf_ragtrain.data.GroupDataset` and :class:`~hf_ragtrain.data.RerankCollator`.
    Settings come from :class:`~hf_ragtrain.RerankerTrainingArguments` (other ``TrainingArguments``
    are converted with its defaults). The loss is ``args.rerank_loss`` (``listwise``, ``pointwise``,
    ``pairwise``, ``listnet`` or ``lambdaloss``, see :mod:`hf_ragtrain.losses`), or the ``loss`` argument. For ``pointwise`` the label
    scale ``max_label`` is ``args.max_label``, else 3 when the data facts have grades above 1, else 1.

    ``first_stage`` (a :class:`~hf_ragtrain.modeling.fusion.FirstStageFusion`) adds the first stage's
    score to every score before the loss, so the model learns what the first stage gets wrong;
    in-training evaluation scores the same sum, and every save writes the first stage beside the
    model (``Reranker.from_pretrained`` adds it back). When the records carry their first stage's
    scores (``pos_first_stage_scores``/``neg_first_stage_scores``, e.g. from retrievers that did not
    train on the query) those are added during training instead of the ones ``first_stage`` computes.
    """

    args_class = RerankerTrainingArguments
    #: the loss is a mean of per-group losses, so a batch can be stepped set of groups by set (see step_mode)
    steps_by_group = True

    def __init__(self, *args, loss: str | None = None, first_stage: FirstStageFusion | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_stage_fusion = first_stage
        self.loss_name = loss or self.args.rerank_loss
        if self.loss_name not in RERANK_LOSSES:
            raise ValueError(f"unknown rerank loss {self.loss_name!r}; choose one of {sorted(RERANK_LOSSES)}")
        self.temperature = float(self.args.loss_temperature)
        self.grad_cache = self.args.grad_cache  # None: per step, see use_grad_cache
        self.max_label = self.args.max_label or (MAX_LABEL if (self.data_facts.max_label or 1) > 1 else 1)
        if self.loss_name == "pointwise":
            logger.info("pointwise BCE targets are label / %s", self.max_label)
        self.check_group_size()
        self.check_first_stage_scores()
        if getattr(self.data_collator, "whole_groups", False) is None:  # a RerankCollator left to the trainer
            self.data_collator.whole_groups = self.can_step_by_group()
        unwrapped = self.accelerator.unwrap_model(self.model) if self.model is not None else None
        if isinstance(unwrapped, PreTrainedModel):  # a cross-encoder (not an LlmReranker)
            mark_for_sentence_transformers(unwrapped)

    def check_group_size(self) -> None:
        """Losses that compare a group's documents need two of them, or the loss is 0 and nothing trains."""
        if self.data_facts.group_size == 1 and self.loss_name != "pointwise":
            raise ValueError(group_of_one(f"the {self.loss_name} loss", "or the pointwise loss"))

    def check_first_stage_scores(self) -> None:
        """Records' first-stage scores are added to the logit in training, so the saved model must add a
        first stage at inference too, and every record must carry them."""
        facts = self.data_facts
        if facts.first_stage_records and not facts.first_stage_scores:
            raise ValueError(f"{facts.first_stage_records} of {facts.records} training records carry first-stage "
                             "scores (pos_first_stage_scores/neg_first_stage_scores) and the others do not: give them "
                             "for every record or for none")
        if facts.first_stage_scores and self.first_stage_fusion is None:
            raise ValueError("the training records carry first-stage scores, which the reranker adds to its logit in "
                             "training, but no first stage is given to add at inference: pass first_stage="
                             "FirstStageFusion(...) (recipes: --first_stage_weight), or drop the fields")

    def create_optimizer(self, model=None):
        """The stock optimizer, with the score head's parameters in a group of their own at
        ``head_learning_rate`` when it is set (the scheduler warms up and decays both alike)."""
        optimizer = super().create_optimizer(model)
        head_lr = getattr(self.args, "head_learning_rate", None)
        if head_lr is None or head_lr == self.args.learning_rate:
            return optimizer
        head = score_head_parameters(self.accelerator.unwrap_model(self.model if model is None else model))
        if not head:
            raise ValueError("--head_learning_rate applies to a score head (a one-output layer, as a cross-encoder "
                             "has); this model has none: leave it out")
        ids = {id(p) for p in head}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        optimizer.add_param_group({"params": head, "lr": head_lr, "weight_decay": 0.0})
        return optimizer

    def loss_description(self) -> tuple[str, dict[str, Any]]:
        """The loss's name and the parameters that shape it, for the model card."""
        if self.loss_name in ("listwise", "listnet"):
            return self.loss_name, {"temperature": self.temperature}
        if self.loss_name == "pointwise":
            return self.loss_name, {"max_label": self.max_label}
        return self.loss_name, {}

    def loss_from_scores(self, scores: Tensor, labels: Tensor) -> Tensor:
        if self.loss_name in ("listwise", "listnet"):
            return RERANK_LOSSES[self.loss_name](scores, labels, temperature=self.temperature)
        if self.loss_name == "pointwise":
            return pointwise_bce(scores, labels, max_label=self.max_label)
        return RERANK_LOSSES[self.loss_name](scores, labels)

    @staticmethod
    def score_groups(model: torch.nn.Module, inputs: dict[str, Any]) -> Tensor:
        """Scores ``(B, G)`` of the collated groups (see :meth:`score_groups_by_layer`)."""
        return RerankTrainer.score_groups_by_layer(model, inputs)[0]

    @staticmethod
    def score_groups_by_layer(model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        """Scores ``(B, G)`` of the collated groups, and ``(B, G, K)`` per scored layer when the model
        has layerwise heads (an :class:`~hf_ragtrain.LlmReranker` with ``layerwise``), else ``None``.
        One forward per length-sorted micro-batch.

        With several micro-batches the token embeddings of all of them are looked up in one call
        and passed as ``inputs_embeds``: the embedding matrix then gets one dense gradient per step
        instead of one per micro-batch (measured ~10% of a MiniLM step on CPU).
        """
        chunks = inputs["chunks"]
        vectors = lookup_embeddings(model, chunks) if len(chunks) > 1 else None
        if vectors is not None:
            chunks = [with_embeddings(c, v) for c, v in zip(chunks, vectors)]
        return RerankTrainer.scores_from_outputs([chunk_scores(model, chunk) for chunk in chunks], inputs)

    @staticmethod
    def scores_from_outputs(outputs: Sequence[tuple[Tensor, ...]], inputs: dict[str, Any]
                            ) -> tuple[Tensor, Tensor | None]:
        """The ``(B, G)`` scores (and ``(B, G, K)`` layer scores) in group order from each micro-batch's
        :func:`chunk_scores`."""
        restore, shape = inputs["restore"], inputs["labels"].shape
        scores = torch.cat([o[0].view(-1) for o in outputs])[restore].view(shape).float()
        if len(outputs[0]) == 1:
            return scores, None
        layers = torch.cat([o[1] for o in outputs])[restore]
        return scores, layers.view(*shape, layers.size(-1)).float()

    def layerwise_loss(self, layer_scores: Tensor, labels: Tensor) -> Tensor:
        """The ranking loss summed over the scored layers, plus, for each layer below the last, the
        per-query KL from the last layer's distribution over the group (detached: the last layer
        teaches, it is not pulled towards the earlier ones)."""
        last = layer_scores[..., -1]
        loss = sum(self.loss_from_scores(layer_scores[..., k], labels) for k in range(layer_scores.size(-1)))
        for k in range(layer_scores.size(-1) - 1):
            loss = loss + score_distillation_kl(layer_scores[..., k], last.detach(), 1.0, 1.0)
        return loss

    def fuse(self, scores: Tensor, layer_scores: Tensor | None, inputs: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        """``scores`` ``(B, G)`` (and each layer's ``(B, G, K)``) plus the first stage's score: the records'
        own (``first_stage_scores``) when they carry them, else the fusion's."""
        if "first_stage_scores" in inputs:
            term = inputs["first_stage_scores"].to(device=scores.device, dtype=scores.dtype)
        else:
            term = self.first_stage_fusion.term_like(scores, inputs["pair_queries"], inputs["pair_docs"])
        return scores + term, None if layer_scores is None else layer_scores + term.unsqueeze(-1)

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        if self.first_stage_fusion is not None and self.args.should_save:
            self.first_stage_fusion.save(output_dir or self.args.output_dir)

    def group_loss(self, scores: Tensor, layer_scores: Tensor | None, inputs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The batch's loss from its ``(B, G)`` scores (and layer scores), and the scores it ranks by
        (with the first stage's added when there is one)."""
        if self.first_stage_fusion is not None:
            scores, layer_scores = self.fuse(scores, layer_scores, inputs)
        if layer_scores is None:
            return self.loss_from_scores(scores, inputs["labels"]), scores
        return self.layerwise_loss(layer_scores, inputs["labels"]), scores

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        loss, scores = self.group_loss(*self.score_groups_by_layer(model, inputs), inputs)
        loss = loss * self.loss_weight(inputs)
        for chunk in self.padding_chunks(inputs["chunks"]):  # equal pass counts under ZeRO-3
            loss = loss + 0.0 * model(**chunk).logits.sum()
        if model.training:
            self.count_pairs(inputs)
        return (loss, {"scores": scores}) if return_outputs else loss

    # ------------------------------------------------------------------ group steps and GradCache
    def training_step(self, model, inputs, num_items_in_batch=None):
        mode = self.step_mode(inputs)
        if mode == "plain":
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        if mode == "groups":
            loss = group_step(self, model, inputs, chunk_scores)
        else:
            chunks = list(inputs["chunks"])
            n_real = len(chunks)
            chunks += self.padding_chunks(chunks, every_pass_communicates=True)

            def loss_of(outputs: list[tuple[Tensor, ...]]) -> Tensor:
                return self.group_loss(*self.scores_from_outputs(outputs, inputs), inputs)[0] * self.loss_weight(inputs)

            loss = grad_cache_step(self, model, chunks, n_real, chunk_scores, loss_of, inputs["restore"].device)
        self.count_pairs(inputs)
        return loss

    def step_mode(self, inputs: dict[str, Any]) -> str:
        """How this step runs, alike on every process: ``grad_cache`` or ``plain`` as ``--grad_cache`` says
        when given; else ``plain`` for a batch of one micro-batch, ``groups`` (:mod:`hf_ragtrain.trainers.
        group_steps`: one forward and backward per micro-batch) when every micro-batch holds whole groups
        and every group counts in the loss, and ``grad_cache`` (:mod:`hf_ragtrain.trainers.grad_cache`:
        the memory of one micro-batch for a second forward pass) otherwise. A plain step over several
        micro-batches would keep all their activations until its backward."""
        if self.grad_cache is not None:
            return "grad_cache" if self.grad_cache else "plain"
        if self.max_over_processes(len(inputs["chunks"])) <= 1:
            return "plain"
        sets = inputs.get("group_sets")
        by_group = bool(sets) and all(n == 1 for _, n in sets) and self.every_group_counts(inputs["labels"])
        return "groups" if self.max_over_processes(0 if by_group else 1) == 0 else "grad_cache"

    def can_step_by_group(self) -> bool:
        """Whether this trainer may run group steps: its loss is a mean of per-group losses
        (``steps_by_group``), ``--grad_cache`` is left to it, and no DeepSpeed or FSDP shards the model
        (they keep GradCache, whose passes they are tested with)."""
        return (self.steps_by_group and self.grad_cache is None and not self.is_deepspeed_enabled
                and not self.is_fsdp_enabled)

    def every_group_counts(self, labels: Tensor) -> bool:
        """Whether every group of ``labels`` ``(B, G)`` enters the loss's mean: the pairwise losses average
        over the groups that hold two different labels only."""
        if self.loss_name in ("pairwise", "lambdaloss"):
            return bool((labels.max(dim=1).values > labels.min(dim=1).values).all())
        return True
