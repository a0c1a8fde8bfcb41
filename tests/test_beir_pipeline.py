"""BEIR folder -> training data -> two-stage evaluation, on a tiny folder built in the test."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hf_ragtrain.data.beir import load_beir
from hf_ragtrain.data.beir_pipeline import CachingEncoder, dev_records_from_run, first_stage_run, split_dev_queries
from hf_ragtrain.data.hybrid import HybridIndex
from hf_ragtrain.evaluation.mteb_eval import MtebEncoder, MtebHybrid, MtebReranker, beir_task, run_mteb, two_stage
from hf_ragtrain.reranker import CrossEncoderReranker
from hf_ragtrain.evaluation.metrics import ranking_metrics
from hf_ragtrain.modeling.cross_encoder import load_cross_encoder, score_pairs

from conftest import TEXTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_beir(root):
    """Queries are TEXTS[0,2,4,6] (twice, for train and test), their answers TEXTS[1,3,5,7]; 4 distractors."""
    os.makedirs(root / "qrels", exist_ok=True)
    docs = {f"d{i}": TEXTS[i] for i in range(1, 12, 2)} | {f"x{i}": TEXTS[i] for i in (8, 10)}
    with open(root / "corpus.jsonl", "w") as fh:
        for did, text in docs.items():
            fh.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    queries = {f"{split}{i}": TEXTS[i] for split in ("tr", "te") for i in (0, 2, 4, 6)}
    with open(root / "queries.jsonl", "w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, prefix in (("train", "tr"), ("test", "te")):
        with open(root / "qrels" / f"{split}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for i in (0, 2, 4, 6):
                fh.write(f"{prefix}{i}\td{i + 1}\t1\n")
    return str(root)


class HashEncoder:
    """A deterministic fake bi-encoder that counts how many texts it embedded."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False):
        self.calls += len(texts)
        out = np.stack([np.random.default_rng(sum(map(ord, t))).normal(size=16) for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_caching_encoder_embeds_each_text_once():
    inner = HashEncoder()
    enc = CachingEncoder(inner)
    a = enc.encode(["x", "y", "x"])
    b = enc.encode(["y", "z"])
    assert inner.calls == 3
    np.testing.assert_allclose(a[1], b[0])
    np.testing.assert_allclose(a, inner.encode(["x", "y", "x"]))


def test_dev_split_is_deterministic_and_disjoint():
    qids = [f"q{i}" for i in range(20)]
    train, dev = split_dev_queries(qids, 5, seed=1)
    assert len(dev) == 5 and not set(train) & set(dev) and sorted(train + dev) == sorted(qids)
    assert split_dev_queries(list(reversed(qids)), 5, seed=1) == (train, dev)
    assert split_dev_queries(qids, 5, seed=2) != (train, dev)


def test_dev_records_hold_all_positives_and_ranked_negatives(tmp_path):
    data = load_beir(make_beir(tmp_path), split="test")
    run = {"te0": {"d1": 0.1, "d3": 0.9, "x8": 0.5}}
    records = dev_records_from_run(data, run)
    r = {rec.query_id: rec for rec in records}["te0"]
    assert r.pos_ids == ["d1"] and r.neg_ids == ["d3", "x8"]  # the positive is kept even when ranked low
    assert len(records) == 4


def _mteb_metrics(m):
    """Our metric names for an mteb score dict."""
    return {f"{k}@{n}": m[f"{k}_at_{n}"] for k in ("ndcg", "map", "recall", "mrr", "hit_rate") for n in (1, 3, 5, 10)}


def test_two_stage_evaluation_through_mteb_equals_a_direct_computation(tmp_path, tiny_ce_path):
    root = make_beir(tmp_path)
    data = load_beir(root, split="test")
    encoder = CachingEncoder(HashEncoder())
    model, tok = load_cross_encoder(tiny_ce_path)
    reranker = CrossEncoderReranker(model, tok, max_length=32, dtype="fp32")
    out = two_stage(MtebReranker(reranker), MtebEncoder(encoder), [beir_task(root, "test")], top_k=3)
    mteb_first, mteb_reranked = out["first_stage"][os.path.basename(root)], out["reranked"][os.path.basename(root)]

    first = first_stage_run(encoder, data, top_k=100)
    ours = ranking_metrics(first, data.qrels, (1, 3, 5, 10))
    assert _mteb_metrics(mteb_first.metrics["test"]) == pytest.approx(ours, abs=1e-5)
    top3 = {q: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:3]) for q, c in first.items()}
    texts = data.doc_texts()
    rerun = {q: dict(zip(c, score_pairs(model, tok, [data.queries[q]] * len(c), [texts[d] for d in c],
                                        max_length=32).tolist())) for q, c in top3.items()}
    expected = ranking_metrics(rerun, data.qrels, (1, 3, 5, 10))
    assert _mteb_metrics(mteb_reranked.metrics["test"]) == pytest.approx(expected, abs=1e-5)
    assert reranker.total.pairs == 12  # 4 queries x top 3


