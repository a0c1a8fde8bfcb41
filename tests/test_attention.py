"""The CPU attention kernel computes eager attention's math; its dropout keeps eager's statistics."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_ragtrain.modeling.attention import Dropout16, dropout_16bit, register, use_fast_dropout

from conftest import TEXTS


def test_kernel_matches_eager_attention_without_dropout(tiny_ce_path):
    name = register()
    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    batch = tok(TEXTS[::2], TEXTS[1::2], padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padding present, so the mask path is exercised
    eager = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path, attn_implementation="eager").eval()
    ours = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path, attn_implementation=name).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, eager(**batch).logits, atol=1e-5, rtol=1e-5)
    # gradients too (train mode with dropout 0 in the tiny config)
    for m in (eager, ours):
        m.train()
        m.zero_grad()
        m(**batch).logits.sum().backward()
    for (n, a), (_, b) in zip(eager.named_parameters(), ours.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_padding_is_masked(tiny_ce_path):
    """A pair scores the same alone and padded inside a batch with a longer pair."""
    name = register()
    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path, attn_implementation=name).eval()
    with torch.no_grad():
        alone = model(**tok([TEXTS[2]], [TEXTS[3]], return_tensors="pt")).logits[0]
        padded = model(**tok([TEXTS[2], TEXTS[0]], [TEXTS[3], TEXTS[1] * 3], padding=True,
                             return_tensors="pt")).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_16bit_statistics(p):
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = dropout_16bit(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005  # 400k draws: 5 sigma is ~0.004
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    values = sorted(torch.unique(y).tolist())
    assert values[0] == 0.0 and len(values) == 2
    assert values[1] == pytest.approx(65536 / (65536 - round(p * 65536)))
    assert torch.equal(dropout_16bit(x, 0.0), x) and not dropout_16bit(x, 1.0).any()


def test_fast_dropout_swap_changes_no_weights(tiny_ce_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_dropouts = sum(type(m) is torch.nn.Dropout for m in model.modules())
    assert use_fast_dropout(model) == n_dropouts > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert sum(isinstance(m, Dropout16) for m in model.modules()) == n_dropouts
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_kernel_matches_eager_for_a_grouped_query_causal_decoder(tiny_llm_path):
    from transformers import AutoModel

    tok = AutoTokenizer.from_pretrained(tiny_llm_path)
    outputs = {}
    for impl in ("eager", register()):
        model = AutoModel.from_pretrained(tiny_llm_path, attn_implementation=impl).eval()
        assert model.config.num_key_value_heads < model.config.num_attention_heads
        with torch.no_grad():
            padded = tok(TEXTS[:4], padding=True, return_tensors="pt")
            unpadded = tok(TEXTS[:1], return_tensors="pt")  # no padding: the kernel gets no mask
            outputs[impl] = (model(**padded).last_hidden_state * padded["attention_mask"].unsqueeze(-1),
                             model(**unpadded).last_hidden_state)
    for ours, eager in zip(outputs[register()], outputs["eager"]):
        torch.testing.assert_close(ours, eager, atol=1e-5, rtol=1e-4)


def test_random_int16_is_the_lowbias32_hash_of_its_counters_and_follows_torch_seed():
    """The bits equal the hash computed in Python's exact integers (so int32 wrap-around is what the
    kernels do), two halves per 32-bit value, and the same seed gives the same bits."""
    from hf_ragtrain.modeling.attention import random_int16

    torch.manual_seed(5)
    a, b = torch.randint(-(2 ** 31), 2 ** 31 - 1, (2,), dtype=torch.int64).tolist()

    def lowbias32(v):
        v ^= v >> 16
        v = (v * 0x7FEB352D) & 0xFFFFFFFF
        v ^= v >> 15
        v = (v * 0x846CA68B) & 0xFFFFFFFF
        return v ^ (v >> 16)

    expected = []
    for i in range(500):
        v = lowbias32(((a | 1) * i + b) & 0xFFFFFFFF)
        expected += [v & 0xFFFF, v >> 16]  # little-endian halves
    expected = [e - 65536 if e >= 32768 else e for e in expected][:999]
    torch.manual_seed(5)
    bits = random_int16(999)
    assert bits.dtype == torch.int16 and bits.tolist() == expected
    torch.manual_seed(5)
    assert torch.equal(random_int16(999), bits)
    many = random_int16(1_000_000).float()
    assert abs(many.mean().item()) < 0.005 * 32768  # uniform over [-32768, 32767]
    assert abs((many < -32768 + 6554).float().mean().item() - 0.1) < 0.002


def test_random_int16_in_pieces_joins_into_one_draw():
    from hf_ragtrain.modeling.attention import draw_hash_keys, random_int16

    keys = draw_hash_keys()
    whole = random_int16(1000, keys=keys)
    pieces = torch.cat([random_int16(n, keys=keys, start=s) for s, n in ((0, 300), (300, 500), (800, 200))])
    assert torch.equal(pieces, whole)
    with pytest.raises(ValueError, match="even"):
        random_int16(10, keys=keys, start=3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_keep_mask_is_bits_at_or_above_the_threshold(dtype):
    from hf_ragtrain.modeling.attention import keep_mask

    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)  # every 16-bit value once
    keep, scale = keep_mask(bits.clone(), 0.1, dtype)
    n_drop = round(0.1 * 65536)
    assert keep.dtype == dtype and sorted(torch.unique(keep).tolist()) == [0.0, 1.0]
    assert torch.equal(keep == 1, bits >= -32768 + n_drop)  # exactly n_drop of the 65536 values dropped
    assert scale == 65536 / (65536 - n_drop)


@pytest.mark.parametrize("chunk_scores", [1, 2 ** 30])  # one batch row per chunk, or all rows at once
def test_attention_with_dropout_equals_eager_math_with_the_same_mask(monkeypatch, chunk_scores):
    """Output and gradients equal softmax(q k^T / sqrt(d) + mask) with the dropout mask rebuilt from
    the same seed, applied the textbook way (probabilities times keep / (1 - p)), then times v."""
    from hf_ragtrain.modeling import attention

    monkeypatch.setattr(attention, "CHUNK_SCORES", chunk_scores)
    B, H, L, d, p = 3, 2, 6, 4, 0.3
    q, k, v = (torch.randn(B, H, L, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    lengths = torch.tensor([6, 4, 2])
    attend = (torch.arange(L)[None, :] < lengths[:, None])[:, None, None, :].expand(B, 1, L, L)
    module = torch.nn.Module().train()

    torch.manual_seed(7)
    out, weights = attention.cpu_attention(module, q, k, v, attend, dropout=p)
    grads = torch.autograd.grad(out.sum() + (out ** 2).sum(), (q, k, v))

    torch.manual_seed(7)
    bits = attention.random_int16(B * H * L * L).view(B, H, L, L)
    n_drop = round(p * 65536)
    keep = (bits >= -32768 + n_drop).double() * 65536 / (65536 - n_drop)
    scores = (q @ k.transpose(2, 3)) / d ** 0.5
    probs = torch.softmax(scores.masked_fill(~attend, float("-inf")), dim=-1)
    expected = ((probs * keep) @ v).transpose(1, 2)
    expected_grads = torch.autograd.grad(expected.sum() + (expected ** 2).sum(), (q, k, v))
    assert weights is None
    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
