"""RerankerRecipe: what the reranker recipes share (cross-encoders, LLM rerankers, distilled students):
pairs of (query, document) in groups, reranking evaluation, two-stage mteb, the reranker card."""

from __future__ import annotations

from typing import Any

from ..arguments import RerankerTrainingArguments
from ..data.collators import RerankCollator
from ..evaluation.reranking import RerankingEvaluator
from ..trainers import RerankTrainer
from .mteb_steps import reranker_mteb
from .recipe import MtebOutcome, Recipe


class RerankerRecipe(Recipe):
    """A reranker recipe: ``build_model`` returns the model and sets ``self.tokenizer``; pairs are cut
    to ``--max_length`` tokens (counted), micro-batched by ``--micro_batch_tokens``."""

    training_arguments = RerankerTrainingArguments
    trainer_class = RerankTrainer
    card_task = "reranking"
    metrics_title = "Dev reranking metrics"
    llm_card = False  # the LLM reranker's card (its usage and library)

    def build_collator(self) -> Any:
        return RerankCollator(self.tokenizer, max_length=self.model_args.max_length, **self.batching())

    def build_evaluator(self, dev: list) -> Any:
        return RerankingEvaluator(dev, max_length=self.model_args.max_length)

    def evaluate_saved(self, tasks: list[Any]) -> MtebOutcome:
        return reranker_mteb(self, tasks)

    def count_entries(self, counts: dict[str, int]) -> dict[str, int]:
        return {"train_pairs": counts["pairs_seen"], "train_pairs_truncated": counts["pairs_truncated"]}

    def truncation_note(self, counts: dict[str, int]) -> str:
        return (f"{counts['pairs_truncated']} of {counts['pairs_seen']} training pairs were longer than "
                f"{self.model_args.max_length} tokens and were truncated.")

    def card_loss_params(self) -> dict[str, Any]:
        return {"max_length": self.model_args.max_length}

    def render_card(self, info: Any) -> Any:
        from ..hub import render_reranker_card

        return render_reranker_card(info, self.training_args, self.trainer.state.log_history, llm=self.llm_card)
