#!/usr/bin/env python
"""Is a chat model's query likelihood a better teacher than the base hybrid? Dev queries of a finished adaptation.

For a sample of labelled queries, the base hybrid first stage of an adaptation run (its ``filter/`` outputs:
the corpus vectors and the fitted weights) retrieves the top ``--top_k``; each candidate is scored by
``hybrid + w * QL``, QL being the chat model's mean log-probability of the query's tokens after the passage
(:class:`hf_ragtrain.modeling.query_likelihood.QueryLikelihood`), and nDCG@10 is printed for every weight ``w``
(0: the hybrid alone). This chooses the weight of the ``hybrid+ql`` teacher on dev splits only:

    python benchmarks/query_likelihood_dev.py --adapt_dir runs/sf-adapt --eval_beir ../shared/data/scifact \\
        --split train --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapt_dir", required=True, help="A run of recipes/adapt.py past its filter stage.")
    parser.add_argument("--eval_beir", required=True, help="BEIR folder of labelled queries over the same corpus.")
    parser.add_argument("--split", default="dev", help="Its qrels split (a dev split: this chooses a setting).")
    parser.add_argument("--queries", type=int, default=200, help="Labelled queries sampled (seed 0).")
    parser.add_argument("--top_k", type=int, default=20, help="Hybrid candidates each query's QL reorders.")
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.5, 1, 2, 4, 8], help="QL weights tried.")
    parser.add_argument("--model", default="smollm2", help="The causal LM (folder or 'smollm2').")
    parser.add_argument("--output", default=None, help="Also write the table and the scores here (json).")
    return parser.parse_args(argv)


def dev_scores(args: argparse.Namespace) -> dict:
    """The sampled queries' hybrid top k: their ids, corpus ids, hybrid scores and QL ``(Q, k)``."""
    import numpy as np

    from hf_ragtrain.data.beir import load_beir_qrels, load_beir_queries
    from hf_ragtrain.data.documents import load_corpus
    from hf_ragtrain.data.hybrid import HybridIndex
    from hf_ragtrain.modeling.query_likelihood import QueryLikelihood
    from hf_ragtrain.offline import resolve_model_path
    from hf_ragtrain.runner.stages import read_json

    run = args.adapt_dir
    marker = os.path.join(run, ".stages", "filter.json")  # the settings the run's filter stage ran with
    settings = read_json(marker)["settings"] if os.path.isfile(marker) else {}
    language = settings.get("bm25_language", "english")
    corpus = load_corpus(os.path.join(run, "data", "corpus.jsonl"))
    index = HybridIndex(resolve_model_path(settings.get("embedder_model", "minilm")), corpus.full_texts(),
                        vectors=np.load(os.path.join(run, "filter", "base_vectors.npy")),
                        bm25_language=None if language.lower() == "none" else language)
    weights = read_json(os.path.join(run, "filter", "first_stage.json"))
    qrels = load_beir_qrels(os.path.join(args.eval_beir, "qrels", f"{args.split}.tsv"))
    texts = load_beir_queries(os.path.join(args.eval_beir, "queries.jsonl"))
    qids = sorted(q for q in qrels if q in texts)
    random.Random(0).shuffle(qids)
    qids = qids[:args.queries]
    first, positions = index.search([texts[q] for q in qids], args.top_k, weights["dense_weight"],
                                    weights["bm25_weight"])
    scorer, start = QueryLikelihood(args.model), time.time()
    ql = scorer.score([texts[q] for q in qids for _ in range(args.top_k)],
                      [index.texts[j] for row in positions for j in row]).reshape(first.shape)
    return {"qids": qids, "qrels": {q: qrels[q] for q in qids}, "first": first, "ql": ql,
            "docs": [[corpus.ids[j] for j in row] for row in positions], "formula": weights["formula"],
            "seconds": time.time() - start}


def weight_table(scores: dict, weights) -> dict[float, float]:
    """Mean nDCG@10 of the top k reordered by ``hybrid + w * QL``, for each ``w``."""
    import numpy as np

    from hf_ragtrain.evaluation.metrics import query_metrics

    table = {}
    for w in weights:
        ndcg = []
        for q, docs, first, ql in zip(scores["qids"], scores["docs"], scores["first"], scores["ql"]):
            order = np.argsort(-(first + w * ql), kind="stable")
            ndcg.append(query_metrics([docs[j] for j in order], scores["qrels"][q], (10,))["ndcg@10"])
        table[w] = float(np.mean(ndcg))
    return table


def main(argv=None) -> dict:
    args = parse_args(argv)
    scores = dev_scores(args)
    table = weight_table(scores, args.weights)
    pairs, seconds = scores["ql"].size, scores["seconds"]
    print(f"{len(scores['qids'])} queries of {args.eval_beir} ({args.split}), base hybrid {scores['formula']} top "
          f"{args.top_k}; QL of {pairs} pairs in {seconds:.0f} s ({pairs / seconds:.1f} pairs/s)")
    print("| QL weight | " + " | ".join(f"{w:g}" for w in table) + " |")
    print("|---|" + "---|" * len(table))
    print("| nDCG@10 | " + " | ".join(f"{v:.4f}" for v in table.values()) + " |")
    result = {"queries": len(scores["qids"]), "top_k": args.top_k, "ndcg@10": {str(w): v for w, v in table.items()},
              "pairs_per_second": pairs / seconds}
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({**result, "qids": scores["qids"], "first": scores["first"].tolist(),
                       "ql": scores["ql"].tolist()}, fh)
    return result


if __name__ == "__main__":
    main()
