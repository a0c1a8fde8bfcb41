"""Hardware efficiency: the useful FLOPs of a training step, and the GEMM FLOP/s torch reaches here.

Useful FLOPs count the matrix products a transformer must do for the real (unpadded) tokens:
for a sequence of ``s`` tokens through ``L`` layers of width ``d``,

    forward  = 2 * P_token * s + 4 * L * d * s**2 + 2 * P_seq
    training = 3 * forward          (backward = 2 x forward: gradients of inputs and of weights)

where ``P_token`` is the parameter count of the weight matrices applied to every token (attention
projections and feed-forward layers; not the embedding tables, which are lookups, nor the norms
and biases), ``P_seq`` that of the ones applied once per sequence (a pooler and a scoring head),
and ``4 * L * d * s**2`` the attention products (Q K^T and the weighted sum of V). Padding
tokens are not counted: work spent on them is waste, which is what the efficiency figure shows.
"""

from __future__ import annotations

import time


def matmul_parameters(model) -> tuple[int, int]:
    """(per-token, per-sequence) parameter counts of a BERT-style encoder's 2-D weight matrices."""
    import torch

    per_token = per_sequence = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        n = module.weight.numel()
        if ".encoder." in f".{name}." or name.startswith("encoder."):
            per_token += n
        else:  # pooler, classifier, projection heads: once per sequence
            per_sequence += n
    return per_token, per_sequence


def training_flops(lengths, per_token: int, per_sequence: int, layers: int, width: int) -> float:
    """Useful forward + backward FLOPs for sequences of the given real lengths (formula in the module doc)."""
    forward = sum(2 * per_token * s + 4 * layers * width * s * s + 2 * per_sequence for s in lengths)
    return 3.0 * forward


def cross_encoder_lengths(tokenizer, groups: list[dict], max_length: int) -> list[int]:
    """Real token counts of every (query, document) pair in the groups, after cutting at ``max_length``."""
    queries = [g["query"] for g in groups for _ in g["docs"]]
    docs = [d for g in groups for d in g["docs"]]
    enc = tokenizer(queries, docs, truncation=False, add_special_tokens=True, verbose=False)
    return [min(len(ids), max_length) for ids in enc["input_ids"]]


def gemm_flops_per_s(dtype_name: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a square ``size`` x ``size`` matmul in ``dtype_name`` on the CPU (2 n^3 per product)."""
    import torch

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    torch.matmul(a, b)  # warm-up: thread pool, kernel choice
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best
