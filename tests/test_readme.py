"""Every code block of README.md runs as written, in order, or is skipped for a reason stated here; so do
the usage snippets of the model cards the README's commands write.

The blocks run in a copy of the checkout's layout (``data/``, ``recipes/``, ``scripts/`` linked, ``.venv/bin/python``
this interpreter) beside a ``../shared/data/scifact`` that is the bundled FAQ data in the BEIR layout, so the SciFact
commands run unchanged on small data. ``minilm`` and ``smollm2`` name tiny random models here
(``$HF_RAGTRAIN_MINILM``, ``$HF_RAGTRAIN_SMOLLM2``): the blocks are checked to run and to write what they say,
not for quality, which BENCHMARKS.md measures on the real models. Long: ``pytest -m long``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from conftest import build_tiny_llm  # noqa: E402

pytestmark = pytest.mark.long

#: a block whose text contains the key is not run, for the reason given
SKIPPED = {
    "-m pytest tests": "the test command itself",
    "torchrun --nproc_per_node": "launches several processes per command (tests/test_recipes_distributed.py runs every "
                                 "recipe under torchrun with ZeRO-2 and ZeRO-3, tests/test_distributed*.py every "
                                 "trainer under DDP); FSDP and several nodes need GPUs",
    "recipes/train_pipeline.py --beir_dir": "trains six models in a row, and refuses a first stage that does not "
                                            "rank (as tiny random models do); tests/test_two_stage_pipeline.py runs "
                                            "it end to end, BENCHMARKS.md has the real run",
    "recipes/adapt.py --corpus runs/python_faq_beir": "generates, filters and trains in seven stages, and refuses an "
                                                       "embedder that does not rank (as tiny random models do); "
                                                       "tests/test_adapt_pipeline.py runs it end to end",
    "adapt(args)": "the same stages as recipes/adapt.py above, from Python",
    "benchmarks/suite.py": "a benchmark of the real models against sentence-transformers, minutes per comparison; "
                           "tests/test_benchmarks.py runs each benchmark script on tiny models",
}
#: blocks that need MiniLM's 384 dimensions (Matryoshka dimensions up to 384) get a tiny model that wide
WIDE = re.compile(r"matryoshka_dims\W+384")
#: what a run must never print: the libraries' noise that hf_ragtrain says in its own words, or not at all
NOISE = ("LOAD REPORT", "Setting accelerator to CPU", "pin_memory")


def readme_blocks(path: str = os.path.join(REPO, "README.md")) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of every fenced block of ``path``, in order."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    return [(text[:m.start()].count("\n") + 1, m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


BLOCKS = readme_blocks()


def skip_reason(language: str, code: str) -> str | None:
    if language == "text":
        return "console output, not code"
    return next((why for key, why in SKIPPED.items() if key in code), None)


def tiny_minilm(path: str, width: int = 32) -> str:
    """A 1-layer BERT ``width`` wide with MiniLM's sentence-transformers layout (mean pooling, normalised) and a
    word-level vocabulary of the bundled data's words, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from hf_ragtrain.offline import minilm_path

    words = {}
    for name in ("train.jsonl", "dev.jsonl"):
        with open(os.path.join(REPO, "data", "python_faq", name), encoding="utf-8") as fh:
            for line in fh:
                for w in re.findall(r"\w+|[^\w\s]", line.lower()):
                    words[w] = words.get(w, 0) + 1
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words, key=lambda w: -words[w])[:3000]]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=width, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=width, max_position_embeddings=512)
    BertModel(config).save_pretrained(path)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    real = minilm_path()
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        shutil.copy(os.path.join(real, name), path)
    shutil.copytree(os.path.join(real, "1_Pooling"), os.path.join(path, "1_Pooling"))
    return path


