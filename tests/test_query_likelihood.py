"""Query likelihood (UPR): batched scores against a per-pair forward pass over the whole vocabulary."""

from __future__ import annotations

import json
import os

import pytest
import torch

from hf_ragtrain.modeling.query_likelihood import PASSAGE_PREFIX, QUESTION_PROMPT, QueryLikelihood, _length_batches

from conftest import TEXTS

QUERIES = [TEXTS[0], TEXTS[2], TEXTS[4], "how can i copy a list of strings"]
PASSAGES = [TEXTS[1], TEXTS[3] + " " + TEXTS[9], TEXTS[5], TEXTS[7] + " " + TEXTS[10] + " " + TEXTS[11]]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_scores(path: str, queries, passages) -> list[float]:
    """Each pair alone: the full text's logits at every position, log-softmax, mean over the query's tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for query, passage in zip(queries, passages):
        context = tokenizer(PASSAGE_PREFIX + passage + QUESTION_PROMPT, add_special_tokens=False)["input_ids"]
        asked = tokenizer(" " + query, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([context + asked])).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        out.append(float(sum(logp[len(context) + i - 1, t] for i, t in enumerate(asked)) / len(asked)))
    return out


def test_batched_scores_equal_each_pair_scored_alone(tiny_llm_path):
    scorer = QueryLikelihood(tiny_llm_path, dtype="fp32", batch_tokens=10_000)
    expected = reference_scores(tiny_llm_path, QUERIES, PASSAGES)
    assert scorer.score(QUERIES, PASSAGES) == pytest.approx(expected, abs=1e-5)
    one_by_one = QueryLikelihood(tiny_llm_path, dtype="fp32", batch_tokens=1)  # every pair its own batch
    assert one_by_one.score(QUERIES, PASSAGES) == pytest.approx(expected, abs=1e-5)
    # a random model still tells pairs apart, so equal scores above would not be a constant
    assert len({round(s, 6) for s in expected}) == len(expected)


def test_passages_and_queries_are_cut_to_their_token_limits(tiny_llm_path):
    scorer = QueryLikelihood(tiny_llm_path, dtype="fp32", max_passage_tokens=3, max_query_tokens=2)
    cut_passages = [" ".join(p.split()[:3]) for p in PASSAGES]  # the tiny tokenizer has one token per word
    cut_queries = [" ".join(q.split()[:2]) for q in QUERIES]
    assert scorer.score(QUERIES, PASSAGES) == pytest.approx(
        reference_scores(tiny_llm_path, cut_queries, cut_passages), abs=1e-5)


def test_bad_inputs_are_refused(tiny_llm_path):
    scorer = QueryLikelihood(tiny_llm_path, dtype="fp32")
    with pytest.raises(ValueError, match="2 queries for 1 passages"):
        scorer.score(QUERIES[:2], PASSAGES[:1])
    with pytest.raises(ValueError, match="no token to score"):
        scorer.score(["   "], PASSAGES[:1])
    with pytest.raises(ValueError, match="dtype 'fp16'"):
        QueryLikelihood(tiny_llm_path, dtype="fp16")


@pytest.mark.parametrize("budget", [1, 20, 45, 1000])
def test_length_batches_cover_every_item_once_within_the_budget(budget):
    lengths = [5, 17, 3, 17, 9, 12, 1, 30]
    batches = _length_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= budget


@pytest.mark.long
def test_smollm2_finds_the_query_likelier_after_its_own_passage():
    """SmolLM2-135M-Instruct on the bundled FAQ: each question is likelier after its own answer than after
    the other questions' answers, for most of them (the signal the adaptation's teacher adds)."""
    with open(os.path.join(REPO, "data", "python_faq", "train.jsonl")) as fh:
        rows = [json.loads(line) for line in fh][:8]
    scorer = QueryLikelihood("smollm2")
    queries = [r["query"] for r in rows for _ in rows]
    passages = [r["pos"][0] for _ in rows for r in rows]
    scores = scorer.score(queries, passages).reshape(len(rows), len(rows))
    own_first = sum(int(scores[i].argmax() == i) for i in range(len(rows)))
    assert own_first >= 5, scores
