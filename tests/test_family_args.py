"""Each trainer reads its settings from its family's arguments class: plain (or another family's)
TrainingArguments get the family's defaults, with a warning; settings the family does not have are
refused. What a trainer needs from the data comes from DataFacts, not from sniffing the dataset."""

import logging

import pytest
import torch
from transformers import TrainingArguments

from conftest import tiny_records
from hf_ragtrain import (BiEncoder, ColbertEncoder, ColbertTrainer, ColbertTrainingArguments, ContrastiveTrainer,
                         DataFacts, DistillTrainer, DistillTrainingArguments, EmbeddingCollator,
                         EmbeddingTrainingArguments, GroupDataset, RerankCollator, RerankerTrainingArguments,
                         RerankTrainer, load_cross_encoder, load_records)

COMMON = dict(report_to="none", use_cpu=True, learning_rate=1e-3, seed=3)


def scored_dataset(group_size=3):
    rows = tiny_records(8, n_neg=3)
    for r in rows:
        r["pos_scores"], r["neg_scores"] = [2.0], [0.5, -0.5, 0.1]
    return GroupDataset(load_records(rows)[0], group_size=group_size, seed=1)


def colbert_trainer(path, args):
    model = ColbertEncoder.from_pretrained(path, colbert_dim=16, seed=0)
    return ColbertTrainer(model=model, args=args, train_dataset=scored_dataset(),
                          data_collator=EmbeddingCollator(model))


def test_colbert_under_plain_training_arguments_uses_the_colbert_defaults(tiny_encoder_path, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        plain = colbert_trainer(tiny_encoder_path, TrainingArguments(output_dir=str(tmp_path), **COMMON))
    assert isinstance(plain.args, ColbertTrainingArguments)
    assert plain.temperature == 1.0 == ColbertTrainingArguments(output_dir=str(tmp_path)).temperature
    assert plain.args.learning_rate == 1e-3 and plain.args.seed == 3  # the user's values are kept
    assert plain.args.ddp_broadcast_buffers is False  # the family's DDP default, not TrainingArguments' None
    warning = [r.getMessage() for r in caplog.records if "ColbertTrainingArguments" in r.getMessage()]
    assert warning and "temperature=1.0" in warning[0]
    # the loss equals the one under ColbertTrainingArguments, and differs from the old 0.02 fallback
    family = colbert_trainer(tiny_encoder_path, ColbertTrainingArguments(output_dir=str(tmp_path), **COMMON))
    cosine_temperature = colbert_trainer(tiny_encoder_path, ColbertTrainingArguments(
        output_dir=str(tmp_path), temperature=0.02, **COMMON))
    items = [family.train_dataset[i] for i in range(4)]
    with torch.no_grad():
        losses = [t.compute_loss(t.model, t.data_collator(items)).item() for t in (plain, family, cosine_temperature)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert abs(losses[0] - losses[2]) > 0.1


def test_another_familys_defaults_give_way_but_its_chosen_values_stay(tiny_encoder_path, tmp_path):
    defaults = colbert_trainer(tiny_encoder_path, EmbeddingTrainingArguments(output_dir=str(tmp_path), **COMMON))
    assert defaults.temperature == 1.0  # EmbeddingTrainingArguments' 0.02 was only its default
    chosen = colbert_trainer(tiny_encoder_path, EmbeddingTrainingArguments(output_dir=str(tmp_path), temperature=0.05,
                                                                           distill_weight=0.5, **COMMON))
    assert chosen.temperature == 0.05 and chosen.distill_weight == 0.5


def test_contrastive_and_rerank_under_plain_training_arguments(tiny_encoder_path, tiny_ce_path, tmp_path):
    encoder = BiEncoder.from_pretrained(tiny_encoder_path)
    contrastive = ContrastiveTrainer(model=encoder, args=TrainingArguments(output_dir=str(tmp_path), **COMMON),
                                     train_dataset=scored_dataset(), data_collator=EmbeddingCollator(encoder))
    assert isinstance(contrastive.args, EmbeddingTrainingArguments)
    assert (contrastive.temperature, contrastive.in_batch_negatives, contrastive.cross_device) == (0.02, True, True)
    assert contrastive.distill_weight == 1.0  # every record carries teacher scores (the data facts say so)

    model, tok = load_cross_encoder(tiny_ce_path)
    rerank = RerankTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), **COMMON),
                           train_dataset=scored_dataset(), data_collator=RerankCollator(tok, max_length=32),
                           processing_class=tok)
    assert isinstance(rerank.args, RerankerTrainingArguments)
    assert (rerank.loss_name, rerank.temperature, rerank.max_label) == ("listwise", 1.0, 1)
    distill = DistillTrainer(model=model, args=RerankerTrainingArguments(output_dir=str(tmp_path), rerank_loss="pairwise",
                                                                         **COMMON),
                             train_dataset=scored_dataset(), data_collator=RerankCollator(tok, max_length=32))
    assert isinstance(distill.args, DistillTrainingArguments)
    assert (distill.loss_name, distill.distill_loss, distill.distill_weight) == ("pairwise", "soft_ce", 1.0)


