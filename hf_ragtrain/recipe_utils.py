"""Small helpers the recipes share (they live here because nothing imports the recipes)."""

from __future__ import annotations

import os
import sys


def display_path(source: str, repo: str) -> str:
    """Bundled data by its path in the repo (not this machine's absolute path); user paths as given."""
    parts = [p.strip() for p in source.split(",")]
    return ", ".join(os.path.relpath(p, repo) if os.path.abspath(p).startswith(repo + os.sep) else p for p in parts)


def push_run(trainer, training_args) -> int:
    """Push the finished output folder; on failure say so and keep everything local (exit status 3)."""
    from .hub import HubPushError, push_folder

    trainer.wait_for_pushes()
    repo_id = getattr(trainer, "hub_model_id", None) or training_args.hub_model_id
    try:
        url = push_folder(training_args.output_dir, repo_id, token=training_args.hub_token,
                          private=training_args.hub_private_repo, revision=training_args.hub_revision)
    except HubPushError as err:
        print(f"error: {err}\nThe model, eval_results.json and README.md are still in {training_args.output_dir}; "
              f"push them later with: hf upload {repo_id} {training_args.output_dir}", file=sys.stderr)
        return 3
    print(f"pushed {training_args.output_dir} to {repo_id}: {url}")
    return 0


def mteb_model_name(training_args) -> str:
    return training_args.hub_model_id or f"local/{os.path.basename(os.path.abspath(training_args.output_dir))}"


def hub_repo_error(training_args, err: Exception) -> int:
    """With --push_to_hub the Trainer creates the Hub repo at init; say why that failed (exit status 3)."""
    print(f"error: cannot create the Hub repo {training_args.hub_model_id or training_args.output_dir} "
          f"before training ({type(err).__name__}: {err}); nothing was trained", file=sys.stderr)
    return 3


def default_data_paths(repo: str) -> tuple[str, str]:
    """The bundled Python FAQ training and dev records of a checkout."""
    return (os.path.join(repo, "data", "python_faq", "train.jsonl"),
            os.path.join(repo, "data", "python_faq", "dev.jsonl"))


def parse_recipe_args(dataclass_types: tuple, defaults: dict, argv=None):
    """``HfArgumentParser`` over ``dataclass_types`` with recipe ``defaults``; bf16 where the hardware runs
    it natively unless the command line picks a precision; ``use_cpu`` without a GPU (bf16 on CPU needs
    it, and without it torchrun's processes would train independently)."""
    import torch
    from transformers import HfArgumentParser

    from .arguments import bf16_is_fast

    parser = HfArgumentParser(dataclass_types)
    args = sys.argv[1:] if argv is None else argv
    auto_bf16 = bf16_is_fast() and not any(a.split("=")[0] in ("--bf16", "--fp16") for a in args)
    parser.set_defaults(**defaults, use_cpu=not torch.cuda.is_available(), **({"bf16": True} if auto_bf16 else {}))
    return parser.parse_args_into_dataclasses(args=argv)


def start_run(data_args, training_args, repo: str):
    """A recipe run's logging, seed and training data: ``(train, dev, datasets, extra)`` as
    :func:`load_training_data` returns them, or exit status 2 after printing what is wrong with the data."""
    import logging

    from transformers import set_seed

    from .data import DataFormatError

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if training_args.should_log else logging.WARNING)
    set_seed(training_args.seed)
    try:
        return load_training_data(data_args, training_args.seed, repo)
    except (DataFormatError, FileNotFoundError) as err:
        print(f"error: bad training data: {err}", file=sys.stderr)
        return 2


def load_training_data(data_args, seed: int, repo: str):
    """Training and dev records, a description of each for the card, and extras (the BEIR first stage).

    A BEIR folder gives mined hard negatives and a held-out dev set; otherwise ``--train_data`` (and
    ``--eval_data``), or the bundled FAQ records when no data is given.
    """
    from .data import load_records

    if data_args.beir_dir:
        from .data.beir_pipeline import prepare_beir_rerank_data

        return prepare_beir_rerank_data(data_args, seed=seed)
    default_train, default_dev = default_data_paths(repo)
    train_paths = data_args.train_data or [default_train]
    eval_path = data_args.eval_data or (default_dev if not data_args.train_data else None)
    train, report = load_records(train_paths)
    datasets = [{"name": display_path(report.source, repo), "split": "train", "size": len(train),
                 "source": "bundled Python FAQ (PSF licence)" if train_paths == [default_train] else "user"}]
    dev = None
    if eval_path:
        dev, dev_report = load_records(eval_path)
        datasets.append({"name": display_path(dev_report.source, repo), "split": "dev", "size": len(dev),
                         "source": "-"})
    return train, dev, datasets, {}


def evaluation_tasks(data_args, dev_records, repo: str) -> list:
    """mteb tasks after training: the BEIR eval split, else the dev records as a reranking task; plus --mteb_tasks."""
    from .evaluation import mteb_eval

    tasks = []
    if data_args.beir_dir:
        tasks.append(mteb_eval.beir_task(data_args.beir_dir, split=data_args.beir_eval_split))
    elif dev_records:
        source = data_args.eval_data or default_data_paths(repo)[1]
        name = "_".join(os.path.splitext(p)[0] for p in os.path.normpath(source).split(os.sep)[-2:])
        tasks.append(mteb_eval.records_task(dev_records, name=name, split="dev", source=display_path(source, repo)))
    if data_args.mteb_tasks:
        tasks += mteb_eval.get_tasks(data_args.mteb_tasks.split(","))
    return tasks


