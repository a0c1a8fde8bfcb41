"""mteb evaluation: local tasks, adapters, agreement with our own metrics, results layout, model-index."""

import json
import os
import random

import numpy as np
import pytest

from hf_ragtrain import RerankingEvaluator, load_records, ranking_metrics
from hf_ragtrain.data.beir import load_beir
from hf_ragtrain.data.beir_pipeline import first_stage_run
from hf_ragtrain.data.records import parse_record
from hf_ragtrain.evaluation.mteb_eval import (MtebEncoder, MtebReranker, beir_task, records_task, run_mteb,
                                              scores_as_dict)
from hf_ragtrain.modeling.cross_encoder import load_cross_encoder
from hf_ragtrain.reranker import CrossEncoderReranker

from conftest import tiny_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAQ_DEV = os.path.join(REPO, "data", "python_faq", "dev.jsonl")


def ours(mteb_metrics, ks=(1, 3, 5, 10)):
    """mteb's metric names -> ours, for the families both compute."""
    return {f"{fam}@{k}": mteb_metrics[f"{fam}_at_{k}"] for fam in ("ndcg", "map", "recall", "mrr", "hit_rate") for k in ks}


def faq_beir(root, n_queries=12):
    """A small BEIR folder from the bundled Python FAQ: the first dev questions against their 30 candidates
    each (the answer and BM25's best other answers), all in one corpus."""
    dev, _ = load_records(FAQ_DEV)
    texts = list(dict.fromkeys(t for r in dev[:n_queries] for t in [*r.pos, *r.neg]))
    ids = {t: f"doc{i}" for i, t in enumerate(texts)}
    os.makedirs(root / "qrels", exist_ok=True)
    with open(root / "corpus.jsonl", "w") as fh:
        for t, i in ids.items():
            fh.write(json.dumps({"_id": i, "title": "", "text": t}) + "\n")
    with open(root / "queries.jsonl", "w") as fh, open(root / "qrels" / "test.tsv", "w") as qr:
        qr.write("query-id\tcorpus-id\tscore\n")
        for r in dev[:n_queries]:
            fh.write(json.dumps({"_id": r.query_id, "text": r.query}) + "\n")
            for p in r.pos:
                qr.write(f"{r.query_id}\t{ids[p]}\t1\n")
    return str(root)


class BagOfWords:
    """A deterministic fake bi-encoder: hashed word counts, L2-normalised."""

    def encode(self, texts, batch_size=32, normalize_embeddings=True, **kwargs):
        out = np.zeros((len(texts), 64))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w)) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_our_metrics_agree_with_mteb_on_random_runs():
    """Same run and qrels (graded, with score ties) -> the same numbers from ranking_metrics and mteb."""
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    rng = random.Random(0)
    run, qrels = {}, {}
    for q in range(30):
        docs = [f"d{j}" for j in rng.sample(range(60), 25)]
        run[f"q{q}"] = {d: float(rng.randint(0, 6)) for d in docs}  # coarse scores: many ties
        qrels[f"q{q}"] = {d: rng.choice([1, 2, 3]) for d in rng.sample(docs + ["unretrieved"], 3)}
    ks = (1, 3, 5, 10)
    theirs = calculate_retrieval_scores({q: dict(r) for q, r in run.items()}, qrels, list(ks))
    mine = ranking_metrics(run, qrels, ks)
    for k in ks:
        assert mine[f"ndcg@{k}"] == pytest.approx(theirs.ndcg[f"NDCG@{k}"], abs=1e-5)
        assert mine[f"map@{k}"] == pytest.approx(theirs.map[f"MAP@{k}"], abs=1e-5)
        assert mine[f"recall@{k}"] == pytest.approx(theirs.recall[f"Recall@{k}"], abs=1e-5)
        assert mine[f"mrr@{k}"] == pytest.approx(theirs.mrr[f"MRR@{k}"], abs=1e-5)
        assert mine[f"hit_rate@{k}"] == pytest.approx(theirs.hit_rate[f"HitRate@{k}"], abs=1e-5)


def test_beir_folder_as_mteb_retrieval_task_matches_our_dense_search(tmp_path):
    root = faq_beir(tmp_path / "faq")
    encoder = BagOfWords()
    res = run_mteb(MtebEncoder(encoder, name="test/bow"), [beir_task(root, "test", name="FaqTest")],
                   output_folder=str(tmp_path / "mteb"))
    data = load_beir(root, split="test")
    expected = ranking_metrics(first_stage_run(encoder, data, top_k=100), data.qrels, (1, 3, 5, 10))
    assert ours(res["FaqTest"].metrics["test"]) == pytest.approx(expected, abs=1e-5)
    assert res["FaqTest"].metrics["test"]["main_score"] == res["FaqTest"].metrics["test"]["ndcg_at_10"]


