"""Evaluate hf_ragtrain models with mteb 2.

* Tasks: :func:`beir_task` turns a local BEIR folder into an mteb retrieval task (a reranking task
  when ``top_ranked`` candidates are given); :func:`records_task` does the same for reranking
  records (query, positives, negatives), such as the bundled Python FAQ dev set;
  :func:`get_tasks` resolves mteb's built-in task names (those download from the Hub).
* Adapters: :class:`MtebEncoder` gives any sentence-transformers style ``encode(texts)`` object
  mteb's encoder protocol; :class:`MtebReranker` gives any :class:`~hf_ragtrain.Reranker` mteb's
  cross-encoder protocol (``predict``); :class:`MtebColbert` gives a ColBERT model mteb's search
  protocol (full-corpus MaxSim).
* Running: :func:`run_mteb` evaluates one model on tasks and :func:`two_stage` evaluates a
  reranker the way it is used: a first-stage encoder retrieves the top ``k`` of each query
  through mteb, and the reranker reorders them. Results come back as plain dicts
  ``{task: {split: {metric: value}}}`` and are written in mteb's results layout
  (``<folder>/results/<model>/<revision>/<task>.json``), which ``mteb.ResultCache(folder)`` reads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..data.beir import load_beir
from ..data.records import RetrievalRecord
from ..hardware import autocast, default_device

logger = logging.getLogger(__name__)


def _plain_metrics(entry: Mapping[str, Any]) -> dict[str, float]:
    """mteb's numeric metrics under mteb's names, without the abstention (``nauc_*``) family."""
    return {k: float(v) for k, v in entry.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("nauc_")}


# --------------------------------------------------------------------------------------------- tasks


def _local_task(name: str, corpus: Mapping[str, Mapping[str, str]], queries: Mapping[str, str],
                qrels: Mapping[str, Mapping[str, int]], split: str = "test",
                top_ranked: Mapping[str, Sequence[str]] | None = None, source: str = "local", revision: str = "local"):
    """An mteb retrieval task over an in-memory corpus, queries and qrels of one split.

    With ``top_ranked`` (query id -> candidate doc ids) it is a reranking task: models score only
    those candidates, which is what a cross-encoder needs. mteb reads a task's metadata from its
    class, so each task gets a class of its own.
    """
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=name, description=f"Local task built by hf_ragtrain from {source}.", reference=None,
        type="Reranking" if top_ranked is not None else "Retrieval", category="t2t", modalities=["text"],
        eval_splits=[split], eval_langs=["eng-Latn"], main_score="ndcg_at_10",
        dataset={"path": source, "revision": revision}, date=None, domains=None, task_subtypes=None, license=None,
        annotations_creators=None, dialect=None, sample_creation=None, bibtex_citation=None,
    )

    def load_data(self, **kwargs: Any) -> None:
        import datasets
        from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

        docs = datasets.Dataset.from_list(
            [{"id": i, "title": d.get("title") or "", "text": d.get("text") or ""} for i, d in corpus.items()])
        qs = datasets.Dataset.from_list([{"id": i, "text": t} for i, t in queries.items()])
        top = {q: list(c) for q, c in top_ranked.items()} if top_ranked is not None else None
        self.dataset = {"default": {split: RetrievalSplitData(
            corpus=docs, queries=qs, relevant_docs={q: dict(r) for q, r in qrels.items()}, top_ranked=top)}}
        self.data_loaded = True

    cls = type(f"LocalTask_{name}", (AbsTaskRetrieval,), {"metadata": metadata, "load_data": load_data,
                                                         "hf_ragtrain_local": True, "__module__": __name__})
    return cls()


def _folder_revision(path: str, split: str) -> str:
    """A fingerprint (names, sizes, mtimes) of a BEIR folder's files for one split: mteb keys results by
    dataset revision."""
    digest = hashlib.sha1()
    for rel in ("corpus.jsonl", "queries.jsonl", os.path.join("qrels", f"{split}.tsv")):
        full = os.path.join(path, rel)
        if os.path.exists(full):
            digest.update(f"{rel}:{os.path.getsize(full)}:{int(os.path.getmtime(full))}".encode())
    return digest.hexdigest()[:12]


def beir_task(beir_dir: str, split: str = "test", name: str | None = None,
              top_ranked: Mapping[str, Sequence[str]] | None = None):
    """An mteb task for ``split`` of a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).

    The task is named after the folder (e.g. ``scifact``) unless ``name`` is given. Queries of the
    split without a judged-relevant document are left out (as mteb and BEIR do) and counted in the log.
    """
    data = load_beir(beir_dir, split=split)
    name = name or os.path.basename(os.path.normpath(beir_dir))
    queries = {q: t for q, t in data.queries.items() if any(g > 0 for g in data.qrels.get(q, {}).values())}
    unjudged = sum(1 for q in data.qrels if q not in queries)
    if unjudged:
        logger.info("%s (%s): %d queries without a relevant document left out", beir_dir, split, unjudged)
    qrels = {q: data.qrels[q] for q in queries}
    return _local_task(name=name, corpus=data.corpus, queries=queries, qrels=qrels, split=split,
                       top_ranked=top_ranked, source=os.path.abspath(beir_dir),
                       revision=_folder_revision(beir_dir, split))


def records_task(records: Sequence[RetrievalRecord], name: str, split: str = "dev", source: str = "records"):
    """A reranking task from records: each query's candidates are its positives and negatives.

    Queries, documents, ids and grades are exactly those :class:`~hf_ragtrain.RerankingEvaluator`
    uses (``prompt + query``; ``pos_ids``/``neg_ids`` or positional ids, here prefixed with the
    query id so they are unique in the corpus), so mteb ranks the same candidates the same way and
    the two must report the same metrics.
    """
    from .reranking import records_to_run_inputs

    qids, dids, queries, docs, qrels = records_to_run_inputs(records)
    positional = {i for i, rec in enumerate(records) if not (rec.pos_ids or rec.neg_ids)}
    owner = {rec.query_id if rec.query_id is not None else str(i): i for i, rec in enumerate(records)}
    corpus: dict[str, dict[str, str]] = {}
    query_text: dict[str, str] = {}
    top: dict[str, list[str]] = {}
    judged: dict[str, dict[str, int]] = {}

    def corpus_id(qid: str, did: str) -> str:
        return f"{qid}/{did}" if owner[qid] in positional else did

    for qid, did, query, doc in zip(qids, dids, queries, docs):
        cid = corpus_id(qid, did)
        if corpus.setdefault(cid, {"title": "", "text": doc})["text"] != doc:
            raise ValueError(f"{source}: document id {did!r} has two different texts (query {qid!r} and another)")
        query_text[qid] = query
        top.setdefault(qid, []).append(cid)
    for qid, rels in qrels.items():
        judged[qid] = {corpus_id(qid, d): g for d, g in rels.items()}
    return _local_task(name=name, corpus=corpus, queries=query_text, qrels=judged, split=split,
                       top_ranked={q: list(dict.fromkeys(c)) for q, c in top.items()}, source=source)


def get_tasks(names: Iterable[str]):
    """mteb's built-in tasks by name (they download their data from the Hub, so need network)."""
    import mteb

    names = [n.strip() for n in names if n.strip()]
    try:
        return list(mteb.get_tasks(tasks=names))
    except Exception as err:  # mteb raises KeyError/ValueError for unknown names
        raise ValueError(f"unknown mteb task name(s) {names}: {err}") from err


