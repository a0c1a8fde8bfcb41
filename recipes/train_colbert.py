#!/usr/bin/env python
"""Train a ColBERT (late-interaction) model, evaluate it before and after, save it with a model card.

    python recipes/train_colbert.py --output_dir runs/colbert                   # bundled Python FAQ data, MiniLM
    python recipes/train_colbert.py --output_dir runs/colbert-scifact --beir_dir ../shared/data/scifact \\
        --skip_punctuation True --query_expansion True
    torchrun --nproc_per_node 2 recipes/train_colbert.py --output_dir runs/ddp --deepspeed recipes/configs/ds_zero2.json

Every ``transformers.TrainingArguments`` flag works. The output folder loads with
``sentence_transformers.MultiVectorEncoder(DIR)`` and ``hf_ragtrain.ColbertEncoder.from_pretrained(DIR)``;
``eval_results.json`` holds dev retrieval metrics (brute-force MaxSim) before and after training and the
mteb results of the saved folder (the BEIR eval split as full-corpus MaxSim retrieval, else the dev
records as a MaxSim reranking task, plus --mteb_tasks); ``README.md`` is the model card, with those
results in its model-index.
"""

from __future__ import annotations

import json
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (ColbertEncoder, ColbertTrainer, ColbertTrainingArguments, DataArguments,  # noqa: E402
                         EmbeddingCollator, GroupDataset, ModelArguments)
from hf_ragtrain.arguments import ColbertArguments, collator_batching  # noqa: E402
from hf_ragtrain.evaluation.retrieval import RetrievalEvaluator  # noqa: E402
from hf_ragtrain.hub import CardInfo, render_embedding_card, write_model_card  # noqa: E402
from hf_ragtrain.recipe_utils import (evaluation_tasks, mteb_model_name, parse_recipe_args,  # noqa: E402
                                      push_run, start_run, train_evaluate_save)
from hf_ragtrain.trainers.base import end_distributed  # noqa: E402

logger = logging.getLogger("train_colbert")

RECIPE_DEFAULTS = dict(
    learning_rate=3e-5, num_train_epochs=1, per_device_train_batch_size=16, warmup_steps=0.1,
    logging_steps=5, eval_strategy="epoch", save_strategy="no", report_to="none", seed=42,
)


def run_mteb_evaluation(data_args: DataArguments, training_args, dev_records) -> dict:
    """mteb evaluation of the saved folder: the BEIR eval split by brute-force MaxSim over its corpus
    (or the dev records as a reranking task) and --mteb_tasks. Written to OUTPUT_DIR/mteb."""
    if not data_args.mteb_eval:
        return {}
    from hf_ragtrain.evaluation import mteb_eval

    tasks = evaluation_tasks(data_args, dev_records, REPO)
    if not tasks:
        return {}
    results = mteb_eval.evaluate_saved_colbert(training_args.output_dir, tasks,
                                               output_folder=os.path.join(training_args.output_dir, "mteb"),
                                               name=mteb_model_name(training_args), bf16=training_args.bf16,
                                               show_progress=True)
    how = {"Retrieval": "brute-force MaxSim over the whole corpus", "Reranking": "MaxSim reranking of each query's "
           "candidates"}
    notes = [f"mteb {task} ({split}), {how.get(scores.task_type, scores.task_type)}: nDCG@10 "
             f"{m['ndcg_at_10']:.4f}, MRR@10 {m['mrr_at_10']:.4f}, Recall@100 {m['recall_at_100']:.4f}."
             for task, scores in results.items() for split, m in scores.metrics.items()]
    return {"full": results, "json": {"mteb": mteb_eval.scores_as_dict(results)}, "notes": notes,
            "settings": {"precision": "bf16 autocast" if training_args.bf16 else "fp32"}}


def main(argv=None) -> int:
    model_args, col, data_args, training_args = parse_recipe_args(
        (ModelArguments, ColbertArguments, DataArguments, ColbertTrainingArguments), RECIPE_DEFAULTS, argv)
    data = start_run(data_args, training_args, REPO)
    if isinstance(data, int):
        return data
    train_records, dev_records, datasets, _ = data

    model = ColbertEncoder.from_pretrained(
        model_args.model_name_or_path, attn_implementation=model_args.attn_implementation, seed=training_args.seed,
        skip_punctuation=col.skip_punctuation, colbert_dim=col.colbert_dim, query_max_length=col.query_max_length,
        document_max_length=col.document_max_length, query_prompt=col.query_prompt,
        document_prompt=col.document_prompt, query_expansion=col.query_expansion,
        attend_to_expansion=col.attend_to_expansion)
    train_dataset = GroupDataset(train_records, group_size=data_args.train_group_size, seed=training_args.seed)
    collator = EmbeddingCollator(model, **collator_batching(data_args, training_args.bf16))
    evaluator = RetrievalEvaluator(dev_records) if dev_records else None
    if evaluator is None:
        training_args.eval_strategy = "no"
    run = train_evaluate_save(lambda: ColbertTrainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=evaluator,
                               data_collator=collator), training_args, evaluate=evaluator is not None)
    if isinstance(run, int):
        return run
    trainer, before, after = run
    counts = trainer.total_counts()
    status = 0
    if trainer.is_world_process_zero():
        mteb = run_mteb_evaluation(data_args, training_args, dev_records)
        results = {"before": before, "after": after, **mteb.get("json", {}),
                   "train_group_stats": vars(train_dataset.stats),
                   "train_texts": counts["texts_seen"], "train_texts_truncated": counts["texts_truncated"]}
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        loss_name, loss_params = trainer.loss_description()
        s = model.settings
        notes = [f"ColBERT: {s.colbert_dim}-dimensional token vectors, queries up to {s.query_max_length} tokens"
                 + (" (padded to it with scored [MASK] tokens)" if s.query_expansion else "")
                 + f", documents up to {s.document_max_length}"
                 + (f", {len(s.skiplist)} skip-list tokens left out of document scoring" if s.skiplist else "") + ".",
                 f"{counts['texts_truncated']} of {counts['texts_seen']} training texts were longer than their max "
                 "length and were truncated.", train_dataset.stats.summary(), *mteb.get("notes", [])]
        info = CardInfo(base_model=model_args.model_name_or_path, task="retrieval",
                        loss=f"{loss_name} ({type(trainer).__name__})",
                        loss_params={"train_group_size": data_args.train_group_size, **loss_params},
                        datasets=datasets, metrics_before=before, metrics_after=after, notes=notes,
                        mteb_results=mteb.get("full", {}), mteb_settings=mteb.get("settings", {}),
                        model_name=os.path.basename(os.path.abspath(training_args.output_dir)))
        write_model_card(training_args.output_dir,
                         render_embedding_card(info, training_args, trainer.state.log_history, colbert=True))
        for k in ("ndcg@10", "mrr@10", "recall@10"):
            if f"before_{k}" in before:
                print(f"dev {k}: {before[f'before_{k}']:.4f} -> {after[f'after_{k}']:.4f}")
        for note in mteb.get("notes", []):
            print(note)
        print(f"model, eval_results.json and model card written to {training_args.output_dir}")
        if training_args.push_to_hub:
            status = push_run(trainer, training_args)
    end_distributed()
    return status


if __name__ == "__main__":
    sys.exit(main())
