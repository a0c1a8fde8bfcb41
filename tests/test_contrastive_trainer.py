"""ContrastiveTrainer: GradCache gradients equal plain ones, training moves the loss, the saved model
loads in sentence-transformers with the in-memory model's embeddings, checkpoints resume."""

import copy

import numpy as np
import pytest
import torch

from conftest import (TEXTS, assert_grad_cache_gives_the_plain_step, build_tiny_encoder, step_gradients,
                      tiny_records)
from hf_ragtrain import (BiEncoder, ContrastiveTrainer, EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset,
                         load_records)
from hf_ragtrain.modeling.teacher import ModelTeacher, PrecomputedTeacher, write_teacher_embeddings


def scored_records(n=8):
    """tiny_records with teacher scores (positives high, negatives graded by position)."""
    out = []
    for r in tiny_records(n):
        out.append({**r, "pos_scores": [5.0] * len(r["pos"]), "neg_scores": [float(-i) for i in range(len(r["neg"]))]})
    return out


def make_trainer(path, out, records=None, teacher=None, group_size=4, micro_batch_tokens=24, **args):
    model = BiEncoder.from_pretrained(path)
    data, _ = load_records(records or tiny_records(8))
    defaults = dict(output_dir=str(out), per_device_train_batch_size=4, learning_rate=2e-3, num_train_epochs=3,
                    logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=7, disable_tqdm=True)
    targs = EmbeddingTrainingArguments(**{**defaults, **args})
    collator = EmbeddingCollator(model, micro_batch_tokens=micro_batch_tokens)  # the trainer asks for texts if needed
    return ContrastiveTrainer(model=model, args=targs, train_dataset=GroupDataset(data, group_size=group_size, seed=7),
                              data_collator=collator, teacher=teacher)


@pytest.mark.parametrize("settings", [
    dict(),
    dict(matryoshka_dims=[32, 16, 8], matryoshka_weights=[1.0, 0.5, 0.25]),
    dict(in_batch_negatives=False, distill_weight=0.5),
    dict(in_batch_negatives=False, distill_weight=0.5, score_distill_loss="margin_mse"),
])
def test_grad_cache_gives_the_plain_gradients(tmp_path, settings):
    path = build_tiny_encoder(tmp_path / "m", dropout=0.1)  # dropout on: GradCache must replay its masks
    trainer = make_trainer(path, tmp_path / "o", records=scored_records(), micro_batch_tokens=16, **settings)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert len(batch["passage_chunks"]) > 2  # several chunks, so the cache is exercised
    plain = assert_grad_cache_gives_the_plain_step(trainer, batch)
    # and the masks matter: another seed gives other gradients
    _, other = step_gradients(trainer, batch, grad_cache=False, seed=7)
    assert any(not torch.allclose(other[n], plain[n], atol=1e-5) for n in plain)


def test_training_lowers_the_loss_and_saves_a_sentence_transformers_model(tiny_encoder_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    trainer = make_trainer(tiny_encoder_path, tmp_path, num_train_epochs=8, matryoshka_dims=[32, 16])
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])
    assert result.training_loss > 0
    final = str(tmp_path / "final")
    trainer.save_model(final)
    ours = trainer.model.encode(TEXTS, kind="query")
    st = SentenceTransformer(final, device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS, prompt_name="query"), ours, atol=1e-5)
    assert trainer.texts_seen == 8 * 8 * (1 + 4) and trainer.texts_truncated == 0


def test_resume_from_checkpoint_continues_the_same_run(tiny_encoder_path, tmp_path):
    full = make_trainer(tiny_encoder_path, tmp_path / "full", num_train_epochs=2, save_strategy="steps",
                        save_steps=2)
    full.train()
    resumed = make_trainer(tiny_encoder_path, tmp_path / "full", num_train_epochs=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    a, b = full.model.encode(TEXTS), resumed.model.encode(TEXTS)
    np.testing.assert_allclose(a, b, atol=1e-5)
    fresh = BiEncoder.from_pretrained(tiny_encoder_path).encode(TEXTS)
    assert np.abs(fresh - a).max() > 1e-3


def test_distillation_weight_defaults_to_the_records(tiny_encoder_path, tmp_path):
    assert make_trainer(tiny_encoder_path, tmp_path / "a", records=scored_records()).distill_weight == 1.0
    assert make_trainer(tiny_encoder_path, tmp_path / "b").distill_weight == 0.0
    with pytest.raises(ValueError, match="needs teacher scores"):
        make_trainer(tiny_encoder_path, tmp_path / "c", distill_weight=1.0)


def test_score_distillation_alone_pulls_the_student_towards_the_teacher(tiny_encoder_path, tmp_path):
    trainer = make_trainer(tiny_encoder_path, tmp_path, records=scored_records(), contrastive_weight=0.0,
                           in_batch_negatives=False, num_train_epochs=6)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]


