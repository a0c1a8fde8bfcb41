"""Tests for hf_ragtrain.data.beir and hf_ragtrain.data.errors."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest

from hf_ragtrain.data.beir import (
    BeirData,
    beir_to_records,
    beir_to_records_with_stats,
    doc_text,
    load_beir,
)
from hf_ragtrain.data.errors import DataFormatError

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr when happy."},
    {"_id": "d2", "title": "", "text": "Dogs bark at strangers."},
    {"_id": "d3", "title": "Birds", "text": "Birds can fly."},
    {"_id": "d0", "text": "Fish swim."},
]
QUERIES = [
    {"_id": "q1", "text": "why do cats purr"},
    {"_id": "q2", "text": "do dogs bark"},
    {"_id": "q3", "text": "unjudged query"},
    {"_id": "q4", "text": "only judged non-relevant"},
]
QRELS = [("q1", "d1", 1), ("q1", "d0", 2), ("q2", "d2", 1), ("q4", "d3", 0)]


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS, split="test",
              header=True) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", corpus)
    write_jsonl(root / "queries.jsonl", queries)
    lines = ["query-id\tcorpus-id\tscore"] if header else []
    lines += [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_error_message_format():
    err = DataFormatError("expected a non-empty list of strings, got []", "train.jsonl", 12, "pos")
    assert str(err) == "train.jsonl, line 12, field 'pos': expected a non-empty list of strings, got []"
    assert isinstance(err, ValueError)
    assert (err.path, err.line, err.field) == ("train.jsonl", 12, "pos")
    assert str(DataFormatError("plain")) == "plain"
    assert str(DataFormatError("bad", path=Path("a/b.tsv"))) == "a/b.tsv: bad"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_load_beir_basic(tmp_path):
    data = load_beir(make_beir(tmp_path), split="test")
    assert isinstance(data, BeirData)
    assert data.corpus["d1"] == {"title": "Cats", "text": "Cats purr when happy."}
    assert data.corpus["d0"] == {"title": "", "text": "Fish swim."}
    assert data.qrels == {"q1": {"d1": 1, "d0": 2}, "q2": {"d2": 1}, "q4": {"d3": 0}}
    # only judged queries are kept by default
    assert set(data.queries) == {"q1", "q2", "q4"}
    everything = load_beir(tmp_path, split="test", keep_all_queries=True)
    assert set(everything.queries) == {"q1", "q2", "q3", "q4"}


def test_qrels_header_optional_and_integer_ids(tmp_path):
    corpus = [{"_id": 7, "title": "", "text": "seven"}]
    queries = [{"_id": 1, "text": "one"}]
    make_beir(tmp_path, corpus, queries, [("1", "7", 1)], split="train", header=False)
    data = load_beir(tmp_path, split="train")
    assert data.qrels == {"1": {"7": 1}}
    assert data.queries == {"1": "one"}


def test_doc_text():
    assert doc_text({"title": "Cats", "text": "Cats purr."}) == "Cats Cats purr."
    assert doc_text({"title": "", "text": "Just text"}) == "Just text"
    assert doc_text({"text": "No title key"}) == "No title key"
    assert doc_text({"title": None, "text": "None title"}) == "None title"


def test_missing_split_lists_available(tmp_path):
    make_beir(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match=r"qrels/test.tsv.*'train'"):
        load_beir(tmp_path, split="test")


def test_invalid_json_names_file_and_line(tmp_path):
    make_beir(tmp_path)
    with open(tmp_path / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write('{"_id": "d9", "text": "broken"\n')
    with pytest.raises(DataFormatError) as info:
        load_beir(tmp_path)
    msg = str(info.value)
    assert "corpus.jsonl" in msg and "line 5" in msg and "invalid JSON" in msg
    assert info.value.line == 5


def test_missing_id_names_field(tmp_path):
    queries = QUERIES[:1] + [{"text": "no id here"}] + QUERIES[1:]
    make_beir(tmp_path, queries=queries)
    with pytest.raises(DataFormatError) as info:
        load_beir(tmp_path)
    msg = str(info.value)
    assert "queries.jsonl" in msg and "line 2" in msg and "field '_id'" in msg
    assert info.value.field == "_id"


def test_non_string_text_and_duplicates(tmp_path):
    make_beir(tmp_path, corpus=CORPUS + [{"_id": "d5", "text": ["a", "list"]}])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl, line 5, field 'text': expected a string"):
        load_beir(tmp_path)
    make_beir(tmp_path, corpus=CORPUS + [{"_id": "d1", "text": "again"}])
    with pytest.raises(DataFormatError, match=r"line 5, field '_id': duplicate document id 'd1'"):
        load_beir(tmp_path)


def test_bad_score_names_line_and_field(tmp_path):
    make_beir(tmp_path, qrels=[("q1", "d1", 1), ("q2", "d2", "high")])
    with pytest.raises(DataFormatError) as info:
        load_beir(tmp_path)
    msg = str(info.value)
    assert "test.tsv" in msg and "line 3" in msg and "field 'score'" in msg and "'high'" in msg
    assert "integer" in msg


def test_wrong_column_count(tmp_path):
    make_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    with pytest.raises(DataFormatError, match=r"line 2: expected 3 tab-separated columns"):
        load_beir(tmp_path)


def test_unknown_doc_ids_are_counted_and_raised(tmp_path):
    qrels = QRELS + [("q1", "zz1", 1), ("q2", "zz2", 1), ("q2", "zz3", 0)]
    make_beir(tmp_path, qrels=qrels)
    with pytest.raises(DataFormatError) as info:
        load_beir(tmp_path)
    msg = str(info.value)
    assert "3 corpus id(s)" in msg and "'zz1'" in msg and "field 'corpus-id'" in msg


def test_unknown_query_ids_are_raised(tmp_path):
    make_beir(tmp_path, qrels=QRELS + [("ghost", "d1", 1)])
    with pytest.raises(DataFormatError, match=r"1 query id\(s\).*'ghost'"):
        load_beir(tmp_path)


def test_beir_to_records(tmp_path, caplog):
    data = load_beir(make_beir(tmp_path), keep_all_queries=True)
    with caplog.at_level(logging.WARNING):
        records = beir_to_records(data, negatives={"q1": ["d3", "d2"], "q2": ["d1"]})
    assert "skipped 2 of 4 queries" in caplog.text  # q3 unjudged, q4 only score 0
    assert [r["query_id"] for r in records] == ["q1", "q2"]
    q1, q2 = records
    # positives sorted by doc id; graded labels kept because a score is > 1
    assert q1["pos_ids"] == ["d0", "d1"]
    assert q1["pos"] == ["Fish swim.", "Cats Cats purr when happy."]
    assert q1["pos_labels"] == [2, 1]
    assert q1["neg_ids"] == ["d3", "d2"]
    assert q1["neg"] == ["Birds Birds can fly.", "Dogs bark at strangers."]
    assert q1["query"] == "why do cats purr"
    # binary judgements: no pos_labels key
    assert "pos_labels" not in q2
    assert q2 == {"query": "do dogs bark", "pos": ["Dogs bark at strangers."],
                  "neg": ["Cats Cats purr when happy."], "query_id": "q2",
                  "pos_ids": ["d2"], "neg_ids": ["d1"]}


def test_beir_to_records_stats_and_negative_checks(tmp_path):
    data = load_beir(make_beir(tmp_path))
    records, stats = beir_to_records_with_stats(data, {"q1": ["d1", "d3"]})
    # d1 is relevant for q1, so it is removed from the negatives and counted
    assert records[0]["neg_ids"] == ["d3"]
    assert stats == {"records": 2, "skipped_no_positive": 1, "negatives": 1,
                     "negatives_dropped_positive": 1, "empty_documents_dropped": 0, "skipped_empty_positives": 0}
    assert records[1]["neg"] == []
    with pytest.raises(ValueError, match="not in the corpus"):
        beir_to_records(data, {"q1": ["nope"]})
