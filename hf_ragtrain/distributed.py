"""Collectives for cross-device negatives (gather embeddings while keeping the local gradient), what
FSDP needs to know about a model, loading frozen helper models outside ZeRO-3, and a clean end for
torchrun workers."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextlib.contextmanager
def outside_zero3() -> Iterator[None]:
    """Load models inside this block whole, on every process, even while a ZeRO-3 run is set up.

    transformers partitions every model built while ZeRO-3 ``TrainingArguments`` exist (``zero.Init``);
    a frozen helper (a first stage, an embedder that mines) is never given to DeepSpeed, so its
    partitioned weights would stay empty placeholders ("'weight' must be 2-D" at its first forward).
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # transformers without the DeepSpeed integration: nothing is partitioned
        yield
        return
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def end_distributed(trainer: Any = None) -> None:
    """Destroy the default process group, if any, so torchrun workers exit cleanly.

    Without it gloo's threads are still alive at interpreter exit and the process aborts
    ("terminate called without an active exception"), failing the torchrun job after training.
    ``trainer`` (a Trainer that ran under the group) has its DDP / DeepSpeed wrappers released
    first: they hold the group too, and a group kept alive that way aborts the same way.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if trainer is not None:
        import gc

        trainer.accelerator.free_memory()
        trainer.model_wrapped = trainer.model
        trainer.deepspeed = None
        gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def start_process_group(args) -> None:
    """Start the process group a launcher (torchrun) asked for, before any model is loaded: DeepSpeed
    ZeRO-3 builds the model already sharded (``zero.Init``) and must know the world size then. On
    CPU (``use_cpu``) transformers starts only torch's gloo group, so DeepSpeed's own comm is started
    over it here; on GPUs accelerate starts both."""
    _ = args.device  # transformers' device setup starts torch.distributed under a launcher
    if args.deepspeed and args.use_cpu and dist.is_available() and dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend())


def all_processes_ok(ok: bool, device: torch.device | str = "cpu") -> bool:
    """Whether ``ok`` holds on every process (a collective: every process must call it); the value
    itself with one process."""
    if world_size() == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.long, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gather_with_local_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` ``(n_r, ...)`` from every process in rank order.

    The other processes' rows are constants; this process's rows are ``t`` itself, so gradients flow
    into the local slice only. Processes may hold different row counts (a last, smaller batch):
    rows are padded for the collective and cut again.
    """
    if world_size() == 1:
        return t
    rank = dist.get_rank()
    count = torch.tensor([t.size(0)], device=t.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = t.detach()
    if t.size(0) < max(sizes):
        padded = torch.cat([padded, padded.new_zeros(max(sizes) - t.size(0), *t.shape[1:])])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    parts = [part[:n] for part, n in zip(parts, sizes)]
    parts[rank] = t
    return torch.cat(parts)


def scale_gradient(loss: Tensor, factor: float) -> Tensor:
    """``loss`` with its value unchanged and its gradient multiplied by ``factor``.

    With cross-device negatives every process computes the same global loss ``L`` but holds the
    gradient of its own slice only; data-parallel averaging then yields ``grad L / world_size``.
    Scaling the local gradient by ``world_size`` makes the update equal to a single-process run
    over the global batch, while the logged loss stays ``L``.
    """
    if factor == 1:
        return loss
    return loss + (factor - 1) * (loss - loss.detach())


def fsdp_layer_classes(model: nn.Module) -> list[str]:
    """Class names of the repeated blocks FSDP should shard one by one (its transformer wrap policy).

    The first ``_no_split_modules`` a submodule declares (transformers declares them for most
    decoders, e.g. ``LlamaDecoderLayer``), else the class of the longest ``nn.ModuleList`` of
    modules of one class (BERT's ``encoder.layer`` of ``BertLayer``). Read from the model, so
    one FSDP config serves every architecture.
    """
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return list(names)
    longest: nn.ModuleList | None = None
    for module in model.modules():
        if (isinstance(module, nn.ModuleList) and len(module) > 1 and len({type(m) for m in module}) == 1
                and (longest is None or len(module) > len(longest))):
            longest = module
    return [type(longest[0]).__name__] if longest is not None else []


def prepare_for_fsdp(model: nn.Module) -> list[str]:
    """Give ``model`` the ``_no_split_modules`` accelerate's FSDP wrap policy reads when the FSDP
    config names no ``transformer_layer_cls_to_wrap`` (our wrappers, BiEncoder, ColbertEncoder and
    LlmReranker, have none of their own; BERT declares none). Returns the class names."""
    names = list(getattr(model, "_no_split_modules", None) or fsdp_layer_classes(model))
    if names:
        model._no_split_modules = names
    return names
