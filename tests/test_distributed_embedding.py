"""Cross-device negatives and GradCache under torchrun with 2 CPU processes (DDP, DeepSpeed ZeRO-2 and ZeRO-3):
the losses and the trained model equal a 1-process run over the same global batch, and runs resumed from a
checkpoint end where the uninterrupted ones do (ContrastiveTrainer and ColbertTrainer)."""

import json
import os
import sys

import numpy as np
import pytest

import multiproc
from multiproc import losses, run

from conftest import TEXTS

pytestmark = pytest.mark.long  # several processes or whole recipes: `pytest -m long` (CI runs it)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "scripts", "train_tiny_embedder.py")


def torchrun(*args):
    return multiproc.torchrun(SCRIPT, *args, port_base=30500)


def embeddings(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device="cpu").encode(TEXTS)


@pytest.fixture(scope="module")
def single(tiny_encoder_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single"))
    run([sys.executable, SCRIPT, tiny_encoder_path, out, "8"], cwd=out)
    return out


def ds(config):
    return ["--deepspeed", os.path.join(REPO, "recipes", "configs", config)]


def assert_resumes_to_the_same_model(model, full, tmp_path, extra, compare):
    """A run resumed from ``full``'s step-2 checkpoint ends with its losses and its model (it starts from perturbed
    weights, so only a real resume ends there)."""
    resumed = str(tmp_path / "resumed")
    run(torchrun(model, resumed, "4", *extra, "--perturb_init", "--resume_from", os.path.join(full, "checkpoint-2")), cwd=str(tmp_path))
    np.testing.assert_allclose(losses(resumed), losses(full), atol=1e-6)
    for a, b in zip(compare(os.path.join(resumed, "final")), compare(os.path.join(full, "final"))):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("extra,resume", [([], True), (["--grad_cache"], False),
                                          (["--grad_cache", *ds("ds_zero2.json")], True), (ds("ds_zero3.json"), True),
                                          (["--grad_cache", *ds("ds_zero3.json")], False)],
                         ids=["ddp", "ddp-gradcache", "zero2-gradcache", "zero3", "zero3-gradcache"])
def test_two_processes_with_cross_device_negatives_match_one(tiny_encoder_path, single, tmp_path, extra, resume):
    """... and, for each engine, a run resumed from the step-2 checkpoint ends with the same model."""
    if "--deepspeed" in extra:
        pytest.importorskip("deepspeed")
    out = str(tmp_path / "full")
    run(torchrun(tiny_encoder_path, out, "4", *extra, *(["--save_steps", "2"] if resume else [])), cwd=str(tmp_path))
    ref = losses(single)
    assert ref[-1] < ref[0] - 0.1  # it really trained, so a wrong gradient would show
    np.testing.assert_allclose(losses(out), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embeddings(os.path.join(out, "final")), embeddings(os.path.join(single, "final")),
                               atol=1e-4)
    if resume:
        assert_resumes_to_the_same_model(tiny_encoder_path, out, tmp_path, extra, embeddings)


def test_no_duplicates_batches_are_global_two_processes_see_what_one_does(tiny_encoder_path, single, tmp_path):
    """The sampler orders records over the global batch (2 x 2 here), so two processes train on the batches one
    process of batch 4 does (records whose neighbours share passages, conftest.shared_rows)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run([sys.executable, SCRIPT, tiny_encoder_path, one, "4", "--shared", "--no_duplicates"], cwd=str(tmp_path))
    run(torchrun(tiny_encoder_path, two, "2", "--shared", "--no_duplicates"), cwd=str(tmp_path))
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-4, atol=1e-5)
    plain = str(tmp_path / "plain")  # the same records in a random order: other batches, other losses
    run([sys.executable, SCRIPT, tiny_encoder_path, plain, "4", "--shared"], cwd=str(tmp_path))
    assert not np.allclose(losses(plain), losses(one), atol=1e-3)


def test_guide_masking_over_the_gathered_batch_two_processes_match_one(tiny_encoder_path, single, tmp_path):
    """GISTEmbed's mask is computed over the global batch: two processes of 2 train as one process of 4."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run([sys.executable, SCRIPT, tiny_encoder_path, one, "4", "--guide"], cwd=str(tmp_path))
    run(torchrun(tiny_encoder_path, two, "2", "--guide"), cwd=str(tmp_path))
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-4, atol=1e-5)
    plain = str(tmp_path / "plain")  # the same run without the guide: other losses, so the mask did something
    run([sys.executable, SCRIPT, tiny_encoder_path, plain, "4"], cwd=str(tmp_path))
    assert not np.allclose(losses(plain), losses(one), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("extra", [[], ["--grad_cache", *ds("ds_zero2.json")]], ids=["ddp", "zero2-gradcache"])
def test_several_datasets_two_processes_train_as_one(tiny_encoder_path, tmp_path, extra):
    """Each global batch comes from one dataset (its group size, its loss weight): two processes of 2 see the
    batches one process of 4 does."""
    if "--deepspeed" in extra:
        pytest.importorskip("deepspeed")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run([sys.executable, SCRIPT, tiny_encoder_path, one, "4", "--multi"], cwd=str(tmp_path))
    run(torchrun(tiny_encoder_path, two, "2", "--multi", *extra), cwd=str(tmp_path))
    assert len(losses(one)) == 16  # 2 + 2 batches of 4 an epoch, 4 epochs
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-4, atol=1e-5)


