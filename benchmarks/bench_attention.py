#!/usr/bin/env python
"""One MiniLM cross-encoder training step (forward + backward, train mode with dropout) per attention kernel.

The batch is real: 8 Python-FAQ groups of 8 (query, passage) pairs from the bundled data, padded
to the longest pair (max_length tokens), so the padding-mask path is exercised. Reports the best
of ``--repeats`` steps for eager, sdpa and hf_ragtrain_cpu, in fp32 and under bf16 autocast.

    python benchmarks/bench_attention.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def best_step(model, batch, bf16: bool, repeats: int) -> float:
    """The fastest of ``repeats`` forward + backward passes of ``batch``, in seconds."""
    import torch

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(**batch).logits.float().sum().backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", default=None)
    args = p.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_ragtrain.data import GroupDataset, load_records
    from hf_ragtrain.allocator import keep_freed_memory
    from hf_ragtrain.hardware import cpu_description
    from hf_ragtrain.modeling.attention import register, use_fast_dropout
    from hf_ragtrain.offline import minilm_path

    records, _ = load_records(os.path.join(REPO, "data", "python_faq", "train.jsonl"))
    groups = [GroupDataset(records, group_size=8, seed=0)[i] for i in range(8)]
    tok = AutoTokenizer.from_pretrained(minilm_path())
    batch = dict(tok([g["query"] for g in groups for _ in g["docs"]], [d for g in groups for d in g["docs"]],
                     truncation=True, max_length=args.max_length, padding=True, return_tensors="pt"))
    padding = float((batch["attention_mask"] == 0).float().mean())

    rows = []
    for kernel in ("eager", "sdpa", register()):
        model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1,
                                                                   attn_implementation=kernel).train()
        if kernel != "eager" and kernel != "sdpa":
            use_fast_dropout(model)
        for bf16 in (False, True):
            rows.append((kernel, "bf16" if bf16 else "fp32", best_step(model, batch, bf16, args.repeats)))
        if kernel == register():  # what the trainers run: the same, with glibc keeping freed blocks
            with keep_freed_memory():
                rows.append((f"{kernel}, freed blocks kept (trainers' default)", "bf16",
                             best_step(model, batch, True, args.repeats)))

    base = {prec: t for k, prec, t in rows if k == "eager"}
    shape = tuple(batch["input_ids"].shape)
    lines = [
        "### Attention kernels: one MiniLM training step",
        "",
        f"`python benchmarks/bench_attention.py --max_length {args.max_length} --repeats {args.repeats}`  ",
        f"Batch {shape[0]} pairs x {shape[1]} tokens ({padding:.1%} padding), forward + backward in train mode "
        f"(dropout 0.1), best of {args.repeats}; {cpu_description()}, torch {torch.__version__}.",
        "",
        "| kernel | precision | seconds/step | speed vs eager |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {prec} | {t:.2f} | {base[prec] / t:.2f}x |" for k, prec, t in rows]
    table = "\n".join(lines)
    print(table)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