# ------------------------------------------------------------------------------------------ adapters


def _model_meta(name: str, revision: str | None, scoring: str, n_parameters: int | None = None,
                max_tokens: int | None = None, embed_dim: int | None = None):
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    return ModelMeta.create_empty(overwrites={
        "name": name, "revision": revision or "no_revision_available",
        "similarity_fn_name": ScoringFunction(scoring), "framework": ["PyTorch", "Sentence Transformers"],
        "n_parameters": n_parameters, "max_tokens": max_tokens, "embed_dim": embed_dim,
        "languages": ["eng-Latn"], "open_weights": True,
    })


def _texts(loader: Iterable[Mapping[str, Any]]) -> list[str]:
    return [text for batch in loader for text in batch["text"]]


class MtebEncoder:
    """mteb encoder protocol over an object with ``encode(texts, batch_size=..., normalize_embeddings=...)``.

    Embeddings are L2-normalised and compared by cosine (dot product of normalised vectors).
    ``query_prompt``/``document_prompt`` are prepended to the texts mteb passes as queries and
    documents. An encoder that knows queries from passages itself (a
    :class:`~hf_ragtrain.BiEncoder`, which applies its own prompts and max lengths) gets
    ``kind="query"``/``"passage"`` instead.

    ``truncate_dim`` keeps the first dimensions of each vector (Matryoshka), re-normalised.
    ``cache`` (a dict, shareable between adapters of the same encoder) keeps each text's full vector,
    so evaluating several dimensions encodes the corpus once.
    """

    def __init__(self, encoder: Any, name: str = "local/encoder", revision: str | None = None,
                 query_prompt: str = "", document_prompt: str = "", batch_size: int = 64,
                 truncate_dim: int | None = None, cache: dict | None = None):
        self.encoder = encoder
        self.query_prompt, self.document_prompt = query_prompt, document_prompt
        self.batch_size = batch_size
        self.truncate_dim = truncate_dim
        self.cache = cache
        self.kind_aware = hasattr(encoder, "settings") and hasattr(encoder, "tokenize")
        self.mteb_model_meta = _model_meta(name, revision, "cosine", embed_dim=truncate_dim)

    def _encode(self, texts: list[str], kind: str | None) -> np.ndarray:
        if self.kind_aware:
            return np.asarray(self.encoder.encode(texts, kind="query" if kind == "query" else "passage",
                                                  batch_size=self.batch_size), dtype=np.float32)
        prefix = self.query_prompt if kind == "query" else self.document_prompt if kind == "document" else ""
        if prefix:
            texts = [prefix + t for t in texts]
        return np.asarray(self.encoder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True),
                          dtype=np.float32)

    def encode(self, inputs, *, task_metadata=None, hf_split=None, hf_subset=None, prompt_type=None,
               **kwargs) -> np.ndarray:
        texts = _texts(inputs)
        kind = getattr(prompt_type, "value", prompt_type)
        if self.cache is None:
            vectors = self._encode(texts, kind)
        else:
            missing = list(dict.fromkeys(t for t in texts if (kind, t) not in self.cache))
            if missing:
                for text, vec in zip(missing, self._encode(missing, kind)):
                    self.cache[(kind, text)] = vec
            vectors = np.stack([self.cache[(kind, t)] for t in texts]) if texts else np.zeros((0, 1), np.float32)
        if self.truncate_dim:
            vectors = vectors[:, : self.truncate_dim]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def similarity(self, embeddings1, embeddings2):
        a, b = _as_tensor(embeddings1), _as_tensor(embeddings2)
        return _normalise(a) @ _normalise(b).T

    def similarity_pairwise(self, embeddings1, embeddings2):
        a, b = _normalise(_as_tensor(embeddings1)), _normalise(_as_tensor(embeddings2))
        return (a * b).sum(-1)


