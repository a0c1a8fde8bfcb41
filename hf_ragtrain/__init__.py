"""hf_ragtrain: fine-tune the retrieval models behind RAG with the stock transformers Trainer."""

from .arguments import (ColbertTrainingArguments, DataArguments, EmbeddingArguments, EmbeddingTrainingArguments,
                        ModelArguments, RerankerTrainingArguments)
from .data import DataFormatError, EmbeddingCollator, GroupDataset, RerankCollator, RetrievalRecord, load_records
from .evaluation.metrics import ranking_metrics
from .evaluation.reranking import RerankingEvaluator
from .losses import info_nce, listwise_ce, matryoshka, pairwise_ranknet, pointwise_bce, score_distillation_kl
from .modeling.bi_encoder import BiEncoder, EncoderSettings, LoraSettings
from .modeling.colbert import ColbertEncoder, ColbertSettings, maxsim
from .modeling.cross_encoder import load_cross_encoder, score_pairs
from .modeling.llm_reranker import LlmReranker, LlmRerankerSettings
from .trainers import ColbertTrainer, ContrastiveTrainer, RerankTrainer, RetrievalTrainer

__version__ = "0.1.0"

__all__ = [
    "BiEncoder", "ColbertEncoder", "ColbertSettings", "ColbertTrainer", "ColbertTrainingArguments", "ContrastiveTrainer",
    "maxsim", "EmbeddingArguments", "EmbeddingCollator", "EmbeddingTrainingArguments",
    "EncoderSettings", "LlmReranker", "LlmRerankerSettings", "LoraSettings", "info_nce", "matryoshka", "score_distillation_kl",
    "DataArguments", "DataFormatError", "GroupDataset", "ModelArguments", "RerankCollator", "RerankTrainer",
    "RerankerTrainingArguments", "RerankingEvaluator", "RetrievalRecord", "RetrievalTrainer", "listwise_ce",
    "load_cross_encoder", "load_records", "pairwise_ranknet", "pointwise_bce", "ranking_metrics", "score_pairs",
]
