"""The unified Reranker API: every kind against a reference computed another way (sentence-transformers,
the model's own logits in the published prompt layouts, the encoders' own scoring), long documents,
rank() bookkeeping, kind detection and custom subclasses."""

import types

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TEXTS, build_tiny_llm
from hf_ragtrain import BaseReranker, LlmReranker, RankedDocument, Reranker
from hf_ragtrain.modeling.llm_reranker import BGE_INSTRUCTION, BGE_TEMPLATE
from hf_ragtrain.reranker import (ColbertReranker, CrossEncoderReranker, LayerwiseLlmReranker, LlmPairReranker,
                                  ZeroShotReranker, reranker_kind, split_windows)

QUERIES = [TEXTS[0], TEXTS[0], TEXTS[2], TEXTS[4]]
DOCS = [TEXTS[1], TEXTS[3] + " " + TEXTS[5], TEXTS[3], TEXTS[5] + " " + TEXTS[7] + " " + TEXTS[9]]
PAIRS = list(zip(QUERIES, DOCS))


@pytest.fixture(scope="module")
def trained_ce(tiny_ce_path, tmp_path_factory):
    """A cross-encoder trained (2 epochs) and saved by RerankTrainer."""
    from test_trainer import make_trainer

    out = tmp_path_factory.mktemp("trained_ce")
    trainer, _ = make_trainer(tiny_ce_path, out / "run", epochs=2)
    trainer.train()
    trainer.save_model(str(out / "final"))
    return str(out / "final")


def test_cross_encoder_scores_equal_sentence_transformers_predict(trained_ce):
    st = pytest.importorskip("sentence_transformers")
    reranker = Reranker.from_pretrained(trained_ce, max_length=32, dtype="fp32")
    assert isinstance(reranker, CrossEncoderReranker) and reranker_kind(trained_ce) == "cross-encoder"
    expected = st.CrossEncoder(trained_ce, max_length=32, device="cpu").predict(PAIRS, batch_size=2)
    scores = reranker.compute_score(PAIRS, batch_size=2)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=1e-5)
    assert reranker.compute_score(PAIRS[1]) == pytest.approx(scores[1], abs=1e-5)  # one pair: a float
    np.testing.assert_allclose(reranker.compute_score(PAIRS, normalize=True), 1 / (1 + np.exp(-np.asarray(scores))),
                               atol=1e-6)


