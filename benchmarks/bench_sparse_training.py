#!/usr/bin/env python
"""SPLADE training speed and memory: hf_ragtrain SparseTrainer vs sentence-transformers SparseEncoderTrainer.

Both start from the same folder (MiniLM with the MLM head SpladeEncoder builds for it, saved in the
SparseEncoder layout, so both load identical weights) and train on the same query groups (1 positive
+ BM25 hard negatives from a BEIR folder's train split) with the same batch, lengths, learning rate,
steps and loss: InfoNCE over sparse dot products at temperature 1 with in-batch and hard negatives,
plus the FLOPS regulariser of queries and documents with the same weights, raised quadratically
over the first third of the steps (theirs: ``SpladeLoss(SparseMultipleNegativesRankingLoss(scale=1))``
on (anchor, positive, negative_1..N) columns, whose trainer adds the same warm-up). Each side runs
in its own subprocess, one after the other in the same invocation; peak memory is that process's
peak resident set size.

    python benchmarks/bench_sparse_training.py --beir_dir ../shared/data/scifact --bf16 --write BENCHMARKS.md
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

QUERY_FLOPS, DOCUMENT_FLOPS = 5e-5, 3e-5


def training_args(args, out) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps + args.warmup,
                learning_rate=2e-5, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
                disable_tqdm=True, seed=0, bf16=args.bf16, dataloader_drop_last=True)


def start_folder(args) -> str:
    """The shared starting point, written once per invocation."""
    from hf_ragtrain import SpladeEncoder

    folder = os.path.join(args.work_dir, "start")
    if not os.path.isfile(os.path.join(folder, "modules.json")):
        SpladeEncoder.from_pretrained(args.model, query_max_length=args.query_length,
                                      document_max_length=args.document_length).save_pretrained(folder)
    return folder


def run_ours(args, groups, out):
    from hf_ragtrain import EmbeddingCollator, SparseTrainer, SparseTrainingArguments, SpladeEncoder

    model = SpladeEncoder.from_pretrained(args.start)
    timer = StepTimer(args.warmup)
    targs = SparseTrainingArguments(**training_args(args, out), query_flops_weight=QUERY_FLOPS,
                                    document_flops_weight=DOCUMENT_FLOPS)
    trainer = SparseTrainer(model=model, args=targs, train_dataset=_common.ListDataset(groups),
                            callbacks=[timer.callback],
                            data_collator=EmbeddingCollator(model, micro_batch_tokens=args.micro_batch_tokens or None))
    trainer.train()
    return timer, trainer.state.log_history


def run_st(args, groups, out):
    import datasets
    from sentence_transformers import SparseEncoder, SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss

    rows = [{"anchor": g["query"], "positive": g["docs"][0],
             **{f"negative_{j}": d for j, d in enumerate(g["docs"][1:], start=1)}} for g in groups]
    model = SparseEncoder(args.start, device="cpu")
    loss = SpladeLoss(model, loss=SparseMultipleNegativesRankingLoss(model, scale=1.0),
                      query_regularizer_weight=QUERY_FLOPS, document_regularizer_weight=DOCUMENT_FLOPS)
    timer = StepTimer(args.warmup)
    trainer = SparseEncoderTrainer(model=model, args=SparseEncoderTrainingArguments(**training_args(args, out)),
                                   train_dataset=datasets.Dataset.from_list(rows), loss=loss,
                                   callbacks=[timer.callback])
    trainer.train()
    return timer, trainer.state.log_history


def worker(args) -> None:
    run = run_ours if args.worker == "ours" else run_st
    _common.run_worker(args.groups, lambda groups, out: run(args, groups, out), args.batch_size, args.steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir_dir", required=True)
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--group_size", type=int, default=4)
    p.add_argument("--query_length", type=int, default=64)
    p.add_argument("--document_length", type=int, default=256)
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--micro_batch_tokens", type=int, default=0, help="0: one micro-batch per kind, as theirs")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--work_dir", default="/tmp/bench_sparse")
    _common.add_output_options(p)
    p.add_argument("--worker", choices=["ours", "st"], help=argparse.SUPPRESS)
    p.add_argument("--groups", help=argparse.SUPPRESS)
    p.add_argument("--start", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    groups = _common.build_groups(args.beir_dir, args.group_size, args.batch_size * (args.steps + args.warmup))
    start = start_folder(args)
    results = _common.run_workers(__file__, [*sys.argv[1:], "--start", start], groups, ["st", "ours"])
    _common.finish(args, render(args, results), summary(results), results)


def summary(results) -> list[dict]:
    return [_common.summary_row("SPLADE training (SparseTrainer vs SparseEncoderTrainer)", "queries/s",
                                results["ours"], results["st"])]


def render(args, results) -> str:
    import torch

    texts = args.batch_size * (1 + args.group_size)
    st, ours = results["st"], results["ours"]
    lines = [
        "### SPLADE training: SparseTrainer vs sentence-transformers SparseEncoderTrainer",
        "",
        f"`{_common.command_line('bench_sparse_training.py')}`  ",
        f"MiniLM-L6 SPLADE (the same starting folder for both: the MLM head SpladeEncoder builds, 30,522 "
        f"entries), batch {args.batch_size} queries x (1 positive + {args.group_size - 1} BM25 negatives) = {texts} "
        f"texts per step, InfoNCE over dot products (temperature 1, in-batch negatives) + FLOPS (queries "
        f"{QUERY_FLOPS:g}, documents {DOCUMENT_FLOPS:g}, quadratic warm-up over a third of the steps), queries up "
        f"to {args.query_length} tokens, documents up to {args.document_length}, {args.steps} timed steps after "
        f"{args.warmup} warm-up steps, {'bf16' if args.bf16 else 'fp32'}, torch {torch.__version__}, "
        f"{_common.cpu_description()}.",
        "",
        "| trainer | samples/s (queries) | texts/s | peak RSS (MB) | mean loss |",
        "|---|---|---|---|---|",
    ]
    for name, r in (("sentence-transformers SparseEncoderTrainer", st), ("hf_ragtrain SparseTrainer", ours)):
        lines.append(f"| {name} | {r['samples_per_s']:.2f} | {r['samples_per_s'] * (1 + args.group_size):.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['mean_loss']:.4f} |")
    lines.append(f"| ratio (ours / theirs) | **{ours['samples_per_s'] / st['samples_per_s']:.2f}x** | | "
                 f"**{ours['peak_rss_mb'] / st['peak_rss_mb']:.2f}x** | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