def _as_tensor(x):
    import torch

    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    return t.unsqueeze(0) if t.dim() == 1 else t


def _normalise(t):
    import torch

    return torch.nn.functional.normalize(t, dim=-1)


class MtebReranker:
    """mteb cross-encoder protocol over a :class:`~hf_ragtrain.BaseReranker` (any kind).

    mteb hands ``predict`` two loaders of the same length (queries, documents); all pairs go to the
    reranker's ``compute_score`` in one call (length-sorted batches), and its raw scores are returned
    (rankings do not depend on a monotone activation). A :class:`~hf_ragtrain.Reranker` counts the
    pairs and how many were cut to its max length in ``reranker.total``.
    """

    def __init__(self, reranker: Any, name: str = "local/reranker", revision: str | None = None):
        self.reranker = reranker
        module = getattr(reranker, "module", None)
        self.mteb_model_meta = _model_meta(name, revision, "custom",
                                           n_parameters=sum(p.numel() for p in module.parameters()) if module else None,
                                           max_tokens=getattr(reranker, "max_length", None))

    def predict(self, inputs1, inputs2, *, task_metadata=None, hf_split=None, hf_subset=None, prompt_type=None,
                **kwargs) -> np.ndarray:
        queries, docs = _texts(inputs1), _texts(inputs2)
        if len(queries) != len(docs):
            raise ValueError(f"predict got {len(queries)} queries but {len(docs)} documents")
        if not docs:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.reranker.compute_score(list(zip(queries, docs))), dtype=np.float32)