def test_settings_the_family_does_not_have_are_refused(tiny_encoder_path, tiny_ce_path, tmp_path):
    encoder = BiEncoder.from_pretrained(tiny_encoder_path)
    with pytest.raises(ValueError, match=r"ContrastiveTrainer does not use rerank_loss='pointwise' "
                                         r"\(fields of RerankerTrainingArguments\)"):
        ContrastiveTrainer(model=encoder, args=RerankerTrainingArguments(output_dir=str(tmp_path),
                                                                         rerank_loss="pointwise", **COMMON))
    model, _ = load_cross_encoder(tiny_ce_path)
    with pytest.raises(ValueError, match="RerankTrainer does not use temperature=0.5"):
        RerankTrainer(model=model, args=EmbeddingTrainingArguments(output_dir=str(tmp_path), temperature=0.5, **COMMON))
    with pytest.raises(TypeError, match="args must be a RerankerTrainingArguments"):
        RerankTrainer(model=model, args={"learning_rate": 1e-3})


def test_data_facts_are_passed_in_or_stated_by_the_dataset(tiny_ce_path, tiny_encoder_path, tmp_path):
    graded = tiny_records(8, n_neg=3)
    graded[0]["pos_labels"] = [3]
    dataset = GroupDataset(load_records(graded)[0], group_size=3)
    assert dataset.facts == DataFacts(teacher_scores=False, max_label=3, group_size=3, records=8, scored_records=0,
                                      first_stage_scores=False, first_stage_records=0)
    assert DataFacts.of([{"query": "q"}]) == DataFacts()  # a list states nothing
    model, tok = load_cross_encoder(tiny_ce_path)
    args = RerankerTrainingArguments(output_dir=str(tmp_path), rerank_loss="pointwise", **COMMON)
    assert RerankTrainer(model=model, args=args, train_dataset=dataset).max_label == 3  # from the dataset's facts
    as_list = [dataset[i] for i in range(len(dataset))]
    assert RerankTrainer(model=model, args=args, train_dataset=as_list).max_label == 1  # nothing known: binary
    told = RerankTrainer(model=model, args=args, train_dataset=as_list, data_facts=DataFacts(max_label=2))
    assert told.max_label == 3  # grades above 1 map onto the 0..3 scale
    encoder = BiEncoder.from_pretrained(tiny_encoder_path)
    with pytest.raises(ValueError, match="distill_weight > 0 needs teacher scores"):
        ContrastiveTrainer(model=encoder, args=EmbeddingTrainingArguments(output_dir=str(tmp_path), distill_weight=1.0,
                                                                          **COMMON), train_dataset=dataset)
    unknown = ContrastiveTrainer(model=encoder, args=EmbeddingTrainingArguments(output_dir=str(tmp_path), **COMMON),
                                 train_dataset=as_list, data_facts=DataFacts(teacher_scores=True))
    assert unknown.distill_weight == 1.0
