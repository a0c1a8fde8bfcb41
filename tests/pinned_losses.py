"""The first logged losses of every trainer on tiny models with a fixed seed, for a regression pin.

``tests/data/pinned_losses.json`` holds these losses as computed by the code of the commit it names;
``tests/test_pinned_losses.py`` computes them again and compares (1e-6). A change that is meant to
leave training alone (a refactoring) must keep them; a change that means to alter training
rewrites the file, and says why in its commit:

    .venv/bin/python tests/pinned_losses.py --write

Every run uses the family's own arguments class, fp32 on the CPU, dropout 0.1 in the encoders (so
the dropout implementation and its random draws are pinned too; ColBERT's encoder has none), three
steps logged one by one. The optimiser is plain SGD: Adam's first steps divide each gradient by its
own size, so a last-bit difference between two CPUs' fp32 kernels in a near-zero gradient would move
the later losses by more than the pin's tolerance; with SGD the update is linear in the gradient.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
PIN_FILE = os.path.join(HERE, "data", "pinned_losses.json")
STEPS = 3

from conftest import build_tiny_encoder, build_tiny_llm, tiny_records  # noqa: E402


def _common(out: str) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=4, max_steps=STEPS, logging_steps=1, learning_rate=0.05,
                optim="sgd", report_to="none", save_strategy="no", use_cpu=True, seed=11, disable_tqdm=True, bf16=False)


def _scored(n: int = 8) -> list[dict]:
    rows = tiny_records(n, n_neg=3)
    for i, r in enumerate(rows):
        r["pos_scores"] = [2.0 + 0.1 * i]
        r["neg_scores"] = [0.5 - 0.2 * j + 0.05 * i for j in range(len(r["neg"]))]
    return rows


def _tiny_cross_encoder(path: str) -> str:
    """The conftest cross-encoder's shape, with dropout 0.1 (attention and hidden)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from conftest import tiny_vocab

    os.makedirs(path, exist_ok=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(tiny_vocab())}).save_pretrained(path)
    torch.manual_seed(3)
    config = BertConfig(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, num_labels=1, initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def _losses(trainer) -> list[float]:
    trainer.train()
    return [float(h["loss"]) for h in trainer.state.log_history if "loss" in h][:STEPS]


def rerank(tmp: str, loss: str) -> list[float]:
    from hf_ragtrain import GroupDataset, RerankCollator, RerankerTrainingArguments, RerankTrainer, load_cross_encoder
    from hf_ragtrain import load_records

    model, tok = load_cross_encoder(_tiny_cross_encoder(os.path.join(tmp, "ce")))
    records, _ = load_records(tiny_records(8))
    args = RerankerTrainingArguments(rerank_loss=loss, **_common(os.path.join(tmp, "out")))
    return _losses(RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=4, seed=5),
                                 data_collator=RerankCollator(tok, max_length=32, micro_batch_tokens=64),
                                 processing_class=tok))


def distill(tmp: str) -> list[float]:
    from hf_ragtrain import DistillTrainer, DistillTrainingArguments, GroupDataset, RerankCollator, load_records
    from hf_ragtrain import load_cross_encoder

    model, tok = load_cross_encoder(_tiny_cross_encoder(os.path.join(tmp, "ce")))
    records, _ = load_records(_scored())
    args = DistillTrainingArguments(distill_loss="soft_ce", distill_temperature=2.0, hard_label_weight=0.5,
                                    **_common(os.path.join(tmp, "out")))
    return _losses(DistillTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=4, seed=5),
                                  data_collator=RerankCollator(tok, max_length=32, micro_batch_tokens=64),
                                  processing_class=tok))


def contrastive(tmp: str, grad_cache: bool) -> list[float]:
    from hf_ragtrain import (BiEncoder, ContrastiveTrainer, EmbeddingCollator, EmbeddingTrainingArguments,
                             GroupDataset, load_records)

    model = BiEncoder.from_pretrained(build_tiny_encoder(os.path.join(tmp, "enc"), seed=2, dropout=0.1),
                                      query_max_length=16, passage_max_length=24)
    records, _ = load_records(_scored())
    args = EmbeddingTrainingArguments(temperature=0.05, matryoshka_dims=[32, 16], grad_cache=grad_cache,
                                      teacher_temperature=2.0, **_common(os.path.join(tmp, "out")))
    return _losses(ContrastiveTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3, seed=5),
                                      data_collator=EmbeddingCollator(model, micro_batch_tokens=48)))


def colbert(tmp: str) -> list[float]:
    from hf_ragtrain import (ColbertEncoder, ColbertTrainer, ColbertTrainingArguments, EmbeddingCollator,
                             GroupDataset, load_records)

    model = ColbertEncoder.from_pretrained(build_tiny_encoder(os.path.join(tmp, "enc"), seed=2), colbert_dim=16,
                                           query_max_length=12, query_expansion=True, seed=4)
    records, _ = load_records(_scored())
    args = ColbertTrainingArguments(teacher_temperature=2.0, distill_weight=0.5, **_common(os.path.join(tmp, "out")))
    return _losses(ColbertTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3, seed=5),
                                  data_collator=EmbeddingCollator(model, micro_batch_tokens=48)))


def llm_reranker(tmp: str) -> list[float]:
    from hf_ragtrain import GroupDataset, LlmReranker, RerankerTrainingArguments, RerankTrainer, load_records

    model = LlmReranker.from_pretrained(build_tiny_llm(os.path.join(tmp, "llm"), seed=6), head="yes_token",
                                        yes_token="Yes", layerwise=True, start_layer=1, max_length=48)
    records, _ = load_records(tiny_records(8))
    args = RerankerTrainingArguments(**_common(os.path.join(tmp, "out")))
    return _losses(RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=4, seed=5),
                                 data_collator=model.collator(micro_batch_tokens=96), processing_class=model.tokenizer))


RUNS: dict[str, Callable[[str], list[float]]] = {
    "rerank_listwise": lambda tmp: rerank(tmp, "listwise"),
    "rerank_pointwise": lambda tmp: rerank(tmp, "pointwise"),
    "rerank_pairwise": lambda tmp: rerank(tmp, "pairwise"),
    "distill_soft_ce_with_labels": distill,
    "contrastive_mrl_distill": lambda tmp: contrastive(tmp, grad_cache=False),
    "contrastive_mrl_distill_grad_cache": lambda tmp: contrastive(tmp, grad_cache=True),
    "colbert_distill": colbert,
    "llm_reranker_layerwise": llm_reranker,
}


def compute(name: str) -> list[float]:
    """The first logged losses of run ``name``, computed in a fresh temporary folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        return RUNS[name](tmp)


def main() -> None:
    if "--write" not in sys.argv[1:]:
        print(__doc__)
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    pins = {"recorded_at_commit": commit, "losses": {name: compute(name) for name in RUNS}}
    os.makedirs(os.path.dirname(PIN_FILE), exist_ok=True)
    with open(PIN_FILE, "w") as fh:
        json.dump(pins, fh, indent=2)
        fh.write("\n")
    print(json.dumps(pins, indent=2))


if __name__ == "__main__":
    main()
