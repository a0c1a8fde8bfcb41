#!/usr/bin/env python
"""Fine-tune an embedding model (bi-encoder), evaluate it before and after, save it with a model card.

    python recipes/train_embedding.py --output_dir runs/embedder                 # bundled Python FAQ data
    python recipes/train_embedding.py --output_dir runs/scifact --beir_dir ../shared/data/scifact \\
        --matryoshka_dims 384 256 128 64
    python recipes/train_embedding.py --output_dir runs/llm --model_name_or_path smollm2 --pooling last_token \\
        --append_eos --lora --query_prompt "Query: "
    torchrun --nproc_per_node 2 recipes/train_embedding.py --output_dir runs/ddp --deepspeed recipes/configs/ds_zero2.json

Every ``transformers.TrainingArguments`` flag works. The output folder is a sentence-transformers
model (``SentenceTransformer(DIR)`` loads it), with ``eval_results.json`` (dev retrieval metrics
before and after, mteb results) and ``README.md`` (the model card).
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (BiEncoder, ContrastiveTrainer, EmbeddingArguments, EmbeddingTrainingArguments,  # noqa: E402
                         EncoderRecipe, LoraArguments, embedder_mteb)


class TrainEmbedding(EncoderRecipe):
    """A bi-encoder, optionally with a LoRA adapter and an embedding teacher (Jasper/Stella style)."""

    options = {"embedding": EmbeddingArguments, "lora": LoraArguments}
    training_arguments = EmbeddingTrainingArguments
    trainer_class = ContrastiveTrainer
    defaults = {"per_device_train_batch_size": 32}

    def build_model(self):
        e = self.embedding
        return BiEncoder.from_pretrained(
            self.model_args.model_name_or_path, lora=self.lora.settings(),
            attn_implementation=self.model_args.attn_implementation, pooling=e.pooling, normalize=e.normalize,
            query_max_length=e.query_max_length, passage_max_length=e.passage_max_length,
            query_prompt=e.query_prompt, passage_prompt=e.passage_prompt, append_eos=e.append_eos)

    def trainer_options(self) -> dict:
        return {"teacher": self.build_teacher(), "truncate_dim": self.embedding.truncate_dim}

    def build_teacher(self):
        """Teacher vectors: precomputed (``--teacher_embeddings``) or from a frozen bi-encoder."""
        from hf_ragtrain.modeling.teacher import ModelTeacher, PrecomputedTeacher

        e = self.embedding
        if e.teacher_embeddings:
            if not e.teacher_texts:
                raise ValueError("--teacher_embeddings needs --teacher_texts (the text of each row)")
            return PrecomputedTeacher.load(e.teacher_embeddings, e.teacher_texts)
        return ModelTeacher(BiEncoder.from_pretrained(e.teacher_model)) if e.teacher_model else None

    def finish_saving(self) -> None:
        if self.lora.merge_lora:
            self.merge_lora_adapter(truncate_dim=self.embedding.truncate_dim)

    def evaluate_saved(self, tasks):
        return embedder_mteb(self, tasks)

    def model_notes(self) -> list[str]:
        s = self.model.settings
        return [f"Encoder: {s.pooling} pooling, {'L2-normalised' if s.normalize else 'unnormalised'}, queries up "
                f"to {s.query_max_length} tokens, passages up to {s.passage_max_length}"
                + (f", query prompt {s.query_prompt!r}" if s.query_prompt else "")
                + (f", passage prompt {s.passage_prompt!r}" if s.passage_prompt else "")
                + (", EOS appended" if s.append_eos else "") + ". sentence-transformers' encode_query and "
                "encode_document apply these prompts and lengths; a plain encode() uses the passage length."]


def main(argv=None) -> int:
    return TrainEmbedding(REPO).run(argv)


if __name__ == "__main__":
    sys.exit(main())