def _dataset_texts(dataset, task_metadata, prompt_type) -> list[str]:
    """The texts mteb's own encoders would get for ``dataset``: documents as title + text, queries
    with their instruction (mteb's dataloader, so every adapter sees the same strings)."""
    from mteb._create_dataloaders import create_dataloader

    return _texts(create_dataloader(dataset, task_metadata=task_metadata, prompt_type=prompt_type, batch_size=1024))


class MtebColbert:
    """mteb search protocol (``index`` + ``search``) over a :class:`~hf_ragtrain.ColbertEncoder`.

    Retrieval tasks: brute-force MaxSim over the task's whole corpus
    (:meth:`ColbertEncoder.search`, documents encoded in blocks of ``doc_chunk`` with a running top
    k). Reranking tasks (mteb passes ``top_ranked``): each query's candidates are scored by MaxSim,
    every candidate document encoded once. Scores are raw MaxSim sums.
    """

    def __init__(self, encoder: Any, name: str = "local/colbert", revision: str | None = None,
                 batch_size: int = 32, doc_chunk: int = 256, show_progress: bool = False):
        self.encoder = encoder
        self.batch_size, self.doc_chunk, self.show_progress = batch_size, doc_chunk, show_progress
        self.corpus_ids: list[str] = []
        self.corpus_texts: list[str] = []
        s = encoder.settings
        self.mteb_model_meta = _model_meta(name, revision, "MaxSim",
                                           n_parameters=sum(p.numel() for p in encoder.parameters()),
                                           max_tokens=s.document_max_length, embed_dim=encoder.embedding_dim)

    def index(self, corpus, *, task_metadata, hf_split=None, hf_subset=None, encode_kwargs=None, num_proc=None,
              **kwargs) -> None:
        from mteb.types import PromptType

        self.corpus_ids = [row["id"] for row in corpus]
        self.corpus_texts = _dataset_texts(corpus, task_metadata, PromptType.document)

    def search(self, queries, *, task_metadata, top_k: int, hf_split=None, hf_subset=None, encode_kwargs=None,
               top_ranked=None, num_proc=None, **kwargs) -> dict[str, dict[str, float]]:
        from mteb.types import PromptType

        qids = [row["id"] for row in queries]
        texts = _dataset_texts(queries, task_metadata, PromptType.query)
        if top_ranked is None:
            scores, idx = self.encoder.search(texts, self.corpus_texts, top_k=top_k, batch_size=self.batch_size,
                                              doc_chunk=self.doc_chunk, show_progress=self.show_progress)
            return {q: {self.corpus_ids[j]: float(v) for v, j in zip(scores[i].tolist(), idx[i].tolist())}
                    for i, q in enumerate(qids)}
        return self._rerank(qids, texts, top_ranked, top_k)

    def _rerank(self, qids: list[str], texts: list[str], top_ranked, top_k: int) -> dict[str, dict[str, float]]:
        position = {d: i for i, d in enumerate(self.corpus_ids)}
        missing = list(dict.fromkeys(d for q in qids for d in top_ranked.get(q, []) if d not in position))
        if missing:
            raise ValueError(f"{len(missing)} candidate ids are not in the task's corpus, e.g. {missing[:3]}")
        pairs = [(qid, text, d) for qid, text in zip(qids, texts) for d in top_ranked.get(qid, [])]
        scores = self.encoder.score_pairs([t for _, t, _ in pairs], [self.corpus_texts[position[d]] for *_, d in pairs],
                                          self.batch_size)[0].tolist() if pairs else []
        by_query: dict[str, list[tuple[float, str]]] = {q: [] for q in qids}
        for (qid, _, doc), score in zip(pairs, scores):
            by_query[qid].append((score, doc))
        # the best top_k of each query's candidates, ties in candidate order
        return {q: {d: v for v, d in sorted(c, key=lambda sd: -sd[0])[:top_k]} for q, c in by_query.items()}


