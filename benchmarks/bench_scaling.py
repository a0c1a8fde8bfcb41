#!/usr/bin/env python
"""Scaling with the data: RerankTrainer on N records and on 10 N records, one epoch each.

Both runs read their records from a jsonl file through the package's loader (validation, group
sampling, collator, trainer: the whole path a recipe takes) and train the MiniLM cross-encoder for
one epoch with the same settings, each in its own process. The claim checked: 10x the records costs
at most 10.5x the training time, at flat peak memory (nothing grows with the data set but the
records themselves).

    python benchmarks/bench_scaling.py --beir_dir ../shared/data/scifact --bf16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

SIZES = {"x1": 1, "x10": 10}


def worker(args) -> None:
    import torch

    from hf_ragtrain import (GroupDataset, RerankCollator, RerankerTrainingArguments, RerankTrainer,
                             load_cross_encoder, load_records)
    from hf_ragtrain.memory import peak_memory  # this program's peak, not its parent's at the fork
    from hf_ragtrain.offline import resolve_model_path

    torch.manual_seed(0)
    start = time.perf_counter()
    records, _ = load_records(os.path.join(args.data_dir, f"{args.worker}.jsonl"))
    model, tok = load_cross_encoder(resolve_model_path(args.model))
    with tempfile.TemporaryDirectory() as out:
        trainer = RerankTrainer(
            model=model, processing_class=tok,
            args=RerankerTrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size,
                                           num_train_epochs=1, learning_rate=2e-5, logging_steps=1,
                                           report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                                           seed=0, bf16=args.bf16, dataloader_drop_last=True),
            train_dataset=GroupDataset(records, group_size=args.group_size, seed=0),
            data_collator=RerankCollator(tok, max_length=args.max_length,
                                         micro_batch_tokens=args.micro_batch_tokens or None,
                                         pad_to_multiple_of=_common.pad_to_multiple_of(args)))
        metrics = trainer.train().metrics
    print("RESULT " + json.dumps({
        "records": len(records), "steps": trainer.state.global_step,
        "train_seconds": metrics["train_runtime"], "total_seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_memory()["resident_mb"],
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir_dir", required=True)
    p.add_argument("--model", default="minilm")
    p.add_argument("--records", type=int, default=200,
                   help="N: records in the small run (the large one has 10 N; past SciFact's 809 train queries "
                        "the records start over)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--group_size", type=int, default=4)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--micro_batch_tokens", type=int, default=2048)
    _common.add_padding_option(p)
    p.add_argument("--bf16", action="store_true")
    _common.add_output_options(p)
    p.add_argument("--worker", choices=list(SIZES), help=argparse.SUPPRESS)
    p.add_argument("--groups", help=argparse.SUPPRESS)
    p.add_argument("--data_dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    groups = _common.build_groups(args.beir_dir, args.group_size, args.records * SIZES["x10"], cycle=True)
    with tempfile.TemporaryDirectory() as data_dir:
        for name, factor in SIZES.items():
            with open(os.path.join(data_dir, f"{name}.jsonl"), "w") as fh:
                for g in groups[:args.records * factor]:
                    fh.write(json.dumps({"query": g["query"], "pos": g["docs"][:1], "neg": g["docs"][1:]}) + "\n")
        results = _common.run_workers(__file__, [*sys.argv[1:], "--data_dir", data_dir], [], list(SIZES))
    small, large = results["x1"], results["x10"]
    results["time_ratio"] = large["train_seconds"] / small["train_seconds"]
    results["memory_ratio"] = large["peak_rss_mb"] / small["peak_rss_mb"]
    summary = [{"name": "Scaling: RerankTrainer, 10x the records (time ratio; target <= 10.5)", "unit": "ratio",
                "ours": results["time_ratio"], "theirs": None, "ours_mb": large["peak_rss_mb"],
                "theirs_mb": small["peak_rss_mb"]}]
    _common.finish(args, render(args, results), summary, results)


def render(args, r: dict) -> str:
    import platform

    import torch

    small, large = r["x1"], r["x10"]
    rows = [f"| {res['records']} | {res['steps']} | {res['train_seconds']:.1f} | "
            f"{res['train_seconds'] / res['steps']:.2f} | {res['peak_rss_mb']:.0f} |" for res in (small, large)]
    return "\n".join([
        "### Scaling: 10x the records",
        "",
        f"`{_common.command_line('bench_scaling.py')}`  ",
        f"RerankTrainer on the MiniLM cross-encoder, records read from jsonl by `load_records`, one epoch, batch "
        f"{args.batch_size} queries x group {args.group_size}, max_length {args.max_length}, micro-batches of "
        f"{args.micro_batch_tokens} tokens {_common.padding_text(args)}, "
        f"{'bf16' if args.bf16 else 'fp32'}, each run in its own process, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}.",
        "",
        "| records | steps | training time (s) | s/step | peak RSS (MB) |",
        "|---|---|---|---|---|",
        *rows,
        f"| **10x** | | **{r['time_ratio']:.2f}x** (target <= 10.5x) | | **{r['memory_ratio']:.2f}x** |",
    ])


if __name__ == "__main__":
    main()
