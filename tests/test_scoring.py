"""Teacher scoring of records: fields kept, scores equal to the teacher's own, resumable after an
interruption without re-scoring, atomic output, clear errors, each kind of teacher."""

import json
import os

import numpy as np
import pytest

from conftest import TEXTS, run_script, tiny_records, write_jsonl
from hf_ragtrain.data.errors import DataFormatError
from hf_ragtrain.reranker import reranker_kind
from hf_ragtrain.scoring import FunctionTeacher, load_teacher, read_cache, score_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def overlap(queries, docs):
    """A deterministic stand-in teacher: word overlap, with a tie-breaking length term."""
    return [len(set(q.split()) & set(d.split())) + 0.001 * len(d) for q, d in zip(queries, docs)]


def records_file(path):
    rows = tiny_records(6, n_neg=3)
    rows[1]["prompt"] = "python question: "
    rows[2]["source"] = "kept as given"  # a field the loader does not know: kept in the output
    rows.append({"query": TEXTS[0], "docs": [TEXTS[1], TEXTS[3], TEXTS[5]], "labels": [2, 0, 1]})
    return write_jsonl(path, rows), rows


def expected_output(rows):
    out = []
    for row in rows:
        query = row.get("prompt", "") + row["query"]
        if "docs" in row:
            out.append({**row, "scores": overlap([query] * len(row["docs"]), row["docs"])})
        else:
            out.append({**row, "pos_scores": overlap([query] * len(row["pos"]), row["pos"]),
                        "neg_scores": overlap([query] * len(row["neg"]), row["neg"])})
    return out