def test_rank_sorts_by_score_and_keeps_the_callers_ids_with_empty_documents(trained_ce):
    reranker = Reranker.from_pretrained(trained_ce, max_length=32)
    docs = [TEXTS[3], "", TEXTS[1], None, TEXTS[9], "   ", TEXTS[7]]
    scores = reranker.compute_score([(TEXTS[0], d) for d in docs if d and d.strip()])
    ranked = reranker.rank(TEXTS[0], docs)
    real = [0, 2, 4, 6]
    expected_order = [real[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
    assert [r.corpus_id for r in ranked[:4]] == expected_order
    assert all(r.text == docs[r.corpus_id] for r in ranked)
    assert [r.corpus_id for r in ranked[4:]] == [1, 3, 5] and all(r.score == float("-inf") for r in ranked[4:])
    top = reranker.rank(TEXTS[0], docs, top_k=2)
    assert top == ranked[:2] and isinstance(top[0], RankedDocument)
    assert reranker.rank(TEXTS[0], []) == []


def test_bad_pairs_are_refused_with_their_position(trained_ce):
    reranker = Reranker.from_pretrained(trained_ce)
    with pytest.raises(TypeError, match="pair 1"):
        reranker.compute_score([("q", "d"), ("q", 3)])
    with pytest.raises(ValueError, match="long_doc"):
        Reranker.from_pretrained(trained_ce, long_doc="chunks")


class NeedleModel(torch.nn.Module):
    """A stand-in cross-encoder whose logit is 1 when the pair's tokens contain ``needle``, else 0."""

    def __init__(self, needle: int):
        super().__init__()
        self.needle, self.unused = needle, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, **kwargs):
        hit = ((input_ids == self.needle) & attention_mask.bool()).any(1).float()
        return types.SimpleNamespace(logits=hit.unsqueeze(-1) + self.unused)


def test_max_chunk_finds_a_relevant_sentence_that_truncation_cuts_off(tiny_encoder_path):
    tok = AutoTokenizer.from_pretrained(tiny_encoder_path)
    needle = tok.convert_tokens_to_ids("lambda")
    filler = " ".join([TEXTS[8]] * 12)  # ~60 tokens without the needle
    long_doc = filler + " " + TEXTS[3]  # the sentence with "lambda" comes after max_length
    short_doc = TEXTS[9]
    pairs = [(TEXTS[6], long_doc), (TEXTS[6], short_doc)]

    truncating = CrossEncoderReranker(NeedleModel(needle), tok, max_length=32)
    assert truncating.compute_score(pairs) == [0.0, 0.0]
    assert truncating.last.truncated == 1  # reported, not silent

    chunking = CrossEncoderReranker(NeedleModel(needle), tok, max_length=32, long_doc="max_chunk", overlap=4)
    assert chunking.compute_score(pairs) == [1.0, 0.0]
    assert chunking.last.truncated == 0 and chunking.last.windows > 3
    assert [r.corpus_id for r in chunking.rank(TEXTS[6], [short_doc, long_doc])] == [1, 0]


def test_windows_cover_the_document_with_the_overlap_and_fit_the_budget(tiny_encoder_path):
    tok = AutoTokenizer.from_pretrained(tiny_encoder_path)
    text = " ".join(TEXTS)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = split_windows(tok, text, size=10, overlap=3)
    pieces = [tok(w, add_special_tokens=False)["input_ids"] for w in windows]
    assert all(len(p) <= 10 for p in pieces)
    rebuilt = pieces[0]
    for p in pieces[1:]:
        assert p[:3] == rebuilt[-3:]  # each window starts with the last 3 tokens of the one before
        rebuilt = rebuilt + p[3:]
    assert rebuilt == ids
    assert split_windows(tok, TEXTS[0], size=50, overlap=3) == [TEXTS[0]]


def test_bge_gemma_layout_equals_the_published_recipe_from_the_models_logits():
    """bge-reranker-v2-gemma's layout on the real SmolLM2: BOS, 'A: query', newline, 'B: passage', newline,
    instruction, each tokenized on its own; the score is the 'Yes' logit at the last position."""
    reranker = Reranker.from_pretrained("smollm2", kind="llm", template=BGE_TEMPLATE, tokenize="lines",
                                        yes_token="Yes", max_length=256, dtype="fp32")
    assert isinstance(reranker, LlmPairReranker)
    tok, lm = reranker.tokenizer, reranker.reranker.inner
    piece = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    queries = ["what is a lambda?", "how do I copy a list?"]
    docs = ["A lambda is a small anonymous function.\nIt has one expression.", "Bananas are yellow."]
    yes = piece("Yes")[0]
    with torch.no_grad():
        expected = []
        for q, d in zip(queries, docs):
            ids = [tok.bos_token_id] + piece(f"A: {q}") + piece("\n") + piece(f"B: {d}") + piece("\n")
            ids += piece(BGE_INSTRUCTION)
            expected.append(float(lm(input_ids=torch.tensor([ids])).logits[0, -1, yes]))
    for side in ("left", "right"):
        tok.padding_side = side
        np.testing.assert_allclose(reranker.compute_score(list(zip(queries, docs))), expected, rtol=1e-4, atol=1e-4)


def test_zero_shot_chat_model_scores_yes_minus_no_of_its_answer_without_a_bos_token():
    """SmolLM2-135M-Instruct, unchanged, detected as a chat model; the reference is the full model's logits on
    the chat template applied by the tokenizer itself (no extra BOS: the template writes the whole prompt)."""
    reranker = Reranker.from_pretrained("smollm2", dtype="fp32")
    assert isinstance(reranker, ZeroShotReranker)
    tok, lm = reranker.tokenizer, reranker.reranker.inner
    yes, no = tok("Yes", add_special_tokens=False)["input_ids"][0], tok("No", add_special_tokens=False)["input_ids"][0]
    queries = ["how do I sort a dictionary by value?", "how do I sort a dictionary by value?"]
    docs = ["Use sorted(d.items(), key=lambda kv: kv[1]).", "The Eiffel tower is in Paris."]
    from hf_ragtrain.reranker import ZERO_SHOT_INSTRUCTION

    with torch.no_grad():
        expected = []
        for q, d in zip(queries, docs):
            message = ZERO_SHOT_INSTRUCTION.replace("{query}", q).replace("{document}", d)
            ids = tok.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"]
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
            expected.append(float(logits[yes] - logits[no]))
    for side in ("left", "right"):
        tok.padding_side = side
        np.testing.assert_allclose(reranker.compute_score(list(zip(queries, docs))), expected, rtol=1e-4, atol=1e-4)
    probs = reranker.compute_score(list(zip(queries, docs)), normalize=True)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-np.asarray(expected))), rtol=1e-4)


