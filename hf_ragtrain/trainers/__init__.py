from .base import RetrievalTrainer
from .contrastive import ContrastiveTrainer
from .rerank import RerankTrainer

__all__ = ["ContrastiveTrainer", "RetrievalTrainer", "RerankTrainer"]
