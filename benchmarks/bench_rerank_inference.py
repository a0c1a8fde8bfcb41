"""Reranking speed: hf_ragtrain's Reranker.compute_score against sentence-transformers CrossEncoder.predict.

Both score the same (query, candidate) pairs with the same cross-encoder folder, batch size and max
length, one after the other, each in its own process: the top ``--top_k`` of the base MiniLM embedder for
each of the first ``--queries`` SciFact test queries (mixed lengths, as retrieval returns them). Each
side runs at every precision of ``--precisions``: fp32, and bf16 (our ``dtype="bf16"`` autocast;
sentence-transformers with the model loaded in bf16). Reports pairs/s, peak memory, the ratios at equal
precision and ours at bf16 against ``predict`` at its default fp32, and the largest score differences.

    python benchmarks/bench_rerank_inference.py --beir_dir ../shared/data/scifact --model DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def candidates(beir_dir: str, n_queries: int, top_k: int, cache: str | None) -> list[tuple[str, str]]:
    """(query, document) pairs: the embedder's top ``top_k`` for each of the first ``n_queries`` test queries."""
    if cache and os.path.isfile(cache):
        with open(cache) as fh:
            stored = json.load(fh)
        if isinstance(stored, list):  # the first format: a bare list of pairs, 100 per query
            stored = {"top_k": 100, "pairs": stored}
        if stored["top_k"] == top_k and len(stored["pairs"]) >= n_queries * top_k:  # the first queries of a larger run
            return [tuple(p) for p in stored["pairs"][:n_queries * top_k]]
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
            json.dump({"top_k": top_k, "pairs": pairs}, fh)
    return pairs


def score(args) -> None:
    """Worker ``SIDE-PRECISION``: score the pairs and print the result line (scores included)."""
    from hf_ragtrain.memory import peak_memory  # this program's peak, not its parent's at the fork

    torch.set_num_threads(os.cpu_count() or 1)
    with open(args.groups) as fh:
        pairs = [tuple(p) for p in json.load(fh)]
    side, precision = args.worker.split("-")
    if side == "ours":
        from hf_ragtrain import Reranker

        model = Reranker.from_pretrained(args.model, max_length=args.max_length, dtype=precision)
        run = lambda batch: model.compute_score(batch, batch_size=args.batch_size)  # noqa: E731
    else:
        from sentence_transformers import CrossEncoder

        kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if precision == "bf16" else {}
        model = CrossEncoder(args.model, max_length=args.max_length, device="cpu", **kwargs)
        run = lambda batch: model.predict(batch, batch_size=args.batch_size, show_progress_bar=False)  # noqa: E731
    run(pairs[:args.batch_size * 2])  # warm-up
    start = time.perf_counter()
    scores = np.asarray(run(pairs), dtype=np.float64)
    seconds = time.perf_counter() - start
    truncated = model.last.truncated if side == "ours" else None
    print("RESULT " + json.dumps({"pairs_per_s": len(pairs) / seconds, "seconds": seconds, "truncated": truncated,
                                  "peak_rss_mb": peak_memory()["resident_mb"],
                                  "scores": scores.tolist()}))


