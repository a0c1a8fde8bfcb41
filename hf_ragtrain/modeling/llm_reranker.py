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
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerBase)
from transformers.utils import ModelOutput

from .backbone import (LoraSettings, enable_gradient_checkpointing, ensure_pad_token, is_peft, load_backbone,
                       load_trained_weights, read_json, save_backbone, sub_state_dict)
from .pooling import pool

HEADS = ("yes_token", "classifier")
SETTINGS_FILE = "hf_ragtrain_reranker.json"
LAYER_HEADS_FILE = "layer_heads.safetensors"
DEFAULT_TEMPLATE = ("Query: {query}\nDocument: {document}\n"
                    "Does the document answer the query? Reply Yes or No.\nAnswer:")


# The instruction of BAAI's bge-reranker-v2-gemma and -minicpm-layerwise models, needed verbatim to
# score with them (an input format, like a special token). Use it as
# LlmRerankerSettings(template=BGE_TEMPLATE, tokenize="lines", yes_token="Yes").
BGE_INSTRUCTION = ("Given a query A and a passage B, determine whether the passage contains an answer to the query "
                   "by providing a prediction of either 'Yes' or 'No'.")
BGE_TEMPLATE = "A: {query}\nB: {document}\n" + BGE_INSTRUCTION
TOKENIZE_MODES = ("whole", "lines")


