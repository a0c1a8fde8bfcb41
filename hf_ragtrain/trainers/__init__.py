from .base import RetrievalTrainer
from .rerank import RerankTrainer

__all__ = ["RetrievalTrainer", "RerankTrainer"]