def test_recipe_with_beir_dir(tmp_path, tiny_ce_path):
    root = make_beir(tmp_path / "beir")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "recipes", "train_reranker.py"), "--output_dir", str(out),
         "--model_name_or_path", tiny_ce_path, "--first_stage_model", tiny_ce_path, "--beir_dir", root,
         "--beir_dev_queries", "1", "--negatives_method", "bm25", "--negatives_rank_start", "0",
         "--num_negatives", "3", "--train_group_size", "3", "--max_steps", "2", "--rerank_top_k", "5",
         "--max_length", "32"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    task = os.path.basename(root)
    assert results["mteb_settings"]["top_k"] == 5 and results["mteb_settings"]["pairs"] == 4 * 5
    assert 0 <= results["mteb"][task]["test"]["ndcg_at_10"] <= 1
    # reranking reorders the first stage's top 5, it cannot find more (the exact check, free of score ties, is
    # test_two_stage_evaluation_through_mteb_equals_a_direct_computation)
    assert results["mteb"][task]["test"]["recall_at_100"] <= results["mteb_first_stage"][task]["test"]["recall_at_100"]
    assert "after_ndcg@10" in results["after"]  # the held-out dev query was evaluated
    card = (out / "README.md").read_text()
    assert "## MTEB evaluation" in card and f"| {task} | test | first stage alone |" in card
    assert (out / "mteb" / "results" / "local__out" / "no_revision_available" / f"{task}.json").exists()


def test_build_beir_data_holds_out_dev_queries_as_the_recipes_do(tmp_path, tiny_ce_path):
    """--dev_queries: the recipes' held-out queries leave the training file and become dev records whose
    candidates are their positives and the encoder's top --dev_top_k (computed here directly)."""
    from hf_ragtrain.data.mining import load_encoder

    root = make_beir(tmp_path / "beir")
    train_out, dev_out = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "recipes", "build_beir_data.py"), "--beir_dir", root, "--split", "train",
         "--output", str(train_out), "--method", "bm25", "--rank_start", "0", "--num_negatives", "2",
         "--encoder", tiny_ce_path, "--dev_queries", "1", "--dev_output", str(dev_out), "--dev_top_k", "3"],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = load_beir(root, split="train")
    train_ids, dev_ids = split_dev_queries(list(data.qrels), 1, seed=42)
    train = [json.loads(line) for line in train_out.read_text().splitlines()]
    dev = [json.loads(line) for line in dev_out.read_text().splitlines()]
    assert sorted(r["query_id"] for r in train) == train_ids and [r["query_id"] for r in dev] == dev_ids
    qid = dev_ids[0]
    only_dev = load_beir(root, split="train")
    only_dev.queries, only_dev.qrels = {qid: data.queries[qid]}, {qid: data.qrels[qid]}
    ranked = first_stage_run(load_encoder(tiny_ce_path), only_dev, top_k=3)[qid]
    expected_neg = [d for d in sorted(ranked, key=lambda d: -ranked[d]) if d not in data.qrels[qid]]
    assert dev[0]["pos_ids"] == sorted(data.qrels[qid]) and dev[0]["neg_ids"] == expected_neg


def test_a_prebuilt_hybrid_index_of_the_task_corpus_is_used_and_scores_the_same(tmp_path):
    root = make_beir(tmp_path / "beir")
    data = load_beir(root, split="test")
    ids, texts = list(data.corpus), list(data.doc_texts().values())
    name = os.path.basename(root)

    def ndcg(encoder, prebuilt=None):
        model = MtebHybrid(encoder, 2.0, 0.3, prebuilt=prebuilt)
        return run_mteb(model, [beir_task(root, "test")], str(tmp_path / "out"))[name].metrics["test"]["ndcg_at_10"]

    fresh = HashEncoder()
    expected = ndcg(fresh)
    assert fresh.calls == len(texts) + 4  # the corpus and the 4 test queries
    encoder = HashEncoder()
    index = HybridIndex(encoder, texts, show_progress=False)
    encoder.calls = 0
    assert ndcg(encoder, (ids, index)) == pytest.approx(expected)
    assert encoder.calls == 4  # only the queries: the corpus vectors came from the prebuilt index
    assert ndcg(encoder, (ids[::-1], index)) == pytest.approx(expected)  # other ids: built again
    assert encoder.calls == 4 + len(texts) + 4
    # a text that differs in whitespace alone (mteb keeps a title's trailing space) is encoded again, alone
    spaced = HybridIndex(encoder, [texts[0] + " ", *texts[1:]], show_progress=False)
    encoder.calls = 0
    assert ndcg(encoder, (ids, spaced)) == pytest.approx(expected)
    assert encoder.calls == 1 + 4
    other_words = HybridIndex(encoder, [texts[0] + " more", *texts[1:]], show_progress=False)
    encoder.calls = 0
    assert ndcg(encoder, (ids, other_words)) == pytest.approx(expected)
    assert encoder.calls == len(texts) + 4


