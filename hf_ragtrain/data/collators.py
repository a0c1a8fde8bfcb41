"""Collators that turn groups from :class:`GroupDataset` into model inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase


def pack_by_length(lengths: Sequence[int], max_tokens: int | None, min_run: int = 8) -> list[list[int]]:
    """Split indices, sorted by length, into micro-batches whose padded size stays within ``max_tokens``.

    Padded size is ``len(batch) * longest``. Sorting first means each micro-batch is padded only to
    the length of its own longest member. Runs of at least ``min_run`` equal lengths (typically the
    pairs truncated to ``max_length``) get micro-batches of their own: with no padding the model
    skips the attention mask, which measured 1.8x faster for MiniLM on CPU. ``max_tokens=None``
    packs without a size bound.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    runs: list[list[int]] = []  # maximal groups of equal length, ascending
    for i in order:
        if runs and lengths[runs[-1][0]] == lengths[i]:
            runs[-1].append(i)
        else:
            runs.append([i])
    batches: list[list[int]] = []
    current: list[int] = []

    def add(i: int) -> None:
        nonlocal current
        if current and max_tokens and (len(current) + 1) * lengths[i] > max_tokens:
            batches.append(current)
            current = []
        current.append(i)

    for run in runs:
        if len(run) >= min_run:
            if current:
                batches.append(current)
                current = []
            for i in run:
                add(i)
            batches.append(current)
            current = []
        else:
            for i in run:  # ascending, so lengths[i] is the longest of current + [i]
                add(i)
    if current:
        batches.append(current)
    return [b for b in batches if b]


def pack_groups(lengths: Sequence[int], group_size: int,
                max_tokens: int | None) -> list[tuple[list[int], list[list[int]]]]:
    """Sets of whole groups for steps that back-propagate each micro-batch's own loss (a reranker's
    group steps, :mod:`hf_ragtrain.trainers.group_steps`): ``(groups, micro-batches)`` per set, the
    pairs of group ``g`` being ``g * group_size ...``. Groups are taken longest-first and a set grows
    while its padded size (pairs x longest pair) stays within ``max_tokens``; a group larger than that
    is a set of its own, cut into micro-batches by :func:`pack_by_length`. ``None``: one set."""
    n_groups = len(lengths) // group_size

    def pairs(groups: list[int]) -> list[int]:
        return [i for g in groups for i in range(g * group_size, (g + 1) * group_size)]

    def padded(groups: list[int]) -> int:
        return len(groups) * group_size * max(lengths[i] for i in pairs(groups))

    order = sorted(range(n_groups), key=lambda g: -padded([g]))
    sets: list[list[int]] = []
    for g in order:
        grown = sets[-1] + [g] if sets else [g]
        if sets and (max_tokens is None or padded(grown) <= max_tokens):
            sets[-1] = grown
        else:
            sets.append([g])
    out = []
    for groups in sets:
        members = pairs(groups)
        out.append((groups, [[members[j] for j in batch]
                             for batch in pack_by_length([lengths[i] for i in members], max_tokens)]))
    return out


def tokenize_pairs(tokenizer: PreTrainedTokenizerBase, queries: Sequence[str], docs: Sequence[str],
                   max_length: int) -> tuple[dict[str, list[list[int]]], int]:
    """Tokenise (query, document) pairs without padding, cut to ``max_length`` tokens.

    Returns the encodings and how many pairs were longer than ``max_length`` and got truncated
    (the longer text of a pair is cut first). Counting them is what keeps truncation from being silent.
    A fast tokenizer tokenises once (its encodings record what was cut off); a slow one tokenises
    to ``max_length + 1`` and again, cut, only the pairs that were too long.
    """
    enc = tokenizer(list(queries), list(docs), truncation="longest_first", max_length=max_length,
                    padding=False, return_attention_mask=True)
    encodings = getattr(enc, "encodings", None)
    if encodings is not None:
        return {k: enc[k] for k in enc.keys()}, sum(bool(e.overflowing) for e in encodings)
    enc = tokenizer(list(queries), list(docs), truncation="longest_first", max_length=max_length + 1,
                    padding=False, return_attention_mask=True)
    too_long = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_length]
    if too_long:
        cut = tokenizer([queries[i] for i in too_long], [docs[i] for i in too_long], truncation="longest_first",
                        max_length=max_length, padding=False, return_attention_mask=True)
        for key in enc.keys():
            for j, i in enumerate(too_long):
                enc[key][i] = cut[key][j]
    return {k: enc[k] for k in enc.keys()}, len(too_long)


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                   max_length: int) -> tuple[dict[str, list[list[int]]], int]:
    """Tokenise single texts without padding, cut to ``max_length`` tokens (special tokens included).

    Returns the encodings and how many texts were cut. Needs a fast tokenizer, whose encodings
    record what was cut off.
    """
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                    return_attention_mask=True, return_overflowing_tokens=False)
    encodings = getattr(enc, "encodings", None)
    if encodings is None:
        raise TypeError(f"{type(tokenizer).__name__} is a slow tokenizer; embedding models need a fast one")
    return {k: enc[k] for k in enc.keys()}, sum(bool(e.overflowing) for e in encodings)


