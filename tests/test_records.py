import json

import pytest

from hf_ragtrain.data import DataFormatError, load_records, parse_record, write_records


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD = {"query": "q", "pos": ["p1", "p2"], "neg": ["n1"]}


def test_valid_records_keep_every_field(tmp_path):
    rec = {"query": "q", "pos": ["a", "b"], "neg": ["c"], "pos_labels": [3, 1], "pos_scores": [0.9, 0.5],
           "neg_scores": [0.1], "prompt": "Judge: ", "query_id": 7, "pos_ids": ["d1", "d2"], "neg_ids": ["d3"]}
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(rec), "", json.dumps(GOOD)])
    records, report = load_records(str(path))
    assert len(records) == 2 and report.blank_lines == 1 and report.records == 2
    r = records[0]
    assert (r.query, r.pos, r.neg, r.pos_labels, r.pos_scores, r.neg_scores, r.prompt, r.query_id,
            r.pos_ids, r.neg_ids) == ("q", ["a", "b"], ["c"], [3, 1], [0.9, 0.5], [0.1], "Judge: ", "7",
                                      ["d1", "d2"], ["d3"])
    assert records[1].labels_of_pos() == [1, 1]
    out = tmp_path / "roundtrip.jsonl"
    write_records(records, out)
    again, _ = load_records(str(out))
    assert [a.to_dict() for a in again] == [r.to_dict() for r in records]


def test_docs_with_graded_labels_become_pos_and_neg():
    r = parse_record({"query": "q", "docs": ["a", "b", "c", "d"], "labels": [0, 3, 1, 0],
                      "scores": [0.1, 0.9, 0.5, 0.2], "doc_ids": ["A", "B", "C", "D"]})
    assert r.pos == ["b", "c"] and r.pos_labels == [3, 1] and r.neg == ["a", "d"]
    assert r.pos_scores == [0.9, 0.5] and r.neg_scores == [0.1, 0.2]
    assert r.pos_ids == ["B", "C"] and r.neg_ids == ["A", "D"]


@pytest.mark.parametrize("line, field, expected", [
    ('{"pos": ["p"]}', "query", "missing required field"),
    ('{"query": "", "pos": ["p"]}', "query", "non-empty string"),
    ('{"query": 3, "pos": ["p"]}', "query", "expected a string"),
    ('{"query": "q", "pos": []}', "pos", "non-empty list"),
    ('{"query": "q", "pos": "p"}', "pos", "list of strings"),
    ('{"query": "q", "pos": ["p", 5]}', "pos", "item 1"),
    ('{"query": "q", "pos": ["p"], "neg": [""]}', "neg", "item 0"),
    ('{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [1, 2]}', "neg_scores",
     "expected 1 numbers"),
    ('{"query": "q", "pos": ["p"], "pos_labels": [4]}', "pos_labels", "in [1, 3]"),
    ('{"query": "q", "pos": ["p"], "pos_labels": [1.5]}', "pos_labels", "integer"),
    ('{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0]}', "neg_scores", "both pos and neg"),
    ('{"query": "q", "docs": ["a"], "labels": [0]}', "labels", "label > 0"),
    ('{"query": "q", "docs": ["a", "b"], "labels": [1]}', "labels", "expected 2 integers"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, field, expected):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), json.dumps(GOOD), line])
    with pytest.raises(DataFormatError) as info:
        load_records(str(path))
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert expected in str(err) and f"{path}, line 3, field '{field}'" in str(err)


def test_invalid_json_names_the_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), '{"query": "q", "pos": ["p"]'])
    with pytest.raises(DataFormatError, match=r"bad.jsonl, line 2: invalid JSON"):
        load_records(str(path))


def test_empty_file_is_an_error(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", ["", ""])
    with pytest.raises(DataFormatError, match="at least one record"):
        load_records(str(path))


def test_unknown_fields_are_counted_not_silently_dropped(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [json.dumps({**GOOD, "source": "x"}), json.dumps(GOOD)])
    _, report = load_records(str(path))
    assert report.unknown_fields == {"source": 1}
    assert "'source' (1 records)" in report.summary()


def test_datasets_dataset_rows_validate_with_row_numbers():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([GOOD, {"query": "q2", "pos": ["p"], "neg": []}])
    records, _ = load_records(ds)
    assert [r.query for r in records] == ["q", "q2"] and records[1].neg == []
    bad = datasets.Dataset.from_list([GOOD, {"query": "q2", "pos": [], "neg": []}])
    with pytest.raises(DataFormatError) as info:
        load_records(bad)
    assert info.value.line == 2 and info.value.field == "pos"


def test_several_files_concatenate_in_order(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [json.dumps({**GOOD, "query": "a"})])
    b = write_lines(tmp_path / "b.jsonl", [json.dumps({**GOOD, "query": "b"}), ""])
    records, report = load_records([str(a), str(b)])
    assert [r.query for r in records] == ["a", "b"] and report.blank_lines == 1
