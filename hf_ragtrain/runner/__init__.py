"""The recipe runner: one template (:class:`Recipe`) for every training recipe, its two model families,
the mteb step of each family, and pipelines of resumable stages (the two-stage pipeline, domain adaptation)."""

from .adaptation import (DomainAdaptation, adapt, filter_queries, generate_queries, label_pairs, mine_negatives,
                    train_adapted_embedder, train_adapted_reranker)
from .encoders import EncoderRecipe
from .mteb_steps import colbert_mteb, embedder_mteb, reranker_mteb, sparse_mteb
from .recipe import (EXIT_BAD_INPUT, EXIT_HUB, EXIT_SAVE_FAILED, MtebOutcome, Recipe, RecipeError, final_step_evaluation,
                     one_line)
from .rerankers import RerankerRecipe
from .stages import Stage, StageRunner
from .two_stage import TwoStagePipeline

__all__ = ["DomainAdaptation", "adapt", "filter_queries", "generate_queries", "label_pairs", "mine_negatives",
           "train_adapted_embedder", "train_adapted_reranker", "EXIT_BAD_INPUT", "EXIT_HUB", "EXIT_SAVE_FAILED", "EncoderRecipe", "MtebOutcome", "Recipe", "RecipeError",
           "RerankerRecipe", "Stage", "StageRunner", "TwoStagePipeline", "colbert_mteb", "embedder_mteb",
           "final_step_evaluation", "one_line", "reranker_mteb", "sparse_mteb"]
