"""Write the notebooks in this folder from the cells below (outputs are never committed; CI runs them).

    python notebooks/build_notebooks.py
"""

from __future__ import annotations

import os

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = '''import os, sys
REPO = os.path.abspath("..") if os.path.basename(os.getcwd()) == "notebooks" else os.getcwd()
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
OUT = os.environ.get("NOTEBOOK_OUTPUT_DIR", os.path.join(REPO, "runs", "notebooks"))

from dataclasses import replace
from hf_ragtrain import load_records
train, _ = load_records(os.path.join(REPO, "data/python_faq/train.jsonl"))
dev, _ = load_records(os.path.join(REPO, "data/python_faq/dev.jsonl"))
# a slice keeps the notebook to seconds on a CPU: 4 dev queries, each with its answer and 9 candidates
# (the recipes evaluate all 35 queries with 30 candidates each)
dev = [replace(r, neg=r.neg[:9], neg_ids=r.neg_ids[:9] if r.neg_ids else None) for r in dev[:4]]
len(train), len(dev)'''

RUN = '''before = trainer.evaluate(metric_key_prefix="before")
trainer.train()
after = trainer.evaluate(metric_key_prefix="after")
trainer.save_model(output_dir)'''

# a reranker's card: the first stage on the same candidates, and the warning if the reranker is behind it
FIRST_STAGE_CARD = '''                first_stage=evaluator.first_stage.name, metrics_first_stage=evaluator.first_stage_metrics(),
                warnings=[w for w in [evaluator.last_warning] if w]'''

CARD = '''card = open(os.path.join(output_dir, "README.md")).read()
print(card[:1500])'''

