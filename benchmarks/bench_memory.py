#!/usr/bin/env python
"""Peak memory of the README's default jobs, each run as a user runs it, one after the other.

    python benchmarks/bench_memory.py --output_dir /tmp/bench_memory --write BENCHMARKS.md

Jobs (bundled Python FAQ data, MiniLM, every recipe default; add flags to all of them after ``--``):

    reranker        recipes/train_reranker.py
    embedder        recipes/train_embedding.py (batch 32 x groups of 8)
    embedder 8x8    the same at batch 8
    embedder, GradCache off   the same with --grad_cache False (the default before issue 24)
    colbert         recipes/train_colbert.py
    distillation    recipes/distill_reranker.py --distill_loss soft_ce, on the bundled records scored by
                    the reranker job's model (the README scores them with an LLM reranker; the teacher's
                    scores are read from the file, so which model made them does not change the memory)

For each: the peak resident memory of the whole process (``os.wait4``'s ``ru_maxrss``: loading,
training, evaluation, the mteb step; it counts this small launcher's size at the fork too, a few tens of
MB) and the training's own peak, which the recipe writes to ``eval_results.json`` (``peak_memory``)
before its mteb step. ``--jobs`` picks some.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import add_output_options, cpu_description, finish  # noqa: E402

#: job name -> (recipe, its own flags); "{out}" is this run's output folder
JOBS: dict[str, tuple[str, list[str]]] = {
    "reranker": ("train_reranker.py", []),
    "embedder": ("train_embedding.py", []),
    "embedder 8x8": ("train_embedding.py", ["--per_device_train_batch_size", "8"]),
    "embedder, GradCache off": ("train_embedding.py", ["--grad_cache", "False"]),
    "colbert": ("train_colbert.py", []),
    "distillation": ("distill_reranker.py", ["--train_data", "{out}/train.scored.jsonl", "--eval_data",
                                             "{out}/dev.scored.jsonl", "--distill_loss", "soft_ce"]),
}


def run_job(command: list[str], log_path: str) -> tuple[int, float, float]:
    """Run ``command``; returns its exit status, its peak resident MB and its wall seconds."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, time.perf_counter() - start


def score_for_distillation(out: str, teacher: str, flags: list[str]) -> None:
    """The bundled train and dev records scored by ``teacher``, for the distillation job."""
    for split in ("train", "dev"):
        command = [sys.executable, os.path.join(REPO, "recipes", "score_with_teacher.py"), "--teacher", teacher,
                   "--input", os.path.join(REPO, "data", "python_faq", f"{split}.jsonl"),
                   "--output", os.path.join(out, f"{split}.scored.jsonl"), *flags]
        status, _, _ = run_job(command, os.path.join(out, f"score_{split}.log"))
        if status:
            raise SystemExit(f"scoring {split} for the distillation job failed: see {out}/score_{split}.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="one folder per job is written here")
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS), metavar="JOB")
    parser.add_argument("--score_flags", default="", help="more flags for recipes/score_with_teacher.py, quoted")
    add_output_options(parser)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    os.makedirs(args.output_dir, exist_ok=True)
    results = {}
    for name in args.jobs:
        recipe, flags = JOBS[name]
        folder = os.path.join(args.output_dir, name.replace(" ", "_").replace(",", ""))
        if recipe == "distill_reranker.py":
            teacher = os.path.join(args.output_dir, "reranker")
            if not os.path.isfile(os.path.join(teacher, "config.json")):
                raise SystemExit("the distillation job scores its data with the reranker job's model: run that too")
            score_for_distillation(args.output_dir, teacher, shlex.split(args.score_flags))
        command = [sys.executable, os.path.join(REPO, "recipes", recipe), "--output_dir", folder,
                   *[f.format(out=args.output_dir) for f in flags], *extra]
        status, peak, seconds = run_job(command, folder + ".log")
        if status:
            raise SystemExit(f"{name} failed (exit {status}): see {folder}.log")
        with open(os.path.join(folder, "eval_results.json")) as fh:
            training = json.load(fh)["peak_memory"].get("resident_mb")
        shown = [f.format(out="OUT") for f in flags]  # OUT: --output_dir
        results[name] = {"process_mb": peak, "training_mb": training, "seconds": seconds,
                         "command": " ".join(["python", f"recipes/{recipe}", "--output_dir", "DIR", *shown, *extra])}
        print(f"{name}: peak {peak:.0f} MB (training {training:.0f} MB), {seconds:.0f} s", flush=True)
    lines = [f"`python benchmarks/bench_memory.py {' '.join(sys.argv[1:])}`  ",
             f"{cpu_description()}; peak resident memory of each job's process (MB).", "",
             "| job | command | peak, whole run | peak, training | wall time (s) |", "|---|---|---|---|---|"]
    lines += [f"| {name} | `{r['command']}` | {r['process_mb']:.0f} | {r['training_mb']:.0f} | {r['seconds']:.0f} |"
              for name, r in results.items()]
    finish(args, "\n".join(lines), [], results)


if __name__ == "__main__":
    main()