def test_zero_shot_works_for_a_model_with_no_bos_token(tmp_path):
    path = build_tiny_llm(tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = "{% for m in messages %}[CLS] {{ m['content'] }} [SEP]{% endfor %} answer"
    tok.save_pretrained(path)
    assert tok.bos_token_id is None and reranker_kind(path) == "zero-shot"
    instruction = "query {query} document {document} relevant"
    reranker = Reranker.from_pretrained(path, instruction=instruction, dtype="fp32")
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    yes, no = tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("No")
    with torch.no_grad():
        expected = []
        for q, d in PAIRS:
            text = tok.apply_chat_template([{"role": "user", "content": instruction.format(query=q, document=d)}],
                                           add_generation_prompt=True, tokenize=False)
            logits = lm(input_ids=torch.tensor([tok(text)["input_ids"]])).logits[0, -1]
            expected.append(float(logits[yes] - logits[no]))
    np.testing.assert_allclose(reranker.compute_score(PAIRS), expected, rtol=1e-4, atol=1e-5)


def test_layerwise_llm_scores_every_requested_cutoff_layer(tmp_path):
    path = build_tiny_llm(tmp_path / "base", layers=4, initializer_range=0.3)
    model = LlmReranker.from_pretrained(path, template="query : {query} . document : {document} . relevant ?",
                                        yes_token="Yes", layerwise=True, start_layer=2)
    torch.manual_seed(0)
    for head in model.layer_heads:  # distinct heads, so the layers' scores differ
        head.weight.data.normal_()
    model.save_pretrained(str(tmp_path / "layerwise"))
    reranker = Reranker.from_pretrained(str(tmp_path / "layerwise"), dtype="fp32")
    assert isinstance(reranker, LayerwiseLlmReranker) and reranker.scored_layers == [2, 3, 4]
    per_layer = reranker.compute_score(PAIRS, cutoff_layers=[4, 2, 3])
    model.eval()
    for column, layer in zip(per_layer, [4, 2, 3]):
        np.testing.assert_allclose(column, model.score(QUERIES, DOCS, cutoff_layer=layer), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(column, reranker.compute_score(PAIRS, cutoff_layers=layer), rtol=1e-4, atol=1e-5)
    assert not np.allclose(per_layer[0], per_layer[1])  # not the first layer's scores three times
    np.testing.assert_allclose(reranker.compute_score(PAIRS), per_layer[0], rtol=1e-4, atol=1e-5)  # default: last


def test_colbert_and_bi_encoder_folders_score_as_their_models(tmp_path):
    from hf_ragtrain import BiEncoder, ColbertEncoder

    colbert = ColbertEncoder.from_pretrained("minilm", colbert_dim=32, query_max_length=16, document_max_length=64)
    colbert.save_pretrained(str(tmp_path / "colbert"))
    reranker = Reranker.from_pretrained(str(tmp_path / "colbert"), dtype="fp32")
    assert isinstance(reranker, ColbertReranker)
    expected = np.concatenate([colbert.rerank(TEXTS[0], DOCS[:2]).numpy(), colbert.rerank(TEXTS[2], DOCS[2:3]).numpy(),
                               colbert.rerank(TEXTS[4], DOCS[3:]).numpy()])
    np.testing.assert_allclose(reranker.compute_score(PAIRS), expected, rtol=1e-5, atol=1e-5)

    encoder = BiEncoder.from_pretrained("minilm")
    encoder.save_pretrained(str(tmp_path / "bi"))
    reranker = Reranker.from_pretrained(str(tmp_path / "bi"), dtype="fp32")
    assert reranker_kind(str(tmp_path / "bi")) == "bi-encoder"
    q, d = encoder.encode(QUERIES, kind="query"), encoder.encode(DOCS, kind="passage")
    cosine = (q * d).sum(1)
    np.testing.assert_allclose(reranker.compute_score(PAIRS), cosine, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reranker.compute_score(PAIRS, normalize=True), (cosine + 1) / 2, rtol=1e-5, atol=1e-5)


def test_a_real_embedder_finds_the_answer_past_its_length_limit_only_with_max_chunk(tmp_path):
    from hf_ragtrain import BiEncoder

    BiEncoder.from_pretrained("minilm").save_pretrained(str(tmp_path / "bi"))
    query = "How do I sort a Python dictionary by its values?"
    padding = "The museum opens at nine and the gardens close at dusk in the summer months. " * 6
    buried = padding + "To sort a dictionary by value, call sorted on its items with a key that returns the value."
    other = "Lists keep their insertion order and can hold items of any type."
    cut = Reranker.from_pretrained(str(tmp_path / "bi"), max_length=48)
    chunked = Reranker.from_pretrained(str(tmp_path / "bi"), max_length=48, long_doc="max_chunk")
    assert cut.rank(query, [other, buried])[0].corpus_id == 0 and cut.last.truncated == 1
    assert chunked.rank(query, [other, buried])[0].corpus_id == 1


def test_a_new_kind_needs_only_compute_score():
    class WordOverlap(BaseReranker):
        def compute_score(self, pairs, batch_size=None, max_length=None, normalize=False):
            return [len(set(q.split()) & set(d.split())) for q, d in pairs]

    docs = ["tuples are immutable", "", "sort a dictionary by value with sorted", "a dictionary"]
    ranked = WordOverlap().rank("how do i sort a dictionary by value", docs, top_k=3)
    assert [(r.corpus_id, r.score) for r in ranked] == [(2, 5.0), (3, 2.0), (0, 0.0)]


def test_kind_detection_reads_saved_files_and_refuses_the_unknown(tmp_path, trained_ce):
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(ValueError, match="cannot tell which kind"):
        Reranker.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="unknown reranker kind"):
        Reranker.from_pretrained(trained_ce, kind="magic")
    plain = build_tiny_llm(tmp_path / "plain_lm")
    with pytest.raises(ValueError, match="no chat template"):
        reranker_kind(plain)


def test_default_dtype_is_the_native_half_precision_of_the_cpu(trained_ce, monkeypatch):
    """dtype=None: bf16 autocast on a CPU that multiplies bf16 in hardware, fp32 on one that does not;
    the bf16 scores stay within bf16 rounding of the fp32 ones."""
    import hf_ragtrain.hardware as module

    exact = Reranker.from_pretrained(trained_ce, max_length=32, dtype="fp32")
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: native)
        reranker = Reranker.from_pretrained(trained_ce, max_length=32, device="cpu")
        assert reranker.dtype == expected
        scores = np.asarray(reranker.compute_score(PAIRS))
        if expected == torch.float32:
            np.testing.assert_allclose(scores, exact.compute_score(PAIRS), rtol=1e-6, atol=1e-6)
        else:  # bf16 keeps 8 bits of mantissa: about 2 significant digits of the logit
            np.testing.assert_allclose(scores, exact.compute_score(PAIRS), rtol=0, atol=0.05 * np.abs(scores).max())
            assert not np.array_equal(scores, exact.compute_score(PAIRS))  # autocast really ran
