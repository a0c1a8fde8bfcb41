#!/usr/bin/env python
"""Cross-encoder training speed: hf_ragtrain RerankTrainer vs sentence-transformers CrossEncoderTrainer.

Both train the same MiniLM cross-encoder on the same query groups (1 positive + hard negatives mined
with BM25 from a BEIR folder), with the same batch, group size, max length, learning rate and number
of steps, and the same loss: softmax cross-entropy over each group (ours: ``listwise``; theirs:
``MultipleNegativesRankingLoss(num_negatives=0, scale=1, activation_fn=Identity)``, whose
in-batch negatives are switched off by a subclass because ``num_negatives=0`` crashes in 6.2, on
(query, positive, negative_1..N) columns). Each side runs in its own subprocess, one after the other
in the same invocation; peak memory is that process's peak resident set size.

    python benchmarks/bench_rerank_training.py --beir_dir ../shared/data/scifact --write BENCHMARKS.md
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


def build_groups(args) -> list[dict]:
    return _common.build_groups(args.beir_dir, args.group_size, args.batch_size * (args.steps + args.warmup))


def common_args(args, out):
    return dict(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps + args.warmup,
                learning_rate=2e-5, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
                disable_tqdm=True, seed=0, bf16=args.bf16, dataloader_drop_last=True)


def run_ours(args, groups, out):
    from hf_ragtrain import RerankCollator, RerankerTrainingArguments, RerankTrainer, load_cross_encoder
    from hf_ragtrain.offline import resolve_model_path

    model, tok = load_cross_encoder(resolve_model_path(args.model))
    timer = StepTimer(args.warmup)
    grad_cache = {"grad_cache": True} if args.grad_cache else {}
    trainer = RerankTrainer(model=model, args=RerankerTrainingArguments(**common_args(args, out), **grad_cache),
                            train_dataset=_common.ListDataset(groups), processing_class=tok, callbacks=[timer.callback],
                            data_collator=RerankCollator(tok, max_length=args.max_length,
                                                         micro_batch_tokens=args.micro_batch_tokens or None,
                                                         pad_to_multiple_of=_common.pad_to_multiple_of(args)))
    trainer.train()
    return timer, trainer.state.log_history


def run_st(args, groups, out):
    import datasets
    import torch
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments)
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    from hf_ragtrain.offline import resolve_model_path

    rows = [{"query": g["query"], "positive": g["docs"][0],
             **{f"negative_{j}": d for j, d in enumerate(g["docs"][1:], start=1)}} for g in groups]
    model = CrossEncoder(resolve_model_path(args.model), num_labels=1, max_length=args.max_length, device="cpu",
                         activation_fn=torch.nn.Identity())
    class HardNegativesOnly(MultipleNegativesRankingLoss):
        # num_negatives=0 crashes in sentence-transformers 6.2 (torch.multinomial with 0 samples);
        # yielding no in-batch negatives is what it means: softmax over (positive, hard negatives).
        def get_in_batch_negatives(self, anchors, candidates):
            return iter(())

    loss = HardNegativesOnly(model, num_negatives=0, scale=1.0, activation_fn=torch.nn.Identity())
    timer = StepTimer(args.warmup)
    trainer = CrossEncoderTrainer(model=model, args=CrossEncoderTrainingArguments(**common_args(args, out)),
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
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--group_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--micro_batch_tokens", type=int, default=2048)
    _common.add_padding_option(p)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--grad_cache", action="store_true", help="ours steps by GradCache (what it did before group steps)")
    _common.add_output_options(p)
    p.add_argument("--worker", choices=["ours", "st"], help=argparse.SUPPRESS)
    p.add_argument("--groups", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    groups = build_groups(args)
    results = _common.run_workers(__file__, sys.argv[1:], groups, ["st", "ours"])
    efficiency = hardware_efficiency(args, groups, results)
    table = render(args, results) + "\n\n" + render_efficiency(args, efficiency)
    summary = [_common.summary_row("Cross-encoder training (RerankTrainer vs CrossEncoderTrainer)", "queries/s",
                                   results["ours"], results["st"]),
               {"name": "Cross-encoder training: useful FLOP/s as a share of torch's GEMM FLOP/s", "unit": "share",
                "ours": efficiency["ours_share"], "theirs": efficiency["st_share"], "ours_mb": None,
                "theirs_mb": None}]
    _common.finish(args, table, summary, {**results, "efficiency": efficiency})


def hardware_efficiency(args, groups: list[dict], results: dict) -> dict:
    """Each side's useful training FLOP/s (see _flops) and its share of the GEMM FLOP/s measured now."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    import _flops
    from hf_ragtrain.offline import resolve_model_path

    path = resolve_model_path(args.model)
    config = AutoConfig.from_pretrained(path, num_labels=1)
    per_token, per_sequence = _flops.matmul_parameters(AutoModelForSequenceClassification.from_config(config))
    lengths = _flops.cross_encoder_lengths(AutoTokenizer.from_pretrained(path), groups, args.max_length)
    # every group is trained on once (one epoch); the timed steps see the average group
    flops_per_group = _flops.training_flops(lengths, per_token, per_sequence, config.num_hidden_layers,
                                            config.hidden_size) / len(groups)
    dtype = "bfloat16" if args.bf16 else "float32"
    gemm = _flops.gemm_flops_per_s(dtype)
    out = {"gemm_flops_per_s": gemm, "gemm_dtype": dtype, "flops_per_query_group": flops_per_group,
           "per_token_params": per_token, "mean_pair_tokens": sum(lengths) / len(lengths)}
    for side in ("ours", "st"):
        out[f"{side}_flops_per_s"] = results[side]["samples_per_s"] * flops_per_group
        out[f"{side}_share"] = out[f"{side}_flops_per_s"] / gemm
    return out


