#!/usr/bin/env python
"""Train a cross-encoder reranker, evaluate it before and after, save it with a model card.

    python recipes/train_reranker.py --output_dir runs/reranker             # bundled Python FAQ data
    python recipes/train_reranker.py --output_dir runs/scifact --beir_dir ../shared/data/scifact
    torchrun --nproc_per_node 2 recipes/train_reranker.py --output_dir runs/ddp --deepspeed recipes/configs/ds_zero2.json

Every ``transformers.TrainingArguments`` flag works. The output folder holds the final model
(loadable by ``AutoModelForSequenceClassification`` and sentence-transformers ``CrossEncoder``),
``eval_results.json`` (metrics before and after training) and ``README.md`` (the model card).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from transformers import set_seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (DataArguments, DataFormatError, GroupDataset, ModelArguments,  # noqa: E402
                         RerankCollator, RerankerTrainingArguments, RerankingEvaluator, RerankTrainer,
                         load_cross_encoder)
from hf_ragtrain.arguments import default_micro_batch_tokens  # noqa: E402
from hf_ragtrain.hub import CardInfo, render_reranker_card, write_model_card  # noqa: E402
from hf_ragtrain.offline import resolve_model_path  # noqa: E402
from hf_ragtrain.recipe_utils import (evaluation_tasks, load_training_data, mteb_model_name,  # noqa: E402
                                      parse_recipe_args, push_run, train_evaluate_save)
from hf_ragtrain.trainers.base import end_distributed  # noqa: E402

logger = logging.getLogger("train_reranker")

# Recipe defaults where the stock TrainingArguments defaults do not suit a small reranking job.
RECIPE_DEFAULTS = dict(
    learning_rate=5e-5, num_train_epochs=1, per_device_train_batch_size=8, warmup_steps=0.1,
    logging_steps=5, eval_strategy="epoch", save_strategy="no", report_to="none", seed=42,
)


def parse_args(argv=None):
    return parse_recipe_args((ModelArguments, DataArguments, RerankerTrainingArguments), RECIPE_DEFAULTS, argv)


def load_data(data_args: DataArguments, seed: int):
    return load_training_data(data_args, seed, REPO)


def main(argv=None) -> int:
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if training_args.should_log else logging.WARNING)
    set_seed(training_args.seed)
    try:
        train_records, dev_records, datasets, extra = load_data(data_args, training_args.seed)
    except (DataFormatError, FileNotFoundError) as err:
        print(f"error: bad training data: {err}", file=sys.stderr)
        return 2

    base = resolve_model_path(model_args.model_name_or_path)
    model, tokenizer = load_cross_encoder(base, attn_implementation=model_args.attn_implementation)
    train_dataset = GroupDataset(train_records, group_size=data_args.train_group_size, seed=training_args.seed)
    collator = RerankCollator(tokenizer, max_length=model_args.max_length,
                              micro_batch_tokens=default_micro_batch_tokens() if data_args.micro_batch_tokens is None
                              else data_args.micro_batch_tokens or None)
    evaluator = RerankingEvaluator(dev_records, max_length=model_args.max_length) if dev_records else None
    if evaluator is None:
        training_args.eval_strategy = "no"
    run = train_evaluate_save(lambda: RerankTrainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=evaluator,
                              data_collator=collator, processing_class=tokenizer), training_args, evaluate=evaluator is not None)
    if isinstance(run, int):
        return run
    trainer, before, after = run

    counts = trainer.total_counts()
    status = 0
    if trainer.is_world_process_zero():
        mteb = run_mteb_evaluation(data_args, model_args, training_args, dev_records, extra)
        results = {"before": before, "after": after, **_mteb_json(mteb),
                   "train_group_stats": vars(train_dataset.stats),
                   "train_pairs": counts["pairs_seen"], "train_pairs_truncated": counts["pairs_truncated"]}
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        info = CardInfo(
            base_model=model_args.model_name_or_path if base == model_args.model_name_or_path
            else "sentence-transformers/all-MiniLM-L6-v2",
            loss=f"{trainer.loss_name} ({type(trainer).__name__})",
            loss_params={"train_group_size": data_args.train_group_size, "max_length": model_args.max_length,
                         **({"temperature": trainer.temperature} if trainer.loss_name == "listwise" else {}),
                         **({"max_label": trainer.max_label} if trainer.loss_name == "pointwise" else {})},
            datasets=datasets, metrics_before=before, metrics_after=after,
            mteb_results=mteb.get("reranked", {}), mteb_first_stage=mteb.get("first_stage", {}),
            mteb_settings=mteb.get("settings", {}),
            notes=[f"{counts['pairs_truncated']} of {counts['pairs_seen']} training pairs were longer than "
                   f"{model_args.max_length} tokens and were truncated.", train_dataset.stats.summary(),
                   *([f"mteb evaluation: {mteb['pairs_truncated']} of {mteb['pairs']} scored pairs were longer than "
                      f"{model_args.max_length} tokens and were truncated."] if mteb else [])],
            model_name=os.path.basename(os.path.abspath(training_args.output_dir)),
        )
        write_model_card(training_args.output_dir,
                         render_reranker_card(info, training_args, trainer.state.log_history))
        _print_summary(before, after, mteb, training_args.output_dir)
        if training_args.push_to_hub:
            status = push_run(trainer, training_args)
    end_distributed()
    return status


def run_mteb_evaluation(data_args: DataArguments, model_args: ModelArguments, training_args, dev_records,
                        extra: dict) -> dict:
    """mteb evaluation of the saved model: dev records as a reranking task, the BEIR split and
    --mteb_tasks two-stage. Results are written to OUTPUT_DIR/mteb in mteb's layout."""
    if not data_args.mteb_eval:
        return {}
    from hf_ragtrain.evaluation import mteb_eval

    tasks = evaluation_tasks(data_args, dev_records, REPO)
    if not tasks:
        return {}
    first_stage = extra.get("first_stage")
    if first_stage is None and any(t.metadata.type != "Reranking" for t in tasks):
        from hf_ragtrain.data.mining import load_encoder

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


def _mteb_json(mteb: dict) -> dict:
    if not mteb:
        return {}
    from hf_ragtrain.evaluation.mteb_eval import scores_as_dict

    return {"mteb": scores_as_dict(mteb["reranked"]), "mteb_first_stage": scores_as_dict(mteb["first_stage"]),
            "mteb_settings": {**mteb["settings"], "pairs": mteb["pairs"], "pairs_truncated": mteb["pairs_truncated"]}}


def _print_summary(before: dict, after: dict, mteb: dict, output_dir: str) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
