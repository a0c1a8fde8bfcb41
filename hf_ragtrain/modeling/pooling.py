"""Pooling of token states into one vector per text, independent of the padding side."""

from __future__ import annotations

import torch
from torch import Tensor

POOLING_MODES = ("cls", "mean", "last_token")


def pool(hidden: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Pool ``hidden`` ``(N, L, H)`` over the tokens where ``attention_mask`` ``(N, L)`` is 1.

    - ``cls``: the first real token (position 0 with right padding, as in BERT);
    - ``mean``: the average of the real tokens;
    - ``last_token``: the last real token, found from the mask, so it is right for left padding
      (real tokens end at position L-1) and for right padding (they end before the padding).
    """
    mask = attention_mask.to(hidden.dtype)
    rows = torch.arange(hidden.size(0), device=hidden.device)
    if mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    if mode == "cls":
        first = attention_mask.long().argmax(dim=1)  # first position holding a 1
        return hidden[rows, first]
    if mode == "last_token":
        length = attention_mask.size(1)
        last = length - 1 - attention_mask.long().flip(1).argmax(dim=1)  # last position holding a 1
        return hidden[rows, last]
    raise ValueError(f"unknown pooling {mode!r}; choose one of {POOLING_MODES}")
