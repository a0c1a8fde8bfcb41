"""Train a tiny bi-encoder for a few steps; run alone or under torchrun (used by test_distributed_embedding.py).

    train_tiny_embedder.py MODEL_DIR OUT_DIR PER_DEVICE_BS [--deepspeed CONFIG] [--grad_cache] [--no_cross_device]
        [--colbert]   # a ColBERT model (ColbertTrainer) instead of a bi-encoder
        [--sparse]    # a SPLADE model (SparseTrainer, FLOPS regulariser on) instead of a bi-encoder
        [--save_steps N] [--resume_from CKPT]    # checkpoint every N steps / resume from a checkpoint
        [--perturb_init]                         # start from other weights (a resumed run must not care)
        [--shared] [--no_duplicates]             # 16 records sharing passages (conftest.shared_rows); batch_sampler no_duplicates
        [--guide]                                # GISTEmbed masking with MODEL_DIR itself as the guide
        [--multi]                                # two datasets (groups of 3 and of 2, loss weights 1 and 2)

Rank 0 writes OUT_DIR/log_history.json and the final model (sentence-transformers layout) to OUT_DIR/final.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/ (conftest helpers)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repo root

from conftest import shared_rows, tiny_records  # noqa: E402

from hf_ragtrain import (BiEncoder, ColbertEncoder, ColbertTrainer, ContrastiveTrainer,  # noqa: E402
                         EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset, SparseTrainer,
                         SparseTrainingArguments, SpladeEncoder, load_records)
from hf_ragtrain.distributed import end_distributed  # noqa: E402


def perturb(model):
    import torch

    gen = torch.Generator().manual_seed(123)
    for param in model.parameters():
        param.data.add_(0.1 * torch.randn(param.shape, generator=gen))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("per_device_bs", type=int)
    p.add_argument("--deepspeed", default=None)
    p.add_argument("--grad_cache", action="store_true")
    p.add_argument("--no_cross_device", action="store_true")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--colbert", action="store_true")
    p.add_argument("--sparse", action="store_true")
    p.add_argument("--save_steps", type=int, default=0)
    p.add_argument("--resume_from", default=None)
    p.add_argument("--shared", action="store_true")
    p.add_argument("--no_duplicates", action="store_true")
    p.add_argument("--guide", action="store_true")
    p.add_argument("--multi", action="store_true")
    p.add_argument("--perturb_init", action="store_true", help="start from other weights (a resumed run must not care)")
    a = p.parse_args()
    if a.colbert:
        model = ColbertEncoder.from_pretrained(a.model, colbert_dim=16, query_max_length=12, query_expansion=True)
    elif a.sparse:
        model = SpladeEncoder.from_pretrained(a.model)
    else:
        model = BiEncoder.from_pretrained(a.model)
    if a.perturb_init:
        perturb(model)
    records, _ = load_records(shared_rows(16, k=24) if a.shared else tiny_records(8))
    common = dict(
        output_dir=a.out, per_device_train_batch_size=a.per_device_bs, num_train_epochs=a.epochs,
        learning_rate=2e-3, logging_steps=1, report_to="none", use_cpu=True, seed=7,
        save_strategy="steps" if a.save_steps else "no", save_steps=a.save_steps or 500,
        deepspeed=a.deepspeed, disable_tqdm=True, grad_cache=a.grad_cache, cross_device_negatives=not a.no_cross_device,
        batch_sampler="no_duplicates" if a.no_duplicates else "random", guide_model=a.model if a.guide else None)
    if a.sparse:  # strong FLOPS weights with a warm-up, so the regulariser and its schedule are in the losses
        args = SparseTrainingArguments(**common, query_flops_weight=0.05, document_flops_weight=0.02,
                                       flops_warmup_ratio=0.5)
    else:
        args = EmbeddingTrainingArguments(**common, matryoshka_dims=None if a.colbert else [32, 16])
    train = GroupDataset(records, group_size=3, seed=7)
    if a.multi:
        from hf_ragtrain.data.multi_dataset import DatasetPart, MultiDataset

        records, _ = load_records(tiny_records(16))
        train = MultiDataset([DatasetPart("a", GroupDataset(records[:8], group_size=3, seed=7)),
                              DatasetPart("b", GroupDataset(records[8:], group_size=2, seed=7), weight=2.0)])
    trainer = (ColbertTrainer if a.colbert else SparseTrainer if a.sparse else ContrastiveTrainer)(
        model=model, args=args, train_dataset=train,
        data_collator=EmbeddingCollator(model, micro_batch_tokens=24))
    trainer.train(resume_from_checkpoint=a.resume_from)
    trainer.save_model(os.path.join(a.out, "final"))
    if trainer.is_world_process_zero():
        with open(os.path.join(a.out, "log_history.json"), "w") as fh:
            json.dump(trainer.state.log_history, fh)
    end_distributed(trainer)


if __name__ == "__main__":
    main()
