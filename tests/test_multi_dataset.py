"""Several training sets in one run: the sampler keeps each global batch within one dataset, items carry
their dataset's prompt and group size, the trainers weigh each batch's loss by its dataset's weight, the
recipes take the --dataset_* options and the card lists the datasets."""

import json
import os

import pytest
import torch

from conftest import build_tiny_encoder, run_script, tiny_records, write_jsonl
from hf_ragtrain import (BiEncoder, ContrastiveTrainer, EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset,
                         load_records)
from hf_ragtrain.data.collators import dataset_of
from hf_ragtrain.data.multi_dataset import DatasetPart, MultiDataset, MultiDatasetSampler, plan_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def part(name, n, group_size=2, prompt=None, weight=1.0, offset=0):
    rows = [{"query": f"{name} question {offset + i}", "pos": [f"{name} answer {offset + i}"],
             "neg": [f"{name} other {offset + i} {j}" for j in range(3)]} for i in range(n)]
    records, _ = load_records(rows)
    return DatasetPart(name, GroupDataset(records, group_size=group_size, seed=1), prompt=prompt, weight=weight)


def batches_of(sampler):
    order = list(sampler)
    return [order[i:i + sampler.batch_size] for i in range(0, len(order), sampler.batch_size)]


def test_proportional_batches_stay_within_a_dataset_and_use_every_record():
    data = MultiDataset([part("a", 10), part("b", 5), part("c", 3)])
    sampler = MultiDatasetSampler(data, batch_size=4, seed=3)
    assert (sampler.steps, sampler.repeated, sampler.unused) == ([3, 2, 1], [2, 3, 1], [0, 0, 0])
    batches = batches_of(sampler)
    assert len(sampler) == 24 and len(batches) == 6
    owners = [{data.locate(i)[0] for i in b} for b in batches]
    assert all(len(o) == 1 for o in owners)  # every batch from one dataset
    assert sorted(o.pop() for o in owners) == [0, 0, 0, 1, 1, 2]  # steps in proportion to the records
    assert set(i for b in batches for i in b) == set(range(18))  # every record, each epoch
    assert list(MultiDatasetSampler(data, batch_size=4, seed=3)) == list(sampler)  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != [i for b in batches for i in b]  # another order next epoch
    assert plan_steps([10, 5, 3], 4, "proportional") == ([3, 2, 1], [2, 3, 1], [0, 0, 0])


def test_round_robin_takes_one_batch_of_each_in_turn_until_the_smallest_runs_out():
    data = MultiDataset([part("a", 10), part("b", 9), part("c", 8)], sampling="round_robin")
    sampler = MultiDatasetSampler(data, batch_size=4, seed=0)
    assert (sampler.steps, sampler.unused, sampler.repeated) == ([2, 2, 2], [2, 1, 0], [0, 0, 0])
    owners = [data.locate(b[0])[0] for b in batches_of(sampler)]
    assert owners == [0, 1, 2, 0, 1, 2]
    assert plan_steps([3, 9], 4, "round_robin") == ([1, 1], [1, 0], [0, 5])


def test_items_carry_their_dataset_prompt_and_group_size_and_the_facts_combine():
    rows = [{"query": "own prompt", "pos": ["p"], "neg": ["n1", "n2"], "prompt": "mine: "},
            {"query": "no prompt", "pos": ["p2"], "neg": ["n3", "n4"]}]
    records, _ = load_records(rows)
    data = MultiDataset([part("a", 3, group_size=2), DatasetPart("b", GroupDataset(records, group_size=3),
                                                                 prompt="query: ", weight=2.0)])
    assert data[0]["dataset"] == 0 and len(data[0]["docs"]) == 2 and not data[0]["prompt"]
    assert data[3]["prompt"] == "mine: " and data[4]["prompt"] == "query: " and len(data[4]["docs"]) == 3
    assert data.weights == [1.0, 2.0]
    facts = data.facts
    assert facts.group_size == 2 and facts.records == 5 and facts.teacher_scores is False
    with pytest.raises(ValueError, match="distinct names"):
        MultiDataset([part("a", 2), part("a", 2)])
    with pytest.raises(ValueError, match="above 0"):
        part("z", 2, weight=0.0)


def test_collators_refuse_a_batch_that_mixes_datasets():
    assert dataset_of([{"dataset": 1}, {"dataset": 1}]) == {"dataset": 1}
    assert dataset_of([{"query": "q"}]) == {}
    with pytest.raises(ValueError, match="mixes records of datasets"):
        dataset_of([{"dataset": 0}, {"dataset": 1}])


