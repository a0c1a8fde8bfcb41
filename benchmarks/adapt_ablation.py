#!/usr/bin/env python
"""What each stage of domain adaptation adds to the embedder: an ablation over a finished adaptation.

Given a folder that ``recipes/adapt.py`` finished, the embedder is trained again with the pipeline's
own settings (``EMBEDDER_FLAGS`` and the run's ``--embedder_args``, the same seed) on the records of each
row, built from that run's stage outputs, and every row is evaluated alone (cosine over the whole corpus,
through mteb) on the labelled queries of ``--eval_beir``:

    zero-shot                the base embedder, untrained
    inverse-cloze only       every inverse-cloze query, hard negatives mined from the base hybrid, InfoNCE
    + LLM questions          and every question the chat model wrote
    + round-trip filter      the filter's training queries (``negatives/train.jsonl``), InfoNCE
    + teacher labels         ``teacher/train.jsonl`` (InfoNCE + KL to the teacher): the run's own trained
                             embedder (``embedder_trained/``, or ``embedder/`` of a run made before averaging)
    filter on the embedder   instead of row 3: every query of row 2 whose source passage the base embedder
                             alone (no BM25) ranks in the filter's top k, InfoNCE
    + averaged with the base the full pipeline: row 4's weights averaged with the base embedder's, the run's
                             ``--embedder_base_share`` (no training)

Rows 1, 2 and 5 mine their negatives the way the ``negatives`` stage does (likely false negatives skipped). The
held-out generated queries, and every query on their source passages, are left out of each row.

    python benchmarks/adapt_ablation.py --adapt_dir runs/git-adapt --eval_beir runs/git_docs --split dev \\
        --output_dir runs/git-ablation

``--rows 2 3 4`` measures only those rows (numbered as above; zero-shot always), where training every row would
take too long. ``--seed N`` trains every row with another seed (row 4 too, from the run's teacher-labelled
records), into its own ``--output_dir``: the rows' spread over seeds, against which their differences can be read.
``--base_share S`` averages row 6 with that share of the base embedder instead of the run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

#: (row name, generators of its queries or None for the filtered training records, the retriever of its own
#: round-trip filter or None, trained on the teacher's labels)
ROWS = (("inverse-cloze only", ("inverse-cloze",), None, False),
        ("+ LLM questions", ("inverse-cloze", "llm"), None, False),
        ("+ round-trip filter", None, None, False),
        ("+ teacher labels", None, None, True),
        ("+ LLM questions, round-trip filter on the embedder alone", ("inverse-cloze", "llm"), "embedder", False),
        ("+ averaged with the base embedder (the pipeline)", None, None, True))
#: The row that averages row 4's embedder with the base one instead of training.
AVERAGED_ROW = 6


def unfiltered_queries(adapt_dir: str, generators: Sequence[str]) -> list:
    """The run's generated queries of ``generators``, before the round-trip filter, less the held-out
    queries and every query on a held-out query's source passage."""
    from hf_ragtrain.data.generated import read_generated

    held = [q for name in ("dev", "eval") for q in read_generated(os.path.join(adapt_dir, "filter", f"{name}.jsonl"))]
    held_sources = {q.doc_id for q in held}
    return [q for q in read_generated(os.path.join(adapt_dir, "queries", "generated.jsonl"))
            if q.generator in generators and q.doc_id not in held_sources]