def _reuse_index(built: Any, texts: Sequence[str]) -> Any:
    """``built`` (a ``HybridIndex``) for ``texts``, or ``None`` when some text has other words than its
    own. mteb joins title and text as given, so a title with a trailing space gives a text that differs
    from ours in whitespace alone: those texts are encoded again and the BM25 index (whose tokens do
    not depend on whitespace) is shared."""
    from ..data.hybrid import HybridIndex
    from ..data.mining import encode_normalized, tokenize

    if len(built.texts) != len(texts):
        return None
    differ = [i for i, (ours, theirs) in enumerate(zip(built.texts, texts)) if ours != theirs]
    if not differ:
        return built
    if any(tokenize(built.texts[i]) != tokenize(texts[i]) for i in differ):
        return None
    vectors = built.vectors
    if vectors is not None:
        vectors = vectors.copy()
        vectors[differ] = encode_normalized(built.encoder, [texts[i] for i in differ], built.batch_size,
                                            kind="document")
    return HybridIndex(built.encoder, texts, batch_size=built.batch_size, vectors=vectors, bm25=built.bm25)


class MtebHybrid:
    """mteb search protocol (``index`` + ``search``) over a hybrid first stage
    (:class:`~hf_ragtrain.data.hybrid.HybridIndex`): each query's whole corpus ranked by
    ``dense_weight * cosine + bm25_weight * BM25`` (BM25 stemmed for ``bm25_language`` unless it is
    ``None``). ``dense_weight=1, bm25_weight=0`` is the dense
    retriever alone and ``encoder=None, bm25_weight=1`` BM25 alone. ``shared`` (a dict, shareable
    between adapters of the same encoder) keeps each corpus's index, so the corpus is encoded once
    for several weightings. ``prebuilt`` (corpus ids, and a ``HybridIndex`` of the same encoder built
    on their texts) is used instead of encoding a task corpus with those ids and the same words
    (:func:`_reuse_index`).
    """

    def __init__(self, encoder: Any, dense_weight: float, bm25_weight: float, name: str = "local/hybrid",
                 shared: dict | None = None, batch_size: int = 64, bm25_language: str | None = None,
                 prebuilt: tuple[Sequence[str], Any] | None = None):
        if encoder is None and dense_weight:
            raise ValueError("a dense weight needs an encoder")
        self.encoder, self.dense_weight, self.bm25_weight = encoder, dense_weight, bm25_weight
        self.shared = {} if shared is None else shared
        self.batch_size, self.bm25_language = batch_size, bm25_language
        self.prebuilt = prebuilt
        self.corpus_ids: list[str] = []
        self.hybrid: Any = None
        scoring = "cosine" if not bm25_weight else "custom"
        self.mteb_model_meta = _model_meta(name, None, scoring)

    def index(self, corpus, *, task_metadata, hf_split=None, hf_subset=None, encode_kwargs=None, num_proc=None,
              **kwargs) -> None:
        from mteb.types import PromptType

        from ..data.hybrid import HybridIndex

        self.corpus_ids = [row["id"] for row in corpus]
        key = (task_metadata.name, hf_split, hashlib.sha1("\n".join(self.corpus_ids).encode()).hexdigest(),
               id(self.encoder), self.bm25_language)
        if key not in self.shared:
            texts = _dataset_texts(corpus, task_metadata, PromptType.document)
            ids, built = self.prebuilt or ((), None)
            reused = _reuse_index(built, texts) if built is not None and list(ids) == self.corpus_ids else None
            self.shared[key] = reused or HybridIndex(self.encoder, texts, batch_size=self.batch_size,
                                                     bm25_language=self.bm25_language)
        self.hybrid = self.shared[key]

    def search(self, queries, *, task_metadata, top_k: int, hf_split=None, hf_subset=None, encode_kwargs=None,
               top_ranked=None, num_proc=None, **kwargs) -> dict[str, dict[str, float]]:
        from mteb.types import PromptType

        if top_ranked is not None:
            raise ValueError("MtebHybrid retrieves from the corpus; a reranking task's candidates need a reranker")
        qids = [row["id"] for row in queries]
        texts = _dataset_texts(queries, task_metadata, PromptType.query)
        scores, idx = self.hybrid.search(texts, top_k, self.dense_weight, self.bm25_weight)
        return {q: {self.corpus_ids[j]: float(v) for v, j in zip(scores[i].tolist(), idx[i].tolist())}
                for i, q in enumerate(qids)}


