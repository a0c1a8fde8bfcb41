"""The benchmark suite's own arithmetic: the FLOP count, the BENCHMARKS.md refresh, the option stripping."""

import os
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import _common  # noqa: E402
import _flops  # noqa: E402
import suite  # noqa: E402


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_training_flops_equal_torch_flop_counter(attn):
    """The formula's forward + backward FLOPs equal what torch counts for a real step of a small BERT."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=80, num_labels=1, attn_implementation=attn)
    model = BertForSequenceClassification(config)
    per_token, per_sequence = _flops.matmul_parameters(model)
    # 3 layers x (4 d^2 attention + 2 d i feed-forward) per token; pooler d^2 + classifier d per sequence
    assert per_token == 3 * (4 * 48 * 48 + 2 * 48 * 80)
    assert per_sequence == 48 * 48 + 48
    for length in (5, 19):
        ids = torch.randint(0, 120, (2, length))
        with FlopCounterMode(display=False) as counter:
            model(input_ids=ids).logits.sum().backward()
        expected = _flops.training_flops([length, length], per_token, per_sequence, 3, 48)
        assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)


def test_cross_encoder_lengths_cut_at_max_length():
    class Tok:  # one token per word, plus [CLS] and two [SEP]
        def __call__(self, queries, docs, truncation, add_special_tokens, verbose):
            return {"input_ids": [[0] * (len(q.split()) + len(d.split()) + 3) for q, d in zip(queries, docs)]}

    groups = [{"query": "a b", "docs": ["c", "d e f g h i j"]}]
    assert _flops.cross_encoder_lengths(Tok(), groups, max_length=8) == [6, 8]


def test_suite_refresh_replaces_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Quality\n\nkept\n")
    suite.refresh(str(path), f"{suite.START}\nfirst\n{suite.END}")
    once = path.read_text()
    assert once.index("intro") < once.index("first") < once.index("## Quality")
    suite.refresh(str(path), f"{suite.START}\nsecond\n{suite.END}")
    twice = path.read_text()
    assert "first" not in twice and twice.count(suite.START) == 1
    assert twice == once.replace("first", "second")


def test_summary_table_ratios():
    results = {"rerank": {"summary": [
        {"name": "train", "unit": "queries/s", "ours": 3.0, "theirs": 2.0, "ours_mb": 500.0, "theirs_mb": 1000.0}]},
        "scaling": {"summary": [
            {"name": "scale", "unit": "ratio", "ours": 9.5, "theirs": None, "ours_mb": 1050.0, "theirs_mb": 1000.0}]}}
    table = suite.summary_table(results)
    assert "**1.50x**" in table and "**0.50x**" in table  # speed and memory, ours / theirs
    assert "**9.50x**" in table and "**1.05x**" in table  # time and memory, 10N / N


def test_strip_options_removes_output_options_only():
    argv = ["--beir_dir", "d", "--write", "B.md", "--bf16", "--json=x.json", "--steps", "3", "--json", "y"]
    assert _common.strip_options(argv, ("--write", "--json")) == ["--beir_dir", "d", "--bf16", "--steps", "3"]


def test_stored_results_keep_the_benchmarks_not_rerun(tmp_path):
    import json

    for name, value in (("scaling", 9.0), ("rerank", 1.5), ("unknown", 0.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"summary": [], "table": name, "ours": value}))
    stored = suite.stored_results(str(tmp_path))
    assert list(stored) == ["rerank", "scaling"]  # the suite's order; files of no benchmark ignored
    assert stored["scaling"]["ours"] == 9.0
