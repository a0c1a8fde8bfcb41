"""recipes/train_pipeline.py end to end on a small BEIR folder made from the bundled FAQ data, with the
offline MiniLM and a few training steps: every stage's output, the cross-fitted first-stage scores
against a computation made apart (sentence-transformers encode + BM25), the report against mteb's own
result files, and a rerun that skips every stage and leaves every file as it was."""

import hashlib
import json
import os

import numpy as np
import pytest

from hf_ragtrain import Reranker, load_records
from hf_ragtrain.data.mining import BM25Stats
from hf_ragtrain.runner.two_stage_report import build_report, markdown

from conftest import run_script
from test_fusion import st_cosine

pytestmark = pytest.mark.long  # several processes or whole recipes: `pytest -m long` (CI runs it)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--dev_queries", "2", "--top_k", "8", "--num_negatives", "4",
         "--retriever_args", "--max_steps 2 --train_group_size 2 --per_device_train_batch_size 4 --passage_max_length 64",
         "--reranker_args", "--max_steps 2 --max_length 64 --train_group_size 3 --per_device_train_batch_size 4"]


def faq_beir(root, n_train=24, n_test=8):
    """A BEIR folder of the first bundled FAQ records: their distinct passages are the corpus, their
    positives the judged documents; the first ``n_train`` queries are the train split, the next the test."""
    with open(os.path.join(REPO, "data", "python_faq", "train.jsonl")) as fh:
        rows = [json.loads(line) for line in fh][: n_train + n_test]
    ids, judged = {}, {}
    for i, row in enumerate(rows):
        for text in row["pos"] + row["neg"]:
            ids.setdefault(text, f"d{len(ids)}")
        judged[f"q{i}"] = [ids[t] for t in row["pos"]]
    os.makedirs(root / "qrels")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                               for t, d in ids.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": r["query"]}) + "\n"
                                                for i, r in enumerate(rows)))
    for split, queries in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"q{i}\t{d}\t1\n" for i in queries for d in judged[f"q{i}"]))
    return str(root)


def checksums(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    beir = faq_beir(tmp / "beir")
    out = tmp / "out"
    proc = run_script(os.path.join(REPO, "recipes", "train_pipeline.py"), "--beir_dir", beir, "--output_dir", str(out),
                      *FLAGS, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return beir, out, proc


def test_every_stage_leaves_its_models_records_and_report(pipeline_run):
    from sentence_transformers import SentenceTransformer

    beir, out, proc = pipeline_run
    assert "estimated time for the stages to run" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert list(report["rows"]) == ["BM25", "retriever alone", "first stage (hybrid)", "reranked (first stage top 8)"]
    assert set(report["stages"]) == {"data", "retriever", "fold-1", "fold-2", "candidates", "reranker", "evaluate"}
    mteb_file = out / "evaluation" / "results" / "local__reranker" / "no_revision_available" / "beir.json"
    mteb_scores = json.loads(mteb_file.read_text())["scores"]["test"][0]
    assert report["rows"]["reranked (first stage top 8)"]["ndcg_at_10"] == pytest.approx(mteb_scores["ndcg_at_10"])
    rows = report["rows"]
    assert report["gains_ndcg@10"]["over its first stage"] == pytest.approx(
        rows["reranked (first stage top 8)"]["ndcg_at_10"] - rows["first stage (hybrid)"]["ndcg_at_10"])
    assert "| reranked (first stage top 8) |" in (out / "REPORT.md").read_text() and "| reranked" in proc.stdout
    for model in ("retriever", "reranker"):
        assert "Two-stage evaluation: beir (test, through mteb)" in (out / model / "README.md").read_text()
    SentenceTransformer(str(out / "retriever"), device="cpu")  # the retriever is a sentence-transformers model
    fusion = Reranker.from_pretrained(str(out / "reranker")).fusion
    weights = report["first_stage"]
    assert (fusion.weight, fusion.bm25_weight) == pytest.approx((weights["dense_weight"], weights["bm25_weight"]))
    dev_first_stage = json.loads((out / "reranker" / "eval_results.json").read_text())["first_stage"]["model"]
    assert "BM25" in dev_first_stage  # the reranker's dev figures stand beside the hybrid it keeps


def test_training_scores_come_from_the_retriever_that_did_not_see_the_query(pipeline_run):
    _, out, _ = pipeline_run
    split = json.loads((out / "data" / "split.jsonl").read_text().splitlines()[0])
    weights = json.loads((out / "candidates" / "first_stage.jsonl").read_text().splitlines()[0])
    bm25 = BM25Stats.load(str(out / "candidates" / "bm25.json"))
    records = load_records(str(out / "candidates" / "train.jsonl"))[0]
    assert len(records) == 22 and not set(r.query_id for r in records) & set(split["dev"])
    for record in records[:3]:
        fold = split["folds"][record.query_id] + 1
        trained_on = {r.query_id for r in load_records(str(out / "data" / f"fold-{fold}.jsonl"))[0]}
        assert record.query_id not in trained_on
        docs = [*record.pos, *record.neg]
        queries = [record.query] * len(docs)

        def first_stage(folder):
            return (weights["dense_weight"] * st_cosine(folder, queries, docs)
                    + weights["bm25_weight"] * bm25.score_pairs(queries, docs))

        got = np.array([*record.pos_first_stage_scores, *record.neg_first_stage_scores])
        np.testing.assert_allclose(got, first_stage(str(out / "folds" / f"fold-{fold}")), atol=1e-4)
        assert not np.allclose(got, first_stage(str(out / "retriever")), atol=1e-4)  # not the one that saw it


def test_a_rerun_skips_every_stage_and_changes_no_file(pipeline_run, tmp_path):
    beir, out, _ = pipeline_run
    before = checksums(out)
    proc = run_script(os.path.join(REPO, "recipes", "train_pipeline.py"), "--beir_dir", beir, "--output_dir", str(out),
                      *FLAGS, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("skipped") == 7 and "estimated time for the stages to run" not in proc.stdout
    assert checksums(out) == before
    changed = run_script(os.path.join(REPO, "recipes", "train_pipeline.py"), "--beir_dir", beir, "--output_dir",
                         str(out), *FLAGS[:-1], FLAGS[-1] + " --learning_rate 1e-5", cwd=tmp_path)
    assert changed.returncode == 2 and "stage 'reranker' finished" in changed.stderr and "--redo reranker" in changed.stderr


def test_the_report_warns_when_the_reranker_loses_to_its_first_stage(tmp_path):
    class Args:
        beir_dir, eval_split = "data/x", "test"

    class Pipeline:
        args = Args()

        @staticmethod
        def path(*parts):
            return os.path.join(str(tmp_path), *parts)

    rows = {"BM25": {"ndcg_at_10": 0.5}, "retriever alone": {"ndcg_at_10": 0.7},
            "first stage (hybrid)": {"ndcg_at_10": 0.72}, "reranked (first stage top 8)": {"ndcg_at_10": 0.69}}
    weights = {"formula": "10 * cosine + 0.1 * BM25", "queries": 5, "cross_fitted": True}
    report = build_report(Pipeline, weights, rows)
    assert report["gains_ndcg@10"] == pytest.approx({"over its first stage": -0.03, "over the retriever alone": -0.01})
    assert "worse than its first stage: nDCG@10 0.6900 against 0.7200" in report["warnings"][0]
    assert "> **Warning:** the reranker ranks the test queries worse" in markdown(report)