# ------------------------------------------------------------------------------------------- running


@dataclass
class TaskScores:
    """One task's results: ``metrics[split]`` maps mteb metric names to values."""

    name: str
    task_type: str
    dataset: str
    dataset_revision: str | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    local: bool = False  # built from local files (no Hub dataset id)


def _results_from(model_result, tasks) -> dict[str, TaskScores]:
    by_name = {t.metadata.name: t for t in tasks}
    out = {}
    for tr in model_result.task_results:
        task = by_name.get(tr.task_name)
        meta = task.metadata if task is not None else None
        metrics = {}
        for split, entries in tr.scores.items():
            # one entry per subset; local tasks have only "default"
            entry = next((e for e in entries if e.get("hf_subset") == "default"), entries[0])
            metrics[split] = _plain_metrics(entry)
        out[tr.task_name] = TaskScores(
            name=tr.task_name, task_type=meta.type if meta else "Retrieval",
            dataset=(meta.dataset or {}).get("path", tr.task_name) if meta else tr.task_name,
            dataset_revision=(meta.dataset or {}).get("revision") if meta else None, metrics=metrics,
            local=bool(getattr(task, "hf_ragtrain_local", False)))
    return out


def run_mteb(model: Any, tasks: Sequence[Any], output_folder: str | None = None,
             prediction_folder: str | None = None, batch_size: int = 64) -> dict[str, TaskScores]:
    """Evaluate ``model`` (an adapter above, or anything mteb accepts) on ``tasks``.

    With ``output_folder`` the results are written in mteb's layout under it (always recomputed,
    never read back from an older run). Returns ``{task name: TaskScores}``.
    """
    import mteb

    cache = mteb.ResultCache(output_folder) if output_folder else None
    result = mteb.evaluate(model, list(tasks), cache=cache, overwrite_strategy="always",
                           prediction_folder=prediction_folder, show_progress_bar=False,
                           encode_kwargs={"batch_size": batch_size})
    if result.exceptions:
        raise RuntimeError(f"mteb evaluation failed: {result.exceptions}")
    return _results_from(result, tasks)


def two_stage(reranker: Any, first_stage: Any, tasks: Sequence[Any], top_k: int = 100,
              output_folder: str | None = None) -> dict[str, dict[str, TaskScores]]:
    """First-stage retrieval then reranking of its top ``top_k``, both through mteb (``reranker``: an
    :class:`MtebReranker`, an :class:`MtebColbert`, or anything mteb accepts).

    Retrieval tasks are turned into reranking tasks in place (mteb's ``convert_to_reranking``) of the
    first stage's top ``top_k``. Tasks that already carry ``top_ranked`` candidates (reranking tasks)
    are ranked by the first stage too when one is given (cosine over the same candidates: what the
    reranker must beat). Returns ``{"first_stage": {...}, "reranked": {...}}``; both are written to
    ``output_folder`` under their own model names.
    """
    retrieval = [t for t in tasks if not _has_top_ranked(t)]
    reranking = [t for t in tasks if _has_top_ranked(t)]
    first: dict[str, TaskScores] = {}
    if retrieval:
        with tempfile.TemporaryDirectory() as predictions:
            first = run_mteb(first_stage, retrieval, output_folder, prediction_folder=predictions)
            for task in retrieval:
                task.convert_to_reranking(predictions, top_k=top_k)
    if reranking and first_stage is not None:
        first.update(run_mteb(first_stage, reranking, output_folder))
    reranked = run_mteb(reranker, tasks, output_folder)
    return {"first_stage": first, "reranked": reranked}


def _has_top_ranked(task) -> bool:
    """Whether the task brings its own candidates (a reranking task)."""
    return task.metadata.type == "Reranking"


