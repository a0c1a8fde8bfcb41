"""RerankerRecipe: what the reranker recipes share (cross-encoders, LLM rerankers, distilled students):
pairs of (query, document) in groups, reranking evaluation, two-stage mteb, the reranker card."""

from __future__ import annotations

import os
from typing import Any

from transformers import PreTrainedModel

from ..arguments import RerankerTrainingArguments
from ..data.collators import RerankCollator
from ..data.mining import BM25Stats
from ..evaluation.first_stage import FirstStage, hit_rate_rows, worse_than_first_stage
from ..evaluation.reranking import RerankingEvaluator
from ..modeling.fusion import FUSION_FILE, FirstStageFusion, zero_score_head
from ..offline import hub_name, resolve_model_path
from ..reranker import find_reranker_kind
from ..trainers import RerankTrainer
from .mteb_steps import reranker_mteb
from .recipe import MtebOutcome, Recipe, RecipeError, metrics_lines, one_line


#: The first stage's weight for a fresh cross-encoder head (bundled dev set: 5 and 20 keep the first stage's 0.9552 in one epoch, 5 gains with more; BENCHMARKS.md).
DEFAULT_FIRST_STAGE_WEIGHT = 5.0
#: The learning rate of a fresh head started at zero behind its first stage: at the body's 5e-5 the head grows so
#: slowly that the reranker barely moves from its first stage (SciFact dev, BENCHMARKS.md "Two-stage pipeline").
DEFAULT_HEAD_LEARNING_RATE = 1e-3


