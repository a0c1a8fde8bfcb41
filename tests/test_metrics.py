"""Our IR metrics against pytrec_eval (the trec_eval code MTEB uses) and a hand-computed case."""

import math
import random

import pytest

from hf_ragtrain.evaluation.metrics import query_metrics, rank, ranking_metrics


def test_hand_computed_query():
    ranking = ["a", "b", "c", "d"]
    rels = {"b": 2, "d": 1, "z": 1}  # z never retrieved
    m = query_metrics(ranking, rels, k_values=(3,))
    dcg = 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg)
    assert m["map@3"] == pytest.approx((1 / 2) / 3)
    assert m["recall@3"] == pytest.approx(1 / 3)
    assert m["mrr@3"] == pytest.approx(1 / 2)
    assert m["hit_rate@3"] == 1.0
    assert query_metrics(ranking, rels, k_values=(1,))["hit_rate@1"] == 0.0  # "a" is not relevant


def test_ties_are_broken_by_descending_doc_id():
    assert rank({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]


def test_matches_pytrec_eval_on_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rnd = random.Random(0)
    qrels, run = {}, {}
    for q in range(40):
        docs = [f"d{i}" for i in range(30)]
        qrels[f"q{q}"] = {d: rnd.choice([1, 1, 2, 3]) for d in rnd.sample(docs, rnd.randint(1, 5))}
        run[f"q{q}"] = {d: round(rnd.random(), 2) for d in rnd.sample(docs, 25)}  # rounding makes ties
    ks = (1, 3, 10, 20)
    ours = ranking_metrics(run, qrels, ks)
    measures = {f"ndcg_cut.{','.join(map(str, ks))}", f"map_cut.{','.join(map(str, ks))}",
                f"recall.{','.join(map(str, ks))}", f"success.{','.join(map(str, ks))}"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for k in ks:
        for ours_name, trec_name in (("ndcg", "ndcg_cut"), ("map", "map_cut"), ("recall", "recall"),
                                    ("hit_rate", "success")):
            expected = sum(r[f"{trec_name}_{k}"] for r in ref.values()) / len(ref)
            assert ours[f"{ours_name}@{k}"] == pytest.approx(expected, abs=1e-9), (ours_name, k)
