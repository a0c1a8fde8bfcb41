"""torchrun with 2 CPU processes (DDP, DeepSpeed ZeRO-2 and ZeRO-3) gives the losses of 1 process over the same
global batch, and the saved model loads and scores like the single-process one."""

import os
import sys

import numpy as np
import pytest

import multiproc
from multiproc import losses, run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "scripts", "train_tiny_reranker.py")


def torchrun(*args):
    return multiproc.torchrun(SCRIPT, *args, port_base=29500)


@pytest.fixture(scope="module")
def single(tiny_ce_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single"))
    run([sys.executable, SCRIPT, tiny_ce_path, out, "8", "--epochs", "4"], cwd=out)
    return out


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


def test_ddp_two_processes_match_one(tiny_ce_path, single, tmp_path):
    out = str(tmp_path)
    run(torchrun(tiny_ce_path, out, "4", "--epochs", "4"), cwd=out)
    ref = losses(single)
    assert ref[-1] < ref[0] - 0.05  # it really trained, so a wrong gradient sync would show
    np.testing.assert_allclose(losses(out), ref, atol=1e-5)
    assert_same_ranking_scores(scores_of(os.path.join(out, "final")), scores_of(os.path.join(single, "final")))


@pytest.mark.parametrize("config", ["ds_zero2.json", "ds_zero3.json"])
def test_deepspeed_two_processes_match_one(tiny_ce_path, single, tmp_path, config):
    """ZeRO-2 and ZeRO-3 (which must gather the sharded weights to save a loadable model)."""
    pytest.importorskip("deepspeed")
    out = str(tmp_path)
    run(torchrun(tiny_ce_path, out, "4", "--epochs", "4", "--deepspeed",
                 os.path.join(REPO, "recipes", "configs", config)), cwd=out)
    np.testing.assert_allclose(losses(out), losses(single), atol=1e-5)
    assert_same_ranking_scores(scores_of(os.path.join(out, "final")), scores_of(os.path.join(single, "final")))
