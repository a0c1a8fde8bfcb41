"""Train a tiny cross-encoder for a few steps; run alone or under torchrun (used by test_distributed.py).

    python train_tiny_reranker.py MODEL_DIR OUT_DIR PER_DEVICE_BS [--deepspeed CONFIG] [--loss listwise]
        [--distill]                              # DistillTrainer on teacher scores in the records
        [--save_steps N] [--resume_from CKPT]    # checkpoint every N steps / resume from a checkpoint
        [--perturb_init]                         # start from other weights (a resumed run must not care)
        [--kill_during_save N]                   # SIGKILL this process halfway through writing checkpoint-N

Rank 0 writes OUT_DIR/log_history.json, OUT_DIR/counts.json (pairs seen and cut) and the final model to
OUT_DIR/final. --resume_from latest resumes from the last complete checkpoint in OUT_DIR.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/ (conftest helpers)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repo root

from conftest import tiny_records  # noqa: E402

from hf_ragtrain.distributed import end_distributed  # noqa: E402

from hf_ragtrain import (DistillTrainer, DistillTrainingArguments, GroupDataset, RerankCollator,  # noqa: E402
                         RerankerTrainingArguments, RerankTrainer, load_cross_encoder, load_records)


def with_teacher_scores(records):
    """The records with a deterministic teacher's scores: word overlap with the query, in tenths."""
    def overlap(q, d):
        return len(set(q.split()) & set(d.split())) / 10

    return [{**r, "pos_scores": [overlap(r["query"], d) for d in r["pos"]],
             "neg_scores": [overlap(r["query"], d) for d in r["neg"]]} for r in records]


def perturb(model):
    import torch

    gen = torch.Generator().manual_seed(123)
    for param in model.parameters():
        param.data.add_(0.1 * torch.randn(param.shape, generator=gen))


def kill_during_save(trainer, step):
    """Make the process die (SIGKILL, no clean-up) after the model weights of checkpoint-``step`` are
    written and before the rest of the checkpoint is."""
    import signal

    save = trainer._save

    def dying_save(output_dir=None, state_dict=None):
        save(output_dir, state_dict)
        if trainer.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer._save = dying_save


def record_step_modes(trainer) -> list[str]:
    """The list that each training step's mode (``RerankTrainer.step_mode``) is appended to."""
    modes: list[str] = []
    step_mode = trainer.step_mode

    def recorded(inputs):
        modes.append(step_mode(inputs))
        return modes[-1]

    trainer.step_mode = recorded
    return modes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("per_device_bs", type=int)
    p.add_argument("--deepspeed", default=None)
    p.add_argument("--loss", default="listwise")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--distill", action="store_true")
    p.add_argument("--save_steps", type=int, default=0)
    p.add_argument("--resume_from", default=None)
    p.add_argument("--perturb_init", action="store_true", help="start from other weights (a resumed run must not care)")
    p.add_argument("--kill_during_save", type=int, default=0)
    p.add_argument("--micro_batch_tokens", type=int, default=64, help="64: each group takes two passes (GradCache)")
    a = p.parse_args()
    model, tok = load_cross_encoder(a.model)
    if a.perturb_init:
        perturb(model)
    raw = tiny_records(8)
    records, _ = load_records(with_teacher_scores(raw) if a.distill else raw)
    common = dict(
        output_dir=a.out, per_device_train_batch_size=a.per_device_bs, num_train_epochs=a.epochs,
        learning_rate=3e-3, logging_steps=1, report_to="none", use_cpu=True, seed=7,
        save_strategy="steps" if a.save_steps else "no", save_steps=a.save_steps or 500,
        rerank_loss=a.loss, deepspeed=a.deepspeed, disable_tqdm=True,
    )
    if a.distill:
        args = DistillTrainingArguments(**common, distill_loss="soft_ce", distill_temperature=0.5,
                                        hard_label_weight=0.5)
    else:
        args = RerankerTrainingArguments(**common)
    trainer = (DistillTrainer if a.distill else RerankTrainer)(
        model=model, args=args, train_dataset=GroupDataset(records, group_size=4, seed=7),
        data_collator=RerankCollator(tok, max_length=32, micro_batch_tokens=a.micro_batch_tokens), processing_class=tok)
    modes = record_step_modes(trainer)
    if a.kill_during_save:
        kill_during_save(trainer, a.kill_during_save)
    trainer.train(resume_from_checkpoint=a.resume_from)
    trainer.save_model(os.path.join(a.out, "final"))
    counts = trainer.total_counts()
    with open(os.path.join(a.out, f"step_modes_{trainer.args.process_index}.json"), "w") as fh:
        json.dump(modes, fh)
    if trainer.is_world_process_zero():
        with open(os.path.join(a.out, "log_history.json"), "w") as fh:
            json.dump(trainer.state.log_history, fh)
        with open(os.path.join(a.out, "counts.json"), "w") as fh:
            json.dump(counts, fh)
    end_distributed(trainer)


if __name__ == "__main__":
    main()
