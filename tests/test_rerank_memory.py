"""GradCache for rerankers and ColBERT: a step over several micro-batches gives the plain step's gradients,
and is the default exactly when a batch takes more than one micro-batch."""

import json
from pathlib import Path

import pytest

from conftest import (assert_grad_cache_gives_the_plain_step, build_tiny_cross_encoder, build_tiny_encoder,
                      build_tiny_llm, tiny_records)
from hf_ragtrain import (ColbertEncoder, ColbertTrainer, ColbertTrainingArguments, DistillTrainer,
                         DistillTrainingArguments, EmbeddingCollator, GroupDataset, LlmReranker, RerankCollator,
                         RerankerTrainingArguments, RerankTrainer, load_records)
from hf_ragtrain.modeling.cross_encoder import load_cross_encoder


def with_dropout(path):
    """The tiny cross-encoder with dropout on, so GradCache must replay the masks."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def scored(records):
    for i, r in enumerate(records):
        r["pos_scores"] = [2.0 + i % 3]
        r["neg_scores"] = [0.5 * j - i % 2 for j in range(len(r["neg"]))]
    return records


def cross_encoder_trainer(tmp_path, trainer_class=RerankTrainer, args_class=RerankerTrainingArguments, **settings):
    model, tok = load_cross_encoder(with_dropout(build_tiny_cross_encoder(tmp_path / "ce", seed=3)))
    records, _ = load_records(scored(tiny_records(8)))
    args = args_class(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, report_to="none",
                      use_cpu=True, **settings)
    return trainer_class(model=model, args=args, train_dataset=GroupDataset(records, group_size=4, seed=0),
                         data_collator=RerankCollator(tok, max_length=32, micro_batch_tokens=40))


def llm_trainer(tmp_path):
    model = LlmReranker.from_pretrained(build_tiny_llm(tmp_path / "llm", initializer_range=0.2),
                                        template="query : {query} . document : {document} . relevant ?",
                                        yes_token="Yes", layerwise=True, start_layer=1)
    records, _ = load_records(tiny_records(8))
    args = RerankerTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                                     report_to="none", use_cpu=True)
    return RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3, seed=0),
                         data_collator=model.collator(micro_batch_tokens=64))


def colbert_trainer(tmp_path):
    model = ColbertEncoder.from_pretrained(build_tiny_encoder(tmp_path / "enc", dropout=0.1), colbert_dim=16,
                                           query_max_length=12, query_expansion=True)
    records, _ = load_records(scored(tiny_records(8)))
    args = ColbertTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                                    report_to="none", use_cpu=True, temperature=0.05, distill_weight=0.5)
    return ColbertTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3, seed=0),
                          data_collator=EmbeddingCollator(model, micro_batch_tokens=40))


@pytest.mark.parametrize("make", [
    lambda tmp: cross_encoder_trainer(tmp, rerank_loss="listwise"),
    lambda tmp: cross_encoder_trainer(tmp, rerank_loss="pointwise"),
    lambda tmp: cross_encoder_trainer(tmp, DistillTrainer, DistillTrainingArguments, distill_loss="soft_ce",
                                      hard_label_weight=0.5),
    llm_trainer,
    colbert_trainer,
], ids=["listwise", "pointwise", "distill_soft_ce", "llm_layerwise", "colbert"])
def test_grad_cache_gives_the_plain_gradients(tmp_path, make):
    trainer = make(tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert len(batch.get("chunks", batch.get("passage_chunks"))) > 2  # several micro-batches
    assert_grad_cache_gives_the_plain_step(trainer, batch)


def test_grad_cache_is_the_default_exactly_for_batches_of_several_micro_batches(tmp_path, monkeypatch):
    trainer = cross_encoder_trainer(tmp_path)
    assert trainer.args.grad_cache is None and trainer.grad_cache is None
    features = [trainer.train_dataset[i] for i in range(4)]
    several = trainer.data_collator(features)
    trainer.data_collator.micro_batch_tokens = None
    one = trainer.data_collator(features)
    assert len(several["chunks"]) > 1 and len(one["chunks"]) == 1
    assert trainer.use_grad_cache(several) and not trainer.use_grad_cache(one)
    trainer.grad_cache = False
    assert not trainer.use_grad_cache(several)
    colbert = colbert_trainer(tmp_path / "colbert")
    several = colbert.data_collator([colbert.train_dataset[i] for i in range(4)])
    assert colbert.args.grad_cache is None and colbert.use_grad_cache(several)
