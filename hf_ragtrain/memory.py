"""How much memory a run took: this process's peak, for the recipe summary, ``eval_results.json``
and the model card (BENCHMARKS.md compares it across trainers and with sentence-transformers)."""

from __future__ import annotations

import sys

import torch

try:
    import resource
except ImportError:  # not on Windows
    resource = None


def peak_memory() -> dict[str, float]:
    """This process's peak memory so far, in MB: ``resident_mb`` (the high-water mark of its resident
    set) and, when it used a CUDA device, ``gpu_mb`` (``torch.cuda.max_memory_allocated`` of the current
    device). Empty where neither can be read.

    On Linux the resident peak is the kernel's ``VmHWM`` of this program: ``getrusage``'s ``ru_maxrss``
    survives ``exec``, so in a process started from a large one (a recipe run by the pipeline, or by
    pytest) it reports the parent's size at the fork instead of this program's peak."""
    out: dict[str, float] = {}
    resident = _vm_hwm_mb()
    if resident is None and resource is not None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
        resident = peak / (2**20 if sys.platform == "darwin" else 2**10)
    if resident is not None:
        out["resident_mb"] = resident
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _vm_hwm_mb() -> float | None:
    """``VmHWM`` from ``/proc/self/status`` in MB, or ``None`` where there is no such file."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def describe_peak(peak: dict[str, float], what: str = "training") -> str:
    """One line for a summary or a card, e.g. ``Peak memory (training): 2.71 GB resident``."""
    parts = [f"{peak['resident_mb'] / 1024:.2f} GB resident"] if "resident_mb" in peak else []
    if "gpu_mb" in peak:
        parts.append(f"{peak['gpu_mb'] / 1024:.2f} GB allocated on the GPU")
    return f"Peak memory ({what}, this process): " + (", ".join(parts) or "not measured on this platform")
