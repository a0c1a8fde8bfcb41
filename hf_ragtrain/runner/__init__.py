"""The recipe runner: one template (:class:`Recipe`) for every training recipe, its two model families,
and the mteb step of each family."""

from .encoders import EncoderRecipe
from .mteb_steps import colbert_mteb, embedder_mteb, reranker_mteb
from .recipe import (EXIT_BAD_INPUT, EXIT_HUB, EXIT_SAVE_FAILED, MtebOutcome, Recipe, RecipeError, final_step_evaluation,
                     one_line)
from .rerankers import RerankerRecipe

__all__ = ["EXIT_BAD_INPUT", "EXIT_HUB", "EXIT_SAVE_FAILED", "EncoderRecipe", "MtebOutcome", "Recipe", "RecipeError",
           "RerankerRecipe", "colbert_mteb", "embedder_mteb", "final_step_evaluation", "one_line", "reranker_mteb"]
