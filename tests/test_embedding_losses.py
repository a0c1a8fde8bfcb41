"""Embedding losses and pooling against formulas written out element by element."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_ragtrain.losses import (cosine_embedding_loss, group_scores, info_nce, matryoshka, relative_similarity_loss,
                                score_distillation_kl, similarity_mse_loss)
from hf_ragtrain.modeling.pooling import pool


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _unit(v):
    n = math.sqrt(_dot(v, v))
    return [x / n for x in v]


def _log_softmax_at(values, idx):
    m = max(values)
    return values[idx] - m - math.log(sum(math.exp(v - m) for v in values))


@pytest.fixture
def batch():
    torch.manual_seed(0)
    b, g, d = 3, 4, 8
    q = F.normalize(torch.randn(b, d, dtype=torch.float64), dim=-1)
    p = F.normalize(torch.randn(b * g, d, dtype=torch.float64), dim=-1)
    return q, p, b, g


@pytest.mark.parametrize("in_batch", [True, False])
def test_info_nce_matches_hand_formula(batch, in_batch):
    q, p, b, g = batch
    t = 0.05
    ql, pl = q.tolist(), p.tolist()
    expected = 0.0
    for i in range(b):
        cands = range(b * g) if in_batch else range(i * g, i * g + g)
        scores = [_dot(ql[i], pl[j]) / t for j in cands]
        target = list(cands).index(i * g)
        expected -= _log_softmax_at(scores, target)
    expected /= b
    assert info_nce(q, p, temperature=t, in_batch_negatives=in_batch).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_rejects_passages_that_do_not_form_groups(batch):
    q, p, _, _ = batch
    with pytest.raises(ValueError, match="do not split into groups"):
        info_nce(q, p[:-1])


def test_group_scores_are_each_query_against_its_own_group(batch):
    q, p, b, g = batch
    s = group_scores(q, p)
    for i in range(b):
        for j in range(g):
            assert s[i, j].item() == pytest.approx(_dot(q[i].tolist(), p[i * g + j].tolist()))


def test_score_distillation_kl_is_per_query(batch):
    q, p, b, g = batch
    torch.manual_seed(1)
    teacher = torch.randn(b, g, dtype=torch.float64) * 3
    student = group_scores(q, p)
    t_s, t_t = 0.05, 2.0
    expected = 0.0
    for i in range(b):
        ts = [v / t_t for v in teacher[i].tolist()]
        ss = [v / t_s for v in student[i].tolist()]
        for j in range(g):
            lp, lq = _log_softmax_at(ts, j), _log_softmax_at(ss, j)
            expected += math.exp(lp) * (lp - lq)
    expected /= b
    got = score_distillation_kl(student, teacher, temperature=t_s, teacher_temperature=t_t)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # a softmax over the whole batch would change when another query's scores are shifted; this must not
    shifted = teacher.clone()
    shifted[1] += 5.0
    assert score_distillation_kl(student, shifted, t_s, t_t).item() == pytest.approx(expected, rel=1e-6)


def test_matryoshka_is_weighted_mean_over_renormalised_prefixes():
    torch.manual_seed(2)
    q, p = torch.randn(2, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    dims, weights = [8, 4, 2], [1.0, 2.0, 0.5]
    expected = 0.0
    for d, w in zip(dims, weights):
        qd = torch.tensor([_unit(v[:d]) for v in q.tolist()], dtype=torch.float64)
        pd = torch.tensor([_unit(v[:d]) for v in p.tolist()], dtype=torch.float64)
        expected += w * info_nce(qd, pd, 0.1).item()
    expected /= sum(weights)
    got = matryoshka(lambda a, b: info_nce(a, b, 0.1), q, p, dims, weights)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="must lie in"):
        matryoshka(lambda a, b: info_nce(a, b), q, p, [16])


def test_embedding_distillation_losses_match_hand_formulas():
    torch.manual_seed(3)
    n = 5
    s, t = torch.randn(n, 6, dtype=torch.float64), torch.randn(n, 6, dtype=torch.float64)
    sl, tl = [_unit(v) for v in s.tolist()], [_unit(v) for v in t.tolist()]
    cos = sum(1 - _dot(a, b) for a, b in zip(sl, tl)) / n
    assert cosine_embedding_loss(s, t).item() == pytest.approx(cos, rel=1e-6)

    mse = sum((_dot(sl[i], sl[j]) - _dot(tl[i], tl[j])) ** 2 for i in range(n) for j in range(n)) / n ** 2
    t3 = torch.randn(n, 3, dtype=torch.float64)  # the matrices compare across different dimensions
    t3l = [_unit(v) for v in t3.tolist()]
    mse3 = sum((_dot(sl[i], sl[j]) - _dot(t3l[i], t3l[j])) ** 2 for i in range(n) for j in range(n)) / n ** 2
    assert similarity_mse_loss(s, t).item() == pytest.approx(mse, rel=1e-6)
    assert similarity_mse_loss(s, t3).item() == pytest.approx(mse3, rel=1e-6)

    margin, total, count = 0.1, 0.0, 0
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if i in (j, k) or not _dot(tl[i], tl[j]) > _dot(tl[i], tl[k]):
                    continue
                total += max(0.0, margin - (_dot(sl[i], sl[j]) - _dot(sl[i], sl[k])))
                count += 1
    for chunk in (1, 2, 64):  # the anchor chunking does not change the result
        got = relative_similarity_loss(s, t, margin=margin, chunk_size=chunk)
        assert got.item() == pytest.approx(total / count, rel=1e-6)


def _padded(hidden_rows, lengths, side):
    n, width = len(lengths), max(lengths)
    h = torch.zeros(n, width, hidden_rows[0].size(-1))
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, (rows, length) in enumerate(zip(hidden_rows, lengths)):
        sl = slice(0, length) if side == "right" else slice(width - length, width)
        h[i, sl], mask[i, sl] = rows, 1
    return h, mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_ignores_padding_on_either_side(side):
    torch.manual_seed(4)
    lengths = [3, 5, 1]
    rows = [torch.randn(length, 4) for length in lengths]
    h, mask = _padded(rows, lengths, side)
    for mode, ref in [("mean", lambda r: r.mean(0)), ("cls", lambda r: r[0]), ("last_token", lambda r: r[-1])]:
        got = pool(h, mask, mode)
        for i, r in enumerate(rows):
            torch.testing.assert_close(got[i], ref(r))
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(h, mask, "max")


def test_own_group_picks_each_query_against_its_group(batch):
    from hf_ragtrain.losses import info_nce_from_scores, own_group

    q, p, b, g = batch
    full = q @ p.T
    torch.testing.assert_close(own_group(full), group_scores(q, p))
    assert info_nce_from_scores(own_group(full), 0.05, False).item() == pytest.approx(
        info_nce(q, p, 0.05, in_batch_negatives=False).item(), rel=1e-9)
