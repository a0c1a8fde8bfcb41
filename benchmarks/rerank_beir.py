#!/usr/bin/env python
"""Rerank a BEIR split's first-stage top k with any saved reranker folder, scored by our metrics.

The quick loop behind the SciFact reranking figures in BENCHMARKS.md: the first-stage run (the base
MiniLM embedder's top ``--top_k`` by default) is computed once and kept in ``--run_cache``, so each
reranker, max length or long-document mode costs only the scoring. Scores go through
``Reranker.from_pretrained`` (every kind a recipe saves); metrics are ``ranking_metrics`` against the
split's full qrels, the same numbers ``recipes/evaluate_mteb.py`` gets through mteb (checked for the
first stage in BENCHMARKS.md). ``--scores_out`` keeps the reranked run for fusion or inspection.

    python benchmarks/rerank_beir.py --beir_dir ../shared/data/scifact --reranker DIR \\
        --run_cache /tmp/scifact_test_top100.json --max_length 256 --long_doc max_chunk --bf16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def first_stage(beir_dir: str, split: str, embedder: str, top_k: int, cache: str | None) -> dict:
    """{qid: {doc_id: score}}: the embedder's top ``top_k`` for every query of the split (cached)."""
    if cache and os.path.isfile(cache):
        with open(cache) as fh:
            stored = json.load(fh)
        if (stored["split"], stored["embedder"], stored["top_k"]) == (split, embedder, top_k):
            return stored["run"]
        raise SystemExit(f"{cache} holds the {stored['embedder']} top {stored['top_k']} of {stored['split']}; "
                         f"asked for {embedder} top {top_k} of {split}")
    from hf_ragtrain.data.beir import load_beir
    from hf_ragtrain.data.beir_pipeline import first_stage_run
    from hf_ragtrain.data.mining import load_encoder
    from hf_ragtrain.offline import resolve_model_path

    run = first_stage_run(load_encoder(resolve_model_path(embedder)), load_beir(beir_dir, split=split), top_k)
    if cache:
        with open(cache, "w") as fh:
            json.dump({"split": split, "embedder": embedder, "top_k": top_k, "run": run}, fh)
    return run


def compare(reranked: dict, path: str, qrels: dict) -> str:
    """How ``reranked`` differs from the run kept in ``path`` (same queries and candidates)."""
    import numpy as np

    from hf_ragtrain.evaluation.metrics import ranking_metrics

    with open(path) as fh:
        other = json.load(fh)
    if set(other) != set(reranked) or any(set(other[q]) != set(reranked[q]) for q in reranked):
        raise SystemExit(f"{path} does not hold the same queries and candidates as this run")
    diff = max(abs(reranked[q][d] - other[q][d]) for q in reranked for d in reranked[q])

    def top10(run: dict, q: str) -> list:
        return sorted(run[q], key=lambda d: -run[q][d])[:10]

    same_set = np.mean([set(top10(reranked, q)) == set(top10(other, q)) for q in reranked])
    same_order = np.mean([top10(reranked, q) == top10(other, q) for q in reranked])
    delta = ranking_metrics(reranked, qrels)["ndcg@10"] - ranking_metrics(other, qrels)["ndcg@10"]
    return (f"against {os.path.basename(path)}: largest score difference {diff:.1e}; the same ten best documents "
            f"for {same_set:.1%} of queries, in the same order for {same_order:.1%}; nDCG@10 {delta:+.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir_dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--reranker", action="append", default=[], help="a saved reranker folder (repeatable)")
    p.add_argument("--embedder", default="minilm", help="first stage (a sentence-transformers folder or 'minilm')")
    p.add_argument("--top_k", type=int, default=100)
    p.add_argument("--run_cache", help="JSON file keeping the first-stage run")
    p.add_argument("--max_length", type=int, default=None, help="tokens per pair (default: the reranker's own)")
    p.add_argument("--long_doc", choices=["truncate", "max_chunk"], default="truncate")
    p.add_argument("--overlap", type=int, default=32, help="tokens shared by neighbouring windows (max_chunk)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--bf16", action="store_true", help="score in bf16 (torch autocast, or OpenVINO's precision hint)")
    p.add_argument("--backend", choices=["torch", "openvino"], default="torch", help="what computes the scores")
    p.add_argument("--scores_out", help="JSON file for the reranked run {qid: {doc_id: score}}")
    p.add_argument("--compare_scores", help="a --scores_out file of an earlier run (e.g. torch fp32) to compare with: "
                                            "largest score difference, top-10 agreement, nDCG@10 change")
    p.add_argument("--queries_from", help="evaluate only the queries of this records file (its query_id fields), "
                                          "e.g. the dev file of build_beir_data.py --dev_output")
    args = p.parse_args()

    from hf_ragtrain import Reranker
    from hf_ragtrain.data.beir import load_beir
    from hf_ragtrain.evaluation.metrics import ranking_metrics

    data = load_beir(args.beir_dir, split=args.split)
    if args.queries_from:
        from hf_ragtrain.data.beir_pipeline import subset_queries

        with open(args.queries_from) as fh:
            data = subset_queries(data, [json.loads(line)["query_id"] for line in fh if line.strip()])
    texts = data.doc_texts()
    run = first_stage(args.beir_dir, args.split, args.embedder, args.top_k, args.run_cache)
    qids = [q for q in data.qrels if q in run]
    rows = [("first stage", ranking_metrics(run, data.qrels), None)]
    for folder in args.reranker:
        reranker = Reranker.from_pretrained(folder, max_length=args.max_length, long_doc=args.long_doc,
                                            overlap=args.overlap, dtype="bf16" if args.bf16 else "fp32",
                                            backend=args.backend, show_progress=True)
        pairs = [(data.queries[q], texts[d]) for q in qids for d in run[q]]
        start = time.perf_counter()
        scores = iter(reranker.compute_score(pairs, batch_size=args.batch_size))
        seconds = time.perf_counter() - start
        reranked = {q: {d: next(scores) for d in run[q]} for q in qids}
        note = (f"{len(pairs)} pairs in {seconds:.0f} s; {reranker.last.truncated} cut"
                + (f", {reranker.last.windows} windows" if args.long_doc == "max_chunk" else ""))
        if args.compare_scores:
            note += "; " + compare(reranked, args.compare_scores, data.qrels)
        rows.append((folder, ranking_metrics(reranked, data.qrels), note))
        if args.scores_out:
            with open(args.scores_out, "w") as fh:
                json.dump(reranked, fh)
    subset = f" ({args.queries_from})" if args.queries_from else ""
    print(f"{args.beir_dir} {args.split}{subset}: {len(qids)} queries, {args.embedder} top {args.top_k}, "
          f"max_length {args.max_length or 'default'}, long_doc {args.long_doc}, {'bf16' if args.bf16 else 'fp32'}, "
          f"backend {args.backend}")
    print("| run | nDCG@10 | MAP@10 | MRR@10 | Recall@10 | Recall@100 |")
    print("|---|---|---|---|---|---|")
    for name, m, note in rows:
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['map@10']:.4f} | {m['mrr@10']:.4f} | {m['recall@10']:.4f} | "
              f"{m.get('recall@100', float('nan')):.4f} |" + (f" {note}" if note else ""))


if __name__ == "__main__":
    main()
