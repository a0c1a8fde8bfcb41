from .base import RetrievalTrainer
from .colbert import ColbertTrainer
from .contrastive import ContrastiveTrainer
from .distill import DistillTrainer
from .rerank import RerankTrainer

__all__ = ["ColbertTrainer", "ContrastiveTrainer", "DistillTrainer", "RetrievalTrainer", "RerankTrainer"]
