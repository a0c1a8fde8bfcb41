"""Model cards for models trained with hf_ragtrain."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import TrainingArguments

from .evaluation.first_stage import hit_rate_rows
from .evaluation.mteb_eval import TaskScores

# TrainingArguments that describe the machine or bookkeeping, not the training itself.
_NOT_HYPERPARAMETERS = {
    "output_dir", "logging_dir", "run_name", "hub_token", "hub_model_id", "push_to_hub", "report_to",
    "overwrite_output_dir", "do_train", "do_eval", "do_predict", "local_rank", "logging_first_step",
    "dataloader_num_workers", "deepspeed", "disable_tqdm", "save_strategy", "save_steps", "save_total_limit",
    "logging_strategy", "logging_steps", "eval_steps", "use_cpu", "ddp_backend", "hub_strategy",
    "hub_private_repo", "resume_from_checkpoint", "skip_memory_metrics", "trackio_space_id",
    "dataloader_pin_memory",
}


@dataclass
class CardInfo:
    """What a model card says about one training run."""

    base_model: str
    task: str = "reranking"
    loss: str = ""
    loss_params: dict[str, Any] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)  # {"name", "split", "size", "source"}
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    first_stage: str | None = None  # what the dev candidates' first stage was (a reranker's card)
    metrics_first_stage: dict[str, float] = field(default_factory=dict)  # its metrics on the same candidates
    warnings: list[str] = field(default_factory=list)  # said under the intro, e.g. "worse than its first stage"
    mteb_results: dict[str, TaskScores] = field(default_factory=dict)  # this model, through mteb
    mteb_first_stage: dict[str, TaskScores] = field(default_factory=dict)  # the retriever it reranked
    mteb_settings: dict[str, Any] = field(default_factory=dict)  # e.g. first-stage model, top_k
    notes: list[str] = field(default_factory=list)
    fusion: dict[str, Any] | None = None  # a reranker that adds its first stage's score: {"weight", "first_stage", "bm25_weight"}
    license: str = "apache-2.0"
    model_name: str | None = None
    trainer: str | None = None  # the trainer class named in the card's intro (default: the family's)
    training_run: str | None = None  # how long it trained, on what: "18 steps (1 epoch) in 1 min 28 s on ..."
    demo: str | None = None  # why this model is a demonstration, not one to deploy (said under the title)


# Always listed, default or not: what a reader needs to reproduce the run.
_KEY_HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
    "max_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "seed", "bf16", "fp16",
)


def card_hyperparameters(args: TrainingArguments) -> dict[str, Any]:
    """The key training arguments plus every other one that differs from its default
    (machine and bookkeeping arguments left out)."""
    defaults = type(args)(output_dir=args.output_dir).to_dict()
    values = args.to_dict()
    out = {k: values[k] for k in _KEY_HYPERPARAMETERS if k in values}
    for key, value in values.items():
        if key in _NOT_HYPERPARAMETERS or key.startswith("_"):
            continue
        if defaults.get(key) != value:
            out[key] = value
    if args.world_size > 1:
        out["world_size"] = args.world_size
    return out


def log_table(log_history: Sequence[dict[str, Any]], metric_names: Sequence[str] = ("eval_ndcg@10", "eval_mrr@10")) -> str:
    """Markdown table of the training log: step, epoch, training loss and eval metrics."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None or ("loss" not in entry and not any(m in entry for m in metric_names)):
            continue
        row = rows.setdefault(step, {"epoch": entry.get("epoch")})
        if "loss" in entry:
            row["loss"] = entry["loss"]
        for m in metric_names:
            if m in entry:
                row[m] = entry[m]
    if not rows:
        return "_No training steps were logged._"
    header = ["Step", "Epoch", "Training loss", *metric_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step in sorted(rows):
        r = rows[step]
        cells = [str(step), _fmt(r.get("epoch")), _fmt(r.get("loss")), *(_fmt(r.get(m)) for m in metric_names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metrics_table(columns: dict[str, dict[str, float]], keys: Sequence[str] | None = None) -> str:
    """Markdown table with one row per metric and one column per named result set."""
    names = list(columns)
    if keys is None:
        keys = sorted({k for m in columns.values() for k in m if isinstance(m.get(k), (int, float))},
                      key=_metric_sort_key)
    lines = ["| Metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(columns[n].get(key)) for n in names) + " |")
    return "\n".join(lines)


def _metric_sort_key(name: str):
    base, _, k = name.partition("@")
    return (base, int(k) if k.isdigit() else 0)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


_METRIC_FAMILIES = ("ndcg", "map", "recall", "mrr", "hit_rate", "precision")


def _strip_prefix(metrics: dict[str, float]) -> dict[str, float]:
    """Drop a Trainer prefix (``eval_``, ``before_``, ...) and the bookkeeping entries."""
    skip = ("runtime", "samples_per_second", "steps_per_second", "epoch", "truncated_pairs")
    out = {}
    for key, value in metrics.items():
        if any(key.endswith(s) for s in skip):
            continue
        prefix, sep, rest = key.partition("_")
        plain = key.split("@")[0] in _METRIC_FAMILIES  # "hit_rate@10" has no prefix to drop
        out[rest if sep and "@" in rest and not plain else key] = value
    return out


def framework_versions() -> dict[str, str]:
    import torch
    import transformers

    from .version import __version__

    versions = {"python": platform.python_version(), "hf_ragtrain": __version__,
                "transformers": transformers.__version__, "torch": torch.__version__}
    for name in ("datasets", "accelerate", "sentence_transformers", "mteb", "deepspeed", "peft"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - an optional package that fails to import is just not listed
            continue
    return versions


# Metrics carried into the model-index, with their display names (mteb's metric names as types).
MODEL_INDEX_METRICS = {"ndcg_at_10": "nDCG@10", "map_at_10": "MAP@10", "mrr_at_10": "MRR@10",
                       "recall_at_10": "Recall@10", "recall_at_100": "Recall@100"}


def mteb_eval_results(results: dict[str, TaskScores], task_type: str = "text-ranking",
                      task_name: str = "Reranking") -> list[EvalResult]:
    """``huggingface_hub.EvalResult`` entries (one per task, split and metric) for a card's model-index."""
    out = []
    for name, scores in results.items():
        for split, metrics in scores.metrics.items():
            for key, pretty in MODEL_INDEX_METRICS.items():
                if key not in metrics:
                    continue
                out.append(EvalResult(
                    task_type=task_type, task_name=task_name, dataset_type=_dataset_id(scores),
                    dataset_name=name if scores.local else f"MTEB {name}",  # only mteb's own tasks are "MTEB"
                    dataset_config="default", dataset_split=split,
                    dataset_revision=scores.dataset_revision, metric_type=key, metric_name=pretty,
                    metric_value=round(float(metrics[key]), 5)))
    return out


def _dataset_id(scores: TaskScores) -> str:
    """The dataset as the Hub knows it: an mteb task's Hub id as is, local files by their folder's name."""
    path = scores.dataset or scores.name
    return dataset_slug(path) if scores.local or os.path.isabs(path) else path


def dataset_slug(name: str) -> str:
    """A short dataset name for card metadata: a data file is named by its folder, a folder by itself."""
    path = name.split(",")[0].strip().rstrip("/" + os.sep)
    if os.path.splitext(path)[1] in (".jsonl", ".json", ".tsv", ".csv", ".parquet"):
        path = os.path.dirname(path) or path
    return os.path.basename(path) or name


def mteb_table(results: dict[str, TaskScores], first_stage: dict[str, TaskScores] | None = None) -> str:
    """Markdown table of MTEB results, with the first stage's row under each task when given."""
    keys = list(MODEL_INDEX_METRICS)
    lines = ["| Task | Split | Model | " + " | ".join(MODEL_INDEX_METRICS[k] for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for name, scores in results.items():
        rows = [("this model", scores)]
        if first_stage and name in first_stage:
            rows.append(("first stage alone", first_stage[name]))
        for label, ts in rows:
            for split, metrics in ts.metrics.items():
                lines.append(f"| {name} | {split} | {label} | " + " | ".join(_fmt(metrics.get(k)) for k in keys) + " |")
    return "\n".join(lines)


@dataclass
class _CardKind:
    """What differs between the cards of model families."""

    pipeline_tag: str
    tags: list[str]
    default_name: str
    title: str  # what the card's heading calls the model, e.g. "Cross-encoder reranker"
    intro: str  # formatted with base_model and trainer
    usage: str
    dev_heading: str
    trainer: str = "RerankTrainer"
    library_name: str = "sentence-transformers"


_RERANKER = _CardKind(
    pipeline_tag="text-ranking",
    tags=["hf_ragtrain", "cross-encoder", "reranker", "text-ranking", "generated_from_trainer"],
    default_name="reranker",
    title="Cross-encoder reranker",
    intro="A cross-encoder reranker fine-tuned from `{base_model}` with hf_ragtrain (`{trainer}`). It reads a "
          "(query, passage) pair and returns one relevance logit: higher means more relevant.\n",
    usage="## Usage\n\nWith sentence-transformers:\n\n```python\nfrom sentence_transformers import "
          "CrossEncoder\n\nmodel = CrossEncoder(\"PATH_OR_REPO_ID\")\nscores = model.predict([(\"how do I "
          "sort a dict?\", \"Use sorted() with a key.\")])\n```\n\nWith transformers:\n\n```python\n"
          "import torch\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
          "tok = AutoTokenizer.from_pretrained(\"PATH_OR_REPO_ID\")\nmodel = AutoModelForSequenceClassification"
          ".from_pretrained(\"PATH_OR_REPO_ID\").eval()\nbatch = tok([\"how do I sort a dict?\"], [\"Use sorted() "
          "with a key.\"], return_tensors=\"pt\", truncation=True)\nwith torch.no_grad():\n    scores = "
          "model(**batch).logits.squeeze(-1)\n```\n",
    dev_heading="## Evaluation (dev set, reranking its candidates)",
)

def fused_usage(weight: float, first_stage: str, bm25_weight: float = 0.0) -> str:
    """The usage section of a reranker whose score adds its first stage's (``first_stage_fusion.json``)."""
    bm25 = (f" **plus {bm25_weight:.4g} times Okapi BM25** (with the corpus statistics, k1 and b in "
            "`first_stage_bm25.json`)" if bm25_weight else "")
    st_bm25 = ("\n# the BM25 term, with the saved corpus statistics:\nfrom hf_ragtrain.data.mining import BM25Stats\n"
               f"scores += {bm25_weight:.4g} * BM25Stats.load(\"PATH/first_stage_bm25.json\").score_pairs([query] * "
               "len(docs), docs)\n" if bm25_weight else "")
    return (f"## Usage\n\nThis reranker's score is its logit **plus {weight:.4g} times the cosine of its first stage** "
            f"`{first_stage}`, whose copy is in `first_stage/`{bm25}. It was trained that way: the logit alone is "
            "only the correction to the first stage, not a ranking to use on its own.\n\nWith hf_ragtrain (the first "
            "stage is added for you):\n\n```python\nfrom hf_ragtrain import Reranker\n\nreranker = Reranker."
            "from_pretrained(\"PATH\")  # a local folder (snapshot_download a Hub repo first)\nranked = reranker.rank("
            "\"how do I sort a dict?\", [\"Use sorted() with a key.\", \"Open the file.\"])\n```\n\nWith "
            "sentence-transformers, the same score:\n\n```python\nfrom sentence_transformers import CrossEncoder, "
            "SentenceTransformer\n\nreranker, first_stage = CrossEncoder(\"PATH\"), SentenceTransformer(\"PATH/"
            "first_stage\")\nquery, docs = \"how do I sort a dict?\", [\"Use sorted() with a key.\", \"Open the "
            "file.\"]\ncosine = first_stage.similarity(first_stage.encode_query([query]), first_stage.encode_document("
            "docs))[0]\n"
            f"scores = reranker.predict([(query, d) for d in docs]) + {weight:.4g} * cosine.numpy()\n{st_bm25}```\n")


_EMBEDDER = _CardKind(
    pipeline_tag="sentence-similarity",
    tags=["hf_ragtrain", "sentence-transformers", "feature-extraction", "sentence-similarity", "retrieval",
          "generated_from_trainer"],
    default_name="embedder",
    title="Embedding model",
    intro="An embedding model (bi-encoder) fine-tuned from `{base_model}` with hf_ragtrain (`ContrastiveTrainer`). "
          "It maps a query or a passage to one vector; relevant passages lie close to their queries.\n",
    usage="## Usage\n\nWith sentence-transformers (the folder is in its layout; `encode_query` and `encode_document` "
          "apply the query and passage prompts and max lengths):\n\n```python\n"
          "from sentence_transformers import SentenceTransformer\n\nmodel = SentenceTransformer(\"PATH_OR_REPO_ID\")\n"
          "queries = model.encode_query([\"how do I sort a dict?\"])\n"
          "passages = model.encode_document([\"Use sorted() with a key.\"])\n"
          "scores = model.similarity(queries, passages)\n```\n\nWith hf_ragtrain:\n\n```python\n"
          "from hf_ragtrain import BiEncoder\n\nmodel = BiEncoder.from_pretrained(\"PATH_OR_REPO_ID\")\n"
          "q = model.encode([\"how do I sort a dict?\"], kind=\"query\")\n```\n",
    dev_heading="## Evaluation (dev set, retrieval over the dev documents)",
)

_COLBERT = _CardKind(
    pipeline_tag="sentence-similarity",
    tags=["hf_ragtrain", "sentence-transformers", "colbert", "late-interaction", "retrieval", "generated_from_trainer"],
    default_name="colbert",
    title="ColBERT model",
    intro="A ColBERT (late-interaction) model fine-tuned from `{base_model}` with hf_ragtrain (`ColbertTrainer`). "
          "It maps a text to one vector per token; a query scores a document by MaxSim (each query token's best "
          "match, summed).\n",
    usage="## Usage\n\nWith sentence-transformers:\n\n```python\nfrom sentence_transformers import "
          "MultiVectorEncoder\n\nmodel = MultiVectorEncoder(\"PATH_OR_REPO_ID\")\n"
          "queries = model.encode_query([\"how do I sort a dict?\"])\n"
          "documents = model.encode_document([\"Use sorted() with a key.\"])\n"
          "scores = model.similarity(queries, documents)\n```\n\nWith hf_ragtrain:\n\n```python\n"
          "from hf_ragtrain import ColbertEncoder\n\nmodel = ColbertEncoder.from_pretrained(\"PATH_OR_REPO_ID\")\n"
          "corpus = [\"Use sorted() with a key.\", \"Open the file.\"]\n"
          "scores, indices = model.search([\"how do I sort a dict?\"], corpus, top_k=2)\n```\n",
    dev_heading="## Evaluation (dev set, MaxSim retrieval over the dev documents)",
)

_SPARSE = _CardKind(
    pipeline_tag="feature-extraction",
    tags=["hf_ragtrain", "sentence-transformers", "sparse-encoder", "sparse", "splade", "retrieval",
          "generated_from_trainer"],
    default_name="splade",
    title="SPLADE model",
    intro="A SPLADE (learned sparse) retriever fine-tuned from `{base_model}` with "
          "hf_ragtrain (`SparseTrainer`). It maps a text to one "
          "non-negative weight per vocabulary entry, most of them 0; a query scores a document by the dot product, "
          "which an inverted index computes from the entries they share.\n",
    usage="## Usage\n\nWith sentence-transformers:\n\n```python\nfrom sentence_transformers import SparseEncoder\n\n"
          "model = SparseEncoder(\"PATH_OR_REPO_ID\")\n"
          "queries = model.encode_query([\"how do I sort a dict?\"])\n"
          "documents = model.encode_document([\"Use sorted() with a key.\"])\n"
          "scores = model.similarity(queries, documents)\n```\n\nWith hf_ragtrain (an inverted index over "
          "the corpus):\n\n```python\nfrom hf_ragtrain import SpladeEncoder\n\n"
          "model = SpladeEncoder.from_pretrained(\"PATH_OR_REPO_ID\")\n"
          "corpus = [\"Use sorted() with a key.\", \"Open the file.\"]\n"
          "scores, indices = model.search([\"how do I sort a dict?\"], corpus, top_k=2)\n```\n",
    dev_heading="## Evaluation (dev set, inverted-index retrieval over the dev documents)",
)

_EMBEDDING_CARDS = {"embedder": _EMBEDDER, "colbert": _COLBERT, "sparse": _SPARSE}

_LLM_RERANKER = _CardKind(
    pipeline_tag="text-ranking",
    tags=["hf_ragtrain", "llm-reranker", "reranker", "text-ranking", "generated_from_trainer"],
    default_name="llm-reranker",
    title="LLM reranker",
    intro="A decoder-only (LLM) reranker fine-tuned from `{base_model}` with "
          "hf_ragtrain (`{trainer}`). A (query, passage) pair is written "
          "into the prompt template recorded in `hf_ragtrain_reranker.json`; the score is read at the prompt's last "
          "token (the logit of the yes token, or a classification head). Higher means more relevant.\n",
    usage="## Usage\n\nWith hf_ragtrain (it applies the recorded template, yes token and any LoRA adapter):"
          "\n\n```python\nfrom hf_ragtrain import LlmReranker\n\nmodel = LlmReranker.from_pretrained(\"PATH_OR_REPO_ID\")"
          ".eval()\nscores = model.score([\"how do I sort a dict?\"], [\"Use sorted() with a key.\"])\n```\n",
    dev_heading="## Evaluation (dev set, reranking its candidates)",
    library_name="transformers",
)

# mteb task type -> (model-index task type, task name)
_MODEL_INDEX_TASKS = {"Retrieval": ("retrieval", "Retrieval"), "Reranking": ("text-ranking", "Reranking")}


def _dev_section(kind: _CardKind, info: CardInfo) -> str:
    """The dev evaluation: before / after training (beside the first stage on the same candidates when
    known), and a reranker's hit rate and MRR at k against its first stage."""
    columns = {}
    if info.metrics_first_stage:
        columns[f"first stage: {info.first_stage}"] = _strip_prefix(info.metrics_first_stage)
    if info.metrics_before:
        columns["before training"] = _strip_prefix(info.metrics_before)
    if info.metrics_after:
        columns["after training"] = _strip_prefix(info.metrics_after)
    text = f"{kind.dev_heading}\n\n" + metrics_table(columns) + "\n"
    rows = hit_rate_rows(_strip_prefix(info.metrics_first_stage), _strip_prefix(info.metrics_after))
    if rows:
        text += ("\nWhat a RAG pipeline reads: the hit rate at k (a relevant passage among the top k) and MRR at k, "
                 "first stage against this model reranking its candidates.\n\n| k | hit rate, first stage | hit rate, "
                 "reranked | MRR, first stage | MRR, reranked |\n|---|---|---|---|---|\n"
                 + "\n".join(f"| {k} | {h1:.4f} | {h2:.4f} | {m1:.4f} | {m2:.4f} |" for k, h1, h2, m1, m2 in rows) + "\n")
    return text


def card_title(kind: _CardKind, info: CardInfo) -> str:
    """The card's heading: the Hub id when the model has one, else what it is, from what, on what data."""
    if info.model_name and "/" in info.model_name:
        return info.model_name
    base = info.base_model.rstrip("/").split("/")[-1]
    data = list(dict.fromkeys(d.get("hub_id") or dataset_slug(d["name"]) for d in info.datasets
                              if d.get("split", "train").startswith("train")))
    return f"{kind.title} from {base}" + (f", fine-tuned on {', '.join(data)}" if data else "")


def _render_card(kind: _CardKind, info: CardInfo, args: TrainingArguments | None,
                 log_history: Sequence[dict[str, Any]], eval_results: list[EvalResult]) -> ModelCard:
    data = ModelCardData(
        library_name=kind.library_name,
        pipeline_tag=kind.pipeline_tag,
        base_model=info.base_model,
        license=info.license,
        tags=list(kind.tags),
        datasets=list(dict.fromkeys(d["hub_id"] for d in info.datasets if d.get("hub_id"))) or None,  # Hub ids only
        model_name=info.model_name or kind.default_name,
        eval_results=eval_results or None,
    )
    sections = [f"# {card_title(kind, info)}\n",
                kind.intro.format(base_model=info.base_model, trainer=info.trainer or kind.trainer),
                *([f"> **Demo model.** {info.demo}\n"] if info.demo else []),
                *(f"> **Warning:** {w}\n" for w in info.warnings),
                fused_usage(**info.fusion) if info.fusion else kind.usage]
    if info.training_run:
        sections.append(f"## Training run\n\n{info.training_run}\n")
    if info.datasets:
        lines = ["## Training data\n", "| Name | Split | Size | Source |", "|---|---|---|---|"]
        for d in info.datasets:
            lines.append(f"| {d.get('name', '-')} | {d.get('split', '-')} | {d.get('size', '-')} | {d.get('source', '-')} |")
        sections.append("\n".join(lines) + "\n")
    if info.loss:
        params = ", ".join(f"`{k}={v}`" for k, v in info.loss_params.items())
        sections.append(f"## Loss\n\n`{info.loss}`" + (f" with {params}" if params else "") + "\n")
    if args is not None:
        hp = card_hyperparameters(args)
        lines = ["## Hyperparameters\n", "Key training arguments, and every other one that differs from the "
                 "`transformers` default:\n",
                 "| Argument | Value |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(v) if not isinstance(v, str) else v}` |" for k, v in sorted(hp.items())]
        sections.append("\n".join(lines) + "\n")
    if log_history:
        sections.append("## Training log\n\n" + log_table(log_history) + "\n")
    if info.metrics_before or info.metrics_after:
        sections.append(_dev_section(kind, info))
    if info.mteb_results:
        settings = "; ".join(f"{k}: `{v}`" for k, v in info.mteb_settings.items())
        sections.append("## MTEB evaluation\n\nComputed with mteb " + framework_versions().get("mteb", "?")
                        + " after training" + (f" ({settings})" if settings else "") + ". The model-index in "
                        "this card's metadata carries the same numbers; the raw mteb results are in `mteb/`.\n\n"
                        + mteb_table(info.mteb_results, info.mteb_first_stage) + "\n")
    if info.notes:
        sections.append("## Notes\n\n" + "\n".join(f"- {n}" for n in info.notes) + "\n")
    versions = framework_versions()
    sections.append("## Framework versions\n\n" + "\n".join(f"- {k}: {v}" for k, v in versions.items()) + "\n")
    sections.append(f"## License\n\n`{info.license}`. The terms of the base model `{info.base_model}` and of the "
                    "training data also apply to these weights.\n")
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(sections)
    return ModelCard(content)


def render_reranker_card(info: CardInfo, args: TrainingArguments | None = None,
                         log_history: Sequence[dict[str, Any]] = (), llm: bool = False) -> ModelCard:
    """Build the model card of a cross-encoder reranker (or, with ``llm``, an LlmReranker); its MTEB
    rows are reranking results."""
    return _render_card(_LLM_RERANKER if llm else _RERANKER, info, args, log_history,
                        mteb_eval_results(info.mteb_results))


def render_embedding_card(info: CardInfo, args: TrainingArguments | None = None,
                          log_history: Sequence[dict[str, Any]] = (), colbert: bool = False,
                          family: str | None = None) -> ModelCard:
    """Build the model card of an encoder: ``family`` ``embedder`` (a bi-encoder, the default), ``colbert``
    (late interaction; ``colbert=True`` says the same) or ``sparse`` (SPLADE); each MTEB task enters the
    model-index under its own type."""
    results = []
    for name, scores in info.mteb_results.items():
        task_type, task_name = _MODEL_INDEX_TASKS.get(scores.task_type, ("retrieval", scores.task_type))
        results += mteb_eval_results({name: scores}, task_type=task_type, task_name=task_name)
    family = family or ("colbert" if colbert else "embedder")
    if family not in _EMBEDDING_CARDS:
        raise ValueError(f"unknown encoder card family {family!r}; choose one of {sorted(_EMBEDDING_CARDS)}")
    return _render_card(_EMBEDDING_CARDS[family], info, args, log_history, results)


def add_card_section(folder: str, section: str, eval_results: Sequence[EvalResult] = (),
                     warnings: Sequence[str] = ()) -> None:
    """Add ``section`` (markdown starting with its ``## `` heading) to the card in ``folder`` before its
    framework versions, ``warnings`` under its title, and ``eval_results`` to its model-index. Adding it
    again replaces it: a section with the same heading, model-index entries for the same task, split and
    metric, and a warning already there are not repeated. A folder without a card is left as it is."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return
    card = ModelCard.load(path)
    keep = [r for r in card.data.eval_results or []
            if not any((r.dataset_type, r.dataset_split, r.metric_type, r.task_type) ==
                       (n.dataset_type, n.dataset_split, n.metric_type, n.task_type) for n in eval_results)]
    card.data.eval_results = (keep + list(eval_results)) or None
    text = _without_section(card.text, section.split("\n", 1)[0])
    cut = text.find("## Framework versions")
    text = (text[:cut] + section + "\n" + text[cut:]) if cut >= 0 else text + "\n" + section
    new = [w for w in warnings if f"> **Warning:** {w}\n" not in text]
    if new:
        title_end = text.find("\n", text.find("# ")) + 1
        text = text[:title_end] + "".join(f"\n> **Warning:** {w}\n" for w in new) + text[title_end:]
    ModelCard(f"---\n{card.data.to_yaml()}\n---\n" + text).save(path)


def _without_section(text: str, heading: str) -> str:
    """``text`` without the section that starts with the line ``heading`` (up to the next ``## `` heading)."""
    start = text.find(heading + "\n")
    if start < 0:
        return text
    end = text.find("\n## ", start + len(heading))
    return text[:start] + (text[end + 1:] if end >= 0 else "")


def is_hf_ragtrain_card(path: str) -> bool:
    """Whether ``path`` is a model card written by hf_ragtrain (tagged ``hf_ragtrain``)."""
    if not os.path.isfile(path):
        return False
    try:
        tags = ModelCard.load(path).data.tags or []
    except Exception:  # noqa: BLE001 - an unreadable card is not ours
        return False
    return "hf_ragtrain" in tags


class HubPushError(RuntimeError):
    """Pushing a folder to the Hub failed; the local folder is untouched."""


# Never uploaded: Trainer checkpoints and private files.
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "_*", "runs/**", "*.tmp"]


def push_folder(folder: str, repo_id: str, token: str | None = None, private: bool | None = None,
                revision: str | None = None, commit_message: str = "Upload model trained with hf_ragtrain") -> str:
    """Create ``repo_id`` if needed and upload ``folder`` (weights, tokenizer, card, results) in one commit.

    Returns the commit URL. Any failure (server error, no connection, bad token) raises
    :class:`HubPushError` naming the endpoint and the repo; nothing local is changed or removed.
    """
    from huggingface_hub import HfApi, constants

    api = HfApi(token=token)
    where = f"{constants.ENDPOINT}/{repo_id}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 commit_message=commit_message, ignore_patterns=PUSH_IGNORE)
    except Exception as err:  # noqa: BLE001 - every failure gets the same clear report
        raise HubPushError(f"pushing {folder} to {where} failed: {type(err).__name__}: {err}".strip()) from err
    return getattr(info, "commit_url", None) or str(info)


def write_model_card(output_dir: str, card: ModelCard) -> str:
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path
