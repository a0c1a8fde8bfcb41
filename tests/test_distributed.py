"""RerankTrainer and DistillTrainer under torchrun with 2 CPU processes (DDP, DeepSpeed ZeRO-2 and ZeRO-3): the
losses of 1 process over the same global batch, a saved model that loads and scores like the single-process one,
and checkpoints that resume to the uninterrupted run's weights."""

import json
import os
import sys

import numpy as np
import pytest

import multiproc
from multiproc import losses, run

pytestmark = pytest.mark.long  # several processes or whole recipes: `pytest -m long` (CI runs it)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "scripts", "train_tiny_reranker.py")


def torchrun(*args):
    return multiproc.torchrun(SCRIPT, *args, port_base=29500)


TRAINERS = {"rerank": [], "distill": ["--distill"]}
ENGINES = {"ddp": [], "zero2": ["--deepspeed", os.path.join(REPO, "recipes", "configs", "ds_zero2.json")],
           "zero3": ["--deepspeed", os.path.join(REPO, "recipes", "configs", "ds_zero3.json")]}


@pytest.fixture(scope="module")
def single(tiny_ce_path, tmp_path_factory):
    """The 1-process run of each trainer over the same global batch (8 groups), made once."""
    done = {}

    def get(trainer):
        if trainer not in done:
            out = str(tmp_path_factory.mktemp(f"single_{trainer}"))
            run([sys.executable, SCRIPT, tiny_ce_path, out, "8", "--epochs", "4", *TRAINERS[trainer]], cwd=out)
            done[trainer] = out
        return done[trainer]

    return get


def scores_of(folder):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from conftest import TEXTS

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**tok(TEXTS[::2], TEXTS[1::2], padding=True, return_tensors="pt")).logits.view(-1).numpy()


def assert_same_ranking_scores(a, b):
    # The listwise loss is invariant to a shift of all scores, so the classifier bias gets a ~0 gradient
    # that Adam turns into a float-noise drift, different for 1 and 2 processes: compare up to a constant.
    np.testing.assert_allclose(a - a.mean(), b - b.mean(), atol=1e-4)


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_two_processes_match_one_and_resume_to_the_same_weights(tiny_ce_path, single, tmp_path, trainer, engine):
    """RerankTrainer and DistillTrainer under DDP, ZeRO-2 and ZeRO-3 (which must gather the sharded weights to
    save a loadable model): the losses of 1 process over the same global batch, and a run resumed from its
    step-2 checkpoint ends with the same losses and weights as the uninterrupted one (it starts from perturbed
    weights, so only a real resume ends there)."""
    if engine != "ddp":
        pytest.importorskip("deepspeed")
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    extra = [*TRAINERS[trainer], *ENGINES[engine]]
    run(torchrun(tiny_ce_path, full, "4", "--epochs", "4", "--save_steps", "2", *extra), cwd=str(tmp_path))
    ref = losses(single(trainer))
    assert ref[-1] < ref[0] - 0.05  # it really trained, so a wrong gradient sync would show
    np.testing.assert_allclose(losses(full), ref, atol=1e-5)
    assert_same_ranking_scores(scores_of(os.path.join(full, "final")), scores_of(os.path.join(single(trainer), "final")))

    run(torchrun(tiny_ce_path, resumed, "4", "--epochs", "4", *extra, "--perturb_init", "--resume_from",
                 os.path.join(full, "checkpoint-2")), cwd=str(tmp_path))
    np.testing.assert_allclose(losses(resumed), losses(full), atol=1e-6)  # steps 1-2 from the checkpoint's state
    np.testing.assert_allclose(scores_of(os.path.join(resumed, "final")), scores_of(os.path.join(full, "final")),
                               atol=1e-5)


def test_group_steps_under_ddp_match_one_process(tiny_ce_path, single, tmp_path):
    """Micro-batches of whole groups (a budget that fits a group) under DDP run as group steps, each process
    syncing once per step, and give the losses of 1 process over the same global batch run by GradCache."""
    out = str(tmp_path / "groups")
    run(torchrun(tiny_ce_path, out, "4", "--epochs", "4", "--micro_batch_tokens", "128"), cwd=str(tmp_path))
    for rank in (0, 1):
        with open(os.path.join(out, f"step_modes_{rank}.json")) as fh:
            assert set(json.load(fh)) == {"groups"}
    with open(os.path.join(single("rerank"), "step_modes_0.json")) as fh:
        assert set(json.load(fh)) == {"grad_cache"}
    np.testing.assert_allclose(losses(out), losses(single("rerank")), atol=1e-5)
