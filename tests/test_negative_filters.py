"""Score filters for mined negatives: hf_ragtrain.data.negative_filters and their use in mining."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from hf_ragtrain.data.mining import mine_hard_negatives
from hf_ragtrain.data.negative_filters import NegativeFilters
from hf_ragtrain.scoring import FunctionTeacher


class CrcEncoder:
    """Deterministic pseudo-embeddings seeded by each text's crc32 (not normalised)."""

    def encode(self, texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False):
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8).astype(np.float32)
                         for t in texts])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def graded(n: int) -> dict[str, str]:
    """Docs where d{i} holds 'alpha' n - i times: the BM25 rank of d{i} for 'alpha' is i."""
    return {f"d{i:02d}": ("alpha " * (n - i) + "filler " * i).strip() for i in range(n)}


def test_reasons_follow_the_formulas_in_order():
    filters = NegativeFilters(absolute_margin=0.05, relative_margin=0.1, max_score=0.85)
    # positive 0.8: max drops > 0.85; absolute drops > 0.75; relative drops > 0.72
    assert filters.reasons(0.8, np.array([0.9, 0.79, 0.73, 0.72, 0.5])) == [
        "max_score", "absolute_margin", "relative_margin", None, None]
    # a negative positive score (a cross-encoder logit): the margin is a share of its size, |p|
    assert NegativeFilters(relative_margin=0.5).reasons(-2.0, np.array([-2.5, -3.0, -3.5])) == [
        "relative_margin", None, None]
    assert NegativeFilters(absolute_margin=0.0).reasons(1.0, np.array([1.0, 1.01])) == [None, "absolute_margin"]
    assert not NegativeFilters().active and NegativeFilters(max_score=0.0).active


@pytest.mark.parametrize("bad, match", [(dict(absolute_margin=-0.1), "absolute_margin"),
                                        (dict(relative_margin=1.0), "relative_margin"),
                                        (dict(relative_margin=-0.2), "relative_margin")])
def test_bad_filter_values_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        NegativeFilters(**bad)


def test_encoder_cosine_filter_matches_brute_force():
    corpus = {f"doc{i}": f"passage number {i}" for i in range(40)}
    queries = {"q1": "first query", "q2": "second query"}
    qrels = {"q1": {"doc3": 1, "doc7": 1}, "q2": {"doc11": 1}}
    encoder = CrcEncoder()
    window = dict(method="dense", encoder=encoder, rank_range=(0, 40), num_negatives=40, strategy="top",
                  show_progress=False)
    unfiltered, _ = mine_hard_negatives(queries, corpus, qrels, **window)
    filters = NegativeFilters(absolute_margin=0.1, max_score=0.6)
    filtered, stats = mine_hard_negatives(queries, corpus, qrels, filters=filters, **window)

    vec = {t: unit(v) for t, v in zip(corpus.values(), encoder.encode(list(corpus.values())))}
    dropped = {"max_score": 0, "absolute_margin": 0}
    for qid, text in queries.items():
        q = unit(encoder.encode([text])[0])
        weakest = min(float(vec[corpus[d]] @ q) for d in qrels[qid])
        expected = []
        for doc in unfiltered[qid]:
            score = float(vec[corpus[doc]] @ q)
            if score > 0.6:
                dropped["max_score"] += 1
            elif score > weakest - 0.1:
                dropped["absolute_margin"] += 1
            else:
                expected.append(doc)
        assert filtered[qid] == expected
    assert dropped["max_score"] + dropped["absolute_margin"] > 0  # the case tests something
    assert (stats.dropped_max_score, stats.dropped_absolute_margin, stats.dropped_relative_margin) == (
        dropped["max_score"], dropped["absolute_margin"], 0)
    assert stats.scored_pairs == 3 + sum(len(v) for v in unfiltered.values())
    assert stats.negatives == sum(len(v) for v in filtered.values())


def test_teacher_scores_drive_the_filter_for_bm25_mining():
    corpus = graded(12)
    teacher_score = {text: (5.0 if doc in ("d04", "d06") else 1.0) for doc, text in corpus.items()}
    teacher_score[corpus["d00"]] = 4.0  # the positive
    asked = []

    def score(queries, docs):
        asked.extend(docs)
        return [teacher_score[d] for d in docs]

    negs, stats = mine_hard_negatives({"q": "alpha"}, corpus, {"q": {"d00": 1}}, method="bm25",
                                      rank_range=(0, 8), num_negatives=10, strategy="top",
                                      filters=NegativeFilters(absolute_margin=0.5),
                                      teacher=FunctionTeacher(score, "hand"))
    # d04 and d06 outscore the positive in the teacher's eyes: dropped; the rest is 3 below it
    assert negs == {"q": ["d01", "d02", "d03", "d05", "d07"]}
    assert stats.dropped_absolute_margin == 2 and stats.dropped_by_filters == 2 and stats.short == 1
    # the teacher saw the positive and the window's seven candidates, nothing else
    assert sorted(asked) == sorted(corpus[f"d{i:02d}"] for i in range(8))


def test_teacher_without_a_filter_is_refused():
    with pytest.raises(ValueError, match="absolute_margin"):
        mine_hard_negatives({"q": "alpha"}, graded(5), {"q": {"d00": 1}}, method="bm25",
                            teacher=FunctionTeacher(lambda q, d: [0.0] * len(d), "zero"))
