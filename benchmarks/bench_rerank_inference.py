"""Reranking speed: hf_ragtrain's Reranker.compute_score against sentence-transformers CrossEncoder.predict.

Both score the same (query, candidate) pairs with the same cross-encoder folder, batch size and max
length, one after the other in this process: the top ``--top_k`` of the base MiniLM embedder for
each of the first ``--queries`` SciFact test queries (mixed lengths, as retrieval returns them).
Reports pairs/s, the ratio, and the largest score difference.

    python benchmarks/bench_rerank_inference.py --beir_dir ../shared/data/scifact --model DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def candidates(beir_dir: str, n_queries: int, top_k: int, cache: str | None) -> list[tuple[str, str]]:
    """(query, document) pairs: the embedder's top ``top_k`` for each of the first ``n_queries`` test queries."""
    if cache and os.path.isfile(cache):
        with open(cache) as fh:
            pairs = [tuple(p) for p in json.load(fh)]
        if len(pairs) >= n_queries * top_k and len(pairs) % top_k == 0:  # the first queries of a larger run
            return pairs[:n_queries * top_k]
    from hf_ragtrain.data.beir import load_beir
    from hf_ragtrain.data.mining import dense_search

    data = load_beir(beir_dir, split="test")
    qids = list(data.queries)[:n_queries]
    texts = data.doc_texts()
    doc_ids = list(texts)
    _, idx = dense_search("minilm", [data.queries[q] for q in qids], [texts[d] for d in doc_ids], top_k=top_k,
                          show_progress=False)
    pairs = [(data.queries[q], texts[doc_ids[j]]) for q, row in zip(qids, idx) for j in row]
    if cache:
        with open(cache, "w") as fh:
            json.dump(pairs, fh)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir_dir", required=True)
    parser.add_argument("--model", default=None, help="a cross-encoder folder (default: MiniLM with a seeded fresh head)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--top_k", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--candidates_cache", default=None, help="JSON file to keep the candidate pairs in")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    from sentence_transformers import CrossEncoder

    from hf_ragtrain import Reranker

    model = args.model
    if model is None:
        from hf_ragtrain.modeling.cross_encoder import load_cross_encoder
        from hf_ragtrain.offline import resolve_model_path

        torch.manual_seed(0)
        ce, tok = load_cross_encoder(resolve_model_path("minilm"))
        model = "/tmp/bench_rerank_inference_model"
        ce.save_pretrained(model)
        tok.save_pretrained(model)
    pairs = candidates(args.beir_dir, args.queries, args.top_k, args.candidates_cache)
    print(f"{len(pairs)} pairs ({args.queries} queries x top {args.top_k}), batch {args.batch_size}, "
          f"max_length {args.max_length}, {torch.get_num_threads()} threads")

    ours = Reranker.from_pretrained(model, max_length=args.max_length)
    theirs = CrossEncoder(model, max_length=args.max_length, device="cpu")
    warm = pairs[:args.batch_size * 2]
    ours.compute_score(warm, batch_size=args.batch_size)
    theirs.predict(warm, batch_size=args.batch_size)

    start = time.perf_counter()
    ours_scores = np.asarray(ours.compute_score(pairs, batch_size=args.batch_size))
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    st_scores = theirs.predict(pairs, batch_size=args.batch_size, show_progress_bar=False)
    st_s = time.perf_counter() - start

    diff = float(np.abs(ours_scores - st_scores).max())
    print(f"hf_ragtrain Reranker.compute_score: {len(pairs) / ours_s:.1f} pairs/s ({ours_s:.1f} s; "
          f"{ours.last.truncated} pairs cut at max_length)")
    print(f"sentence-transformers CrossEncoder.predict: {len(pairs) / st_s:.1f} pairs/s ({st_s:.1f} s)")
    print(f"speed ratio: {st_s / ours_s:.2f}x; max |score difference| {diff:.2e}")
    print("RESULT " + json.dumps({"pairs": len(pairs), "ours_pairs_per_s": len(pairs) / ours_s,
                                  "st_pairs_per_s": len(pairs) / st_s, "ratio": st_s / ours_s, "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