def row_records(pipeline: Any, generators: Sequence[str] | None, filter_with: str | None = None,
                teacher: bool = False) -> tuple[list[dict], dict]:
    """The training records of one row (dicts in the training format), and what went into them: the filtered
    ones the ``negatives`` stage wrote (``generators`` None), with the teacher's scores the ``teacher`` stage
    wrote when ``teacher``, else mined here, after a round trip through the base embedder alone when
    ``filter_with`` is ``"embedder"``."""
    from hf_ragtrain.data.consistency import round_trip_filter, source_ranks
    from hf_ragtrain.data.generated_records import mine_generated
    from hf_ragtrain.data.records import load_records

    if generators is None:
        path = pipeline.path(*(("teacher", "train.jsonl") if teacher else ("negatives", "train.jsonl")))
        records, _ = load_records(path)
        return [r.to_dict() for r in records], {"records": len(records), "from": os.path.relpath(path, pipeline.out)}
    queries = unfiltered_queries(pipeline.out, generators)
    corpus, w, made = pipeline.corpus(), pipeline.base_weights(), {}
    if filter_with == "embedder":
        position = {d: i for i, d in enumerate(corpus.ids)}
        ranks = source_ranks(pipeline.base_index(), queries, position, 1.0, 0.0)
        queries, counts = round_trip_filter(queries, ranks, pipeline.args.filter_top_k)
        made["filter"] = counts.as_dict()
    elif filter_with is not None:
        raise ValueError(f"filter_with={filter_with!r}: expected None or 'embedder'")
    rows, mined = mine_generated(pipeline.base_index(), queries, corpus.ids, corpus.full_texts(), w["dense_weight"],
                                 w["bm25_weight"], pipeline.args.top_k, pipeline.args.num_negatives)
    return rows, {"queries": len(queries), **made, **mined.as_dict()}


def train_row(pipeline: Any, records: list[dict], folder: str) -> None:
    """The embedder trained on ``records`` into ``folder`` with the pipeline's settings (skipped when done)."""
    from hf_ragtrain.data.records import write_jsonl_atomically
    from hf_ragtrain.runner.adaptation import EMBEDDER_FLAGS
    from hf_ragtrain.runner.stages import run_training_recipe

    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        return
    data = os.path.join(folder + "-data", "train.jsonl")
    write_jsonl_atomically(data, records)
    flags = ["--model_name_or_path", pipeline.args.embedder_model, "--train_data", data,
             "--eval_data", pipeline.path("negatives", "dev.jsonl"), *EMBEDDER_FLAGS]
    run_training_recipe(os.path.join(REPO, "recipes", "train_embedding.py"), folder, pipeline.args.seed, flags,
                        pipeline.args.embedder_args)


def teacher_row_model(pipeline: Any, output_dir: str, own_seed: bool) -> tuple[str, dict]:
    """Row 4's embedder: the run's own trained one, or (another seed) one trained again into ``row4``."""
    from hf_ragtrain.runner.adaptation import TRAINED_EMBEDDER

    if own_seed:
        trained = pipeline.path(TRAINED_EMBEDDER)
        return (trained, {"from": f"{TRAINED_EMBEDDER}/ (the run's own)"}) if os.path.isdir(trained) else \
            (pipeline.path("embedder"), {"from": "embedder/ (the run's own, made before averaging)"})
    records, made = row_records(pipeline, None, None, True)
    folder = os.path.join(output_dir, "row4")
    train_row(pipeline, records, folder)
    return folder, made


def row_model(pipeline: Any, number: int, output_dir: str, own_seed: bool) -> tuple[str, dict]:
    """The embedder of row ``number`` (trained, or averaged, when not done yet) and what its records were."""
    from hf_ragtrain.modeling.merge import merge_with_base
    from hf_ragtrain.offline import resolve_model_path

    folder = os.path.join(output_dir, f"row{number}")
    if number == AVERAGED_ROW:
        trained, made = teacher_row_model(pipeline, output_dir, own_seed)
        share = pipeline.args.embedder_base_share
        merge_with_base(trained, resolve_model_path(pipeline.args.embedder_model), folder, share)
        return folder, {**made, "base_share": share}
    _, generators, filter_with, teacher = ROWS[number - 1]
    if teacher:
        return teacher_row_model(pipeline, output_dir, own_seed)
    records, made = row_records(pipeline, generators, filter_with, teacher)
    train_row(pipeline, records, folder)
    return folder, made


def evaluate(model_dir: str, eval_beir: str, split: str, output_folder: str) -> dict[str, float]:
    """The embedder alone on the labelled queries, through mteb: nDCG@10, MRR@10, Recall@100."""
    from hf_ragtrain.evaluation.mteb_eval import beir_task, evaluate_saved_embedder

    (scores,) = evaluate_saved_embedder(model_dir, [beir_task(eval_beir, split=split)], output_folder)["full"].values()
    metrics = next(iter(scores.metrics.values()))
    return {k: float(metrics[k]) for k in ("ndcg_at_10", "mrr_at_10", "recall_at_100")}


