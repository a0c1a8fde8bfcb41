"""Each loss against a hand-written formula (plain Python math over the same numbers)."""

import math

import pytest
import torch

from hf_ragtrain.losses import lambda_loss, listnet, listwise_ce, margin_mse, pairwise_ranknet, pointwise_bce

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


def test_listnet_is_the_cross_entropy_to_the_softmax_of_the_grades():
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([[3.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected = 0.0
    for s, y in zip(scores.tolist(), labels.tolist()):
        target = [math.exp(v) / sum(math.exp(u) for u in y) for v in y]
        z = sum(math.exp(v / 2.0) for v in s)
        expected += -sum(t * math.log(math.exp(v / 2.0) / z) for t, v in zip(target, s)) / 2
    assert listnet(scores, labels, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def _lambda_loss_by_hand(scores: list[float], labels: list[float], mu: float, sigma: float) -> float | None:
    """NDCG-Loss2++ of one query, written out pair by pair (None: no pair with different grades)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    rank = {i: r + 1 for r, i in enumerate(order)}
    ideal = sum((2 ** g - 1) / math.log2(1 + r) for r, g in enumerate(sorted(labels, reverse=True), start=1))
    if ideal == 0:  # every grade 0: no pair to order
        return None
    gain = [(2 ** g - 1) / ideal for g in labels]
    total, pairs = 0.0, 0
    for i in range(len(scores)):
        for j in range(len(scores)):
            if labels[i] <= labels[j]:
                continue
            pairs += 1
            rho = abs(1 / math.log2(1 + rank[i]) - 1 / math.log2(1 + rank[j]))
            gap = abs(rank[i] - rank[j])
            delta = abs(1 / math.log2(1 + gap) - 1 / math.log2(2 + gap))
            weight = (rho + mu * delta) * abs(gain[i] - gain[j])
            total += weight * math.log2(1 + math.exp(-sigma * (scores[i] - scores[j])))
    return total if pairs else None


def test_lambda_loss_equals_ndcg_loss2pp_written_out_pair_by_pair():
    scores = torch.tensor([[0.3, 1.2, -0.5, 0.9], [2.0, 1.0, 0.0, -1.0], [0.1, 0.2, 0.3, 0.4]])
    labels = torch.tensor([[2.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # no pairs in query 3
    per_query = [_lambda_loss_by_hand(s, y, mu=5.0, sigma=2.0) for s, y in zip(scores.tolist(), labels.tolist())]
    expected = sum(v for v in per_query if v is not None) / 2
    assert lambda_loss(scores, labels, mu=5.0, sigma=2.0).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="different labels"):
        lambda_loss(scores[2:], labels[2:])


def test_lambda_loss_pulls_a_misranked_relevant_document_up():
    scores = torch.tensor([[1.0, 2.0, 0.0]], requires_grad=True)  # the grade-1 document ranks second
    lambda_loss(scores, torch.tensor([[1.0, 0.0, 0.0]])).backward()
    assert scores.grad[0, 0] < 0 < scores.grad[0, 1]  # descent raises it and lowers the one above it


def test_margin_mse_matches_positive_minus_negative_margins():
    student = torch.tensor([[1.0, 0.2, -0.4], [0.5, 0.7, 0.1]])
    teacher = torch.tensor([[6.0, 1.0, 2.0], [3.0, 4.0, -1.0]])
    errors = [((s[0] - s[k]) - (t[0] - t[k])) ** 2 for s, t in zip(student.tolist(), teacher.tolist())
              for k in (1, 2)]
    assert margin_mse(student, teacher).item() == pytest.approx(sum(errors) / len(errors), rel=1e-6)
    assert margin_mse(student + 5.0, teacher).item() == pytest.approx(margin_mse(student, teacher).item())