class RerankerRecipe(Recipe):
    """A reranker recipe: ``build_model`` returns the model and sets ``self.tokenizer``; pairs are cut
    to ``--max_length`` tokens (counted), micro-batched by ``--micro_batch_tokens``."""

    training_arguments = RerankerTrainingArguments
    trainer_class = RerankTrainer
    card_task = "reranking"
    metrics_title = "Dev, reranking each query's candidates"
    llm_card = False  # the LLM reranker's card (its usage and library)

    def build_collator(self) -> Any:
        return RerankCollator(self.tokenizer, max_length=self.model_args.max_length, **self.batching())

    def make_trainer(self) -> Any:
        """The template's trainer, with the tokenizer saved to say the length the model was trained at
        (``model_max_length``, which sentence-transformers' ``CrossEncoder`` and :class:`~hf_ragtrain.Reranker`
        read as their default): on SciFact dev, a reranker trained at 256 tokens and scored at 512 lost
        0.023 nDCG@10 (0.7935 -> 0.7701)."""
        trainer = super().make_trainer()
        if self.tokenizer is not None:
            self.tokenizer.model_max_length = self.model_args.max_length
        return trainer

    def build_evaluator(self, dev: list) -> Any:
        self.evaluator = RerankingEvaluator(dev, max_length=self.model_args.max_length, first_stage=self.first_stage())
        return self.evaluator

    def first_stage(self) -> FirstStage | None:
        """What the reranker is measured against on the dev candidates: a hybrid first stage the reranker
        keeps (cosine and BM25, weighted as in its score), else the retriever a BEIR folder's candidates
        came from, else ``--first_stage_model`` ranking the same candidates (``none``: nothing)."""
        name = self.data_args.first_stage_model
        if name.lower() == "none":
            return None
        if self.data_args.first_stage_bm25_weight:
            fusion = self.kept_first_stage()
            if fusion is not None:
                return FirstStage.kept_by(fusion)
        try:
            return FirstStage.embedder(self.data.first_stage or name, name=hub_name(name))
        except (OSError, ValueError, ImportError) as err:
            raise RecipeError(f"cannot load the first stage --first_stage_model {name} that the reranker is measured "
                              f"against: {one_line(err)}; give a bi-encoder folder, or --first_stage_model none to "
                              "skip the comparison") from None

    def fusion(self) -> FirstStageFusion | None:
        """The first stage whose score a cross-encoder adds to its own (:mod:`hf_ragtrain.modeling.fusion`):
        ``--first_stage_weight``, else the base folder's own fusion, else the default weight for a fresh
        head (zeroed here, so training starts from the first stage), else none."""
        weight, name = self.data_args.first_stage_weight, self.data_args.first_stage_model
        base = resolve_model_path(self.model_args.model_name_or_path)
        fresh = find_reranker_kind(base) in (None, "bi-encoder")
        if weight == 0 or (weight is None and not fresh and not os.path.isfile(os.path.join(base, FUSION_FILE))):
            return None
        if not isinstance(self.model, PreTrainedModel):
            if weight is None:
                return None
            raise RecipeError("--first_stage_weight applies to cross-encoders; an LLM reranker scores alone "
                              "(leave the flag out)")
        if weight is None and not fresh:  # continue training a reranker that fuses its first stage
            return FirstStageFusion.from_folder(base)
        if name.lower() == "none":
            raise RecipeError("--first_stage_weight needs a first stage: give --first_stage_model, or "
                              "--first_stage_weight 0 to train the cross-encoder alone")
        if fresh:
            zero_score_head(self.model)
            if self.training_args.head_learning_rate is None:
                self.training_args.head_learning_rate = DEFAULT_HEAD_LEARNING_RATE
        bm25_weight = self.data_args.first_stage_bm25_weight
        bm25 = BM25Stats.load(self.data_args.first_stage_bm25) if bm25_weight else None
        return FirstStageFusion(weight=DEFAULT_FIRST_STAGE_WEIGHT if weight is None else weight,
                                source=resolve_model_path(name), name=hub_name(name), bm25_weight=bm25_weight,
                                bm25=bm25)

    def kept_first_stage(self) -> FirstStageFusion | None:
        """:meth:`fusion`, built once (the model's head is zeroed then), with loading errors as a
        :class:`RecipeError`."""
        if not hasattr(self, "first_stage_fusion"):
            try:
                self.first_stage_fusion = self.fusion()
            except (OSError, ValueError) as err:
                raise RecipeError(f"cannot load the first stage --first_stage_model {self.data_args.first_stage_model} "
                                  f"whose score the reranker adds to its own: {one_line(err)}") from None
        return self.first_stage_fusion

    def trainer_options(self) -> dict[str, Any]:
        return {**super().trainer_options(), "first_stage": self.kept_first_stage()}

    def train_and_evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        """As the template's, with the first stage's metrics kept apart (:meth:`first_stage_report`)."""
        before, after = super().train_and_evaluate()
        return without_first_stage(before), without_first_stage(after)

    def first_stage_report(self) -> dict[str, Any] | None:
        """The first stage on the dev candidates: ``{"model", "metrics"}``, or ``None``."""
        evaluator = getattr(self, "evaluator", None)
        metrics = evaluator.first_stage_metrics() if evaluator is not None else None
        return {"model": evaluator.first_stage.name, "metrics": metrics} if metrics else None

    def warnings(self) -> list[str]:
        """Every place the trained reranker is worse than its first stage: the dev candidates, and each
        mteb task the first stage was evaluated on too."""
        out = []
        first = self.first_stage_report()
        if first and self.after:
            plain = {k[len("after_"):]: v for k, v in self.after.items()}
            out.append(worse_than_first_stage(plain, first["metrics"], first["model"], self.evaluator.candidates))
        for task, scores in self.mteb.results.items():
            base = self.mteb.first_stage.get(task)
            for split, metrics in scores.metrics.items() if base else ():
                out.append(worse_than_first_stage({"ndcg@10": metrics["ndcg_at_10"]},
                                                  {"ndcg@10": base.metrics[split]["ndcg_at_10"]},
                                                  hub_name(self.data_args.first_stage_model),
                                                  f"mteb {task} ({split})"))
        return [w for w in out if w]

    def extra_results(self) -> dict[str, Any]:
        first = self.first_stage_report()
        return {"first_stage": first, "warnings": self.warnings()} if first else {"warnings": self.warnings()}

    def summary_lines(self) -> list[str]:
        first = self.first_stage_report()
        if not (first and self.after):
            return super().summary_lines() + [f"\nWARNING: {w}" for w in self.warnings()]
        after = {k[len("after_"):]: v for k, v in self.after.items()}
        fusion = getattr(self, "first_stage_fusion", None)
        fused = ([f"\nthe reranker's score is {fusion.formula()}, the first stage being {fusion.name} (saved with "
                  "the model; hf_ragtrain.Reranker adds it back)"] if fusion else [])
        return [*fused, f"\nfirst stage on the same dev candidates: {first['model']}",
                *metrics_lines(self.metrics_title, self.summary_metrics, self.before, self.after, first["metrics"]),
                *self.mteb.summary, *hit_rate_lines(first["metrics"], after),
                *(f"\nWARNING: {w}" for w in self.warnings())]

    def evaluate_saved(self, tasks: list[Any]) -> MtebOutcome:
        return reranker_mteb(self, tasks)

    def count_entries(self, counts: dict[str, int]) -> dict[str, int]:
        return {"train_pairs": counts["pairs_seen"], "train_pairs_truncated": counts["pairs_truncated"]}

    def truncation_note(self, counts: dict[str, int]) -> str:
        return (f"{counts['pairs_truncated']} of {counts['pairs_seen']} training pairs were longer than "
                f"{self.model_args.max_length} tokens and were truncated.")

    def card_loss_params(self) -> dict[str, Any]:
        return {"max_length": self.model_args.max_length}

    def card_info(self, counts: dict[str, int]) -> Any:
        info = super().card_info(counts)
        first = self.first_stage_report()
        if first:
            info.first_stage, info.metrics_first_stage = first["model"], first["metrics"]
        info.warnings = self.warnings()
        fusion = getattr(self, "first_stage_fusion", None)
        if fusion is not None:
            info.fusion = {"weight": fusion.weight, "first_stage": fusion.name, "bm25_weight": fusion.bm25_weight}
        return info

    def render_card(self, info: Any) -> Any:
        from ..hub import render_reranker_card

        return render_reranker_card(info, self.training_args, self.trainer.state.log_history, llm=self.llm_card)


def without_first_stage(metrics: dict[str, float]) -> dict[str, float]:
    """An evaluation's metrics without the ``*first_stage_*`` entries the evaluator adds to every one."""
    return {k: v for k, v in metrics.items() if "first_stage_" not in k}


def hit_rate_lines(first: dict[str, float], reranked: dict[str, float]) -> list[str]:
    """The console table of hit rate and MRR at k, first stage against reranked."""
    rows = hit_rate_rows(first, reranked)
    if not rows:
        return []
    return ["\n   k   hit rate: first stage  reranked    MRR: first stage  reranked",
            *(f"  {k:>2}   {h1:>20.4f} {h2:>9.4f}    {m1:>15.4f} {m2:>9.4f}" for k, h1, h2, m1, m2 in rows)]
