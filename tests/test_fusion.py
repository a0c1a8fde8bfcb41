"""A reranker that adds its first stage's score (hf_ragtrain.modeling.fusion): the training loss, the
start from the first stage, saving and loading, and the recipe's defaults, each against a computation
made another way (sentence-transformers encode + cosine, the model's own logits)."""

import json
import os

import numpy as np
import pytest
import torch

from hf_ragtrain import GroupDataset, RerankCollator, Reranker, RerankerTrainingArguments, RerankTrainer, load_records
from hf_ragtrain.evaluation.first_stage import FirstStage
from hf_ragtrain.evaluation.reranking import RerankingEvaluator
from hf_ragtrain.modeling.cross_encoder import load_cross_encoder
from hf_ragtrain.modeling.fusion import FUSION_FILE, FirstStageFusion, zero_score_head

from conftest import run_script, tiny_records, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def st_cosine(path, queries, docs):
    """The first stage's cosine computed with sentence-transformers directly."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    q = model.encode(list(queries), normalize_embeddings=True, convert_to_numpy=True)
    d = model.encode(list(docs), normalize_embeddings=True, convert_to_numpy=True)
    return (q * d).sum(1)


def logits_of(model, tokenizer, queries, docs):
    batch = tokenizer(list(queries), list(docs), padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.view(-1).numpy()


def make_trainer(path, tmp_path, fusion, records):
    model, tokenizer = load_cross_encoder(path, attn_implementation="eager")
    args = RerankerTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                                     per_device_train_batch_size=2, save_strategy="no", learning_rate=1e-2,
                                     num_train_epochs=2)
    dataset = GroupDataset(records, group_size=3)
    collator = RerankCollator(tokenizer, max_length=32, micro_batch_tokens=None)
    trainer = RerankTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                            processing_class=tokenizer, first_stage=fusion)
    return trainer, dataset, collator


def test_the_loss_is_the_listwise_loss_of_logit_plus_weighted_cosine(tiny_encoder_path, tmp_path):
    records = load_records(tiny_records(4))[0]
    fusion = FirstStageFusion(weight=3.0, source=tiny_encoder_path, name="tiny")
    trainer, dataset, collator = make_trainer(tiny_encoder_path, tmp_path, fusion, records)
    batch = collator([dataset[0], dataset[1]])
    loss = trainer.compute_loss(trainer.model, batch).item()
    queries, docs = batch["pair_queries"], batch["pair_docs"]
    fused = logits_of(trainer.model, trainer.processing_class, queries, docs) + 3.0 * st_cosine(tiny_encoder_path,
                                                                                                 queries, docs)
    fused = fused.reshape(2, 3)
    by_hand = np.mean([np.log(np.exp(row).sum()) - row[0] for row in fused])  # positive in column 0
    assert loss == pytest.approx(by_hand, abs=1e-4)


def test_a_zeroed_head_starts_exactly_as_the_first_stage_and_training_moves_it(tiny_encoder_path, tmp_path):
    records = load_records(tiny_records(6))[0]
    fusion = FirstStageFusion(weight=5.0, source=tiny_encoder_path, name="tiny")
    trainer, _, _ = make_trainer(tiny_encoder_path, tmp_path, fusion, records)
    assert zero_score_head(trainer.model) == 1
    evaluator = RerankingEvaluator(records, first_stage=FirstStage.embedder(tiny_encoder_path))
    before = trainer.model.eval()
    assert np.all(logits_of(before, trainer.processing_class, evaluator.queries, evaluator.docs) == 0)
    start = evaluator.evaluate_with(trainer)
    assert {k: v for k, v in start.items() if not k.startswith("first_stage_")} == pytest.approx(
        evaluator.first_stage_metrics())
    trainer.train()
    moved = logits_of(trainer.model, trainer.processing_class, evaluator.queries, evaluator.docs)
    assert np.abs(moved).max() > 1e-3  # the head left zero: the model learned a correction


def test_a_saved_fused_reranker_scores_logit_plus_weighted_cosine_everywhere(tiny_encoder_path, tmp_path):
    from sentence_transformers import CrossEncoder

    records = load_records(tiny_records(4))[0]
    fusion = FirstStageFusion(weight=2.5, source=tiny_encoder_path, name="tiny")
    trainer, _, _ = make_trainer(tiny_encoder_path, tmp_path, fusion, records)
    trainer.train()
    folder = str(tmp_path / "saved")
    trainer.save_model(folder)
    saved = json.loads(open(os.path.join(folder, FUSION_FILE)).read())
    assert saved["weight"] == 2.5 and saved["first_stage"] == "tiny" and saved["encoder"] == "first_stage"
    queries = [r.query for r in records for _ in (*r.pos, *r.neg)]
    docs = [d for r in records for d in (*r.pos, *r.neg)]
    logits = logits_of(trainer.model, trainer.processing_class, queries, docs)
    cosine = st_cosine(os.path.join(folder, "first_stage"), queries, docs)
    np.testing.assert_allclose(cosine, st_cosine(tiny_encoder_path, queries, docs), atol=1e-5)  # the same encoder
    pairs = list(zip(queries, docs))
    fused = Reranker.from_pretrained(folder, dtype=torch.float32, max_length=32).compute_score(pairs)
    np.testing.assert_allclose(fused, logits + 2.5 * cosine, atol=1e-4)
    alone = Reranker.from_pretrained(folder, first_stage=False, dtype=torch.float32, max_length=32).compute_score(pairs)
    np.testing.assert_allclose(alone, logits, atol=1e-4)
    st_logits = CrossEncoder(folder, device="cpu", max_length=32).predict(pairs)  # the card's recipe for ST users
    np.testing.assert_allclose(st_logits, logits, atol=1e-4)


def test_a_broken_fusion_file_says_which_file_and_what_to_do(tmp_path):
    folder = tmp_path / "reranker"
    folder.mkdir()
    assert FirstStageFusion.from_folder(str(folder)) is None
    (folder / FUSION_FILE).write_text('{"weight": "heavy", "encoder": "first_stage"}')
    with pytest.raises(ValueError, match=f"{FUSION_FILE}.*numeric 'weight'.*delete the file"):
        FirstStageFusion.from_folder(str(folder))
    (folder / FUSION_FILE).write_text('{"weight": 2, "encoder": "first_stage"}')
    with pytest.raises(FileNotFoundError, match="first_stage, which is missing"):
        FirstStageFusion.from_folder(str(folder))
    with pytest.raises(ValueError, match="positive number"):
        FirstStageFusion(weight=0.0, source="minilm", name="x")


def run_recipe(tmp_path, base, *extra):
    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    dev = write_jsonl(tmp_path / "dev.jsonl", tiny_records(4))
    out = tmp_path / "out"
    proc = run_script(os.path.join(REPO, "recipes", "train_reranker.py"), "--output_dir", str(out),
                      "--model_name_or_path", base, "--first_stage_model", base, "--train_data", train,
                      "--eval_data", dev, "--train_group_size", "4", "--max_length", "32", "--learning_rate", "3e-3",
                      "--per_device_train_batch_size", "4", "--bf16", "False", "--mteb_eval", "False", *extra,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "eval_results.json").read_text()), proc


def test_the_recipe_fuses_a_fresh_head_with_its_first_stage_by_default(tiny_encoder_path, tmp_path):
    out, results, proc = run_recipe(tmp_path, tiny_encoder_path)
    first = results["first_stage"]["metrics"]
    assert {k: results["before"][f"before_{k}"] for k in first} == pytest.approx(first)  # it starts as its first stage
    assert json.loads((out / FUSION_FILE).read_text())["weight"] == 5.0
    card = (out / "README.md").read_text()
    assert "plus 5 times the cosine of its first stage" in card and "first_stage/" in card
    assert "score is logit + 5 * cosine(first_stage(query), first_stage(document))" in proc.stdout


def test_the_recipe_trains_alone_with_weight_zero_and_keeps_a_trained_head(tiny_encoder_path, tiny_ce_path, tmp_path):
    out, results, _ = run_recipe(tmp_path, tiny_encoder_path, "--first_stage_weight", "0")
    assert not (out / FUSION_FILE).exists() and not (out / "first_stage").exists()
    (tmp_path / "trained").mkdir()
    trained, _, _ = run_recipe(tmp_path / "trained", tiny_ce_path)
    assert not (trained / FUSION_FILE).exists()  # a cross-encoder with its own head is not fused unasked


def test_the_score_head_trains_at_its_own_learning_rate(tiny_encoder_path, tmp_path):
    records = load_records(tiny_records(4))[0]
    model, tokenizer = load_cross_encoder(tiny_encoder_path, attn_implementation="eager")
    zero_score_head(model)
    args = RerankerTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                                     per_device_train_batch_size=2, save_strategy="no", max_steps=1,
                                     learning_rate=1e-9, head_learning_rate=1e-2, warmup_steps=0,
                                     lr_scheduler_type="constant")
    fusion = FirstStageFusion(weight=3.0, source=tiny_encoder_path, name="tiny")
    trainer = RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3),
                            data_collator=RerankCollator(tokenizer, max_length=32, micro_batch_tokens=None),
                            processing_class=tokenizer, first_stage=fusion)
    body = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("classifier.")}
    trainer.train()
    head_groups = [g for g in trainer.optimizer.param_groups if g["lr"] == pytest.approx(1e-2)]
    assert len(head_groups) == 1 and {id(p) for p in head_groups[0]["params"]} == {
        id(p) for p in model.classifier.parameters()}
    assert model.classifier.weight.abs().max() > 1e-4  # Adam's first step moves it by about the head's rate
    moved = max((p.detach() - body[n]).abs().max().item() for n, p in model.named_parameters() if n in body)
    assert moved < 1e-6  # the body moved at its own (tiny) rate