def pad_micro_batches(tokenizer: PreTrainedTokenizerBase, enc: dict[str, list[list[int]]],
                      batches: list[list[int]], pad_to_multiple_of: int | None = None) -> list[dict[str, torch.Tensor]]:
    chunks = []
    for idx in batches:
        features = [{k: enc[k][i] for k in enc} for i in idx]
        chunks.append(dict(tokenizer.pad(features, padding=True, pad_to_multiple_of=pad_to_multiple_of,
                                         return_tensors="pt")))
    return chunks


def dataset_of(features: list[dict[str, Any]]) -> dict[str, int]:
    """``{"dataset": k}`` when the features come from part ``k`` of a
    :class:`~hf_ragtrain.data.multi_dataset.MultiDataset` (the trainer weighs the batch's loss by it), else
    ``{}``; a batch mixing parts is an error (its sampler must keep each batch within one part)."""
    parts = {f["dataset"] for f in features if "dataset" in f}
    if len(parts) > 1 or (parts and len(features) != sum("dataset" in f for f in features)):
        raise ValueError(f"a batch mixes records of datasets {sorted(parts)}: train a MultiDataset with its "
                         "MultiDatasetSampler (the trainers pick it), which keeps each batch within one dataset")
    return {"dataset": parts.pop()} if parts else {}


