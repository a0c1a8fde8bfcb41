"""Each loss against a hand-written formula (plain Python math over the same numbers)."""

import math

import pytest
import torch

from hf_ragtrain.losses import listwise_ce, pairwise_ranknet, pointwise_bce

SCORES = [[2.0, 0.5, -1.0, 0.3], [0.1, 1.5, 0.2, -0.4]]
BINARY = [[1, 0, 0, 0], [1, 0, 0, 0]]
GRADED = [[3, 2, 0, 1], [2, 0, 1, 0]]


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_pointwise_bce_binary_and_graded():
    def hand(scores, labels, max_label):
        terms = []
        for row_s, row_l in zip(scores, labels):
            for s, y in zip(row_s, row_l):
                p = 1 / (1 + math.exp(-s))
                y = y / max_label
                terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
        return sum(terms) / len(terms)

    assert pointwise_bce(t(SCORES), t(BINARY)).item() == pytest.approx(hand(SCORES, BINARY, 1), rel=1e-12)
    assert pointwise_bce(t(SCORES), t(GRADED), max_label=3).item() == pytest.approx(hand(SCORES, GRADED, 3),
                                                                                      rel=1e-12)
    with pytest.raises(ValueError, match="labels must lie"):
        pointwise_bce(t(SCORES), t(GRADED), max_label=1)


def test_pairwise_ranknet_per_query_mean_over_ordered_pairs():
    def hand(scores, labels):
        per_query = []
        for s, y in zip(scores, labels):
            terms = [math.log(1 + math.exp(-(s[i] - s[j]))) for i in range(len(s)) for j in range(len(s))
                     if y[i] > y[j]]
            per_query.append(sum(terms) / len(terms))
        return sum(per_query) / len(per_query)

    assert pairwise_ranknet(t(SCORES), t(GRADED)).item() == pytest.approx(hand(SCORES, GRADED), rel=1e-12)
    assert pairwise_ranknet(t(SCORES), t(BINARY)).item() == pytest.approx(hand(SCORES, BINARY), rel=1e-12)


def test_ranknet_skips_queries_without_pairs():
    scores, labels = [[1.0, 2.0], [0.3, -0.2]], [[1, 1], [1, 0]]
    expected = math.log(1 + math.exp(-(0.3 + 0.2)))
    assert pairwise_ranknet(t(scores), t(labels)).item() == pytest.approx(expected, rel=1e-12)


def test_listwise_ce_is_a_softmax_per_group_not_per_batch():
    def hand(scores, temperature):
        out = []
        for s in scores:
            z = [x / temperature for x in s]
            out.append(-(z[0] - math.log(sum(math.exp(v) for v in z))))
        return sum(out) / len(out)

    for temp in (1.0, 0.05):
        assert listwise_ce(t(SCORES), t(BINARY), temperature=temp).item() == pytest.approx(hand(SCORES, temp),
                                                                                          rel=1e-10)
    with pytest.raises(ValueError, match="column 0"):
        listwise_ce(t(SCORES), t([[0, 1, 0, 0], [1, 0, 0, 0]]))


def test_gradients_flow_to_scores():
    s = t(SCORES).requires_grad_()
    (pointwise_bce(s, t(BINARY)) + pairwise_ranknet(s, t(GRADED)) + listwise_ce(s, t(BINARY))).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
