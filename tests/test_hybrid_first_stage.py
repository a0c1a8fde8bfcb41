"""The hybrid first stage a reranker keeps: BM25 with saved corpus statistics, the weight fit, the
cross-fitted records, and a saved reranker that adds cosine and BM25 to its logit, each against a
computation made another way (the BM25 formula by hand, a known generating model, sentence-transformers)."""

import json
import math
import os

import numpy as np
import pytest
import torch

from hf_ragtrain import GroupDataset, RerankCollator, Reranker, RerankerTrainingArguments, RerankTrainer, load_records
from hf_ragtrain.data.cross_fit import assign_folds, first_stage_records
from hf_ragtrain.data.hybrid import HybridIndex, QueryCandidates
from hf_ragtrain.data.mining import BM25, BM25Stats, tokenize
from hf_ragtrain.data.records import parse_record
from hf_ragtrain.modeling.cross_encoder import load_cross_encoder
from hf_ragtrain.modeling.fusion import BM25_FILE, FUSION_FILE, FirstStageFusion, fit_fusion_weights

from conftest import TEXTS, tiny_records
from test_fusion import logits_of, st_cosine

DOCS = TEXTS[1::2] + TEXTS[8:]


def bm25_by_hand(query, doc, collection, k1=0.9, b=0.4):
    """Okapi BM25 with the Lucene idf, written out from the formula."""
    tokens = [tokenize(d) for d in collection]
    avgdl = sum(map(len, tokens)) / len(tokens)
    words = tokenize(doc)
    total = 0.0
    for term in tokenize(query):
        df = sum(term in t for t in tokens)
        tf = words.count(term)
        if tf:
            idf = math.log(1 + (len(collection) - df + 0.5) / (df + 0.5))
            total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(words) / avgdl))
    return total


def test_bm25_stats_score_any_pair_as_the_index_does_and_survive_saving(tmp_path):
    stats = BM25(DOCS).stats()
    queries = ["how do i sort a list", "lambda function", "nothing matches zzz"]
    for query in queries:
        np.testing.assert_allclose(stats.score_pairs([query] * len(DOCS), DOCS), BM25(DOCS).get_scores(query))
    new_doc = "a brand new sort of lambda function text"  # not in the collection: its own tf and length
    assert stats.score_pairs(["lambda sort"], [new_doc])[0] == pytest.approx(_unseen(stats, "lambda sort", new_doc))
    assert _unseen(stats, "lambda sort", new_doc) > 0
    stats.save(str(tmp_path / "bm25.json"))
    assert BM25Stats.load(str(tmp_path / "bm25.json")) == stats
    (tmp_path / "bad.json").write_text('{"df": []}')
    with pytest.raises(ValueError, match="bad.json: expected BM25 statistics"):
        BM25Stats.load(str(tmp_path / "bad.json"))


def _unseen(stats, query, doc):
    """BM25 of a document outside the collection: the collection's df and avgdl, the document's own tf and length."""
    words, total = tokenize(doc), 0.0
    for term in tokenize(query):
        tf = words.count(term)
        if tf:
            df = stats.df.get(term, 0)
            idf = math.log(1 + (stats.num_docs - df + 0.5) / (df + 0.5))
            total += idf * tf * 1.9 / (tf + 0.9 * (0.6 + 0.4 * len(words) / stats.avgdl))
    return total


def test_bm25_index_matches_the_formula_by_hand():
    for query in ("how do i sort a list", "lambda function"):
        np.testing.assert_allclose(BM25(DOCS).get_scores(query), [bm25_by_hand(query, d, DOCS) for d in DOCS])


def test_the_weight_fit_recovers_the_weights_that_generated_the_judgements():
    rng = np.random.default_rng(0)
    true = np.array([4.0, -1.5, 0.5])
    features, relevant = [], []
    for _ in range(3000):
        x = rng.normal(size=(12, 3))
        p = np.exp(x @ true - (x @ true).max())
        relevant.append(np.eye(12, dtype=bool)[rng.choice(12, p=p / p.sum())])  # one relevant, drawn from the model
        features.append(x)
    fitted = fit_fusion_weights(features, relevant)
    np.testing.assert_allclose(fitted, true, atol=0.25)
    # the optimum does not depend on where the fit starts (the objective is convex)
    np.testing.assert_allclose(fit_fusion_weights(features, relevant, init=[10.0, 3.0, -2.0]), fitted, atol=1e-4)
    with pytest.raises(ValueError, match="no query has a relevant candidate"):
        fit_fusion_weights([np.ones((3, 2))], [np.zeros(3, dtype=bool)])


