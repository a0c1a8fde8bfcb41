"""The battery of bad inputs: every case ends in a one-line error that names the file, the line or the
field where there is one and says what was expected, with the documented exit status (2: bad data or
arguments, 4: a failed save); none ends in a traceback, none is silently accepted. Inputs that are
accepted (a byte-order mark, gzip, unknown extra fields) are checked to load, and to be reported.

The recipes run in this process (``main(argv)``), so a traceback would fail the test with it."""

import gzip
import importlib.util
import json
import os
import sys

import pytest

from conftest import tiny_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = tiny_records(1)[0]
_modules = {}


def recipe(name):
    if name not in _modules:
        spec = importlib.util.spec_from_file_location(f"recipe_{name}", os.path.join(REPO, "recipes", f"{name}.py"))
        _modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_modules[name])
    return _modules[name]


def run(capsys, name, *argv):
    """Exit status and stderr of a recipe run in this process (argparse's own errors exit through SystemExit)."""
    try:
        status = recipe(name).main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


def jsonl(path, *rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def with_(**fields):
    return {**GOOD, **fields}


def without(*names):
    return {k: v for k, v in GOOD.items() if k not in names}


# (id, the second line of a training file whose first line is a good record, what the message must name)
RECORD_CASES = [
    ("invalid_json", '{"query": "q", "pos": ["p"]', ["line 2", "invalid JSON"]),
    ("json_array", '["q", "p"]', ["line 2", "expected a JSON object"]),
    ("no_query", without("query"), ["line 2", "field 'query'", "missing"]),
    ("empty_query", with_(query="  "), ["line 2", "field 'query'", "non-empty string"]),
    ("numeric_query", with_(query=7), ["line 2", "field 'query'", "expected a string"]),
    ("no_pos", without("pos"), ["line 2", "field 'pos'", "missing"]),
    ("empty_pos", with_(pos=[]), ["line 2", "field 'pos'", "non-empty list"]),
    ("pos_string", with_(pos="a doc"), ["line 2", "field 'pos'", "list of strings"]),
    ("pos_item_empty", with_(pos=[""]), ["line 2", "field 'pos'", "item 0"]),
    ("pos_item_number", with_(pos=[3]), ["line 2", "field 'pos'", "item 0"]),
    ("neg_string", with_(neg="a doc"), ["line 2", "field 'neg'", "list of strings"]),
    ("neg_item_null", with_(neg=[None]), ["line 2", "field 'neg'", "item 0"]),
    ("labels_length", with_(pos_labels=[1, 2]), ["line 2", "field 'pos_labels'", "expected 1 integers"]),
    ("label_zero", with_(pos_labels=[0]), ["line 2", "field 'pos_labels'", "in [1, 3]"]),
    ("label_four", with_(pos_labels=[4]), ["line 2", "field 'pos_labels'", "in [1, 3]"]),
    ("label_fraction", with_(pos_labels=[1.5]), ["line 2", "field 'pos_labels'", "integer"]),
    ("label_bool", with_(pos_labels=[True]), ["line 2", "field 'pos_labels'", "integer"]),
    ("scores_length", with_(pos_scores=[1.0, 2.0], neg_scores=[0.0] * 3), ["line 2", "field 'pos_scores'"]),
    ("score_nan", '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [NaN], "neg_scores": [0]}',
     ["line 2", "field 'pos_scores'", "finite"]),
    ("score_string", with_(pos_scores=["high"], neg_scores=[0.0] * 3), ["line 2", "field 'pos_scores'"]),
    ("pos_scores_only", with_(pos_scores=[1.0]), ["line 2", "field 'neg_scores'", "both"]),
    ("neg_scores_only", with_(neg_scores=[0.0] * 3), ["line 2", "field 'pos_scores'", "both"]),
    ("labels_next_to_pos", with_(labels=[3]), ["line 2", "field 'labels'", "pos_labels"]),
    ("scores_next_to_pos", with_(scores=[1.0]), ["line 2", "field 'scores'", "pos_scores and neg_scores"]),
    ("doc_ids_next_to_pos", with_(doc_ids=["a"]), ["line 2", "field 'doc_ids'", "pos_ids and neg_ids"]),
    ("misspelled_pos_label", with_(pos_label=[2]), ["line 2", "field 'pos_label'", "did you mean 'pos_labels'"]),
    ("misspelled_negs", with_(negs=["x"]), ["line 2", "field 'negs'", "did you mean 'neg'"]),
    ("misspelled_prompts", with_(prompts="x: "), ["line 2", "field 'prompts'", "did you mean 'prompt'"]),
    ("pos_ids_null", with_(pos_ids=[None]), ["line 2", "field 'pos_ids'", "an id"]),
    ("pos_ids_length", with_(pos_ids=["a", "b"]), ["line 2", "field 'pos_ids'", "1 ids"]),
    ("neg_ids_bool", with_(neg_ids=[True, "b", "c"]), ["line 2", "field 'neg_ids'", "an id"]),
    ("query_id_list", with_(query_id=["q1"]), ["line 2", "field 'query_id'", "an id"]),
    ("pos_also_neg", with_(neg=[GOOD["pos"][0]]), ["line 2", "field 'neg'", "also a positive"]),
    ("duplicated_key", '{"query": "q", "pos": ["p"], "query": "r"}', ["line 2", "field 'query'", "twice"]),
    ("surrogate_query", '{"query": "a \\ud800 b", "pos": ["p"]}', ["line 2", "field 'query'", "lone surrogate"]),
    ("surrogate_doc", '{"query": "q", "pos": ["\\udfff"]}', ["line 2", "field 'pos'", "lone surrogate"]),
    ("prompt_number", with_(prompt=3), ["line 2", "field 'prompt'", "expected a string"]),
    ("docs_with_pos", {"query": "q", "docs": ["a"], "labels": [1], "pos": ["a"]}, ["line 2", "field 'pos'"]),
    ("docs_without_labels", {"query": "q", "docs": ["a"]}, ["line 2", "field 'labels'", "needs 'labels'"]),
    ("docs_labels_length", {"query": "q", "docs": ["a", "b"], "labels": [1]}, ["line 2", "field 'labels'"]),
    ("docs_no_relevant", {"query": "q", "docs": ["a", "b"], "labels": [0, 0]}, ["line 2", "label > 0"]),
    ("docs_label_five", {"query": "q", "docs": ["a"], "labels": [5]}, ["line 2", "field 'labels'", "in [0, 3]"]),
    ("docs_two_labels", {"query": "q", "docs": ["a", "b", "a"], "labels": [2, 0, 0]},
     ["line 2", "field 'docs'", "another label"]),
    ("docs_with_pos_scores", {"query": "q", "docs": ["a"], "labels": [1], "pos_scores": [1]},
     ["line 2", "field 'pos_scores'"]),
    ("docs_ids_length", {"query": "q", "docs": ["a", "b"], "labels": [1, 0], "doc_ids": ["x"]},
     ["line 2", "field 'doc_ids'"]),
]


@pytest.mark.parametrize("case", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_a_bad_record_is_a_one_line_error_naming_file_line_and_field(case, tiny_ce_path, tmp_path, capsys):
    _, bad, fragments = case
    train = jsonl(tmp_path / "train.jsonl", GOOD, bad)
    status, err = run(capsys, "train_reranker", "--output_dir", tmp_path / "out", "--model_name_or_path",
                      tiny_ce_path, "--train_data", train)
    assert status == 2, err[-2000:]
    assert err.startswith(f"error: bad training data: {train}, "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def a_file(path):
    path.write_text("x")
    return path


def a_folder(path):
    path.mkdir()
    return path


def bytes_file(path, data):
    path.write_bytes(data)
    return str(path)


FILE_CASES = [
    ("latin1_byte", lambda p: bytes_file(p / "t.jsonl", json.dumps(GOOD).encode() + b"\n" +
                                         b'{"query": "caf\xe9", "pos": ["p"]}\n'), ["line 2", "not UTF-8", "0xe9"]),
    ("directory", lambda p: str(a_folder(p / "folder.jsonl")), ["is a folder"]),
    ("missing_file", lambda p: str(p / "nothing.jsonl"), ["no such file"]),
    ("empty_file", lambda p: bytes_file(p / "t.jsonl", b""), ["at least one record"]),
    ("blank_lines_only", lambda p: bytes_file(p / "t.jsonl", b"\n \n\n"), ["at least one record"]),
    ("cut_gzip", lambda p: bytes_file(p / "t.jsonl.gz", gzip.compress(
        ((json.dumps(GOOD) + "\n") * 200).encode())[:60]), ["gzip data is broken"]),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_file_that_cannot_be_read_is_a_one_line_error(case, tiny_ce_path, tmp_path, capsys):
    _, make, fragments = case
    train = make(tmp_path)
    status, err = run(capsys, "train_reranker", "--output_dir", tmp_path / "out", "--model_name_or_path",
                      tiny_ce_path, "--train_data", train)
    assert status == 2 and err.startswith(f"error: bad training data: {train}"), err
    assert all(f in err for f in fragments), err


def test_the_bad_file_of_several_and_a_bad_dev_file_are_named(tiny_ce_path, tmp_path, capsys):
    good = jsonl(tmp_path / "good.jsonl", GOOD)
    bad = jsonl(tmp_path / "bad.jsonl", GOOD, with_(pos=[]))
    status, err = run(capsys, "train_reranker", "--output_dir", tmp_path / "o", "--model_name_or_path", tiny_ce_path,
                      "--train_data", good, bad)
    assert status == 2 and f"{bad}, line 2, field 'pos'" in err
    status, err = run(capsys, "train_reranker", "--output_dir", tmp_path / "o", "--model_name_or_path", tiny_ce_path,
                      "--train_data", good, "--eval_data", bad)
    assert status == 2 and f"{bad}, line 2, field 'pos'" in err


def test_a_byte_order_mark_gzip_and_unknown_fields_are_accepted_and_reported(tmp_path, caplog):
    from hf_ragtrain import load_records

    rows = [json.dumps({**GOOD, "source": "faq"}), json.dumps(GOOD)]
    with_bom = bytes_file(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + "\n".join(rows).encode())
    gz_named_plain = bytes_file(tmp_path / "plain-name.jsonl", gzip.compress("\n".join(rows).encode()))
    gz = bytes_file(tmp_path / "t.jsonl.gz", gzip.compress("\n".join(rows).encode()))
    for path in (with_bom, gz_named_plain, gz):
        records, report = load_records(path)
        assert len(records) == 2 and records[0].query == GOOD["query"]
        assert report.unknown_fields == {"source": 1}
        assert "fields hf_ragtrain does not use, ignored: 'source' (1 records)" in caplog.text


def test_ignored_fields_reach_eval_results_and_the_card(tiny_ce_path, tmp_path, capsys):
    train = jsonl(tmp_path / "train.jsonl", *[{**r, "url": "https://x"} for r in tiny_records(8)])
    out = tmp_path / "out"
    status, err = run(capsys, "train_reranker", "--output_dir", out, "--model_name_or_path", tiny_ce_path,
                      "--train_data", train, "--max_steps", "1", "--mteb_eval", "False", "--bf16", "False",
                      "--max_length", "32", "--train_group_size", "2")
    assert status == 0, err[-2000:]
    with open(out / "eval_results.json") as fh:
        assert json.load(fh)["train_data"]["train"]["unknown_fields"] == {"url": 8}
    assert "fields hf_ragtrain does not use, ignored: 'url' (8 records)" in (out / "README.md").read_text()


# (id, recipe, arguments after the common ones, what the message must name); every one exits with status 2
ARGUMENT_CASES = [
    ("group_size_zero", "train_reranker", ["--train_group_size", "0"], ["--train_group_size", "at least 1"]),
    ("group_size_negative", "train_reranker", ["--train_group_size", "-1"], ["--train_group_size"]),
    ("max_length_zero", "train_reranker", ["--max_length", "0"], ["--max_length", "at least 8"]),
    ("max_length_negative", "train_reranker", ["--max_length", "-3"], ["--max_length", "got -3"]),
    ("max_steps_negative", "train_reranker", ["--max_steps", "-5"], ["--max_steps", "got -5"]),
    ("max_steps_zero", "train_reranker", ["--max_steps", "0"], ["--max_steps", "got 0"]),
    ("epochs_zero", "train_reranker", ["--num_train_epochs", "0"], ["--num_train_epochs"]),
    ("micro_batch_negative", "train_reranker", ["--micro_batch_tokens", "-1"], ["--micro_batch_tokens"]),
    ("pad_multiple_negative", "train_reranker", ["--pad_to_multiple_of", "-8"], ["--pad_to_multiple_of"]),
    ("top_k_zero", "train_reranker", ["--rerank_top_k", "0"], ["--rerank_top_k"]),
    ("loss_temperature_zero", "train_reranker", ["--loss_temperature", "0"], ["--loss_temperature"]),
    ("max_label_zero", "train_reranker", ["--max_label", "0"], ["--max_label"]),
    ("rank_window_reversed", "train_reranker", ["--negatives_rank_start", "50", "--negatives_rank_end", "10"],
     ["--negatives_rank_start"]),
    ("filter_teacher_without_filter", "train_reranker", ["--negatives_filter_teacher", "minilm"],
     ["--negatives_filter_teacher", "--negatives_absolute_margin"]),
    ("relative_margin_above_one", "train_embedding", ["--negatives_relative_margin", "1.5"],
     ["--negatives_relative_margin must be in [0, 1)", "got 1.5"]),
    ("unknown_loss", "train_reranker", ["--rerank_loss", "softmax"], ["--rerank_loss", "invalid choice"]),
    ("unknown_flag", "train_colbert", ["--matryoshka_dims", "8"], ["not used", "--matryoshka_dims"]),
    ("listwise_group_of_one", "train_reranker", ["--train_group_size", "1"], ["listwise loss", "train_group_size 1"]),
    ("pairwise_group_of_one", "train_reranker", ["--train_group_size", "1", "--rerank_loss", "pairwise"],
     ["pairwise loss", "train_group_size 1"]),
    ("lora_without_llm_head", "train_reranker", ["--lora", "True"], ["--lora and --layerwise apply to LLM rerankers"]),
    ("unknown_mteb_task", "train_reranker", ["--mteb_tasks", "NoSuchTask"], ["--mteb_tasks", "NoSuchTask"]),
    ("resume_without_checkpoints", "train_reranker", ["--resume_from_checkpoint", "latest"],
     ["holds no complete checkpoint"]),
    ("distill_both_weights_zero", "distill_reranker", ["--distill_weight", "0", "--hard_label_weight", "0"],
     ["both 0"]),
    ("distill_unscored_records", "distill_reranker", [], ["have no teacher scores", "score_with_teacher.py"]),
    ("distill_missing_teacher", "distill_reranker", ["--teacher", "/no/such/teacher"],
     ["cannot load the teacher /no/such/teacher", "no such model folder"]),
    ("embedding_temperature_zero", "train_embedding", ["--temperature", "0"], ["--temperature"]),
    ("embedding_weights_mismatch", "train_embedding", ["--matryoshka_dims", "32", "16", "--matryoshka_weights", "1"],
     ["--matryoshka_weights", "one weight per dimension"]),
    ("embedding_vectors_without_texts", "train_embedding", ["--teacher_embeddings", "/tmp/x.npy"],
     ["--teacher_texts"]),
    ("sparse_flops_weight_negative", "train_sparse", ["--document_flops_weight", "-1"],
     ["--document_flops_weight", "0 or more"]),
    ("sparse_warmup_ratio_above_one", "train_sparse", ["--flops_warmup_ratio", "2"], ["--flops_warmup_ratio", "[0, 1]"]),
    ("sparse_hybrid_weight_outside", "train_sparse", ["--hybrid_sparse_weights", "1.5"],
     ["--hybrid_sparse_weights", "[0, 1]"]),
    ("embedding_no_negatives_anywhere", "train_embedding", ["--train_group_size", "1", "--in_batch_negatives", "False"],
     ["in_batch_negatives off", "train_group_size 1"]),
]


@pytest.mark.parametrize("case", ARGUMENT_CASES, ids=[c[0] for c in ARGUMENT_CASES])
def test_a_bad_argument_is_a_one_line_error_naming_it(case, tiny_ce_path, tiny_encoder_path, tmp_path, capsys):
    _, name, extra, fragments = case
    model = tiny_encoder_path if name in ("train_embedding", "train_colbert", "train_sparse") else tiny_ce_path
    train = jsonl(tmp_path / "train.jsonl", *tiny_records(8))
    status, err = run(capsys, name, "--output_dir", tmp_path / "out", "--model_name_or_path", model,
                      "--train_data", train, "--bf16", "False", *extra)
    assert status == 2, err[-3000:]
    assert "Traceback" not in err and "error:" in err
    assert all(f in err for f in fragments), err
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def test_partly_scored_records_are_refused_where_the_scores_matter(tiny_ce_path, tiny_encoder_path, tmp_path, capsys):
    rows = tiny_records(10)
    for r in rows[:9]:
        r["pos_scores"], r["neg_scores"] = [1.0], [0.0] * len(r["neg"])
    train = jsonl(tmp_path / "train.jsonl", *rows)
    common = ["--output_dir", tmp_path / "out", "--train_data", train, "--bf16", "False"]
    status, err = run(capsys, "train_embedding", *common, "--model_name_or_path", tiny_encoder_path)
    assert status == 2 and "9 of 10 training records carry teacher scores" in err, err
    status, err = run(capsys, "distill_reranker", *common, "--model_name_or_path", tiny_ce_path)
    assert status == 2 and "1 of 10 training records have no teacher scores" in err, err


# (id, how to make the folder or path, what the message must name)
OUTPUT_AND_MODEL_CASES = [
    ("output_dir_is_a_file", "output", lambda p: a_file(p / "f"), ["--output_dir", "is a file"]),
    ("output_dir_under_a_file", "output", lambda p: a_file(p / "f") / "sub", ["cannot write to --output_dir"]),
    ("model_absolute_path_missing", "model", lambda p: p / "no" / "model", ["no such model folder"]),
    ("model_relative_path_missing", "model", lambda p: "./no/such/model", ["no such model folder"]),
    ("model_folder_without_a_model", "model", lambda p: a_folder(p / "empty"), ["holds no model", "config.json"]),
    ("resume_from_incomplete", "resume", lambda p: p, ["not a complete checkpoint", "checkpoint-2"]),
]


@pytest.mark.parametrize("case", OUTPUT_AND_MODEL_CASES, ids=[c[0] for c in OUTPUT_AND_MODEL_CASES])
def test_paths_that_do_not_work_are_one_line_errors(case, tiny_ce_path, tmp_path, capsys):
    _, what, make, fragments = case
    out, model, extra = tmp_path / "out", tiny_ce_path, []
    made = make(tmp_path)
    if what == "output":
        out = made
    elif what == "model":
        model = made
    else:  # a complete checkpoint-2 and a half-written checkpoint-4 in the output folder
        for step in (2, 4):
            (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
        extra = ["--resume_from_checkpoint", out / "checkpoint-4"]
    train = jsonl(tmp_path / "train.jsonl", *tiny_records(8))
    status, err = run(capsys, "train_reranker", "--output_dir", out, "--model_name_or_path", model, "--train_data",
                      train, "--bf16", "False", *extra)
    assert status == 2 and "Traceback" not in err, err[-3000:]
    assert all(f in err for f in fragments), err


def beir(root, corpus=None, queries=None, qrels="q1\td1\t1\n", split="train"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    corpus = corpus if corpus is not None else [{"_id": f"d{i}", "title": "", "text": t}
                                                for i, t in enumerate(tiny_records(1)[0]["neg"] + ["an answer"])]
    queries = queries if queries is not None else [{"_id": "q1", "text": "a question"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


BEIR_CASES = [
    ("grade_four", lambda p: beir(p, qrels="q1\td1\t4\n"), ["qrels/train.tsv", "line 2", "field 'score'", "at most 3"]),
    ("unknown_doc", lambda p: beir(p, qrels="q1\tzz\t1\n"), ["qrels/train.tsv", "field 'corpus-id'", "zz"]),
    ("corpus_line_without_id", lambda p: beir(p, corpus=[{"_id": "d1", "text": "x"}, {"text": "y"}]),
     ["corpus.jsonl", "line 2"]),
    ("missing_split", lambda p: beir(p, split="test"), ["no qrels/train.tsv", "available splits: ['test']"]),
    ("missing_folder", lambda p: p / "nowhere", ["has no corpus.jsonl"]),
    ("surrogate_in_corpus", lambda p: beir(p, corpus=[{"_id": "d1", "text": "\ud800"}]),
     ["corpus.jsonl", "line 1", "lone surrogate"]),
]


@pytest.mark.parametrize("case", BEIR_CASES, ids=[c[0] for c in BEIR_CASES])
@pytest.mark.parametrize("tool", ["build_beir_data", "train_reranker"])
def test_bad_beir_folders_are_one_line_errors_naming_the_file(case, tool, tiny_ce_path, tmp_path, capsys):
    _, make, fragments = case
    root = make(tmp_path / "beir")
    if tool == "build_beir_data":
        status, err = run(capsys, tool, "--beir_dir", root, "--output", tmp_path / "out.jsonl", "--method", "bm25")
    else:
        status, err = run(capsys, tool, "--output_dir", tmp_path / "out", "--model_name_or_path", tiny_ce_path,
                          "--beir_dir", root, "--negatives_method", "bm25", "--beir_dev_queries", "0", "--bf16", "False")
    assert status == 2 and "Traceback" not in err, err[-3000:]
    assert all(f in err for f in fragments), err


def test_build_beir_data_leaves_out_empty_documents_and_says_so(tmp_path, capsys):
    from hf_ragtrain import load_records

    corpus = [{"_id": "d1", "title": "", "text": ""}, {"_id": "d2", "text": "an answer"}, {"_id": "d3", "text": "x"}]
    root = beir(tmp_path / "beir", corpus=corpus, queries=[{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}],
                qrels="q1\td1\t1\nq2\td2\t2\n")
    status = recipe("build_beir_data").main(["--beir_dir", str(root), "--output", str(tmp_path / "out.jsonl"),
                                              "--method", "bm25", "--rank_start", "0"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "1 documents with no title or text left out, 1 queries skipped" in printed
    records, _ = load_records(str(tmp_path / "out.jsonl"))  # its own loader accepts what it wrote
    assert [r.query_id for r in records] == ["q2"] and records[0].pos_labels == [2]


def test_score_with_teacher_checks_its_input_before_loading_the_teacher(tiny_ce_path, tmp_path, capsys):
    scored = jsonl(tmp_path / "scored.jsonl", with_(pos_scores=[1.0], neg_scores=[0.0] * 3))
    cases = [
        ([str(tmp_path / "missing.jsonl"), tiny_ce_path], ["bad records", "missing.jsonl", "no such file"]),
        ([str(tmp_path), tiny_ce_path], ["bad records", "is a folder"]),
        ([scored, tiny_ce_path], ["line 1", "already has teacher scores", "--overwrite_scores"]),
        ([jsonl(tmp_path / "ok.jsonl", GOOD), str(tmp_path / "no-teacher")], ["cannot load the teacher"]),
        ([jsonl(tmp_path / "ok2.jsonl", GOOD), str(a_folder(tmp_path / "empty"))],
         ["cannot load the teacher", "holds no model"]),
    ]
    for (data, teacher), fragments in cases:
        status, err = run(capsys, "score_with_teacher", "--teacher", teacher, "--input", data,
                          "--output", tmp_path / "o.jsonl")
        assert status == 2 and "Traceback" not in err, err
        assert all(f in err for f in fragments), (fragments, err)


def test_score_with_teacher_on_a_full_disk_leaves_no_temporary_file(tiny_ce_path, tmp_path, capsys, monkeypatch):
    import builtins
    import errno

    data = jsonl(tmp_path / "in.jsonl", *tiny_records(2))
    real_open = builtins.open

    def full_disk(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if str(path).endswith("out.jsonl.tmp"):
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return handle

    monkeypatch.setattr(builtins, "open", full_disk)
    status, err = run(capsys, "score_with_teacher", "--teacher", tiny_ce_path, "--input", data, "--output",
                      tmp_path / "out.jsonl", "--max_length", "32")
    monkeypatch.undo()
    assert status == 4 and "No space left on device" in err and "run the same command again" in err, err
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl.cache.jsonl"]  # no out.jsonl, no .tmp


def test_the_reranker_api_refuses_what_it_would_otherwise_misread(tiny_ce_path):
    from hf_ragtrain import Reranker

    reranker = Reranker.from_pretrained(tiny_ce_path, max_length=32, dtype="fp32")
    docs = ["use slicing to copy a list", "tuples are immutable"]
    refused = [
        (lambda: reranker.rank("copy a list", {"a": docs[0], "b": docs[1]}), TypeError, "got a dict"),
        (lambda: reranker.rank("copy a list", [docs[0], 7]), TypeError, "document 1 is int"),
        (lambda: reranker.rank("copy a list", [b"bytes"]), TypeError, "document 0 is bytes"),
        (lambda: reranker.rank("copy a list", [{"text": "x"}]), TypeError, "document 0 is dict"),
        (lambda: reranker.rank("  ", docs), ValueError, "the query is empty"),
        (lambda: reranker.rank("copy a list", docs, top_k=-1), ValueError, "top_k"),
        (lambda: reranker.rank("copy a list", docs, top_k=0), ValueError, "top_k"),
        (lambda: reranker.compute_score([("q", "d")], max_length=0), ValueError, "max_length"),
        (lambda: reranker.compute_score([("q", "d")], batch_size=0), ValueError, "batch_size"),
        (lambda: reranker.compute_score([("q", "d")], max_length=4096), ValueError, "128 positions"),
        (lambda: reranker.compute_score([("q", 3)]), TypeError, "pair 0"),
        (lambda: reranker.compute_score([("", "d")]), ValueError, "the query of pair 0 is empty"),
        (lambda: Reranker.from_pretrained(tiny_ce_path, max_length=4096), ValueError, "128 positions"),
        (lambda: Reranker.from_pretrained("/no/such/reranker"), FileNotFoundError, "no such model folder"),
    ]
    for call, error, fragment in refused:
        with pytest.raises(error, match=fragment):
            call()
    ranked = reranker.rank("copy a list", [docs[0], None, docs[1]])  # None marks a missing document: ranked last
    assert [r.corpus_id for r in ranked][-1] == 1 and ranked[-1].score == float("-inf")
    assert len(reranker.rank("copy a list", docs, top_k=1)) == 1


def test_the_pipeline_refuses_bad_inputs_before_any_work(capsys, tmp_path):
    from test_two_stage_pipeline import faq_beir

    beir = faq_beir(tmp_path / "beir")
    out = tmp_path / "out"
    cases = [
        (["--beir_dir", str(tmp_path / "none")], "--beir_dir .*none \\(split train\\): BEIR folder .* has no corpus.jsonl"),
        (["--beir_dir", beir, "--eval_split", "dev"], "has no qrels/dev.tsv \\(available splits: \\['test', 'train'\\]\\)"),
        (["--beir_dir", beir, "--folds", "1"], "--folds must be 0 \\(no cross-fitting\\) or at least 2, got 1"),
        (["--beir_dir", beir, "--num_negatives", "100"], "--num_negatives must be between 1 and --top_k - 1"),
        (["--beir_dir", beir, "--bm25_language", "klingon"], "--bm25_language klingon: no such Snowball stemmer"),
        (["--beir_dir", beir, "--retriever_model", str(tmp_path / "gone")], "--retriever_model: .*gone: no such model folder"),
        (["--beir_dir", beir, "--redo", "retreiver"], "--redo retreiver: no such stage; the stages are candidates"),
    ]
    import re

    for argv, message in cases:
        status, err = run(capsys, "train_pipeline", *argv, "--output_dir", out)
        assert status == 2 and re.search(message, err), (argv, err)
    assert not out.exists()  # refused before the output folder was made
