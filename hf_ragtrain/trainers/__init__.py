from .base import RetrievalTrainer
from .colbert import ColbertTrainer
from .contrastive import ContrastiveTrainer
from .rerank import RerankTrainer

__all__ = ["ColbertTrainer", "ContrastiveTrainer", "RetrievalTrainer", "RerankTrainer"]
