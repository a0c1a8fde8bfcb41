from collections import Counter

import pytest

from hf_ragtrain.data import GroupDataset, load_records


def recs(rows):
    return load_records(rows)[0]


def test_group_has_positive_first_and_negatives_from_the_record():
    data = recs([{"query": "q", "pos": ["p1", "p2"], "neg": [f"n{i}" for i in range(10)]}])
    ds = GroupDataset(data, group_size=5, seed=1)
    item = ds[0]
    assert len(item["docs"]) == 5 and item["labels"] == [1, 0, 0, 0, 0]
    assert item["docs"][0] in {"p1", "p2"}
    assert len(set(item["docs"][1:])) == 4 and set(item["docs"][1:]) <= {f"n{i}" for i in range(10)}
    assert ds.stats.short_records == 0


def test_draws_depend_on_seed_epoch_index_only():
    data = recs([{"query": "q", "pos": ["p1", "p2", "p3"], "neg": [f"n{i}" for i in range(20)]}] * 3)
    a, b = GroupDataset(data, 4, seed=3), GroupDataset(data, 4, seed=3)
    assert [a[i] for i in range(3)] == [b[i] for i in (0, 1, 2)]
    assert a[1] == b[1]  # access order does not matter
    draws = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        draws.add(tuple(a[0]["docs"]))
    assert len(draws) > 1  # a new epoch gives new groups


def test_short_records_sample_with_replacement_and_are_counted():
    data = recs([{"query": "q", "pos": ["p"], "neg": ["n1", "n2"]},
                 {"query": "r", "pos": ["p"], "neg": [f"n{i}" for i in range(9)]}])
    ds = GroupDataset(data, group_size=6)
    assert ds.stats.short_records == 1
    assert "1 records have fewer than 5 negatives" in ds.stats.summary()
    docs = ds[0]["docs"]
    assert len(docs) == 6 and set(docs[1:]) <= {"n1", "n2"}
    seen = Counter(d for e in range(20) for d in (ds.set_epoch(e), ds[0]["docs"][1:])[1])
    assert set(seen) == {"n1", "n2"}


def test_graded_records_use_lower_grades_as_negatives():
    data = recs([{"query": "q", "docs": ["a3", "b2", "c1", "d0"], "labels": [3, 2, 1, 0]}])
    ds = GroupDataset(data, group_size=3)
    for epoch in range(30):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["labels"][0] > max(item["labels"][1:])
        grade = {"a3": 3, "b2": 2, "c1": 1, "d0": 0}
        assert item["labels"] == [grade[d] for d in item["docs"]]


def test_records_without_negatives_draw_from_other_records():
    data = recs([{"query": "q1", "pos": ["p1"]}, {"query": "q2", "pos": ["p2"]}, {"query": "q3", "pos": ["p3"]}])
    ds = GroupDataset(data, group_size=3)
    assert ds.stats.no_negative_records == 3
    item = ds[0]
    assert item["docs"][0] == "p1" and set(item["docs"][1:]) <= {"p2", "p3"}


def test_teacher_scores_follow_their_documents():
    data = recs([{"query": "q", "pos": ["p"], "neg": ["a", "b", "c"], "pos_scores": [9.0],
                  "neg_scores": [1.0, 2.0, 3.0]}])
    item = GroupDataset(data, group_size=3)[0]
    assert item["scores"] == [{"p": 9.0, "a": 1.0, "b": 2.0, "c": 3.0}[d] for d in item["docs"]]


def test_group_size_must_be_positive():
    with pytest.raises(ValueError, match="train_group_size"):
        GroupDataset(recs([{"query": "q", "pos": ["p"]}]), group_size=0)