def test_a_batch_loss_is_weighted_by_its_dataset_and_the_trainer_samples_by_dataset(tmp_path):
    path = build_tiny_encoder(tmp_path / "m")
    model = BiEncoder.from_pretrained(path)
    records, _ = load_records(tiny_records(8))
    data = MultiDataset([DatasetPart("a", GroupDataset(records[:4], group_size=3, seed=1)),
                         DatasetPart("b", GroupDataset(records[4:], group_size=2, seed=1), weight=2.5)])
    args = EmbeddingTrainingArguments(output_dir=str(tmp_path / "o"), per_device_train_batch_size=2,
                                      num_train_epochs=2, learning_rate=1e-3, logging_steps=1, report_to="none",
                                      save_strategy="no", use_cpu=True, seed=7, disable_tqdm=True)
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=data, data_collator=EmbeddingCollator(model))
    assert isinstance(trainer._get_train_sampler(), MultiDatasetSampler)
    model.eval()
    batch = trainer.data_collator([data[4], data[5]])
    assert batch["dataset"] == 1 and len(batch["passage_texts"]) == 4  # dataset b's groups of 2
    weighted = trainer.compute_loss(model, batch).item()
    plain = trainer.compute_loss(model, {k: v for k, v in batch.items() if k != "dataset"}).item()
    assert weighted == pytest.approx(2.5 * plain, rel=1e-6) and plain > 0
    trainer.train()  # batches of group size 3 and 2 alternate without error
    # 2 + 2 batches an epoch, 2 epochs; a batch mixing datasets would have stopped the collator
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 8


def test_reranker_recipe_with_two_files_kept_apart(tmp_path, tiny_ce_path):
    first = write_jsonl(tmp_path / "first.jsonl", tiny_records(6))
    second = write_jsonl(tmp_path / "second.jsonl", tiny_records(4, n_neg=2))
    dev = write_jsonl(tmp_path / "dev.jsonl", tiny_records(3))
    out = tmp_path / "out"
    proc = run_script(os.path.join(REPO, "recipes", "train_reranker.py"), "--output_dir", str(out),
                      "--model_name_or_path", tiny_ce_path, "--train_data", first, second,
                      "--dataset_sampling", "proportional", "--dataset_names", "faq", "docs",
                      "--dataset_group_sizes", "3", "2", "--dataset_weights", "1", "0.5",
                      "--dataset_prompts", "", "q: ", "--dataset_eval_data", dev, "-",
                      "--per_device_train_batch_size", "2", "--num_train_epochs", "1", "--max_length", "32", "--logging_steps", "1",
                      "--mteb_eval", "False", "--bf16", "False", "--first_stage_model", "none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert "after_faq_ndcg@10" in results["after"] and "after_ndcg@10" in results["after"]
    assert len(results["train_losses"]) == 5  # faq: 3 batches of 2, docs: 2 batches of 2
    card = (out / "README.md").read_text()
    assert "proportional sampling, 60% of steps, group size 3, loss weight 1" in card
    assert "proportional sampling, 40% of steps, group size 2, loss weight 0.5, prompt 'q: '" in card


@pytest.mark.parametrize("extra, match", [
    (["--dataset_weights", "1", "2"], "--dataset_sampling proportional or round_robin"),
    (["--dataset_sampling", "round_robin", "--dataset_weights", "1"], "one entry per --train_data file"),
    (["--dataset_sampling", "proportional", "--dataset_group_sizes", "0", "2"], "at least 1"),
])
def test_bad_dataset_options_are_refused(tmp_path, tiny_ce_path, extra, match):
    a, b = write_jsonl(tmp_path / "a.jsonl", tiny_records(4)), write_jsonl(tmp_path / "b.jsonl", tiny_records(4))
    proc = run_script(os.path.join(REPO, "recipes", "train_reranker.py"), "--output_dir", str(tmp_path / "o"),
                      "--model_name_or_path", tiny_ce_path, "--train_data", a, b, *extra, cwd=tmp_path)
    assert proc.returncode == 2 and match in proc.stderr, proc.stderr[-2000:]


def test_reranker_and_colbert_losses_are_weighted_by_the_batch_dataset(tmp_path, tiny_ce_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_ragtrain import (ColbertEncoder, ColbertTrainer, RerankCollator, RerankerTrainingArguments,
                             RerankTrainer)

    records, _ = load_records(tiny_records(8))
    data = MultiDataset([DatasetPart("a", GroupDataset(records[:4], group_size=3, seed=1)),
                         DatasetPart("b", GroupDataset(records[4:], group_size=2, seed=1), weight=0.25)])
    common = dict(per_device_train_batch_size=2, report_to="none", save_strategy="no", use_cpu=True,
                  disable_tqdm=True)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path, num_labels=1)
    reranker = RerankTrainer(model=model, args=RerankerTrainingArguments(output_dir=str(tmp_path / "r"), **common),
                             train_dataset=data, data_collator=RerankCollator(AutoTokenizer.from_pretrained(tiny_ce_path),
                                                                              max_length=32))
    colbert_model = ColbertEncoder.from_pretrained(build_tiny_encoder(tmp_path / "c"), colbert_dim=8)
    colbert = ColbertTrainer(model=colbert_model, args=EmbeddingTrainingArguments(output_dir=str(tmp_path / "o"),
                                                                                  **common),
                             train_dataset=data, data_collator=EmbeddingCollator(colbert_model))
    for trainer in (reranker, colbert):
        trainer.model.eval()
        batch = trainer.data_collator([data[5], data[6]])
        assert batch["dataset"] == 1
        weighted = trainer.compute_loss(trainer.model, batch).item()
        plain = trainer.compute_loss(trainer.model, {k: v for k, v in batch.items() if k != "dataset"}).item()
        assert weighted == pytest.approx(0.25 * plain, rel=1e-6) and plain > 0
