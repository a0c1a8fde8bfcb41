"""Every recipe's ``--help``: what it does and an example first, then its own flags in groups, each with
a help text, the training family's group leading and the Trainer's flags last."""

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import os
import re

import pytest
from transformers import TrainingArguments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(f for f in os.listdir(os.path.join(REPO, "recipes")) if f.endswith(".py"))
TRAINER_FLAGS = {f"--{f.name}" for f in dataclasses.fields(TrainingArguments)} | {
    f"--no_{f.name}" for f in dataclasses.fields(TrainingArguments)}


def recipe_help(name: str, recipe_defaults: dict | None = None) -> str:
    """``recipes/<name> --help`` run in this process (the module loaded under its own name); the recipe
    class's defaults are put into ``recipe_defaults`` when given."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name[:-3]}", os.path.join(REPO, "recipes", name))
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            module.main(["--help"])
        assert done.value.code == 0
        if recipe_defaults is not None:
            from hf_ragtrain.runner.recipe import RECIPE_DEFAULTS, Recipe

            (cls,) = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Recipe)
                      and c.__module__ == spec.name]
            recipe_defaults.update({**RECIPE_DEFAULTS, **cls.defaults})
    finally:
        sys.modules.pop(spec.name, None)
    return out.getvalue()


def flags_with_help(text: str) -> dict[str, str]:
    """``{flag: its help text}`` for every flag line of a ``--help`` output (help may continue on lines below)."""
    found, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)(?:, --[\w-]+)?(?: \S+(?: \S+)*?)?(?:\s{2,}(.*))?$", line)
        if m and not line.startswith("   "):
            current = m.group(1)
            found[current] = (m.group(2) or "").strip()
        elif current and line.startswith("    ") and line.strip():
            found[current] = (found[current] + " " + line.strip()).strip()
        elif not line.strip():
            current = None
    return found


@pytest.mark.parametrize("name", RECIPES)
def test_help_starts_with_what_and_how_and_every_flag_of_ours_says_what_it_does(name):
    text = recipe_help(name)
    head, _, body = text.partition("\n\n")
    assert head.startswith("usage:") and len(head.splitlines()) <= 12, head  # not a wall of 150 flags
    description = body.split("\n\n")[0]
    assert description.strip() and "--" not in description.splitlines()[0]  # a sentence, then examples
    assert f"recipes/{name}" in body.split("options:")[0]  # an example command before the flags
    flags = flags_with_help(body)
    ours = {f: h for f, h in flags.items() if f not in TRAINER_FLAGS and f not in ("-h", "--help")}
    assert ours, flags
    missing = sorted(f for f, h in ours.items() if not h)
    assert not missing, f"flags without a help text: {missing}"
    for flag, text_ in ours.items():  # a --no_X twin says what it does, not X's text again
        if flag.startswith("--no_") and f"--{flag[5:]}" in ours:
            assert text_ != ours[f"--{flag[5:]}"] and f"--{flag[5:]} False" in text_


TRAINING_RECIPES = {"train_reranker.py": "ranking loss (RerankTrainer)",
                    "distill_reranker.py": "distillation loss (DistillTrainer)",
                    "train_embedding.py": "embedding loss (ContrastiveTrainer)",
                    "train_colbert.py": "ColBERT loss (ColbertTrainer)",
                    "train_sparse.py": "SPLADE loss (SparseTrainer)"}


@pytest.mark.parametrize("name", sorted(TRAINING_RECIPES))
def test_training_recipes_show_their_family_first_and_the_trainer_flags_last(name):
    defaults = {}
    text = recipe_help(name, defaults)
    groups = re.findall(r"^(\S[^\n]*):$", text, flags=re.M)
    assert groups[0] == "options" and groups[1] == TRAINING_RECIPES[name], groups
    assert groups[-2:] == ["common Trainer flags (transformers.TrainingArguments)",
                           "every other transformers.TrainingArguments flag (see the transformers documentation)"]
    assert {"model", "data"} <= set(groups)
    common = text.split(groups[-2] + ":")[1].split(groups[-1] + ":")[0]
    for flag in ("--output_dir", "--num_train_epochs", "--learning_rate", "--per_device_train_batch_size"):
        assert f"\n  {flag} " in common
    loss = text.split(groups[1] + ":")[1].split(groups[2] + ":")[0]
    assert "--grad_cache" in loss and "--output_dir" not in loss
    # the parser still parses as HfArgumentParser does: the recipe defaults are shown as the defaults
    learning_rate = " ".join(common.split("--learning_rate LEARNING_RATE")[1].split("\n  --")[0].split())
    assert learning_rate.endswith(f"(default: {defaults['learning_rate']})"), learning_rate


def test_grouping_does_not_change_what_is_parsed():
    """Parsed dataclasses equal HfArgumentParser's over the same flags: the groups only change the display."""
    from transformers import HfArgumentParser

    from hf_ragtrain import DataArguments, ModelArguments, RerankerTrainingArguments
    from hf_ragtrain.runner.parser import RecipeParser

    classes = (ModelArguments, DataArguments, RerankerTrainingArguments)
    argv = ["--output_dir", "x", "--rerank_loss", "listnet", "--max_length", "128", "--no_mteb_eval",
            "--learning_rate", "1e-4", "--use_cpu", "True", "--train_data", "a.jsonl", "b.jsonl"]
    ours = RecipeParser(classes).parse_args_into_dataclasses(args=argv)
    stock = HfArgumentParser(classes).parse_args_into_dataclasses(args=argv)
    for a, b in zip(ours, stock):
        assert dataclasses.asdict(a) == dataclasses.asdict(b)
    assert ours[2].rerank_loss == "listnet" and ours[1].mteb_eval is False and ours[1].train_data == ["a.jsonl", "b.jsonl"]
    with pytest.raises(SystemExit):
        with contextlib.redirect_stderr(io.StringIO()):
            RecipeParser(classes).parse_args_into_dataclasses(args=["--rerank_loss", "nope"])
    assert isinstance(RecipeParser(classes), argparse.ArgumentParser)
