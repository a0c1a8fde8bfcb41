"""ColBERT (late interaction): one L2-normalised vector per token, scored with MaxSim.

A :class:`ColbertEncoder` is a backbone ``AutoModel``, a linear projection of its token states to
``colbert_dim`` and a normalisation. Padding, and for documents the tokens of an optional
skip-list (e.g. punctuation), are masked out of scoring. It saves in the layout that
sentence-transformers 6 ``MultiVectorEncoder`` loads: Transformer -> Dense -> MultiVectorMask ->
Normalize, with per-kind max lengths and prompts.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..data.collators import pad_micro_batches, tokenize_texts
from .backbone import freeze_unused_pooler, load_backbone, load_backbone_weights, read_json

COLBERT_CONFIG = "hf_ragtrain_colbert.json"
PUNCTUATION = list(string.punctuation)


@dataclass
class ColbertSettings:
    colbert_dim: int = 128
    query_max_length: int = 32
    document_max_length: int = 256
    query_prompt: str = ""
    document_prompt: str = ""
    skiplist: list[str] = field(default_factory=list)  # document tokens left out of MaxSim
    query_expansion: bool = False  # ColBERT query augmentation: pad queries to query_max_length with [MASK]
    attend_to_expansion: bool = False  # whether the encoder attends to those [MASK] positions


def maxsim(q: Tensor, q_mask: Tensor, d: Tensor, d_mask: Tensor, chunk_size: int = 256,
           average: bool = False) -> Tensor:
    """MaxSim scores ``(Nq, Nd)``: for each query token the best dot product over a document's tokens, summed.

    ``q`` ``(Nq, Lq, D)`` and ``d`` ``(Nd, Ld, D)`` with boolean masks ``(Nq, Lq)``/``(Nd, Ld)`` of the
    tokens that count. Documents are taken ``chunk_size`` at a time, so the largest tensor is
    ``Nq x Lq x chunk_size x Ld``. ``average`` divides by each query's number of tokens.
    """
    q = q * q_mask.unsqueeze(-1).to(q.dtype)
    out = []
    for start in range(0, d.size(0), chunk_size):
        dc, mc = d[start:start + chunk_size], d_mask[start:start + chunk_size]
        sim = torch.einsum("qid,cjd->qcij", q, dc)
        sim = sim.masked_fill(~mc.bool()[None, :, None, :], float("-inf")).amax(-1)  # (Nq, c, Lq)
        sim = sim.masked_fill(~q_mask.bool()[:, None, :], 0.0).nan_to_num(neginf=0.0)
        out.append(sim.sum(-1))
    scores = torch.cat(out, dim=1)
    return scores / q_mask.sum(-1, keepdim=True).clamp(min=1) if average else scores


def _stack(vectors: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Pad per-text token vectors into ``(N, L, D)`` with a boolean mask ``(N, L)``."""
    length = max(v.size(0) for v in vectors)
    out = torch.zeros(len(vectors), length, vectors[0].size(1))
    mask = torch.zeros(len(vectors), length, dtype=torch.bool)
    for i, v in enumerate(vectors):
        out[i, :len(v)], mask[i, :len(v)] = v, True
    return out, mask


