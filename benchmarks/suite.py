#!/usr/bin/env python
"""Every speed comparison behind one command: a summary table, and BENCHMARKS.md refreshed.

Runs, one after the other (each benchmark runs each side in its own process, on the same model,
data and settings):

    rerank      RerankTrainer vs CrossEncoderTrainer, plus the hardware-efficiency row
    embedding   ContrastiveTrainer vs SentenceTransformerTrainer (InfoNCE, and InfoNCE + MRL)
    colbert     ColbertTrainer vs MultiVectorEncoderTrainer
    sparse      SparseTrainer vs SparseEncoderTrainer (SPLADE)
    inference   Reranker.compute_score vs CrossEncoder.predict (torch; and OpenVINO with --reference_python)
    scaling     RerankTrainer on N and 10 N records

then prints one table (ours vs sentence-transformers 6: speed, peak memory, ratios) and, with
``--write BENCHMARKS.md``, replaces the suite's section of that file (between its two marker
comments) with the summary and every benchmark's own table. Each benchmark's results are kept in
``--results_dir`` (``benchmarks/results/NAME.json``), so a run of a subset (``--only``) refreshes
its rows and keeps the others' last results.

    python benchmarks/suite.py --beir_dir ../shared/data/scifact --bf16 --write BENCHMARKS.md
    python benchmarks/suite.py --beir_dir ../shared/data/scifact --only rerank scaling   # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import cpu_description  # noqa: E402

START = "<!-- benchmark-suite:start (written by benchmarks/suite.py; edits here are overwritten) -->"
END = "<!-- benchmark-suite:end -->"
BENCHMARKS = ("rerank", "embedding", "colbert", "sparse", "inference", "scaling")


def plan(args) -> dict[str, list[str]]:
    """The command line of each benchmark."""
    beir = ["--beir_dir", args.beir_dir]
    bf16 = ["--bf16"] if args.bf16 else []
    quick = args.quick
    cache = ["--candidates_cache", args.candidates_cache] if args.candidates_cache else []
    model = ["--model", args.inference_model] if args.inference_model else []
    openvino = (["--backends", "torch", "openvino", "--reference_python", args.reference_python]
                if args.reference_python else [])
    return {
        "rerank": ["bench_rerank_training.py", *beir, "--max_length", "256", *bf16,
                   *(["--steps", "2", "--warmup", "1"] if quick else ["--steps", "8", "--warmup", "2"])],
        "embedding": ["bench_embedding_training.py", *beir, *bf16,
                      *(["--steps", "2", "--warmup", "1"] if quick else [])],
        "colbert": ["bench_colbert_training.py", *beir, *bf16, *(["--steps", "2", "--warmup", "1"] if quick else [])],
        "sparse": ["bench_sparse_training.py", *beir, *bf16, *(["--steps", "2", "--warmup", "1"] if quick else [])],
        "inference": ["bench_rerank_inference.py", *beir, *cache, *model, *openvino,
                      *(["--queries", "1"] if quick else [])],
        "scaling": ["bench_scaling.py", *beir, *bf16, *(["--records", "8", "--max_length", "64"] if quick else [])],
    }


def run(name: str, argv: list[str], results_dir: str) -> dict:
    out = os.path.join(results_dir, f"{name}.json")
    print(f"== {name}: python benchmarks/{' '.join(argv)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(HERE, argv[0]), *argv[1:], "--json", out],
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        raise SystemExit(f"benchmark {name} failed (exit {proc.returncode}); its output is above")
    with open(out) as fh:
        result = json.load(fh)
    result["wall_seconds"] = time.perf_counter() - start
    result["date"] = time.strftime("%Y-%m-%d")
    result["cpu"] = cpu_description()
    with open(out, "w") as fh:
        json.dump(result, fh, indent=2)
    return result


def stored_results(results_dir: str) -> dict[str, dict]:
    """The last results of every benchmark kept in ``results_dir``."""
    out = {}
    for name in BENCHMARKS:
        path = os.path.join(results_dir, f"{name}.json")
        if os.path.isfile(path):
            with open(path) as fh:
                out[name] = json.load(fh)
    return out


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "ratio":
        return f"{value:.2f}x"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def summary_table(results: dict[str, dict]) -> str:
    lines = ["| benchmark | unit | hf_ragtrain | sentence-transformers 6 | speed ratio | peak RSS ours / theirs (MB) "
             "| memory ratio |",
             "|---|---|---|---|---|---|---|"]
    for name in BENCHMARKS:
        for row in results.get(name, {}).get("summary", []):
            unit = row["unit"]
            if unit == "ratio":  # the scaling row: one side, its two sizes
                lines.append(f"| {row['name']} | time(10N) / time(N) | **{fmt(row['ours'], unit)}** | - | - | "
                             f"{row['ours_mb']:.0f} at 10N / {row['theirs_mb']:.0f} at N | "
                             f"**{row['ours_mb'] / row['theirs_mb']:.2f}x** |")
                continue
            speed = f"**{row['ours'] / row['theirs']:.2f}x**" if row["theirs"] else "-"
            if row["ours_mb"] and row["theirs_mb"]:
                memory, mem_ratio = f"{row['ours_mb']:.0f} / {row['theirs_mb']:.0f}", \
                    f"**{row['ours_mb'] / row['theirs_mb']:.2f}x**"
            else:
                memory = mem_ratio = "-"
            lines.append(f"| {row['name']} | {unit} | {fmt(row['ours'], unit)} | {fmt(row['theirs'], unit)} | "
                         f"{speed} | {memory} | {mem_ratio} |")
    return "\n".join(lines)


def render(results: dict[str, dict]) -> str:
    import torch

    minutes = sum(r["wall_seconds"] for r in results.values()) / 60
    runs: dict[tuple[str, str], list[str]] = {}  # (date, CPU) -> the benchmarks run then, there
    for name, r in results.items():
        runs.setdefault((r.get("date", "?"), r.get("cpu", "a CPU the suite did not record yet")), []).append(name)
    where = "; ".join(f"{', '.join(names)} run {date} on {cpu}" for (date, cpu), names in sorted(runs.items()))
    parts = [
        START,
        "## Speed and memory: the benchmark suite",
        "",
        f"`python benchmarks/suite.py --beir_dir ../shared/data/scifact --bf16 --write BENCHMARKS.md` "
        "(the inference rows with `--inference_model DIR --candidates_cache FILE --reference_python PY`, as their "
        "own command below shows; "
        f"{minutes:.0f} min; {where}; torch {torch.__version__}). Speed ratio = ours / theirs (higher is better); "
        "memory ratio = ours / theirs (lower is better). Each benchmark's own table, command and settings follow.",
        "",
        summary_table(results),
    ]
    for name in BENCHMARKS:
        if name in results:
            parts += ["", results[name]["table"]]
    parts.append(END)
    return "\n".join(parts)


def refresh(path: str, section: str) -> None:
    """Replace the suite's section of ``path`` (or add it before the file's first ``## `` section)."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    elif "\n## " in text:
        head, rest = text.split("\n## ", 1)
        text = head + "\n" + section + "\n\n## " + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as fh:
        fh.write(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir_dir", required=True, help="a BEIR folder (SciFact) for the training groups and queries")
    p.add_argument("--bf16", action="store_true", help="train under bf16 autocast (both sides)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument("--candidates_cache", default=None, help="passed to bench_rerank_inference.py")
    p.add_argument("--inference_model", default=None,
                   help="a trained cross-encoder folder for bench_rerank_inference.py (default: MiniLM with a seeded "
                        "fresh head, whose near-tied scores make the top-10 agreement meaningless)")
    p.add_argument("--reference_python", default=None,
                   help="a Python with sentence-transformers' OpenVINO backend (benchmarks/reference_env.sh): the "
                        "inference benchmark then compares the openvino backends too")
    p.add_argument("--quick", action="store_true", help="tiny settings, to check the suite runs (numbers are noise)")
    p.add_argument("--write", default=None, help="refresh the suite's section of this markdown file")
    p.add_argument("--results_dir", default=os.path.join(HERE, "results"),
                   help="where each benchmark's results are kept (the section shows every one found there)")
    args = p.parse_args()

    commands = plan(args)
    results_dir = tempfile.mkdtemp() if args.quick else args.results_dir  # quick numbers are never kept
    os.makedirs(results_dir, exist_ok=True)
    for name in args.only:
        run(name, commands[name], results_dir)
    results = stored_results(results_dir)
    section = render(results)
    print("\n" + summary_table(results))
    if args.write:
        refresh(args.write, section)
        print(f"refreshed {args.write}")


if __name__ == "__main__":
    main()
