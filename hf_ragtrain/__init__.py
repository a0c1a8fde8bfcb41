"""hf_ragtrain: fine-tune the retrieval models behind RAG with the stock transformers Trainer."""

from .arguments import (ColbertTrainingArguments, DataArguments, DistillTrainingArguments, EmbeddingArguments,
                        EmbeddingTrainingArguments, LlmRerankerArguments, ModelArguments, RerankerTrainingArguments)
from .data import DataFormatError, EmbeddingCollator, GroupDataset, RerankCollator, RetrievalRecord, load_records
from .evaluation.metrics import ranking_metrics
from .evaluation.reranking import RerankingEvaluator
from .losses import info_nce, listwise_ce, matryoshka, pairwise_ranknet, pointwise_bce, score_distillation_kl
from .modeling.bi_encoder import BiEncoder, EncoderSettings, LoraSettings
from .modeling.colbert import ColbertEncoder, ColbertSettings, maxsim
from .modeling.cross_encoder import load_cross_encoder, score_pairs
from .modeling.llm_reranker import LlmReranker, LlmRerankerSettings
from .reranker import BaseReranker, RankedDocument, Reranker
from .trainers import ColbertTrainer, ContrastiveTrainer, DistillTrainer, RerankTrainer, RetrievalTrainer

__version__ = "0.1.0"

__all__ = [
    "BaseReranker", "BiEncoder", "ColbertEncoder", "ColbertSettings", "ColbertTrainer", "ColbertTrainingArguments",
    "ContrastiveTrainer", "DataArguments", "DataFormatError", "DistillTrainer", "DistillTrainingArguments",
    "EmbeddingArguments", "EmbeddingCollator", "EmbeddingTrainingArguments", "EncoderSettings", "GroupDataset",
    "info_nce", "listwise_ce", "LlmReranker", "LlmRerankerArguments", "LlmRerankerSettings", "load_cross_encoder",
    "load_records", "LoraSettings", "matryoshka", "maxsim", "ModelArguments", "pairwise_ranknet", "pointwise_bce",
    "RankedDocument", "ranking_metrics", "RerankCollator", "Reranker", "RerankerTrainingArguments", "RerankingEvaluator", "RerankTrainer",
    "RetrievalRecord", "RetrievalTrainer", "score_distillation_kl", "score_pairs",
]
