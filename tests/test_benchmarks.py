"""The benchmark suite's own arithmetic: the FLOP count, the BENCHMARKS.md refresh, the option stripping."""

import os
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import _common  # noqa: E402
import _flops  # noqa: E402
import suite  # noqa: E402


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_training_flops_equal_torch_flop_counter(attn):
    """The formula's forward + backward FLOPs equal what torch counts for a real step of a small BERT."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=80, num_labels=1, attn_implementation=attn)
    model = BertForSequenceClassification(config)
    per_token, per_sequence = _flops.matmul_parameters(model)
    # 3 layers x (4 d^2 attention + 2 d i feed-forward) per token; pooler d^2 + classifier d per sequence
    assert per_token == 3 * (4 * 48 * 48 + 2 * 48 * 80)
    assert per_sequence == 48 * 48 + 48
    for length in (5, 19):
        ids = torch.randint(0, 120, (2, length))
        with FlopCounterMode(display=False) as counter:
            model(input_ids=ids).logits.sum().backward()
        expected = _flops.training_flops([length, length], per_token, per_sequence, 3, 48)
        assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)


def test_cross_encoder_lengths_cut_at_max_length():
    class Tok:  # one token per word, plus [CLS] and two [SEP]
        def __call__(self, queries, docs, truncation, add_special_tokens, verbose):
            return {"input_ids": [[0] * (len(q.split()) + len(d.split()) + 3) for q, d in zip(queries, docs)]}

    groups = [{"query": "a b", "docs": ["c", "d e f g h i j"]}]
    assert _flops.cross_encoder_lengths(Tok(), groups, max_length=8) == [6, 8]


def test_suite_refresh_replaces_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Quality\n\nkept\n")
    suite.refresh(str(path), f"{suite.START}\nfirst\n{suite.END}")
    once = path.read_text()
    assert once.index("intro") < once.index("first") < once.index("## Quality")
    suite.refresh(str(path), f"{suite.START}\nsecond\n{suite.END}")
    twice = path.read_text()
    assert "first" not in twice and twice.count(suite.START) == 1
    assert twice == once.replace("first", "second")


def test_summary_table_ratios():
    results = {"rerank": {"summary": [
        {"name": "train", "unit": "queries/s", "ours": 3.0, "theirs": 2.0, "ours_mb": 500.0, "theirs_mb": 1000.0}]},
        "scaling": {"summary": [
            {"name": "scale", "unit": "ratio", "ours": 9.5, "theirs": None, "ours_mb": 1050.0, "theirs_mb": 1000.0}]}}
    table = suite.summary_table(results)
    assert "**1.50x**" in table and "**0.50x**" in table  # speed and memory, ours / theirs
    assert "**9.50x**" in table and "**1.05x**" in table  # time and memory, 10N / N


def test_strip_options_removes_output_options_only():
    argv = ["--beir_dir", "d", "--write", "B.md", "--bf16", "--json=x.json", "--steps", "3", "--json", "y"]
    assert _common.strip_options(argv, ("--write", "--json")) == ["--beir_dir", "d", "--bf16", "--steps", "3"]


def test_stored_results_keep_the_benchmarks_not_rerun(tmp_path):
    import json

    for name, value in (("scaling", 9.0), ("rerank", 1.5), ("unknown", 0.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"summary": [], "table": name, "ours": value}))
    stored = suite.stored_results(str(tmp_path))
    assert list(stored) == ["rerank", "scaling"]  # the suite's order; files of no benchmark ignored
    assert stored["scaling"]["ours"] == 9.0


def test_top10_agreement_compares_the_order_of_each_querys_best_ten():
    import bench_rerank_inference

    a = np.arange(24, dtype=float)  # two queries of 12 candidates
    b = a.copy()
    b[[0, 1]] = b[[1, 0]]  # below the first query's top ten: no change
    assert bench_rerank_inference.top10_agreement(a, b, top_k=12) == 1.0
    b[[22, 23]] = b[[23, 22]]  # the second query's two best swap
    assert bench_rerank_inference.top10_agreement(a, b, top_k=12) == 0.5
    assert bench_rerank_inference.top10_agreement(a, b, top_k=12, ordered=False) == 1.0  # the same ten, though
    b[[12, 23]] = b[[23, 12]]  # the second query's worst candidate comes first: another ten
    assert bench_rerank_inference.top10_agreement(a, b, top_k=12, ordered=False) == 0.5


def test_pseudo_queries_cut_a_later_sentence_out_of_its_document(tmp_path):
    """make: each query is a sentence after the first of a document, whose positive is the document without it;
    finish: mined records get that positive, and a record of another folder is refused with its line."""
    import json
    import types

    import pseudo_queries

    assert pseudo_queries.split_sentences("One a b. Two c d? (Three) e f! 4 g h.") == [
        "One a b.", "Two c d?", "(Three) e f!", "4 g h."]
    body = ("Background words come first here. The drug lowered blood pressure in treated mice. "
            "Heart rate did not change in any of the groups. Further trials are needed.")
    corpus = [{"_id": "d1", "title": "Drug study", "text": body},
              {"_id": "d2", "title": "Short", "text": "Too short."},
              {"_id": "d3", "title": "Other", "text": body.replace("drug", "salt")}]
    src = tmp_path / "beir"
    src.mkdir()
    (src / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    out = tmp_path / "pseudo"
    pseudo_queries.make(types.SimpleNamespace(beir_dir=str(src), output_dir=str(out), num_queries=2, seed=0))
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    positives = {p["query_id"]: p for p in map(json.loads, (out / "positives.jsonl").read_text().splitlines())}
    assert [q["_id"] for q in queries] == ["sd1", "sd3"]  # d2 has too few sentences
    for q in queries:
        doc = next(d for d in corpus if f"s{d['_id']}" == q["_id"])
        sentences = pseudo_queries.split_sentences(doc["text"])
        assert q["text"] in sentences[1:]
        rest = [s for s in sentences if s != q["text"]]
        assert positives[q["_id"]]["pos"] == doc["title"] + " " + " ".join(rest)
    assert (out / "qrels" / "pseudo.tsv").read_text().splitlines() == ["query-id\tcorpus-id\tscore", "sd1\td1\t1",
                                                                      "sd3\td3\t1"]
    mined = tmp_path / "mined.jsonl"
    mined.write_text(json.dumps({"query": queries[0]["text"], "query_id": "sd1", "pos": ["whole d1"],
                                 "pos_ids": ["d1"], "neg": ["d3 text"], "neg_ids": ["d3"]}) + "\n")
    pseudo_queries.finish(types.SimpleNamespace(output_dir=str(out), input=str(mined), output=str(tmp_path / "t.jsonl")))
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert row["pos"] == [positives["sd1"]["pos"]] and row["neg"] == ["d3 text"] and row["neg_ids"] == ["d3"]
    mined.write_text(mined.read_text() + json.dumps({"query": "q", "query_id": "x9", "pos": ["p"], "pos_ids": ["x"],
                                                     "neg": [], "neg_ids": []}) + "\n")
    with pytest.raises(SystemExit, match=r"mined.jsonl:2: query_id 'x9'"):
        pseudo_queries.finish(types.SimpleNamespace(output_dir=str(out), input=str(mined),
                                                    output=str(tmp_path / "t.jsonl")))


def test_pseudo_queries_corpus_lists_each_distinct_passage_of_the_records_once(tmp_path):
    import json
    import types

    import pseudo_queries

    records = [{"query": "q1", "pos": ["alpha"], "neg": ["beta", "gamma"]},
               {"query": "q2", "pos": ["beta"], "neg": ["alpha", "delta"]}]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    pseudo_queries.corpus(types.SimpleNamespace(records=str(src), output_dir=str(tmp_path / "base")))
    rows = [json.loads(line) for line in (tmp_path / "base" / "corpus.jsonl").read_text().splitlines()]
    assert rows == [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(["alpha", "beta", "gamma", "delta"])]


def test_the_cpu_description_names_the_model_and_its_bf16_units(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx512_bf16 avx2\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path,
                                                                          *a, **k))
    assert _common.cpu_description() == f"Test CPU 9000 (AVX512-BF16), {os.cpu_count()} cores"
    cpuinfo.write_text("model name\t: Old CPU\nflags\t\t: fpu sse avx2\n")
    assert _common.cpu_description().startswith("Old CPU (no AMX-BF16 or AVX512-BF16)")


@pytest.mark.long  # two recipes and a teacher-scoring run in subprocesses
def test_the_memory_benchmark_runs_the_jobs_and_reads_each_peak(tiny_encoder_path, tmp_path):
    import json
    import subprocess

    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(_common.__file__), "bench_memory.py"),
                           "--output_dir", str(out), "--jobs", "reranker", "distillation", "--json",
                           str(tmp_path / "m.json"), "--score_flags=--max_length 32", "--",
                           "--model_name_or_path", tiny_encoder_path, "--max_steps",
                           "1", "--no_mteb_eval", "--bf16", "False", "--max_length", "32", "--first_stage_model", "none",
                           "--first_stage_weight", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "m.json").read_text())["results"]
    assert list(results) == ["reranker", "distillation"]
    for name, r in results.items():
        recorded = json.loads((out / name / "eval_results.json").read_text())["peak_memory"]["resident_mb"]
        assert r["training_mb"] == recorded and 100 < recorded <= r["process_mb"]
    assert "--distill_loss soft_ce" in results["distillation"]["command"] and "{out}" not in proc.stdout


def test_git_docs_corpus_queries_are_name_lines_and_relevant_passages_their_description(tmp_path):
    import git_docs_beir

    pages = tmp_path / "git-doc"
    pages.mkdir()
    (pages / "git-add.txt").write_text(
        "git-add(1)\n==========\n\nNAME\n----\ngit-add - Add file contents to the index\n\n"
        "SYNOPSIS\n--------\n'git add' [--verbose]\n\nDESCRIPTION\n-----------\nThis command updates the index.\n\n"
        "It adds content.\n\nOPTIONS\n-------\n-n::\n\tDry run.\n")
    (pages / "MyFirstContribution.txt").write_text(  # an example page inside a tutorial: not a query
        "NAME\n----\ngit-psuh - Delight users\n\nDESCRIPTION\n-----------\nAn example.\n")
    (pages / "howto.txt").write_text("Title\n=====\n\nNo NAME section here.\n")
    corpus, queries, qrels, counts = git_docs_beir.build(pages)
    assert queries == {"git-add": "Add file contents to the index"}
    assert not any("Add file contents" in doc["text"] for doc in corpus.values())  # the NAME line left out
    relevant = [corpus[d]["text"] for d in qrels["git-add"]]
    assert relevant == ["This command updates the index. It adds content."]
    assert counts["pages without their own NAME line"] == 2
    assert git_docs_beir.split_queries(queries, seed=0) == {"dev": [], "test": ["git-add"]}


def test_write_beir_is_read_back_by_load_beir(tmp_path):
    from hf_ragtrain.data.beir import load_beir, write_beir

    corpus = {"d1": {"title": "T", "text": "first"}, "d0": {"title": "", "text": "second"}}
    queries = {"q1": "a query", "q2": "another"}
    write_beir(tmp_path, corpus, queries, {"test": {"q1": {"d0": 2, "d1": 1}}, "dev": {"q2": {"d1": 1}}})
    test, dev = load_beir(str(tmp_path), split="test"), load_beir(str(tmp_path), split="dev")
    assert test.corpus == corpus and list(test.corpus) == ["d1", "d0"]
    assert test.qrels == {"q1": {"d0": 2, "d1": 1}} and dev.qrels == {"q2": {"d1": 1}}
    assert test.queries == {"q1": "a query"} and dev.queries == {"q2": "another"}


def test_adapt_ablation_embedder_filter_row_keeps_the_queries_the_embedder_alone_finds(tmp_path):
    """The row filtered by the base embedder alone trains on exactly the unfiltered queries whose source passage
    that embedder ranks in the filter's top k, counted per generator (ranks computed pair by pair here)."""
    from types import SimpleNamespace

    import adapt_ablation
    from test_adapt_data import WordEncoder, brute_force_rank, corpus_file

    from hf_ragtrain.data.documents import load_corpus
    from hf_ragtrain.data.generated import GeneratedQuery, write_generated
    from hf_ragtrain.data.hybrid import HybridIndex
    from hf_ragtrain.data.mining import BM25Stats

    corpus = load_corpus(corpus_file(tmp_path))
    texts = corpus.full_texts()
    queries = [GeneratedQuery("a", "mutable default argument shared between calls", "d3", texts[3], "llm"),
               GeneratedQuery("b", "mutable default argument shared between calls", "d0", texts[0], "llm"),
               GeneratedQuery("c", "lambda anonymous function in one line", "d2", texts[2], "inverse-cloze"),
               GeneratedQuery("d", "deep copies of nested structures", "d4", texts[4], "inverse-cloze")]
    write_generated(queries, str(tmp_path / "queries" / "generated.jsonl"))
    for name in ("dev", "eval"):
        write_generated([], str(tmp_path / "filter" / f"{name}.jsonl"))
    index = HybridIndex(WordEncoder(), texts, show_progress=False)
    pipeline = SimpleNamespace(out=str(tmp_path), path=lambda *parts: str(tmp_path.joinpath(*parts)),
                               corpus=lambda: corpus, base_index=lambda: index,
                               base_weights=lambda: {"dense_weight": 1.0, "bm25_weight": 0.5},
                               args=SimpleNamespace(filter_top_k=1, top_k=5, num_negatives=2))
    stats, position = BM25Stats.of(texts), {d: i for i, d in enumerate(corpus.ids)}
    found = [q for q in queries
             if brute_force_rank(WordEncoder(), texts, q.text, position[q.doc_id], q.positive, 1.0, 0.0, stats) <= 1]
    assert 0 < len(found) < len(queries)  # the case tells kept from dropped
    rows, made = adapt_ablation.row_records(pipeline, ("inverse-cloze", "llm"), "embedder")
    assert made["queries"] == len(found)
    assert rows and {r["query_id"] for r in rows} <= {q.query_id for q in found}  # none the embedder missed
    for generator in ("llm", "inverse-cloze"):
        assert made["filter"][generator] == {"made": sum(q.generator == generator for q in queries),
                                             "kept": sum(q.generator == generator for q in found)}
    with pytest.raises(ValueError, match="expected None or 'embedder'"):
        adapt_ablation.row_records(pipeline, ("llm",), "bm25")

    # the filtered rows read the run's own records: the teacher-labelled ones for the pipeline's row
    from conftest import write_jsonl

    plain = {"query": "q", "pos": ["p"], "neg": ["n"]}
    (tmp_path / "negatives").mkdir()
    (tmp_path / "teacher").mkdir()
    write_jsonl(tmp_path / "negatives" / "train.jsonl", [plain])
    write_jsonl(tmp_path / "teacher" / "train.jsonl", [{**plain, "pos_scores": [2.0], "neg_scores": [0.5]}])
    assert adapt_ablation.row_records(pipeline, None)[0] == [plain]
    assert adapt_ablation.row_records(pipeline, None, teacher=True)[0] == [{**plain, "pos_scores": [2.0],
                                                                             "neg_scores": [0.5]}]


