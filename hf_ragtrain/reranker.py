"""One interface for every kind of reranker.

    from hf_ragtrain import Reranker

    reranker = Reranker.from_pretrained("runs/reranker")  # the kind is read from the folder
    reranker.rank("how do I sort a dict?", docs, top_k=3)  # [RankedDocument(corpus_id, score, text), ...]
    reranker.compute_score([("how do I sort a dict?", docs[0]), ...], normalize=True)

Kinds (``Reranker.from_pretrained(path, kind=...)`` picks one explicitly):

- ``cross-encoder``: any ``AutoModelForSequenceClassification`` with one logit;
- ``llm``: an :class:`~hf_ragtrain.LlmReranker` folder (yes-token or classifier head), or any
  causal LM with a prompt given as options (the bge-reranker-v2-gemma layout is
  ``template=BGE_TEMPLATE, tokenize="lines", yes_token="Yes"``);
- ``layerwise-llm``: an LlmReranker with layerwise heads, scored at one or several cutoff layers;
- ``zero-shot``: any chat model, scored by ``logit("Yes") - logit("No")`` of its answer;
- ``colbert``: a folder written by ColbertTrainer (MaxSim);
- ``bi-encoder``: a folder written by ContrastiveTrainer or any sentence-transformers embedder.

Detection reads only saved files (``hf_ragtrain_*.json``, ``config_sentence_transformers.json``,
the architectures in ``config.json``, a chat template), never the model's name.

Fast CPU scoring: ``backend="openvino"`` compiles a cross-encoder with OpenVINO (the ``openvino``
extra) at the reranker's dtype; the scores and every option are the same as with torch.

Long documents: ``long_doc="truncate"`` cuts the document to fit (the query keeps its own budget)
and reports how many were cut; ``long_doc="max_chunk"`` scores overlapping windows of the document
that fit next to the query and keeps the best. A new kind subclasses :class:`BaseReranker` and
implements :meth:`~BaseReranker.compute_score`; ``rank`` comes with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .hardware import autocast, default_device, resolve_dtype
from .modeling.backbone import read_json

logger = logging.getLogger(__name__)

LONG_DOC_MODES = ("truncate", "max_chunk")
#: what computes a cross-encoder's scores (``Reranker.from_pretrained(..., backend=...)``)
BACKENDS = ("torch", "openvino")
ZERO_SHOT_INSTRUCTION = ("Decide whether the document answers the query.\n"
                         "Query: {query}\nDocument: {document}\n"
                         "Reply with Yes if it does and No if it does not.")


@dataclass
class RankedDocument:
    """One entry of :meth:`BaseReranker.rank`: ``corpus_id`` is the position in the caller's list."""

    corpus_id: int
    score: float
    text: str | None


@dataclass
class ScoreStats:
    """What scoring did to the inputs, for the last call (``last``) and in total (``total``)."""

    pairs: int = 0
    truncated: int = 0  # pairs (or, with max_chunk, windows) cut to fit max_length
    windows: int = 0  # with max_chunk: the windows scored

    def add(self, other: "ScoreStats") -> None:
        self.pairs, self.truncated, self.windows = (self.pairs + other.pairs, self.truncated + other.truncated,
                                                    self.windows + other.windows)


def _as_pairs(pairs: Any) -> tuple[bool, list[str], list[str]]:
    """(single pair given?, queries, documents), checking that every pair is two strings."""
    single = isinstance(pairs, (tuple, list)) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs)
    items = [pairs] if single else list(pairs)
    queries, docs = [], []
    for n, pair in enumerate(items):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise TypeError(f"pair {n}: expected a (query, document) pair of strings, got {pair!r:.120}")
        _check_query(pair[0], f"the query of pair {n}")
        queries.append(pair[0])
        docs.append(pair[1])
    return single, queries, docs


