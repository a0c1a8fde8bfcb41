"""RerankTrainer: learning, evaluation, best-model selection, and saved-model score equality."""

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_ragtrain import (GroupDataset, RerankCollator, RerankerTrainingArguments, RerankingEvaluator,
                         RerankTrainer, load_cross_encoder, load_records, score_pairs)
from hf_ragtrain.evaluation.metrics import ranking_metrics

from conftest import tiny_records


def make_trainer(path, out, loss="listwise", epochs=8, **kw):
    model, tok = load_cross_encoder(path)
    records, _ = load_records(tiny_records(8))
    kw = {"save_strategy": "no", **kw}
    args = RerankerTrainingArguments(output_dir=str(out), per_device_train_batch_size=4, num_train_epochs=epochs,
                                     learning_rate=3e-3, logging_steps=1, report_to="none", use_cpu=True,
                                     rerank_loss=loss, disable_tqdm=True, **kw)
    return RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=4),
                         eval_dataset=RerankingEvaluator(records, max_length=32),
                         data_collator=RerankCollator(tok, max_length=32), processing_class=tok), records


@pytest.mark.parametrize("loss", ["listwise", "pointwise", "pairwise", "listnet", "lambdaloss"])
def test_each_loss_trains_the_ranking(tiny_ce_path, tmp_path, loss):
    trainer, _ = make_trainer(tiny_ce_path, tmp_path, loss=loss)
    before = trainer.evaluate()["eval_mrr@10"]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    after = trainer.evaluate()
    assert after["eval_mrr@10"] > before, (before, after["eval_mrr@10"])


def test_evaluator_metrics_equal_a_direct_computation(tiny_ce_path, tmp_path):
    trainer, records = make_trainer(tiny_ce_path, tmp_path, epochs=1)
    metrics = trainer.evaluate()
    model, tok = trainer.model, trainer.processing_class
    run, qrels = {}, {}
    for i, r in enumerate(records):
        docs = r.pos + r.neg
        with torch.no_grad():
            s = [model(**tok(r.query, d, return_tensors="pt", truncation=True, max_length=32)).logits.item()
                 for d in docs]
        run[str(i)] = {f"{j:06d}": v for j, v in enumerate(s)}
        qrels[str(i)] = {f"{j:06d}": 1 for j in range(len(r.pos))}
    ref = ranking_metrics(run, qrels, (1, 3, 5, 10))
    for k, v in ref.items():
        assert metrics[f"eval_{k}"] == pytest.approx(v, abs=1e-6)


def test_load_best_model_at_end_uses_our_metric(tiny_ce_path, tmp_path):
    trainer, _ = make_trainer(tiny_ce_path, tmp_path, epochs=2, eval_strategy="epoch",
                              save_strategy="epoch", load_best_model_at_end=True,
                              metric_for_best_model="ndcg@10")
    trainer.train()
    assert trainer.state.best_metric is not None
    evals = [h["eval_ndcg@10"] for h in trainer.state.log_history if "eval_ndcg@10" in h]
    assert trainer.state.best_metric == pytest.approx(max(evals))


def test_saved_model_scores_equal_in_memory_scores(tiny_ce_path, tmp_path):
    trainer, records = make_trainer(tiny_ce_path, tmp_path / "run", epochs=2)
    trainer.train()
    out = tmp_path / "final"
    trainer.save_model(str(out))
    queries = [r.query for r in records for _ in r.pos + r.neg]
    docs = [d for r in records for d in r.pos + r.neg]
    in_memory = score_pairs(trainer.model, trainer.processing_class, queries, docs, max_length=32)

    reloaded = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert reloaded.config.num_labels == 1
    with torch.no_grad():
        plain = reloaded(**tok(queries, docs, padding=True, truncation=True, max_length=32,
                               return_tensors="pt")).logits.view(-1).numpy()
    np.testing.assert_allclose(plain, in_memory, atol=1e-5, rtol=1e-5)

    st = pytest.importorskip("sentence_transformers")
    ce = st.CrossEncoder(str(out), max_length=32, device="cpu")
    predicted = ce.predict(list(zip(queries, docs)), batch_size=16)
    np.testing.assert_allclose(predicted, in_memory, atol=1e-5, rtol=1e-5)
    assert json.load(open(os.path.join(out, "config.json")))["sentence_transformers"]["activation_fn"].endswith(
        "Identity")


def test_unknown_loss_is_rejected(tiny_ce_path, tmp_path):
    with pytest.raises(ValueError, match="unknown rerank loss"):
        make_trainer(tiny_ce_path, tmp_path, loss="nonsense")


@pytest.mark.parametrize("bf16", [False, True])
def test_in_training_evaluation_runs_in_the_training_precision(tiny_ce_path, tmp_path, bf16):
    """transformers 5's autocast_smart_context_manager is a no-op; evaluators must autocast themselves."""
    trainer, _ = make_trainer(tiny_ce_path, tmp_path, epochs=1, bf16=bf16)
    seen = []
    hook = trainer.model.register_forward_hook(lambda *a: seen.append(torch.is_autocast_enabled("cpu")))
    trainer.evaluate()
    hook.remove()
    assert seen and all(s == bf16 for s in seen)
