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

import json
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (DataArguments, GroupDataset, LlmReranker,  # noqa: E402
                         LlmRerankerArguments, LoraSettings, ModelArguments, RerankCollator,
                         RerankerTrainingArguments, RerankingEvaluator, RerankTrainer, load_cross_encoder)
from hf_ragtrain.arguments import collator_batching  # noqa: E402
from hf_ragtrain.hub import CardInfo, render_reranker_card, write_model_card  # noqa: E402
from hf_ragtrain.modeling.llm_reranker import SETTINGS_FILE  # noqa: E402
from hf_ragtrain.offline import resolve_model_path  # noqa: E402
from hf_ragtrain.recipe_utils import (card_base_model, parse_recipe_args, print_reranker_summary,  # noqa: E402
                                      push_run, reranker_mteb_evaluation, reranker_mteb_json, start_run,
                                      train_evaluate_save)
from hf_ragtrain.trainers.base import end_distributed  # noqa: E402

logger = logging.getLogger("train_reranker")

# Recipe defaults where the stock TrainingArguments defaults do not suit a small reranking job.
RECIPE_DEFAULTS = dict(
    learning_rate=5e-5, num_train_epochs=1, per_device_train_batch_size=8, warmup_steps=0.1,
    logging_steps=5, eval_strategy="epoch", save_strategy="no", report_to="none", seed=42,
)


def parse_args(argv=None):
    return parse_recipe_args((ModelArguments, LlmRerankerArguments, DataArguments, RerankerTrainingArguments),
                             RECIPE_DEFAULTS, argv)


def build_model(model_args: ModelArguments, llm: LlmRerankerArguments, data_args: DataArguments, bf16: bool = False):
    """A cross-encoder, or an LlmReranker when --llm_head is given or the folder is one; with its collator."""
    base = resolve_model_path(model_args.model_name_or_path)
    batching = collator_batching(data_args, bf16)
    if llm.llm_head is None and not os.path.isfile(os.path.join(base, SETTINGS_FILE)):
        if llm.lora or llm.layerwise:
            raise ValueError("--lora and --layerwise apply to LLM rerankers: add --llm_head yes_token (or classifier)")
        model, tokenizer = load_cross_encoder(base, attn_implementation=model_args.attn_implementation)
        return model, tokenizer, RerankCollator(tokenizer, max_length=model_args.max_length, **batching)
    lora = (LoraSettings(r=llm.lora_r, alpha=llm.lora_alpha, dropout=llm.lora_dropout,
                         target_modules=llm.lora_target_modules) if llm.lora else None)
    model = LlmReranker.from_pretrained(base, lora=lora, attn_implementation=model_args.attn_implementation,
                                        head=llm.llm_head, template=llm.template, yes_token=llm.yes_token,
                                        layerwise=llm.layerwise or None, start_layer=llm.start_layer,
                                        max_length=model_args.max_length)
    return model, model.tokenizer, model.collator(max_length=model_args.max_length, **batching)


def main(argv=None) -> int:
    model_args, llm_args, data_args, training_args = parse_args(argv)
    data = start_run(data_args, training_args, REPO)
    if isinstance(data, int):
        return data
    train_records, dev_records, datasets, extra = data

    try:
        model, tokenizer, collator = build_model(model_args, llm_args, data_args, training_args.bf16)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    is_llm = isinstance(model, LlmReranker)
    train_dataset = GroupDataset(train_records, group_size=data_args.train_group_size, seed=training_args.seed)
    evaluator = RerankingEvaluator(dev_records, max_length=model_args.max_length) if dev_records else None
    if evaluator is None:
        training_args.eval_strategy = "no"
    run = train_evaluate_save(lambda: RerankTrainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=evaluator,
                              data_collator=collator, processing_class=tokenizer), training_args, evaluate=evaluator is not None)
    if isinstance(run, int):
        return run
    trainer, before, after = run
    if is_llm and llm_args.merge_lora and model.is_peft and trainer.is_world_process_zero():
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            os.remove(os.path.join(training_args.output_dir, name))
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(training_args.output_dir, merge_lora=True)

    counts = trainer.total_counts()
    status = 0
    if trainer.is_world_process_zero():
        mteb = reranker_mteb_evaluation(data_args, model_args, training_args, dev_records, extra, REPO)
        results = {"before": before, "after": after, **reranker_mteb_json(mteb),
                   "train_group_stats": vars(train_dataset.stats),
                   "train_pairs": counts["pairs_seen"], "train_pairs_truncated": counts["pairs_truncated"]}
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        notes = [f"{counts['pairs_truncated']} of {counts['pairs_seen']} training pairs were longer than "
                 f"{model_args.max_length} tokens and were truncated.", train_dataset.stats.summary(),
                 *([f"mteb evaluation: {mteb['pairs_truncated']} of {mteb['pairs']} scored pairs were longer than "
                    f"{model_args.max_length} tokens and were truncated."] if mteb else [])]
        if is_llm:
            notes.insert(0, llm_note(model))
        info = CardInfo(
            base_model=card_base_model(model_args.model_name_or_path),
            loss=f"{trainer.loss_name} ({type(trainer).__name__})",
            loss_params={"train_group_size": data_args.train_group_size, "max_length": model_args.max_length,
                         **({"temperature": trainer.temperature} if trainer.loss_name == "listwise" else {}),
                         **({"max_label": trainer.max_label} if trainer.loss_name == "pointwise" else {})},
            datasets=datasets, metrics_before=before, metrics_after=after,
            mteb_results=mteb.get("reranked", {}), mteb_first_stage=mteb.get("first_stage", {}),
            mteb_settings=mteb.get("settings", {}), notes=notes,
            model_name=os.path.basename(os.path.abspath(training_args.output_dir)),
        )
        write_model_card(training_args.output_dir,
                         render_reranker_card(info, training_args, trainer.state.log_history, llm=is_llm))
        print_reranker_summary(before, after, mteb, training_args.output_dir)
        if training_args.push_to_hub:
            status = push_run(trainer, training_args)
    end_distributed()
    return status


def llm_note(model: LlmReranker) -> str:
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


if __name__ == "__main__":
    sys.exit(main())