def test_adapt_ablation_rows_leave_out_held_out_sources_and_read_the_run_settings(tmp_path):
    """The unfiltered rows keep every generated query of their generators except those on a held-out
    query's source passage; the run's arguments come back from its stage markers."""
    import json

    import adapt_ablation
    from hf_ragtrain.data.generated import GeneratedQuery, write_generated

    def q(i, doc, generator):
        return GeneratedQuery(f"q{i}", f"text {i}", doc, f"passage {doc}", generator)

    generated = [q(0, "a", "inverse-cloze"), q(1, "a", "llm"), q(2, "b", "inverse-cloze"), q(3, "c", "llm"),
                 q(4, "d", "inverse-cloze"), q(5, "d", "llm")]
    write_generated(generated, str(tmp_path / "queries" / "generated.jsonl"))
    write_generated([generated[2]], str(tmp_path / "filter" / "dev.jsonl"))  # source b held out
    write_generated([generated[5]], str(tmp_path / "filter" / "eval.jsonl"))  # source d held out
    ids = [x.query_id for x in adapt_ablation.unfiltered_queries(str(tmp_path), ("inverse-cloze",))]
    assert ids == ["q0"]
    ids = [x.query_id for x in adapt_ablation.unfiltered_queries(str(tmp_path), ("inverse-cloze", "llm"))]
    assert ids == ["q0", "q1", "q3"]

    (tmp_path / ".stages").mkdir()
    for name, settings in (("queries", {"corpus": "docs.jsonl", "ict_queries": 7, "queries": None, "seed": 3}),
                           ("negatives", {"num_negatives": 5, "train_data": None})):
        (tmp_path / ".stages" / f"{name}.json").write_text(json.dumps({"stage": name, "settings": settings}))
    args = adapt_ablation.run_arguments(str(tmp_path))
    assert (args.corpus, args.ict_queries, args.seed, args.num_negatives, args.output_dir, args.queries) == (
        "docs.jsonl", 7, 3, 5, str(tmp_path), None)
    with pytest.raises(SystemExit, match="no finished stage"):
        adapt_ablation.run_arguments(str(tmp_path / "filter"))