def tiny_chat_llm(path: str) -> str:
    """The tests' tiny Llama with a chat template and room for long prompts."""
    from transformers import AutoConfig, AutoTokenizer

    build_tiny_llm(path)
    config = AutoConfig.from_pretrained(path)
    config.max_position_embeddings = 2048
    config.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """``(folder, environment)`` the blocks run in, with the checkout's layout and a BEIR copy of the bundled data
    at ``../shared/data/scifact``."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "repo"
    work.mkdir()
    for name in ("data", "recipes", "scripts", "hf_ragtrain", "benchmarks"):
        os.symlink(os.path.join(REPO, name), work / name)
    (work / ".venv" / "bin").mkdir(parents=True)
    python = work / ".venv" / "bin" / "python"  # this interpreter, in its own environment
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_RAGTRAIN_MINILM": tiny_minilm(str(root / "tiny-minilm")),
           "WIDE_MINILM": tiny_minilm(str(root / "tiny-minilm-384"), width=384),
           "HF_RAGTRAIN_SMOLLM2": tiny_chat_llm(str(root / "tiny-smollm2")),
           "PATH": f"{work / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    scifact = root / "shared" / "data" / "scifact"
    subprocess.run([sys.executable, "scripts/records_to_beir.py", "--records", "data/python_faq/train.jsonl",
                    "data/python_faq/dev.jsonl", "--output_dir", str(scifact)], cwd=work, env=env, check=True,
                   capture_output=True)
    shutil.copy(scifact / "qrels" / "dev.tsv", scifact / "qrels" / "test.tsv")  # SciFact's evaluation split
    return work, env


def run_block(language: str, code: str, work, env) -> subprocess.CompletedProcess:
    if language == "bash":
        command = [shutil.which("bash") or "bash", "-euo", "pipefail", "-c", code.replace("bash scripts/setup.sh && ", "")]
    elif language == "python":
        command = [sys.executable, "-c", code]
    else:
        raise AssertionError(f"a README block in {language!r}: add how to run it, or a reason to skip it")
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("line,language,code", BLOCKS, ids=[f"README.md:{line}" for line, _, _ in BLOCKS])
def test_readme_block_runs_as_written(line, language, code, workspace):
    reason = skip_reason(language, code)
    if reason:
        pytest.skip(reason)
    work, env = workspace
    if language == "json":  # a record of the training-data format: it loads as the text says
        from hf_ragtrain import load_records

        path = work / f"block{line}.jsonl"
        path.write_text(code)
        records, _ = load_records(str(path))
        assert len(records) == 1 and records[0].pos
        return
    if WIDE.search(code):
        env = {**env, "HF_RAGTRAIN_MINILM": env["WIDE_MINILM"]}
    proc = run_block(language, code, work, env)
    assert proc.returncode == 0, f"README.md line {line} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    said = proc.stdout + proc.stderr
    assert not [n for n in NOISE if n in said], [n for n in NOISE if n in said]


#: the folders the README's commands write, whose cards' usage snippets run next
CARDS = ["runs/reranker", "runs/embedder", "runs/colbert", "runs/splade", "runs/llm", "runs/student"]
#: runs ``(label, code)`` pairs one after the other in one process, each in a namespace of its own; a traceback
#: names the snippet it came from
SNIPPET_RUNNER = """
import json, sys
for label, code in json.load(sys.stdin):
    print("running", label, flush=True)
    exec(compile(code, label, "exec"), {"__name__": "__main__"})
"""


def test_model_card_usage_snippets_run_on_the_saved_folder(workspace):
    work, env = workspace
    snippets = []
    for folder in CARDS:
        card = work / folder / "README.md"
        assert card.exists(), f"{folder} was not written by the README's commands"
        found = [code for _, language, code in readme_blocks(str(card)) if language == "python"]
        assert found, f"{card} has no usage snippet"
        snippets += [(f"{folder}/README.md snippet {i + 1}",
                      code.replace("PATH_OR_REPO_ID", str(work / folder)).replace('"PATH', f'"{work / folder}'))
                     for i, code in enumerate(found)]
    assert "> **Demo model.**" in (work / "runs" / "reranker" / "README.md").read_text()  # the bundled data's job
    proc = subprocess.run([sys.executable, "-c", SNIPPET_RUNNER], input=json.dumps(snippets), cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-1000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.count("running ") == len(snippets) >= len(CARDS)


def test_every_readme_block_is_run_or_skipped_for_a_stated_reason():
    """A new block in a language this file cannot run fails here, not silently."""
    for line, language, code in BLOCKS:
        assert language in ("bash", "python", "json", "text") or skip_reason(language, code), (line, language)
    stale = [key for key in SKIPPED if not any(key in code for _, _, code in BLOCKS)]
    assert not stale, f"skip reasons for blocks the README no longer has: {stale}"
