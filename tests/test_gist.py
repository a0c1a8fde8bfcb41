"""GISTEmbed guide masking: the mask and the masked InfoNCE against hand computations, in the bi-encoder
and ColBERT trainers, with GradCache."""

import math

import numpy as np
import pytest
import torch

from conftest import assert_grad_cache_gives_the_plain_step, build_tiny_encoder, tiny_records
from hf_ragtrain import (BiEncoder, ColbertEncoder, ColbertTrainer, ContrastiveTrainer, EmbeddingCollator,
                         EmbeddingTrainingArguments, GroupDataset, load_records, maxsim)
from hf_ragtrain.losses import guide_mask, info_nce_from_scores


def hand_masked_info_nce(scores: list[list[float]], mask: list[list[bool]], targets: list[int], t: float) -> float:
    """Mean over rows of ``-s_pos / t + log(sum of exp(s / t) over the unmasked candidates)``."""
    total = 0.0
    for row, drop, target in zip(scores, mask, targets):
        total += -row[target] / t + math.log(sum(math.exp(s / t) for s, m in zip(row, drop) if not m))
    return total / len(scores)


def test_guide_mask_and_masked_info_nce_match_hand_computation():
    # B = 2 queries, G = 2: positives in columns 0 and 2
    guide = torch.tensor([[0.8, 0.9, 0.7, 0.79], [0.2, 0.1, 0.5, 0.6]])
    mask = guide_mask(guide, margin=0.0)
    assert mask.tolist() == [[False, True, False, False], [False, False, False, True]]
    assert guide_mask(guide, margin=0.02).tolist() == [[False, True, False, True], [False, False, False, True]]
    # without in-batch negatives the positive is column 0 of each (B, G) group
    assert guide_mask(torch.tensor([[0.3, 0.4, 0.2]]), in_batch_negatives=False).tolist() == [[False, True, False]]
    scores = torch.tensor([[1.0, 0.5, -0.2, 0.3], [0.1, 0.4, 0.9, -0.5]])
    expected = hand_masked_info_nce(scores.tolist(), mask.tolist(), [0, 2], 0.1)
    assert info_nce_from_scores(scores, 0.1, mask=mask).item() == pytest.approx(expected, rel=1e-6)
    unmasked = hand_masked_info_nce(scores.tolist(), [[False] * 4] * 2, [0, 2], 0.1)
    assert info_nce_from_scores(scores, 0.1).item() == pytest.approx(unmasked, rel=1e-6)
    assert expected != pytest.approx(unmasked)


