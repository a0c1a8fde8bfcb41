"""EncoderRecipe: what the encoder recipes share (bi-encoders and ColBERT): queries and passages
encoded apart, in-batch negatives, retrieval evaluation over the dev documents, the retrieval card."""

from __future__ import annotations

from typing import Any

from ..data.collators import EmbeddingCollator
from ..evaluation.retrieval import RetrievalEvaluator
from .recipe import Recipe


class EncoderRecipe(Recipe):
    """An encoder recipe: ``build_model`` returns the encoder (it tokenises queries and passages with
    their own lengths and prompts); texts are micro-batched by ``--micro_batch_tokens``."""

    card_task = "retrieval"
    metrics_title = "Dev, retrieval over all dev documents"
    summary_metrics = ("ndcg@10", "mrr@10", "map@10", "recall@10", "recall@100")
    card_family = "embedder"  # the card's intro, usage and tags: embedder, colbert or sparse

    def build_collator(self) -> Any:
        return EmbeddingCollator(self.model, **self.batching())

    def build_evaluator(self, dev: list) -> Any:
        return RetrievalEvaluator(dev)

    def count_entries(self, counts: dict[str, int]) -> dict[str, int]:
        return {"train_texts": counts["texts_seen"], "train_texts_truncated": counts["texts_truncated"]}

    def truncation_note(self, counts: dict[str, int]) -> str:
        return (f"{counts['texts_truncated']} of {counts['texts_seen']} training texts were longer than their max "
                "length and were truncated.")

    def render_card(self, info: Any) -> Any:
        from ..hub import render_embedding_card

        return render_embedding_card(info, self.training_args, self.trainer.state.log_history,
                                     family=self.card_family)