def test_adapt_ablation_rows_option_picks_rows_by_number_and_skips_finished_ones():
    """``--rows`` numbers the rows from 1 as the docstring does; rows already in the results are not redone."""
    import adapt_ablation

    names = [row[0] for row in adapt_ablation.ROWS]
    assert [i for i, _ in adapt_ablation.rows_to_run([], None)] == list(range(1, len(names) + 1))
    picked = adapt_ablation.rows_to_run(["zero-shot", names[2]], [2, 3, 4])
    assert [(i, row[0]) for i, row in picked] == [(2, names[1]), (4, names[3])]
    assert picked[1][1][3] is True  # row 4 is trained on the teacher's labels
    with pytest.raises(SystemExit) as refused:  # argparse refuses it (status 2) before any run is read
        adapt_ablation.main(["--adapt_dir", "x", "--eval_beir", "y", "--output_dir", "z", "--rows", "7"])
    assert refused.value.code == 2


def test_adapt_ablation_averaged_row_averages_the_runs_trained_embedder_with_the_base(tmp_path):
    """Row 6 is the pipeline's last step without training: row 4's embedder (the run's ``embedder_trained/``,
    or ``embedder/`` of a run made before averaging) averaged with the base at the run's share."""
    import types

    import adapt_ablation
    from conftest import build_tiny_encoder
    from safetensors.torch import load_file

    from hf_ragtrain.modeling.bi_encoder import BiEncoder

    base = build_tiny_encoder(tmp_path / "base", seed=0)
    run = tmp_path / "run"
    BiEncoder.from_pretrained(build_tiny_encoder(tmp_path / "other", seed=1)).save_pretrained(str(run / "embedder"))
    pipeline = types.SimpleNamespace(args=types.SimpleNamespace(embedder_base_share=0.25, embedder_model=base),
                                     path=lambda *parts: os.path.join(run, *parts))
    assert adapt_ablation.row_model(pipeline, 4, str(tmp_path / "abl"), True)[0] == str(run / "embedder")
    (run / "embedder").rename(run / "embedder_trained")
    folder, made = adapt_ablation.row_model(pipeline, adapt_ablation.AVERAGED_ROW, str(tmp_path / "abl"), True)
    assert folder == str(tmp_path / "abl" / "row6") and made["base_share"] == 0.25
    got, a, b = (load_file(os.path.join(f, "model.safetensors")) for f in (folder, run / "embedder_trained", base))
    for name in ("encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight"):
        assert torch.allclose(got[name], 0.75 * a[name] + 0.25 * b[name], atol=1e-6)