def _check_query(query: Any, where: str = "the query") -> None:
    if not isinstance(query, str):
        raise TypeError(f"{where} must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"{where} is empty; there is nothing to rank the documents against")


def _check_docs(docs: Any) -> list:
    """``docs`` as a list of strings (``None`` marks a missing document, ranked last)."""
    if isinstance(docs, dict):
        raise TypeError("docs must be a list of strings, got a dict; pass list(d.values()) and map each result's "
                        "corpus_id (its position) back to list(d.keys())")
    if isinstance(docs, (str, bytes)) or not hasattr(docs, "__iter__"):
        raise TypeError(f"docs must be a list of strings, got {type(docs).__name__}")
    docs = list(docs)
    for i, doc in enumerate(docs):
        if doc is not None and not isinstance(doc, str):
            raise TypeError(f"document {i} is {type(doc).__name__} {doc!r:.60}; expected a string (or None for a "
                            "missing document)")
    return docs


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def split_windows(tokenizer: Any, text: str, size: int, overlap: int) -> list[str]:
    """Cut ``text`` into windows of at most ``size`` of its tokens, each overlapping the previous one
    by ``overlap`` tokens, at token boundaries (character offsets of a fast tokenizer)."""
    if size < 1:
        raise ValueError(f"no room for the document: window size {size}")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    if len(offsets) <= size:
        return [text]
    step = max(1, size - min(overlap, size // 2))
    windows = []
    for start in range(0, len(offsets), step):
        end = min(start + size, len(offsets))
        windows.append(text[offsets[start][0]:offsets[end - 1][1]])
        if end == len(offsets):
            break
    return windows


class BaseReranker:
    """The reranker interface. A new kind implements :meth:`compute_score`; :meth:`rank` is built on it."""

    def compute_score(self, pairs: Sequence[tuple[str, str]] | tuple[str, str], batch_size: int | None = None,
                      max_length: int | None = None, normalize: bool = False) -> list[float] | float:
        """Scores of (query, document) pairs in input order (a float for one pair given alone).
        ``normalize`` maps them into [0, 1] without changing their order."""
        raise NotImplementedError

    def rank(self, query: str, docs: Sequence[str], top_k: int | None = None, batch_size: int | None = None,
             max_length: int | None = None, normalize: bool = False) -> list[RankedDocument]:
        """``docs`` sorted by score, best first (ties keep the input order), at most ``top_k`` of them.

        ``corpus_id`` and ``text`` refer to the caller's list. Empty documents (``""``, whitespace,
        ``None``) are not scored: they rank last with score ``-inf``, and a log line counts them.
        """
        _check_query(query)
        docs = _check_docs(docs)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive number of documents or None (all of them), got {top_k!r}")
        scored = [i for i, d in enumerate(docs) if isinstance(d, str) and d.strip()]
        scores = self.compute_score([(query, docs[i]) for i in scored], batch_size=batch_size,
                                    max_length=max_length, normalize=normalize) if scored else []
        ranked = sorted((RankedDocument(i, float(s), docs[i]) for i, s in zip(scored, scores)),
                        key=lambda r: -r.score)
        if len(scored) < len(docs):
            kept = set(scored)
            empty = [i for i in range(len(docs)) if i not in kept]
            logger.info("%d of %d documents are empty; they rank last, unscored", len(empty), len(docs))
            ranked += [RankedDocument(i, float("-inf"), docs[i]) for i in empty]
        return ranked if top_k is None else ranked[:top_k]


class Reranker(BaseReranker):
    """The built-in kinds, and ``Reranker.from_pretrained`` to load any of them.

    Built-in kinds implement ``_score`` (raw scores of pairs), ``_doc_budget`` (document tokens
    that fit beside a query) and ``_normalize``; ``compute_score`` adds long-document handling,
    the single-pair form, normalisation and the truncation count (``stats``).
    """

    kind: str = ""
    _kinds: dict[str, type["Reranker"]] = {}
    #: the first stage's score added to every pair's (set by ``from_pretrained`` from the folder)
    fusion: Any = None
    #: log the truncation count of every ``compute_score`` call (callers that score many small
    #: batches, such as a teacher during training, turn it off and read ``total`` instead)
    report_truncation: bool = True

    def __init__(self, tokenizer: Any, max_length: int, batch_size: int = 32, long_doc: str = "truncate",
                 overlap: int = 32, show_progress: bool | None = None):
        if long_doc not in LONG_DOC_MODES:
            raise ValueError(f"long_doc must be one of {LONG_DOC_MODES}, got {long_doc!r}")
        self.tokenizer, self.max_length, self.batch_size = tokenizer, max_length, batch_size
        self.long_doc, self.overlap, self.show_progress = long_doc, overlap, show_progress
        self.last, self.total = ScoreStats(), ScoreStats()

    @property
    def module(self) -> torch.nn.Module:
        """The model that scores (its parameters, its device)."""
        raise NotImplementedError

    @property
    def position_limit(self) -> int | None:
        """The most tokens the model reads at once (its position embeddings), if it says."""
        return getattr(getattr(self.module, "config", None), "max_position_embeddings", None)

    def _check_sizes(self, max_length: int | None, batch_size: int | None) -> None:
        """An explicit ``max_length`` or ``batch_size`` is used as given, so it must make sense."""
        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer (or None for the default), got {value!r}")
        limit = self.position_limit
        if max_length is not None and limit and max_length > limit:
            raise ValueError(f"max_length {max_length} is more than the {limit} positions this model has; use {limit} "
                             "or less (long_doc='max_chunk' scores longer documents window by window)")

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Reranker._kinds[cls.kind] = cls

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, kind: str | None = None, first_stage: bool = True,
                        **options: Any) -> "Reranker":
        """Load a saved reranker or encoder folder (or the ``minilm``/``smollm2`` aliases) as the
        kind its files declare, or as ``kind``. ``options`` go to that kind's loader (``max_length``,
        ``batch_size``, ``long_doc``, ``overlap``, ``device``, ``dtype``, and kind-specific ones).
        A folder trained with its first stage's score (``first_stage_fusion.json``, see
        :mod:`hf_ragtrain.modeling.fusion`) adds that score to every pair's; ``first_stage=False``
        gives the model's own score alone."""
        from .modeling.fusion import FirstStageFusion
        from .offline import resolve_model_path

        path = resolve_model_path(name_or_path)
        if cls.kind:  # called on a kind's own class
            reranker = cls._load(path, **options)
        else:
            kind = kind or reranker_kind(path)
            if kind not in cls._kinds:
                raise ValueError(f"unknown reranker kind {kind!r}; choose one of {sorted(cls._kinds)}")
            if options.get("backend", "torch") != "torch" and kind != "cross-encoder":
                raise ValueError(f"backend={options['backend']!r} is for cross-encoders; {path} holds a {kind} "
                                 "reranker, which scores with torch (leave backend out)")
            reranker = cls._kinds[kind]._load(path, **options)
        reranker.fusion = FirstStageFusion.from_folder(path) if first_stage else None
        return reranker

    @classmethod
    def _load(cls, path: str, **options: Any) -> "Reranker":
        raise NotImplementedError

    # ------------------------------------------------------------------ scoring
    def _score(self, queries: list[str], docs: list[str], batch_size: int, max_length: int, stats: ScoreStats,
               **options: Any) -> np.ndarray:
        raise NotImplementedError

    def _doc_budget(self, query: str, max_length: int) -> int:
        raise NotImplementedError

    def _normalize(self, scores: np.ndarray, queries: list[str]) -> np.ndarray:
        return sigmoid(scores)

    def _progress(self, n: int) -> bool:
        return self.show_progress if self.show_progress is not None else n >= 2000

    def compute_score(self, pairs, batch_size: int | None = None, max_length: int | None = None,
                      normalize: bool = False, **options: Any):
        single, queries, docs = _as_pairs(pairs)
        self._check_sizes(max_length, batch_size)
        batch_size = self.batch_size if batch_size is None else batch_size
        max_length = self.max_length if max_length is None else max_length
        stats = ScoreStats(pairs=len(docs))
        if not docs:
            return []
        if self.long_doc == "max_chunk":
            owner, wq, wd = [], [], []
            for i, (q, d) in enumerate(zip(queries, docs)):
                windows = split_windows(self.tokenizer, d, self._doc_budget(q, max_length), self.overlap)
                owner += [i] * len(windows)
                wq += [q] * len(windows)
                wd += windows
            stats.windows = len(wd)
            raw = self._score(wq, wd, batch_size, max_length, stats, **options)
            scores = np.full((len(docs),) + raw.shape[1:], -np.inf, dtype=np.float64)
            np.maximum.at(scores, np.asarray(owner), raw)
        else:
            scores = np.asarray(self._score(queries, docs, batch_size, max_length, stats, **options), dtype=np.float64)
        if self.fusion is not None:  # the first stage's score, on the whole document
            term = self.fusion.scores(queries, docs)
            scores = scores + (term if scores.ndim == 1 else term[:, None])
        if stats.truncated and self.report_truncation:
            what = "windows" if self.long_doc == "max_chunk" else "pairs"
            logger.warning("%d of %d %s were longer than max_length %d and were cut%s", stats.truncated,
                           stats.windows or stats.pairs, what, max_length,
                           "" if self.long_doc == "max_chunk" else " (long_doc='max_chunk' scores every part)")
        self.last = stats
        self.total.add(stats)
        if normalize:
            scores = self._normalize(scores, queries)
        if scores.ndim == 2:  # several layers: one list per layer
            return [float(s) for s in scores[0]] if single else [scores[:, j].tolist() for j in range(scores.shape[1])]
        return float(scores[0]) if single else scores.tolist()


def _within_positions(length: int, config: Any) -> int:
    """A default max length, cut to the positions the model has (a folder may record more)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit and length > limit:
        logger.info("the folder's max length %d is more than the model's %d positions; using %d", length, limit, limit)
        return limit
    return length


def _device_and_dtype(device: str | None, dtype: Any) -> tuple[torch.device, torch.dtype]:
    """``device=None``: the GPU when there is one; ``dtype``: see :func:`hf_ragtrain.hardware.resolve_dtype`."""
    device = torch.device(device) if device else default_device()
    return device, resolve_dtype(device, dtype)


class _PairModelReranker(Reranker):
    """Kinds that read the query and the document together (cross-encoders and LLMs).

    ``batch_tokens`` packs the length-sorted pairs into batches of at most that many padded tokens,
    in place of ``batch_size`` pairs (a memory bound that does not depend on the lengths)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, device: str | None = None, dtype: Any = None,
                 batch_tokens: int | None = None, **options: Any):
        super().__init__(tokenizer, max_length, **options)
        self.device, self.dtype = _device_and_dtype(device, dtype)
        self.model = model.to(self.device).eval()
        self.batch_tokens = batch_tokens
        self._check_sizes(self.max_length, self.batch_size)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def _scorer(self, **options: Any) -> Any:
        return self.model

    def _score(self, queries, docs, batch_size, max_length, stats, **options):
        from .modeling.cross_encoder import ScoreReport, score_pairs

        report = ScoreReport()
        sizing = {"batch_tokens": self.batch_tokens} if self.batch_tokens else {"batch_size": batch_size}
        with autocast(self.device, self.dtype):
            scores = score_pairs(self._scorer(**options), self.tokenizer, queries, docs, max_length=max_length,
                                 report=report, show_progress=self._progress(len(docs)), **sizing)
        stats.truncated += report.truncated
        return scores

    def _query_tokens(self, query: str) -> int:
        return len(self.tokenizer(query, add_special_tokens=False)["input_ids"])


class CrossEncoderReranker(_PairModelReranker):
    """Any ``AutoModelForSequenceClassification`` with one logit; the score is the raw logit
    (``normalize``: its sigmoid), the same number as sentence-transformers ``CrossEncoder.predict``
    with an identity activation."""

    kind = "cross-encoder"

    #: the compiled graph that scores in place of ``model`` (``backend="openvino"``), else None
    graph: Any = None

    @classmethod
    def _load(cls, path: str, max_length: int | None = None, attn_implementation: str | None = None,
              backend: str = "torch", **options: Any) -> "CrossEncoderReranker":
        """``backend``: ``"torch"``, or ``"openvino"`` (CPU only; the model compiled by OpenVINO at the
        reranker's dtype, fp32 or bf16: :mod:`hf_ragtrain.modeling.openvino_graph`)."""
        from .modeling.cross_encoder import load_cross_encoder

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if attn_implementation:
            model, tokenizer = load_cross_encoder(path, attn_implementation=attn_implementation)
        else:  # sdpa: for inference on CPU it measured 1.5x eager on SciFact pairs (bench_rerank_inference.py)
            try:
                model, tokenizer = load_cross_encoder(path, attn_implementation="sdpa")
            except ValueError:  # an architecture without sdpa support
                model, tokenizer = load_cross_encoder(path, attn_implementation="eager")
        # the length it was trained at when its folder says so (our recipes and sentence-transformers save it
        # as the tokenizer's model_max_length), never more than its positions or 512
        limit = min(getattr(model.config, "max_position_embeddings", 512), 512, tokenizer.model_max_length or 512)
        reranker = cls(model, tokenizer, max_length or limit, **options)
        if backend == "openvino":
            from .modeling.openvino_graph import OpenVinoCrossEncoder

            if reranker.device.type != "cpu":
                raise ValueError(f"backend='openvino' scores on the CPU; got device {reranker.device}. Use "
                                 "backend='torch' on a GPU")
            reranker.graph = OpenVinoCrossEncoder(model, tokenizer, reranker.dtype)
        return reranker

    def _scorer(self, **options: Any) -> Any:
        return self.graph if self.graph is not None else self.model

    def _doc_budget(self, query: str, max_length: int) -> int:
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        room = max_length - specials
        return room - min(self._query_tokens(query), room // 2)


class LlmPairReranker(_PairModelReranker):
    """An :class:`~hf_ragtrain.LlmReranker` (yes-token or classifier head); ``normalize`` is the sigmoid."""

    kind = "llm"

    def __init__(self, reranker: Any, device: str | None = None, dtype: Any = None, **options: Any):
        default = _within_positions(reranker.settings.max_length, reranker.config)
        super().__init__(reranker, reranker.tokenizer, options.pop("max_length", None) or default, device=device,
                         dtype=dtype, **options)
        self.reranker = reranker

    @classmethod
    def _load(cls, path: str, max_length: int | None = None, batch_size: int = 32, long_doc: str = "truncate",
              overlap: int = 32, show_progress: bool | None = None, device: str | None = None, dtype: Any = None,
              batch_tokens: int | None = None, **settings: Any) -> "LlmPairReranker":
        from .modeling.llm_reranker import LlmReranker

        if max_length is not None:
            settings["max_length"] = max_length
        model = LlmReranker.from_pretrained(path, **settings)
        return cls(model, batch_size=batch_size, long_doc=long_doc, overlap=overlap, show_progress=show_progress,
                   device=device, dtype=dtype, batch_tokens=batch_tokens)

    def _doc_budget(self, query: str, max_length: int) -> int:
        room = max_length - self.reranker.template_tokens
        return room - min(self._query_tokens(query), room // 2)


class LayerwiseLlmReranker(LlmPairReranker):
    """A layerwise LlmReranker. ``compute_score(pairs, cutoff_layers=[8, 12])`` returns one list of
    scores per layer, in the order asked (one forward pass, run only up to the highest layer);
    ``cutoff_layers=None`` scores at the folder's cutoff layer (the last by default)."""

    kind = "layerwise-llm"

    @property
    def scored_layers(self) -> list[int]:
        return self.reranker.scored_layers

    def _scorer(self, cutoff_layers: int | Sequence[int] | None = None) -> Any:
        if cutoff_layers is None or isinstance(cutoff_layers, int):
            return self.reranker.at_layers(cutoff_layers)
        return self.reranker.at_layers(None, list(cutoff_layers))


class ZeroShotReranker(LlmPairReranker):
    """Any chat model, unchanged: the pair goes into ``instruction`` as the user's message, the chat
    template adds the assistant's turn, and the score is ``logit(yes_token) - logit(no_token)`` of
    the answer's first token (``normalize``: its sigmoid, P(yes | yes or no)).

    The prompt is the chat template's own text tokenized without the tokenizer's extra special
    tokens, so models with no BOS token, or whose template writes its own, read exactly what the
    template renders.
    """

    kind = "zero-shot"

    @classmethod
    def _load(cls, path: str, instruction: str = ZERO_SHOT_INSTRUCTION, yes_token: str = "Yes",
              no_token: str = "No", max_length: int | None = None, **options: Any) -> "ZeroShotReranker":
        from transformers import AutoTokenizer

        template = chat_prompt_template(AutoTokenizer.from_pretrained(path), instruction)
        positions = (read_json(os.path.join(path, "config.json")) or {}).get("max_position_embeddings") or 512
        return super()._load(path, template=template, yes_token=yes_token, no_token=no_token, head="yes_token",
                             add_special_tokens=False, tokenize="whole", max_length=max_length or min(512, positions),
                             **options)


def chat_prompt_template(tokenizer: Any, instruction: str = ZERO_SHOT_INSTRUCTION) -> str:
    """The chat template rendered around ``instruction`` (a user message with ``{query}`` and
    ``{document}``), ending where the assistant's answer starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; zero-shot scoring needs a chat model "
                         "(or use kind='llm' with a template)")
    for name in ("{query}", "{document}"):
        if instruction.count(name) != 1:
            raise ValueError(f"the instruction must contain {name} exactly once: {instruction!r}")
    text = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True,
                                         tokenize=False)
    if text.count("{query}") != 1 or text.count("{document}") != 1:
        raise ValueError("the chat template changed the {query}/{document} placeholders; pass an instruction "
                         "it leaves intact")
    return text


class _EncoderReranker(Reranker):
    """Kinds that encode queries and documents apart (each text encoded once per call). A kind names
    its encoder class and the settings fields of the document's max length and prompt."""

    _doc_length_field = _doc_prompt_field = ""

    def __init__(self, encoder: Any, max_length: int, device: str | None = None, dtype: Any = None, **options: Any):
        super().__init__(encoder.tokenizer, max_length, **options)
        self.device, self.dtype = _device_and_dtype(device, dtype)
        self.encoder = encoder.to(self.device).eval()
        self._check_sizes(self.max_length, self.batch_size)

    @staticmethod
    def _encoder_class() -> Any:
        raise NotImplementedError

    @classmethod
    def _load(cls, path: str, max_length: int | None = None, device: str | None = None, dtype: Any = None,
              **options: Any) -> "_EncoderReranker":
        encoder = cls._encoder_class().from_pretrained(path)
        default = _within_positions(getattr(encoder.settings, cls._doc_length_field), encoder.config)
        return cls(encoder, max_length or default, device=device, dtype=dtype, **options)

    @property
    def module(self) -> torch.nn.Module:
        return self.encoder

    @property
    def _doc_prompt(self) -> str:
        return getattr(self.encoder.settings, self._doc_prompt_field)

    def _doc_budget(self, query: str, max_length: int) -> int:
        prompt = len(self.tokenizer(self._doc_prompt, add_special_tokens=False)["input_ids"]) if self._doc_prompt else 0
        return max_length - self.tokenizer.num_special_tokens_to_add(pair=False) - prompt

    @contextlib.contextmanager
    def _doc_length(self, max_length: int):
        settings, name = self.encoder.settings, self._doc_length_field
        before = getattr(settings, name)
        setattr(settings, name, max_length)
        try:
            yield
        finally:
            setattr(settings, name, before)


class BiEncoderReranker(_EncoderReranker):
    """A bi-encoder (ours or a sentence-transformers folder): the dot product of the query and
    document vectors, the cosine when the model normalises; ``normalize``: ``(cos + 1) / 2``
    (the sigmoid for an unnormalised model). ``max_length`` is the document's."""

    kind = "bi-encoder"
    _doc_length_field, _doc_prompt_field = "passage_max_length", "passage_prompt"

    @staticmethod
    def _encoder_class() -> Any:
        from .modeling.bi_encoder import BiEncoder

        return BiEncoder

    def _score(self, queries, docs, batch_size, max_length, stats, **options):
        uq, ud = list(dict.fromkeys(queries)), list(dict.fromkeys(docs))
        with self._doc_length(max_length), autocast(self.device, self.dtype):
            stats.truncated += self.encoder.tokenize(ud, "passage")[1]
            qv = self.encoder.encode(uq, batch_size=batch_size, kind="query", convert_to_tensor=True)
            dv = self.encoder.encode(ud, batch_size=batch_size, kind="passage", convert_to_tensor=True,
                                     show_progress_bar=self._progress(len(ud)))
        qi, di = {q: i for i, q in enumerate(uq)}, {d: i for i, d in enumerate(ud)}
        q = qv[[qi[x] for x in queries]].double()
        d = dv[[di[x] for x in docs]].double()
        return (q * d).sum(-1).numpy()

    def _normalize(self, scores, queries):
        return (scores + 1) / 2 if self.encoder.settings.normalize else sigmoid(scores)


class ColbertReranker(_EncoderReranker):
    """A ColBERT model: the MaxSim score; ``normalize``: the mean best similarity per query token,
    mapped from [-1, 1] to [0, 1]. ``max_length`` is the document's."""

    kind = "colbert"
    _doc_length_field, _doc_prompt_field = "document_max_length", "document_prompt"

    @staticmethod
    def _encoder_class() -> Any:
        from .modeling.colbert import ColbertEncoder

        return ColbertEncoder

    def _score(self, queries, docs, batch_size, max_length, stats, **options):
        with self._doc_length(max_length), autocast(self.device, self.dtype):
            stats.truncated += self.encoder.tokenize(list(dict.fromkeys(docs)), "document")[1]
            scores, query_vectors = self.encoder.score_pairs(queries, docs, batch_size)
        self._query_vectors = dict(zip(queries, query_vectors.tolist()))
        return scores.numpy()

    def _normalize(self, scores, queries):
        n = np.asarray([max(1, self._query_vectors[q]) for q in queries], dtype=np.float64)
        return (scores / n + 1) / 2


def find_reranker_kind(path: str) -> str | None:
    """The kind a folder holds, from its saved files only (never from its name), or ``None`` when its
    files do not say: not a folder, a plain base checkpoint (a ``BertModel``), or a causal LM with
    neither reranker settings nor a chat template. A causal LM with a chat template is ``zero-shot``."""
    from .modeling.bi_encoder import ENCODER_CONFIG
    from .modeling.colbert import COLBERT_CONFIG
    from .modeling.llm_reranker import SETTINGS_FILE
    from .modeling.splade import SPLADE_CONFIG

    if not os.path.isdir(path):
        return None

    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    llm = read_json(os.path.join(path, SETTINGS_FILE))
    if llm:
        return "layerwise-llm" if llm.get("layerwise") else "llm"
    st_type = (read_json(os.path.join(path, "config_sentence_transformers.json")) or {}).get("model_type")
    if has(COLBERT_CONFIG) or st_type == "MultiVectorEncoder":
        return "colbert"
    if has(SPLADE_CONFIG) or st_type == "SparseEncoder":
        return "splade"
    if st_type == "CrossEncoder":
        return "cross-encoder"
    if has(ENCODER_CONFIG) or has("modules.json"):
        return "bi-encoder"
    architectures = _architectures(path)
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    if any(a.endswith("ForCausalLM") for a in architectures):
        chat = (read_json(os.path.join(path, "tokenizer_config.json")) or {}).get("chat_template")
        return "zero-shot" if chat or has("chat_template.jinja") else None
    return None


def _architectures(path: str) -> list[str]:
    return (read_json(os.path.join(path, "config.json")) or {}).get("architectures") or []


def reranker_kind(path: str) -> str:
    """The kind a folder holds (:func:`find_reranker_kind`); an error that says what to do when its
    files do not say."""
    kind = find_reranker_kind(path)
    if kind is not None:
        return kind
    architectures = _architectures(path)
    if any(a.endswith("ForCausalLM") for a in architectures):
        raise ValueError(f"{path}: a causal LM with no reranker settings and no chat template; load it with "
                         "kind='llm' and a template")
    raise ValueError(f"{path}: cannot tell which kind of reranker this folder holds (architectures "
                     f"{architectures or 'missing'}); pass kind= one of {sorted(Reranker._kinds)}")


class SparseReranker(_EncoderReranker):
    """A SPLADE model (ours or a sentence-transformers ``SparseEncoder`` folder): the dot product of the
    sparse query and document vectors; ``normalize``: its sigmoid. ``max_length`` is the document's."""

    kind = "splade"
    _doc_length_field, _doc_prompt_field = "document_max_length", "document_prompt"

    @staticmethod
    def _encoder_class() -> Any:
        from .modeling.splade import SpladeEncoder

        return SpladeEncoder

    def _score(self, queries, docs, batch_size, max_length, stats, **options):
        with self._doc_length(max_length), autocast(self.device, self.dtype):
            stats.truncated += self.encoder.tokenize(list(dict.fromkeys(docs)), "document")[1]
            return self.encoder.score_pairs(queries, docs, batch_size).numpy()

    def _normalize(self, scores, queries):
        return sigmoid(scores)


RERANKER_KINDS = ("cross-encoder", "llm", "layerwise-llm", "zero-shot", "colbert", "splade", "bi-encoder")
#: Kinds that read query and document together (``batch_tokens`` applies to them).
PAIR_KINDS = ("cross-encoder", "llm", "layerwise-llm", "zero-shot")


__all__ = ["BaseReranker", "BiEncoderReranker", "ColbertReranker", "CrossEncoderReranker", "LayerwiseLlmReranker",
           "LlmPairReranker", "RankedDocument", "Reranker", "ScoreStats", "SparseReranker", "ZeroShotReranker", "chat_prompt_template",
           "find_reranker_kind", "reranker_kind", "split_windows", "ZERO_SHOT_INSTRUCTION", "LONG_DOC_MODES",
           "PAIR_KINDS", "RERANKER_KINDS"]
