#!/usr/bin/env python
"""Train a SPLADE (learned sparse) retriever, evaluate it before and after, save it with a model card.

    python recipes/train_sparse.py --output_dir runs/splade                      # bundled Python FAQ data, MiniLM
    python recipes/train_sparse.py --output_dir runs/splade-scifact --beir_dir ../shared/data/scifact \\
        --hybrid_dense_model runs/scifact-embedder
    python recipes/train_sparse.py --output_dir runs/splade-if --inference_free     # queries need no forward pass
    torchrun --nproc_per_node 2 recipes/train_sparse.py --output_dir runs/ddp --deepspeed recipes/configs/ds_zero2.json

Every ``transformers.TrainingArguments`` flag works. The output folder loads with
``sentence_transformers.SparseEncoder(DIR)`` and ``hf_ragtrain.SpladeEncoder.from_pretrained(DIR)``;
``eval_results.json`` holds dev retrieval metrics (inverted-index search over the dev documents)
before and after training, the vectors' active dimensions, and the mteb results of the saved folder
(alone, and fused with ``--hybrid_dense_model`` when given); ``README.md`` is the model card.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (EncoderRecipe, HybridArguments, SparseArguments, SparseTrainer, SparseTrainingArguments,  # noqa: E402
                         SpladeEncoder, sparse_mteb)


class TrainSparse(EncoderRecipe):
    """A SPLADE model: MLM logits max-pooled into vocabulary weights; an identity-initialised head when the
    base has none; the inference-free variant's query weights are IDFs over the training documents."""

    options = {"sparse": SparseArguments, "hybrid": HybridArguments}
    training_arguments = SparseTrainingArguments
    trainer_class = SparseTrainer
    # 2e-4 rather than the usual 5e-5: the MLM head is new on an encoder without one (MiniLM), and dev nDCG@10
    # rose 0.6958 -> 0.7350 on SciFact and 0.4218 -> 0.5328 on the bundled data (BENCHMARKS.md "SPLADE quality");
    # fine-tuning a trained SPLADE checkpoint wants a lower rate (--learning_rate 2e-5).
    defaults = {"learning_rate": 2e-4, "per_device_train_batch_size": 16}
    card_family = "sparse"

    def build_model(self):
        s = self.sparse
        model = SpladeEncoder.from_pretrained(
            self.model_args.model_name_or_path, attn_implementation=self.model_args.attn_implementation,
            inference_free=s.inference_free or None, query_max_length=s.query_max_length,
            document_max_length=s.document_max_length, query_prompt=s.query_prompt,
            document_prompt=s.document_prompt, max_active_dims=s.max_active_dims)
        if model.settings.inference_free and s.inference_free:
            records = [*self.data.train, *self.data.dev]
            model.set_query_idf(list(dict.fromkeys(d for r in records for d in (*r.pos, *r.neg))))
        return model

    def evaluate_saved(self, tasks):
        return sparse_mteb(self, tasks)

    def model_notes(self) -> list[str]:
        s = self.model.settings
        notes = [f"SPLADE: {self.model.vocab_size}-dimensional sparse vectors (max over tokens of log(1 + ReLU(MLM "
                 f"logits))), scored by dot product; queries up to {s.query_max_length} tokens, documents up to "
                 f"{s.document_max_length}."]
        if s.inference_free:
            notes.append("Inference-free: a query's vector is the IDF weight of each of its tokens (no forward pass).")
        if s.head != "loaded":
            notes.append(f"MLM head {s.head}.")
        if s.max_active_dims:
            notes.append(f"Vectors keep their top {s.max_active_dims} weights when encoded for search.")
        return notes


def main(argv=None) -> int:
    return TrainSparse(REPO).run(argv)


if __name__ == "__main__":
    sys.exit(main())
