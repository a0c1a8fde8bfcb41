#!/usr/bin/env python
"""Evaluate an embedder, a reranker over an embedder's top k, a ColBERT or a SPLADE model, with mteb.

    # the embedder alone on a local BEIR folder
    python recipes/evaluate_mteb.py --embedder minilm --beir_dir ../shared/data/scifact --split test
    # a trained cross-encoder reranking the embedder's top 100
    python recipes/evaluate_mteb.py --reranker runs/reranker --beir_dir ../shared/data/scifact --top_k 100
    # a ColBERT folder: brute-force MaxSim over the corpus, or reranking the embedder's top 100
    python recipes/evaluate_mteb.py --colbert runs/colbert --beir_dir ../shared/data/scifact
    python recipes/evaluate_mteb.py --colbert runs/colbert --colbert_rerank --beir_dir ../shared/data/scifact
    # a SPLADE folder through its inverted index, and fused with the embedder at a sparse weight of 0.4
    python recipes/evaluate_mteb.py --sparse runs/splade --hybrid_sparse_weights 0.4 --embedder runs/embedder \
        --beir_dir ../shared/data/scifact
    # mteb's own tasks (they download their data from the Hub)
    python recipes/evaluate_mteb.py --embedder minilm --tasks SciFact,NFCorpus

Prints the metrics, writes them in mteb's results layout under --output_folder and, with
--json FILE, as a plain {task: {split: {metric: value}}} file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain.evaluation import mteb_eval  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedder", default="minilm", help="first-stage bi-encoder (sentence-transformers folder, or "
                                                        "'minilm' for the bundled all-MiniLM-L6-v2)")
    p.add_argument("--reranker", help="a cross-encoder folder: rerank the embedder's top --top_k")
    p.add_argument("--colbert", help="a ColBERT folder: full-corpus MaxSim retrieval (or, with --colbert_rerank, "
                                     "MaxSim reranking of the embedder's top --top_k)")
    p.add_argument("--colbert_rerank", action="store_true", help="with --colbert: rerank the embedder's top --top_k "
                                                                  "by MaxSim instead of retrieving")
    p.add_argument("--sparse", help="a SPLADE folder: inverted-index retrieval over the corpus")
    p.add_argument("--hybrid_sparse_weights", type=float, nargs="*", default=[],
                   help="with --sparse: also the hybrid with the embedder, SPLADE's min-max normalised score weighed "
                        "by each of these (the cosine's by 1 minus it)")
    p.add_argument("--beir_dir", help="a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--split", default="test", help="the qrels split of --beir_dir to evaluate (default: test)")
    p.add_argument("--tasks", help="comma-separated mteb task names")
    p.add_argument("--top_k", type=int, default=100, help="candidates per query a reranker reorders (default: 100)")
    p.add_argument("--max_length", type=int, default=None, help="reranker's max tokens per pair (default: the "
                                                                  "folder's; a cross-encoder's positions, at most 512)")
    p.add_argument("--bf16", action="store_true", help="score pairs under bf16 autocast")
    p.add_argument("--output_folder", default="mteb_results", help="where mteb writes its results (default: "
                                                                     "mteb_results)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    return p.parse_args(argv)


def evaluate(args, tasks, embedder, embedder_name: str) -> dict:
    """The results of each stage the arguments ask for: {stage name: {task: TaskScores}}."""
    if args.sparse:
        from hf_ragtrain.evaluation.mteb_sparse import evaluate_saved_sparse

        out = evaluate_saved_sparse(args.sparse, tasks, output_folder=args.output_folder, bf16=args.bf16,
                                    name=f"local/{os.path.basename(os.path.normpath(args.sparse))}", dense=embedder,
                                    sparse_weights=args.hybrid_sparse_weights)
        stages = {"sparse": out["sparse"], **{f"hybrid {w:g}": r for w, r in out["hybrid"].items()}}
        for task, active in out["active_dims"].items():
            print(f"{task}: {active['query']:.1f} active dimensions per query, {active['document']:.1f} per document")
    elif args.colbert:
        import torch

        from hf_ragtrain import ColbertEncoder

        model = ColbertEncoder.from_pretrained(args.colbert).eval()
        name = f"local/{os.path.basename(os.path.normpath(args.colbert))}"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            colbert = mteb_eval.MtebColbert(model, name=name, show_progress=True)
            if args.colbert_rerank:
                stages = mteb_eval.two_stage(colbert, mteb_eval.MtebEncoder(embedder, name=embedder_name), tasks,
                                             top_k=args.top_k, output_folder=args.output_folder)
            else:
                stages = {"colbert": mteb_eval.run_mteb(colbert, tasks, output_folder=args.output_folder)}
    elif args.reranker:
        out = mteb_eval.evaluate_saved_reranker(
            args.reranker, tasks, first_stage=embedder, top_k=args.top_k, output_folder=args.output_folder,
            name=f"local/{os.path.basename(os.path.normpath(args.reranker))}", max_length=args.max_length,
            bf16=args.bf16, first_stage_name=embedder_name)
        stages = {"first_stage": out["first_stage"], "reranked": out["reranked"]}
        print(f"{out['pairs']} pairs scored, {out['pairs_truncated']} truncated to {out['max_length']} tokens")
    else:
        stages = {"embedder": mteb_eval.run_mteb(mteb_eval.MtebEncoder(embedder, name=embedder_name), tasks,
                                                 output_folder=args.output_folder)}
    return stages


def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_ragtrain.data.mining import load_encoder
    from hf_ragtrain.offline import resolve_model_path

    tasks = []
    if args.beir_dir:
        tasks.append(mteb_eval.beir_task(args.beir_dir, split=args.split))
    if args.tasks:
        tasks += mteb_eval.get_tasks(args.tasks.split(","))
    if not tasks:
        print("error: give --beir_dir or --tasks", file=sys.stderr)
        return 2
    start = time.time()
    embedder = load_encoder(resolve_model_path(args.embedder))
    embedder_name = f"local/{os.path.basename(os.path.normpath(args.embedder))}"
    if sum(map(bool, (args.reranker, args.colbert, args.sparse))) > 1:
        print("error: give one of --reranker, --colbert and --sparse", file=sys.stderr)
        return 2
    stages = evaluate(args, tasks, embedder, embedder_name)
    for stage, results in stages.items():
        for task, scores in results.items():
            for split, m in scores.metrics.items():
                print(f"{task} {split} {stage}: nDCG@10 {m['ndcg_at_10']:.4f}  MAP@10 {m['map_at_10']:.4f}  "
                      f"MRR@10 {m['mrr_at_10']:.4f}  Recall@100 {m['recall_at_100']:.4f}")
    print(f"{time.time() - start:.0f} s; mteb results under {args.output_folder}/results")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({stage: mteb_eval.scores_as_dict(r) for stage, r in stages.items()}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
