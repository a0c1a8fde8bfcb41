"""SPLADE: the fused pooling and the FLOPS term against hand formulas, the folder sentence-transformers'
SparseEncoder loads (both layouts), the inverted index against a dense dot product, hybrid fusion, the
trainer's GradCache step and regulariser schedule, and the recipe end to end."""

import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import TEXTS, assert_grad_cache_gives_the_plain_step, run_script, tiny_records, write_jsonl

from hf_ragtrain import (EmbeddingCollator, GroupDataset, SparseTrainer, SparseTrainingArguments, SpladeEncoder,
                         flops, load_records)
from hf_ragtrain.data.sparse_index import SparseIndex
from hf_ragtrain.evaluation.mteb_sparse import fused_scores
from hf_ragtrain.modeling import splade_pooling
from hf_ragtrain.modeling.splade_pooling import splade_max_pool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hand_splade(states, weight, bias, mask):
    """max over real tokens of log(1 + max(0, s . w + b)), one number at a time."""
    n, length, _ = states.shape
    out = np.zeros((n, weight.shape[0]))
    for i in range(n):
        for v in range(weight.shape[0]):
            best = 0.0
            for t in range(length):
                if mask[i, t]:
                    best = max(best, math.log1p(max(0.0, float(states[i, t] @ weight[v] + bias[v]))))
            out[i, v] = best
    return out


@pytest.mark.parametrize("block", [1 << 24, 3])
def test_fused_pooling_matches_the_hand_formula_and_its_gradient(monkeypatch, block):
    monkeypatch.setattr(splade_pooling, "BLOCK_ELEMENTS", block * 11)  # 3 tokens a block when block is 3
    monkeypatch.setattr(splade_pooling, "BACKWARD_PAIRS", 5)
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]])  # right and left padding
    out = splade_max_pool(states, weight, bias, mask)
    np.testing.assert_allclose(out.detach().numpy(), hand_splade(states.detach().numpy(), weight.detach().numpy(),
                                                                 bias.detach().numpy(), mask.numpy()), atol=1e-12)
    assert (out == 0).any() and (out > 0).any()  # both sides of the relu are exercised
    # the gradient: autograd through the plain formula on the full logits
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    fused = torch.autograd.grad((out * g).sum(), (states, weight, bias))
    logits = states @ weight.T + bias
    plain = torch.log1p(torch.relu(logits.masked_fill(~mask.bool()[..., None], -1.0))).amax(dim=1)
    reference = torch.autograd.grad((plain * g).sum(), (states, weight, bias))
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert fused[0][1, 3:].abs().sum() == 0 and fused[0][2, :2].abs().sum() == 0  # padding gets no gradient


def test_flops_matches_the_hand_formula():
    vectors = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    # sum over entries of (mean over texts of |w|)^2 = 1.5^2 + 1^2 + 1^2
    assert flops(vectors).item() == pytest.approx(1.5 ** 2 + 1.0 + 1.0)


@pytest.fixture(scope="module")
def tiny_splade(tiny_encoder_path):
    return SpladeEncoder.from_pretrained(tiny_encoder_path)


def test_a_base_without_mlm_head_gets_an_identity_head_and_sparse_vectors(tiny_splade):
    model = tiny_splade
    assert model.settings.head.startswith("built")
    head = model.mlm.cls.predictions
    assert torch.equal(head.transform.dense.weight, torch.eye(model.config.hidden_size))
    assert head.decoder.weight is model.mlm.get_input_embeddings().weight  # tied, as BERT does
    vectors = model.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), model.vocab_size)
    active = vectors.getnnz(axis=1)
    assert 0 < active.mean() < 0.5 * model.vocab_size  # the bias keeps most entries at 0 from the start


