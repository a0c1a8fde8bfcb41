"""hf_ragtrain: fine-tune the retrieval models behind RAG with the stock transformers Trainer."""

from .arguments import DataArguments, ModelArguments, RerankerTrainingArguments
from .data import DataFormatError, GroupDataset, RerankCollator, RetrievalRecord, load_records
from .evaluation.metrics import ranking_metrics
from .evaluation.reranking import RerankingEvaluator
from .losses import listwise_ce, pairwise_ranknet, pointwise_bce
from .modeling.cross_encoder import load_cross_encoder, score_pairs
from .trainers import RerankTrainer, RetrievalTrainer

__version__ = "0.1.0"

__all__ = [
    "DataArguments", "DataFormatError", "GroupDataset", "ModelArguments", "RerankCollator", "RerankTrainer",
    "RerankerTrainingArguments", "RerankingEvaluator", "RetrievalRecord", "RetrievalTrainer", "listwise_ce",
    "load_cross_encoder", "load_records", "pairwise_ranknet", "pointwise_bce", "ranking_metrics", "score_pairs",
]