def rows_to_run(done: Sequence[str], only: Sequence[int] | None) -> list[tuple[int, tuple]]:
    """The rows of ``ROWS`` still to measure, as (number from 1, row): those not in ``done`` (names already in
    the results file) and, when ``only`` is given, among those numbers."""
    return [(i, row) for i, row in enumerate(ROWS, 1) if row[0] not in done and (only is None or i in only)]


def run_arguments(adapt_dir: str) -> Any:
    """The ``AdaptArguments`` the run in ``adapt_dir`` was made with, from its stage markers."""
    import dataclasses
    import glob

    from hf_ragtrain import AdaptArguments
    from hf_ragtrain.runner.stages import read_json

    names = {f.name for f in dataclasses.fields(AdaptArguments)}
    settings: dict[str, Any] = {}
    for marker in sorted(glob.glob(os.path.join(adapt_dir, ".stages", "*.json"))):
        settings.update({k: v for k, v in read_json(marker)["settings"].items() if k in names and v is not None})
    if "corpus" not in settings:
        raise SystemExit(f"{adapt_dir}: no finished stage of recipes/adapt.py found in {adapt_dir}/.stages")
    return AdaptArguments(**{**settings, "output_dir": adapt_dir})


def main(argv: Sequence[str] | None = None) -> int:
    from hf_ragtrain.offline import resolve_model_path
    from hf_ragtrain.runner.adaptation import DomainAdaptation
    from hf_ragtrain.runner.stages import read_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapt_dir", required=True, help="A folder recipes/adapt.py finished.")
    parser.add_argument("--eval_beir", required=True, help="A BEIR folder with labelled queries over the same corpus.")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=None,
                        help="Train every row with this seed instead of the run's, to see the seed-to-seed spread; "
                             "row 4 (and so row 6) is then trained again from the run's teacher/train.jsonl.")
    parser.add_argument("--rows", type=int, nargs="+", choices=range(1, len(ROWS) + 1), default=None,
                        help="Only these rows (numbered as in the docstring, 1-6; zero-shot is always measured); "
                             "default: all.")
    parser.add_argument("--base_share", type=float, default=None,
                        help="Row 6's share of the base embedder instead of the run's --embedder_base_share "
                             "(its results go to their own --output_dir).")
    a = parser.parse_args(argv)
    pipeline = DomainAdaptation(run_arguments(a.adapt_dir), echo=print)
    own_seed = a.seed is None or a.seed == pipeline.args.seed
    if a.seed is not None:
        pipeline.args.seed = a.seed
    if a.base_share is not None:
        pipeline.args.embedder_base_share = a.base_share
    out_json = os.path.join(a.output_dir, "ablation.json")
    results = read_json(out_json) if os.path.isfile(out_json) else {}
    if "zero-shot" not in results:
        results["zero-shot"] = {"metrics": evaluate(resolve_model_path(pipeline.args.embedder_model), a.eval_beir,
                                                    a.split, os.path.join(a.output_dir, "mteb"))}
    for i, (name, *_) in rows_to_run(list(results), a.rows):
        start = time.time()
        folder, made = row_model(pipeline, i, a.output_dir, own_seed)
        results[name] = {"made": made, "metrics": evaluate(folder, a.eval_beir, a.split,
                                                           os.path.join(a.output_dir, "mteb")),
                         "seconds": round(time.time() - start, 1)}
        os.makedirs(a.output_dir, exist_ok=True)
        with open(out_json, "w") as f:
            json.dump(results, f, indent=2)
    print(f"| {a.split}, embedder alone | nDCG@10 | MRR@10 | Recall@100 |\n|---|---|---|---|")
    for name, row in results.items():
        m = row["metrics"]
        print(f"| {name} | {m['ndcg_at_10']:.4f} | {m['mrr_at_10']:.4f} | {m['recall_at_100']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
