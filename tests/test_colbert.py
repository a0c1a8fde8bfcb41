"""ColBERT encoder: MaxSim against a loop, and folders that sentence-transformers' MultiVectorEncoder loads
with the same token vectors and scores (prompts, per-kind lengths, punctuation skip-list, BGE-M3 weights)."""

import os
import shutil

import pytest
import torch

from conftest import TEXTS
from hf_ragtrain.modeling.colbert import ColbertEncoder, maxsim

QUERIES = ["how do i sort a dict, by value?", "what is a lambda expression and where is it used? " * 3]
DOCS = ["use sorted(d.items(), key=...) to sort.", "a lambda is a small anonymous function! " * 8, "x"]


def padded(vectors):
    """Pad per-text token vectors into (N, L, D) and a mask: the test's own copy, as the reference."""
    length = max(v.size(0) for v in vectors)
    out = torch.zeros(len(vectors), length, vectors[0].size(1))
    mask = torch.zeros(len(vectors), length, dtype=torch.bool)
    for i, v in enumerate(vectors):
        out[i, :len(v)], mask[i, :len(v)] = v, True
    return out, mask


def test_maxsim_matches_a_loop_and_ignores_masked_tokens():
    torch.manual_seed(0)
    q, d = torch.randn(3, 4, 8), torch.randn(5, 6, 8)
    qm, dm = torch.rand(3, 4) > 0.3, torch.rand(5, 6) > 0.3
    qm[:, 0], dm[:, 0] = True, True
    expected = torch.zeros(3, 5)
    for i in range(3):
        for j in range(5):
            for a in range(4):
                if qm[i, a]:
                    expected[i, j] += max(float(q[i, a] @ d[j, b]) for b in range(6) if dm[j, b])
    for chunk in (1, 2, 256):
        torch.testing.assert_close(maxsim(q, qm, d, dm, chunk_size=chunk), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maxsim(q, qm, d, dm, average=True), expected / qm.sum(1, keepdim=True), atol=1e-5,
                               rtol=1e-5)


def test_saved_folder_loads_in_multi_vector_encoder_with_the_same_vectors_and_scores(tmp_path):
    from sentence_transformers import MultiVectorEncoder

    model = ColbertEncoder.from_pretrained("minilm", skip_punctuation=True, query_prompt="query: ",
                                           query_max_length=12, document_max_length=40)
    q, d = model.encode(QUERIES, "query"), model.encode(DOCS, "document")
    assert [len(v) for v in q] == [12, 12]  # the long query is cut at its own max length
    assert len(d[0]) < len(model.tokenize(DOCS[:1], "document")[0]["input_ids"][0])  # punctuation left out
    model.save_pretrained(str(tmp_path))
    st = MultiVectorEncoder(str(tmp_path), device="cpu")
    sq, sd = st.encode_query(QUERIES), st.encode_document(DOCS)
    for ours, theirs in zip(q + d, list(sq) + list(sd)):
        torch.testing.assert_close(ours, torch.as_tensor(theirs), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(maxsim(*padded(q), *padded(d)), torch.as_tensor(st.similarity(sq, sd)), atol=1e-4,
                               rtol=1e-4)
    again = ColbertEncoder.from_pretrained(str(tmp_path))
    assert again.settings == model.settings
    for ours, reloaded in zip(q, again.encode(QUERIES, "query")):
        torch.testing.assert_close(ours, reloaded)


def test_bge_m3_style_colbert_linear_is_loaded(tiny_encoder_path, tmp_path):
    from sentence_transformers import MultiVectorEncoder

    folder = tmp_path / "bge"
    shutil.copytree(tiny_encoder_path, folder)
    torch.manual_seed(3)
    weight, bias = torch.randn(16, 32), torch.randn(16)
    torch.save({"weight": weight, "bias": bias}, folder / "colbert_linear.pt")
    model = ColbertEncoder.from_pretrained(str(folder))
    assert model.settings.colbert_dim == 16
    torch.testing.assert_close(model.linear.weight, weight)
    torch.testing.assert_close(model.linear.bias, bias)
    vectors = model.encode(TEXTS[:3], "document")
    assert vectors[0].shape[1] == 16
    model.save_pretrained(str(tmp_path / "saved"))
    assert not os.path.exists(tmp_path / "saved" / "colbert_linear.pt")
    st = MultiVectorEncoder(str(tmp_path / "saved"), device="cpu")
    for ours, theirs in zip(vectors, st.encode_document(TEXTS[:3])):
        torch.testing.assert_close(ours, torch.as_tensor(theirs), atol=1e-5, rtol=1e-4)


def test_a_new_projection_is_seeded(tiny_encoder_path):
    a = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=8, seed=1)
    b = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=8, seed=1)
    c = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=8, seed=2)
    assert torch.equal(a.linear.weight, b.linear.weight) and not torch.equal(a.linear.weight, c.linear.weight)
    with pytest.raises(TypeError, match="not_a_setting"):
        ColbertEncoder.from_pretrained(tiny_encoder_path, not_a_setting=1)


