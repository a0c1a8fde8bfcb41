"""Group steps: a reranker's batch stepped set of whole groups by set, each set's loss back-propagated at once.

A reranker's loss is a mean over its query groups (every loss of :mod:`hf_ragtrain.losses` that a
:class:`~hf_ragtrain.trainers.rerank.RerankTrainer` trains with, when every group counts in it), so the
batch's gradient is the sum over sets of groups of ``(groups in the set / B) x`` the set's own gradient.
When the collator packs micro-batches of whole groups (``RerankCollator(whole_groups=True)``), a step
can therefore run forward and backward one micro-batch at a time: the memory of one micro-batch, as
GradCache (:mod:`hf_ragtrain.trainers.grad_cache`) has, without its second forward pass.

The token embeddings of every micro-batch are looked up in one call before the first set and each set
runs on a detached copy of its rows; the rows' gradients go back through that one lookup with the last
set's backward, so the embedding matrix gets one dense gradient per step, not one per set. The whole
step runs in one autocast region, backward passes included, so bf16 autocast casts each weight once per
step rather than once per set (its cache lives as long as the region). Under DDP
every set but the last runs in ``no_sync``. The parameter gradients equal the plain step's
(tests/test_rerank_memory.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor

#: The collated keys that hold one row per group.
GROUP_ROWS = ("labels", "teacher_scores", "first_stage_scores")
#: The collated keys that hold one text per pair, in group order.
PAIR_TEXTS = ("pair_queries", "pair_docs")


def group_inputs(inputs: dict[str, Any], groups: Tensor, local_restore: Tensor) -> dict[str, Any]:
    """The collated batch cut to ``groups`` ``(n,)``, whose pairs' outputs come in the order that
    ``local_restore`` ``(n, G)`` puts back in group order."""
    size = inputs["labels"].size(1)
    out = {k: v for k, v in inputs.items() if k not in (*GROUP_ROWS, *PAIR_TEXTS, "chunks", "group_sets")}
    out["restore"] = local_restore.reshape(-1)
    for key in GROUP_ROWS:
        if key in inputs:
            out[key] = inputs[key][groups.to(inputs[key].device)]
    for key in PAIR_TEXTS:
        if key in inputs:
            out[key] = [inputs[key][g * size + j] for g in groups.tolist() for j in range(size)]
    return out


def lookup_embeddings(model: torch.nn.Module, chunks: list[dict[str, Any]]) -> list[Tensor] | None:
    """Each micro-batch's token embeddings ``(b, L, d)`` from one lookup (with its graph), or ``None``
    when the model exposes no input embeddings."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embed is None:
        return None
    ids = [c["input_ids"] for c in chunks]
    vectors = embed(torch.cat([i.reshape(-1) for i in ids])).split([i.numel() for i in ids])
    return [v.view(*i.shape, -1) for v, i in zip(vectors, ids)]


def with_embeddings(chunk: dict[str, Any], vectors: Tensor) -> dict[str, Any]:
    """The micro-batch ``chunk`` with its token embeddings ``vectors`` ``(b, L, d)`` in place of its ``input_ids``."""
    return {**{k: v for k, v in chunk.items() if k != "input_ids"}, "inputs_embeds": vectors}


def group_step(trainer: Any, model: torch.nn.Module, inputs: dict[str, Any],
               forward: Callable[[torch.nn.Module, dict[str, Any]], tuple[Tensor, ...]]) -> Tensor:
    """One training step of ``trainer`` (a :class:`~hf_ragtrain.trainers.rerank.RerankTrainer`) over
    ``inputs["group_sets"]``, ``forward(model, chunk)`` giving a micro-batch's outputs. Returns the
    batch's loss, detached, divided by the gradient-accumulation steps as the Trainer's own step does."""
    chunks = inputs["chunks"]
    scale = trainer.loss_weight(inputs) / trainer.current_gradient_accumulation_steps
    with trainer.compute_loss_context_manager():  # one autocast region: weights cast to bf16 once per step
        return _sets_forward_backward(trainer, model, inputs, forward, lookup_embeddings(model, chunks), scale)


def _sets_forward_backward(trainer: Any, model: torch.nn.Module, inputs: dict[str, Any],
                           forward: Callable[[torch.nn.Module, dict[str, Any]], tuple[Tensor, ...]],
                           vectors: list[Tensor] | None, scale: float) -> Tensor:
    """The sets of :func:`group_step` one by one: forward, loss, backward; returns the summed loss."""
    accelerator = trainer.accelerator
    chunks, sets, labels = inputs["chunks"], inputs["group_sets"], inputs["labels"]
    position = inputs["restore"].view(labels.shape)
    state = accelerator.gradient_state
    sync = state.sync_gradients
    held: list[tuple[Tensor, Tensor]] = []  # earlier sets' embedding rows and the gradient their copy got
    total, first_chunk, first_pair = torch.zeros((), device=labels.device), 0, 0
    for k, (groups, n_chunks) in enumerate(sets):
        last = k == len(sets) - 1
        part = list(range(first_chunk, first_chunk + n_chunks))
        rows = None if vectors is None else [vectors[i] if last else vectors[i].detach().requires_grad_() for i in part]
        batches = [chunks[i] for i in part] if rows is None else [with_embeddings(chunks[i], r)
                                                                  for i, r in zip(part, rows)]
        state._set_sync_gradients(sync and last)
        no_sync = accelerator.no_sync(model) if not last else contextlib.nullcontext()
        with no_sync:
            sub = group_inputs(inputs, groups, position[groups.to(position.device)] - first_pair)
            outputs = [forward(model, b) for b in batches]
            loss = trainer.group_loss(*trainer.scores_from_outputs(outputs, sub), sub)[0]
            loss = loss * (len(groups) / labels.size(0)) * scale
            backward = loss + sum((v * g).sum() for v, g in held) if last else loss
            accelerator.backward(backward)
        if not last and rows is not None:
            held += [(vectors[i], r.grad) for i, r in zip(part, rows)]
        total = total + loss.detach()
        first_chunk += n_chunks
        first_pair += sum(int(chunks[i]["input_ids"].size(0)) for i in part)
    state._set_sync_gradients(sync)
    return total
