"""The files of a sentence-transformers 6 ``SparseEncoder`` folder around a saved masked-LM: the module
list, the SPLADE pooling's settings, and for the inference-free variant the Router and the query
route's static token weights."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import Tensor

TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
POOLING = "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"
ROUTER = "sentence_transformers.base.modules.router.Router"
STATIC = "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding"


def _dump(path: str, content: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(content, fh, indent=2)


def _transformer_config(max_length: int) -> dict[str, Any]:
    return {"transformer_task": "fill-mask", "max_seq_length": max_length,
            "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
            "module_output_name": "token_embeddings"}


def write_sparse_encoder(path: str, settings: Any, vocab_size: int, tokenizer: Any,
                         query_weights: Tensor | None) -> None:
    """Write the sentence-transformers files of ``path``, whose masked-LM (and tokenizer) is already saved
    at the root, or in ``document_0_Transformer/`` for the inference-free variant (``settings.inference_free``)."""
    import sentence_transformers
    import transformers

    pooling = {"pooling_strategy": "max", "activation_function": "relu", "embedding_dimension": vocab_size}
    if settings.inference_free:
        from safetensors.torch import save_file

        query_dir = os.path.join(path, "query_0_SparseStaticEmbedding")
        os.makedirs(query_dir, exist_ok=True)
        tokenizer.save_pretrained(query_dir)
        save_file({"weight": query_weights.detach().float().cpu().contiguous()},
                  os.path.join(query_dir, "model.safetensors"))
        _dump(os.path.join(query_dir, "config.json"), {"frozen": True})
        _dump(os.path.join(path, "document_0_Transformer", "sentence_bert_config.json"),
              _transformer_config(settings.document_max_length))
        _dump(os.path.join(path, "document_1_SpladePooling", "config.json"), pooling)
        _dump(os.path.join(path, "router_config.json"), {
            "types": {"query_0_SparseStaticEmbedding": STATIC, "document_0_Transformer": TRANSFORMER,
                      "document_1_SpladePooling": POOLING},
            "structure": {"query": ["query_0_SparseStaticEmbedding"],
                          "document": ["document_0_Transformer", "document_1_SpladePooling"]},
            "parameters": {"default_route": "document", "allow_empty_key": True, "route_mappings": {}}})
        modules = [{"idx": 0, "name": "0", "path": "", "type": ROUTER}]
    else:
        config = _transformer_config(settings.document_max_length)
        config.update(query_length=settings.query_max_length, document_length=settings.document_max_length)
        _dump(os.path.join(path, "sentence_bert_config.json"), config)
        _dump(os.path.join(path, "1_SpladePooling", "config.json"), pooling)
        modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
                   {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": POOLING}]
    _dump(os.path.join(path, "modules.json"), modules)
    _dump(os.path.join(path, "config_sentence_transformers.json"), {
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "model_type": "SparseEncoder", "default_prompt_name": None,
        "prompts": {"query": settings.query_prompt, "document": settings.document_prompt},
        "similarity_fn_name": "dot", **({"max_active_dims": settings.max_active_dims}
                                        if settings.max_active_dims else {})})
