"""Train a tiny cross-encoder for a few steps; run alone or under torchrun (used by test_distributed.py).

    python train_tiny_reranker.py MODEL_DIR OUT_DIR PER_DEVICE_BS [--deepspeed CONFIG] [--loss listwise]

Rank 0 writes OUT_DIR/log_history.json and the final model to OUT_DIR/final.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/ (conftest helpers)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repo root

from conftest import tiny_records  # noqa: E402

from hf_ragtrain.trainers.base import end_distributed  # noqa: E402

from hf_ragtrain import (GroupDataset, RerankCollator, RerankerTrainingArguments, RerankTrainer,  # noqa: E402
                         load_cross_encoder, load_records)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("per_device_bs", type=int)
    p.add_argument("--deepspeed", default=None)
    p.add_argument("--loss", default="listwise")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    model, tok = load_cross_encoder(a.model)
    records, _ = load_records(tiny_records(8))
    args = RerankerTrainingArguments(
        output_dir=a.out, per_device_train_batch_size=a.per_device_bs, num_train_epochs=a.epochs,
        learning_rate=3e-3, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=7,
        rerank_loss=a.loss, deepspeed=a.deepspeed, disable_tqdm=True,
    )
    trainer = RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=4, seed=7),
                            data_collator=RerankCollator(tok, max_length=32, micro_batch_tokens=64),
                            processing_class=tok)
    trainer.train()
    trainer.save_model(os.path.join(a.out, "final"))
    if trainer.is_world_process_zero():
        with open(os.path.join(a.out, "log_history.json"), "w") as fh:
            json.dump(trainer.state.log_history, fh)
    end_distributed()


if __name__ == "__main__":
    main()