@dataclass
class RerankCollator:
    """Collate query groups into length-sorted micro-batches of (query, document) pairs.

    Output keys:
      - ``chunks``: list of tokenizer batches (``input_ids``, ``attention_mask``, ...), pairs sorted by
        length and padded per chunk;
      - ``restore``: ``(B*G,)`` index such that ``torch.cat(chunk_scores)[restore]`` is in group order;
      - ``labels``: ``(B, G)`` float grades; ``teacher_scores`` ``(B, G)`` when the records carry them, and
        ``first_stage_scores`` ``(B, G)`` when they carry their first stage's scores;
      - ``num_truncated``, ``num_pairs``: counts for the truncation report;
      - ``pair_queries`` / ``pair_docs``: the texts of the pairs in group order (an online teacher scores them);
      - ``dataset``: the records' part of a :class:`~hf_ragtrain.data.multi_dataset.MultiDataset`, if any.

    ``micro_batch_tokens`` bounds the padded tokens of one forward pass (``None``: no bound; the
    recipes use :func:`hf_ragtrain.hardware.default_micro_batch_tokens`). With ``whole_groups`` the
    micro-batches hold whole groups (:func:`pack_groups`) and ``group_sets`` lists ``(group indices
    (n,), micro-batches)`` per set, in the order of ``chunks``; ``None`` lets the trainer choose
    (:class:`~hf_ragtrain.trainers.rerank.RerankTrainer` turns it on when it can step set by set).
    A ``prompt`` in a record is put before its query. ``encode_pairs(queries, docs, max_length) ->
    (encodings, n_truncated)`` replaces the tokenizer's pair encoding (an LLM reranker writes pairs
    into its prompt template: :meth:`hf_ragtrain.LlmReranker.collator`).
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 512
    micro_batch_tokens: int | None = 8192
    pad_to_multiple_of: int | None = None
    whole_groups: bool | None = None
    encode_pairs: Callable[[Sequence[str], Sequence[str], int], tuple[dict[str, list[list[int]]], int]] | None = None

    def __post_init__(self):
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens (the special tokens, a query and a document), "
                             f"got {self.max_length}")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ValueError(f"micro_batch_tokens must be a positive number of tokens or None, got "
                             f"{self.micro_batch_tokens}")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        group = len(features[0]["docs"])
        if any(len(f["docs"]) != group for f in features):
            raise ValueError("all groups in a batch must have the same size")
        queries, docs = [], []
        for f in features:
            q = (f.get("prompt") or "") + f["query"]
            queries.extend([q] * group)
            docs.extend(f["docs"])
        if self.encode_pairs is not None:
            enc, n_cut = self.encode_pairs(queries, docs, self.max_length)
        else:
            enc, n_cut = tokenize_pairs(self.tokenizer, queries, docs, self.max_length)
        lengths = [len(ids) for ids in enc["input_ids"]]
        sets = pack_groups(lengths, group, self.micro_batch_tokens) if self.whole_groups else []
        batches = [b for _, micro in sets for b in micro] or pack_by_length(lengths, self.micro_batch_tokens)
        order = torch.tensor([i for b in batches for i in b], dtype=torch.long)
        batch = {
            "chunks": pad_micro_batches(self.tokenizer, enc, batches, self.pad_to_multiple_of),
            "restore": torch.argsort(order),
            "labels": torch.tensor([f["labels"] for f in features], dtype=torch.float32),
            "num_truncated": torch.tensor(n_cut),
            "num_pairs": torch.tensor(len(docs)),
            "pair_queries": queries, "pair_docs": docs, **dataset_of(features),
        }
        if sets:
            batch["group_sets"] = [(torch.tensor(groups, dtype=torch.long), len(micro)) for groups, micro in sets]
        if all("scores" in f for f in features):
            batch["teacher_scores"] = torch.tensor([f["scores"] for f in features], dtype=torch.float32)
        if all("first_stage_scores" in f for f in features):
            batch["first_stage_scores"] = torch.tensor([f["first_stage_scores"] for f in features], dtype=torch.float32)
        return batch


@dataclass
class EmbeddingCollator:
    """Collate query groups for a bi-encoder or ColBERT: queries and passages tokenised separately by the model.

    ``encoder`` is a :class:`~hf_ragtrain.modeling.bi_encoder.BiEncoder` or a
    :class:`~hf_ragtrain.modeling.colbert.ColbertEncoder` (its ``tokenize`` applies prompts, max
    lengths and EOS; a ColBERT encoder pads queries itself). A record's ``prompt`` replaces the
    model's query prompt.

    Output keys:
      - ``query_chunks`` / ``passage_chunks``: length-sorted padded micro-batches of at most
        ``micro_batch_tokens`` padded tokens (``None``: one per kind), and ``query_restore`` /
        ``passage_restore``, the ``(B,)`` / ``(B*G,)`` indices that put their outputs back in order;
        passages are laid out group by group, each query's positive first;
      - ``teacher_scores`` ``(B, G)`` when the records carry ``pos_scores``/``neg_scores``;
      - ``query_texts`` / ``passage_texts`` in group order, the order of the restored embeddings
        (embedding distillation looks the teacher's vectors up by text);
      - ``num_texts``, ``num_truncated_texts``: counts for the truncation report;
      - ``dataset``: the records' part of a :class:`~hf_ragtrain.data.multi_dataset.MultiDataset`, if any.
    """

    encoder: Any
    micro_batch_tokens: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        group = len(features[0]["docs"])
        if any(len(f["docs"]) != group for f in features):
            raise ValueError("all groups in a batch must have the same size")
        queries = [f["query"] for f in features]
        passages = [d for f in features for d in f["docs"]]
        q_enc, q_cut = self.encoder.tokenize(queries, "query", prompts=[f.get("prompt") for f in features])
        p_enc, p_cut = self.encoder.tokenize(passages, "passage")
        q_chunks, q_restore = self._chunked(q_enc, "query")
        p_chunks, p_restore = self._chunked(p_enc, "passage")
        batch = {
            "query_chunks": q_chunks, "query_restore": q_restore,
            "passage_chunks": p_chunks, "passage_restore": p_restore,
            "num_texts": torch.tensor(len(queries) + len(passages)),
            "num_truncated_texts": torch.tensor(q_cut + p_cut),
            "query_texts": queries, "passage_texts": passages, **dataset_of(features),
        }
        if all("scores" in f for f in features):
            batch["teacher_scores"] = torch.tensor([f["scores"] for f in features], dtype=torch.float32)
        return batch

    def _chunked(self, enc: dict[str, list[list[int]]], kind: str) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
        """Length-sorted micro-batches; an encoder with its own ``pad`` (ColBERT query expansion) pads them."""
        batches = pack_by_length([len(ids) for ids in enc["input_ids"]], self.micro_batch_tokens)
        order = torch.tensor([i for b in batches for i in b], dtype=torch.long)
        if hasattr(self.encoder, "pad"):
            chunks = [self.encoder.pad(enc, b, kind, self.pad_to_multiple_of) for b in batches]
        else:
            chunks = pad_micro_batches(self.encoder.tokenizer, enc, batches, self.pad_to_multiple_of)
        return chunks, torch.argsort(order)
