"""SPLADE (learned sparse retrieval): one non-negative vocabulary-sized vector per text, scored by dot product.

A :class:`SpladeEncoder` is a masked-LM (``AutoModelForMaskedLM``) whose token logits become, per
vocabulary entry, ``max over tokens of log(1 + relu(logit))`` (SPLADE v2), computed by the fused
:func:`~hf_ragtrain.modeling.splade_pooling.splade_max_pool`. A base without an MLM head (the offline
MiniLM is a bare ``BertModel``) gets one: the architecture's head, its decoder tied to the word
embeddings as BERT does, and its new ``hidden -> hidden`` transform set to the identity, so each
entry starts as the similarity of a token's state with that word's embedding. The
*inference-free* variant encodes queries with no forward pass: each query token present gets a fixed
weight (the IDF of the corpus it was set from).

It saves in the layouts sentence-transformers 6 ``SparseEncoder`` loads: Transformer
(``fill-mask``) -> SpladePooling, or for the inference-free variant a Router whose query route is a
``SparseStaticEmbedding``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..data.collators import pad_micro_batches, tokenize_texts
from .attention import default_attn_implementation
from .backbone import load_backbone_weights, read_json, silent_load_report, whole_parameters
from .splade_pooling import splade_max_pool

logger = logging.getLogger(__name__)

SPLADE_CONFIG = "hf_ragtrain_splade.json"
DOCUMENT_DIR, QUERY_DIR = "document_0_Transformer", "query_0_SparseStaticEmbedding"


@dataclass
class SpladeSettings:
    query_max_length: int = 64
    document_max_length: int = 256
    query_prompt: str = ""
    document_prompt: str = ""
    inference_free: bool = False  # queries: fixed per-token weights, no forward pass
    max_active_dims: int | None = None  # keep each vector's top k weights when encoding (None: all)
    head: str = "loaded"  # "loaded", or how a missing MLM head was built (said in the card)


def _kind(kind: str) -> str:
    return "query" if kind == "query" else "document"


class SpladeEncoder(nn.Module):
    """Sparse vectors for learned sparse retrieval; ``forward`` returns ``(N, vocab)`` non-negative weights.

    ``query_weights`` ``(vocab,)``: the inference-free variant's per-token query weights (a frozen
    buffer), ``None`` for a SPLADE model that encodes queries as documents.
    """

    def __init__(self, mlm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: SpladeSettings,
                 query_weights: Tensor | None = None):
        super().__init__()
        self.mlm, self.tokenizer, self.settings = mlm, tokenizer, settings
        self.config = mlm.config
        decoder = mlm.get_output_embeddings()
        if not isinstance(decoder, nn.Linear):
            raise TypeError(f"{type(mlm).__name__}'s output embeddings are a {type(decoder).__name__}; SPLADE needs "
                            "an MLM head ending in a linear decoder over the vocabulary")
        self._mask: Tensor | None = None

        def pooled(states: Tensor) -> Tensor:  # the decoder, and the pooling over tokens after it
            return splade_max_pool(states, decoder.weight, decoder.bias, self._mask)

        decoder.forward = pooled  # the decoder's own call (so DeepSpeed ZeRO-3 gathers its weights around it)
        if settings.inference_free and query_weights is None:
            query_weights = torch.ones(self.vocab_size)
        self.register_buffer("query_weights", query_weights.float() if query_weights is not None else None)

    @property
    def vocab_size(self) -> int:
        return self.mlm.get_output_embeddings().weight.size(0)

    @property
    def embedding_dim(self) -> int:
        return self.vocab_size

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, attn_implementation: str | None = None,
                        inference_free: bool | None = None, **settings: Any) -> "SpladeEncoder":
        """Load a SPLADE model: ours, a sentence-transformers ``SparseEncoder`` folder (either layout),
        any masked-LM checkpoint, or an encoder without an MLM head (one is built, see the module)."""
        from ..offline import resolve_model_path

        root = name_or_path
        router = os.path.isfile(os.path.join(root, "router_config.json"))
        path = os.path.join(root, DOCUMENT_DIR) if router else resolve_model_path(name_or_path)
        recorded = read_json(os.path.join(root, SPLADE_CONFIG)) or {}
        merged = {**recorded, **{k: v for k, v in settings.items() if v is not None}}
        query_weights = None
        if router:
            from safetensors.torch import load_file

            query_weights = load_file(os.path.join(root, QUERY_DIR, "model.safetensors"))["weight"]
            merged["inference_free"] = True
        if inference_free is not None:
            merged["inference_free"] = inference_free
        with silent_load_report():  # a missing head is expected and said below; a missing encoder weight is an error
            mlm, info = AutoModelForMaskedLM.from_pretrained(
                path, attn_implementation=attn_implementation or default_attn_implementation(
                    AutoConfig.from_pretrained(path)), output_loading_info=True)
        prefix = mlm.base_model_prefix + "."
        if any(k.startswith(prefix) for k in info["missing_keys"]):
            raise ValueError(f"{path}: the encoder's own weights are missing from the checkpoint "
                             f"({[k for k in info['missing_keys'] if k.startswith(prefix)][:5]}); is it a masked-LM "
                             "or encoder checkpoint?")
        tokenizer = AutoTokenizer.from_pretrained(path)
        if info["missing_keys"]:
            merged["head"] = _identity_head(mlm, tokenizer)
            logger.warning("%s: MLM head %s", path, merged["head"])
        elif "head" not in recorded:
            merged["head"] = "loaded"
        limit = getattr(mlm.config, "max_position_embeddings", None)
        for name in ("query_max_length", "document_max_length"):
            length = merged.get(name, getattr(SpladeSettings, name))
            if limit and length > limit:  # a longer text could not be encoded at all
                logger.warning("%s %d is more than the model's %d positions: using %d", name, length, limit, limit)
                merged[name] = limit
        return cls(mlm, tokenizer, SpladeSettings(**merged), query_weights)

    def set_query_idf(self, documents: Sequence[str]) -> None:
        """Inference-free queries: weigh each token by its IDF over ``documents``,
        ``log(1 + (N - df + 0.5) / (df + 0.5))`` (BM25's), tokens never seen getting the largest."""
        n = len(documents)
        df = torch.zeros(self.vocab_size)
        for ids in self.tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
            df[list(set(ids))] += 1
        self.query_weights = torch.log1p((n - df + 0.5) / (df + 0.5)).to(self.query_weights.device)

    # ------------------------------------------------------------------ tokens and vectors
    def tokenize(self, texts: Sequence[str], kind: str,
                 prompts: Sequence[str | None] | None = None) -> tuple[dict[str, list[list[int]]], int]:
        """Unpadded ids of ``texts`` as ``query`` or ``document`` (``passage``), and how many were cut.
        Inference-free queries carry no special tokens (only the words are weighted)."""
        s = self.settings
        query = _kind(kind) == "query"
        prompt, length = (s.query_prompt, s.query_max_length) if query else (s.document_prompt, s.document_max_length)
        prompts = prompts or [None] * len(texts)
        texts = [(p if p is not None else prompt) + t for p, t in zip(prompts, texts)]
        if query and s.inference_free:
            enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=length)
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, \
                sum(len(ids) >= length for ids in enc["input_ids"])
        return tokenize_texts(self.tokenizer, texts, length)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, kind: str = "document", **kwargs: Any) -> Tensor:
        if _kind(kind) == "query" and self.settings.inference_free:
            present = torch.zeros(input_ids.size(0), self.vocab_size, device=input_ids.device)
            present.scatter_(1, input_ids, attention_mask.float())
            return present * self.query_weights
        self._mask = attention_mask
        try:
            return self.mlm(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        finally:
            self._mask = None

    @torch.no_grad()
    def encode(self, texts: Sequence[str], kind: str = "document", batch_size: int = 32,
               prompts: Sequence[str | None] | None = None, show_progress: bool = False):
        """The texts' sparse vectors as a ``scipy.sparse.csr_matrix`` ``(N, vocab)`` (float32); each
        keeps its top ``max_active_dims`` weights when that is set (as sentence-transformers does)."""
        import scipy.sparse as sp
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        enc, _ = self.tokenize(list(texts), kind, prompts)
        order = sorted(range(len(texts)), key=lambda i: len(enc["input_ids"][i]))
        top_k = self.settings.max_active_dims
        blocks = []
        for start in tqdm(range(0, len(order), batch_size), desc=f"SPLADE {_kind(kind)}s", disable=not show_progress):
            batch = pad_micro_batches(self.tokenizer, enc, [order[start:start + batch_size]])[0]
            vectors = self(kind=kind, **{k: v.to(device) for k, v in batch.items()}).float()
            if top_k is not None and top_k < vectors.size(1):
                kept = vectors.topk(top_k, dim=1)
                vectors = torch.zeros_like(vectors).scatter_(1, kept.indices, kept.values)
            blocks.append(sp.csr_matrix(vectors.cpu().numpy()))
        if was_training:
            self.train()
        if not blocks:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        return sp.vstack(blocks, format="csr")[np.argsort(order)]  # back to the texts' order

    # ------------------------------------------------------------------ retrieval and reranking
    def search(self, queries: Sequence[str], documents: Sequence[str], top_k: int = 100, batch_size: int = 32,
               prompts: Sequence[str | None] | None = None, show_progress: bool = False) -> tuple[Tensor, Tensor]:
        """Exact search of ``documents`` through an inverted index
        (:class:`~hf_ragtrain.data.sparse_index.SparseIndex`): ``(scores, indices)``, each
        ``(len(queries), min(top_k, len(documents)))``, best first."""
        from ..data.sparse_index import SparseIndex

        index = SparseIndex(self.encode(documents, "document", batch_size, show_progress=show_progress))
        scores, idx = index.search(self.encode(queries, "query", batch_size, prompts=prompts), top_k)
        return torch.from_numpy(scores), torch.from_numpy(idx)

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str], batch_size: int = 32) -> Tensor:
        """Dot products ``(N,)`` (float64) of (query, document) pairs, each distinct text encoded once."""
        uq, ud = list(dict.fromkeys(queries)), list(dict.fromkeys(documents))
        qv, dv = self.encode(uq, "query", batch_size), self.encode(ud, "document", batch_size)
        qi, di = {t: i for i, t in enumerate(uq)}, {t: i for i, t in enumerate(ud)}
        q = qv[[qi[t] for t in queries]]
        d = dv[[di[t] for t in documents]]
        return torch.from_numpy(np.asarray(q.multiply(d).sum(axis=1), dtype=np.float64).ravel())

    def rerank(self, query: str, candidates: Sequence[str], batch_size: int = 32) -> Tensor:
        """Dot-product scores ``(len(candidates),)`` of one query's candidates, in their order."""
        return self.score_pairs([query] * len(candidates), candidates, batch_size).float()

    # ------------------------------------------------------------------ saving and loading
    def load_weights(self, path: str) -> None:
        """Load the weights of a folder written by :meth:`save_pretrained` (a Trainer checkpoint)."""
        router = os.path.isfile(os.path.join(path, "router_config.json"))
        load_backbone_weights(self.mlm, os.path.join(path, DOCUMENT_DIR) if router else path)

    def save_pretrained(self, path: str, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write a folder that sentence-transformers ``SparseEncoder(path)`` and :meth:`from_pretrained` load."""
        from .splade_layout import write_sparse_encoder

        mlm_state = None if state_dict is None else {
            k[len("mlm."):]: v for k, v in state_dict.items() if k.startswith("mlm.")}
        model_dir = os.path.join(path, DOCUMENT_DIR) if self.settings.inference_free else path
        os.makedirs(model_dir, exist_ok=True)
        self.mlm.save_pretrained(model_dir, state_dict=mlm_state)
        self.tokenizer.save_pretrained(model_dir)
        write_sparse_encoder(path, self.settings, self.vocab_size, self.tokenizer, self.query_weights)
        with open(os.path.join(path, SPLADE_CONFIG), "w") as fh:
            json.dump(asdict(self.settings), fh, indent=2)


def _identity_head(mlm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, quantile: float = 0.999) -> str:
    """Set a new MLM head's ``hidden -> hidden`` linear layers to the identity (zero bias), and its output
    bias so that a ``1 - quantile`` share of the (token, entry) logits start above 0, measured on a
    probe of the tokenizer's own words (every 37th vocabulary entry in 16 lines of 32): with bias 0
    nearly every entry of every text would be active. Returns what was built, for the card."""
    hidden = mlm.config.hidden_size
    prefix = mlm.base_model_prefix + "."
    names = []
    with torch.no_grad(), whole_parameters(mlm):  # built sharded under DeepSpeed ZeRO-3
        for name, module in mlm.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith(prefix) and tuple(module.weight.shape) == (hidden,
                                                                                                               hidden):
                module.weight.copy_(torch.eye(hidden))
                if module.bias is not None:
                    module.bias.zero_()
                names.append(name)
        vocab = tokenizer.get_vocab()
        words = [w for w in sorted(vocab, key=vocab.get)[::37] if w.isalpha()][:512]
        probe = tokenizer([" ".join(words[i:i + 32]) for i in range(0, len(words), 32)], return_tensors="pt",
                          padding=True, truncation=True, max_length=64)
        decoder = mlm.get_output_embeddings()
        captured: list[Tensor] = []
        handle = decoder.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        mlm.eval()
        mlm(**probe)
        handle.remove()
        logits = (captured[0] @ decoder.weight.T)[probe["attention_mask"].bool()]
        shift = float(torch.quantile(logits.flatten()[::97].float(), quantile))
        decoder.bias.fill_(-shift)
    tied = decoder.weight is mlm.get_input_embeddings().weight
    return (f"built: the base had no MLM head; {type(mlm).__name__}'s head was added with its transform "
            f"({', '.join(names) or 'none'}) set to the identity, its decoder "
            + ("tied to the word embeddings" if tied else "newly initialised")
            + f" and its bias {-shift:.2f} (a {1 - quantile:.1%} share of logits start above 0)")
