"""recipes/adapt.py and its stages: the question writer on a tiny random Llama and on the real SmolLM2,
teacher scoring interrupted and resumed to the same output, a tiny end-to-end run whose models load
in sentence-transformers, a rerun that skips every stage, and bad input reported before any work."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from hf_ragtrain import AdaptArguments, DomainAdaptation, RecipeError
from hf_ragtrain.modeling.question_writer import INSTRUCTION, QuestionWriter

from conftest import run_script
from test_two_stage_pipeline import checksums, faq_beir

pytestmark = pytest.mark.long  # several processes or whole recipes: `pytest -m long` (CI runs it)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSAGES = ["use sorted with a key function on the items of a dictionary to sort it by value",
            "a lambda is a small anonymous function defined inline",
            "slicing or the copy method makes a shallow copy of a list",
            "default values are evaluated once when the function is defined"]


# ---------------------------------------------------------------------- the question writer
def test_question_writer_on_a_tiny_llama(tiny_llm_path):
    writer = QuestionWriter(tiny_llm_path, examples=[(PASSAGES[0], "how do i sort a dictionary by value")],
                            max_new_tokens=6, max_passage_words=8, batch_size=3, dtype="fp32")
    prompt = writer.prompt(PASSAGES[1])
    assert prompt.count(INSTRUCTION) == 2 and "Query: how do i sort a dictionary by value\n\n" in prompt
    # no chat template: plain text; both passages cut to their first 8 words
    assert prompt.endswith("Passage: a lambda is a small anonymous function defined\nQuery: ")
    assert "Passage: use sorted with a key function on the\nQuery: how do i" in prompt
    outputs = writer.generate(PASSAGES)
    assert len(outputs) == 4 and all(isinstance(o, str) for o in outputs)
    # left padding: a passage batched with longer ones is continued exactly as when it is alone
    assert [writer.generate([p])[0] for p in PASSAGES] == outputs
    queries = writer.write(PASSAGES)
    assert len(queries) == 4
    assert writer.stats.kept + sum(writer.stats.rejected.values()) == 4
    assert writer.stats.kept == sum(q is not None for q in queries)


def test_smollm2_writes_questions_about_real_passages():
    with open(os.path.join(REPO, "data", "python_faq", "train.jsonl")) as fh:
        rows = [json.loads(line) for line in fh][:4]
    writer = QuestionWriter("smollm2", examples=[(rows[0]["pos"][0], rows[0]["query"])], max_new_tokens=24)
    assert writer.prompt("x").count("<|im_start|>user") == 2  # the example and the passage, as chat turns
    passages = [r["pos"][0] for r in rows[1:]]
    queries = writer.write(passages)
    kept = [q for q in queries if q is not None]
    assert writer.stats.kept == len(kept) >= 1
    for query, passage in zip(queries, passages):
        if query is not None:
            assert 3 <= len(query.split()) <= 40 and query.lower() not in passage.lower() and "\n" not in query
    assert QuestionWriter("smollm2", examples=[(rows[0]["pos"][0], rows[0]["query"])],
                          max_new_tokens=24).write(passages) == queries  # greedy: the same questions again


# ---------------------------------------------------------------------- stages
def small_corpus(tmp_path, n=60):
    beir = faq_beir(tmp_path / "beir", n_train=20, n_test=8)
    with open(os.path.join(beir, "corpus.jsonl")) as fh:
        lines = fh.readlines()[:n]
    (tmp_path / "corpus.jsonl").write_text("".join(lines))
    return str(tmp_path / "corpus.jsonl"), beir


def args_for(corpus, out, encoder, **kw):
    options = dict(corpus=corpus, output_dir=str(out), embedder_model=encoder, reranker_model=encoder,
                   ict_queries=40, llm_queries=0, heldout_queries=10, top_k=8, num_negatives=4, filter_top_k=30)
    return AdaptArguments(**{**options, **kw})


def test_teacher_scoring_interrupted_resumes_to_the_same_output(tmp_path, monkeypatch):
    import hf_ragtrain.runner.adaptation as adapt_module
    from hf_ragtrain.scoring import HybridTeacher

    corpus, _ = small_corpus(tmp_path)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    DomainAdaptation(args_for(corpus, whole, "minilm"), echo=lambda s: None).run(until="negatives")
    shutil.copytree(whole, cut)
    DomainAdaptation(args_for(corpus, whole, "minilm"), echo=lambda s: None).run(until="teacher")

    monkeypatch.setattr(adapt_module, "TEACHER_CHUNK_PAIRS", 16)
    calls = {"n": 0}
    real_score = HybridTeacher.score

    def dies_on_the_third_chunk(self, queries, docs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_score(self, queries, docs)

    monkeypatch.setattr(HybridTeacher, "score", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        DomainAdaptation(args_for(corpus, cut, "minilm"), echo=lambda s: None).run(until="teacher")
    assert not (cut / ".stages" / "teacher.json").exists()
    assert len((cut / "teacher" / "cache.jsonl").read_text().splitlines()) == 32  # two chunks were saved
    monkeypatch.setattr(HybridTeacher, "score", real_score)
    log = []
    DomainAdaptation(args_for(corpus, cut, "minilm"), echo=log.append).run(until="teacher")
    assert any("32 from the cache" in line for line in log)
    assert (cut / "teacher" / "train.jsonl").read_bytes() == (whole / "teacher" / "train.jsonl").read_bytes()
    scored = [json.loads(line) for line in (cut / "teacher" / "train.jsonl").read_text().splitlines()]
    assert scored and all(len(r["neg_scores"]) == len(r["neg"]) and max(r["neg_scores"]) < r["pos_scores"][0]
                          for r in scored)
    # the hybrid teacher's score is the first stage's, computed apart in mining
    assert all(r["pos_scores"] == pytest.approx(r["pos_first_stage_scores"], abs=1e-4) for r in scored)


def test_hybrid_plus_ql_teacher_adds_the_weighted_query_likelihood(tmp_path, tiny_llm_path):
    """``--teacher hybrid+ql``: each pair's score is the base hybrid's (kept apart by mining) plus
    ``--ql_weight`` x the chat model's query likelihood, computed here by a scorer of its own; the reranker
    stage distils those scores (``distill_reranker.py``) behind the adapted first stage, which it saves."""
    from hf_ragtrain.modeling.query_likelihood import QueryLikelihood

    corpus, _ = small_corpus(tmp_path)
    args = args_for(corpus, tmp_path / "out", "minilm", teacher="hybrid+ql", ql_model=tiny_llm_path, ql_weight=2.5)
    log: list[str] = []
    DomainAdaptation(args, echo=log.append).run(until="teacher")
    assert any("+2.5*query-likelihood:" in line for line in log)
    scored = [json.loads(line) for line in (tmp_path / "out" / "teacher" / "scored.jsonl").read_text().splitlines()]
    scorer = QueryLikelihood(tiny_llm_path)
    for r in scored[:5]:
        docs = r["pos"] + r["neg"]
        expected = np.asarray(r["pos_first_stage_scores"] + r["neg_first_stage_scores"]) + 2.5 * scorer.score(
            [r["query"]] * len(docs), docs)
        assert r["pos_scores"] + r["neg_scores"] == pytest.approx(expected.tolist(), abs=1e-3)
    marker = json.loads((tmp_path / "out" / ".stages" / "teacher.json").read_text())
    assert marker["settings"] == {"teacher": "hybrid+ql", "ql_model": tiny_llm_path, "ql_weight": 2.5}
    # the reranker is distilled from these scores behind the adapted first stage, which it saves and adds
    tiny = dict(embedder_args="--max_steps 1 --train_group_size 2 --per_device_train_batch_size 4 "
                              "--passage_max_length 32",
                reranker_args="--max_steps 1 --max_length 32 --train_group_size 3 --per_device_train_batch_size 4")
    DomainAdaptation(AdaptArguments(**{**args.__dict__, **tiny}), echo=log.append).run(until="reranker")
    assert any("distill_reranker.py" in line and "--first_stage_weight" in line for line in log)
    fusion = json.loads((tmp_path / "out" / "reranker" / "first_stage_fusion.json").read_text())
    adapted = json.loads((tmp_path / "out" / "embedder" / "first_stage.json").read_text())
    assert (fusion["weight"], fusion.get("bm25_weight", 0.0)) == pytest.approx((adapted["dense_weight"], adapted["bm25_weight"]))


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tiny_llm_path):
    tmp = tmp_path_factory.mktemp("adapt")
    corpus, beir = small_corpus(tmp)
    out = tmp / "out"
    flags = ["--corpus", corpus, "--output_dir", str(out), "--ict_queries", "40", "--llm_queries", "4",
             "--generator_model", tiny_llm_path, "--heldout_queries", "10", "--top_k", "8", "--num_negatives", "4",
             "--filter_top_k", "30", "--eval_beir", beir, "--split", "test", "--rerank_top_k", "5",
             "--embedder_args", "--max_steps 2 --train_group_size 2 --per_device_train_batch_size 4 "
                                "--passage_max_length 64",
             "--reranker_args", "--max_steps 2 --max_length 64 --train_group_size 3 --per_device_train_batch_size 4"]
    proc = run_script(os.path.join(REPO, "recipes", "adapt.py"), *flags, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, flags, proc


def test_end_to_end_models_load_in_sentence_transformers(adapted):
    from sentence_transformers import CrossEncoder, SentenceTransformer

    out, _, proc = adapted
    report = json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == {"queries", "filter", "negatives", "teacher", "embedder", "reranker", "evaluate"}
    assert list(report["heldout"]) == ["BM25", "base embedder", "base hybrid",
                                       "adapted embedder before averaging (embedder_trained/)",
                                       "adapted embedder", "adapted hybrid (first stage)",
                                       "reranked (first stage top 5)"]
    assert list(report["beir"]) == list(report["heldout"])
    counts = report["counts"]
    assert counts["queries"]["inverse-cloze"]["made"] == 40 and counts["queries"]["llm"]["asked"] == 4
    made = counts["filter"]["by_generator"]
    assert sum(v["made"] for v in made.values()) == 40 + counts["queries"]["llm"]["kept"]
    assert counts["filter"]["train"] + counts["filter"]["dev"] + counts["filter"]["eval"] == \
        sum(v["kept"] for v in made.values())
    # the saved embedder is the trained one averaged with the base (default share of the base: 0.3)
    from safetensors.torch import load_file

    from hf_ragtrain.offline import resolve_model_path

    saved, trained, base = (load_file(os.path.join(f, "model.safetensors"))
                            for f in (out / "embedder", out / "embedder_trained", resolve_model_path("minilm")))
    name = "encoder.layer.5.output.dense.weight"
    assert not torch.equal(trained[name], base[name])
    assert torch.allclose(saved[name], 0.7 * trained[name] + 0.3 * base[name], atol=1e-6)
    assert report["averaging"]["base_share"] == 0.3
    assert "x 0.7 + the base embedder's (minilm) x 0.3, tensor by tensor" in (out / "REPORT.md").read_text()
    vectors = SentenceTransformer(str(out / "embedder")).encode(["a query", "a passage"])
    assert vectors.shape[0] == 2
    scores = CrossEncoder(str(out / "reranker")).predict([("a query", "a passage")])
    assert len(scores) == 1
    assert "Domain adaptation" in (out / "embedder" / "README.md").read_text()
    assert "Domain adaptation" in (out / "REPORT.md").read_text()


def test_a_rerun_skips_every_stage_and_changes_nothing(adapted, tmp_path):
    out, flags, _ = adapted
    before = checksums(out)
    proc = run_script(os.path.join(REPO, "recipes", "adapt.py"), *flags, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("), skipped") == 7 and "to run" not in proc.stdout
    after = checksums(out)
    changed = [k for k in before if before[k] != after.get(k) and k not in ("report.json", "REPORT.md")]
    assert not changed


def test_changed_settings_of_a_finished_stage_are_refused(adapted, tmp_path):
    out, flags, _ = adapted
    flags = [*flags]
    flags[flags.index("--filter_top_k") + 1] = "5"
    proc = run_script(os.path.join(REPO, "recipes", "adapt.py"), *flags, cwd=tmp_path)
    assert proc.returncode == 2 and "filter_top_k = 30" in proc.stderr and "--redo filter" in proc.stderr


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text(""), "the corpus is empty"),
    (lambda p: p.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n'), "line 2"),
    (lambda p: p.write_text('{"_id": "a", "title": "", "text": "  "}\n'), "has no text"),
])
def test_bad_corpora_stop_before_any_work(tmp_path, make, message):
    path = tmp_path / "corpus.jsonl"
    make(path)
    with pytest.raises(RecipeError, match=message):
        DomainAdaptation(args_for(str(path), tmp_path / "out", "minilm")).run()
    assert not (tmp_path / "out").exists()
