"""GradCache (Gao et al., 2021): a step over many micro-batches with the memory of one.

A loss that couples every micro-batch of a batch (in-batch negatives over all embeddings, a listwise
loss over a query's documents spread over several length-sorted micro-batches) needs all their
outputs before its backward, so a plain step keeps every micro-batch's activations. GradCache runs
the step in three passes:

1. every micro-batch forward without a graph, recording the random state (dropout) before each;
2. the loss on those outputs and its gradient w.r.t. them (small tensors: embeddings or scores);
3. per micro-batch, the random state replayed, forward again with a graph, and back-propagate
   ``sum(output * its cached gradient)``.

The parameter gradients equal the plain step's (tests/test_contrastive_trainer.py,
tests/test_rerank_memory.py), for one more forward pass. Under DDP all but the last micro-batch run
in ``no_sync``; under DeepSpeed they are gradient-accumulation micro-steps and the last one is the
boundary (ZeRO reduces at every micro-step, so every process runs the same number of them: the
caller pads with zero-weight micro-batches, ``RetrievalTrainer.padding_chunks``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

#: A micro-batch's outputs that the loss reads; those that are not floating point (masks) get no gradient.
Outputs = tuple[Tensor, ...]


class RngState:
    """The random state before a forward, so a re-run draws the same dropout masks."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    @contextlib.contextmanager
    def replay(self):
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def grad_cache_step(trainer: Any, model: torch.nn.Module, chunks: Sequence[Any], n_real: int,
                    forward: Callable[[torch.nn.Module, Any], Outputs],
                    loss_of: Callable[[list[Outputs]], Tensor], device: torch.device) -> Tensor:
    """One GradCache training step of ``trainer`` (a ``transformers.Trainer``): ``forward(model, chunk)``
    gives a micro-batch's outputs (a chunk is whatever ``forward`` reads: a tokenizer batch, or a kind
    and a batch); ``loss_of(outputs of the first n_real chunks)`` the batch's loss
    (the chunks after ``n_real`` are zero-weight padding passes). Returns the loss, detached, divided
    by the gradient-accumulation steps as the Trainer's own step does."""
    from accelerate.utils import DistributedType

    states, cached = [], []
    with torch.no_grad(), trainer.compute_loss_context_manager():
        for chunk in chunks:
            states.append(RngState(device))
            cached.append(tuple(forward(model, chunk)))
    leaves = [tuple(t.detach().requires_grad_() if t.is_floating_point() else t for t in outputs)
              for outputs in cached]
    with trainer.compute_loss_context_manager():
        loss = loss_of(leaves[:n_real])
    loss = loss / trainer.current_gradient_accumulation_steps
    real = [t for outputs in leaves[:n_real] for t in outputs if t.requires_grad]
    grads = iter(torch.autograd.grad(loss, real, allow_unused=True))
    chunk_grads = [tuple(_or_zeros(next(grads), t) if t.requires_grad else None for t in outputs)
                   for outputs in leaves[:n_real]]
    chunk_grads += [tuple(torch.zeros_like(t) if t.requires_grad else None for t in outputs)
                    for outputs in leaves[n_real:]]
    del cached, leaves
    accelerator = trainer.accelerator
    kwargs = {"scale_wrt_gas": False} if accelerator.distributed_type == DistributedType.DEEPSPEED else {}
    state = accelerator.gradient_state
    sync = state.sync_gradients
    for i, (chunk, rng, grad) in enumerate(zip(chunks, states, chunk_grads)):
        last = i == len(chunks) - 1
        state._set_sync_gradients(sync and last)
        no_sync = (accelerator.no_sync(model) if not last and accelerator.distributed_type != DistributedType.DEEPSPEED
                   else contextlib.nullcontext())
        with no_sync, rng.replay(), trainer.compute_loss_context_manager():
            outputs = forward(model, chunk)
            surrogate = sum((o * g).sum() for o, g in zip(outputs, grad) if g is not None and o.requires_grad)
            if not torch.is_tensor(surrogate) and not last:  # outputs that are constants of the model (inference-free
                continue                                      # SPLADE queries): nothing to back-propagate
            accelerator.backward(surrogate, **kwargs)
    state._set_sync_gradients(sync)
    return loss.detach()


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    """An output the loss did not read has no gradient: zeros, so it still takes part in the backward."""
    return torch.zeros_like(like) if grad is None else grad