@pytest.mark.parametrize("attend", [False, True])
def test_query_expansion_with_mask_tokens_matches_multi_vector_encoder(tmp_path, attend):
    from sentence_transformers import MultiVectorEncoder

    model = ColbertEncoder.from_pretrained("minilm", query_expansion=True, attend_to_expansion=attend,
                                           query_max_length=16)
    q = model.encode(QUERIES[:1] + ["sort"], "query")
    assert [len(v) for v in q] == [16, 16]  # every query scores exactly query_max_length vectors
    model.save_pretrained(str(tmp_path))
    st = MultiVectorEncoder(str(tmp_path), device="cpu")
    for ours, theirs in zip(q, st.encode_query(QUERIES[:1] + ["sort"])):
        torch.testing.assert_close(ours, torch.as_tensor(theirs), atol=1e-5, rtol=1e-4)
    plain = ColbertEncoder.from_pretrained("minilm", query_max_length=16).encode(["sort"], "query")[0]
    assert len(plain) == 3  # [CLS] sort [SEP] without expansion


def test_colbert_trainer_loss_is_infonce_over_maxsim_and_training_saves_a_loadable_model(tiny_encoder_path, tmp_path):
    import numpy as np
    import torch.nn.functional as F
    from sentence_transformers import MultiVectorEncoder

    from conftest import tiny_records
    from hf_ragtrain import ColbertTrainer, EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset, load_records

    model = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=16, query_max_length=12,
                                           query_expansion=True, skip_punctuation=True)
    records, _ = load_records(tiny_records(8))
    args = EmbeddingTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=6,
                                      learning_rate=3e-3, logging_steps=1, report_to="none", save_strategy="no",
                                      use_cpu=True, disable_tqdm=True, temperature=0.05)
    trainer = ColbertTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3, seed=1),
                             data_collator=EmbeddingCollator(model, micro_batch_tokens=40))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert all(c["input_ids"].shape[1] == 12 for c in batch["query_chunks"])  # expanded to the fixed width
    loss = trainer.compute_loss(model, batch)
    # the same loss by hand: encode each text alone, MaxSim, cross-entropy with query i's positive at i*G
    items = [trainer.train_dataset[i] for i in range(4)]
    q = model.encode([it["query"] for it in items], "query")
    d = model.encode([doc for it in items for doc in it["docs"]], "document")
    scores = maxsim(*padded(q), *padded(d))
    expected = F.cross_entropy(scores / 0.05, torch.arange(4) * 3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)

    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])
    trainer.save_model(str(tmp_path / "final"))
    st = MultiVectorEncoder(str(tmp_path / "final"), device="cpu")
    for ours, theirs in zip(model.encode(TEXTS[:4], "query") + model.encode(TEXTS[:4], "document"),
                            list(st.encode_query(TEXTS[:4])) + list(st.encode_document(TEXTS[:4]))):
        torch.testing.assert_close(ours, torch.as_tensor(theirs), atol=1e-5, rtol=1e-4)