def test_without_cross_device_negatives_each_process_sees_fewer_negatives(tiny_encoder_path, single, tmp_path):
    out = str(tmp_path)
    run(torchrun(tiny_encoder_path, out, "4", "--no_cross_device"), cwd=out)
    assert losses(out)[0] < losses(single)[0] - 0.1  # half the candidates: an easier first-step loss


def test_recipe_under_torchrun_with_zero2(tiny_encoder_path, tmp_path):
    from conftest import tiny_records, write_jsonl

    from hf_ragtrain import BiEncoder

    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    out = str(tmp_path / "out")
    run(multiproc.torchrun(os.path.join(REPO, "recipes", "train_embedding.py"), "--output_dir", out,
         "--model_name_or_path", tiny_encoder_path, "--train_data", train, "--train_group_size", "3",
         "--per_device_train_batch_size", "2", "--num_train_epochs", "2", "--bf16", "False", "--grad_cache", "True",
         *ds("ds_zero2.json"), port_base=31500), cwd=str(tmp_path))
    with open(os.path.join(out, "eval_results.json")) as fh:
        assert json.load(fh)["train_texts"] == 2 * 8 * 4  # summed over both processes
    np.testing.assert_allclose(embeddings(out), BiEncoder.from_pretrained(out).encode(TEXTS), atol=1e-5)


@pytest.fixture(scope="module")
def single_colbert(tiny_encoder_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single_colbert"))
    run([sys.executable, SCRIPT, tiny_encoder_path, out, "8", "--colbert"], cwd=out)
    return out


def token_vectors(folder):
    from sentence_transformers import MultiVectorEncoder

    return [np.asarray(v) for v in MultiVectorEncoder(folder, device="cpu").encode_document(TEXTS)]


@pytest.mark.parametrize("extra", [[], ds("ds_zero2.json"), ds("ds_zero3.json")], ids=["ddp", "zero2", "zero3"])
def test_colbert_two_processes_with_cross_device_negatives_match_one(tiny_encoder_path, single_colbert, tmp_path,
                                                                      extra):
    """... and a run resumed from the step-2 checkpoint ends with the same token vectors."""
    if "--deepspeed" in extra:
        pytest.importorskip("deepspeed")
    out = str(tmp_path / "full")
    run(torchrun(tiny_encoder_path, out, "4", "--colbert", "--save_steps", "2", *extra), cwd=str(tmp_path))
    ref = losses(single_colbert)
    assert ref[-1] < ref[0] - 0.1
    np.testing.assert_allclose(losses(out), ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(token_vectors(os.path.join(out, "final")), token_vectors(os.path.join(single_colbert, "final"))):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert_resumes_to_the_same_model(tiny_encoder_path, out, tmp_path, ["--colbert", *extra], token_vectors)


@pytest.fixture(scope="module")
def single_sparse(tiny_encoder_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single_sparse"))
    run([sys.executable, SCRIPT, tiny_encoder_path, out, "8", "--sparse"], cwd=out)
    return out


def sparse_vectors(folder):
    from sentence_transformers import SparseEncoder

    return [SparseEncoder(folder, device="cpu").encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy()]


@pytest.mark.parametrize("extra", [[], ["--grad_cache"]], ids=["ddp", "ddp-gradcache"])
def test_sparse_two_processes_with_cross_device_negatives_match_one(tiny_encoder_path, single_sparse, tmp_path,
                                                                     extra):
    """SPLADE: InfoNCE over the gathered batch plus the FLOPS terms over the gathered vectors give the 1-process
    losses (the regulariser's warm-up included), the same trained vectors, and the same after a resume."""
    out = str(tmp_path / "full")
    run(torchrun(tiny_encoder_path, out, "4", "--sparse", "--save_steps", "2", *extra), cwd=str(tmp_path))
    ref = losses(single_sparse)
    assert ref[-1] < ref[0] - 0.1
    np.testing.assert_allclose(losses(out), ref, rtol=1e-4, atol=1e-5)
    with open(os.path.join(single_sparse, "log_history.json")) as fh:
        logged = [e for e in json.load(fh) if "loss" in e]
    warmup = 0.5 * logged[-1]["step"]  # --flops_warmup_ratio 0.5 of the run's steps
    for entry in logged:  # the weight of each logged step: 0.02 * ((step - 1) / warm-up steps)^2, then 0.02
        assert entry["document_flops_weight"] == pytest.approx(0.02 * min(1.0, (entry["step"] - 1) / warmup) ** 2)
    assert all(e["active_dims_document"] > 0 for e in logged)
    for a, b in zip(sparse_vectors(os.path.join(out, "final")), sparse_vectors(os.path.join(single_sparse, "final"))):
        np.testing.assert_allclose(a, b, atol=1e-4)
    if not extra:
        assert_resumes_to_the_same_model(tiny_encoder_path, out, tmp_path, ["--sparse"], sparse_vectors)
