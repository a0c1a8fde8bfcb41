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

import os
import sys
import time
from functools import cached_property

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (DistillArguments, DistillTrainer, DistillTrainingArguments, RecipeError,  # noqa: E402
                         RerankerRecipe, load_cross_encoder)
from hf_ragtrain.runner import one_line  # noqa: E402
from hf_ragtrain.offline import resolve_model_path  # noqa: E402


class DistillReranker(RerankerRecipe):
    """A cross-encoder student trained on a teacher's scores (in the records, or from ``--teacher``)."""

    options = {"teacher_args": DistillArguments}
    training_arguments = DistillTrainingArguments
    trainer_class = DistillTrainer
    defaults = {"num_train_epochs": 2}

    def check_data(self, data) -> None:
        self.unscored = sum(r.pos_scores is None or r.neg_scores is None for r in data.train)
        if self.teacher_args.teacher is None and self.unscored:
            raise RecipeError(f"{self.unscored} of {len(data.train)} training records have no teacher scores "
                              "(pos_scores/neg_scores); add them with recipes/score_with_teacher.py or give --teacher")

    def build_model(self):
        self.teacher = None
        t = self.teacher_args
        if t.teacher is not None:
            from hf_ragtrain.scoring import load_teacher

            try:
                self.teacher = load_teacher(t.teacher, kind=t.teacher_kind, max_length=t.teacher_max_length,
                                            batch_tokens=t.teacher_batch_tokens, bf16=self.training_args.bf16)
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot load the teacher {t.teacher}: {one_line(err)}") from None
        model, self.tokenizer = load_cross_encoder(resolve_model_path(self.model_args.model_name_or_path),
                                                   attn_implementation=self.model_args.attn_implementation)
        return model

    def trainer_options(self) -> dict:
        # with scored records the teacher is only compared with the student on the dev set; the first stage
        # (--first_stage_weight) is the reranker recipe's, added to the student's logit as train_reranker.py does
        return {**super().trainer_options(), "teacher": self.teacher if self.unscored else None}

    def extra_results(self) -> dict:
        return {**self.comparison, "teacher_pairs_scored": self.trainer.teacher_pairs_scored}

    def model_notes(self) -> list[str]:
        return comparison_notes(self.comparison)

    def summary_lines(self) -> list[str]:
        return [*comparison_notes(self.comparison), *super().summary_lines()]

    @cached_property
    def comparison(self) -> dict:
        """The teacher's dev metrics and both models' scoring speed on the dev candidates."""
        evaluator = self.trainer.eval_dataset
        if evaluator is None:
            return {}
        out: dict = {}
        if self.teacher is not None and self.teacher_args.evaluate_teacher:
            out["teacher"], out["teacher_pairs_per_s"] = timed(self.teacher.score, evaluator)
            out["teacher_source"] = self.teacher_args.teacher
        elif all(r.pos_scores is not None and r.neg_scores is not None for r in self.data.dev):
            out["teacher"], _ = timed(records_scorer(self.data.dev), evaluator)
            out["teacher_source"] = "teacher scores in the dev records"
        if "teacher" in out:
            student = self.trainer.accelerator.unwrap_model(self.trainer.model).eval()
            out["student"], out["student_pairs_per_s"] = timed(
                evaluator.scorer_for(student, self.tokenizer, self.model_args.max_length), evaluator)
        return out


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


def comparison_notes(comparison: dict) -> list[str]:
    """The teacher-vs-student lines of the card and the console."""
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


def main(argv=None) -> int:
    return DistillReranker(REPO).run(argv)


if __name__ == "__main__":
    sys.exit(main())