NOTEBOOKS = {
    "01_rerank_trainer.ipynb": [
        ("markdown", "# RerankTrainer: a MiniLM cross-encoder on the bundled Python FAQ data\n\n"
                     "A few training steps with the real all-MiniLM-L6-v2, evaluation before and after beside the "
                     "first stage (the MiniLM embedder ranking the same candidates), a model card, and the trained "
                     "folder scored through the `Reranker` inference API. As in the reranker recipe, the score is "
                     "the cross-encoder's logit plus 5 times the first stage's cosine, the head starting at zero."),
        ("code", SETUP),
        ("code", '''from hf_ragtrain import (FirstStage, GroupDataset, RerankCollator, RerankerTrainingArguments, RerankingEvaluator,
                         RerankTrainer, load_cross_encoder)
from hf_ragtrain.modeling.fusion import FirstStageFusion, zero_score_head
from hf_ragtrain.offline import minilm_path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
model, tokenizer = load_cross_encoder(minilm_path())
zero_score_head(model)  # untrained, the reranker ranks exactly as its first stage
fusion = FirstStageFusion(weight=5.0, source=minilm_path(), name=MINILM)
output_dir = os.path.join(OUT, "reranker")
args = RerankerTrainingArguments(output_dir=output_dir, rerank_loss="listwise", max_steps=3,
                                 per_device_train_batch_size=4, learning_rate=5e-5, head_learning_rate=1e-3,
                                 logging_steps=1, save_strategy="no", report_to="none", use_cpu=True)
evaluator = RerankingEvaluator(dev, max_length=128, first_stage=FirstStage.embedder(minilm_path(), name=MINILM))
trainer = RerankTrainer(model=model, args=args, first_stage=fusion, train_dataset=GroupDataset(train, group_size=4),
                        eval_dataset=evaluator, processing_class=tokenizer,
                        data_collator=RerankCollator(tokenizer, max_length=128))
''' + RUN + '''
before["before_ndcg@10"], after["after_ndcg@10"], after["after_first_stage_ndcg@10"]'''),
        ("code", '''from hf_ragtrain.hub import CardInfo, render_reranker_card, write_model_card

info = CardInfo(base_model=MINILM, loss="listwise (RerankTrainer)",
                datasets=[{"name": "python_faq", "split": "train", "size": len(train)}],
                metrics_before=before, metrics_after=after, fusion={"weight": fusion.weight, "first_stage": MINILM},
''' + FIRST_STAGE_CARD + ''')
write_model_card(output_dir, render_reranker_card(info, args, trainer.state.log_history))
''' + CARD),
        ("code", '''from hf_ragtrain import Reranker

reranker = Reranker.from_pretrained(output_dir)
reranker.rank(dev[0].query, [*dev[0].pos, *dev[0].neg[:4]], top_k=3)'''),
    ],
    "02_contrastive_trainer.ipynb": [
        ("markdown", "# ContrastiveTrainer: a MiniLM embedding model with Matryoshka loss\n\n"
                     "InfoNCE over in-batch and hard negatives, Matryoshka dimensions 384/128/64, dense "
                     "retrieval over the dev documents before and after, and a model card."),
        ("code", SETUP),
        ("code", '''from hf_ragtrain import BiEncoder, ContrastiveTrainer, EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset
from hf_ragtrain.evaluation.retrieval import RetrievalEvaluator

model = BiEncoder.from_pretrained("minilm")
output_dir = os.path.join(OUT, "embedder")
args = EmbeddingTrainingArguments(output_dir=output_dir, max_steps=3, per_device_train_batch_size=4,
                                  learning_rate=2e-5, matryoshka_dims=[384, 128, 64], logging_steps=1,
                                  save_strategy="no", report_to="none", use_cpu=True)
trainer = ContrastiveTrainer(model=model, args=args, train_dataset=GroupDataset(train, group_size=4),
                             eval_dataset=RetrievalEvaluator(dev), data_collator=EmbeddingCollator(model))
''' + RUN + '''
before["before_ndcg@10"], after["after_ndcg@10"]'''),
        ("code", '''from hf_ragtrain.hub import CardInfo, render_embedding_card, write_model_card

info = CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", task="retrieval",
                loss="InfoNCE + Matryoshka (ContrastiveTrainer)",
                datasets=[{"name": "python_faq", "split": "train", "size": len(train)}],
                metrics_before=before, metrics_after=after)
write_model_card(output_dir, render_embedding_card(info, args, trainer.state.log_history))
''' + CARD),
    ],
    "03_colbert_trainer.ipynb": [
        ("markdown", "# ColbertTrainer: a MiniLM ColBERT model\n\n"
                     "A fresh 128-d projection over MiniLM's token vectors, InfoNCE over MaxSim scores, "
                     "brute-force MaxSim retrieval over the dev documents before and after, and a model card."),
        ("code", SETUP),
        ("code", '''from hf_ragtrain import (ColbertEncoder, ColbertTrainer, ColbertTrainingArguments, EmbeddingCollator,
                         GroupDataset)
from hf_ragtrain.evaluation.retrieval import RetrievalEvaluator

model = ColbertEncoder.from_pretrained("minilm", colbert_dim=128, skip_punctuation=True)
output_dir = os.path.join(OUT, "colbert")
args = ColbertTrainingArguments(output_dir=output_dir, max_steps=3, per_device_train_batch_size=4,
                                learning_rate=5e-5, logging_steps=1, save_strategy="no", report_to="none",
                                use_cpu=True)
trainer = ColbertTrainer(model=model, args=args, train_dataset=GroupDataset(train, group_size=4),
                         eval_dataset=RetrievalEvaluator(dev), data_collator=EmbeddingCollator(model))
''' + RUN + '''
before["before_ndcg@10"], after["after_ndcg@10"]'''),
        ("code", '''from hf_ragtrain.hub import CardInfo, render_embedding_card, write_model_card

info = CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", task="retrieval",
                loss="InfoNCE over MaxSim (ColbertTrainer)",
                datasets=[{"name": "python_faq", "split": "train", "size": len(train)}],
                metrics_before=before, metrics_after=after)
write_model_card(output_dir, render_embedding_card(info, args, trainer.state.log_history, colbert=True))
''' + CARD),
    ],
    "04_llm_reranker.ipynb": [
        ("markdown", "# An LLM reranker: SmolLM2-135M-Instruct with LoRA in RerankTrainer\n\n"
                     "The yes-token head (the logit of \" Yes\" after a prompt), a LoRA adapter, two training "
                     "steps on CPU, and evaluation on a few dev queries before and after."),
        ("code", SETUP + "\n# an LLM scores a few pairs/s on 2 CPU cores: 2 queries, 5 candidates each\n"
                 "dev = [replace(r, neg=r.neg[:4], neg_ids=r.neg_ids[:4] if r.neg_ids else None) for r in dev[:2]]"),
        ("code", '''from hf_ragtrain import (FirstStage, GroupDataset, LlmReranker, LoraSettings, RerankerTrainingArguments,
                         RerankingEvaluator, RerankTrainer)
from hf_ragtrain.offline import minilm_path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the first stage: the embedder ranking the same candidates

model = LlmReranker.from_pretrained("smollm2", max_length=128, lora=LoraSettings(r=8, alpha=16))
output_dir = os.path.join(OUT, "llm_reranker")
args = RerankerTrainingArguments(output_dir=output_dir, max_steps=2, per_device_train_batch_size=1,
                                 learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to="none",
                                 use_cpu=True)
evaluator = RerankingEvaluator(dev, first_stage=FirstStage.embedder(minilm_path(), name=MINILM))
trainer = RerankTrainer(model=model, args=args, train_dataset=GroupDataset(train, group_size=2),
                        eval_dataset=evaluator, data_collator=model.collator())
''' + RUN + '''  # the LoRA adapter, the tokenizer and the prompt settings
before["before_ndcg@10"], after["after_ndcg@10"], after["after_first_stage_ndcg@10"]'''),
        ("code", '''from hf_ragtrain.hub import CardInfo, render_reranker_card, write_model_card

info = CardInfo(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", loss="listwise (RerankTrainer, LoRA)",
                datasets=[{"name": "python_faq", "split": "train", "size": len(train)}],
                metrics_before=before, metrics_after=after,
''' + FIRST_STAGE_CARD + ''')
write_model_card(output_dir, render_reranker_card(info, args, trainer.state.log_history, llm=True))
''' + CARD),
    ],
    "05_distill_trainer.ipynb": [
        ("markdown", "# DistillTrainer: a MiniLM cross-encoder learns a teacher's scores\n\n"
                     "The teacher here is the MiniLM bi-encoder, scoring each (query, document) pair once, "
                     "online, without gradients (any reranker folder works the same way, or scores written "
                     "into the records by `recipes/score_with_teacher.py`). Soft-label cross-entropy over "
                     "each query's group."),
        ("code", SETUP),
        ("code", '''from hf_ragtrain import (DistillTrainer, DistillTrainingArguments, FirstStage, GroupDataset, RerankCollator,
                         RerankingEvaluator, load_cross_encoder)
from hf_ragtrain.offline import minilm_path
from hf_ragtrain.scoring import load_teacher

teacher = load_teacher("minilm", kind="bi-encoder")
student, tokenizer = load_cross_encoder(minilm_path())
output_dir = os.path.join(OUT, "student")
args = DistillTrainingArguments(output_dir=output_dir, distill_loss="soft_ce", max_steps=3,
                                per_device_train_batch_size=4, learning_rate=5e-5, logging_steps=1,
                                save_strategy="no", report_to="none", use_cpu=True)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the first stage: the embedder ranking the same candidates
evaluator = RerankingEvaluator(dev, max_length=128, first_stage=FirstStage.embedder(minilm_path(), name=MINILM))
trainer = DistillTrainer(model=student, args=args, teacher=teacher, train_dataset=GroupDataset(train, group_size=4),
                         eval_dataset=evaluator, processing_class=tokenizer,
                         data_collator=RerankCollator(tokenizer, max_length=128))
''' + RUN + '''
print(trainer.teacher_pairs_scored, "pairs scored by the teacher")
before["before_ndcg@10"], after["after_ndcg@10"], after["after_first_stage_ndcg@10"]'''),
        ("code", '''from hf_ragtrain.hub import CardInfo, render_reranker_card, write_model_card

info = CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", loss="soft_ce distillation (DistillTrainer)",
                datasets=[{"name": "python_faq", "split": "train", "size": len(train)}],
                metrics_before=before, metrics_after=after, trainer="DistillTrainer",
''' + FIRST_STAGE_CARD + ''')
write_model_card(output_dir, render_reranker_card(info, args, trainer.state.log_history))
''' + CARD),
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
                    for kind, src in cells]
        nbformat.write(nb, os.path.join(HERE, name))
        print("wrote", name)


if __name__ == "__main__":
    main()