def test_search_and_rerank_agree_with_maxsim_over_the_whole_corpus(tiny_encoder_path):
    from conftest import tiny_records
    from hf_ragtrain.data import load_records
    from hf_ragtrain.evaluation.metrics import ranking_metrics
    from hf_ragtrain.evaluation.retrieval import RetrievalEvaluator

    model = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=16, skip_punctuation=True)
    queries, docs = TEXTS[:4:2], TEXTS
    full = maxsim(*padded(model.encode(queries, "query")), *padded(model.encode(docs, "document")))
    scores, idx = model.search(queries, docs, top_k=5, doc_chunk=3)  # blocks smaller than the corpus
    ref_s, ref_i = full.topk(5, dim=1)
    torch.testing.assert_close(scores, ref_s, atol=1e-5, rtol=1e-5)
    assert torch.equal(idx, ref_i)
    torch.testing.assert_close(model.rerank(queries[1], docs[3:7]), full[1, 3:7], atol=1e-5, rtol=1e-5)
    # the in-training evaluator searches with MaxSim for a ColBERT model
    records, _ = load_records(tiny_records(4))
    evaluator = RetrievalEvaluator(records, k_values=(1, 3))
    docs_all, qrels = evaluator.doc_texts, evaluator.qrels
    s_all = maxsim(*padded(model.encode([r.query for r in records], "query")),
                   *padded(model.encode(docs_all, "document")))
    run = {qid: {evaluator.doc_ids[j]: float(s_all[i, j]) for j in range(len(docs_all))}
           for i, qid in enumerate(evaluator.qids)}
    expected = ranking_metrics(run, qrels, (1, 3))
    assert evaluator(model) == pytest.approx(expected)


def test_colbert_recipe_trains_and_saves_a_multi_vector_encoder_folder(tiny_encoder_path, tmp_path):
    import json

    from sentence_transformers import MultiVectorEncoder

    from conftest import run_script, tiny_records, write_jsonl
    from hf_ragtrain.data import load_records
    from hf_ragtrain.evaluation.retrieval import RetrievalEvaluator

    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    dev = write_jsonl(tmp_path / "dev.jsonl", tiny_records(4))
    out = tmp_path / "out"
    proc = run_script(os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "train_colbert.py"),
                      "--output_dir", str(out), "--model_name_or_path", tiny_encoder_path, "--train_data", train,
                      "--eval_data", dev, "--colbert_dim", "16", "--query_max_length", "12", "--query_expansion",
                      "True", "--train_group_size", "3", "--num_train_epochs", "3", "--learning_rate", "3e-3",
                      "--per_device_train_batch_size", "4", "--bf16", "False", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["train_texts"] == 3 * 8 * 4
    saved = ColbertEncoder.from_pretrained(str(out))
    assert saved.settings.query_expansion and saved.settings.colbert_dim == 16
    again = RetrievalEvaluator(load_records(dev)[0])(saved)
    assert results["after"]["after_ndcg@10"] == pytest.approx(again["ndcg@10"], abs=1e-6)
    st = MultiVectorEncoder(str(out), device="cpu")
    for ours, theirs in zip(saved.encode(TEXTS[:3], "query"), st.encode_query(TEXTS[:3])):
        torch.testing.assert_close(ours, torch.as_tensor(theirs), atol=1e-5, rtol=1e-4)
    card = (out / "README.md").read_text()
    assert "MultiVectorEncoder(" in card and "InfoNCE over MaxSim" in card
    # mteb scored the saved folder on the dev records as a reranking task: MaxSim over each record's candidates
    from huggingface_hub import ModelCard

    from hf_ragtrain.evaluation.metrics import ranking_metrics
    (task, by_split), = results["mteb"].items()
    records = load_records(dev)[0]
    run = {r.query_id: {f"{r.query_id}-{j}": float(s) for j, s in enumerate(saved.rerank(r.query, [*r.pos, *r.neg]))}
           for r in records}
    qrels = {r.query_id: {f"{r.query_id}-{j}": 1 for j in range(len(r.pos))} for r in records}
    assert by_split["dev"]["ndcg_at_10"] == pytest.approx(ranking_metrics(run, qrels, (10,))["ndcg@10"], abs=1e-5)
    indexed = {m.dataset_name: m.metric_value for m in ModelCard.load(str(out / "README.md")).data.eval_results
               if m.metric_type == "ndcg_at_10"}
    assert indexed[task] == pytest.approx(by_split["dev"]["ndcg_at_10"], abs=1e-5)


