"""A cross-encoder compiled by OpenVINO for CPU scoring: ``Reranker.from_pretrained(path, backend="openvino")``.

The torch model is traced into an OpenVINO graph at load time (a few seconds; nothing is written to
disk) and compiled for the CPU at the precision asked: ``f32``, or ``bf16`` on CPUs that multiply
bf16 in hardware (AMX / AVX512-BF16), where OpenVINO runs the whole graph in bf16 rather than the
matmuls only as torch autocast does. On SciFact pairs (MiniLM, Intel AMX) it scored 1.5x faster than
torch in bf16 and 1.2x in fp32 (BENCHMARKS.md, ``benchmarks/bench_rerank_inference.py``).

Needs the ``openvino`` extra: ``pip install 'hf_ragtrain[openvino]'``.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

PRECISIONS = {torch.float32: "f32", torch.bfloat16: "bf16"}
#: batch widths are rounded up to this many tokens: the CPU plugin compiles kernels per input shape,
#: and on SciFact pairs 32 scored 1.1x faster than padding each batch to its own longest pair
PAD_MULTIPLE = 32


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as err:
        raise ImportError("backend='openvino' needs the openvino package: pip install 'hf_ragtrain[openvino]' "
                          "(or pip install openvino)") from err
    return openvino


class _Logits(torch.nn.Module):
    """The model as a function of its named inputs, in a fixed order, returning the logits tensor."""

    def __init__(self, model: PreTrainedModel, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


class OpenVinoCrossEncoder:
    """``model`` converted to an OpenVINO graph and compiled for the CPU at ``dtype`` (fp32 or bf16).

    ``score_batch(batch)`` takes one padded tokenizer batch (the tokenizer's input names, arrays of
    shape ``(B, L)``) and returns the logits as float32 ``(B, C)``; :func:`score_pairs` calls it in
    place of the torch forward pass.
    """

    pad_to_multiple_of = PAD_MULTIPLE

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype = torch.float32):
        ov = import_openvino()
        if dtype not in PRECISIONS:
            raise ValueError(f"backend='openvino' computes in fp32 or bf16, not {dtype}; pass dtype='fp32' or 'bf16'")
        example = tokenizer(["a query", "q"], ["a longer document text", "d"], padding=True, return_tensors="pt")
        self.names = tuple(name for name in tokenizer.model_input_names if name in example)
        model = model.float().eval()
        with torch.no_grad(), warnings.catch_warnings():
            # transformers' mask code branches on shapes while tracing; for an encoder those branches do not
            # depend on the batch (tests/test_openvino_backend.py checks padded batches of other shapes)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            graph = ov.convert_model(_Logits(model, self.names), example_input=tuple(example[n] for n in self.names))
        settings = {"INFERENCE_PRECISION_HINT": PRECISIONS[dtype], "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(graph, "CPU", settings)

    def score_batch(self, batch: Mapping[str, Any]) -> np.ndarray:
        inputs = [np.asarray(batch[name], dtype=np.int64) for name in self.names]
        return np.asarray(self.compiled(inputs)[0], dtype=np.float32).reshape(len(inputs[0]), -1)
