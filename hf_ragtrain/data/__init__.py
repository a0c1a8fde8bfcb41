from .collators import EmbeddingCollator, RerankCollator, pack_by_length, tokenize_pairs
from .errors import DataFormatError
from .groups import DataFacts, GroupDataset, GroupStats
from .records import LoadReport, RetrievalRecord, load_records, parse_record, write_records

__all__ = [
    "DataFacts", "DataFormatError", "EmbeddingCollator", "GroupDataset", "GroupStats", "LoadReport", "RerankCollator", "RetrievalRecord",
    "load_records", "pack_by_length", "parse_record", "tokenize_pairs", "write_records",
]
