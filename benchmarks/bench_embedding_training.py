#!/usr/bin/env python
"""Embedding training speed: hf_ragtrain ContrastiveTrainer vs sentence-transformers SentenceTransformerTrainer.

Both train the same MiniLM bi-encoder on the same query groups (1 positive + hard negatives mined
with BM25 from a BEIR folder's train split), with the same batch, group size, max length, learning
rate, steps and loss: InfoNCE over in-batch and hard negatives at temperature 0.02 (theirs:
``MultipleNegativesRankingLoss(scale=50)`` on (anchor, positive, negative_1..N) columns), and,
in the MRL rows, the same loss averaged over Matryoshka dimensions (theirs: ``MatryoshkaLoss``).
Each side runs in its own subprocess, one after the other in the same invocation; peak memory is
that process's peak resident set size.

    python benchmarks/bench_embedding_training.py --beir_dir ../shared/data/scifact --bf16 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from _common import StepTimer  # noqa: E402

TEMPERATURE = 0.02


def training_args(args, out) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps + args.warmup,
                learning_rate=2e-5, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
                disable_tqdm=True, seed=0, bf16=args.bf16, dataloader_drop_last=True)


def run_ours(args, groups, out, mrl: bool):
    from hf_ragtrain import BiEncoder, ContrastiveTrainer, EmbeddingCollator, EmbeddingTrainingArguments

    model = BiEncoder.from_pretrained(args.model, query_max_length=args.max_length,
                                      passage_max_length=args.max_length)
    timer = StepTimer(args.warmup)
    targs = EmbeddingTrainingArguments(**training_args(args, out), temperature=TEMPERATURE,
                                       matryoshka_dims=args.dims if mrl else None)
    trainer = ContrastiveTrainer(model=model, args=targs, train_dataset=_common.ListDataset(groups), callbacks=[timer.callback],
                                 data_collator=EmbeddingCollator(model, micro_batch_tokens=args.micro_batch_tokens
                                                                 or None))
    trainer.train()
    return timer, trainer.state.log_history


def run_st(args, groups, out, mrl: bool):
    import datasets
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    from hf_ragtrain.offline import resolve_model_path

    rows = [{"anchor": g["query"], "positive": g["docs"][0],
             **{f"negative_{j}": d for j, d in enumerate(g["docs"][1:], start=1)}} for g in groups]
    model = SentenceTransformer(resolve_model_path(args.model), device="cpu")
    model.max_seq_length = args.max_length
    loss = MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE)
    if mrl:
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=args.dims)
    timer = StepTimer(args.warmup)
    trainer = SentenceTransformerTrainer(model=model, args=SentenceTransformerTrainingArguments(**training_args(args, out)),
                                         train_dataset=datasets.Dataset.from_list(rows), loss=loss,
                                         callbacks=[timer.callback])
    trainer.train()
    return timer, trainer.state.log_history


def worker(args) -> None:
    side, variant = args.worker.split("-")
    run = run_ours if side == "ours" else run_st
    _common.run_worker(args.groups, lambda groups, out: run(args, groups, out, mrl=variant == "mrl"),
                       args.batch_size, args.steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir_dir", required=True)
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--group_size", type=int, default=4)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64])
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--micro_batch_tokens", type=int, default=2048)
    p.add_argument("--bf16", action="store_true")
    _common.add_output_options(p)
    p.add_argument("--worker", choices=["ours-plain", "st-plain", "ours-mrl", "st-mrl"], help=argparse.SUPPRESS)
    p.add_argument("--groups", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    groups = _common.build_groups(args.beir_dir, args.group_size, args.batch_size * (args.steps + args.warmup))
    results = _common.run_workers(__file__, sys.argv[1:], groups, ["st-plain", "ours-plain", "st-mrl", "ours-mrl"])
    _common.finish(args, render(args, results), summary(results), results)


def summary(results) -> list[dict]:
    return [_common.summary_row(f"Embedding training, {label} (ContrastiveTrainer vs SentenceTransformerTrainer)",
                                "queries/s", results[f"ours-{variant}"], results[f"st-{variant}"])
            for variant, label in (("plain", "InfoNCE"), ("mrl", "InfoNCE + MRL"))]


def render(args, results) -> str:
    import platform

    import torch

    texts = args.batch_size * (1 + args.group_size)
    lines = [
        "### Embedding training: ContrastiveTrainer vs sentence-transformers SentenceTransformerTrainer",
        "",
        f"`{_common.command_line('bench_embedding_training.py')}`  ",
        f"MiniLM-L6 bi-encoder, batch {args.batch_size} queries x (1 positive + {args.group_size - 1} BM25 "
        f"negatives) = {texts} texts per step, in-batch negatives, temperature {TEMPERATURE}, max length "
        f"{args.max_length}, {args.steps} timed steps after {args.warmup} warm-up steps, "
        f"{'bf16' if args.bf16 else 'fp32'}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}. MRL rows: dims {args.dims}.",
        "",
        "| loss | trainer | samples/s (queries) | texts/s | peak RSS (MB) | mean loss |",
        "|---|---|---|---|---|---|",
    ]
    for variant, label in (("plain", "InfoNCE"), ("mrl", "InfoNCE + MRL")):
        st, ours = results[f"st-{variant}"], results[f"ours-{variant}"]
        for name, r in (("sentence-transformers", st), ("hf_ragtrain", ours)):
            lines.append(f"| {label} | {name} | {r['samples_per_s']:.2f} | "
                         f"{r['samples_per_s'] * (1 + args.group_size):.1f} | {r['peak_rss_mb']:.0f} | "
                         f"{r['mean_loss']:.4f} |")
        lines.append(f"| {label} | ratio (ours / theirs) | **{ours['samples_per_s'] / st['samples_per_s']:.2f}x** | | "
                     f"**{ours['peak_rss_mb'] / st['peak_rss_mb']:.2f}x** | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
