#!/usr/bin/env python
"""Train a reranker (a cross-encoder, or a decoder-only LLM), evaluate it before and after, save it with a model card.

    python recipes/train_reranker.py --output_dir runs/reranker             # bundled Python FAQ data
    python recipes/train_reranker.py --output_dir runs/scifact --beir_dir ../shared/data/scifact
    torchrun --nproc_per_node 2 recipes/train_reranker.py --output_dir runs/ddp --deepspeed recipes/configs/ds_zero2.json
    # an LLM reranker: SmolLM2 with LoRA, scored by the logit of " Yes" after the prompt template
    python recipes/train_reranker.py --output_dir runs/llm --model_name_or_path smollm2 --llm_head yes_token --lora

Every ``transformers.TrainingArguments`` flag works. The output folder holds the final model
(a cross-encoder loads with ``AutoModelForSequenceClassification`` and sentence-transformers
``CrossEncoder``; an LLM reranker with ``hf_ragtrain.LlmReranker.from_pretrained``),
``eval_results.json`` (metrics before and after training) and ``README.md`` (the model card).
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (LlmReranker, LlmRerankerArguments, LoraArguments, RerankerRecipe,  # noqa: E402
                         find_reranker_kind, load_cross_encoder)
from hf_ragtrain.offline import resolve_model_path  # noqa: E402


class TrainReranker(RerankerRecipe):
    """A cross-encoder, or with ``--llm_head`` (or a saved LLM reranker folder) an :class:`LlmReranker`."""

    options = {"llm": LlmRerankerArguments, "lora": LoraArguments}

    @property
    def is_llm(self) -> bool:
        return isinstance(self.model, LlmReranker)

    @property
    def llm_card(self) -> bool:
        return self.is_llm

    def build_model(self):
        base, llm = resolve_model_path(self.model_args.model_name_or_path), self.llm
        if llm.llm_head is None and find_reranker_kind(base) not in ("llm", "layerwise-llm"):
            if self.lora.lora or llm.layerwise:
                raise ValueError("--lora and --layerwise apply to LLM rerankers: add --llm_head yes_token (or classifier)")
            model, self.tokenizer = load_cross_encoder(base, attn_implementation=self.model_args.attn_implementation)
            return model
        model = LlmReranker.from_pretrained(base, lora=self.lora.settings(),
                                            attn_implementation=self.model_args.attn_implementation,
                                            head=llm.llm_head, template=llm.template, yes_token=llm.yes_token,
                                            layerwise=llm.layerwise or None, start_layer=llm.start_layer,
                                            max_length=self.model_args.max_length)
        self.tokenizer = model.tokenizer
        return model

    def build_collator(self):
        if self.is_llm:  # the LLM writes each pair into its prompt template
            return self.model.collator(max_length=self.model_args.max_length, **self.batching())
        return super().build_collator()

    def finish_saving(self) -> None:
        if self.is_llm and self.lora.merge_lora:
            self.merge_lora_adapter()

    def model_notes(self) -> list[str]:
        return [llm_note(self.model)] if self.is_llm else []


def llm_note(model: LlmReranker) -> str:
    """What the card says about how an LLM reranker scores."""
    s = model.settings
    how = (f"the logit of the token {s.yes_token!r} (id {model.yes_token_id}) at the prompt's last position"
           if s.head == "yes_token" else "a 1-logit classification head on the prompt's last token")
    note = f"LLM reranker: score = {how}; prompt template {s.template!r}"
    if s.layerwise:
        note += (f"; layerwise heads on layers {model.scored_layers[0]}-{model.scored_layers[-1]} (inference can stop "
                 "at any of them with cutoff_layer)")
    if model.is_peft:
        note += "; trained as a LoRA adapter (peft)"
    return note + "."


def main(argv=None) -> int:
    return TrainReranker(REPO).run(argv)


if __name__ == "__main__":
    sys.exit(main())