def render_efficiency(args, e: dict) -> str:
    return "\n".join([
        f"Hardware efficiency of the same runs: useful training FLOP/s (benchmarks/_flops.py: 3 x the forward "
        f"matrix products of the real tokens, {e['per_token_params'] / 1e6:.1f}M per-token weights, "
        f"{e['mean_pair_tokens']:.0f} tokens per pair on average) against a {e['gemm_dtype']} 2048 x 2048 "
        f"matmul measured in the same run.",
        "",
        "| | useful GFLOP/s | share of GEMM |",
        "|---|---|---|",
        f"| torch matmul, {e['gemm_dtype']} | {e['gemm_flops_per_s'] / 1e9:.1f} | 1 |",
        f"| sentence-transformers CrossEncoderTrainer | {e['st_flops_per_s'] / 1e9:.1f} | {e['st_share']:.1%} |",
        f"| hf_ragtrain RerankTrainer | {e['ours_flops_per_s'] / 1e9:.1f} | **{e['ours_share']:.1%}** |",
    ])


def render(args, results) -> str:
    import platform

    import torch

    ours, st = results["ours"], results["st"]
    cmd = _common.command_line("bench_rerank_training.py")
    pairs = {k: r["samples_per_s"] * args.group_size for k, r in results.items()}
    lines = [
        "### Cross-encoder training: RerankTrainer vs sentence-transformers CrossEncoderTrainer",
        "",
        f"`{cmd}`  ",
        f"MiniLM-L6 cross-encoder, batch {args.batch_size} queries x group {args.group_size} "
        f"(1 positive + {args.group_size - 1} BM25 negatives), max_length {args.max_length}, "
        f"{args.steps} timed steps after {args.warmup} warm-up steps, {'bf16' if args.bf16 else 'fp32'}, "
        f"ours in micro-batches of {args.micro_batch_tokens} tokens {_common.padding_text(args)}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.processor() or platform.machine()}.",
        "",
        "| | samples/s (queries) | pairs/s | peak RSS (MB) | mean loss |",
        "|---|---|---|---|---|",
        f"| sentence-transformers CrossEncoderTrainer | {st['samples_per_s']:.2f} | {pairs['st']:.1f} | "
        f"{st['peak_rss_mb']:.0f} | {st['mean_loss']:.4f} |",
        f"| hf_ragtrain RerankTrainer | {ours['samples_per_s']:.2f} | {pairs['ours']:.1f} | "
        f"{ours['peak_rss_mb']:.0f} | {ours['mean_loss']:.4f} |",
        f"| ratio (ours / theirs) | **{ours['samples_per_s'] / st['samples_per_s']:.2f}x** | | "
        f"**{ours['peak_rss_mb'] / st['peak_rss_mb']:.2f}x** | |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