@dataclass
class LlmRerankerSettings:
    """How pairs become prompts and prompts become scores; saved with the model.

    ``tokenize="whole"`` tokenizes the filled-in prompt as one text, exactly as the model would
    read it; ``"lines"`` tokenizes each line of the template on its own and every newline between
    them as a token of its own (the bge-reranker-v2 layout: BOS, ``A: query``, newline,
    ``B: passage``, newline, instruction; the BOS token first when the tokenizer has one).
    ``add_special_tokens=False`` leaves out the tokenizer's
    BOS, for templates that carry their own (a rendered chat template). With ``no_token`` the score
    is ``logit(yes) - logit(no)``, whose sigmoid is P(yes | yes or no).
    """

    head: str = "yes_token"
    template: str = DEFAULT_TEMPLATE
    yes_token: str = " Yes"
    no_token: str | None = None
    max_length: int = 512
    tokenize: str = "whole"
    add_special_tokens: bool = True
    layerwise: bool = False
    start_layer: int | None = None  # first scored layer (1-based); default: the middle layer
    cutoff_layer: int | None = None  # layer whose score inference returns; default: the last

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
        if self.tokenize not in TOKENIZE_MODES:
            raise ValueError(f"unknown tokenize mode {self.tokenize!r}; choose one of {TOKENIZE_MODES}")
        for name in ("{query}", "{document}"):
            if self.template.count(name) != 1:
                raise ValueError(f"the template must contain {name} exactly once: {self.template!r}")
        if self.template.index("{query}") > self.template.index("{document}"):
            raise ValueError("the template must put {query} before {document}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")

    def fill(self, query: str, document: str) -> str:
        """The prompt of one pair (plain substitution: braces elsewhere in the template stay as they are)."""
        before, rest = self.template.split("{query}")
        middle, after = rest.split("{document}")
        return before + query + middle + document + after


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
        ensure_pad_token(tokenizer)
        if getattr(self.config, "pad_token_id", None) is None:
            self.config.pad_token_id = tokenizer.pad_token_id
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(f"{type(tokenizer).__name__} is a slow tokenizer; LLM rerankers need a fast one "
                            "(its offsets are how a long text is cut at a token boundary)")
        head = self.settings.head == "yes_token"
        self.yes_token_id = self._resolve_token(self.settings.yes_token, "yes_token") if head else None
        self.no_token_id = (self._resolve_token(self.settings.no_token, "no_token")
                            if head and self.settings.no_token else None)
        if not self.settings.add_special_tokens:
            self._bos = []
        elif self.settings.tokenize == "lines":  # the bge layout always starts with the BOS token, if there is one
            self._bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        else:  # whatever the tokenizer itself puts first
            self._bos = _leading_special_ids(tokenizer)
        self._newline = self._ids("\n")
        self.template_tokens = len(self._encode("", ""))  # the prompt's own tokens, around the texts
        if self.template_tokens + 2 > self.settings.max_length:
            raise ValueError(f"the template alone takes {self.template_tokens} tokens; max_length "
                             f"{self.settings.max_length} leaves no room for a query and a document")
        self.layer_heads = self._build_layer_heads() if self.settings.layerwise else None

    # ------------------------------------------------------------------ structure
    @property
    def is_peft(self) -> bool:
        return is_peft(self.model)

    @property
    def inner(self) -> PreTrainedModel:
        """The transformers model (inside the peft wrapper, LoRA layers in place)."""
        return self.model.get_base_model() if self.is_peft else self.model

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

    def _resolve_token(self, text: str, name: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(f"{name} {text!r} is {len(ids)} tokens {pieces} for this "
                             "tokenizer; choose a string that is exactly one token")
        return int(ids[0])

    def _final_head_weight(self) -> Tensor:
        """``(1, H)`` weight of the last layer's score: the yes row of the LM head, or the classifier."""
        if self.settings.head == "yes_token":
            weight = self.inner.get_output_embeddings().weight
            row = weight[self.yes_token_id]
            if self.no_token_id is not None:  # logit(yes) - logit(no) is one row too
                row = row - weight[self.no_token_id]
            return row.unsqueeze(0)
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
        enable_gradient_checkpointing(self.model, gradient_checkpointing_kwargs)

    # ------------------------------------------------------------------ tokenisation
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _encode(self, query: str, document: str) -> list[int]:
        """Token ids of one pair's prompt, uncut."""
        s = self.settings
        if s.tokenize == "whole":
            return self._bos + self._ids(s.fill(query, document))
        before, rest = s.template.split("{query}")
        middle, after = rest.split("{document}")
        lines = (before + "\x00" + middle + "\x01" + after).split("\n")
        ids = list(self._bos)
        for n, line in enumerate(lines):
            if n:
                ids += self._newline
            ids += self._ids(line.replace("\x00", query).replace("\x01", document))
        return ids

    def tokenize_pairs(self, queries: Sequence[str], docs: Sequence[str],
                       max_length: int | None = None) -> tuple[dict[str, list[list[int]]], int]:
        """Token ids of each pair's prompt, unpadded, and how many pairs were cut to fit ``max_length``.

        A prompt that is too long keeps the template whole (it must end where the answer goes): the
        longer of query and document is cut first, at a token boundary of its own tokenization, and
        the prompt is tokenized again, so what the model reads is always a plain prompt.
        """
        if len(queries) != len(docs):
            raise ValueError(f"got {len(queries)} queries but {len(docs)} documents")
        max_length = max_length or self.settings.max_length
        if max_length < self.template_tokens + 2:
            raise ValueError(f"max_length {max_length} leaves no room beside the template's "
                             f"{self.template_tokens} tokens")
        input_ids, cut = [], 0
        for q, d in zip(queries, docs):
            ids = self._encode(q, d)
            if len(ids) > max_length:
                ids = self._shorten(q, d, max_length)
                cut += 1
            input_ids.append(ids)
        return {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids]}, cut

    def _shorten(self, query: str, document: str, max_length: int) -> list[int]:
        """The prompt of a pair cut to at most ``max_length`` tokens (longer text first)."""
        def token_ends(text: str) -> list[int]:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            return [end for _, end in enc["offset_mapping"]]

        q_end, d_end = token_ends(query), token_ends(document)
        nq, nd = _fit(len(q_end), len(d_end), max_length - self.template_tokens)
        while True:  # tokens can merge across the cut; take off the excess and try again
            ids = self._encode(query[:q_end[nq - 1]] if nq else "", document[:d_end[nd - 1]] if nd else "")
            excess = len(ids) - max_length
            if excess <= 0:
                return ids
            if nd >= nq:
                nd = max(0, nd - excess)
            else:
                nq = max(0, nq - excess)

    def collator(self, max_length: int | None = None, micro_batch_tokens: int | None = 8192,
                 pad_to_multiple_of: int | None = None):
        """A :class:`~hf_ragtrain.data.RerankCollator` that writes pairs into this model's prompt."""
        from ..data.collators import RerankCollator

        return RerankCollator(self.tokenizer, max_length=max_length or self.settings.max_length,
                              micro_batch_tokens=micro_batch_tokens, pad_to_multiple_of=pad_to_multiple_of,
                              encode_pairs=self.tokenize_pairs)

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
                inputs_embeds: Tensor | None = None, cutoff_layer: int | None = None,
                layers: Sequence[int] | None = None, **kwargs: Any) -> LlmRerankerOutput:
        """Scores at ``cutoff_layer`` (``logits``, ``(N, 1)``). In training with layerwise heads, or
        when ``layers`` names several scored layers, ``layer_logits`` holds one column per layer;
        only the layers up to the highest one asked for are run."""
        if attention_mask is None:
            raise ValueError("LlmReranker needs the attention mask to find each pair's last token")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("token_type_ids", "labels")}
        cutoff = cutoff_layer or self.settings.cutoff_layer or self.num_layers
        wanted = list(layers) if layers is not None else (
            self.scored_layers if self.settings.layerwise and self.training else [cutoff])
        for layer in [*wanted, cutoff]:
            if layer not in self.scored_layers:
                raise ValueError(f"layer {layer} has no score head; scored layers are {self.scored_layers}")
        inputs = dict(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                      use_cache=False, **kwargs)
        if len(wanted) == 1 and layers is None:
            with self._only_layers(cutoff):  # the norm after the stack makes this layer's normed state
                hidden = self.decoder(**inputs).last_hidden_state
            return LlmRerankerOutput(logits=self._head(cutoff, pool(hidden, attention_mask, "last_token")).unsqueeze(-1))
        top = max(*wanted, cutoff)
        with self._only_layers(top):
            states = self.decoder(**inputs, output_hidden_states=True).hidden_states
        norm = self.decoder.norm
        scores = []
        for layer in wanted:  # states[i] is the output of layer i; the last one run is already normed
            h = pool(states[layer], attention_mask, "last_token")
            scores.append(self._head(layer, h if layer == top else norm(h)))
        layer_logits = torch.stack(scores, dim=-1)
        if cutoff in wanted:
            logits = layer_logits[:, wanted.index(cutoff)]
        else:
            logits = self._head(cutoff, pool(states[cutoff], attention_mask, "last_token")
                                if cutoff == top else norm(pool(states[cutoff], attention_mask, "last_token")))
        return LlmRerankerOutput(logits=logits.unsqueeze(-1), layer_logits=layer_logits)

    @torch.no_grad()
    def score(self, queries: Sequence[str], docs: Sequence[str], batch_tokens: int = 16384,
              show_progress: bool = False, cutoff_layer: int | None = None,
              layers: Sequence[int] | None = None, batch_size: int | None = None) -> np.ndarray:
        """Scores of (query, document) pairs in input order (length-sorted batches, no gradients):
        ``(N,)`` at ``cutoff_layer``, or ``(N, len(layers))`` with one column per layer in ``layers``."""
        from .cross_encoder import score_pairs

        return score_pairs(self.at_layers(cutoff_layer, layers), self.tokenizer, queries, docs,
                           max_length=self.settings.max_length, batch_tokens=batch_tokens,
                           show_progress=show_progress, batch_size=batch_size)

    def at_layers(self, cutoff_layer: int | None = None, layers: Sequence[int] | None = None) -> nn.Module:
        """This model, or a view of it for ``score_pairs`` that scores at ``cutoff_layer`` or at several
        ``layers`` (one logit column each)."""
        return self if cutoff_layer is None and layers is None else _AtLayer(self, cutoff_layer, layers)

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
        recorded = read_json(os.path.join(path, SETTINGS_FILE)) or {}
        recorded.pop("yes_token_id", None)
        recorded.pop("no_token_id", None)
        merged = LlmRerankerSettings(**{**recorded, **{k: v for k, v in settings.items() if v is not None}})
        auto_class, task, head_kwargs = ((AutoModelForCausalLM, "CAUSAL_LM", {}) if merged.head == "yes_token" else
                                         (AutoModelForSequenceClassification, "SEQ_CLS", {"num_labels": 1}))
        model = load_backbone(path, auto_class, task, lora=lora, attn_implementation=attn_implementation,
                              torch_dtype=torch_dtype, **head_kwargs)
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
        heads_state = sub_state_dict(state_dict, "layer_heads.")
        save_backbone(self.model, path, sub_state_dict(state_dict, "model."), merge_lora=merge_lora)
        self.tokenizer.save_pretrained(path)
        if self.layer_heads is not None:
            heads = heads_state or self.layer_heads.state_dict()
            save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, os.path.join(path, LAYER_HEADS_FILE))
        with open(os.path.join(path, SETTINGS_FILE), "w") as fh:
            json.dump({**asdict(self.settings), "yes_token_id": self.yes_token_id, "no_token_id": self.no_token_id},
                      fh, indent=2)

    def load_weights(self, path: str) -> None:
        """Load weights written by :meth:`save_pretrained` (a Trainer checkpoint) into this model."""
        from safetensors.torch import load_file

        load_trained_weights(self.model, path)
        heads = os.path.join(path, LAYER_HEADS_FILE)
        if self.layer_heads is not None and os.path.isfile(heads):
            self.layer_heads.load_state_dict(load_file(heads))


class _AtLayer(nn.Module):
    """A view of an :class:`LlmReranker` that scores at a fixed cutoff layer, or at several layers
    (one logit column each), for ``score_pairs``."""

    def __init__(self, reranker: LlmReranker, layer: int | None, layers: Sequence[int] | None = None):
        super().__init__()
        self.reranker, self.layer, self.layers = reranker, layer, layers
        self.tokenize_pairs = reranker.tokenize_pairs

    def forward(self, **inputs: Any) -> LlmRerankerOutput:
        out = self.reranker(cutoff_layer=self.layer, layers=self.layers, **inputs)
        return out if self.layers is None else LlmRerankerOutput(logits=out.layer_logits)


__all__ = ["BGE_INSTRUCTION", "BGE_TEMPLATE", "DEFAULT_TEMPLATE", "LlmReranker", "LlmRerankerOutput",
           "LlmRerankerSettings"]
