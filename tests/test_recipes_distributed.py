"""Every training recipe under torchrun with 2 CPU processes and DeepSpeed ZeRO-2 and ZeRO-3 (ZeRO-3 builds
the model already sharded, so the process group must exist before the model is loaded): each finishes,
writes a complete folder that loads, counts over both processes, and its first logged loss equals one
process's over the same global batch."""

import json
import os
import sys

import pytest

import multiproc
from conftest import tiny_records, write_jsonl

pytestmark = pytest.mark.long  # several processes or whole recipes: `pytest -m long` (CI runs it)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ["train_reranker", "distill_reranker", "train_embedding", "train_colbert", "train_sparse"]
ENGINES = ["ds_zero2", "ds_zero3"]


def recipe_args(name, out, data, ce, encoder, per_device_batch):
    base = ["--output_dir", out, "--train_data", data["scored" if name == "distill_reranker" else "plain"],
            "--eval_data", data["dev"], "--train_group_size", "4", "--per_device_train_batch_size",
            str(per_device_batch), "--num_train_epochs", "1", "--logging_steps", "1", "--bf16", "False",
            "--mteb_eval", "False", "--disable_tqdm", "True", "--learning_rate", "1e-3"]
    model = ce if name in ("train_reranker", "distill_reranker") else encoder
    return [*base, "--model_name_or_path", model, *(["--max_length", "32"] if model == ce else [])]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe_data")
    scored = tiny_records(8)
    for r in scored:
        r["pos_scores"], r["neg_scores"] = [1.0], [0.1 * i for i in range(len(r["neg"]))]
    return {"plain": write_jsonl(folder / "train.jsonl", tiny_records(8)),
            "scored": write_jsonl(folder / "scored.jsonl", scored),
            "dev": write_jsonl(folder / "dev.jsonl", tiny_records(4))}


@pytest.fixture(scope="module")
def single(data, tiny_ce_path, tiny_encoder_path, tmp_path_factory):
    """Each recipe in one process over the same global batch (4 groups), run once."""
    done = {}

    def get(name):
        if name not in done:
            out = str(tmp_path_factory.mktemp(f"single_{name}"))
            multiproc.run([sys.executable, os.path.join(REPO, "recipes", f"{name}.py"),
                           *recipe_args(name, out, data, tiny_ce_path, tiny_encoder_path, 4)], cwd=out)
            done[name] = out
        return done[name]

    return get


def results(out):
    with open(os.path.join(out, "eval_results.json")) as fh:
        return json.load(fh)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_runs_under_torchrun_with_zero2_and_zero3(name, engine, data, single, tiny_ce_path,
                                                               tiny_encoder_path, tmp_path):
    pytest.importorskip("deepspeed")
    from hf_ragtrain import Reranker

    out = str(tmp_path / "out")
    multiproc.run(multiproc.torchrun(os.path.join(REPO, "recipes", f"{name}.py"),
                                     *recipe_args(name, out, data, tiny_ce_path, tiny_encoder_path, 2), "--deepspeed",
                                     os.path.join(REPO, "recipes", "configs", f"{engine}.json"), port_base=32500),
                  cwd=str(tmp_path))
    got, ref = results(out), results(single(name))
    assert got["train_losses"][0]["loss"] == pytest.approx(ref["train_losses"][0]["loss"], rel=1e-4, abs=1e-5)
    assert len(got["train_losses"]) == len(ref["train_losses"]) == 2  # 8 groups, 4 per step over both processes
    counted = "train_pairs" if "reranker" in name else "train_texts"
    assert got[counted] == ref[counted] > 0  # summed over both processes
    assert set(got["after"]) >= {"after_ndcg@10", "after_mrr@10"}
    assert os.path.isfile(os.path.join(out, "README.md"))
    scores = Reranker.from_pretrained(out, dtype="fp32").compute_score([("how can i copy a list", "slicing copies")])
    assert all(s == s for s in scores)  # the saved folder loads and scores (no NaN)
