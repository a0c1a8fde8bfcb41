"""Bi-encoders (embedding models) over any ``AutoModel``, saved in the sentence-transformers layout.

A :class:`BiEncoder` is a backbone (an encoder such as MiniLM, or a decoder-only LLM, optionally
with a LoRA adapter) plus a pooling and an optional L2 normalisation. Queries and passages have
their own maximum lengths and optional prompts. The model owns its tokenisation (:meth:`tokenize`),
so collators, inference and the saved sentence-transformers folder all see the same tokens:

- prompts are put before the text, and pooled with it (sentence-transformers ``include_prompt``);
- with ``append_eos`` (LLM embedders with last-token pooling) the EOS token is appended by the
  tokenizer's own post-processor, which is saved with it, so ``SentenceTransformer(path)`` appends
  it too; truncation keeps it.

``forward`` returns the pooled vectors *before* normalisation: Matryoshka losses normalise each
prefix of them. :meth:`encode` (inference) normalises when ``normalize`` is set.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..data.collators import pack_by_length, pad_micro_batches, tokenize_texts
from .backbone import (LoraSettings, enable_gradient_checkpointing, ensure_pad_token, freeze_unused_pooler, is_peft,
                       load_backbone, load_trained_weights, read_json, save_backbone, sub_state_dict)
from .pooling import POOLING_MODES, pool

logger = logging.getLogger(__name__)

ENCODER_CONFIG = "hf_ragtrain_encoder.json"  # our settings, next to the sentence-transformers files
ST_POOLING_NAMES = {"cls": "cls", "mean": "mean", "last_token": "lasttoken"}
ST_LEGACY_POOLING_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                          "last_token": "pooling_mode_lasttoken"}
KINDS = ("query", "passage")


@dataclass
class EncoderSettings:
    """How texts become vectors; saved with the model (``hf_ragtrain_encoder.json``)."""

    pooling: str = "mean"
    normalize: bool = True
    query_max_length: int = 64
    passage_max_length: int = 256
    query_prompt: str = ""
    passage_prompt: str = ""
    append_eos: bool = False

    def __post_init__(self):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {POOLING_MODES}")
        for name in ("query_max_length", "passage_max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def settings_from_folder(path: str) -> dict[str, Any]:
    """Encoder settings recorded in a folder: ours if present, else read from sentence-transformers files."""
    ours = read_json(os.path.join(path, ENCODER_CONFIG))
    if ours is not None:
        return ours
    modules = read_json(os.path.join(path, "modules.json"))
    if modules is None:
        return {}
    found: dict[str, Any] = {"normalize": False}
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg = read_json(os.path.join(path, module["path"], "config.json")) or {}
            mode = cfg.get("pooling_mode")
            if mode is None:  # legacy boolean keys
                mode = next((m for m, key in ST_LEGACY_POOLING_KEYS.items() if cfg.get(key)), None)
            mode = {v: k for k, v in ST_POOLING_NAMES.items()}.get(mode, mode)
            if mode not in POOLING_MODES:
                raise ValueError(f"{path}: sentence-transformers pooling {cfg} is not supported; "
                                 f"hf_ragtrain pools with {POOLING_MODES}")
            found["pooling"] = mode
        elif kind == "Normalize":
            found["normalize"] = True
        elif kind != "Transformer":
            raise ValueError(f"{path}: sentence-transformers module {module['type']} is not supported "
                             "(hf_ragtrain bi-encoders are Transformer + Pooling [+ Normalize])")
    st_config = read_json(os.path.join(path, "sentence_bert_config.json")) or {}
    if st_config.get("document_length") or st_config.get("max_seq_length"):
        found["passage_max_length"] = int(st_config.get("document_length") or st_config["max_seq_length"])
    if st_config.get("query_length"):
        found["query_max_length"] = int(st_config["query_length"])
    prompts = (read_json(os.path.join(path, "config_sentence_transformers.json")) or {}).get("prompts") or {}
    if prompts.get("query"):
        found["query_prompt"] = prompts["query"]
    if prompts.get("document") or prompts.get("passage"):
        found["passage_prompt"] = prompts.get("document") or prompts.get("passage")
    return found


def set_eos_post_processor(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the (fast) tokenizer append its EOS token to every text; saved with the tokenizer."""
    from tokenizers.processors import TemplateProcessing

    eos = tokenizer.eos_token
    if eos is None:
        raise ValueError("append_eos needs a tokenizer with an eos_token")
    backend = getattr(tokenizer, "_tokenizer", None) or getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError("append_eos needs a fast tokenizer")
    if tokenizer("a")["input_ids"][-1] == tokenizer.eos_token_id:
        return  # already appended (e.g. a tokenizer saved by hf_ragtrain)
    backend.post_processor = TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                special_tokens=[(eos, tokenizer.eos_token_id)])