def top10_agreement(a: np.ndarray, b: np.ndarray, top_k: int) -> float:
    """Share of queries (blocks of ``top_k`` candidates) whose ten best candidates come in the same order."""
    blocks = [(a[i:i + top_k], b[i:i + top_k]) for i in range(0, len(a), top_k)]
    return float(np.mean([list(np.argsort(-x, kind="stable")[:10]) == list(np.argsort(-y, kind="stable")[:10])
                          for x, y in blocks]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir_dir", required=True)
    parser.add_argument("--model", default=None, help="a cross-encoder folder (default: MiniLM with a seeded fresh head)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--top_k", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--candidates_cache", default=None, help="JSON file to keep the candidate pairs in")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    _common.add_output_options(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # SIDE-PRECISION, e.g. ours-bf16
    parser.add_argument("--groups", help=argparse.SUPPRESS)  # the pairs, written by _common.run_workers
    args = parser.parse_args()
    if args.worker:
        return score(args)

    model = args.model
    if model is None:
        from hf_ragtrain.modeling.cross_encoder import load_cross_encoder
        from hf_ragtrain.offline import resolve_model_path

        torch.manual_seed(0)
        ce, tok = load_cross_encoder(resolve_model_path("minilm"))
        model = os.path.join(tempfile.gettempdir(), "bench_rerank_inference_model")
        ce.save_pretrained(model)
        tok.save_pretrained(model)
    pairs = candidates(args.beir_dir, args.queries, args.top_k, args.candidates_cache)
    print(f"{len(pairs)} pairs ({args.queries} queries x top {args.top_k}), batch {args.batch_size}, "
          f"max_length {args.max_length}")

    # each side in its own process, so each has its own peak memory
    names = [f"{side}-{p}" for p in args.precisions for side in ("ours", "st")]
    results = _common.run_workers(__file__, [*sys.argv[1:], "--model", model], pairs, names)
    scores = {name: np.asarray(results[name].pop("scores")) for name in names}
    reference = scores.get("st-fp32")
    for name in names:
        other = name.replace("ours", "st") if name.startswith("ours") else None
        if other:  # the same precision on both sides
            results[name]["max_abs_diff"] = float(np.abs(scores[name] - scores[other]).max())
        if reference is not None and name != "st-fp32":  # against predict's default fp32
            results[name]["max_abs_diff_fp32"] = float(np.abs(scores[name] - reference).max())
            results[name]["top10_agreement_fp32"] = top10_agreement(scores[name], reference, args.top_k)
    results["pairs"] = len(pairs)
    summary = [_common.summary_row(f"Cross-encoder reranking, both {p} (Reranker.compute_score vs CrossEncoder.predict)",
                                   "pairs/s", results[f"ours-{p}"], results[f"st-{p}"], key="pairs_per_s")
               for p in args.precisions]
    if "bf16" in args.precisions and "fp32" in args.precisions:
        summary.append(_common.summary_row("Cross-encoder reranking, ours bf16 vs predict's default fp32", "pairs/s",
                                           results["ours-bf16"], results["st-fp32"], key="pairs_per_s"))
    _common.finish(args, render(args, results), summary, results)


def render(args, r: dict) -> str:
    import platform

    label = {"ours": "hf_ragtrain Reranker.compute_score", "st": "sentence-transformers CrossEncoder.predict"}
    rows = []
    for p in args.precisions:
        ours, st = r[f"ours-{p}"], r[f"st-{p}"]
        rows += [f"| {label['st']} | {p} | {st['pairs_per_s']:.1f} | {st['peak_rss_mb']:.0f} | | |",
                 f"| {label['ours']} | {p} | {ours['pairs_per_s']:.1f} | {ours['peak_rss_mb']:.0f} | "
                 f"{ours['max_abs_diff']:.1e} | |",
                 f"| ratio (ours / theirs), both {p} | | **{ours['pairs_per_s'] / st['pairs_per_s']:.2f}x** | "
                 f"**{ours['peak_rss_mb'] / st['peak_rss_mb']:.2f}x** | | |"]
    if "ours-bf16" in r and "st-fp32" in r:
        ours, st = r["ours-bf16"], r["st-fp32"]
        rows.append(f"| ratio, ours bf16 / predict fp32 | | **{ours['pairs_per_s'] / st['pairs_per_s']:.2f}x** | "
                    f"**{ours['peak_rss_mb'] / st['peak_rss_mb']:.2f}x** | {ours['max_abs_diff_fp32']:.1e} | "
                    f"{ours['top10_agreement_fp32']:.0%} |")
    ours = r[f"ours-{args.precisions[0]}"]
    from hf_ragtrain.hardware import cpu_has_native_bf16

    default = ("our default on this CPU, which multiplies bf16 in hardware" if cpu_has_native_bf16()
               else "not our default on this CPU, which lacks bf16 instructions")
    return "\n".join([
        "### Reranking inference: Reranker.compute_score vs sentence-transformers CrossEncoder.predict",
        "",
        f"`{_common.command_line('bench_rerank_inference.py')}`  ",
        f"The first {args.queries} SciFact test queries x the base MiniLM embedder's top {args.top_k} "
        f"({r['pairs']} pairs of mixed length, {ours['truncated']} longer than {args.max_length} tokens), the same "
        f"cross-encoder folder, batch size {args.batch_size}, max length {args.max_length}, each side in its own "
        f"process after a 2-batch warm-up, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}. bf16: our `dtype=\"bf16\"` (autocast; {default}), "
        "sentence-transformers' model loaded in bf16. Score difference: against the "
        "other side at the same precision, or against `predict` in fp32; top-10 agreement: share of queries whose "
        "ten best candidates come in the same order as with `predict` in fp32.",
        "",
        "| | precision | pairs/s | peak RSS (MB) | largest score difference | top-10 agreement |",
        "|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
