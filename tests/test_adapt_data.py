"""Domain adaptation's data side: corpora from documents, inverse-cloze queries, the round-trip filter,
mining with false negatives skipped, and the cleaning of written questions."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from hf_ragtrain.data.consistency import round_trip_filter, source_ranks
from hf_ragtrain.data.documents import load_corpus, split_passages
from hf_ragtrain.data.errors import DataFormatError
from hf_ragtrain.data.generated import GeneratedQuery, read_generated, write_generated
from hf_ragtrain.data.generated_records import mine_generated
from hf_ragtrain.data.hybrid import HybridIndex
from hf_ragtrain.data.inverse_cloze import inverse_cloze_queries, split_sentences
from hf_ragtrain.data.mining import BM25Stats
from hf_ragtrain.modeling.question_writer import clean_question


class WordEncoder:
    """A deterministic bag-of-words encoder: each word adds a fixed random vector (so cosines are known)."""

    def __init__(self, dim: int = 64):
        self.dim = dim

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim)
        for word in re.findall(r"\w+", text.lower()):
            v += np.random.default_rng(sum(map(ord, word)) * 7919 + len(word)).standard_normal(self.dim)
        return v

    def encode(self, texts, **kwargs):
        out = np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


DOCS = [
    ("d0", "Sorting", "Lists can be sorted in place. The sort method orders a list by a key function you give. "
                      "It is stable, so equal items keep their order."),
    ("d1", "Copying", "A shallow copy shares the inner objects. Slicing a list gives a new list with the same items. "
                      "The copy module makes deep copies of nested structures."),
    ("d2", "Lambdas", "Small functions can be written inline. A lambda expression defines an anonymous function in "
                      "one line. It can hold a single expression only."),
    ("d3", "Defaults", "Default values are evaluated once. A mutable default argument is shared between calls of "
                       "the function. Use None and create the object inside."),
    ("d4", "Modules", "Modules are imported once per process. The import system caches loaded modules in a dict. "
                      "Reloading needs importlib explicitly."),
]


def corpus_file(tmp_path, docs=DOCS):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    return path


# ---------------------------------------------------------------------- corpora
def test_corpus_from_jsonl_and_beir_folder(tmp_path):
    path = corpus_file(tmp_path)
    corpus = load_corpus(path)
    assert corpus.ids == [d[0] for d in DOCS] and corpus.texts == [d[2] for d in DOCS]
    assert corpus.full_texts()[0] == f"{DOCS[0][1]} {DOCS[0][2]}"
    (tmp_path / "qrels").mkdir()  # a BEIR folder: only corpus.jsonl is read, not queries nor qrels
    (tmp_path / "queries.jsonl").write_text("not json at all\n")
    assert load_corpus(tmp_path).ids == corpus.ids


def test_corpus_from_a_folder_of_text_files(tmp_path):
    docs = tmp_path / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "guide" / "install.md").write_text("# Install\n\nRun pip install.\nThen import it.\n\n## Upgrade\n\n"
                                               "Run pip install -U.\n")
    (docs / "notes.txt").write_text("First paragraph here.\n\nSecond paragraph here.\n")
    (docs / "logo.png").write_bytes(b"\x89PNG")
    (docs / ".hidden.md").write_text("# secret\n\nnot read\n")
    corpus = load_corpus(docs, max_words=200)
    assert corpus.ids == ["guide/install.md#0", "guide/install.md#1", "notes.txt#0"]
    assert corpus.titles == ["install: Install", "install: Upgrade", "notes"]
    assert corpus.texts == ["Run pip install. Then import it.", "Run pip install -U.",
                            "First paragraph here. Second paragraph here."]
    assert corpus.skipped == {".png files": 1}
    assert "1 .png files" in corpus.describe()


def test_split_passages_packs_paragraphs_and_cuts_long_ones_at_sentences():
    para = " ".join(f"Sentence number {i} has six words." for i in range(6))  # 36 words: cut at sentences
    text = f"Title\n=====\n\nShort one.\n\nShort two.\n\n{para}\n\nNext\n----\n\nLast words.\n"
    pieces = list(split_passages(text, max_words=12))
    assert [h for h, _ in pieces] == ["Title"] * 4 + ["Next"]
    # the long paragraph is cut into two sentences (12 words) a piece, which do not fit beside the two short
    # paragraphs (4 words); the next section starts a passage of its own
    assert [p for _, p in pieces] == ["Short one. Short two.",
                                      "Sentence number 0 has six words. Sentence number 1 has six words.",
                                      "Sentence number 2 has six words. Sentence number 3 has six words.",
                                      "Sentence number 4 has six words. Sentence number 5 has six words.", "Last words."]


@pytest.mark.parametrize("content, line, message", [
    ("", None, "the corpus is empty"),
    ('{"_id": "a", "text": "x"}\n{"_id": "b", "title": "", "text": ""}\n', 2, "has no text"),
    ('{"_id": "a", "text": "x"}\n\n{"_id": "a", "text": "y"}\n', 3, "duplicate document id 'a'"),
    ('{"_id": "a", "title": "t"}\n', 1, "missing required string"),
])
def test_bad_jsonl_corpora_name_the_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(DataFormatError) as err:
        load_corpus(path)
    assert err.value.line == line and message in str(err.value) and str(path) in str(err.value)


def test_a_folder_without_readable_files_is_an_error(tmp_path):
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataFormatError, match=r"no readable text file .*1 \.pdf files"):
        load_corpus(tmp_path)
    (tmp_path / "empty.md").write_text("\n\n")
    with pytest.raises(DataFormatError, match="hold no text"):
        load_corpus(tmp_path)
    (tmp_path / "bad.txt").write_bytes(b"line one\nline \xff two\n")
    with pytest.raises(DataFormatError, match="not UTF-8") as err:
        load_corpus(tmp_path)
    assert err.value.line == 2 and err.value.path.endswith("bad.txt")


def test_missing_corpus_path():
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_corpus("/nonexistent/corpus")


# ---------------------------------------------------------------------- inverse cloze
def test_inverse_cloze_removes_the_query_sentence_from_its_positive(tmp_path):
    corpus = load_corpus(corpus_file(tmp_path))
    queries, eligible = inverse_cloze_queries(corpus.ids, corpus.titles, corpus.texts, 3, seed=1)
    assert eligible == 5 and len(queries) == 3 and len({q.doc_id for q in queries}) == 3
    for q in queries:
        i = corpus.ids.index(q.doc_id)
        sentences = split_sentences(corpus.texts[i])
        assert q.text in sentences[1:]  # never the first sentence
        rest = " ".join(s for s in sentences if s != q.text)
        assert q.positive == f"{corpus.titles[i]} {rest}" and q.text not in q.positive
    again, _ = inverse_cloze_queries(corpus.ids, corpus.titles, corpus.texts, 3, seed=1)
    assert again == queries
    assert inverse_cloze_queries(corpus.ids, corpus.titles, ["Too short. Two."] * 5, 3)[0] == []


def test_generated_queries_round_trip_through_jsonl(tmp_path):
    qs = [GeneratedQuery("q1", "a query", "d0", "its passage", "llm")]
    write_generated(qs, str(tmp_path / "g.jsonl"))
    assert read_generated(str(tmp_path / "g.jsonl")) == qs
    (tmp_path / "bad.jsonl").write_text('{"query_id": "q1", "text": "", "doc_id": "d", "positive": "p", '
                                        '"generator": "g"}\n')
    with pytest.raises(DataFormatError, match="line 1, field 'text'"):
        read_generated(str(tmp_path / "bad.jsonl"))


# ---------------------------------------------------------------------- round trip and mining
def brute_force_rank(encoder, texts, query, source, positive, dw, bw, stats):
    """The source's rank with the corpus copied, the source's text replaced by its positive, every
    document scored pair by pair (no index)."""
    docs = list(texts)
    docs[source] = positive
    q = encoder.encode([query])[0]
    scores = np.array([dw * float(q @ encoder.encode([d])[0]) + bw * stats.score_pairs([query], [d])[0] for d in docs])
    return 1 + int((np.delete(scores, source) >= scores[source]).sum())


def test_source_ranks_and_the_filter_match_a_hand_computation(tmp_path):
    corpus = load_corpus(corpus_file(tmp_path))
    texts = corpus.full_texts()
    encoder = WordEncoder()
    index = HybridIndex(encoder, texts, show_progress=False)
    stats = BM25Stats.of(texts)
    queries = [GeneratedQuery("a", "mutable default argument shared between calls", "d3", texts[3], "llm"),
               GeneratedQuery("b", "mutable default argument shared between calls", "d0", texts[0], "llm"),
               GeneratedQuery("c", "import system caches loaded modules", "d4", "Modules Reloading needs importlib.",
                              "inverse-cloze")]
    position = {d: i for i, d in enumerate(corpus.ids)}
    for dw, bw in ((1.0, 0.0), (0.0, 1.0), (2.0, 0.3)):
        ranks = source_ranks(index, queries, position, dw, bw)
        expected = [brute_force_rank(encoder, texts, q.text, position[q.doc_id], q.positive, dw, bw, stats)
                    for q in queries]
        assert ranks.tolist() == expected
    ranks = source_ranks(index, queries, position, 0.0, 1.0)
    assert ranks[0] == 1 and ranks[1] > 1  # the query was written from d3, not from d0
    kept, counts = round_trip_filter(queries, ranks, top_k=1)
    assert [q.query_id for q in kept] == [q.query_id for q, r in zip(queries, ranks) if r <= 1]
    assert counts.as_dict()["llm"] == {"made": 2, "kept": 1}
    assert round_trip_filter(queries, ranks, top_k=0)[0] == queries


def test_mining_skips_candidates_scored_above_the_positive(tmp_path):
    corpus = load_corpus(corpus_file(tmp_path))
    texts = corpus.full_texts()
    index = HybridIndex(WordEncoder(), texts, show_progress=False)
    stats = BM25Stats.of(texts)
    # the positive is a weak passage, so candidates that fit the query better are skipped as likely false negatives
    query = GeneratedQuery("q", "lambda anonymous function", "d2", "Lambdas It can hold one thing.", "llm")
    rows, counts = mine_generated(index, [query], corpus.ids, texts, 1.0, 0.5, top_k=5, num_negatives=2)
    pos_score = 1.0 * float(WordEncoder().encode([query.text])[0] @ WordEncoder().encode([query.positive])[0]) \
        + 0.5 * stats.score_pairs([query.text], [query.positive])[0]
    others = [i for i in range(5) if i != 2]
    scores = {i: float(WordEncoder().encode([query.text])[0] @ WordEncoder().encode([texts[i]])[0])
              + 0.5 * stats.score_pairs([query.text], [texts[i]])[0] for i in others}
    below = sorted((i for i in others if scores[i] < pos_score), key=lambda i: -scores[i])
    assert counts.skipped == sum(scores[i] >= pos_score for i in others)
    if below:
        (row,) = rows
        assert row["neg_ids"] == [corpus.ids[i] for i in below[:2]] and row["pos_ids"] == ["d2"]
        assert row["pos_first_stage_scores"] == pytest.approx([pos_score])
        assert row["neg_first_stage_scores"] == pytest.approx([scores[i] for i in below[:2]])
    else:
        assert rows == [] and counts.without_negatives == 1


# ---------------------------------------------------------------------- written questions
@pytest.mark.parametrize("output, text, problem", [
    ("Query: How is a list sorted?\nMore text", "How is a list sorted?", None),
    ('"What does a lambda define?"', "What does a lambda define?", None),
    ("  \n\n", "", "empty"),
    ("Sorting lists", "Sorting lists", "fewer than 3 words"),
    ("the sort method orders a list", "the sort method orders a list", "copied from the passage"),
    ("word " * 41, ("word " * 41).strip(), "more than 40 words"),
])
def test_clean_question(output, text, problem):
    passage = "Lists can be sorted in place. The sort method orders a list by a key function."
    assert clean_question(output, passage) == (text, problem)


def test_round_trip_keeps_more_as_k_grows(tmp_path):
    corpus = load_corpus(corpus_file(tmp_path))
    rng = random.Random(0)
    queries = [GeneratedQuery(f"q{i}", " ".join(rng.sample(corpus.texts[i].split(), 4)), corpus.ids[i],
                              corpus.full_texts()[i], "x") for i in range(5)]
    ranks = source_ranks(HybridIndex(WordEncoder(), corpus.full_texts(), show_progress=False), queries,
                         {d: i for i, d in enumerate(corpus.ids)}, 1.0, 0.1)
    kept = [len(round_trip_filter(queries, ranks, k)[0]) for k in (1, 2, 3, 5)]
    assert kept == sorted(kept) and kept[-1] == 5 and kept == [int((ranks <= k).sum()) for k in (1, 2, 3, 5)]


def test_the_report_warns_for_each_adapted_system_behind_what_it_replaces_and_when_the_output_is_not_best():
    from hf_ragtrain.runner.adapt_report import warnings_of

    def table(**ndcg):
        names = {"base_embedder": "base embedder", "base_hybrid": "base hybrid", "adapted": "adapted embedder",
                 "adapted_hybrid": "adapted hybrid (first stage)", "reranked": "reranked (first stage top 30)"}
        return {names[k]: {"ndcg@10": v} for k, v in ndcg.items()}

    good = table(base_embedder=0.5, base_hybrid=0.6, adapted=0.55, adapted_hybrid=0.65, reranked=0.7)
    assert warnings_of({"heldout": good}) == []
    # SciFact's pattern: adapted hybrid below the base hybrid, reranker between the two
    bad = table(base_embedder=0.645, base_hybrid=0.737, adapted=0.647, adapted_hybrid=0.728, reranked=0.730)
    (first, best) = warnings_of({"heldout": bad})
    assert "adapted hybrid (first stage) is behind the base hybrid: nDCG@10 0.7280 against 0.7370" in first
    assert best.endswith("the best system is the base hybrid (nDCG@10 0.7370), not the pipeline's output, the "
                         "reranker (0.7300): ship the base hybrid")
    worst = table(base_embedder=0.645, base_hybrid=0.6, adapted=0.64, adapted_hybrid=0.7, reranked=0.69)
    assert [w.split(" is behind")[0] for w in warnings_of({"heldout": worst})] == [
        "on held-out generated queries the adapted embedder", "on held-out generated queries the reranker",
        "on held-out generated queries the best system is the adapted hybrid (first stage) (nDCG@10 0.7000), not the "
        "pipeline's output, the reranker (0.6900): ship the adapted hybrid (first stage)"]
    # the bundled FAQ's pattern: each stage beats what it replaces, yet the embedder alone beats the pipeline
    level = table(base_embedder=0.8466, base_hybrid=0.7877, adapted=0.8471, adapted_hybrid=0.8340, reranked=0.8374)
    assert warnings_of({"heldout": level, "beir": {}}) == [
        "on held-out generated queries the best system is the adapted embedder (nDCG@10 0.8471), not the pipeline's "
        "output, the reranker (0.8374): ship the adapted embedder"]
