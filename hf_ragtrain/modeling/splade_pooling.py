"""SPLADE max pooling fused with the vocabulary projection: the sparse vector of each text without its
``(N, L, V)`` logits ever held for the backward pass.

A SPLADE encoder scores every vocabulary entry ``v`` at every token ``l`` (the MLM head's logits
``t_l . W_v + b_v``) and keeps ``w_v = max_l log(1 + relu(logit))`` (SPLADE v2). Written plainly,
autograd keeps the logits and two transformed copies, each ``N x L x V`` floats: for 32 passages of
256 tokens over BERT's 30,522 entries, 1 GB apiece. Their gradient is sparse, though: each output
``w_v`` depends on one token (its argmax) and only while it is above 0. So :func:`splade_max_pool`
computes each text's logits a block of tokens at a time and keeps only their max ``(N, V)``; the
backward pass finds the winning token of each active entry again (the logits of those entries
alone) and adds ``dw_v / (1 + x)`` to its state along ``W_v`` (``x`` the winning logit): a few
hundred entries per text once trained, instead of two dense ``N x L x V`` products.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: logits held at once in the forward pass (one text's tokens x vocabulary), and (text, entry) pairs per
#: backward block
BLOCK_ELEMENTS = 1 << 24
BACKWARD_PAIRS = 1 << 17


def splade_logit_pool(logits: Tensor, attention_mask: Tensor) -> Tensor:
    """The plain formula, from full logits ``(N, L, V)`` and a mask ``(N, L)``: ``max_l log1p(relu(logit))``
    over the real tokens, ``(N, V)``. For inputs already holding the logits (and as the reference)."""
    masked = logits * attention_mask.unsqueeze(-1).to(logits.dtype)
    return torch.log1p(torch.relu(masked)).amax(dim=1)


def _compute_dtype(states: Tensor) -> torch.dtype:
    """The dtype the logits are computed in: autocast's where it is on (bf16 on AMX CPUs), else the states'."""
    device = states.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else states.dtype


def _real_tokens(attention_mask: Tensor, i: int) -> Tensor:
    return torch.nonzero(attention_mask[i], as_tuple=True)[0]


class _FusedMaxPool(torch.autograd.Function):
    """Forward: per text, the logits of its real tokens a block at a time, reduced to their max per entry
    (the bias, the same for every token, is added after the max; relu is a clamp at 0). Backward: the
    winning token of each active (text, entry) pair found again from the logits of those entries alone."""

    @staticmethod
    def forward(ctx, states: Tensor, weight: Tensor, bias: Tensor | None, attention_mask: Tensor) -> Tensor:
        n, vocab = states.size(0), weight.size(0)
        dtype = _compute_dtype(states)
        block = max(1, BLOCK_ELEMENTS // vocab)
        best = torch.full((n, vocab), float("-inf"), dtype=torch.promote_types(states.dtype, torch.float32),
                          device=states.device)
        with torch.autocast(states.device.type, enabled=False):
            weight_t = weight.detach().to(dtype).T.contiguous()
            for i in range(n):
                tokens = _real_tokens(attention_mask, i)
                for start in range(0, tokens.numel(), block):
                    logits = states[i, tokens[start:start + block]].to(dtype) @ weight_t
                    best[i] = torch.maximum(best[i], logits.amax(dim=0).to(best.dtype))
            if bias is not None:
                best += bias.detach().to(best.dtype)
            best.clamp_(min=0.0)  # relu; a text without real tokens gets 0 everywhere
        ctx.save_for_backward(states, weight, best, attention_mask)
        ctx.has_bias, ctx.dtype = bias is not None, dtype
        return torch.log1p(best)

    @staticmethod
    def backward(ctx, grad: Tensor):
        states, weight, best, attention_mask = ctx.saved_tensors
        n, length, hidden = states.shape
        coef = grad.to(best.dtype) / (1.0 + best)  # d log1p(x) / dx at the winning logit
        rows, entries = torch.nonzero(best > 0, as_tuple=True)  # relu passes a gradient only above 0
        winner = torch.empty_like(rows)
        with torch.no_grad():
            weight_c = weight.to(ctx.dtype)
            for i in range(n):  # the token that won each active entry, from the logits of those entries
                at = torch.nonzero(rows == i, as_tuple=True)[0]
                if at.numel():
                    tokens = _real_tokens(attention_mask, i)
                    logits = states[i, tokens].to(ctx.dtype) @ weight_c[entries[at]].T  # (tokens, active)
                    winner[at] = tokens[logits.argmax(dim=0)]
        flat_states = states.reshape(n * length, hidden)
        d_states = torch.zeros(n * length, hidden, dtype=best.dtype, device=states.device)
        d_weight = torch.zeros(weight.shape, dtype=best.dtype, device=weight.device)
        for start in range(0, rows.numel(), BACKWARD_PAIRS):
            r, v = rows[start:start + BACKWARD_PAIRS], entries[start:start + BACKWARD_PAIRS]
            token = r * length + winner[start:start + BACKWARD_PAIRS]
            c = coef[r, v].unsqueeze(1)
            d_states.index_add_(0, token, c * weight[v].to(best.dtype))
            d_weight.index_add_(0, v, c * flat_states[token].to(best.dtype))
        d_bias = coef.masked_fill(best <= 0, 0.0).sum(0).to(weight.dtype) if ctx.has_bias else None
        return d_states.view(n, length, hidden).to(states.dtype), d_weight.to(weight.dtype), d_bias, None


def splade_max_pool(states: Tensor, weight: Tensor, bias: Tensor | None, attention_mask: Tensor) -> Tensor:
    """SPLADE v2 vectors ``(N, V)`` (fp32, non-negative) from the MLM head's transformed token states
    ``(N, L, H)``, its decoder ``weight`` ``(V, H)`` and ``bias`` ``(V,)``: the value of
    :func:`splade_logit_pool` on ``states @ weight.T + bias``, with the memory of one block of logits
    and a backward pass over the active entries only."""
    return _FusedMaxPool.apply(states, weight, bias, attention_mask)
