"""Cross-encoder rerankers: any ``AutoModelForSequenceClassification`` with one output logit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..data.collators import pack_by_length, pad_micro_batches, tokenize_pairs

logger = logging.getLogger(__name__)

# Saved into config.json so that sentence-transformers' CrossEncoder(path).predict returns the raw
# logit, the same number as AutoModelForSequenceClassification and our own scoring.
ST_CONFIG = {"activation_fn": "torch.nn.modules.linear.Identity"}


def load_cross_encoder(name_or_path: str, attn_implementation: str | None = None,
                       **kwargs) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint as a 1-logit cross-encoder (a fresh head if it has none) and its tokenizer.

    ``attn_implementation=None`` picks :func:`hf_ragtrain.arguments.default_attn_implementation`
    (eager on CPU, sdpa on GPU).
    """
    from ..arguments import default_attn_implementation

    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path, num_labels=1, attn_implementation=attn_implementation or default_attn_implementation(),
        **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    mark_for_sentence_transformers(model)
    return model, tokenizer


def mark_for_sentence_transformers(model: PreTrainedModel) -> None:
    """Record in the config how sentence-transformers should read the logit (identity, no sigmoid)."""
    model.config.sentence_transformers = dict(ST_CONFIG)


@dataclass
class ScoreReport:
    pairs: int = 0
    truncated: int = 0


@torch.no_grad()
def score_pairs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, queries: Sequence[str],
                docs: Sequence[str], max_length: int = 512, batch_tokens: int = 16384,
                report: ScoreReport | None = None, show_progress: bool = False) -> np.ndarray:
    """Score (query, doc) pairs with a cross-encoder; returns raw logits in input order.

    Pairs are sorted by token length and packed into batches of at most ``batch_tokens`` padded
    tokens, so short pairs do not pay for long ones. A model with its own ``tokenize_pairs`` (an
    :class:`~hf_ragtrain.LlmReranker`) writes the pairs into its prompt itself.
    """
    if len(queries) != len(docs):
        raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
    if not len(docs):
        return np.zeros(0, dtype=np.float32)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    own = getattr(model, "tokenize_pairs", None)
    enc, n_cut = own(queries, docs, max_length) if own else tokenize_pairs(tokenizer, queries, docs, max_length)
    batches = pack_by_length([len(ids) for ids in enc["input_ids"]], batch_tokens)
    out = np.empty(len(docs), dtype=np.float32)
    progress = tqdm(total=len(docs), desc="scoring pairs", unit="pair", disable=not show_progress)
    for idx in batches:
        chunk = {k: v.to(device) for k, v in pad_micro_batches(tokenizer, enc, [idx])[0].items()}
        logits = model(**chunk).logits.view(-1).float()
        out[idx] = logits.cpu().numpy()
        progress.update(len(idx))
    progress.close()
    if report is not None:
        report.pairs += len(docs)
        report.truncated += n_cut
    if was_training:
        model.train()
    return out
