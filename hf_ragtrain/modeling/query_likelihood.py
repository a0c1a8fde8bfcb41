"""Query likelihood: how probable a causal LM finds a query after reading a passage (UPR, Sachan et al. 2022).

:class:`QueryLikelihood` prompts the model with the passage and an instruction to write a question
about it, and scores each (query, passage) pair by the mean log-probability of the query's tokens.
The model is never trained; it needs no labels, which makes it a teacher the domain adaptation can
build for itself (:mod:`hf_ragtrain.runner.adaptation`). Pairs are scored in batches of similar
length under a token budget, and only the query's positions go through the output layer.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["QueryLikelihood", "PASSAGE_PREFIX", "QUESTION_PROMPT"]

PASSAGE_PREFIX = "Passage: "
QUESTION_PROMPT = "\nPlease write a question based on this passage.\nQuestion:"


class QueryLikelihood:
    """Mean log P(query | passage) under ``model`` (a causal LM folder or ``"smollm2"``); passages are cut
    to ``max_passage_tokens`` tokens and queries to ``max_query_tokens``; ``batch_tokens`` bounds the
    padded tokens of one forward pass."""

    def __init__(self, model: str = "smollm2", dtype: str = "bf16", max_passage_tokens: int = 256,
                 max_query_tokens: int = 64, batch_tokens: int = 8192):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..offline import resolve_model_path, smollm2_path

        path = smollm2_path() if model == "smollm2" else resolve_model_path(model)
        if dtype not in ("bf16", "fp32"):
            raise ValueError(f"dtype {dtype!r}: expected 'bf16' or 'fp32'")
        self.path, self.dtype = path, dtype
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
        self.max_passage_tokens, self.max_query_tokens, self.batch_tokens = (max_passage_tokens, max_query_tokens,
                                                                              batch_tokens)
        self._prefix, self._prompt = self._ids(PASSAGE_PREFIX), self._ids(QUESTION_PROMPT)
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def name(self) -> str:
        """What the scores depend on, for a score cache: the model folder, precision and lengths."""
        return (f"query-likelihood:{self.path}:{self.dtype}:passage={self.max_passage_tokens}:"
                f"query={self.max_query_tokens}")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def pair_ids(self, query: str, passage: str) -> tuple[list[int], int]:
        """The token ids of one pair's prompt followed by its query, and where the query starts."""
        context = self._prefix + self._ids(passage)[:self.max_passage_tokens] + self._prompt
        query_ids = self._ids(" " + query.strip())[:self.max_query_tokens]
        if not query_ids:
            raise ValueError(f"query {query!r} has no token to score")
        return context + query_ids, len(context)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """Mean log-probability of ``queries[i]``'s tokens after ``passages[i]``'s prompt, ``(N,)``."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries for {len(passages)} passages")
        pairs = [self.pair_ids(q, p) for q, p in zip(queries, passages)]
        out = np.zeros(len(pairs), dtype=np.float64)
        for batch in _length_batches([len(ids) for ids, _ in pairs], self.batch_tokens):
            out[batch] = self._score_batch([pairs[i] for i in batch])
        return out

    @torch.no_grad()
    def _score_batch(self, pairs: Sequence[tuple[list[int], int]]) -> np.ndarray:
        width = max(len(ids) for ids, _ in pairs)
        ids = torch.full((len(pairs), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(pairs), width), dtype=torch.long)
        for row, (tokens, _) in enumerate(pairs):  # right padding: every pair's positions start at 0
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        hidden = self.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        rows, positions, targets = [], [], []
        for row, (tokens, start) in enumerate(pairs):  # position t predicts token t + 1
            rows += [row] * (len(tokens) - start)
            positions += range(start - 1, len(tokens) - 1)
            targets += tokens[start:]
        logits = self.model.lm_head(hidden[rows, positions]).float()
        picked = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(targets)[:, None]).squeeze(1)
        sums = torch.zeros(len(pairs), dtype=torch.float64).index_add_(0, torch.tensor(rows), picked.double())
        counts = torch.tensor([len(t) - s for t, s in pairs], dtype=torch.float64)
        return (sums / counts).numpy()


def _length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped, longest first, so that each group's count x its longest length stays within
    ``batch_tokens`` (a longer single item is a group of its own). Unlike the collators'
    ``pack_by_length`` it does not split off runs of equal length: the causal LM is always given its
    mask, and that split measured slower here and moved bf16 scores (BENCHMARKS.md)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches
