"""hf_ragtrain: fine-tune the retrieval models behind RAG with the stock transformers Trainer.

Everything a recipe or a notebook needs is importable from here; the layers behind it are
described in ARCHITECTURE.md.
"""

from .arguments import (AdaptArguments, ColbertArguments, ColbertTrainingArguments, ContrastiveLossArguments, DataArguments,
                        DistillArguments, DistillTrainingArguments, EmbeddingArguments, EmbeddingTrainingArguments, HybridArguments,
                        LlmRerankerArguments, LoraArguments, ModelArguments, PipelineArguments,
                        RerankerTrainingArguments, RetrievalTrainingArguments, SparseArguments,
                        SparseTrainingArguments)
from .data import (DataFacts, DataFormatError, EmbeddingCollator, GroupDataset, RerankCollator, RetrievalRecord,
                   load_records, write_records)
from .evaluation.first_stage import FirstStage
from .evaluation.metrics import ranking_metrics
from .evaluation.reranking import RerankingEvaluator
from .evaluation.retrieval import RetrievalEvaluator
from .losses import (active_dimensions, cosine_embedding_loss, distill_bce, distill_mse, distill_soft_ce, group_scores, info_nce,
                     flops, info_nce_from_scores, lambda_loss, listnet, listwise_ce, margin_mse, matryoshka, own_group,
                     pairwise_ranknet, pointwise_bce, relative_similarity_loss, score_distillation_kl,
                     similarity_mse_loss)
from .modeling.backbone import LoraSettings
from .modeling.bi_encoder import BiEncoder, EncoderSettings
from .modeling.colbert import ColbertEncoder, ColbertSettings, maxsim
from .modeling.cross_encoder import load_cross_encoder, score_pairs
from .modeling.llm_reranker import LlmReranker, LlmRerankerSettings
from .modeling.splade import SpladeEncoder, SpladeSettings
from .reranker import BaseReranker, RankedDocument, Reranker, find_reranker_kind, reranker_kind
from .runner import (DomainAdaptation, EncoderRecipe, MtebOutcome, Recipe, RecipeError, RerankerRecipe, Stage,
                     StageRunner, TwoStagePipeline, adapt, colbert_mteb, embedder_mteb, filter_queries, generate_queries,
                     label_pairs, mine_negatives, reranker_mteb, sparse_mteb, train_adapted_embedder, train_adapted_reranker)
from .scoring import FunctionTeacher, HybridTeacher, RerankerTeacher, load_teacher, score_records
from .trainers import (ColbertTrainer, ContrastiveTrainer, DistillTrainer, InBatchTrainer, RerankTrainer,
                       RetrievalTrainer, SparseTrainer)
from .version import __version__

__all__ = [
    # arguments
    "AdaptArguments", "ColbertArguments", "ColbertTrainingArguments", "ContrastiveLossArguments", "DataArguments", "DistillArguments",
    "DistillTrainingArguments", "EmbeddingArguments", "EmbeddingTrainingArguments", "HybridArguments", "LlmRerankerArguments",
    "LoraArguments", "ModelArguments", "PipelineArguments", "RerankerTrainingArguments", "RetrievalTrainingArguments",
    "SparseArguments", "SparseTrainingArguments",
    # data
    "DataFacts", "DataFormatError", "EmbeddingCollator", "GroupDataset", "RerankCollator", "RetrievalRecord",
    "load_records", "write_records",
    # evaluation
    "FirstStage", "RerankingEvaluator", "RetrievalEvaluator", "ranking_metrics",
    # losses
    "active_dimensions", "cosine_embedding_loss", "distill_bce", "distill_mse", "distill_soft_ce", "group_scores", "info_nce",
    "flops", "info_nce_from_scores", "lambda_loss", "listnet", "listwise_ce", "margin_mse", "matryoshka", "own_group",
    "pairwise_ranknet", "pointwise_bce", "relative_similarity_loss", "score_distillation_kl", "similarity_mse_loss",
    # models
    "BiEncoder", "ColbertEncoder", "ColbertSettings", "EncoderSettings", "LlmReranker", "LlmRerankerSettings",
    "LoraSettings", "SpladeEncoder", "SpladeSettings", "load_cross_encoder", "maxsim", "score_pairs",
    # inference and teachers
    "BaseReranker", "FunctionTeacher", "HybridTeacher", "RankedDocument", "Reranker", "RerankerTeacher", "find_reranker_kind",
    "load_teacher", "reranker_kind", "score_records",
    # trainers
    "ColbertTrainer", "ContrastiveTrainer", "DistillTrainer", "InBatchTrainer", "RerankTrainer", "RetrievalTrainer",
    "SparseTrainer",
    # the recipe runner
    "EncoderRecipe", "MtebOutcome", "Recipe", "RecipeError", "RerankerRecipe", "Stage", "StageRunner",
    "TwoStagePipeline", "colbert_mteb", "embedder_mteb", "reranker_mteb", "sparse_mteb",
    # domain adaptation: one function per stage, and adapt() for all of them
    "DomainAdaptation", "adapt", "generate_queries", "filter_queries", "mine_negatives", "label_pairs",
    "train_adapted_embedder", "train_adapted_reranker",
    "__version__",
]
