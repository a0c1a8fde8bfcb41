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

import json
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import (BiEncoder, ContrastiveTrainer, DataArguments,  # noqa: E402
                         EmbeddingArguments, EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset,
                         LoraSettings, ModelArguments)
from hf_ragtrain.arguments import collator_batching  # noqa: E402
from hf_ragtrain.evaluation.retrieval import RetrievalEvaluator  # noqa: E402
from hf_ragtrain.hub import CardInfo, render_embedding_card, write_model_card  # noqa: E402
from hf_ragtrain.recipe_utils import (card_base_model, evaluation_tasks, mteb_model_name,  # noqa: E402
                                      parse_recipe_args, push_run, start_run,
                                      train_evaluate_save)
from hf_ragtrain.trainers.base import end_distributed  # noqa: E402

logger = logging.getLogger("train_embedding")

RECIPE_DEFAULTS = dict(
    learning_rate=5e-5, num_train_epochs=1, per_device_train_batch_size=32, warmup_steps=0.1,
    logging_steps=5, eval_strategy="epoch", save_strategy="no", report_to="none", seed=42,
)


def parse_args(argv=None):
    return parse_recipe_args((ModelArguments, EmbeddingArguments, DataArguments, EmbeddingTrainingArguments), RECIPE_DEFAULTS, argv)


def build_model(model_args: ModelArguments, emb: EmbeddingArguments) -> BiEncoder:
    lora = (LoraSettings(r=emb.lora_r, alpha=emb.lora_alpha, dropout=emb.lora_dropout,
                         target_modules=emb.lora_target_modules) if emb.lora else None)
    return BiEncoder.from_pretrained(
        model_args.model_name_or_path, lora=lora, attn_implementation=model_args.attn_implementation,
        pooling=emb.pooling, normalize=emb.normalize, query_max_length=emb.query_max_length,
        passage_max_length=emb.passage_max_length, query_prompt=emb.query_prompt,
        passage_prompt=emb.passage_prompt, append_eos=emb.append_eos)


def build_teacher(emb: EmbeddingArguments):
    from hf_ragtrain.modeling.teacher import ModelTeacher, PrecomputedTeacher

    if emb.teacher_embeddings:
        if not emb.teacher_texts:
            raise ValueError("--teacher_embeddings needs --teacher_texts (the text of each row)")
        return PrecomputedTeacher.load(emb.teacher_embeddings, emb.teacher_texts)
    if emb.teacher_model:
        return ModelTeacher(BiEncoder.from_pretrained(emb.teacher_model))
    return None


def main(argv=None) -> int:
    model_args, emb, data_args, training_args = parse_args(argv)
    data = start_run(data_args, training_args, REPO)
    if isinstance(data, int):
        return data
    train_records, dev_records, datasets, extra = data

    model = build_model(model_args, emb)
    teacher = build_teacher(emb)
    train_dataset = GroupDataset(train_records, group_size=data_args.train_group_size, seed=training_args.seed)
    collator = EmbeddingCollator(model, keep_texts=teacher is not None,
                                 **collator_batching(data_args, training_args.bf16))
    evaluator = RetrievalEvaluator(dev_records) if dev_records else None
    if evaluator is None:
        training_args.eval_strategy = "no"
    run = train_evaluate_save(lambda: ContrastiveTrainer(model=model, args=training_args, train_dataset=train_dataset,
                                   eval_dataset=evaluator, data_collator=collator, teacher=teacher,
                                   truncate_dim=emb.truncate_dim), training_args, evaluate=evaluator is not None)
    if isinstance(run, int):
        return run
    trainer, before, after = run
    if emb.merge_lora and model.is_peft and trainer.is_world_process_zero():
        os.remove(os.path.join(training_args.output_dir, "adapter_model.safetensors"))
        os.remove(os.path.join(training_args.output_dir, "adapter_config.json"))
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(training_args.output_dir, merge_lora=True,
                                                                        truncate_dim=emb.truncate_dim)

    counts = trainer.total_counts()
    status = 0
    if trainer.is_world_process_zero():
        mteb = run_mteb_evaluation(data_args, training_args, dev_records)
        results = {"before": before, "after": after, **mteb.get("json", {}),
                   "train_group_stats": vars(train_dataset.stats),
                   "train_texts": counts["texts_seen"], "train_texts_truncated": counts["texts_truncated"]}
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        loss_name, loss_params = trainer.loss_description()
        s = model.settings
        info = CardInfo(
            base_model=card_base_model(model_args.model_name_or_path),
            task="retrieval", loss=f"{loss_name} ({type(trainer).__name__})",
            loss_params={"train_group_size": data_args.train_group_size, **loss_params},
            datasets=datasets, metrics_before=before, metrics_after=after,
            mteb_results=mteb.get("full", {}), mteb_settings=mteb.get("settings", {}),
            notes=[f"Encoder: {s.pooling} pooling, {'L2-normalised' if s.normalize else 'unnormalised'}, queries up "
                   f"to {s.query_max_length} tokens, passages up to {s.passage_max_length}"
                   + (f", query prompt {s.query_prompt!r}" if s.query_prompt else "")
                   + (f", passage prompt {s.passage_prompt!r}" if s.passage_prompt else "")
                   + (", EOS appended" if s.append_eos else "") + ". sentence-transformers' encode_query and "
                   "encode_document apply these prompts and lengths; a plain encode() uses the passage length.",
                   f"{counts['texts_truncated']} of {counts['texts_seen']} training texts were longer than their max "
                   f"length and were truncated.", train_dataset.stats.summary(),
                   *mteb.get("notes", [])],
            model_name=os.path.basename(os.path.abspath(training_args.output_dir)),
        )
        write_model_card(training_args.output_dir, render_embedding_card(info, training_args, trainer.state.log_history))
        _print_summary(before, after, mteb, training_args.output_dir)
        if training_args.push_to_hub:
            status = push_run(trainer, training_args)
    end_distributed()
    return status