def test_colbert_distillation_is_per_query_kl_to_the_teacher_over_maxsim(tiny_encoder_path, tmp_path):
    """Records with teacher scores: the loss is KL(teacher || student) within each query's group of MaxSim scores,
    plus InfoNCE over all MaxSim scores when both weights are on."""
    from conftest import tiny_records
    from hf_ragtrain import (ColbertTrainer, ColbertTrainingArguments, EmbeddingCollator, GroupDataset,
                             load_records)

    rows = tiny_records(4, n_neg=2)
    for i, r in enumerate(rows):
        r["pos_scores"], r["neg_scores"] = [3.0 + i], [1.0, -0.5 * i]
    records, _ = load_records(rows)
    model = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=16, query_max_length=12)
    data = GroupDataset(records, group_size=3, seed=0)
    items = [data[i] for i in range(4)]
    q = model.encode([it["query"] for it in items], "query")
    d = model.encode([doc for it in items for doc in it["docs"]], "document")
    student = maxsim(*padded(q), *padded(d)).view(4, 4, 3)[torch.arange(4), torch.arange(4)]  # own groups (4, 3)
    teacher = torch.tensor([it["scores"] for it in items])
    t_s, t_t = 0.5, 2.0
    p_teacher = torch.softmax(teacher / t_t, dim=1)
    expected_kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t_s, dim=1))).sum(1).mean()
    expected_nce = torch.nn.functional.cross_entropy(maxsim(*padded(q), *padded(d)) / t_s, torch.arange(4) * 3)
    for weights, expected in (((0.0, 1.0), expected_kl), ((1.0, 0.7), expected_nce + 0.7 * expected_kl)):
        args = ColbertTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none",
                                        use_cpu=True, temperature=t_s, teacher_temperature=t_t,
                                        contrastive_weight=weights[0], distill_weight=weights[1])
        trainer = ColbertTrainer(model=model, args=args, train_dataset=data, data_collator=EmbeddingCollator(model))
        loss = trainer.compute_loss(model, trainer.data_collator(items))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert ColbertTrainingArguments(output_dir=str(tmp_path)).temperature == 1.0  # summed MaxSim, not cosine


def test_colbert_trainer_rejects_bi_encoder_only_options(tiny_encoder_path, tmp_path):
    """ColbertTrainingArguments has no bi-encoder options; EmbeddingTrainingArguments that set one are refused."""
    from hf_ragtrain import ColbertTrainer, ColbertTrainingArguments, EmbeddingTrainingArguments

    model = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=16)
    with pytest.raises(TypeError, match="matryoshka_dims"):
        ColbertTrainingArguments(output_dir=str(tmp_path), matryoshka_dims=[8])
    for option in ({"matryoshka_dims": [8]}, {"cosine_weight": 1.0}):
        args = EmbeddingTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **option)
        with pytest.raises(ValueError, match=f"ColbertTrainer does not use {next(iter(option))}="):
            ColbertTrainer(model=model, args=args)


def test_documents_padded_to_a_multiple_give_the_same_loss(tiny_encoder_path, tmp_path):
    """pad_to_multiple_of widens document micro-batches (expanded queries keep their fixed width);
    the extra positions are masked out of MaxSim, so the loss does not move."""
    from conftest import tiny_records
    from hf_ragtrain import ColbertTrainer, EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset, load_records

    model = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=16, query_max_length=12,
                                           query_expansion=True).eval()
    records, _ = load_records(tiny_records(8))
    dataset = GroupDataset(records, group_size=3, seed=1)
    args = EmbeddingTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, temperature=0.05)
    trainer = ColbertTrainer(model=model, args=args, train_dataset=dataset,
                             data_collator=EmbeddingCollator(model, micro_batch_tokens=40))
    items = [dataset[i] for i in range(4)]
    plain = EmbeddingCollator(model, micro_batch_tokens=40)(items)
    padded_batch = EmbeddingCollator(model, micro_batch_tokens=40, pad_to_multiple_of=16)(items)
    assert all(c["input_ids"].shape[1] % 16 == 0 for c in padded_batch["passage_chunks"])
    assert all(c["input_ids"].shape[1] == 12 for c in padded_batch["query_chunks"])
    assert sum(c["input_ids"].numel() for c in padded_batch["passage_chunks"]) > sum(
        c["input_ids"].numel() for c in plain["passage_chunks"])
    with torch.no_grad():
        expected = trainer.compute_loss(model, plain)
        assert trainer.compute_loss(model, padded_batch).item() == pytest.approx(expected.item(), rel=1e-5)