def guide_vectors(path, queries, passages):
    """The guide's normalised vectors, computed with sentence-transformers directly."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    return (torch.from_numpy(st.encode(queries, normalize_embeddings=True)),
            torch.from_numpy(st.encode(passages, normalize_embeddings=True)))


def embedding_args(tmp_path, **args):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=2e-3, num_train_epochs=1,
                    logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=7, disable_tqdm=True)
    return EmbeddingTrainingArguments(**{**defaults, **args})


def test_bi_encoder_loss_with_a_guide_is_the_masked_info_nce(tiny_encoder_path, tmp_path):
    guide_path = build_tiny_encoder(tmp_path / "guide", seed=3)
    model = BiEncoder.from_pretrained(tiny_encoder_path)
    records, _ = load_records(tiny_records(8))
    trainer = ContrastiveTrainer(model=model, args=embedding_args(tmp_path, guide_model=guide_path, temperature=0.1),
                                 train_dataset=GroupDataset(records, group_size=3, seed=7),
                                 data_collator=EmbeddingCollator(model))
    items = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(items)
    queries, passages = [it["query"] for it in items], [d for it in items for d in it["docs"]]
    gq, gp = guide_vectors(guide_path, queries, passages)
    guide = gq @ gp.T
    expected_mask = [[j != 3 * i and guide[i, j] > guide[i, 3 * i] for j in range(12)] for i in range(4)]
    assert any(any(row) for row in expected_mask) and not all(all(row) for row in expected_mask)
    q = torch.from_numpy(model.encode(queries, kind="query"))
    p = torch.from_numpy(model.encode(passages, kind="passage"))
    expected = hand_masked_info_nce((q @ p.T).tolist(), expected_mask, [0, 3, 6, 9], 0.1)
    model.eval()
    assert trainer.compute_loss(model, batch).item() == pytest.approx(expected, rel=1e-4)
    assert trainer.guide_masked == 0  # counted in training only
    name, params = trainer.loss_description()
    assert "GISTEmbed" in name and params["guide_model"] == guide_path


def test_grad_cache_with_a_guide_gives_the_plain_gradients(tmp_path):
    path = build_tiny_encoder(tmp_path / "m", dropout=0.1)
    model = BiEncoder.from_pretrained(path)
    records, _ = load_records(tiny_records(8))
    trainer = ContrastiveTrainer(model=model, args=embedding_args(tmp_path, guide_model=str(path)),
                                 train_dataset=GroupDataset(records, group_size=4, seed=7),
                                 data_collator=EmbeddingCollator(model, micro_batch_tokens=16))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert len(batch["passage_chunks"]) > 2
    assert_grad_cache_gives_the_plain_step(trainer, batch)
    assert trainer.guide_masked > 0  # the guide did mask candidates in those steps


def test_colbert_loss_with_a_guide_is_the_masked_info_nce_over_maxsim(tiny_encoder_path, tmp_path):
    guide_path = build_tiny_encoder(tmp_path / "guide", seed=5)
    model = ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=16)
    records, _ = load_records(tiny_records(8))
    trainer = ColbertTrainer(model=model, args=embedding_args(tmp_path, guide_model=guide_path, temperature=0.05,
                                                              in_batch_negatives=False),
                             train_dataset=GroupDataset(records, group_size=3, seed=1),
                             data_collator=EmbeddingCollator(model))
    items = [trainer.train_dataset[i] for i in range(4)]
    queries, passages = [it["query"] for it in items], [d for it in items for d in it["docs"]]
    gq, gp = guide_vectors(guide_path, queries, passages)
    own = [[float(gq[i] @ gp[3 * i + j]) for j in range(3)] for i in range(4)]
    expected_mask = [[j > 0 and row[j] > row[0] for j in range(3)] for row in own]
    assert any(any(row) for row in expected_mask)

    def padded(vectors):
        width = max(v.size(0) for v in vectors)
        out = torch.zeros(len(vectors), width, vectors[0].size(1))
        mask = torch.zeros(len(vectors), width, dtype=torch.bool)
        for k, v in enumerate(vectors):
            out[k, :v.size(0)], mask[k, :v.size(0)] = v, True
        return out, mask

    scores = maxsim(*padded(model.encode(queries, "query")), *padded(model.encode(passages, "document")))
    group = [[float(scores[i, 3 * i + j]) for j in range(3)] for i in range(4)]
    expected = hand_masked_info_nce(group, expected_mask, [0] * 4, 0.05)
    model.eval()
    assert trainer.compute_loss(model, trainer.data_collator(items)).item() == pytest.approx(expected, rel=1e-4)


def test_a_guide_without_info_nce_is_refused(tiny_encoder_path, tmp_path):
    model = BiEncoder.from_pretrained(tiny_encoder_path)
    records, _ = load_records(tiny_records(8))
    with pytest.raises(ValueError, match="--contrastive_weight"):
        ContrastiveTrainer(model=model, args=embedding_args(tmp_path, guide_model=tiny_encoder_path,
                                                            contrastive_weight=0.0, distill_weight=0.0),
                           train_dataset=GroupDataset(records, group_size=3, seed=7),
                           data_collator=EmbeddingCollator(model))
    with pytest.raises(ValueError, match="--guide_margin"):
        embedding_args(tmp_path, guide_margin=-0.1)
