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
