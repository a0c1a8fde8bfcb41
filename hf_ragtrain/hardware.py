"""What the hardware decides: the device, whether bf16 is fast here, autocast, and the batching
defaults that follow from them. Every such choice in the package is made here, once.

Measured reasons for the defaults are in BENCHMARKS.md; in short, on a 2-core CPU with AVX512-BF16
or AMX, bf16 autocast trained MiniLM 1.8x and scored pairs 2.1x faster than fp32; 2048 padded
tokens per forward pass was the fastest micro-batch; and oneDNN's per-shape kernel cache makes
bf16 matmuls on CPU want widths rounded to 64 tokens.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, ContextManager

import torch

#: Batch widths are rounded up to this many tokens for bf16 on CPU (see :func:`default_pad_to_multiple_of`).
CPU_BF16_PAD_MULTIPLE = 64
#: Padded tokens per forward pass on CPU (MiniLM steps: 6.1 s vs 9 s for one 64 x 256 pass).
CPU_MICRO_BATCH_TOKENS = 2048

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def has_gpu() -> bool:
    """Whether a CUDA device is present."""
    return torch.cuda.is_available()


def name_deepspeed_accelerator() -> None:
    """On a machine without a GPU, tell DeepSpeed it is the CPU (``DS_ACCELERATOR=cpu``) before it is
    imported, as it would find itself; otherwise it warns "Setting accelerator to CPU" on every run.
    A value the user set is kept."""
    if not has_gpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if has_gpu() else "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX-BF16 or AVX512-BF16), where bf16
    matrix products run several times faster than fp32 ones (benchmarks/bench_rerank_inference.py)."""
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        found = caps()
        return bool(found.get("amx_bf16") or found.get("avx512_bf16"))
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


def bf16_is_fast() -> bool:
    """Whether bf16 autocast runs on dedicated hardware here: a GPU with bf16 support, or a CPU with
    AVX512-BF16 / AMX."""
    if has_gpu():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def resolve_dtype(device: torch.device, dtype: Any = None) -> torch.dtype:
    """``dtype`` as a torch dtype (``"bf16"``, ``"fp16"``, ``"fp32"`` or a dtype). ``None``: the half
    precision the device computes natively, else fp32: bf16 on GPUs that have it and on CPUs with
    AMX-BF16 or AVX512-BF16, fp16 on older GPUs, fp32 on other CPUs."""
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch dtype, got {dtype!r}")
        return DTYPES[dtype]
    return dtype


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to ``dtype`` on ``device``; nothing for fp32 or ``None``."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def model_autocast(model: torch.nn.Module, bf16: bool) -> ContextManager:
    """bf16 autocast on the device of ``model``'s weights when ``bf16``, else nothing."""
    return autocast(next(model.parameters()).device, torch.bfloat16 if bf16 else None)


def bf16_on_cpu(model: torch.nn.Module) -> bool:
    """Whether ``model`` runs its matmuls in bf16 on the CPU here: bf16 weights, or fp32 weights under
    an enabled CPU bf16 autocast."""
    param = next(model.parameters())
    if param.device.type != "cpu":
        return False
    return param.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                             and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def default_micro_batch_tokens() -> int | None:
    """Padded tokens per forward pass: 2048 on CPU, one pass on GPU."""
    return None if has_gpu() else CPU_MICRO_BATCH_TOKENS


def default_pad_to_multiple_of(bf16: bool) -> int | None:
    """64 for bf16 training on CPU, else ``None`` (each micro-batch padded to its longest pair).

    torch runs bf16 matmuls on CPU through oneDNN, which JIT-compiles a kernel and packs a copy of
    the weights for every new GEMM shape and keeps them in a cache of 1024 entries. Micro-batches
    padded to their longest pair bring new shapes at nearly every step, so resident memory climbs
    for hundreds of steps (MiniLM on SciFact groups: peak 2.7 GB at step 1, 4.4 GB at step 60 and
    still growing). Rounding lengths up to a multiple of 64 leaves a few dozen shapes: the peak
    stopped moving after step 30 (3.5 GB) at the same seconds per step. fp32 kernels keep no
    per-shape state, and GPUs have no such cache."""
    return CPU_BF16_PAD_MULTIPLE if bf16 and not has_gpu() else None


def collator_batching(micro_batch_tokens: int | None, pad_to_multiple_of: int | None, bf16: bool) -> dict[str, Any]:
    """``micro_batch_tokens`` and ``pad_to_multiple_of`` for a collator: ``None`` takes the defaults
    above, 0 turns the option off, any other number is used as given."""
    def pick(value: int | None, default: int | None) -> int | None:
        return default if value is None else value or None

    return {"micro_batch_tokens": pick(micro_batch_tokens, default_micro_batch_tokens()),
            "pad_to_multiple_of": pick(pad_to_multiple_of, default_pad_to_multiple_of(bf16))}


def cpu_description() -> str:
    """The CPU's model name and whether it multiplies bf16 in hardware, e.g. ``Intel Xeon ... (AMX-BF16,
    AVX512-BF16), 2 cores``: benchmark figures differ between CPUs with and without these units."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    units = [label for flag, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if flag in flags]
    return f"{name} ({', '.join(units) or 'no AMX-BF16 or AVX512-BF16'}), {os.cpu_count()} cores"


def machine_description() -> str:
    """What a run's speed depends on, for cards and reports: the GPU(s) when there are any, else the CPU
    (:func:`cpu_description`)."""
    if has_gpu():
        count = torch.cuda.device_count()
        return f"{count} x {torch.cuda.get_device_name(0)}" if count > 1 else torch.cuda.get_device_name(0)
    return cpu_description()