def run_mteb_evaluation(data_args: DataArguments, training_args, dev_records) -> dict:
    """mteb evaluation of the saved model: the BEIR split as retrieval (or the dev records as a
    reranking task) and --mteb_tasks; Matryoshka dims on the same vectors. Written to OUTPUT_DIR/mteb."""
    if not data_args.mteb_eval:
        return {}
    from hf_ragtrain.evaluation import mteb_eval

    tasks = evaluation_tasks(data_args, dev_records, REPO)
    if not tasks:
        return {}
    dims = [d for d in (training_args.matryoshka_dims or [])]
    out = mteb_eval.evaluate_saved_embedder(training_args.output_dir, tasks, dims=dims,
                                            output_folder=os.path.join(training_args.output_dir, "mteb"),
                                            name=mteb_model_name(training_args), bf16=training_args.bf16)
    out["json"] = {"mteb": mteb_eval.scores_as_dict(out["full"]),
                   "mteb_matryoshka": {str(d): mteb_eval.scores_as_dict(r) for d, r in out["dims"].items()}}
    out["settings"] = {"precision": "bf16 autocast" if training_args.bf16 else "fp32"}
    out["notes"] = []
    for dim, results in out["dims"].items():
        for task, scores in results.items():
            for split, metrics in scores.metrics.items():
                full = out["full"][task].metrics[split]["ndcg_at_10"]
                out["notes"].append(f"mteb {task} ({split}) at {dim} dimensions: nDCG@10 "
                                    f"{metrics['ndcg_at_10']:.4f} ({metrics['ndcg_at_10'] / full:.1%} of the full "
                                    f"dimension's {full:.4f}).")
    return out


def _print_summary(before: dict, after: dict, mteb: dict, output_dir: str) -> None:
    keys = ["ndcg@10", "mrr@10", "map@10", "recall@10", "recall@100"]
    if before or after:
        print("\nDev retrieval metrics      before     after")
        for k in keys:
            b, a = before.get(f"before_{k}"), after.get(f"after_{k}")
            if b is not None and a is not None:
                print(f"  {k:<22} {b:>9.4f} {a:>9.4f}")
    for task, scores in mteb.get("full", {}).items():
        for split, m in scores.metrics.items():
            print(f"mteb {task} ({split}): nDCG@10 {m['ndcg_at_10']:.4f}  MRR@10 {m['mrr_at_10']:.4f}")
    for note in mteb.get("notes", []):
        print(note)
    print(f"\nmodel, eval_results.json and model card written to {output_dir}")


if __name__ == "__main__":
    sys.exit(main())
