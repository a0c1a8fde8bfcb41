#!/usr/bin/env python
"""A SPLADE model, a dense retriever and their hybrid on a BEIR folder, the fusion weight chosen on dev; BM25
(stemmed, English) and its hybrid with the same dense retriever beside them, as the baseline SPLADE replaces.

The dev queries are the train queries the recipes hold out (``--beir_dev_queries`` of them, chosen by
``split_dev_queries`` with the same seed), so the weight is picked on queries no model trained on;
the test split is then scored once per model, with that weight. Every query searches the whole
corpus: SPLADE through the inverted index, the dense model by cosine, the hybrid by the convex
combination of each query's min-max normalised scores (``hf_ragtrain.evaluation.mteb_sparse``);
BM25's hybrid is fused the same way, its weight chosen on dev too.

    python benchmarks/sparse_hybrid.py --beir_dir ../shared/data/scifact --sparse runs/splade_sf \\
        --dense runs/emb_sf --json runs/sparse_hybrid.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def full_scores(sparse, dense, queries: list[str], doc_vectors, dense_docs):
    """The sparse ``(Q, N)`` and dense ``(Q, N)`` scores of ``queries`` against the whole corpus."""
    from hf_ragtrain.data.mining import encode_normalized
    from hf_ragtrain.data.sparse_index import SparseIndex

    index = SparseIndex(doc_vectors)
    sparse_scores = index.scores(sparse.encode(queries, "query"))
    dense_scores = encode_normalized(dense, queries, 64, kind="query") @ dense_docs.T
    return sparse_scores, dense_scores


def metrics(scores, qids, doc_ids, qrels) -> dict[str, float]:
    from hf_ragtrain.data.mining import top_k_rows
    from hf_ragtrain.evaluation.metrics import ranking_metrics

    values, idx = top_k_rows(scores, 100)
    run = {q: {doc_ids[j]: float(v) for v, j in zip(values[i], idx[i])} for i, q in enumerate(qids)}
    return ranking_metrics(run, {q: qrels[q] for q in qids}, (10, 100))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir_dir", required=True)
    p.add_argument("--sparse", required=True, help="a SPLADE folder")
    p.add_argument("--dense", required=True, help="a bi-encoder folder (or 'minilm')")
    p.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--beir_dev_queries", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import numpy as np
    import torch

    from hf_ragtrain import SpladeEncoder
    from hf_ragtrain.data.beir import load_beir
    from hf_ragtrain.data.beir_pipeline import split_dev_queries
    from hf_ragtrain.data.mining import encode_normalized, load_encoder
    from hf_ragtrain.evaluation.mteb_sparse import fused_scores

    from hf_ragtrain.data.mining import BM25

    train, test = load_beir(args.beir_dir, "train"), load_beir(args.beir_dir, "test")
    _, dev_ids = split_dev_queries(sorted(train.qrels), args.beir_dev_queries, args.seed)
    doc_ids = list(train.corpus)
    texts = [train.doc_texts()[d] for d in doc_ids]
    sparse = SpladeEncoder.from_pretrained(args.sparse).eval()
    dense = load_encoder(args.dense)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        doc_vectors = sparse.encode(texts, "document", show_progress=True)
    dense_docs = encode_normalized(dense, texts, 64, True, kind="document")
    bm25 = BM25(texts, language="english")
    out: dict = {"active_dims_document": float(doc_vectors.getnnz(axis=1).mean())}
    for name, split, qids in (("dev", train, dev_ids), ("test", test, sorted(test.qrels))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            s, d = full_scores(sparse, dense, [split.queries[q] for q in qids], doc_vectors, dense_docs)
        lexical = np.stack([bm25.get_scores(split.queries[q]) for q in qids])
        rows = {"sparse": metrics(s, qids, doc_ids, split.qrels), "dense": metrics(d, qids, doc_ids, split.qrels),
                "bm25": metrics(lexical, qids, doc_ids, split.qrels)}
        for partner, scores in (("hybrid", s), ("bm25 hybrid", lexical)):
            weights = args.weights if name == "dev" else [out[f"{partner} weight"]]
            for w in weights:
                rows[f"{partner} {w:g}"] = metrics(fused_scores(scores, d, w), qids, doc_ids, split.qrels)
            if name == "dev":
                out[f"{partner} weight"] = max(args.weights, key=lambda w: rows[f"{partner} {w:g}"]["ndcg@10"])
        out[name] = rows
        for row, m in rows.items():
            print(f"{name:5s} {row:16s} nDCG@10 {m['ndcg@10']:.4f}  Recall@100 {m['recall@100']:.4f}")
    print(f"fusion weights chosen on dev: SPLADE {out['hybrid weight']:g}, BM25 {out['bm25 hybrid weight']:g}; "
          f"documents hold {out['active_dims_document']:.1f} active dimensions on average")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