@pytest.mark.parametrize("inference_free", [False, True], ids=["splade", "inference-free"])
def test_sentence_transformers_sparse_encoder_loads_the_saved_folder(tiny_encoder_path, tmp_path, inference_free):
    from sentence_transformers import SparseEncoder

    model = SpladeEncoder.from_pretrained(tiny_encoder_path, inference_free=inference_free, query_max_length=16)
    if inference_free:
        model.set_query_idf(TEXTS[1::2])
    with torch.no_grad():  # trained-looking weights: a non-zero head bias and transform
        model.mlm.cls.predictions.bias.add_(torch.linspace(-0.5, 0.5, model.vocab_size))
    model.save_pretrained(str(tmp_path))
    st = SparseEncoder(str(tmp_path), device="cpu")
    queries, docs = TEXTS[0::2], TEXTS[1::2]
    ours_d, ours_q = model.encode(docs).toarray(), model.encode(queries, "query").toarray()
    theirs_d = st.encode_document(docs, convert_to_tensor=True).to_dense().numpy()
    theirs_q = st.encode_query(queries, convert_to_tensor=True).to_dense().numpy()
    np.testing.assert_allclose(theirs_d, ours_d, atol=1e-5)
    np.testing.assert_allclose(theirs_q, ours_q, atol=1e-5)
    assert ours_d.any() and ours_q.any()
    if inference_free:  # a query's vector is the IDF of each word it holds, no forward pass
        word = model.tokenizer.convert_tokens_to_ids("sort")
        df = sum("sort" in d.split() for d in docs)
        idf = math.log1p((len(docs) - df + 0.5) / (df + 0.5))
        assert ours_q[0, word] == pytest.approx(idf, rel=1e-6)
        assert np.count_nonzero(ours_q[0]) == len(set(model.tokenizer.tokenize(queries[0])))
    again = SpladeEncoder.from_pretrained(str(tmp_path))
    assert again.settings == model.settings
    np.testing.assert_allclose(again.encode(docs).toarray(), ours_d, atol=1e-6)


def test_pruning_keeps_the_top_k_weights_and_sentence_transformers_prunes_alike(tiny_encoder_path, tmp_path):
    from sentence_transformers import SparseEncoder

    full = SpladeEncoder.from_pretrained(tiny_encoder_path).encode(TEXTS).toarray()
    model = SpladeEncoder.from_pretrained(tiny_encoder_path, max_active_dims=3)
    pruned = model.encode(TEXTS).toarray()
    model.save_pretrained(str(tmp_path))
    theirs = SparseEncoder(str(tmp_path), device="cpu").encode_document(TEXTS, convert_to_tensor=True)
    np.testing.assert_allclose(theirs.to_dense().numpy(), pruned, atol=1e-5)
    for row_full, row_pruned in zip(full, pruned):
        kept = np.flatnonzero(row_pruned)
        assert len(kept) == min(3, np.count_nonzero(row_full))
        np.testing.assert_allclose(row_pruned[kept], row_full[kept])
        assert row_pruned[kept].min() >= np.sort(row_full)[-3]


def test_inverted_index_search_equals_a_dense_dot_product():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    docs = sp.random(300, 500, density=0.02, random_state=1, format="csr", dtype=np.float32)
    queries = sp.random(40, 500, density=0.03, random_state=2, format="csr", dtype=np.float32)
    index = SparseIndex(docs, query_block=7)
    scores, positions = index.search(queries, top_k=10)
    dense = queries.toarray() @ docs.toarray().T
    for i in range(40):
        expected = np.argsort(-dense[i], kind="stable")[:10]
        np.testing.assert_allclose(scores[i], dense[i][expected], rtol=1e-6)
        assert list(positions[i]) == list(expected)
    assert index.num_postings == docs.nnz
    assert rng is not None


def test_search_and_pair_scores_agree_with_the_vectors(tiny_splade):
    queries, docs = TEXTS[0::2], TEXTS[1::2]
    scores, idx = tiny_splade.search(queries, docs, top_k=3)
    q, d = tiny_splade.encode(queries, "query").toarray(), tiny_splade.encode(docs).toarray()
    expected = q @ d.T
    for i in range(len(queries)):
        np.testing.assert_allclose(scores[i].numpy(), np.sort(expected[i])[::-1][:3], rtol=1e-5)
    pairs = tiny_splade.score_pairs([queries[0], queries[1]], [docs[2], docs[0]])
    np.testing.assert_allclose(pairs.numpy(), [expected[0, 2], expected[1, 0]], rtol=1e-5)


def test_hybrid_fusion_is_a_convex_combination_of_min_max_scores():
    sparse = np.array([[10.0, 20.0, 30.0]])
    dense = np.array([[0.5, 0.9, 0.1]])
    fused = fused_scores(sparse, dense, 0.25)
    np.testing.assert_allclose(fused, [[0.25 * 0 + 0.75 * 0.5, 0.25 * 0.5 + 0.75 * 1.0, 0.25 * 1.0 + 0.0]])
    assert fused_scores(sparse, None, 1.0) is sparse


def _trainer(model, tmp_path, scored: bool = False, **overrides):
    rows = tiny_records(8)
    for r in rows if scored else ():
        r["pos_scores"], r["neg_scores"] = [1.0], [0.0] * len(r["neg"])
    records, _ = load_records(rows)
    args = SparseTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none",
                                   use_cpu=True, query_flops_weight=0.1, document_flops_weight=0.05,
                                   max_steps=10, flops_warmup_ratio=0.5, **overrides)
    collator = EmbeddingCollator(model, micro_batch_tokens=16)
    trainer = SparseTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3, seed=0),
                            data_collator=collator)
    return trainer, collator([trainer.train_dataset[i] for i in range(4)])


