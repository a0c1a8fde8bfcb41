"""Saving never loses a trained model: a run killed while it writes a checkpoint leaves no half-written
checkpoint, resumes from the last complete one to the uninterrupted run's weights and counts; a save
that fails (a full disk) leaves what was complete as it was."""

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from conftest import TEXTS, tiny_records, write_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "scripts", "train_tiny_reranker.py")


def train(model, out, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, SCRIPT, model, out, "4", "--epochs", "4", "--save_steps", "2", *extra],
                          env=env, capture_output=True, text=True, timeout=600)


def scores_of(folder):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**tok(TEXTS[::2], TEXTS[1::2], padding=True, return_tensors="pt")).logits.view(-1).numpy()


def read(path):
    with open(path) as fh:
        return json.load(fh)


def test_a_run_killed_while_saving_leaves_no_half_checkpoint_and_resumes_to_the_same_model(tiny_ce_path, tmp_path):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    assert train(tiny_ce_path, full).returncode == 0
    proc = train(tiny_ce_path, killed, "--kill_during_save", "4")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # the checkpoint being written is only under its .partial- name; the earlier one is complete
    names = sorted(os.listdir(killed))
    assert "checkpoint-2" in names and "checkpoint-4" not in names, names
    assert ".partial-checkpoint-4" in names
    assert os.path.isfile(os.path.join(killed, ".partial-checkpoint-4", "checkpoint-4", "model.safetensors"))

    resumed = train(tiny_ce_path, killed, "--resume_from", "latest", "--perturb_init")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not [n for n in os.listdir(killed) if n.startswith(".partial-")]  # the leftover is cleaned up
    assert "removed 1 folder(s) an interrupted save left" in resumed.stderr
    np.testing.assert_allclose(scores_of(os.path.join(killed, "final")), scores_of(os.path.join(full, "final")),
                               atol=1e-5)
    full_losses = [h["loss"] for h in read(os.path.join(full, "log_history.json")) if "loss" in h]
    resumed_losses = [h["loss"] for h in read(os.path.join(killed, "log_history.json")) if "loss" in h]
    np.testing.assert_allclose(resumed_losses, full_losses, atol=1e-6)  # steps 1-2 come from the checkpoint
    assert read(os.path.join(killed, "counts.json")) == read(os.path.join(full, "counts.json"))  # the whole run's
    assert read(os.path.join(full, "counts.json"))["pairs_seen"] == 4 * 8 * 4  # 4 epochs x 8 groups x 4 pairs


def test_resuming_from_an_incomplete_folder_names_the_last_complete_checkpoint(tmp_path):
    from hf_ragtrain.trainers.checkpoints import ResumeError, resolve_resume

    out = tmp_path / "out"
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert resolve_resume("latest", str(out)) == str(out / "checkpoint-4")
    assert resolve_resume(True, str(out)) == str(out / "checkpoint-4")
    assert resolve_resume("True", str(out)) == str(out / "checkpoint-4")
    assert resolve_resume(None, str(out)) is None and resolve_resume("False", str(out)) is None
    with pytest.raises(ResumeError, match=r"checkpoint-6 is not a complete checkpoint .*last complete checkpoint "
                                          r"in .* is .*checkpoint-4"):
        resolve_resume(str(out / "checkpoint-6"), str(out))
    with pytest.raises(ResumeError, match="holds no complete checkpoint"):
        resolve_resume("latest", str(tmp_path / "empty"))


def test_a_full_disk_at_the_final_save_keeps_the_last_checkpoint_and_rescues_the_model(tiny_ce_path, tmp_path,
                                                                                       monkeypatch, capsys):
    """The recipe in-process, with the final save failing as on a full disk: exit 4, the output folder keeps
    its last complete checkpoint and no half-written model, the weights are saved elsewhere, and the message
    says what was kept and what to run."""
    sys.path.insert(0, os.path.join(REPO, "recipes"))
    import train_reranker

    from hf_ragtrain.trainers.base import RetrievalTrainer

    stock_save = RetrievalTrainer._save

    def full_disk(self, output_dir=None, state_dict=None):
        if "checkpoint-" not in str(output_dir) and "rescued" not in str(output_dir):
            stock_save(self, output_dir, state_dict)  # the files appear, then the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        return stock_save(self, output_dir, state_dict)

    monkeypatch.setattr(RetrievalTrainer, "_save", full_disk)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the rescued model goes
    out = tmp_path / "out"
    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    status = train_reranker.main(["--output_dir", str(out), "--model_name_or_path", tiny_ce_path, "--train_data", train,
                                  "--train_group_size", "4", "--max_length", "32", "--per_device_train_batch_size",
                                  "4", "--save_strategy", "steps", "--save_steps", "2", "--bf16", "False",
                                  "--mteb_eval", "False", "--disable_tqdm", "True"])
    err = capsys.readouterr().err
    assert status == 4, err[-2000:]
    assert "No space left on device" in err and f"The last complete checkpoint is {out / 'checkpoint-2'}" in err
    assert "--resume_from_checkpoint latest" in err
    rescued = err.split("The trained model was saved to ")[1].split(" instead")[0]
    assert rescued.startswith(str(tmp_path / "tmp")) and os.path.isfile(os.path.join(rescued, "model.safetensors"))
    assert sorted(os.listdir(out)) == ["checkpoint-2"]  # no half-written model, no .partial- folder
    assert os.path.isfile(out / "checkpoint-2" / "trainer_state.json")


def test_a_resumed_recipe_reports_the_whole_runs_counts(tiny_ce_path, tmp_path, capsys):
    """eval_results.json and the card count every training pair of the run, not only those after the resume."""
    import shutil

    sys.path.insert(0, os.path.join(REPO, "recipes"))
    import train_reranker

    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    args = ["--model_name_or_path", tiny_ce_path, "--train_data", train, "--train_group_size", "4", "--max_length",
            "12", "--per_device_train_batch_size", "4", "--num_train_epochs", "2", "--save_strategy", "steps",
            "--save_steps", "2", "--bf16", "False", "--mteb_eval", "False", "--disable_tqdm", "True"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train_reranker.main(["--output_dir", str(full), *args]) == 0
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")  # as if the run had stopped after step 2
    assert train_reranker.main(["--output_dir", str(resumed), *args, "--resume_from_checkpoint", "latest"]) == 0
    capsys.readouterr()
    a, b = read(full / "eval_results.json"), read(resumed / "eval_results.json")
    assert b["train_pairs"] == a["train_pairs"] == 2 * 8 * 4
    assert b["train_pairs_truncated"] == a["train_pairs_truncated"] > 0
    assert f"{a['train_pairs_truncated']} of {a['train_pairs']} training pairs" in (resumed / "README.md").read_text()
    assert [e["loss"] for e in b["train_losses"]] == pytest.approx([e["loss"] for e in a["train_losses"]], abs=1e-6)