def test_results_are_written_in_mtebs_layout_and_read_back_by_mteb(tmp_path):
    import mteb

    root = faq_beir(tmp_path / "faq", n_queries=4)
    res = run_mteb(MtebEncoder(BagOfWords(), name="test/bow"), [beir_task(root, "test", name="FaqTest")],
                   output_folder=str(tmp_path / "mteb"))
    path = tmp_path / "mteb" / "results" / "test__bow" / "no_revision_available" / "FaqTest.json"
    assert path.exists()
    loaded = mteb.ResultCache(tmp_path / "mteb").load_task_result("FaqTest", "test/bow", "no_revision_available")
    assert loaded.scores["test"][0]["ndcg_at_10"] == pytest.approx(res["FaqTest"].metrics["test"]["ndcg_at_10"])
    assert json.loads(json.dumps(scores_as_dict(res)))["FaqTest"]["test"]["ndcg_at_10"] == pytest.approx(
        loaded.scores["test"][0]["ndcg_at_10"])


def test_real_minilm_through_mteb_equals_our_first_stage(tmp_path):
    """The real MiniLM embedder on a small slice: mteb's path and ours rank alike."""
    from hf_ragtrain.data.mining import load_encoder
    from hf_ragtrain.offline import resolve_model_path

    root = faq_beir(tmp_path / "faq", n_queries=8)
    encoder = load_encoder(resolve_model_path("minilm"))
    res = run_mteb(MtebEncoder(encoder, name="test/minilm"), [beir_task(root, "test", name="FaqTest")])
    data = load_beir(root, split="test")
    expected = ranking_metrics(first_stage_run(encoder, data, top_k=100), data.qrels, (1, 3, 5, 10))
    got = ours(res["FaqTest"].metrics["test"])
    assert got == pytest.approx(expected, abs=1e-5)
    assert got["ndcg@10"] > 0.3  # a real embedder finds FAQ answers; a broken adapter would not


def test_records_task_reranks_like_the_in_training_evaluator(tiny_ce_path):
    rows = tiny_records(6, n_neg=3)
    rows[1]["pos_labels"] = [2]
    rows[2]["prompt"] = "question: "
    records = [parse_record(r, source="mem", line=i + 1) for i, r in enumerate(rows)]
    model, tok = load_cross_encoder(tiny_ce_path)
    evaluator = RerankingEvaluator(records, k_values=(1, 3, 5, 10), max_length=32)
    expected = evaluator(evaluator.scorer_for(model, tok, max_length=32))
    reranker = CrossEncoderReranker(model, tok, max_length=32, dtype="fp32")
    res = run_mteb(MtebReranker(reranker, name="test/tiny"), [records_task(records, name="TinyDev", split="dev")])
    assert ours(res["TinyDev"].metrics["dev"]) == pytest.approx(expected, abs=1e-5)
    assert reranker.total.pairs == sum(1 + 3 for _ in rows)


def test_records_task_rejects_one_id_with_two_texts():
    rows = tiny_records(2, n_neg=1)
    rows[0].update(pos_ids=["a"], neg_ids=["b"])
    rows[1].update(pos_ids=["a"], neg_ids=["c"])  # "a" names a different text here
    records = [parse_record(r, source="mem", line=i + 1) for i, r in enumerate(rows)]
    with pytest.raises(ValueError, match="document id 'a' has two different texts"):
        records_task(records, name="Bad")


def test_cross_encoder_on_a_retrieval_task_needs_a_first_stage(tiny_ce_path, tmp_path):
    from hf_ragtrain.evaluation.mteb_eval import evaluate_saved_reranker

    with pytest.raises(ValueError, match="first-stage encoder"):
        evaluate_saved_reranker(tiny_ce_path, [beir_task(faq_beir(tmp_path, n_queries=2), "test")])


def test_evaluate_script_embedder_and_reranker(tiny_ce_path, tmp_path):
    import subprocess
    import sys

    root = faq_beir(tmp_path / "faq", n_queries=3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = os.path.join(REPO, "recipes", "evaluate_mteb.py")
    proc = subprocess.run([sys.executable, script, "--embedder", tiny_ce_path, "--reranker", tiny_ce_path,
                           "--beir_dir", root, "--top_k", "4", "--max_length", "32", "--output_folder",
                           str(tmp_path / "res"), "--json", str(tmp_path / "m.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "m.json").read_text())
    assert set(out) == {"first_stage", "reranked"} and "12 pairs scored" in proc.stdout  # 3 queries x top 4
    assert (tmp_path / "res" / "results" / "local__tiny_ce0" / "no_revision_available" / "faq.json").exists()


def test_mteb_task_names_resolve_offline_and_unknown_ones_fail_clearly():
    from hf_ragtrain.evaluation.mteb_eval import get_tasks

    (task,) = get_tasks(["SciFact"])  # metadata only: the data would download on load_data
    assert task.metadata.name == "SciFact" and task.metadata.main_score == "ndcg_at_10"
    with pytest.raises(ValueError, match="unknown mteb task name"):
        get_tasks(["NoSuchTask123"])