def test_grad_cache_gives_the_plain_step_and_the_flops_weights_warm_up(tiny_encoder_path, tmp_path):
    model = SpladeEncoder.from_pretrained(tiny_encoder_path)
    trainer, batch = _trainer(model, tmp_path)
    assert len(batch["passage_chunks"]) > 1  # several micro-batches: GradCache has work to do
    trainer.state.max_steps, trainer.state.global_step = 10, 5
    assert trainer.flops_weights() == (pytest.approx(0.1), pytest.approx(0.05))  # warm-up over 5 steps done
    trainer.state.global_step = 2
    assert trainer.flops_weights() == (pytest.approx(0.1 * 0.16), pytest.approx(0.05 * 0.16))  # (2/5)^2
    plain = assert_grad_cache_gives_the_plain_step(trainer, batch)
    assert plain["mlm.cls.predictions.transform.dense.weight"].abs().sum() > 0  # the new head trains


def test_grad_cache_with_inference_free_queries_gives_the_plain_step(tiny_encoder_path, tmp_path):
    """The queries' micro-batches are IDF bags, constants of the model: GradCache skips their backward pass."""
    model = SpladeEncoder.from_pretrained(tiny_encoder_path, inference_free=True)
    model.set_query_idf(TEXTS)
    trainer, batch = _trainer(model, tmp_path)
    assert len(batch["query_chunks"]) >= 1 and len(batch["passage_chunks"]) > 1
    plain = assert_grad_cache_gives_the_plain_step(trainer, batch)
    assert plain["mlm.cls.predictions.transform.dense.weight"].abs().sum() > 0


def test_the_loss_adds_the_weighted_flops_of_queries_and_documents(tiny_encoder_path, tmp_path):
    model = SpladeEncoder.from_pretrained(tiny_encoder_path)
    trainer, _ = _trainer(model, tmp_path)
    trainer.state.max_steps, trainer.state.global_step = 10, 10
    q = torch.rand(2, model.vocab_size)
    p = torch.rand(6, model.vocab_size)
    scores = q @ p.T
    target = torch.tensor([0, 3])
    expected = torch.nn.functional.cross_entropy(scores, target) + 0.1 * flops(q) + 0.05 * flops(p)
    assert trainer.loss_from_vectors(q, p).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_score_distillation_adds_the_teacher_term_over_each_group(tiny_encoder_path, tmp_path, kind):
    model = SpladeEncoder.from_pretrained(tiny_encoder_path)
    trainer, _ = _trainer(model, tmp_path, scored=True, distill_weight=0.5, score_distill_loss=kind,
                          teacher_temperature=2.0)
    trainer.state.max_steps, trainer.state.global_step = 10, 10
    q, p = torch.rand(2, model.vocab_size), torch.rand(6, model.vocab_size)
    teacher = torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.5, -1.0]])
    scores = q @ p.T
    student = torch.stack([scores[0, :3], scores[1, 3:]])  # each query against its own group of 3
    if kind == "kl":  # KL(teacher || student), teacher at temperature 2, student at 1, averaged over queries
        target = torch.softmax(teacher / 2.0, dim=1)
        distill = (target * (target.log() - torch.log_softmax(student, dim=1))).sum(1).mean()
    else:  # squared error of positive-minus-negative margins
        distill = (((student[:, :1] - student[:, 1:]) - (teacher[:, :1] - teacher[:, 1:])) ** 2).mean()
    expected = (torch.nn.functional.cross_entropy(scores, torch.tensor([0, 3])) + 0.5 * distill
                + 0.1 * flops(q) + 0.05 * flops(p))
    assert trainer.loss_from_vectors(q, p, teacher).item() == pytest.approx(expected.item(), rel=1e-5)


def test_inference_free_queries_add_no_query_flops(tiny_encoder_path, tmp_path):
    model = SpladeEncoder.from_pretrained(tiny_encoder_path, inference_free=True)
    trainer, _ = _trainer(model, tmp_path)
    trainer.state.max_steps, trainer.state.global_step = 10, 10
    q, p = torch.rand(2, model.vocab_size), torch.rand(6, model.vocab_size)
    expected = torch.nn.functional.cross_entropy(q @ p.T, torch.tensor([0, 3])) + 0.05 * flops(p)
    assert trainer.loss_from_vectors(q, p).item() == pytest.approx(expected.item(), rel=1e-6)


