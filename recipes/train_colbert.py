#!/usr/bin/env python
"""Train a ColBERT (late-interaction) model, evaluate it before and after, save it with a model card.

    python recipes/train_colbert.py --output_dir runs/colbert                   # bundled Python FAQ data, MiniLM
    python recipes/train_colbert.py --output_dir runs/colbert-scifact --beir_dir ../shared/data/scifact \\
        --skip_punctuation True --query_expansion True
    torchrun --nproc_per_node 2 recipes/train_colbert.py --output_dir runs/ddp --deepspeed recipes/configs/ds_zero2.json

Every ``transformers.TrainingArguments`` flag works. The output folder loads with
``sentence_transformers.MultiVectorEncoder(DIR)`` and ``hf_ragtrain.ColbertEncoder.from_pretrained(DIR)``;
``eval_results.json`` holds dev retrieval metrics (brute-force MaxSim) before and after training and the
mteb results of the saved folder (the BEIR eval split as full-corpus MaxSim retrieval, else the dev
records as a MaxSim reranking task, plus --mteb_tasks); ``README.md`` is the model card, with those
results in its model-index.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (ColbertArguments, ColbertEncoder, ColbertTrainer, ColbertTrainingArguments,  # noqa: E402
                         EncoderRecipe, colbert_mteb)


class TrainColbert(EncoderRecipe):
    """A ColBERT model: token vectors scored by MaxSim, a new projection when the base has none."""

    options = {"colbert": ColbertArguments}
    training_arguments = ColbertTrainingArguments
    trainer_class = ColbertTrainer
    defaults = {"learning_rate": 3e-5, "per_device_train_batch_size": 16}
    card_family = "colbert"

    def build_model(self):
        c = self.colbert
        return ColbertEncoder.from_pretrained(
            self.model_args.model_name_or_path, attn_implementation=self.model_args.attn_implementation,
            seed=self.training_args.seed, skip_punctuation=c.skip_punctuation, colbert_dim=c.colbert_dim,
            query_max_length=c.query_max_length, document_max_length=c.document_max_length,
            query_prompt=c.query_prompt, document_prompt=c.document_prompt, query_expansion=c.query_expansion,
            attend_to_expansion=c.attend_to_expansion)

    def evaluate_saved(self, tasks):
        return colbert_mteb(self, tasks)

    def model_notes(self) -> list[str]:
        s = self.model.settings
        return [f"ColBERT: {s.colbert_dim}-dimensional token vectors, queries up to {s.query_max_length} tokens"
                + (" (padded to it with scored [MASK] tokens)" if s.query_expansion else "")
                + f", documents up to {s.document_max_length}"
                + (f", {len(s.skiplist)} skip-list tokens left out of document scoring" if s.skiplist else "") + "."]


def main(argv=None) -> int:
    return TrainColbert(REPO).run(argv)


if __name__ == "__main__":
    sys.exit(main())
