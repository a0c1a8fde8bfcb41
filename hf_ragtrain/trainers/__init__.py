from .base import RetrievalTrainer
from .colbert import ColbertTrainer
from .contrastive import ContrastiveTrainer
from .distill import DistillTrainer
from .in_batch import InBatchTrainer
from .rerank import RerankTrainer
from .sparse import SparseTrainer

__all__ = ["ColbertTrainer", "ContrastiveTrainer", "DistillTrainer", "InBatchTrainer", "RetrievalTrainer",
           "RerankTrainer", "SparseTrainer"]