def test_folds_are_balanced_seeded_and_independent_of_order():
    qids = [f"q{i}" for i in range(11)]
    folds = assign_folds(qids, 3, seed=7)
    assert sorted(np.bincount(list(folds.values()))) == [3, 4, 4]
    assert assign_folds(list(reversed(qids)), 3, seed=7) == folds
    assert assign_folds(qids, 3, seed=8) != folds
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(qids, 1, seed=0)


def test_first_stage_records_keep_the_best_non_relevant_candidates_with_their_scores():
    doc_ids = ["a", "b", "c", "d", "e"]
    texts = ["alpha", "beta", "", "delta", "epsilon"]  # "c" has no text
    cand = QueryCandidates(index=np.array([0, 1, 2, 3, 4]), dense=np.array([0.9, 0.8, 0.95, 0.1, 0.5]),
                           bm25=np.array([0.0, 2.0, 0.0, 10.0, 1.0]))
    rows, counts = first_stage_records({"q": "query"}, {"q": {"a": 2, "e": 1}}, {"q": cand}, doc_ids, texts,
                                       dense_weight=10.0, bm25_weight=0.5, num_negatives=2, top_k=4)
    # fused: a 9, b 9, c 9.5, d 6, e 5.5 -> top 4: c, a, b, d; non-relevant with text: b, d
    (row,) = rows
    assert row["pos_ids"] == ["a", "e"] and row["pos_labels"] == [2, 1]
    assert row["neg_ids"] == ["b", "d"] and row["neg_first_stage_scores"] == pytest.approx([9.0, 6.0])
    assert row["pos_first_stage_scores"] == pytest.approx([9.0, 5.5])
    assert counts.empty_documents == 1 and counts.positives_retrieved == 1 and counts.positives == 2
    record = parse_record(row)
    assert record.neg_first_stage_scores == pytest.approx([9.0, 6.0])


def test_the_hybrid_index_ranks_by_weighted_cosine_plus_bm25(tiny_encoder_path):
    queries = ["how do i sort a dictionary by value", "what is a lambda expression"]
    index = HybridIndex(tiny_encoder_path, DOCS, show_progress=False)
    scores, positions = index.search(queries, top_k=4, dense_weight=3.0, bm25_weight=0.7)
    for i, query in enumerate(queries):
        full = 3.0 * st_cosine(tiny_encoder_path, [query] * len(DOCS), DOCS) + 0.7 * BM25(DOCS).get_scores(query)
        np.testing.assert_allclose(scores[i], np.sort(full)[::-1][:4], atol=1e-5)
        assert list(positions[i]) == list(np.argsort(-full, kind="stable")[:4])
    (cand,) = index.features(queries[:1], top_k=2, always=[[5]])
    lexical = BM25(DOCS).get_scores(queries[0])
    assert 5 in cand.index and len(set(cand.index)) == len(cand.index)
    np.testing.assert_allclose(cand.bm25, lexical[cand.index])
    # a BM25 index built once can serve several encoders' indexes; one of other texts is refused
    shared = HybridIndex(tiny_encoder_path, DOCS, show_progress=False, vectors=index.vectors, bm25=BM25(DOCS))
    np.testing.assert_allclose(shared.search(queries, 4, 3.0, 0.7)[0], scores)
    with pytest.raises(ValueError, match="BM25 index of 2 documents"):
        HybridIndex(None, DOCS, bm25=BM25(DOCS[:2]))


