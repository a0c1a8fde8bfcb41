"""Weight-space averaging of a fine-tuned model with the model it started from.

``merged = (1 - s) * trained + s * base`` for every tensor, ``s`` the base model's share. Averaging a
fine-tuned model with its starting point (WiSE-FT; LM-Cocktail does it for embedders) keeps much of
what fine-tuning learned while giving back general ability the fine-tuning lost; the domain
adaptation pipeline uses it for its embedder (the measurements behind its default are in
BENCHMARKS.md).

Both folders must hold the same tensors: every ``*.safetensors`` file of the trained folder (a
sentence-transformers folder keeps its modules' weights in subfolders) is matched with the base
folder's file of the same relative path, or with its ``pytorch_model.bin``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch

WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "pytorch_model.bin"


class MergeError(ValueError):
    """The two folders cannot be averaged (different files, tensors or shapes)."""


def weight_files(folder: str) -> list[str]:
    """The ``*.safetensors`` files under ``folder``, as sorted paths relative to it."""
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files if f.endswith(".safetensors")]
    return sorted(found)


def _load(folder: str, relpath: str) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/relpath``, or of the ``pytorch_model.bin`` beside it when only that exists."""
    from safetensors.torch import load_file

    path = os.path.join(folder, relpath)
    if os.path.isfile(path):
        return load_file(path)
    legacy = os.path.join(os.path.dirname(path), LEGACY_WEIGHTS)
    if os.path.basename(relpath) == WEIGHTS and os.path.isfile(legacy):
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise MergeError(f"{path}: not found; the trained model has {relpath}, so the base model {folder} must hold "
                     f"the same file (is it the model the training started from?)")


def _average(trained: dict[str, torch.Tensor], base: dict[str, torch.Tensor], base_share: float,
             where: str) -> dict[str, torch.Tensor]:
    """``(1 - base_share) * trained + base_share * base`` per tensor, in the trained tensor's dtype."""
    missing = sorted(set(trained) - set(base))
    if missing:
        raise MergeError(f"{where}: the base model has no tensor {missing[0]} ({len(missing)} missing in all); "
                         f"both models must have the same architecture")
    merged = {}
    for name, tensor in trained.items():
        other = base[name]
        if other.shape != tensor.shape:
            raise MergeError(f"{where}: tensor {name} is {tuple(tensor.shape)} in the trained model but "
                             f"{tuple(other.shape)} in the base model")
        if not tensor.is_floating_point():  # integer buffers (position ids): the trained model's
            merged[name] = tensor
            continue
        mixed = tensor.double() * (1 - base_share) + other.double() * base_share
        merged[name] = mixed.to(tensor.dtype).contiguous()
    return merged


def merge_with_base(trained_dir: str, base_dir: str, out_dir: str, base_share: float) -> dict[str, Any]:
    """Write ``out_dir``: a copy of ``trained_dir`` (configuration, tokenizer, modules, card) whose weights
    are averaged with ``base_dir``'s; ``base_share`` in [0, 1] is the base model's share (0: the trained
    weights unchanged). Returns what was averaged: ``{"base_share", "files", "tensors", "parameters"}``."""
    if not 0.0 <= base_share <= 1.0:
        raise MergeError(f"base_share must be between 0 and 1, got {base_share}")
    files = weight_files(trained_dir)
    if not files:
        raise MergeError(f"{trained_dir}: no *.safetensors file to average (save the model with safetensors)")
    merged = {f: _average(_load(trained_dir, f), _load(base_dir, f), base_share, os.path.join(trained_dir, f))
              for f in files}  # everything is checked before anything is written
    from safetensors.torch import save_file

    tmp = out_dir.rstrip(os.sep) + ".merging"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(trained_dir, tmp)
    for f, tensors in merged.items():
        save_file(tensors, os.path.join(tmp, f), metadata={"format": "pt"})
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return {"base_share": base_share, "files": files, "tensors": sum(len(t) for t in merged.values()),
            "parameters": sum(t.numel() for m in merged.values() for t in m.values() if t.is_floating_point())}
