#!/usr/bin/env python
"""Distil a teacher reranker (e.g. an LLM reranker) into a small cross-encoder; evaluate, save, write the card.

    # teacher scores already in the records (recipes/score_with_teacher.py)
    python recipes/distill_reranker.py --output_dir runs/student --train_data runs/train.scored.jsonl \\
        --eval_data runs/dev.scored.jsonl
    # or a frozen teacher scoring each pair during training
    python recipes/distill_reranker.py --output_dir runs/student --teacher runs/llm-reranker --distill_loss soft_ce

With scored records and --teacher, training uses the records' scores and the teacher model is only
evaluated and timed on the dev set next to the student.

The student defaults to all-MiniLM-L6-v2 with a fresh 1-logit head (``--model_name_or_path``). Every
``transformers.TrainingArguments`` flag works. ``eval_results.json`` holds the student's dev metrics
before and after, the teacher's on the same candidates (from --teacher, or from teacher scores in the
dev records), both models' scoring speed in pairs per second, and the mteb results of the saved
student; ``README.md`` is its model card.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (DataArguments, DistillTrainer, DistillTrainingArguments,  # noqa: E402
                         GroupDataset, ModelArguments, RerankCollator, RerankingEvaluator, load_cross_encoder)
from hf_ragtrain.arguments import DistillArguments, collator_batching  # noqa: E402
from hf_ragtrain.hub import CardInfo, render_reranker_card, write_model_card  # noqa: E402
from hf_ragtrain.offline import resolve_model_path  # noqa: E402
from hf_ragtrain.recipe_utils import (card_base_model, parse_recipe_args, print_reranker_summary,  # noqa: E402
                                      push_run, reranker_mteb_evaluation, reranker_mteb_json, start_run,
                                      train_evaluate_save)
from hf_ragtrain.trainers.base import end_distributed  # noqa: E402

logger = logging.getLogger("distill_reranker")

RECIPE_DEFAULTS = dict(
    learning_rate=5e-5, num_train_epochs=2, per_device_train_batch_size=8, warmup_steps=0.1,
    logging_steps=5, eval_strategy="epoch", save_strategy="no", report_to="none", seed=42,
)


def records_scorer(records):
    """A scorer that answers from the teacher scores stored in the records."""
    table = {}
    for r in records:
        query = (r.prompt or "") + r.query
        for doc, score in zip([*r.pos, *r.neg], [*(r.pos_scores or []), *(r.neg_scores or [])]):
            table[(query, doc)] = score
    return lambda queries, docs: [table[(q, d)] for q, d in zip(queries, docs)]


def timed(scorer, evaluator) -> tuple[dict, float]:
    """Metrics of ``scorer`` on the dev candidates, and its pairs per second."""
    start = time.perf_counter()
    metrics = evaluator(scorer)
    return metrics, len(evaluator.docs) / (time.perf_counter() - start)


def main(argv=None) -> int:
    model_args, dist, data_args, training_args = parse_recipe_args(
        (ModelArguments, DistillArguments, DataArguments, DistillTrainingArguments), RECIPE_DEFAULTS, argv)
    data = start_run(data_args, training_args, REPO)
    if isinstance(data, int):
        return data
    train_records, dev_records, datasets, extra = data
    unscored = sum(r.pos_scores is None or r.neg_scores is None for r in train_records)
    if dist.teacher is None and unscored:
        print(f"error: {unscored} of {len(train_records)} training records have no teacher scores (pos_scores/"
              "neg_scores); add them with recipes/score_with_teacher.py or give --teacher", file=sys.stderr)
        return 2
    teacher = None
    if dist.teacher is not None:
        from hf_ragtrain.scoring import load_teacher

        teacher = load_teacher(dist.teacher, kind=dist.teacher_kind, max_length=dist.teacher_max_length,
                               batch_tokens=dist.teacher_batch_tokens, bf16=training_args.bf16)

    model, tokenizer = load_cross_encoder(resolve_model_path(model_args.model_name_or_path),
                                          attn_implementation=model_args.attn_implementation)
    train_dataset = GroupDataset(train_records, group_size=data_args.train_group_size, seed=training_args.seed)
    collator = RerankCollator(tokenizer, max_length=model_args.max_length,
                              **collator_batching(data_args, training_args.bf16))
    evaluator = RerankingEvaluator(dev_records, max_length=model_args.max_length) if dev_records else None
    if evaluator is None:
        training_args.eval_strategy = "no"
    run = train_evaluate_save(lambda: DistillTrainer(model=model, args=training_args, train_dataset=train_dataset,
                                                     eval_dataset=evaluator, data_collator=collator,
                                                     processing_class=tokenizer,
                                                     teacher=teacher if unscored else None),
                              training_args, evaluate=evaluator is not None)
    if isinstance(run, int):
        return run
    trainer, before, after = run

    counts = trainer.total_counts()
    status = 0
    if trainer.is_world_process_zero():
        comparison = compare_with_teacher(trainer, evaluator, teacher, dev_records, dist, model_args.max_length)
        mteb = reranker_mteb_evaluation(data_args, model_args, training_args, dev_records, extra, REPO)
        results = {"before": before, "after": after, **comparison, **reranker_mteb_json(mteb),
                   "train_group_stats": vars(train_dataset.stats), "teacher_pairs_scored": trainer.teacher_pairs_scored,
                   "train_pairs": counts["pairs_seen"], "train_pairs_truncated": counts["pairs_truncated"]}
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        loss_name, loss_params = trainer.loss_description()
        info = CardInfo(
            base_model=card_base_model(model_args.model_name_or_path), trainer="DistillTrainer",
            loss=f"{loss_name} (DistillTrainer)",
            loss_params={"train_group_size": data_args.train_group_size, "max_length": model_args.max_length,
                         **loss_params},
            datasets=datasets, metrics_before=before, metrics_after=after,
            mteb_results=mteb.get("reranked", {}), mteb_first_stage=mteb.get("first_stage", {}),
            mteb_settings=mteb.get("settings", {}),
            notes=[*comparison_notes(comparison, dist),
                   f"{counts['pairs_truncated']} of {counts['pairs_seen']} training pairs were longer than "
                   f"{model_args.max_length} tokens and were truncated.", train_dataset.stats.summary()],
            model_name=os.path.basename(os.path.abspath(training_args.output_dir)),
        )
        write_model_card(training_args.output_dir, render_reranker_card(info, training_args,
                                                                        trainer.state.log_history))
        for note in comparison_notes(comparison, dist):
            print(note)
        print_reranker_summary(before, after, mteb, training_args.output_dir)
        if training_args.push_to_hub:
            status = push_run(trainer, training_args)
    end_distributed()
    return status


def compare_with_teacher(trainer, evaluator, teacher, dev_records, dist: DistillArguments, max_length: int) -> dict:
    """The teacher's dev metrics and both models' scoring speed on the dev candidates."""
    if evaluator is None:
        return {}
    out: dict = {}
    if teacher is not None and dist.evaluate_teacher:
        out["teacher"], out["teacher_pairs_per_s"] = timed(teacher.score, evaluator)
        out["teacher_source"] = dist.teacher
    elif all(r.pos_scores is not None and r.neg_scores is not None for r in dev_records):
        out["teacher"], _ = timed(records_scorer(dev_records), evaluator)
        out["teacher_source"] = "teacher scores in the dev records"
    if "teacher" in out:
        student = trainer.accelerator.unwrap_model(trainer.model).eval()
        out["student"], out["student_pairs_per_s"] = timed(evaluator.scorer_for(student, trainer.processing_class,
                                                                                max_length), evaluator)
    return out


def comparison_notes(comparison: dict, dist: DistillArguments) -> list[str]:
    if "teacher" not in comparison:
        return []
    t, s = comparison["teacher"]["ndcg@10"], comparison["student"]["ndcg@10"]
    notes = [f"Dev nDCG@10: teacher ({comparison['teacher_source']}) {t:.4f}, distilled student {s:.4f} "
             f"({s / t:.1%} of the teacher)."]
    if "teacher_pairs_per_s" in comparison:
        tp, sp = comparison["teacher_pairs_per_s"], comparison["student_pairs_per_s"]
        notes.append(f"Scoring speed on the dev candidates, same machine, one after the other: teacher {tp:.1f} "
                     f"pairs/s, student {sp:.1f} pairs/s ({sp / tp:.1f}x).")
    return notes


if __name__ == "__main__":
    sys.exit(main())