def test_margin_mse_score_distillation_matches_margins_of_cosines_at_the_temperature(tiny_encoder_path, tmp_path):
    trainer = make_trainer(tiny_encoder_path, tmp_path, records=scored_records(), contrastive_weight=0.0,
                           score_distill_loss="margin_mse", temperature=0.1)
    assert trainer.accelerator.unwrap_model(trainer.model).settings.normalize
    torch.manual_seed(0)
    q, p, teacher = torch.randn(2, 8), torch.randn(6, 8), torch.randn(2, 3) * 4
    cos = [[float(torch.nn.functional.cosine_similarity(q[i], p[3 * i + j], dim=0)) / 0.1 for j in range(3)]
           for i in range(2)]
    t = teacher.tolist()
    errors = [((cos[i][0] - cos[i][k]) - (t[i][0] - t[i][k])) ** 2 for i in range(2) for k in (1, 2)]
    assert trainer.loss_from_embeddings(q, p, teacher).item() == pytest.approx(sum(errors) / 4, rel=1e-5)
    assert "MarginMSE" in trainer.loss_description()[0]


def test_embedding_distillation_from_a_model_or_precomputed_vectors_is_the_same(tmp_path):
    teacher_path = build_tiny_encoder(tmp_path / "teacher", seed=5, hidden=48)
    student_path = build_tiny_encoder(tmp_path / "student", seed=1)
    teacher = BiEncoder.from_pretrained(teacher_path)
    texts = [t for r in tiny_records(8) for t in [r["query"], *r["pos"], *r["neg"]]]
    write_teacher_embeddings(teacher, texts, str(tmp_path / "t.npy"), str(tmp_path / "t.jsonl"))
    weights = dict(similarity_mse_weight=1.0, relative_similarity_weight=1.0, contrastive_weight=0.0)
    runs = {}
    for name, source in [("model", ModelTeacher(teacher)),
                         ("npy", PrecomputedTeacher.load(str(tmp_path / "t.npy"), str(tmp_path / "t.jsonl")))]:
        trainer = make_trainer(student_path, tmp_path / name, teacher=source, num_train_epochs=4, **weights)
        trainer.train()
        runs[name] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # the same loss before any update; afterwards float noise in the teacher vectors (batched
    # differently) is amplified by training, so later steps agree less tightly
    assert runs["model"][0] == pytest.approx(runs["npy"][0], rel=1e-5)
    np.testing.assert_allclose(runs["model"], runs["npy"], rtol=2e-2)
    assert runs["npy"][-1] < runs["npy"][0]
    # cosine needs the teacher's dimension (48): a projection is trained with the student and saved beside it
    trainer = make_trainer(student_path, tmp_path / "x", teacher=ModelTeacher(teacher), cosine_weight=1.0,
                           contrastive_weight=0.0, num_train_epochs=4)
    projection = trainer.model.distill_projection
    assert tuple(projection.weight.shape) == (48, 32)
    start = projection.weight.detach().clone()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0] and not torch.allclose(projection.weight, start)
    trainer.save_model(str(tmp_path / "x" / "final"))
    assert (tmp_path / "x" / "final" / "distill_projection.safetensors").exists()
    assert not trainer.use_grad_cache({"query_chunks": [1, 2], "passage_chunks": [1, 2]})  # it would not train it
    with pytest.raises(ValueError, match="--grad_cache cannot train the projection"):
        make_trainer(student_path, tmp_path / "y", teacher=ModelTeacher(teacher), cosine_weight=1.0, grad_cache=True)


def test_precomputed_teacher_names_missing_texts_and_bad_lines(tmp_path):
    vectors = np.zeros((2, 3), dtype=np.float32)
    teacher = PrecomputedTeacher(vectors, ["a", "b"], source="t.npy")
    with pytest.raises(KeyError, match="t.npy: no teacher vector for 1 text"):
        teacher.vectors_for(["a", "c"], "query")
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "texts.jsonl").write_text('"a"\n{"x": 1}\n')
    with pytest.raises(ValueError, match="texts.jsonl, line 2: expected a JSON string, got dict"):
        PrecomputedTeacher.load(str(tmp_path / "v.npy"), str(tmp_path / "texts.jsonl"))


def test_grad_cache_is_on_by_default_exactly_when_a_batch_takes_several_micro_batches(tmp_path, monkeypatch):
    path = build_tiny_encoder(tmp_path / "m")
    for tokens, expected in ((16, True), (None, False)):
        trainer = make_trainer(path, tmp_path / f"o{tokens}", records=scored_records(), micro_batch_tokens=tokens)
        assert trainer.grad_cache is None  # the default
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        assert (max(len(batch["query_chunks"]), len(batch["passage_chunks"])) > 1) == expected
        ran = []
        monkeypatch.setattr(trainer, "_grad_cache_step", lambda model, inputs: ran.append(1) or torch.tensor(0.0))
        trainer.current_gradient_accumulation_steps = 1
        trainer.training_step(trainer.model, copy.deepcopy(batch))
        assert bool(ran) == expected
