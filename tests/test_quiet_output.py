"""What a run prints about loading and the machine: one line of ours where a fresh head is expected,
a warning that names any other weight left at random, and none of the libraries' noise on CPU."""

import logging
import os

import torch
from safetensors.torch import load_file, save_file

from conftest import build_tiny_encoder
from hf_ragtrain import RerankerTrainingArguments, load_cross_encoder


def test_a_fresh_cross_encoder_head_is_one_line_of_ours_and_not_transformers_table(tmp_path, caplog, capfd):
    path = build_tiny_encoder(tmp_path / "encoder")  # a BERT without a classification head
    with caplog.at_level(logging.INFO):
        model, _ = load_cross_encoder(str(path))
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err + caplog.text
    ours = [r for r in caplog.records if "new one starts from random" in r.getMessage()]
    assert len(ours) == 1 and ours[0].levelno == logging.INFO
    assert "classifier.bias, classifier.weight" in ours[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "hf_ragtrain" in r.name]
    assert model.classifier.out_features == 1


def test_an_encoder_weight_missing_from_the_checkpoint_is_a_warning_that_names_it(tmp_path, caplog):
    path = build_tiny_encoder(tmp_path / "encoder")
    weights = load_file(os.path.join(path, "model.safetensors"))
    dropped = [k for k in weights if "layer.1.output.dense" in k]
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped} | {"extra.weight": torch.zeros(2)},
              os.path.join(path, "model.safetensors"))
    with caplog.at_level(logging.INFO):
        load_cross_encoder(str(path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "hf_ragtrain" in r.name]
    assert any("2 weights of the model are missing" in m and "layer.1.output.dense.bias" in m for m in warnings), warnings
    assert any("1 weights of the checkpoint are not used" in m and "extra.weight" in m for m in warnings), warnings


def test_training_arguments_on_a_cpu_machine_skip_pinned_memory_and_name_deepspeeds_accelerator(monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    args = RerankerTrainingArguments(output_dir="unused", use_cpu=True)
    assert args.dataloader_pin_memory is False  # torch warns that it pins nothing without an accelerator
    if not torch.cuda.is_available():
        assert os.environ["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")  # what the user sets is kept
    RerankerTrainingArguments(output_dir="unused", use_cpu=True)
    assert os.environ["DS_ACCELERATOR"] == "cuda"
