"""Reranking speed: hf_ragtrain's Reranker.compute_score against sentence-transformers CrossEncoder.predict.

Both score the same (query, candidate) pairs with the same cross-encoder folder, batch size and max
length, one after the other, each in its own process: the top ``--top_k`` of the base MiniLM embedder for
each of the first ``--queries`` SciFact test queries (mixed lengths, as retrieval returns them). Each
side runs with every backend of ``--backends`` (torch; openvino: ours ``backend="openvino"``, theirs
``backend="openvino"`` through optimum-intel) at every precision of ``--precisions`` (fp32; bf16: our
``dtype="bf16"``, sentence-transformers' model loaded in bf16, OpenVINO's precision hint). Reports
pairs/s, peak memory, the ratios at equal backend and precision, each side's fastest backend against
the other's at equal precision, the largest score differences and the top-10 agreement with ``predict``
in fp32.

    python benchmarks/bench_rerank_inference.py --beir_dir ../shared/data/scifact --model DIR \\
        --backends torch openvino --reference_python ../venvs/st-openvino/bin/python
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

OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


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
    """Worker ``SIDE-BACKEND-PRECISION``: score the pairs and print the result line (scores included)."""
    from hf_ragtrain.memory import peak_memory  # this program's peak, not its parent's at the fork

    torch.set_num_threads(os.cpu_count() or 1)
    with open(args.groups) as fh:
        pairs = [tuple(p) for p in json.load(fh)]
    side, backend, precision = args.worker.split("-")
    if side == "ours":
        from hf_ragtrain import Reranker

        model = Reranker.from_pretrained(args.model, max_length=args.max_length, dtype=precision, backend=backend)
        run = lambda batch: model.compute_score(batch, batch_size=args.batch_size)  # noqa: E731
    else:
        from sentence_transformers import CrossEncoder

        if backend == "openvino":  # OpenVINO's CPU default is bf16 where the CPU has it: ask for each explicitly
            kwargs = {"backend": "openvino",
                      "model_kwargs": {"ov_config": {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision]}}}
        else:
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


def top10_agreement(a: np.ndarray, b: np.ndarray, top_k: int, ordered: bool = True) -> float:
    """Share of queries (blocks of ``top_k`` candidates) whose ten best candidates come in the same order
    (``ordered=False``: are the same ten)."""
    blocks = [(a[i:i + top_k], b[i:i + top_k]) for i in range(0, len(a), top_k)]
    best = lambda x: list(np.argsort(-x, kind="stable")[:10])  # noqa: E731
    return float(np.mean([(best(x) == best(y)) if ordered else (set(best(x)) == set(best(y))) for x, y in blocks]))


def fastest(results: dict, side: str, precision: str) -> str:
    """The name of ``side``'s fastest worker at ``precision``."""
    names = [n for n in results if n.startswith(side + "-") and n.endswith("-" + precision)]
    return max(names, key=lambda n: results[n]["pairs_per_s"])


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
    parser.add_argument("--backends", nargs="+", choices=["torch", "openvino"], default=["torch"],
                        help="openvino: our backend='openvino' and sentence-transformers' backend='openvino' (needs "
                             "openvino here and optimum-intel beside sentence-transformers; see --reference_python)")
    parser.add_argument("--reference_python", default=sys.executable,
                        help="the Python that runs sentence-transformers (optimum-intel, which its OpenVINO backend "
                             "needs, pins transformers<5.6: benchmarks/reference_env.sh makes such an environment)")
    _common.add_output_options(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # SIDE-BACKEND-PRECISION, e.g. ours-openvino-bf16
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
    names = [f"{side}-{b}-{p}" for p in args.precisions for b in args.backends for side in ("st", "ours")]
    python = {n: args.reference_python for n in names if n.startswith("st-")}
    results = _common.run_workers(__file__, [*sys.argv[1:], "--model", model], pairs, names, python=python)
    scores = {name: np.asarray(results[name].pop("scores")) for name in names}
    reference = scores.get("st-torch-fp32")
    for name in names:
        if name.startswith("ours"):  # the same backend and precision on both sides
            results[name]["max_abs_diff"] = float(np.abs(scores[name] - scores[name.replace("ours", "st")]).max())
        if reference is not None and name != "st-torch-fp32":  # against predict's default, torch fp32
            results[name]["max_abs_diff_fp32"] = float(np.abs(scores[name] - reference).max())
            results[name]["top10_agreement_fp32"] = top10_agreement(scores[name], reference, args.top_k)
            results[name]["top10_same_set_fp32"] = top10_agreement(scores[name], reference, args.top_k, ordered=False)
    results["pairs"] = len(pairs)
    summary = []
    for p in args.precisions:
        ours, theirs = fastest(results, "ours", p), fastest(results, "st", p)
        summary.append(_common.summary_row(
            f"Cross-encoder reranking, both {p}, each side's fastest backend ({ours} vs {theirs})", "pairs/s",
            results[ours], results[theirs], key="pairs_per_s"))
    _common.finish(args, render(args, results), summary, results)


def render(args, r: dict) -> str:
    label = {"ours": "hf_ragtrain Reranker.compute_score", "st": "sentence-transformers CrossEncoder.predict"}
    rows = []

    def cells(x: dict, diff: str = "") -> str:
        agree = (f"{x['top10_same_set_fp32']:.0%} / {x['top10_agreement_fp32']:.0%}" if "top10_agreement_fp32" in x
                 else "")
        fp32 = f"{x['max_abs_diff_fp32']:.1e}" if "max_abs_diff_fp32" in x else ""
        return f"{x['pairs_per_s']:.1f} | {x['peak_rss_mb']:.0f} | {diff} | {fp32} | {agree} |"

    for p in args.precisions:
        for b in args.backends:
            ours, st = r[f"ours-{b}-{p}"], r[f"st-{b}-{p}"]
            same = f"{ours['max_abs_diff']:.1e}"
            rows += [f"| {label['st']} | {b} | {p} | {cells(st)}",
                     f"| {label['ours']} | {b} | {p} | {cells(ours, same)}",
                     f"| ratio (ours / theirs) | {b} | {p} | **{ours['pairs_per_s'] / st['pairs_per_s']:.2f}x** | "
                     f"**{ours['peak_rss_mb'] / st['peak_rss_mb']:.2f}x** | | | |"]
        if len(args.backends) > 1:
            ours, st = fastest(r, "ours", p), fastest(r, "st", p)
            rows.append(f"| **fastest against fastest**, {ours} / {st} | | {p} | "
                        f"**{r[ours]['pairs_per_s'] / r[st]['pairs_per_s']:.2f}x** | "
                        f"**{r[ours]['peak_rss_mb'] / r[st]['peak_rss_mb']:.2f}x** | | | |")
    ours = r[f"ours-{args.backends[0]}-{args.precisions[0]}"]
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
        f"process after a 2-batch warm-up, {_common.cpu_description()}, torch {torch.__version__}. "
        f"torch bf16: our `dtype=\"bf16\"` (autocast; {default}), sentence-transformers' model loaded in bf16. "
        "openvino: our `backend=\"openvino\"` and sentence-transformers' `backend=\"openvino\"`, both with OpenVINO's "
        "`INFERENCE_PRECISION_HINT` set to the precision (OpenVINO's own default on a CPU with bf16 units is bf16). "
        "Score differences: against the other side with the same backend and precision, and against `predict` with "
        "torch in fp32; top-10 agreement: share of queries whose ten best candidates are the same / come in the same "
        "order as with `predict` in fp32.",
        "",
        "| | backend | precision | pairs/s | peak RSS (MB) | largest score difference | vs predict fp32 | "
        "top-10 agreement (set / order) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
