"""Reranker.from_pretrained(..., backend="openvino"): the compiled graph gives the torch model's scores."""

import numpy as np
import pytest
import torch

from conftest import TEXTS
from hf_ragtrain import Reranker
from hf_ragtrain.hardware import cpu_has_native_bf16
from hf_ragtrain.modeling.cross_encoder import score_pairs

pytest.importorskip("openvino")

# mixed lengths, so that batches are padded; one document far past max_length
QUERIES = [TEXTS[0], TEXTS[2], TEXTS[4], TEXTS[0], TEXTS[6], TEXTS[2]]
DOCS = [TEXTS[1], TEXTS[3] + " " + TEXTS[5], " ".join(TEXTS), TEXTS[7], TEXTS[9] + " " + TEXTS[1], "lambda"]
PAIRS = list(zip(QUERIES, DOCS))


@pytest.fixture(scope="module")
def minilm_ce(tmp_path_factory):
    """The real MiniLM with a seeded fresh 1-logit head, saved as a cross-encoder folder."""
    from hf_ragtrain.modeling.cross_encoder import load_cross_encoder
    from hf_ragtrain.offline import resolve_model_path

    torch.manual_seed(0)
    model, tokenizer = load_cross_encoder(resolve_model_path("minilm"))
    path = str(tmp_path_factory.mktemp("minilm_ce"))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_openvino_fp32_gives_the_torch_scores_for_padded_batches_of_mixed_length(minilm_ce):
    torch_scores = Reranker.from_pretrained(minilm_ce, dtype="fp32", max_length=64).compute_score(PAIRS, batch_size=4)
    reranker = Reranker.from_pretrained(minilm_ce, dtype="fp32", max_length=64, backend="openvino")
    assert np.ptp(torch_scores) > 1e-3  # the pairs score differently, so equal lists say something
    for batch_size in (1, 4):
        np.testing.assert_allclose(reranker.compute_score(PAIRS, batch_size=batch_size), torch_scores, atol=1e-5)
    assert reranker.last.truncated == 1  # the long document is counted as with torch
    # padding to a multiple adds masked positions only: the graph reads the attention mask
    graph, tok = reranker.graph, reranker.tokenizer
    wide = score_pairs(graph, tok, QUERIES, DOCS, max_length=64, batch_size=6, pad_to_multiple_of=64)
    tight = score_pairs(graph, tok, QUERIES, DOCS, max_length=64, batch_size=6, pad_to_multiple_of=0)
    np.testing.assert_allclose(wide, tight, atol=1e-5)


def test_openvino_scores_long_documents_window_by_window_as_torch_does(minilm_ce):
    options = {"dtype": "fp32", "max_length": 24, "long_doc": "max_chunk", "overlap": 4}
    expected = Reranker.from_pretrained(minilm_ce, **options).compute_score(PAIRS)
    reranker = Reranker.from_pretrained(minilm_ce, backend="openvino", **options)
    np.testing.assert_allclose(reranker.compute_score(PAIRS), expected, atol=1e-5)
    assert reranker.last.windows > len(PAIRS)


def test_openvino_bf16_is_bf16_where_the_cpu_has_it_and_stays_close(minilm_ce):
    exact = np.asarray(Reranker.from_pretrained(minilm_ce, dtype="fp32", max_length=64).compute_score(PAIRS))
    scores = np.asarray(Reranker.from_pretrained(minilm_ce, dtype="bf16", max_length=64,
                                                 backend="openvino").compute_score(PAIRS))
    # bf16 keeps 8 bits of mantissa: about 2 significant digits of the logit
    np.testing.assert_allclose(scores, exact, rtol=0, atol=0.05 * np.abs(exact).max())
    if cpu_has_native_bf16():  # the precision hint took effect (a CPU without bf16 units computes in fp32)
        assert not np.allclose(scores, exact, rtol=0, atol=1e-6)


def test_openvino_is_refused_where_it_cannot_apply(minilm_ce, tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        Reranker.from_pretrained(minilm_ce, backend="onnx")
    with pytest.raises(ValueError, match="scores on the CPU"):
        Reranker.from_pretrained(minilm_ce, backend="openvino", device="meta")
    with pytest.raises(ValueError, match="fp32 or bf16"):
        Reranker.from_pretrained(minilm_ce, backend="openvino", dtype="fp16")
    from hf_ragtrain.offline import resolve_model_path

    with pytest.raises(ValueError, match="holds a bi-encoder reranker"):
        Reranker.from_pretrained(resolve_model_path("minilm"), backend="openvino")
