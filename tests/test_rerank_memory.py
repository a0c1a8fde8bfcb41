"""GradCache for rerankers and ColBERT, and rerankers' group steps: a step over several micro-batches gives
the plain step's gradients; which of them runs by default."""

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
    """Micro-batches that cut groups (here: a group is larger than one) step by GradCache."""
    trainer = cross_encoder_trainer(tmp_path)
    assert trainer.args.grad_cache is None and trainer.grad_cache is None
    assert trainer.data_collator.whole_groups  # the trainer chose it; a set of one group still takes two passes
    features = [trainer.train_dataset[i] for i in range(4)]
    several = trainer.data_collator(features)
    trainer.data_collator.micro_batch_tokens = None
    one = trainer.data_collator(features)
    assert len(several["chunks"]) > 1 and len(one["chunks"]) == 1
    assert trainer.step_mode(several) == "grad_cache" and trainer.step_mode(one) == "plain"
    trainer.grad_cache = False
    assert trainer.step_mode(several) == "plain"
    colbert = colbert_trainer(tmp_path / "colbert")
    several = colbert.data_collator([colbert.train_dataset[i] for i in range(4)])
    assert colbert.args.grad_cache is None and colbert.use_grad_cache(several)


def whole_group_batch(trainer, n=4):
    """A batch of ``n`` groups in micro-batches that each hold one whole group (the budget: the longest group)."""
    features = [trainer.train_dataset[i] for i in range(n)]
    collator = trainer.data_collator
    collator.micro_batch_tokens = None
    longest = max(c["input_ids"].size(1) for c in collator(features)["chunks"])
    collator.micro_batch_tokens = len(features[0]["docs"]) * longest
    return collator(features)


@pytest.mark.parametrize("make", [
    lambda tmp: cross_encoder_trainer(tmp, rerank_loss="listwise"),
    lambda tmp: cross_encoder_trainer(tmp, rerank_loss="pointwise"),
    lambda tmp: cross_encoder_trainer(tmp, rerank_loss="pairwise"),
    lambda tmp: cross_encoder_trainer(tmp, rerank_loss="lambdaloss"),
    lambda tmp: cross_encoder_trainer(tmp, DistillTrainer, DistillTrainingArguments, distill_loss="soft_ce",
                                      hard_label_weight=0.5),
    llm_trainer,
], ids=["listwise", "pointwise", "pairwise", "lambdaloss", "distill_soft_ce", "llm_layerwise"])
def test_group_steps_give_the_plain_gradients(tmp_path, make):
    """One forward and backward per set of whole groups, each set's loss weighted by its share of the
    groups, equals the plain step over all micro-batches (dropout on: the masks come in the same order)."""
    trainer = make(tmp_path)
    batch = whole_group_batch(trainer)
    assert len(batch["group_sets"]) > 1 and len(batch["chunks"]) == len(batch["group_sets"])
    trainer.grad_cache = None
    assert trainer.step_mode(batch) == "groups"
    assert_grad_cache_gives_the_plain_step(trainer, batch, grad_cache=None)


def test_group_steps_give_way_to_grad_cache_when_a_group_does_not_count_or_cannot_be_one_pass(tmp_path):
    trainer = cross_encoder_trainer(tmp_path, rerank_loss="pairwise")
    batch = whole_group_batch(trainer)
    assert trainer.step_mode(batch) == "groups"
    batch["labels"][1] = 0.0  # a group without a better document: the pairwise mean leaves it out
    assert trainer.step_mode(batch) == "grad_cache"
    trainer.data_collator.micro_batch_tokens = 40  # smaller than a group: sets of several passes
    several = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert any(n > 1 for _, n in several["group_sets"]) and trainer.step_mode(several) == "grad_cache"
    explicit = cross_encoder_trainer(tmp_path / "explicit", grad_cache=True)
    assert explicit.data_collator.whole_groups is False  # --grad_cache given: the length-sorted packing as before
    assert "group_sets" not in explicit.data_collator([explicit.train_dataset[i] for i in range(4)])


@pytest.mark.parametrize("budget", [None, 1, 40, 100, 400])
def test_pack_groups_puts_each_group_whole_in_one_set_within_the_budget(budget):
    from hf_ragtrain.data.collators import pack_groups

    lengths = [5, 9, 30, 12, 7, 7, 7, 7, 25, 3, 16, 8, 11, 11, 2, 20, 6, 6]  # 6 groups of 3
    sets = pack_groups(lengths, 3, budget)
    assert sorted(g for groups, _ in sets for g in groups) == list(range(6))
    for groups, micro in sets:
        pairs = sorted(i for b in micro for i in b)
        assert pairs == sorted(3 * g + j for g in groups for j in range(3))
        if budget is not None and len(groups) > 1:
            assert len(pairs) * max(lengths[i] for i in pairs) <= budget
    if budget is None:
        assert len(sets) == 1
    if budget == 1:
        assert len(sets) == 6
