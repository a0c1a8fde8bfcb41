"""RerankTrainer: cross-encoder rerankers trained on query groups with a pointwise, pairwise or listwise loss."""

from __future__ import annotations

import logging
from typing import Any

import os

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..data.groups import GroupDataset
from ..data.records import MAX_LABEL
from ..losses import RERANK_LOSSES, listwise_ce, pairwise_ranknet, pointwise_bce, score_distillation_kl
from ..modeling.attention import NAME as ATTN_CPU
from ..modeling.attention import use_fast_dropout
from ..modeling.cross_encoder import mark_for_sentence_transformers
from .base import RetrievalTrainer

logger = logging.getLogger(__name__)


class RerankTrainer(RetrievalTrainer):
    """Train an ``AutoModelForSequenceClassification`` (1 logit) as a reranker.

    Use with :class:`~hf_ragtrain.data.GroupDataset` and :class:`~hf_ragtrain.data.RerankCollator`.
    The loss comes from ``args.rerank_loss`` (``listwise``, ``pointwise`` or ``pairwise``, see
    :mod:`hf_ragtrain.losses`) when ``args`` is a :class:`~hf_ragtrain.RerankerTrainingArguments`,
    or from the ``loss`` argument. For ``pointwise`` the label scale ``max_label`` is 3 when the data
    has grades above 1, else 1 (override with ``args.max_label``).
    """

    def __init__(self, *args, loss: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_name = loss or getattr(self.args, "rerank_loss", "listwise")
        if self.loss_name not in RERANK_LOSSES:
            raise ValueError(f"unknown rerank loss {self.loss_name!r}; choose one of {sorted(RERANK_LOSSES)}")
        self.temperature = float(getattr(self.args, "loss_temperature", 1.0))
        self.max_label = getattr(self.args, "max_label", None) or self._infer_max_label()
        if self.loss_name == "pointwise":
            logger.info("pointwise BCE targets are label / %s", self.max_label)
        unwrapped = self.accelerator.unwrap_model(self.model)
        if isinstance(unwrapped, PreTrainedModel):  # a cross-encoder (not an LlmReranker)
            mark_for_sentence_transformers(unwrapped)
        if getattr(unwrapped.config, "_attn_implementation", None) == ATTN_CPU:
            use_fast_dropout(unwrapped)  # the CPU kernel's dropout for the hidden states too

    def _infer_max_label(self) -> int:
        data = self.train_dataset
        if isinstance(data, GroupDataset):
            graded = any(max(r.labels_of_pos()) > 1 for r in data.records)
            return MAX_LABEL if graded else 1
        return 1

    def loss_from_scores(self, scores: Tensor, labels: Tensor) -> Tensor:
        if self.loss_name == "listwise":
            return listwise_ce(scores, labels, temperature=self.temperature)
        if self.loss_name == "pairwise":
            return pairwise_ranknet(scores, labels)
        return pointwise_bce(scores, labels, max_label=self.max_label)

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
        if len(chunks) > 1:
            embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
            if embed is not None:
                ids = [c["input_ids"] for c in chunks]
                vectors = embed(torch.cat([i.reshape(-1) for i in ids])).split([i.numel() for i in ids])
                chunks = [{**{k: v for k, v in c.items() if k != "input_ids"},
                           "inputs_embeds": vec.view(*c["input_ids"].shape, -1)} for c, vec in zip(chunks, vectors)]
        outputs = [model(**chunk) for chunk in chunks]
        restore, shape = inputs["restore"], inputs["labels"].shape
        scores = torch.cat([o.logits.view(-1) for o in outputs])[restore].view(shape).float()
        if getattr(outputs[0], "layer_logits", None) is None:
            return scores, None
        layers = torch.cat([o.layer_logits for o in outputs])[restore]
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

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        scores, layer_scores = self.score_groups_by_layer(model, inputs)
        if layer_scores is None:
            loss = self.loss_from_scores(scores, inputs["labels"])
        else:
            loss = self.layerwise_loss(layer_scores, inputs["labels"])
        for chunk in self.padding_chunks(inputs["chunks"]):  # equal pass counts under ZeRO-3
            loss = loss + 0.0 * model(**chunk).logits.sum()
        if model.training:
            self.count_pairs(inputs)
        return (loss, {"scores": scores}) if return_outputs else loss

    # ------------------------------------------------------------------ LLM rerankers: saving and resuming
    def _save(self, output_dir: str | None = None, state_dict=None):
        """A cross-encoder saves as the stock Trainer does; an LlmReranker writes its own folder
        (model or LoRA adapter, tokenizer, prompt settings, layer heads)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if isinstance(unwrapped, PreTrainedModel) or not hasattr(unwrapped, "save_pretrained"):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        unwrapped.save_pretrained(output_dir, state_dict=state_dict)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