def test_build_beir_data_filters_negatives_with_a_teacher_folder(tmp_path, tiny_ce_path):
    """--absolute_margin with --filter_teacher: the written negatives are mine_hard_negatives' with the same
    filter and that folder as the teacher, and the filter's count is printed."""
    from hf_ragtrain.data.mining import mine_hard_negatives
    from hf_ragtrain.data.negative_filters import NegativeFilters
    from hf_ragtrain.scoring import load_teacher

    root = make_beir(tmp_path / "beir")
    out = tmp_path / "train.jsonl"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "recipes", "build_beir_data.py"), "--beir_dir", root, "--split", "train",
         "--output", str(out), "--method", "bm25", "--rank_start", "0", "--num_negatives", "5",
         "--strategy", "top", "--absolute_margin", "0", "--filter_teacher", tiny_ce_path,
         "--filter_teacher_max_length", "128"],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = load_beir(root, split="train")
    expected, stats = mine_hard_negatives(data.queries, data.corpus, data.qrels, method="bm25", rank_range=(0, 100),
                                          num_negatives=5, strategy="top", filters=NegativeFilters(absolute_margin=0),
                                          teacher=load_teacher(tiny_ce_path, max_length=128))
    written = {r["query_id"]: r["neg_ids"] for r in map(json.loads, out.read_text().splitlines())}
    assert written == expected and any(expected.values())
    assert stats.scored_pairs > 0 and stats.dropped_absolute_margin > 0  # the filter did remove some
    assert f"{stats.dropped_absolute_margin} within --absolute_margin" in proc.stdout


def test_build_beir_data_refuses_a_teacher_without_a_filter(tmp_path, tiny_ce_path):
    root = make_beir(tmp_path / "beir")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "recipes", "build_beir_data.py"), "--beir_dir", root,
         "--output", str(tmp_path / "x.jsonl"), "--method", "bm25", "--filter_teacher", tiny_ce_path],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "--absolute_margin" in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_recipes_beir_data_applies_the_false_negative_filters(tmp_path, tiny_ce_path):
    """--negatives_max_score in a recipe's BEIR data: the negatives are mine_hard_negatives' with that filter and
    the first-stage encoder's cosine, and the training data's card entry says what the filter removed."""
    from hf_ragtrain import DataArguments
    from hf_ragtrain.data.mining import load_encoder, mine_hard_negatives
    from hf_ragtrain.data.negative_filters import NegativeFilters
    from hf_ragtrain.data.sources import prepare_beir_rerank_data

    root = make_beir(tmp_path / "beir")
    data = load_beir(root, split="train")
    encoder = load_encoder(tiny_ce_path)
    unfiltered, _ = mine_hard_negatives(data.queries, data.doc_texts(), data.qrels, method="bm25", encoder=encoder,
                                        rank_range=(0, 100), num_negatives=10, seed=42, show_progress=False)
    # a threshold inside the candidates' cosines, so the filter has something to remove and something to keep
    cosines = [float(a @ b) for q, negs in unfiltered.items() for a, b in zip(
        CachingEncoder(encoder).encode([data.queries[q]] * len(negs)),
        CachingEncoder(encoder).encode([data.doc_texts()[d] for d in negs]))]
    threshold = float(np.median(cosines))
    args = DataArguments(beir_dir=root, beir_dev_queries=0, first_stage_model=tiny_ce_path, negatives_method="bm25",
                         negatives_rank_start=0, num_negatives=10, negatives_max_score=threshold)
    prepared = prepare_beir_rerank_data(args, seed=42)
    expected, stats = mine_hard_negatives(data.queries, data.doc_texts(), data.qrels, method="bm25", encoder=encoder,
                                          rank_range=(0, 100), num_negatives=10, seed=42, show_progress=False,
                                          filters=NegativeFilters(max_score=threshold))
    assert 0 < stats.dropped_max_score < len(cosines)
    assert prepared.mining["dropped_max_score"] == stats.dropped_max_score
    assert {r.query_id: r.neg_ids for r in prepared.train} == expected
    assert (f"removed {stats.dropped_max_score} candidates; {stats.short} queries got fewer than 10 negatives, "
            f"{stats.empty} none") in prepared.datasets[0]["source"]
