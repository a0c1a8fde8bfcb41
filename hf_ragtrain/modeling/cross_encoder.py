"""Cross-encoder rerankers: any ``AutoModelForSequenceClassification`` with one output logit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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

    ``attn_implementation=None`` picks :func:`hf_ragtrain.modeling.attention.default_attn_implementation`
    (hf_ragtrain's kernel on CPU, sdpa on GPU).
    """
    from .attention import default_attn_implementation
    from .backbone import load_reporting_new_weights

    model = load_reporting_new_weights(
        AutoModelForSequenceClassification, name_or_path, num_labels=1,
        attn_implementation=attn_implementation or default_attn_implementation(), **kwargs)
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


@torch.inference_mode()
def score_pairs(model: Any, tokenizer: PreTrainedTokenizerBase, queries: Sequence[str],
                docs: Sequence[str], max_length: int = 512, batch_tokens: int = 16384,
                report: ScoreReport | None = None, show_progress: bool = False,
                batch_size: int | None = None, pad_to_multiple_of: int | None = None) -> np.ndarray:
    """Score (query, doc) pairs with a cross-encoder; returns raw logits in input order (``(N,)``, or
    ``(N, C)`` for a model with C output columns).

    ``model`` is a torch model, or a compiled graph with a ``score_batch`` method (an
    :class:`~hf_ragtrain.modeling.openvino_graph.OpenVinoCrossEncoder`). Pairs are sorted by token
    length, so short pairs do not pay for long ones, and cut into batches of ``batch_size`` pairs or,
    without it, packed into batches of at most ``batch_tokens`` padded tokens. A model with its own
    ``tokenize_pairs`` (an :class:`~hf_ragtrain.LlmReranker`) writes the pairs into its prompt itself.
    Batch widths are rounded up to ``pad_to_multiple_of`` tokens (``None``: the graph's own multiple;
    for torch, 64 when the model computes in bf16 on CPU, where oneDNN keeps kernels and packed weights
    per shape (see :func:`hf_ragtrain.hardware.default_pad_to_multiple_of`), else no rounding; 0: none).
    """
    if len(queries) != len(docs):
        raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
    if not len(docs):
        return np.zeros(0, dtype=np.float32)
    forward, pad_default, restore = _batch_scorer(model)
    if pad_to_multiple_of is None:
        pad_to_multiple_of = pad_default
    own = getattr(model, "tokenize_pairs", None)
    enc, n_cut = own(queries, docs, max_length) if own else tokenize_pairs(tokenizer, queries, docs, max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]
    if batch_size:
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        batches = pack_by_length(lengths, batch_tokens)
    out: np.ndarray | None = None
    progress = tqdm(total=len(docs), desc="scoring pairs", unit="pair", disable=not show_progress)
    for idx in batches:
        logits = forward(pad_micro_batches(tokenizer, enc, [idx], pad_to_multiple_of or None)[0])
        if out is None:
            out = np.empty((len(docs), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
        progress.update(len(idx))
    progress.close()
    if report is not None:
        report.pairs += len(docs)
        report.truncated += n_cut
    restore()
    return out[:, 0] if out.shape[1] == 1 else out


def _batch_scorer(model: Any) -> tuple[Callable[[dict], np.ndarray], int | None, Callable[[], None]]:
    """(padded batch -> float32 logits ``(B, C)``, default padding multiple, undo eval mode) for a
    torch model or a compiled graph."""
    if hasattr(model, "score_batch"):
        return model.score_batch, model.pad_to_multiple_of, lambda: None
    from ..hardware import CPU_BF16_PAD_MULTIPLE, bf16_on_cpu

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def forward(batch: dict) -> np.ndarray:
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        return logits.float().reshape(len(batch["input_ids"]), -1).cpu().numpy()

    return forward, CPU_BF16_PAD_MULTIPLE if bf16_on_cpu(model) else None, lambda: model.train(was_training)