def evaluate_saved_reranker(model_dir: str, tasks: Sequence[Any], first_stage: Any = None, top_k: int = 100,
                            output_folder: str | None = None, name: str = "local/reranker",
                            max_length: int | None = None,
                            bf16: bool = False, first_stage_name: str = "local/first-stage") -> dict[str, Any]:
    """Load the reranker saved in ``model_dir`` (any kind :meth:`hf_ragtrain.Reranker.from_pretrained`
    reads) and evaluate it on ``tasks`` through mteb, in bf16 autocast or fp32. ``max_length=None``
    is the folder's own (for a cross-encoder: its positions, at most 512).

    Evaluating the saved folder (not the in-memory, possibly sharded, training model) checks what
    users will load. ``first_stage`` is an ``encode(texts)`` object: it retrieves the candidates of
retrieval tasks and ranks those of reranking tasks (the figures the reranker is compared with).
    Returns ``{"reranked": {task: TaskScores}, "first_stage": {...}, "pairs": n, "pairs_truncated": n,
    "max_length": n}``.
    """
    from ..reranker import PAIR_KINDS, Reranker, reranker_kind

    kind = reranker_kind(model_dir)
    options = {"batch_tokens": 16384} if kind in PAIR_KINDS else {}
    reranker = Reranker.from_pretrained(model_dir, kind=kind, max_length=max_length, dtype="bf16" if bf16 else "fp32",
                                        **options)
    encoder = MtebEncoder(first_stage, name=first_stage_name) if first_stage is not None else None
    if encoder is None and any(not _has_top_ranked(t) for t in tasks):
        raise ValueError("retrieval tasks need a first-stage encoder to supply the candidates")
    out = two_stage(MtebReranker(reranker, name=name), encoder, tasks, top_k=top_k, output_folder=output_folder)
    out.update(pairs=reranker.total.pairs, pairs_truncated=reranker.total.truncated, max_length=reranker.max_length)
    return out


def scores_as_dict(results: Mapping[str, TaskScores]) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {split: {metric: value}}}`` for JSON output."""
    return {name: ts.metrics for name, ts in results.items()}


def evaluate_saved_embedder(model_dir: str, tasks: Sequence[Any], output_folder: str | None = None,
                            name: str = "local/embedder", dims: Sequence[int] = (), bf16: bool = False,
                            batch_size: int = 64) -> dict[str, Any]:
    """Load the bi-encoder saved in ``model_dir`` and evaluate it on ``tasks`` through mteb.

    ``dims`` are extra Matryoshka dimensions evaluated on the same (cached) vectors. Returns
    ``{"full": {task: TaskScores}, "dims": {dim: {task: TaskScores}}}``.
    """
    import torch

    from ..modeling.bi_encoder import BiEncoder

    device = default_device()
    encoder = BiEncoder.from_pretrained(model_dir).to(device).eval()
    cache: dict = {}
    out: dict[str, Any] = {"dims": {}}
    with autocast(device, torch.bfloat16 if bf16 else None):
        out["full"] = run_mteb(MtebEncoder(encoder, name=name, cache=cache, batch_size=batch_size), tasks,
                               output_folder)
        for dim in dims:
            if dim < encoder.embedding_dim:
                out["dims"][int(dim)] = run_mteb(
                    MtebEncoder(encoder, name=f"{name}-dim{dim}", cache=cache, truncate_dim=int(dim),
                                batch_size=batch_size), tasks, output_folder)
    return out


def evaluate_saved_colbert(model_dir: str, tasks: Sequence[Any], output_folder: str | None = None,
                           name: str = "local/colbert", bf16: bool = False, batch_size: int = 32,
                           show_progress: bool = False) -> dict[str, TaskScores]:
    """Load the ColBERT model saved in ``model_dir`` and evaluate it on ``tasks`` through mteb:
    brute-force MaxSim retrieval for retrieval tasks, MaxSim reranking for reranking tasks."""
    import torch

    from ..modeling.colbert import ColbertEncoder

    device = default_device()
    encoder = ColbertEncoder.from_pretrained(model_dir).to(device).eval()
    with autocast(device, torch.bfloat16 if bf16 else None):
        return run_mteb(MtebColbert(encoder, name=name, batch_size=batch_size, show_progress=show_progress), tasks,
                        output_folder)
