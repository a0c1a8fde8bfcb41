"""BEIR folder -> training data -> two-stage evaluation, on a tiny folder built in the test."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from hf_ragtrain.data.beir import load_beir
from hf_ragtrain.data.beir_pipeline import (CachingEncoder, dev_records_from_run, evaluate_beir_reranking,
                                            first_stage_run, split_dev_queries)
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


def test_two_stage_evaluation_equals_a_direct_computation(tmp_path, tiny_ce_path):
    root = make_beir(tmp_path)
    data = load_beir(root, split="test")
    encoder = CachingEncoder(HashEncoder())
    model, tok = load_cross_encoder(tiny_ce_path)
    args = SimpleNamespace(beir_dir=root, beir_eval_split="test", rerank_top_k=3, first_stage_model="unused")
    out = evaluate_beir_reranking(model, tok, args, max_length=32, first_stage_cache=encoder)

    first = first_stage_run(encoder, data, top_k=3)
    assert all(len(c) == 3 for c in first.values())
    assert out["first_stage"] == ranking_metrics(first, data.qrels, (1, 3, 5, 10, 100))
    texts = data.doc_texts()
    rerun = {q: dict(zip(c, score_pairs(model, tok, [data.queries[q]] * len(c), [texts[d] for d in c],
                                        max_length=32).tolist())) for q, c in first.items()}
    expected = ranking_metrics(rerun, data.qrels, (1, 3, 5, 10, 100))
    assert out["reranked"] == pytest.approx(expected)
    assert out["settings"]["pairs"] == 12


def test_recipe_with_beir_dir(tmp_path, tiny_ce_path):
    root = make_beir(tmp_path / "beir")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "recipes", "train_reranker.py"), "--output_dir", str(out),
         "--model_name_or_path", tiny_ce_path, "--first_stage_model", tiny_ce_path, "--beir_dir", root,
         "--beir_dev_queries", "1", "--negatives_method", "bm25", "--negatives_rank_start", "0",
         "--num_negatives", "3", "--train_group_size", "3", "--max_steps", "2", "--rerank_top_k", "4",
         "--max_length", "32"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["settings"]["queries"] == 4 and results["settings"]["top_k"] == 4
    assert 0 <= results["reranked"]["ndcg@10"] <= 1 and "first_stage" in results
    assert "after_ndcg@10" in results["after"]  # the held-out dev query was evaluated
    card = (out / "README.md").read_text()
    assert "## Reranking the first stage's top 4 with this model (BEIR test split, 4 queries)" in card
    assert "## First stage alone" in card
