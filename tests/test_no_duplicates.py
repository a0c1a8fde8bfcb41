"""NoDuplicatesSampler: no text twice in a global batch, every record once, the same order on every process."""

import logging

import pytest

from conftest import shared_rows
from hf_ragtrain import GroupDataset, load_records
from hf_ragtrain.data.no_duplicates import NoDuplicatesSampler


def shared_records(n: int = 24) -> list:
    return load_records(shared_rows(n))[0]


def batch_texts(dataset, batch):
    return [t for i in batch for t in [dataset[i]["query"], *dataset[i]["docs"]]]


def test_every_global_batch_holds_each_text_once_and_every_record_comes_once():
    dataset = GroupDataset(shared_records(), group_size=3, seed=3)  # a positive and both negatives
    sampler = NoDuplicatesSampler(dataset, batch_size=2, seed=5)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(dataset)))
        assert sampler.tail <= 4 and sampler.clashing <= sampler.tail  # nearly all placed in clean batches
        for start in range(0, len(order) - sampler.tail, 2):
            texts = batch_texts(dataset, order[start:start + 2])
            assert len(texts) == len(set(texts)), (epoch, start, texts)
    # the records in their own order would share a passage in every batch: the sampler is doing the work
    plain = [batch_texts(dataset, [i, i + 1]) for i in range(0, len(dataset), 2)]
    assert all(len(t) != len(set(t)) for t in plain)


def test_two_processes_build_the_same_order_and_epochs_differ():
    dataset = GroupDataset(shared_records(), group_size=3, seed=3)
    a, b = NoDuplicatesSampler(dataset, 2, seed=5), NoDuplicatesSampler(dataset, 2, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)


def test_records_that_clash_with_every_batch_close_the_epoch_and_are_counted(caplog):
    rows = [{"query": f"q{i}", "pos": ["the one answer"], "neg": [f"other {i}"]} for i in range(5)]
    dataset = GroupDataset(load_records(rows)[0], group_size=2)
    sampler = NoDuplicatesSampler(dataset, batch_size=2)
    with caplog.at_level(logging.WARNING):
        order = list(sampler)
    assert sorted(order) == list(range(5)) and sampler.clashing == 5
    assert "5 of 5 records share a text" in caplog.text


def test_the_contrastive_trainer_loads_batches_through_the_sampler(tiny_encoder_path, tmp_path):
    from test_contrastive_trainer import make_trainer

    trainer = make_trainer(tiny_encoder_path, tmp_path, records=shared_rows(),
                           group_size=3, per_device_train_batch_size=2, batch_sampler="no_duplicates")
    loader = trainer.get_train_dataloader()
    batches = list(loader.batch_sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(trainer.train_dataset)))
    sampler = loader.batch_sampler.sampler
    for batch in batches[:(len(trainer.train_dataset) - sampler.tail) // 2]:
        texts = batch_texts(trainer.train_dataset, batch)
        assert len(texts) == len(set(texts))
    with pytest.raises(TypeError, match="GroupDataset"):
        NoDuplicatesSampler(list(range(4)), 2)
