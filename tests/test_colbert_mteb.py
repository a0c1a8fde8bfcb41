"""ColBERT through mteb: our search adapter against mteb's own MultiVectorEncoder wrapper on the saved
folder, and against MaxSim computed directly, for full-corpus retrieval and for reranking tasks."""

import pytest

from hf_ragtrain import ColbertEncoder, load_records, maxsim, ranking_metrics
from hf_ragtrain.data.beir import load_beir
from hf_ragtrain.evaluation.mteb_eval import (MtebColbert, beir_task, evaluate_saved_colbert, records_task,
                                              run_mteb)

from test_colbert import padded
from test_mteb import FAQ_DEV, faq_beir, ours


@pytest.fixture(scope="module")
def minilm_colbert(tmp_path_factory):
    """ColBERT over the real MiniLM (seeded projection), saved once for the module."""
    model = ColbertEncoder.from_pretrained("minilm", colbert_dim=32, query_max_length=16, document_max_length=64,
                                           skip_punctuation=True, query_expansion=True)
    folder = tmp_path_factory.mktemp("colbert")
    model.save_pretrained(str(folder))
    return model, str(folder)


def mteb_multi_vector(folder):
    from mteb.models import MultiVectorWrapper

    return MultiVectorWrapper(folder, device="cpu")


def test_full_corpus_retrieval_matches_maxsim_and_mtebs_multi_vector_wrapper(minilm_colbert, tmp_path):
    model, folder = minilm_colbert
    root = faq_beir(tmp_path / "faq", n_queries=6)
    data = load_beir(root, split="test")
    doc_ids = list(data.corpus)
    texts = data.doc_texts()
    qids = [q for q in data.queries if q in data.qrels]
    # the reference: MaxSim of every query against every document, scored in one piece
    full = maxsim(*padded(model.encode([data.queries[q] for q in qids], "query")),
                  *padded(model.encode([texts[d] for d in doc_ids], "document")))
    run = {q: {doc_ids[j]: float(full[i, j]) for j in range(len(doc_ids))} for i, q in enumerate(qids)}
    expected = ranking_metrics(run, data.qrels, (1, 3, 5, 10))

    adapter = MtebColbert(model, name="test/colbert", doc_chunk=50)  # blocks smaller than the corpus
    got = ours(run_mteb(adapter, [beir_task(root, "test", name="FaqTest")])["FaqTest"].metrics["test"])
    assert got == pytest.approx(expected, abs=1e-5)
    assert got["ndcg@10"] > 0.2  # MiniLM token vectors find FAQ answers even with a fresh projection
    theirs = run_mteb(mteb_multi_vector(folder), [beir_task(root, "test", name="FaqTest")])
    assert ours(theirs["FaqTest"].metrics["test"]) == pytest.approx(got, abs=1e-4)


def test_reranking_task_scores_each_querys_candidates_like_rerank_and_mteb(minilm_colbert, tmp_path):
    model, folder = minilm_colbert
    records = load_records(FAQ_DEV)[0][:8]
    # the reference: ColbertEncoder.rerank of each record's candidates, then our metrics
    run, qrels = {}, {}
    for r in records:
        candidates = [*r.pos, *r.neg]
        scores = model.rerank(r.query, candidates)
        run[r.query_id] = {f"{r.query_id}-{j}": float(s) for j, s in enumerate(scores)}
        qrels[r.query_id] = {f"{r.query_id}-{j}": 1 for j in range(len(r.pos))}
    expected = ranking_metrics(run, qrels, (1, 3, 5, 10))

    got = ours(run_mteb(MtebColbert(model, name="test/colbert"),
                        [records_task(records, name="FaqDev", split="dev")])["FaqDev"].metrics["dev"])
    assert got == pytest.approx(expected, abs=1e-5)
    theirs = run_mteb(mteb_multi_vector(folder), [records_task(records, name="FaqDev", split="dev")])
    assert ours(theirs["FaqDev"].metrics["dev"]) == pytest.approx(got, abs=1e-4)
    # the saved folder evaluates to the same numbers as the in-memory model
    saved = evaluate_saved_colbert(folder, [records_task(records, name="FaqDev", split="dev")],
                                   output_folder=str(tmp_path / "mteb"), name="test/saved")
    assert ours(saved["FaqDev"].metrics["dev"]) == pytest.approx(got, abs=1e-5)
    assert list((tmp_path / "mteb").rglob("FaqDev.json"))  # mteb's results layout


def test_reranking_rejects_candidates_missing_from_the_corpus(minilm_colbert):
    model, _ = minilm_colbert
    adapter = MtebColbert(model)
    adapter.corpus_ids, adapter.corpus_texts = ["a"], ["some text"]
    with pytest.raises(ValueError, match="not in the task's corpus"):
        adapter._rerank(["q1"], ["a query"], {"q1": ["a", "zzz"]}, top_k=10)



def test_evaluate_script_reranks_the_embedders_top_k_with_colbert(minilm_colbert, tmp_path):
    import json
    import os

    from conftest import run_script
    from hf_ragtrain.data.beir_pipeline import first_stage_run
    from hf_ragtrain.data.mining import load_encoder
    from hf_ragtrain.offline import resolve_model_path

    model, folder = minilm_colbert
    root = faq_beir(tmp_path / "faq", n_queries=4)
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "evaluate_mteb.py")
    proc = run_script(script, "--colbert", folder, "--colbert_rerank", "--top_k", "5", "--beir_dir", root,
                      "--output_folder", str(tmp_path / "res"), "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "r.json").read_text())
    # the reference: our own dense first stage, then ColbertEncoder.rerank of each query's top 5
    data = load_beir(root, split="test")
    first = first_stage_run(load_encoder(resolve_model_path("minilm")), data, top_k=5)
    texts = data.doc_texts()
    run = {}
    for qid, docs in first.items():
        ids = list(docs)
        run[qid] = dict(zip(ids, model.rerank(data.queries[qid], [texts[d] for d in ids]).tolist()))
    expected = ranking_metrics(run, data.qrels, (1, 3, 5))
    (reranked,), (first_stage,) = got["reranked"].values(), got["first_stage"].values()
    assert ours(reranked["test"], ks=(1, 3, 5)) == pytest.approx(expected, abs=1e-4)
    assert ours(first_stage["test"], ks=(1, 3, 5)) == pytest.approx(
        ranking_metrics(first, data.qrels, (1, 3, 5)), abs=1e-5)