def read_jsonl(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_scores_are_added_and_every_given_field_is_kept(tmp_path):
    src, rows = records_file(tmp_path / "train.jsonl")
    stats = score_records(src, str(tmp_path / "out.jsonl"), FunctionTeacher(overlap, "overlap"), show_progress=False)
    got = read_jsonl(tmp_path / "out.jsonl")
    for g, e in zip(got, expected_output(rows)):
        assert g.keys() == e.keys()
        for k in e:
            assert g[k] == (pytest.approx(e[k]) if k.endswith("scores") else e[k]), k
    assert stats.records == 7 and stats.pairs == 6 * 4 + 3 and stats.scored == stats.unique_pairs
    # a second run over the same data takes everything from the cache
    again = score_records(src, str(tmp_path / "out2.jsonl"), FunctionTeacher(overlap, "overlap"), show_progress=False,
                          cache_path=str(tmp_path / "out.jsonl.cache.jsonl"))
    assert again.scored == 0 and again.from_cache == stats.unique_pairs
    assert read_jsonl(tmp_path / "out2.jsonl") == got


def test_an_interrupted_run_resumes_without_rescoring_and_never_replaces_a_good_file(tmp_path):
    src, rows = records_file(tmp_path / "train.jsonl")
    out = tmp_path / "out.jsonl"
    out.write_text("a good file from an earlier run\n")
    calls = []

    def crashing(queries, docs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is stopped during its third chunk
        calls.append(len(queries))
        return overlap(queries, docs)

    with pytest.raises(KeyboardInterrupt):
        score_records(src, str(out), FunctionTeacher(crashing, "overlap"), chunk_pairs=5, show_progress=False)
    assert out.read_text() == "a good file from an earlier run\n"
    cache = str(out) + ".cache.jsonl"
    assert len(read_cache(cache, "overlap")) == 10  # the two finished chunks
    with open(cache, "a") as fh:
        fh.write('{"teacher": "overlap", "key": "abc", "sco')  # a line cut off by the interruption
    seen = []

    def counting(queries, docs):
        seen.extend(zip(queries, docs))
        return overlap(queries, docs)

    stats = score_records(src, str(out), FunctionTeacher(counting, "overlap"), chunk_pairs=5, show_progress=False)
    assert stats.from_cache == 10 and stats.scored == len(seen) == stats.unique_pairs - 10
    reference = tmp_path / "reference.jsonl"
    score_records(src, str(reference), FunctionTeacher(overlap, "overlap"), show_progress=False)
    assert read_jsonl(out) == read_jsonl(reference)
    # another teacher never reuses these scores
    other = score_records(src, str(tmp_path / "o.jsonl"), FunctionTeacher(overlap, "other"), cache_path=cache,
                          show_progress=False)
    assert other.from_cache == 0


def test_records_that_already_have_scores_are_refused_unless_overwriting(tmp_path):
    rows = tiny_records(3)
    rows[2]["pos_scores"], rows[2]["neg_scores"] = [1.0], [0.0, 0.0, 0.0]
    src = write_jsonl(tmp_path / "scored.jsonl", rows)
    with pytest.raises(DataFormatError) as err:
        score_records(src, str(tmp_path / "o.jsonl"), FunctionTeacher(overlap, "t"), show_progress=False)
    assert err.value.line == 3 and err.value.field == "pos_scores" and "overwrite_scores" in str(err.value)
    score_records(src, str(tmp_path / "o.jsonl"), FunctionTeacher(overlap, "t"), overwrite_scores=True,
                  show_progress=False)
    assert read_jsonl(tmp_path / "o.jsonl")[2]["pos_scores"] == pytest.approx(overlap([rows[2]["query"]], rows[2]["pos"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(tiny_records(1)[0]) + "\n{not json\n")
    with pytest.raises(DataFormatError, match="line 2"):
        score_records(str(bad), str(tmp_path / "o2.jsonl"), FunctionTeacher(overlap, "t"), show_progress=False)


def test_each_kind_of_teacher_scores_like_its_model(tiny_ce_path, tiny_llm_path, tiny_encoder_path, tmp_path):
    import torch

    from hf_ragtrain import BiEncoder, LlmReranker, score_pairs
    from hf_ragtrain.modeling.cross_encoder import load_cross_encoder

    queries, docs = [TEXTS[0], TEXTS[2], TEXTS[0]], [TEXTS[1], TEXTS[1], TEXTS[5]]
    llm_dir = str(tmp_path / "llm")
    LlmReranker.from_pretrained(tiny_llm_path, template="{query} . {document} ?", yes_token="Yes").save_pretrained(llm_dir)
    enc_dir = str(tmp_path / "enc")
    BiEncoder.from_pretrained(tiny_encoder_path).save_pretrained(enc_dir)
    assert [reranker_kind(p) for p in (llm_dir, enc_dir, tiny_ce_path)] == ["llm", "bi-encoder", "cross-encoder"]

    model, tok = load_cross_encoder(tiny_ce_path)
    np.testing.assert_allclose(load_teacher(tiny_ce_path, max_length=32).score(queries, docs),
                               score_pairs(model.eval(), tok, queries, docs, max_length=32), rtol=1e-5)
    llm = LlmReranker.from_pretrained(llm_dir).eval()
    np.testing.assert_allclose(load_teacher(llm_dir).score(queries, docs), llm.score(queries, docs), rtol=1e-5)
    enc = BiEncoder.from_pretrained(enc_dir).eval()
    with torch.no_grad():
        q = torch.as_tensor(enc.encode(queries, kind="query"))
        d = torch.as_tensor(enc.encode(docs, kind="passage"))
    np.testing.assert_allclose(load_teacher(enc_dir).score(queries, docs), (q * d).sum(-1).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_score_with_teacher_script(tiny_ce_path, tmp_path):
    src = write_jsonl(tmp_path / "train.jsonl", tiny_records(4))
    out = tmp_path / "scored.jsonl"
    proc = run_script(os.path.join(REPO, "recipes", "score_with_teacher.py"), "--teacher", tiny_ce_path,
                      "--input", src, "--output", str(out), "--max_length", "32", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "16 (query, document) pairs" in proc.stdout
    teacher = load_teacher(tiny_ce_path, max_length=32)
    for row in read_jsonl(out):
        np.testing.assert_allclose(row["pos_scores"] + row["neg_scores"],
                                   teacher.score([row["query"]] * 4, row["pos"] + row["neg"]), rtol=1e-5)
    proc = run_script(os.path.join(REPO, "recipes", "score_with_teacher.py"), "--teacher", tiny_ce_path,
                      "--input", str(out), "--output", str(tmp_path / "again.jsonl"), cwd=tmp_path)
    assert proc.returncode == 2 and "already has teacher scores" in proc.stderr


def test_colbert_and_zero_shot_teachers_score_through_the_reranker_api(tmp_path, tiny_encoder_path):
    from conftest import build_tiny_llm
    from transformers import AutoTokenizer

    from hf_ragtrain import ColbertEncoder, Reranker

    queries, docs = [TEXTS[0], TEXTS[2], TEXTS[0]], [TEXTS[1], TEXTS[1], TEXTS[5]]
    colbert = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=8)
    colbert.save_pretrained(str(tmp_path / "colbert"))
    teacher = load_teacher(str(tmp_path / "colbert"))
    assert reranker_kind(str(tmp_path / "colbert")) == "colbert"
    expected = [float(colbert.rerank(q, [d])[0]) for q, d in zip(queries, docs)]
    np.testing.assert_allclose(teacher.score(queries, docs), expected, rtol=1e-5, atol=1e-5)

    chat = build_tiny_llm(tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(chat)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %} answer"
    tok.save_pretrained(chat)
    teacher = load_teacher(chat)
    assert reranker_kind(chat) == "zero-shot" and teacher.name.startswith("zero-shot:")
    np.testing.assert_allclose(teacher.score(queries, docs),
                               Reranker.from_pretrained(chat, dtype="fp32").compute_score(list(zip(queries, docs))),
                               rtol=1e-6)


def test_reranker_teacher_warns_once_about_cut_documents(tmp_path, tiny_encoder_path, caplog):
    """A teacher is called once per training step: the truncation warning comes once, the count keeps going."""
    import logging

    from hf_ragtrain import ColbertEncoder
    from hf_ragtrain.scoring import RerankerTeacher

    ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=8).save_pretrained(str(tmp_path / "colbert"))
    teacher = RerankerTeacher(str(tmp_path / "colbert"), "colbert", max_length=8)
    long_doc = " ".join(TEXTS)
    with caplog.at_level(logging.WARNING):
        teacher.score([TEXTS[0], TEXTS[1]], [long_doc, TEXTS[2]])
        teacher.score([TEXTS[0]], [long_doc])
    warnings = [r for r in caplog.records if "cut" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].name == "hf_ragtrain.scoring"
    assert teacher.reranker.total.pairs == 3 and teacher.reranker.total.truncated >= 2
