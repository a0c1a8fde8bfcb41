"""Shared fixtures: tiny random models built in the test (no Hub, no downloads)."""

from __future__ import annotations

import os
import re

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs as two pytest workers (setup.cfg: -n 2), each with one thread: the tiny models gain nothing from
# a second thread, and most of a test's time is single-threaded Python (imports, subprocesses' start-up).
os.environ.setdefault("OMP_NUM_THREADS", "1")

TEXTS = [
    "how do i sort a dictionary by value", "use sorted with a key function on the items",
    "what is a lambda expression", "a lambda is a small anonymous function defined inline",
    "why are default arguments shared between calls", "default values are evaluated once when the function is defined",
    "how can i copy a list", "slicing or the copy method makes a shallow copy of a list",
    "tuples are immutable sequences", "the global interpreter lock protects interpreter state",
    "strings support formatting with f strings", "modules are imported once and cached",
]


def tiny_vocab(texts=TEXTS) -> list[str]:
    words = sorted({w for t in texts for w in re.findall(r"\w+", t.lower())})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


def build_tiny_cross_encoder(path, seed: int = 0, hidden: int = 32, layers: int = 2):
    """Save a randomly initialised 2-layer BERT cross-encoder (1 logit) and its tokenizer to ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    path = str(path)
    os.makedirs(path, exist_ok=True)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(tiny_vocab())})  # vocab_file= is ignored in transformers 5
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tiny_vocab()), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=1,
                        initializer_range=0.2)
    model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_ce_path(tmp_path_factory):
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny_ce"))


def tiny_records(n: int = 6, n_neg: int = 3) -> list[dict]:
    """Records over TEXTS: query i's positive is its answer, negatives are other answers."""
    pairs = [(TEXTS[i], TEXTS[i + 1]) for i in range(0, 8, 2)]
    others = TEXTS[8:]
    out = []
    for i in range(n):
        q, p = pairs[i % len(pairs)]
        negs = [a for _, a in pairs if a != p] + others
        out.append({"query": q, "pos": [p], "neg": negs[i % 3: i % 3 + n_neg]})
    return out


def shared_rows(n: int = 24, k: int = 12) -> list[dict]:
    """Records whose passages repeat: ``k`` answers; record i's positive is answer i % k and its negatives the
    next two answers, so neighbouring records always share passages (for the no-duplicates batch tests)."""
    answers = [f"answer {j}: {TEXTS[j % len(TEXTS)]}" for j in range(k)]
    return [{"query": f"question {i}", "pos": [answers[i % k]], "neg": [answers[(i + 1) % k], answers[(i + 2) % k]]}
            for i in range(n)]


def build_tiny_encoder(path, seed: int = 0, hidden: int = 32, layers: int = 2, dropout: float = 0.0):
    """Save a randomly initialised 2-layer BERT (no head) and a fast tokenizer to ``path`` (a bi-encoder base)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = str(path)
    os.makedirs(path, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(tiny_vocab())})
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tiny_vocab()), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, initializer_range=0.2)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_llm(path, seed: int = 0, hidden: int = 32, layers: int = 2, initializer_range: float = 0.02):
    """Save a randomly initialised 2-layer Llama (causal LM) with a fast tokenizer whose EOS differs from PAD."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = str(path)
    os.makedirs(path, exist_ok=True)
    vocab = tiny_vocab() + ["Yes", "No", "<eos>"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        eos_token="<eos>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128,
                         pad_token_id=0, eos_token_id=len(vocab) - 1, bos_token_id=None,
                         initializer_range=initializer_range)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder_path(tmp_path_factory):
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


def write_jsonl(path, rows):
    """Write ``rows`` as one JSON object per line to ``path`` (a pathlib.Path); returns the path as a string."""
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run_script(script, *args, cwd):
    """Run a recipe (or any script) offline in a subprocess; returns the CompletedProcess."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def step_gradients(trainer, batch, grad_cache, seed: int = 123):
    """One training step of ``trainer`` on (a copy of) ``batch`` with GradCache on or off, from zero
    gradients and a fixed seed (the same dropout masks): the loss and each parameter's gradient."""
    import copy

    import torch

    trainer.model.zero_grad()
    trainer.grad_cache = grad_cache
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    torch.manual_seed(seed)
    loss = trainer.training_step(trainer.model, copy.deepcopy(batch))
    return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def assert_grad_cache_gives_the_plain_step(trainer, batch, grad_cache=True) -> dict:
    """The step with ``trainer.grad_cache = grad_cache`` (True: GradCache; None: the trainer's choice, e.g. a
    reranker's group steps) gives the plain step's loss and gradients on ``batch``; returns the plain
    step's gradients."""
    import pytest
    import torch

    loss_plain, plain = step_gradients(trainer, batch, grad_cache=False)
    loss_other, other = step_gradients(trainer, batch, grad_cache=grad_cache)
    assert loss_other == pytest.approx(loss_plain, rel=1e-5)
    assert plain.keys() == other.keys() and len(plain) > 5
    for name in plain:
        torch.testing.assert_close(other[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)
    return plain