def test_query_likelihood_weight_table_reorders_the_top_k_by_hybrid_plus_weighted_ql():
    """Weight 0 keeps the hybrid's order, a large weight gives the QL order, and a middle weight the sum's;
    each nDCG@10 is computed here by hand (one relevant document per query)."""
    import query_likelihood_dev

    scores = {"qids": ["a", "b"], "qrels": {"a": {"d2": 1}, "b": {"e0": 1}},
              "docs": [["d0", "d1", "d2"], ["e0", "e1", "e2"]],
              "first": np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]),
              "ql": np.array([[-3.0, -2.0, -1.0], [-1.0, -1.2, -3.0]])}
    table = query_likelihood_dev.weight_table(scores, [0, 100, 1])

    def dcg(rank):  # the relevant document at this 1-based rank
        return 1 / np.log2(rank + 1)

    assert table[0] == pytest.approx((dcg(3) + dcg(1)) / 2)  # the hybrid's order
    assert table[100] == pytest.approx((dcg(1) + dcg(1)) / 2)  # QL's order: d2 first, e0 first
    # weight 1: a sums 0, 0, 0 (ties keep the hybrid's order: d2 third); b sums 2, 0.8, -2 (e0 first)
    assert table[1] == pytest.approx((dcg(3) + dcg(1)) / 2)