class BiEncoder(nn.Module):
    """A text encoder: ``backbone`` token states -> pooling -> (optional) L2 normalisation.

    Build one with :meth:`from_pretrained`. ``forward(input_ids, attention_mask)`` returns pooled,
    *unnormalised* ``(N, D)`` float vectors; :meth:`encode` is the inference entry point.
    """

    def __init__(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 settings: EncoderSettings | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.settings = settings or EncoderSettings()
        self.config = getattr(backbone, "config", None)
        freeze_unused_pooler(backbone)
        self.distill_projection: nn.Linear | None = None  # see add_distill_projection
        if self.settings.append_eos:
            set_eos_post_processor(tokenizer)
        ensure_pad_token(tokenizer)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, lora: LoraSettings | None = None,
                        attn_implementation: str | None = None, torch_dtype: Any = None,
                        **settings: Any) -> "BiEncoder":
        """Load a backbone and tokenizer; ``settings`` override what the folder records.

        A folder saved by hf_ragtrain or sentence-transformers brings its pooling, normalisation,
        prompts and max length; a LoRA adapter folder (``adapter_config.json``) loads its base model
        with the adapter attached (trainable). ``lora`` adds a new adapter.
        """
        from ..offline import resolve_model_path

        path = resolve_model_path(name_or_path)
        recorded = settings_from_folder(path) if os.path.isdir(path) else {}
        recorded.pop("truncate_dim", None)  # an inference setting, not an encoder one
        merged = {**recorded, **{k: v for k, v in settings.items() if v is not None}}
        backbone = load_backbone(path, AutoModel, "FEATURE_EXTRACTION", lora=lora,
                                 attn_implementation=attn_implementation, torch_dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(backbone, tokenizer, EncoderSettings(**merged))

    @property
    def is_peft(self) -> bool:
        return is_peft(self.backbone)

    @property
    def embedding_dim(self) -> int:
        return int(self.config.hidden_size)

    def add_distill_projection(self, dim: int) -> nn.Linear:
        """A trainable linear map from this model's vectors to a teacher's dimension (embedding distillation).

        It serves the training loss only: ``forward``/``encode`` do not apply it, and the
        sentence-transformers folder does not contain it (it is saved beside, as
        ``distill_projection.safetensors``).
        """
        self.distill_projection = nn.Linear(self.embedding_dim, dim, bias=False)
        return self.distill_projection

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        enable_gradient_checkpointing(self.backbone, gradient_checkpointing_kwargs)

    # ----------------------------------------------------------------------------- tokenisation
    def max_length(self, kind: str) -> int:
        return self.settings.query_max_length if kind == "query" else self.settings.passage_max_length

    def prompt(self, kind: str) -> str:
        return self.settings.query_prompt if kind == "query" else self.settings.passage_prompt

    def tokenize(self, texts: Sequence[str], kind: str = "passage",
                 prompts: Sequence[str | None] | None = None) -> tuple[dict[str, list[list[int]]], int]:
        """Unpadded token ids of ``texts`` as ``kind`` (``query``/``passage``) and how many were cut.

        ``prompts`` (one per text, e.g. a record's own ``prompt``) replace the model's prompt for
        that text where given.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        default = self.prompt(kind)
        if prompts is None:
            full = [default + t for t in texts] if default else list(texts)
        else:
            full = [(p if p is not None else default) + t for p, t in zip(prompts, texts)]
        return tokenize_texts(self.tokenizer, full, self.max_length(kind))

    # ----------------------------------------------------------------------------- forward
    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Any) -> Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return pool(out.last_hidden_state, attention_mask, self.settings.pooling).float()

    @torch.no_grad()
    def encode(self, texts: Sequence[str] | str, batch_size: int = 64, kind: str | None = None,
               prompt_name: str | None = None, prompt: str | None = None, prompts: Sequence[str | None] | None = None,
               normalize_embeddings: bool | None = None,
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, show_progress_bar: bool = False,
               batch_tokens: int | None = None, truncate_dim: int | None = None, **unused: Any):
        """Embed texts for inference (sentence-transformers style arguments).

        ``kind``/``prompt_name`` (``query``, or ``passage``/``document``) pick the max length and
        prompt; ``prompt`` gives a prompt explicitly, ``prompts`` one per text (``None``: the
        default). Texts are sorted by length and batched by
        ``batch_size`` (or by ``batch_tokens`` padded tokens). Returns ``(N, D)`` float32.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        kind = kind or {"query": "query", "document": "passage", "passage": "passage"}.get(prompt_name or "", "passage")
        if prompts is None and prompt is not None:
            prompts = [prompt] * len(texts)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        dim = truncate_dim or self.embedding_dim
        out = torch.empty(len(texts), dim, dtype=torch.float32)
        if texts:
            enc, _ = self.tokenize(texts, kind, prompts)
            lengths = [len(ids) for ids in enc["input_ids"]]
            if batch_tokens:
                batches = pack_by_length(lengths, batch_tokens, min_run=len(lengths) + 1)
            else:
                order = sorted(range(len(texts)), key=lambda i: lengths[i])
                batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
            progress = tqdm(total=len(texts), desc="encoding", unit="text", disable=not show_progress_bar)
            for idx in batches:
                chunk = {k: v.to(device) for k, v in pad_micro_batches(self.tokenizer, enc, [idx])[0].items()}
                vec = self(**chunk)[:, :dim]
                if self.settings.normalize if normalize_embeddings is None else normalize_embeddings:
                    vec = torch.nn.functional.normalize(vec, dim=-1)
                out[idx] = vec.cpu()
                progress.update(len(idx))
            progress.close()
        if was_training:
            self.train()
        result = out if convert_to_tensor or not convert_to_numpy else out.numpy()
        return result[0] if single else result

    # ----------------------------------------------------------------------------- saving
    def load_weights(self, path: str) -> None:
        """Load weights saved by :meth:`save_pretrained` (full model or LoRA adapter) into this model."""
        load_trained_weights(self.backbone, path)

    def save_pretrained(self, path: str, state_dict: dict[str, Tensor] | None = None, merge_lora: bool = False,
                        truncate_dim: int | None = None, safe_serialization: bool = True) -> None:
        """Write a folder that ``SentenceTransformer(path)`` and :meth:`from_pretrained` load.

        Files: the backbone (weights and ``config.json``, or a LoRA adapter unless ``merge_lora``),
        the tokenizer, ``modules.json`` (Transformer, Pooling[, Normalize]), ``1_Pooling/config.json``,
        ``sentence_bert_config.json`` (``max_seq_length`` = ``passage_max_length``; ``query_length`` and
        ``document_length``, which sentence-transformers 6 applies in ``encode_query``/``encode_document``),
        ``config_sentence_transformers.json`` (prompts, cosine/dot similarity, ``truncate_dim``) and
        ``hf_ragtrain_encoder.json`` (every setting).
        ``state_dict`` (keys as in this module, e.g. gathered under DeepSpeed) replaces the live weights.
        """
        os.makedirs(path, exist_ok=True)
        save_backbone(self.backbone, path, sub_state_dict(state_dict, "backbone."), merge_lora=merge_lora,
                      safe_serialization=safe_serialization)
        self.tokenizer.save_pretrained(path)
        if self.distill_projection is not None:
            from safetensors.torch import save_file

            weight = (state_dict or {}).get("distill_projection.weight", self.distill_projection.weight)
            save_file({"weight": weight.detach().contiguous().cpu()}, os.path.join(path, "distill_projection.safetensors"))
        self._write_sentence_transformers_files(path, truncate_dim, adapter=self.is_peft and not merge_lora)

    def _write_sentence_transformers_files(self, path: str, truncate_dim: int | None, adapter: bool) -> None:
        import sentence_transformers

        s = self.settings
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if s.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            os.makedirs(os.path.join(path, "2_Normalize"), exist_ok=True)
        os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
        pooling = {"word_embedding_dimension": self.embedding_dim,
                   "pooling_mode_cls_token": s.pooling == "cls", "pooling_mode_mean_tokens": s.pooling == "mean",
                   "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
                   "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": s.pooling == "last_token",
                   "include_prompt": True}
        st_config = {
            "__version__": {"sentence_transformers": sentence_transformers.__version__,
                            "transformers": __import__("transformers").__version__, "pytorch": torch.__version__},
            "prompts": {"query": s.query_prompt, "document": s.passage_prompt},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if s.normalize else "dot",
        }
        if truncate_dim:
            st_config["truncate_dim"] = int(truncate_dim)
        files = {
            "modules.json": modules,
            os.path.join("1_Pooling", "config.json"): pooling,
            # query_length/document_length: sentence-transformers 6 applies them in encode_query/encode_document
            "sentence_bert_config.json": {"max_seq_length": s.passage_max_length, "do_lower_case": False,
                                          "query_length": s.query_max_length, "document_length": s.passage_max_length},
            "config_sentence_transformers.json": st_config,
            ENCODER_CONFIG: {**asdict(s), **({"truncate_dim": int(truncate_dim)} if truncate_dim else {})},
        }
        for name, content in files.items():
            with open(os.path.join(path, name), "w") as fh:
                json.dump(content, fh, indent=2)
        if adapter:
            logger.info("saved the LoRA adapter only; sentence-transformers loads its base model from %s",
                        self.backbone.peft_config["default"].base_model_name_or_path)
