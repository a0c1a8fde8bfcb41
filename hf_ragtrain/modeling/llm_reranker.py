"""Decoder-only (LLM) rerankers.

Two ways to turn a decoder into a reranker, both scoring the pair's last real token:

- ``head="yes_token"`` (generative): the pair is written into a prompt template that ends where the
  model should answer, and the score is the logit of the "Yes" token there (the format of
  bge-reranker-v2-gemma). Only that one row of the LM head is computed, never the full vocabulary.
- ``head="classifier"``: an ``*ForSequenceClassification`` model's 1-logit ``score`` head.

The last real token is found from the attention mask, so left and right padding give the same
scores. ``layerwise=True`` adds a score head per layer from ``start_layer`` up (as in
bge-reranker-v2-minicpm-layerwise); training sums the ranking loss over those layers, with the
last layer teaching the earlier ones, and inference can stop at ``cutoff_layer``, running only the
layers up to it. LoRA adapters come from peft.

The template, the yes token and its id are saved with the model (``hf_ragtrain_reranker.json``) and
:meth:`LlmReranker.tokenize_pairs` is the one place pairs become tokens, so training and
inference see identical prompts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          PreTrainedModel, PreTrainedTokenizerBase)
from transformers.utils import ModelOutput

from .bi_encoder import LoraSettings, default_attention
from .pooling import pool

HEADS = ("yes_token", "classifier")
SETTINGS_FILE = "hf_ragtrain_reranker.json"
LAYER_HEADS_FILE = "layer_heads.safetensors"
DEFAULT_TEMPLATE = ("Query: {query}\nDocument: {document}\n"
                    "Does the document answer the query? Reply Yes or No.\nAnswer:")


@dataclass
class LlmRerankerSettings:
    """How pairs become prompts and prompts become scores; saved with the model."""

    head: str = "yes_token"
    template: str = DEFAULT_TEMPLATE
    yes_token: str = " Yes"
    max_length: int = 512
    layerwise: bool = False
    start_layer: int | None = None  # first scored layer (1-based); default: the middle layer
    cutoff_layer: int | None = None  # layer whose score inference returns; default: the last

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
        for name in ("{query}", "{document}"):
            if self.template.count(name) != 1:
                raise ValueError(f"the template must contain {name} exactly once: {self.template!r}")
        if self.template.index("{query}") > self.template.index("{document}"):
            raise ValueError("the template must put {query} before {document}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")

    def template_parts(self) -> tuple[str, str, str]:
        """(text before the query, between query and document, after the document)."""
        before, rest = self.template.split("{query}")
        middle, after = rest.split("{document}")
        return before, middle, after


@dataclass
class LlmRerankerOutput(ModelOutput):
    logits: Tensor | None = None  # (N, 1): the score at the cutoff layer (the last one by default)
    layer_logits: Tensor | None = None  # (N, n_layers) with layerwise heads: scores of layers start..last


def _leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens a tokenizer puts before a text (a BOS), none of those it appends."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def _fit(n_query: int, n_doc: int, budget: int) -> tuple[int, int]:
    """Lengths after cutting the longer of query and document first until both fit ``budget``."""
    if n_query + n_doc <= budget:
        return n_query, n_doc
    if n_query <= budget // 2:
        return n_query, budget - n_query
    if n_doc <= budget - budget // 2:
        return budget - n_doc, n_doc
    return budget // 2, budget - budget // 2


class LlmReranker(nn.Module):
    """A decoder scored at the last token of a (query, document) prompt. ``forward`` returns
    :class:`LlmRerankerOutput`; RerankTrainer, RerankingEvaluator and ``score_pairs`` take it like a
    cross-encoder (build the collator with :meth:`collator`)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 settings: LlmRerankerSettings | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or LlmRerankerSettings()
        self.config = self.inner.config
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked out by the attention mask
        if getattr(self.config, "pad_token_id", None) is None:
            self.config.pad_token_id = tokenizer.pad_token_id
        self.yes_token_id = self._resolve_yes_token() if self.settings.head == "yes_token" else None
        before, middle, after = self.settings.template_parts()
        ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
        self._prefix = _leading_special_ids(tokenizer) + ids(before)
        self._middle, self._suffix = ids(middle), ids(after)
        fixed = len(self._prefix) + len(self._middle) + len(self._suffix)
        if fixed + 2 > self.settings.max_length:
            raise ValueError(f"the template alone takes {fixed} tokens; max_length {self.settings.max_length} "
                             "leaves no room for a query and a document")
        self.layer_heads = self._build_layer_heads() if self.settings.layerwise else None

    # ------------------------------------------------------------------ structure
    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def inner(self) -> PreTrainedModel:
        """The transformers model (inside the peft wrapper, LoRA layers in place)."""
        return self.model.get_base_model() if hasattr(self.model, "peft_config") else self.model

    @property
    def decoder(self) -> nn.Module:
        """The decoder stack without its head (``LlamaModel`` for a Llama)."""
        inner = self.inner
        return getattr(inner, inner.base_model_prefix)

    @property
    def num_layers(self) -> int:
        return len(self.decoder.layers)

    @property
    def start_layer(self) -> int:
        return self.settings.start_layer or max(1, self.num_layers // 2)

    @property
    def scored_layers(self) -> list[int]:
        """Layers (1-based) that have a score: start..last with layerwise heads, else only the last."""
        return list(range(self.start_layer, self.num_layers + 1)) if self.settings.layerwise else [self.num_layers]

    def _resolve_yes_token(self) -> int:
        ids = self.tokenizer(self.settings.yes_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(f"yes_token {self.settings.yes_token!r} is {len(ids)} tokens {pieces} for this "
                             "tokenizer; choose a string that is exactly one token")
        return int(ids[0])

    def _final_head_weight(self) -> Tensor:
        """``(1, H)`` weight of the last layer's score: the yes row of the LM head, or the classifier."""
        if self.settings.head == "yes_token":
            return self.inner.get_output_embeddings().weight[self.yes_token_id].unsqueeze(0)
        return self._classifier().weight

    def _classifier(self) -> nn.Linear:
        """The 1-logit head (peft wraps it to train a copy; that copy is the one in use)."""
        score = self.inner.score
        if hasattr(score, "modules_to_save") and "default" in score.modules_to_save:
            return score.modules_to_save["default"]
        return score

    def _build_layer_heads(self) -> nn.ModuleList:
        """One ``Linear(H, 1)`` per scored layer below the last, started from the last layer's head."""
        if not 1 <= self.start_layer <= self.num_layers:
            raise ValueError(f"start_layer {self.start_layer} is outside 1..{self.num_layers}")
        weight = self._final_head_weight().detach().float()
        heads = nn.ModuleList()
        for _ in range(self.start_layer, self.num_layers):
            head = nn.Linear(weight.size(1), 1, bias=False)
            head.weight.data.copy_(weight)
            heads.append(head)
        return heads

    def get_input_embeddings(self) -> nn.Module:
        return self.inner.get_input_embeddings()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        self.inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)
        if self.is_peft:  # inputs must require grad for checkpointed LoRA layers to get gradients
            self.inner.enable_input_require_grads()

    # ------------------------------------------------------------------ tokenisation
    def tokenize_pairs(self, queries: Sequence[str], docs: Sequence[str],
                       max_length: int | None = None) -> tuple[dict[str, list[list[int]]], int]:
        """Token ids of each pair's prompt, unpadded, and how many pairs were cut to fit ``max_length``.

        The template's own tokens are never cut (the prompt must end where the answer goes); the
        longer of query and document is shortened first.
        """
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        max_length = max_length or self.settings.max_length
        budget = max_length - len(self._prefix) - len(self._middle) - len(self._suffix)
        if budget < 2:
            raise ValueError(f"max_length {max_length} leaves no room beside the template's tokens")
        tok = lambda texts: self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # noqa: E731
        q_ids, d_ids = tok(queries), tok(docs)
        input_ids, cut = [], 0
        for q, d in zip(q_ids, d_ids):
            nq, nd = _fit(len(q), len(d), budget)
            cut += (nq, nd) != (len(q), len(d))
            input_ids.append(self._prefix + q[:nq] + self._middle + d[:nd] + self._suffix)
        return {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids]}, cut

    def collator(self, max_length: int | None = None, micro_batch_tokens: int | None = 8192):
        """A :class:`~hf_ragtrain.data.RerankCollator` that writes pairs into this model's prompt."""
        from ..data.collators import RerankCollator

        return RerankCollator(self.tokenizer, max_length=max_length or self.settings.max_length,
                              micro_batch_tokens=micro_batch_tokens, encode_pairs=self.tokenize_pairs)

    # ------------------------------------------------------------------ scoring
    def _head(self, layer: int, hidden: Tensor) -> Tensor:
        """Score ``(N,)`` of the last-token states ``hidden`` ``(N, H)`` taken after ``layer``."""
        if layer == self.num_layers:
            if self.settings.head == "classifier":
                return self.inner.score(hidden).squeeze(-1)
            weight = self._final_head_weight()
            return (hidden @ weight.to(hidden.dtype).T).squeeze(-1)
        head = self.layer_heads[layer - self.start_layer]
        return (hidden @ head.weight.to(hidden.dtype).T).squeeze(-1)

    @contextlib.contextmanager
    def _only_layers(self, n: int):
        """Run only the first ``n`` decoder layers (early exit); the final norm still applies."""
        decoder = self.decoder
        layers = decoder.layers
        if n >= len(layers):
            yield
            return
        decoder.layers = layers[:n]
        try:
            yield
        finally:
            decoder.layers = layers

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, cutoff_layer: int | None = None, **kwargs: Any) -> LlmRerankerOutput:
        if attention_mask is None:
            raise ValueError("LlmReranker needs the attention mask to find each pair's last token")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("token_type_ids", "labels")}
        cutoff = cutoff_layer or self.settings.cutoff_layer or self.num_layers
        if cutoff not in self.scored_layers:
            raise ValueError(f"cutoff_layer {cutoff} has no score head; scored layers are {self.scored_layers}")
        inputs = dict(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                      use_cache=False, **kwargs)
        if not self.settings.layerwise or (not self.training and cutoff < self.num_layers):
            with self._only_layers(cutoff):  # the norm after the stack makes this layer's normed state
                hidden = self.decoder(**inputs).last_hidden_state
            return LlmRerankerOutput(logits=self._head(cutoff, pool(hidden, attention_mask, "last_token")).unsqueeze(-1))
        states = self.decoder(**inputs, output_hidden_states=True).hidden_states
        norm = self.decoder.norm
        scores = []
        for layer in self.scored_layers:  # states[i] is the output of layer i; the last one is already normed
            h = pool(states[layer], attention_mask, "last_token")
            scores.append(self._head(layer, h if layer == self.num_layers else norm(h)))
        layer_logits = torch.stack(scores, dim=-1)
        return LlmRerankerOutput(logits=layer_logits[:, self.scored_layers.index(cutoff)].unsqueeze(-1),
                                 layer_logits=layer_logits)

    @torch.no_grad()
    def score(self, queries: Sequence[str], docs: Sequence[str], batch_tokens: int = 16384,
              show_progress: bool = False, cutoff_layer: int | None = None) -> np.ndarray:
        """Scores of (query, document) pairs in input order (length-sorted batches, no gradients)."""
        from .cross_encoder import score_pairs

        model = self if cutoff_layer is None else _AtLayer(self, cutoff_layer)
        return score_pairs(model, self.tokenizer, queries, docs, max_length=self.settings.max_length,
                           batch_tokens=batch_tokens, show_progress=show_progress)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str, lora: LoraSettings | None = None,
                        attn_implementation: str | None = None, torch_dtype: Any = None,
                        **settings: Any) -> "LlmReranker":
        """Load a decoder as a reranker; ``settings`` (``head``, ``template``, ``yes_token``, ...) override
        what the folder records. A LoRA adapter folder loads its base model with the adapter
        (trainable); ``lora`` adds a new adapter."""
        from ..offline import resolve_model_path

        path = resolve_model_path(name_or_path)
        recorded = _read_json(os.path.join(path, SETTINGS_FILE)) or {}
        recorded.pop("yes_token_id", None)
        merged = LlmRerankerSettings(**{**recorded, **{k: v for k, v in settings.items() if v is not None}})
        adapter_config = _read_json(os.path.join(path, "adapter_config.json"))
        base_path = adapter_config["base_model_name_or_path"] if adapter_config else path
        config = AutoConfig.from_pretrained(base_path)
        kwargs: dict[str, Any] = {"attn_implementation": attn_implementation or default_attention(config)}
        if torch_dtype is not None:
            kwargs["dtype"] = torch_dtype
        if merged.head == "yes_token":
            model = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, **kwargs)
        if adapter_config:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path, is_trainable=True)
        elif lora is not None:
            from peft import LoraConfig, TaskType, get_peft_model

            task = TaskType.CAUSAL_LM if merged.head == "yes_token" else TaskType.SEQ_CLS
            model = get_peft_model(model, LoraConfig(task_type=task, r=lora.r, lora_alpha=lora.alpha,
                                                     lora_dropout=lora.dropout, target_modules=lora.target_modules))
        reranker = cls(model, AutoTokenizer.from_pretrained(path), merged)
        heads = os.path.join(path, LAYER_HEADS_FILE)
        if reranker.layer_heads is not None and os.path.isfile(heads):
            from safetensors.torch import load_file

            reranker.layer_heads.load_state_dict(load_file(heads))
        return reranker

    def save_pretrained(self, path: str, state_dict: dict[str, Tensor] | None = None,
                        merge_lora: bool = False) -> None:
        """Write the model (or its LoRA adapter, unless ``merge_lora``), the tokenizer, the settings
        (``hf_ragtrain_reranker.json``, with the yes token's id) and the layer heads. ``state_dict``
        (keys as in this module, e.g. gathered under DeepSpeed) replaces the live weights."""
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        model_state = heads_state = None
        if state_dict is not None:
            model_state = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
            heads_state = {k[len("layer_heads."):]: v for k, v in state_dict.items() if k.startswith("layer_heads.")}
        if self.is_peft and merge_lora:
            merged = copy.deepcopy(self.model)
            if model_state is not None:
                merged.load_state_dict(model_state)
            merged.merge_and_unload().save_pretrained(path)
        else:
            self.model.save_pretrained(path, state_dict=model_state)
        self.tokenizer.save_pretrained(path)
        if self.layer_heads is not None:
            heads = heads_state or self.layer_heads.state_dict()
            save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, os.path.join(path, LAYER_HEADS_FILE))
        with open(os.path.join(path, SETTINGS_FILE), "w") as fh:
            json.dump({**asdict(self.settings), "yes_token_id": self.yes_token_id}, fh, indent=2)

    def load_weights(self, path: str) -> None:
        """Load weights written by :meth:`save_pretrained` (a Trainer checkpoint) into this model."""
        from safetensors.torch import load_file

        if self.is_peft:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(os.path.join(path, "adapter_model.safetensors")))
        else:
            loaded = type(self.inner).from_pretrained(path, attn_implementation=self.config._attn_implementation)
            self.inner.load_state_dict(loaded.state_dict())
        heads = os.path.join(path, LAYER_HEADS_FILE)
        if self.layer_heads is not None and os.path.isfile(heads):
            self.layer_heads.load_state_dict(load_file(heads))


class _AtLayer(nn.Module):
    """A view of an :class:`LlmReranker` that scores at a fixed cutoff layer (for ``score_pairs``)."""

    def __init__(self, reranker: LlmReranker, layer: int):
        super().__init__()
        self.reranker, self.layer = reranker, layer
        self.tokenize_pairs = reranker.tokenize_pairs

    def forward(self, **inputs: Any) -> LlmRerankerOutput:
        return self.reranker(cutoff_layer=self.layer, **inputs)


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


__all__ = ["DEFAULT_TEMPLATE", "LlmReranker", "LlmRerankerOutput", "LlmRerankerSettings"]
