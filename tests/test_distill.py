"""Reranker distillation: each loss against a hand formula, DistillTrainer with precomputed and online
teacher scores (each pair scored once), and a student that learns the teacher's order."""

import math

import numpy as np
import pytest
import torch

from conftest import tiny_records
from hf_ragtrain import DistillTrainer, DistillTrainingArguments, GroupDataset, RerankCollator, load_records
from hf_ragtrain.losses import distill_bce, distill_mse, distill_soft_ce, margin_mse
from hf_ragtrain.modeling.cross_encoder import load_cross_encoder, score_pairs
from hf_ragtrain.scoring import FunctionTeacher


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_distillation_losses_match_hand_formulas():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4) * 2, torch.randn(3, 4) * 3
    B, G = s.shape
    mse = sum((s[i, j] - t[i, j]) ** 2 for i in range(B) for j in range(G)) / (B * G)
    assert distill_mse(s, t).item() == pytest.approx(mse.item(), rel=1e-5)
    for T in (1.0, 2.5):
        ce = 0.0
        for i in range(B):
            zt = sum(math.exp(t[i, k] / T) for k in range(G))
            zs = sum(math.exp(s[i, k] / T) for k in range(G))
            ce += -sum(math.exp(t[i, j] / T) / zt * math.log(math.exp(s[i, j] / T) / zs) for j in range(G))
        assert distill_soft_ce(s, t, T).item() == pytest.approx(ce / B, rel=1e-5)
        bce = 0.0
        for i in range(B):
            for j in range(G):
                p, q = sigmoid(t[i, j] / T), sigmoid(s[i, j] / T)
                bce += -(p * math.log(q) + (1 - p) * math.log(1 - q))
        assert distill_bce(s, t, T).item() == pytest.approx(bce / (B * G), rel=1e-5)
    # soft_ce is a softmax within each group: shifting one query's teacher scores by a constant changes nothing
    shifted = t.clone()
    shifted[1] += 5.0
    assert distill_soft_ce(s, shifted).item() == pytest.approx(distill_soft_ce(s, t).item(), rel=1e-6)


def overlap(queries, docs):
    return [len(set(q.split()) & set(d.split())) - 0.01 * len(d.split()) for q, d in zip(queries, docs)]


def scored_records(n=8):
    rows = tiny_records(n, n_neg=3)
    for r in rows:
        scores = overlap([r["query"]] * 4, r["pos"] + r["neg"])
        r["pos_scores"], r["neg_scores"] = scores[:1], scores[1:]
    return load_records(rows)[0]


def make_trainer(tiny_ce_path, tmp_path, records, teacher=None, **args):
    model, tok = load_cross_encoder(tiny_ce_path)
    targs = DistillTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none",
                                     use_cpu=True, disable_tqdm=True, logging_steps=1, save_strategy="no", **args)
    return DistillTrainer(model=model, args=targs, train_dataset=GroupDataset(records, group_size=4, seed=0),
                          data_collator=RerankCollator(tok, max_length=32), teacher=teacher), model, tok


@pytest.mark.parametrize("loss", ["mse", "soft_ce", "bce", "margin_mse"])
def test_distill_trainer_loss_is_the_chosen_loss_on_student_scores(tiny_ce_path, tmp_path, loss):
    records = scored_records()
    trainer, model, tok = make_trainer(tiny_ce_path, tmp_path, records, distill_loss=loss, distill_temperature=2.0,
                                       hard_label_weight=0.3)
    items = [trainer.train_dataset[i] for i in range(4)]
    model.eval()
    got = trainer.compute_loss(model, trainer.data_collator(items)).item()
    # the reference: each pair scored on its own, then the formula and the listwise hard-label loss
    student = torch.tensor(np.stack([score_pairs(model, tok, [it["query"]] * 4, it["docs"], max_length=32)
                                     for it in items]))
    teacher = torch.tensor([it["scores"] for it in items])
    fn = {"mse": lambda s, t: distill_mse(s, t), "soft_ce": lambda s, t: distill_soft_ce(s, t, 2.0),
          "bce": lambda s, t: distill_bce(s, t, 2.0), "margin_mse": margin_mse}[loss]
    hard = torch.nn.functional.cross_entropy(student, torch.zeros(4, dtype=torch.long))
    assert got == pytest.approx((fn(student, teacher) + 0.3 * hard).item(), rel=1e-4)


def test_online_teacher_scores_each_pair_once_and_equals_precomputed_scores(tiny_ce_path, tmp_path):
    records = scored_records()
    seen = []

    def counting(queries, docs):
        seen.extend(zip(queries, docs))
        return overlap(queries, docs)

    online, model, _ = make_trainer(tiny_ce_path, tmp_path / "a", records, teacher=FunctionTeacher(counting, "t"),
                                    num_train_epochs=3, learning_rate=1e-3)
    items = [online.train_dataset[i] for i in range(4)]
    model.eval()
    with_teacher = online.compute_loss(model, online.data_collator(items)).item()
    precomputed, _, _ = make_trainer(tiny_ce_path, tmp_path / "b", records)
    assert with_teacher == pytest.approx(precomputed.compute_loss(model, precomputed.data_collator(items)).item(),
                                         rel=1e-5)
    model.train()
    online.train()
    assert len(seen) == len(set(seen)) == online.teacher_pairs_scored  # 3 epochs, every distinct pair once
    distinct = {(r.query, d) for r in records for d in r.pos + r.neg}
    assert set(seen) <= distinct and len(seen) >= 4 * 4


def test_student_learns_the_teachers_order(tiny_ce_path, tmp_path):
    from scipy.stats import spearmanr

    records = scored_records(8)
    trainer, model, tok = make_trainer(tiny_ce_path, tmp_path, records, num_train_epochs=30, learning_rate=3e-3,
                                       distill_loss="mse")  # its floor is 0, so the loss itself shows the learning
    queries = [r.query for r in records for _ in range(4)]
    docs = [d for r in records for d in r.pos + r.neg]
    teacher = np.array(overlap(queries, docs))
    before = spearmanr(score_pairs(model, tok, queries, docs, max_length=32), teacher).statistic
    trainer.train()
    after = spearmanr(score_pairs(model, tok, queries, docs, max_length=32), teacher).statistic
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    assert after > 0.8 and after > before


def test_missing_teacher_scores_are_a_clear_error(tiny_ce_path, tmp_path):
    """Refused when the trainer is built (the data facts say no record has scores), not at the first batch."""
    records, _ = load_records(tiny_records(4))
    with pytest.raises(ValueError, match="4 of 4 training records have none .*score_with_teacher"):
        make_trainer(tiny_ce_path, tmp_path, records)