class ColbertEncoder(nn.Module):
    """Token vectors for late interaction; ``forward`` returns ``(vectors (N, L, dim), mask (N, L))``."""

    def __init__(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, linear: nn.Linear,
                 settings: ColbertSettings):
        super().__init__()
        self.backbone, self.tokenizer, self.linear, self.settings = backbone, tokenizer, linear, settings
        self.config = backbone.config
        freeze_unused_pooler(backbone)
        ids = [tokenizer.convert_tokens_to_ids(w) for w in settings.skiplist]
        self.register_buffer("skip_ids", torch.tensor([i for i in ids if i != tokenizer.unk_token_id],
                                                      dtype=torch.long), persistent=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str, attn_implementation: str | None = None, seed: int = 0,
                        skip_punctuation: bool = False, **settings: Any) -> "ColbertEncoder":
        """Load a backbone and its ColBERT projection.

        The projection comes from, in order: a sentence-transformers ``MultiVectorEncoder`` folder
        (``1_Dense``), a BGE-M3-style ``colbert_linear.pt`` (``weight`` ``(dim, hidden)``, optional
        bias), or a new one (seeded) when starting from a bi-encoder such as MiniLM.
        """
        from ..offline import resolve_model_path

        path = resolve_model_path(name_or_path)
        recorded = read_json(os.path.join(path, COLBERT_CONFIG)) or {}
        merged = {**recorded, **{k: v for k, v in settings.items() if v is not None}}
        if skip_punctuation:
            merged["skiplist"] = sorted(set(merged.get("skiplist", [])) | set(PUNCTUATION))
        backbone = load_backbone(path, AutoModel, "FEATURE_EXTRACTION", attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(path)
        hidden = backbone.config.hidden_size
        dense = os.path.join(path, "1_Dense", "model.safetensors")
        bge = os.path.join(path, "colbert_linear.pt")
        if os.path.isfile(dense):
            from safetensors.torch import load_file

            state = {k[len("linear."):]: v for k, v in load_file(dense).items()}
            merged.setdefault("colbert_dim", state["weight"].size(0))
            linear = nn.Linear(hidden, state["weight"].size(0), bias="bias" in state)
            linear.load_state_dict(state)
        elif os.path.isfile(bge):
            state = torch.load(bge, map_location="cpu", weights_only=True)
            merged.setdefault("colbert_dim", state["weight"].size(0))
            linear = nn.Linear(hidden, state["weight"].size(0), bias="bias" in state)
            linear.load_state_dict(state)
        else:
            torch.manual_seed(seed)
            linear = nn.Linear(hidden, merged.get("colbert_dim", 128), bias=False)
        return cls(backbone, tokenizer, linear, ColbertSettings(**merged))

    # ------------------------------------------------------------------ tokens and vectors
    def tokenize(self, texts: Sequence[str], kind: str,
                 prompts: Sequence[str | None] | None = None) -> tuple[dict[str, list[list[int]]], int]:
        """Unpadded ids of ``texts`` as ``query`` or ``document`` (``passage``), and how many were cut.
        ``prompts`` (one per text) replace the default prompt where given."""
        s = self.settings
        prompt, length = (s.query_prompt, s.query_max_length) if kind == "query" else \
            (s.document_prompt, s.document_max_length)
        prompts = prompts or [None] * len(texts)
        return tokenize_texts(self.tokenizer, [(p if p is not None else prompt) + t for p, t in zip(prompts, texts)],
                              length)

    def pad(self, enc: dict[str, list[list[int]]], idx: Sequence[int], kind: str,
            pad_to_multiple_of: int | None = None) -> dict[str, Tensor]:
        """Pad the texts ``idx`` of ``enc`` into a batch (its width rounded up to ``pad_to_multiple_of``);
        with query expansion, queries are padded to ``query_max_length`` and the pads become expansion
        positions holding the mask token."""
        if kind != "query" or not self.settings.query_expansion:
            return pad_micro_batches(self.tokenizer, enc, [list(idx)], pad_to_multiple_of)[0]
        features = [{k: enc[k][i] for k in enc} for i in idx]
        batch = dict(self.tokenizer.pad(features, padding="max_length", max_length=self.settings.query_max_length,
                                        return_tensors="pt"))
        positions = batch["attention_mask"] == 0
        token = self.tokenizer.mask_token_id if self.tokenizer.mask_token_id is not None else self.tokenizer.eos_token_id
        batch["input_ids"] = batch["input_ids"].masked_fill(positions, token)
        if self.settings.attend_to_expansion:
            batch["attention_mask"] = batch["attention_mask"].masked_fill(positions, 1)
        batch["expansion_positions"] = positions
        return batch

    @property
    def embedding_dim(self) -> int:
        return self.linear.out_features

    def forward(self, input_ids: Tensor, attention_mask: Tensor, kind: str = "document",
                expansion_positions: Tensor | None = None, **kwargs: Any) -> tuple[Tensor, Tensor]:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        vectors = nn.functional.normalize(self.linear(hidden).float(), dim=-1)
        mask = attention_mask.bool()
        if expansion_positions is not None:
            mask = mask | expansion_positions.bool()  # expansion tokens are scored
        if kind != "query" and self.skip_ids.numel():
            mask = mask & ~torch.isin(input_ids, self.skip_ids.to(input_ids.device))
        return vectors, mask

    @torch.no_grad()
    def encode(self, texts: Sequence[str], kind: str = "document", batch_size: int = 32,
               prompts: Sequence[str | None] | None = None) -> list[Tensor]:
        """One ``(n_tokens, colbert_dim)`` tensor per text: the vectors of the tokens that count.
        ``prompts`` (one per text) replace the default prompt where given."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        enc, _ = self.tokenize(list(texts), kind, prompts)
        order = sorted(range(len(texts)), key=lambda i: len(enc["input_ids"][i]))
        out: list[Tensor | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            chunk = {k: v.to(device) for k, v in self.pad(enc, idx, kind).items()}
            vectors, mask = self(kind=kind, **chunk)
            for row, i in enumerate(idx):
                out[i] = vectors[row][mask[row]].cpu()
        if was_training:
            self.train()
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ retrieval and reranking
    @torch.no_grad()
    def search(self, queries: Sequence[str], documents: Sequence[str], top_k: int = 100, batch_size: int = 32,
               doc_chunk: int = 256, prompts: Sequence[str | None] | None = None,
               show_progress: bool = False) -> tuple[Tensor, Tensor]:
        """Brute-force MaxSim search of a corpus that fits in memory.

        Documents are encoded once and padded into blocks of ``doc_chunk``; every block is scored
        against all queries and only the running top ``top_k`` is kept, so memory stays at one
        block's scores. Returns ``(scores, indices)`` of shape ``(len(queries), min(top_k, len(documents)))``.
        """
        from tqdm.auto import tqdm

        q, qm = _stack(self.encode(queries, "query", batch_size, prompts=prompts))
        k = min(top_k, len(documents))
        best_s = torch.full((len(queries), 0), float("-inf"))
        best_i = torch.zeros((len(queries), 0), dtype=torch.long)
        for start in tqdm(range(0, len(documents), doc_chunk), desc="MaxSim search", disable=not show_progress):
            d, dm = _stack(self.encode(documents[start:start + doc_chunk], "document", batch_size))
            scores = maxsim(q, qm, d, dm)
            idx = torch.arange(start, start + d.size(0)).expand(len(queries), -1)
            best_s, order = torch.cat([best_s, scores], 1).topk(min(k, best_s.size(1) + scores.size(1)), dim=1)
            best_i = torch.cat([best_i, idx], 1).gather(1, order)
        return best_s, best_i

    @torch.no_grad()
    def score_pairs(self, queries: Sequence[str], documents: Sequence[str],
                    batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """MaxSim scores ``(N,)`` (float64) of (query, document) pairs, and each pair's number of scored
        query vectors ``(N,)``. Each distinct text is encoded once; MaxSim runs in fp32 whatever the
        autocast around it (the token vectors are fp32)."""
        uq, ud = list(dict.fromkeys(queries)), list(dict.fromkeys(documents))
        qv = dict(zip(uq, self.encode(uq, "query", batch_size)))
        dv = dict(zip(ud, self.encode(ud, "document", batch_size)))
        rows_of: dict[str, list[int]] = {}
        for n, q in enumerate(queries):
            rows_of.setdefault(q, []).append(n)
        scores = torch.empty(len(queries), dtype=torch.float64)
        with torch.autocast(next(self.parameters()).device.type, enabled=False):
            for q, rows in rows_of.items():
                d, dm = _stack([dv[documents[r]].float() for r in rows])
                scores[rows] = maxsim(*_stack([qv[q].float()]), d, dm)[0].double()
        return scores, torch.tensor([len(qv[q]) for q in queries])

    def rerank(self, query: str, candidates: Sequence[str], batch_size: int = 32) -> Tensor:
        """MaxSim scores ``(len(candidates),)`` of one query's candidate documents, in their order."""
        return self.score_pairs([query] * len(candidates), candidates, batch_size)[0].float()

    # ------------------------------------------------------------------ saving and loading
    def load_weights(self, path: str) -> None:
        """Load the weights of a folder written by :meth:`save_pretrained` (a Trainer checkpoint) into this model."""
        from safetensors.torch import load_file

        load_backbone_weights(self.backbone, path)
        state = load_file(os.path.join(path, "1_Dense", "model.safetensors"))
        self.linear.load_state_dict({k[len("linear."):]: v for k, v in state.items()})

    def save_pretrained(self, path: str, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write a folder that sentence-transformers ``MultiVectorEncoder(path)`` and :meth:`from_pretrained` load."""
        import sentence_transformers
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        backbone_state = None if state_dict is None else {
            k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        linear_state = {f"linear.{k}": (state_dict or {}).get(f"linear.{k}", v) for k, v in self.linear.state_dict().items()}
        self.backbone.save_pretrained(path, state_dict=backbone_state)
        self.tokenizer.save_pretrained(path)
        s = self.settings
        for sub in ("1_Dense", "2_MultiVectorMask", "3_Normalize"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in linear_state.items()},
                  os.path.join(path, "1_Dense", "model.safetensors"))
        io = {"module_input_name": "token_embeddings", "module_output_name": "token_embeddings"}
        files = {
            "modules.json": [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.base.modules.dense.Dense"},
                {"idx": 2, "name": "2", "path": "2_MultiVectorMask",
                 "type": "sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask"},
                {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.base.modules.normalize.Normalize"},
            ],
            "sentence_bert_config.json": {
                "transformer_task": "feature-extraction",
                "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                "module_output_name": "token_embeddings",
                "query_length": s.query_max_length, "document_length": s.document_max_length,
                "query_expansion": {"strategy": "fixed", "attend": s.attend_to_expansion, "token": None,
                                    "length": s.query_max_length} if s.query_expansion else None},
            os.path.join("1_Dense", "config.json"): {
                "in_features": self.linear.in_features, "out_features": self.linear.out_features,
                "bias": self.linear.bias is not None,
                "activation_function": "torch.nn.modules.linear.Identity", **io},
            os.path.join("2_MultiVectorMask", "config.json"): {
                "skiplist_words": list(s.skiplist), "skiplist_tasks": ["document"], "keep_only_token_ids": None},
            os.path.join("3_Normalize", "config.json"): io,
            "config_sentence_transformers.json": {
                "__version__": {"sentence_transformers": sentence_transformers.__version__,
                                "transformers": __import__("transformers").__version__, "pytorch": torch.__version__},
                "model_type": "MultiVectorEncoder", "default_prompt_name": None,
                "prompts": {"query": s.query_prompt, "document": s.document_prompt}, "similarity_fn_name": "maxsim"},
            COLBERT_CONFIG: asdict(s),
        }
        for name, content in files.items():
            with open(os.path.join(path, name), "w") as fh:
                json.dump(content, fh, indent=2)
