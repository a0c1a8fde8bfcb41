"""Where a recipe's records come from: the bundled Python FAQ set, the user's files, or a BEIR folder
(with mined hard negatives and held-out dev queries); :class:`TrainingData` is what a recipe gets back."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..offline import resolve_model_path
from .beir import beir_to_records_with_stats, load_beir
from .beir_pipeline import CachingEncoder, dev_records_from_run, first_stage_run, split_dev_queries, subset_queries
from .mining import load_encoder, mine_hard_negatives
from .negative_filters import FILTER_REASONS
from .records import LoadReport, RetrievalRecord, load_records, parse_record

logger = logging.getLogger(__name__)

BUNDLED_SOURCE = "bundled Python FAQ (PSF licence)"


@dataclass
class TrainingData:
    """Training and dev records, and what a recipe reports about them.

    ``datasets`` are the rows of the card's training-data table (``name``, ``split``, ``size``,
    ``source``); ``dev_source`` is the dev file (``None`` for a BEIR folder's held-out queries);
    ``first_stage`` is the retriever a BEIR folder was mined with, kept so evaluation does not
    encode the corpus again; ``mining`` its counts. ``report`` is what loading counted (for
    ``eval_results.json``) and ``notes`` what the card must say about it (fields that were ignored).
    ``parts`` are the training files kept apart (``--dataset_sampling`` proportional or round_robin, see
    :mod:`hf_ragtrain.data.multi_dataset`); ``train`` then holds all their records.
    """

    train: list[RetrievalRecord]
    dev: list[RetrievalRecord] | None = None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    dev_source: str | None = None
    first_stage: Any = None
    mining: dict[str, int] | None = None
    report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    parts: list["TrainingPart"] = field(default_factory=list)

    def add_report(self, split: str, report: LoadReport) -> None:
        self.report[split] = report.as_dict()
        if report.unknown_fields:
            self.notes.append(f"{split} data ({report.source}): {report.unknown_fields_note()}.")


@dataclass
class TrainingPart:
    """One training file kept apart from the others: its records, prompt, loss weight, group size
    (``None``: the recipe's) and dev records."""

    name: str
    records: list[RetrievalRecord]
    prompt: str | None = None
    weight: float = 1.0
    group_size: int | None = None
    dev: list[RetrievalRecord] | None = None


def bundled_data_paths(repo: str) -> tuple[str, str]:
    """The bundled Python FAQ training and dev records of a checkout."""
    return (os.path.join(repo, "data", "python_faq", "train.jsonl"),
            os.path.join(repo, "data", "python_faq", "dev.jsonl"))


def display_path(source: str, repo: str) -> str:
    """Bundled data by its path in the repo (not this machine's absolute path); user paths as given."""
    parts = [p.strip() for p in source.split(",")]
    return ", ".join(os.path.relpath(p, repo) if os.path.abspath(p).startswith(repo + os.sep) else p for p in parts)


def load_training_data(args: Any, seed: int, repo: str, filter_teacher: Any = None) -> TrainingData:
    """Records from ``args`` (:class:`hf_ragtrain.DataArguments`): a BEIR folder (mined hard negatives,
    held-out dev queries), else ``train_data`` (and ``eval_data``), else the bundled FAQ records of
    ``repo``. Bad records raise :class:`~hf_ragtrain.DataFormatError` naming file, line and field."""
    if args.beir_dir:
        return prepare_beir_rerank_data(args, seed=seed, filter_teacher=filter_teacher)
    if args.dataset_sampling != "mixed":
        return load_training_parts(args, repo)
    bundled_train, bundled_dev = bundled_data_paths(repo)
    train_paths = args.train_data or [bundled_train]
    dev_path = args.eval_data or (bundled_dev if not args.train_data else None)
    train, report = load_records(train_paths)
    data = TrainingData(train=train, datasets=[{
        "name": display_path(report.source, repo), "split": "train", "size": len(train),
        "source": BUNDLED_SOURCE if train_paths == [bundled_train] else "user"}])
    data.add_report("train", report)
    if dev_path:
        data.dev, dev_report = load_records(dev_path)
        data.dev_source = dev_path
        data.datasets.append({"name": display_path(dev_report.source, repo), "split": "dev", "size": len(data.dev),
                              "source": "-"})
        data.add_report("dev", dev_report)
    return data


def filter_note(filters: Any, teacher: str | None, stats: Any) -> str:
    """How the false-negative filters were set and what they removed, for the card ("" when off)."""
    if not filters.active:
        return ""
    settings = ", ".join(f"{name.replace('_', ' ')} {getattr(filters, name)}" for name in FILTER_REASONS
                         if getattr(filters, name) is not None)
    return (f", false-negative filters ({settings}; scored by {teacher or 'the first stage'}) removed "
            f"{stats.dropped_by_filters} candidates; {stats.short} queries got fewer than {stats.num_negatives} "
            f"negatives, {stats.empty} none")


def load_training_parts(args: Any, repo: str) -> TrainingData:
    """Each ``args.train_data`` file as a :class:`TrainingPart` with its ``--dataset_*`` settings; the dev
    set is ``args.eval_data``, else every part's dev records together."""
    n = len(args.train_data)
    names = args.dataset_names or [os.path.basename(p) for p in args.train_data]
    data = TrainingData(train=[])
    for k, path in enumerate(args.train_data):
        records, report = load_records(path)
        data.add_report(f"train {names[k]}", report)
        dev = None
        dev_path = args.dataset_eval_data[k] if args.dataset_eval_data else "-"
        if dev_path != "-":
            dev, dev_report = load_records(dev_path)
            data.add_report(f"dev {names[k]}", dev_report)
        part = TrainingPart(name=names[k], records=records,
                            prompt=(args.dataset_prompts[k] or None) if args.dataset_prompts else None,
                            weight=args.dataset_weights[k] if args.dataset_weights else 1.0,
                            group_size=args.dataset_group_sizes[k] if args.dataset_group_sizes else None, dev=dev)
        data.parts.append(part)
        data.train += records
        data.datasets.append({"name": f"{names[k]} ({display_path(report.source, repo)})", "split": "train",
                              "size": len(records), "source": "user"})
        if dev:
            data.datasets.append({"name": f"{names[k]} ({display_path(dev_path, repo)})", "split": "dev",
                                  "size": len(dev), "source": "-"})
    if args.eval_data:
        data.dev, dev_report = load_records(args.eval_data)
        data.dev_source = args.eval_data
        data.add_report("dev", dev_report)
        data.datasets.append({"name": display_path(dev_report.source, repo), "split": "dev", "size": len(data.dev),
                              "source": "-"})
    elif any(part.dev for part in data.parts):
        data.dev = [r for part in data.parts for r in part.dev or []]
    logger.info("%d training files kept apart (%s sampling): %s", n, args.dataset_sampling,
                ", ".join(f"{p.name} {len(p.records)}" for p in data.parts))
    return data


def prepare_beir_rerank_data(args: Any, seed: int = 42, filter_teacher: Any = None) -> TrainingData:
    """Training and dev records from ``args.beir_dir`` (see :class:`hf_ragtrain.DataArguments`).

    Train queries of ``args.beir_train_split`` minus ``args.beir_dev_queries`` held-out ones get
    ``args.num_negatives`` hard negatives mined with ``args.negatives_method`` in ranks
    ``[args.negatives_rank_start, args.negatives_rank_end)``. Dev candidates are the first stage's
    top 30. The result keeps the caching first-stage encoder, so evaluation does not encode the
    corpus again. ``filter_teacher`` (a :class:`~hf_ragtrain.scoring.Teacher`, loaded by the caller from
    ``args.negatives_filter_teacher``) scores the candidates for the false-negative filters.
    """
    data = load_beir(args.beir_dir, split=args.beir_train_split)
    encoder = CachingEncoder(load_encoder(resolve_model_path(args.first_stage_model)))
    train_ids, dev_ids = split_dev_queries(list(data.qrels), args.beir_dev_queries, seed)
    train_data, dev_data = subset_queries(data, train_ids), subset_queries(data, dev_ids)
    filters = args.negative_filters()
    negatives, stats = mine_hard_negatives(
        train_data.queries, train_data.doc_texts(), train_data.qrels, method=args.negatives_method,
        encoder=encoder if args.negatives_method != "bm25" or filters.active else None,
        rank_range=(args.negatives_rank_start, args.negatives_rank_end), num_negatives=args.num_negatives, seed=seed,
        filters=filters, teacher=filter_teacher)
    logger.info("hard-negative mining: %s", stats.as_dict())
    rows, conv = beir_to_records_with_stats(train_data, negatives)
    train = [parse_record(r, source=f"{args.beir_dir} ({args.beir_train_split}), the record of query "
                                    f"{r['query_id']!r}") for r in rows]
    dev = dev_records_from_run(dev_data, first_stage_run(encoder, dev_data, top_k=30)) if dev_ids else None
    datasets = [
        {"name": f"{args.beir_dir}", "split": f"{args.beir_train_split} ({len(train)} queries)", "size": len(train),
         "source": f"BEIR folder; {args.negatives_method} negatives, ranks {args.negatives_rank_start}-"
                   f"{args.negatives_rank_end}{filter_note(filters, args.negatives_filter_teacher, stats)}; "
                   f"{conv.get('skipped_no_positive', 0)} queries without positives skipped"},
    ]
    if dev:
        datasets.append({"name": f"{args.beir_dir}", "split": f"{args.beir_train_split} held out", "size": len(dev),
                         "source": "first-stage top 30 + judged positives"})
    notes = [f"{conv['empty_documents_dropped']} judged or mined documents with no title and no text were left out "
             f"of the training records ({conv['skipped_empty_positives']} queries lost every positive that way)."
             ] if conv["empty_documents_dropped"] else []
    return TrainingData(train=train, dev=dev, datasets=datasets, first_stage=encoder, mining=stats.as_dict(),
                        report={"beir": {"mining": stats.as_dict(), "conversion": conv}}, notes=notes)