def test_recipe_trains_saves_and_evaluates(tiny_encoder_path, tmp_path):
    rows = tiny_records(12)
    train, dev = write_jsonl(tmp_path / "train.jsonl", rows[:8]), write_jsonl(tmp_path / "dev.jsonl", rows[8:])
    out = str(tmp_path / "out")
    proc = run_script(os.path.join(REPO, "recipes", "train_sparse.py"), "--model_name_or_path", tiny_encoder_path,
                      "--train_data", train, "--eval_data", dev, "--output_dir", out, "--num_train_epochs", "2",
                      "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--bf16", "False",
                      "--hybrid_dense_model", tiny_encoder_path, "--hybrid_sparse_weights", "0.5", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "eval_results.json")) as fh:
        results = json.load(fh)
    assert "after_ndcg@10" in results["after"] and results["mteb"]
    assert "0.5" in results["mteb_hybrid"]
    active = results["mteb_active_dims"]["local_dev"] if "local_dev" in results["mteb_active_dims"] else \
        next(iter(results["mteb_active_dims"].values()))
    assert 0 < active["query"] and 0 < active["document"]
    card = open(os.path.join(out, "README.md")).read()
    assert "SPLADE" in card and "FLOPS" in card and "MLM head built" in card and "active dimensions" in card
    assert "SparseEncoder(" in card and "SparseTrainer" in card and "BiEncoder" not in card
    from sentence_transformers import SparseEncoder

    st = SparseEncoder(out, device="cpu")
    ours = SpladeEncoder.from_pretrained(out).encode(TEXTS[:3]).toarray()
    np.testing.assert_allclose(st.encode_document(TEXTS[:3], convert_to_tensor=True).to_dense().numpy(), ours,
                               atol=1e-5)


def test_the_unified_reranker_api_loads_a_splade_folder_and_scores_by_dot_product(tiny_splade, tmp_path):
    from sentence_transformers import SparseEncoder

    from hf_ragtrain import Reranker, find_reranker_kind

    tiny_splade.save_pretrained(str(tmp_path / "ours"))
    SparseEncoder(str(tmp_path / "ours"), device="cpu").save(str(tmp_path / "theirs"))  # written by sentence-transformers
    for folder in ("ours", "theirs"):
        assert find_reranker_kind(str(tmp_path / folder)) == "splade"  # not a bi-encoder, though it has modules.json
    reranker = Reranker.from_pretrained(str(tmp_path / "ours"), dtype="fp32")
    query, docs = TEXTS[0], TEXTS[1::2]
    expected = tiny_splade.rerank(query, docs).numpy()
    np.testing.assert_allclose(reranker.compute_score([(query, d) for d in docs]), expected, rtol=1e-5)
    ranked = reranker.rank(query, docs)
    assert [r.corpus_id for r in ranked] == list(np.argsort(-expected, kind="stable"))


def test_mteb_retrieval_and_the_hybrid_match_scores_computed_densely(tiny_splade, tiny_encoder_path, tmp_path):
    """recipes/evaluate_mteb.py --sparse: mteb's metrics of the inverted-index retrieval and of the hybrid equal
    ours over the full (query x document) score matrices computed from dense copies of the vectors."""
    from hf_ragtrain import ranking_metrics
    from hf_ragtrain.data.beir import load_beir
    from hf_ragtrain.data.mining import encode_normalized, load_encoder
    from test_mteb import faq_beir, ours

    from conftest import run_script

    folder = str(tmp_path / "splade")
    tiny_splade.save_pretrained(folder)
    root = faq_beir(tmp_path / "faq", n_queries=6)
    proc = run_script(os.path.join(REPO, "recipes", "evaluate_mteb.py"), "--sparse", folder, "--embedder",
                      tiny_encoder_path, "--hybrid_sparse_weights", "0.5", "--beir_dir", root, "--output_folder",
                      str(tmp_path / "res"), "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "active dimensions per query" in proc.stdout
    got = json.loads((tmp_path / "r.json").read_text())
    data = load_beir(root, split="test")
    doc_ids, texts = list(data.corpus), data.doc_texts()
    qids = [q for q in data.queries if q in data.qrels]
    queries, docs = [data.queries[q] for q in qids], [texts[d] for d in doc_ids]
    sparse = tiny_splade.encode(queries, "query").toarray() @ tiny_splade.encode(docs).toarray().T
    dense_model = load_encoder(tiny_encoder_path)
    dense = encode_normalized(dense_model, queries, kind="query") @ encode_normalized(dense_model, docs,
                                                                                       kind="document").T
    for stage, scores in (("sparse", sparse), ("hybrid 0.5", fused_scores(sparse, dense, 0.5))):
        run = {q: {doc_ids[j]: float(scores[i, j]) for j in range(len(doc_ids))} for i, q in enumerate(qids)}
        (metrics,) = got[stage].values()
        assert ours(metrics["test"], ks=(1, 3, 5)) == pytest.approx(ranking_metrics(run, data.qrels, (1, 3, 5)),
                                                                     abs=1e-4), stage