def train_evaluate_save(make_trainer, training_args, evaluate: bool):
    """Build the trainer, evaluate (``before_*``), train, evaluate (``after_*``) and save to ``output_dir``.

    Returns ``(trainer, before, after)``, or an exit status (3) when ``--push_to_hub`` cannot create
    the Hub repo (the Trainer does that at construction), so nothing is trained for nothing.
    """
    try:
        trainer = make_trainer()
    except ValueError:
        raise
    except Exception as err:
        if not training_args.push_to_hub:
            raise
        return hub_repo_error(training_args, err)
    before = trainer.evaluate(metric_key_prefix="before") if evaluate else {}
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    after = {}
    if evaluate:
        after = final_step_evaluation(trainer) or trainer.evaluate(metric_key_prefix="after")
    trainer.save_model(training_args.output_dir)
    return trainer, before, after


def final_step_evaluation(trainer) -> dict | None:
    """The metrics of the evaluation the Trainer ran at its last step (``--eval_strategy epoch`` ends
    with one), renamed ``after_*``, so the recipe does not score the dev set twice with the same
    weights; ``None`` when there was none, or when ``load_best_model_at_end`` swapped the weights."""
    if trainer.args.load_best_model_at_end:
        return None
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if entry.get("step") == step and any(k.startswith("eval_") and k.endswith("_runtime") for k in entry):
            return {("after_" + k[len("eval_"):] if k.startswith("eval_") else k): v
                    for k, v in entry.items() if k != "step"}
    return None


def reranker_mteb_evaluation(data_args, model_args, training_args, dev_records, extra: dict, repo: str) -> dict:
    """mteb evaluation of the saved reranker (cross-encoder or LlmReranker): the dev records as a
    reranking task, the BEIR split and --mteb_tasks two-stage. Written to OUTPUT_DIR/mteb in mteb's layout."""
    if not data_args.mteb_eval:
        return {}
    from .evaluation import mteb_eval
    from .offline import resolve_model_path

    tasks = evaluation_tasks(data_args, dev_records, repo)
    if not tasks:
        return {}
    first_stage = extra.get("first_stage")
    if first_stage is None and any(t.metadata.type != "Reranking" for t in tasks):
        from .data.mining import load_encoder

        first_stage = load_encoder(resolve_model_path(data_args.first_stage_model))
    out = mteb_eval.evaluate_saved_reranker(
        training_args.output_dir, tasks, first_stage=first_stage, top_k=data_args.rerank_top_k,
        output_folder=os.path.join(training_args.output_dir, "mteb"), name=mteb_model_name(training_args),
        max_length=model_args.max_length, bf16=training_args.bf16,
        first_stage_name=f"local/{os.path.basename(data_args.first_stage_model)}")
    out["settings"] = {"max_length": model_args.max_length}
    if out["first_stage"]:  # some task was retrieval: say which retriever supplied the candidates
        out["settings"].update(first_stage_model=data_args.first_stage_model, top_k=data_args.rerank_top_k)
    return out


def reranker_mteb_json(mteb: dict) -> dict:
    """The eval_results.json entries of :func:`reranker_mteb_evaluation`'s result."""
    if not mteb:
        return {}
    from .evaluation.mteb_eval import scores_as_dict

    return {"mteb": scores_as_dict(mteb["reranked"]), "mteb_first_stage": scores_as_dict(mteb["first_stage"]),
            "mteb_settings": {**mteb["settings"], "pairs": mteb["pairs"], "pairs_truncated": mteb["pairs_truncated"]}}


def print_reranker_summary(before: dict, after: dict, mteb: dict, output_dir: str) -> None:
    keys = ["ndcg@10", "mrr@10", "map@10", "recall@10"]
    if before or after:
        print("\nDev reranking metrics      before     after")
        for k in keys:
            b, a = before.get(f"before_{k}"), after.get(f"after_{k}")
            if b is not None and a is not None:
                print(f"  {k:<22} {b:>9.4f} {a:>9.4f}")
    for stage in ("first_stage", "reranked"):
        for task, scores in mteb.get(stage, {}).items():
            for split, m in scores.metrics.items():
                print(f"mteb {task} ({split}) {stage}: nDCG@10 {m['ndcg_at_10']:.4f}  MRR@10 {m['mrr_at_10']:.4f}")
    print(f"\nmodel, eval_results.json and model card written to {output_dir}")


def card_base_model(name: str) -> str:
    """The Hub id of a model given by its offline alias (what a card's ``base_model`` should say)."""
    from .offline import MINILM_ALIASES, SMOLLM2_ALIASES

    key = name.strip().lower()
    if key in MINILM_ALIASES:
        return "sentence-transformers/all-MiniLM-L6-v2"
    if key in SMOLLM2_ALIASES:
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    return name