def test_records_carry_first_stage_scores_into_the_loss_instead_of_the_fusion(tiny_encoder_path, tmp_path):
    rows = tiny_records(4)
    for i, row in enumerate(rows):
        row["pos_first_stage_scores"] = [float(i)]
        row["neg_first_stage_scores"] = [0.5 * j - i for j in range(len(row["neg"]))]
    records = load_records(rows)[0]
    model, tokenizer = load_cross_encoder(tiny_encoder_path, attn_implementation="eager")
    fusion = FirstStageFusion(weight=100.0, source=tiny_encoder_path, name="tiny")  # must not be used in training
    args = RerankerTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                                     per_device_train_batch_size=2, save_strategy="no")
    dataset = GroupDataset(records, group_size=3)
    collator = RerankCollator(tokenizer, max_length=32, micro_batch_tokens=None)
    trainer = RerankTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                            processing_class=tokenizer, first_stage=fusion)
    items = [dataset[0], dataset[1]]
    for item, rec in zip(items, records[:2]):  # each document keeps its own score through the sampling
        own = dict(zip([*rec.pos, *rec.neg], [*rec.pos_first_stage_scores, *rec.neg_first_stage_scores]))
        assert item["first_stage_scores"] == [own[d] for d in item["docs"]]
    batch = collator(items)
    loss = trainer.compute_loss(trainer.model, batch).item()
    fused = (logits_of(trainer.model, tokenizer, batch["pair_queries"], batch["pair_docs"]).reshape(2, 3)
             + np.array([item["first_stage_scores"] for item in items]))
    assert loss == pytest.approx(np.mean([np.log(np.exp(r).sum()) - r[0] for r in fused]), abs=1e-4)
    with pytest.raises(ValueError, match="no first stage is given to add at inference"):
        RerankTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=tokenizer)
    partly = GroupDataset(records + load_records(tiny_records(1))[0], group_size=3)
    with pytest.raises(ValueError, match="4 of 5 training records carry first-stage scores"):
        RerankTrainer(model=model, args=args, train_dataset=partly, data_collator=collator,
                      processing_class=tokenizer, first_stage=fusion)


def test_a_saved_hybrid_reranker_adds_weighted_cosine_and_bm25(tiny_encoder_path, tmp_path):
    records = load_records(tiny_records(4))[0]
    stats = BM25(DOCS).stats()
    fusion = FirstStageFusion(weight=2.0, source=tiny_encoder_path, name="tiny", bm25_weight=0.3, bm25=stats)
    model, tokenizer = load_cross_encoder(tiny_encoder_path, attn_implementation="eager")
    args = RerankerTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                                     per_device_train_batch_size=2, save_strategy="no", max_steps=1)
    trainer = RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3),
                            data_collator=RerankCollator(tokenizer, max_length=32, micro_batch_tokens=None),
                            processing_class=tokenizer, first_stage=fusion)
    folder = str(tmp_path / "saved")
    trainer.save_model(folder)
    saved = json.loads(open(os.path.join(folder, FUSION_FILE)).read())
    assert saved["bm25_weight"] == 0.3 and saved["bm25"] == BM25_FILE and "0.3 * BM25" in saved["score"]
    queries = [r.query for r in records for _ in (*r.pos, *r.neg)]
    docs = [d for r in records for d in (*r.pos, *r.neg)]
    expected = (logits_of(trainer.model, tokenizer, queries, docs) + 2.0 * st_cosine(tiny_encoder_path, queries, docs)
                + 0.3 * np.array([bm25_by_hand(q, d, DOCS) if d in DOCS else _unseen(stats, q, d)
                                  for q, d in zip(queries, docs)]))
    scores = Reranker.from_pretrained(folder, dtype=torch.float32, max_length=32).compute_score(list(zip(queries, docs)))
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    os.remove(os.path.join(folder, BM25_FILE))
    with pytest.raises(FileNotFoundError, match="the BM25 statistics.*missing"):
        FirstStageFusion.from_folder(folder)


def test_stemmed_bm25_matches_word_forms_and_keeps_its_language_when_saved(tmp_path):
    docs = ["the cells were running studies", "a protein study of one cell", "nothing related here"]
    plain, stemmed = BM25(docs), BM25(docs, language="english")
    assert plain.get_scores("cells studies")[1] == 0.0 and stemmed.get_scores("cells studies")[1] > 0
    stats = stemmed.stats()
    assert stats.language == "english"
    np.testing.assert_allclose(stats.score_pairs(["cell studies"] * 3, docs), stemmed.get_scores("cell studies"))
    stats.save(str(tmp_path / "bm25.json"))
    loaded = BM25Stats.load(str(tmp_path / "bm25.json"))
    assert loaded == stats and "run" in loaded.df and "running" not in loaded.df
    with pytest.raises(ValueError, match="no Snowball stemmer for the language 'klingon'"):
        BM25(docs, language="klingon")
