import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_ragtrain.data import GroupDataset, RerankCollator, load_records, pack_by_length, tokenize_pairs
from hf_ragtrain.trainers import RerankTrainer

from conftest import tiny_records


def test_pack_by_length_covers_all_indices_within_budget():
    lengths = [5, 40, 7, 33, 12, 12, 50, 3]
    batches = pack_by_length(lengths, max_tokens=64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 64
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)
    assert pack_by_length(lengths, None) == [sorted(range(8), key=lambda i: lengths[i])]


def test_pack_by_length_gives_equal_length_runs_their_own_batches():
    lengths = [256] * 10 + [100, 120, 256, 90]
    batches = pack_by_length(lengths, max_tokens=None, min_run=8)
    full = [b for b in batches if all(lengths[i] == 256 for i in b)]
    assert len(full) == 1 and len(full[0]) == 11  # no padding in the truncated pairs' batch
    assert sorted(i for b in batches for i in b) == list(range(14))
    short_runs = pack_by_length([5, 5, 7, 7], max_tokens=None, min_run=8)
    assert short_runs == [[0, 1, 2, 3]]  # runs shorter than min_run are packed as usual


class NoEncodings:
    """A tokenizer whose outputs carry no Rust encodings (as a pure-Python tokenizer's would)."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, *args, **kwargs):
        return dict(self.tok(*args, **kwargs))


@pytest.mark.parametrize("wrap", [False, True])
def test_truncation_is_counted_against_untruncated_lengths(tiny_ce_path, wrap):
    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    if wrap:
        tok = NoEncodings(tok)
    qs = ["how do i sort a dictionary by value"] * 3
    ds = ["tuples are immutable sequences", "use sorted with a key function on the items " * 4, "a lambda"]
    full = [len(ids) for ids in AutoTokenizer.from_pretrained(tiny_ce_path)(qs, ds)["input_ids"]]
    enc, n_cut = tokenize_pairs(tok, qs, ds, max_length=20)
    assert n_cut == sum(n > 20 for n in full) == 1
    exact = tokenize_pairs(tok, qs, ds, max_length=max(full))[1]
    assert exact == 0  # a pair exactly max_length long is not counted as cut
    assert [len(ids) for ids in enc["input_ids"]] == [min(n, 20) for n in full]
    untouched = AutoTokenizer.from_pretrained(tiny_ce_path)(qs[0], ds[0])["input_ids"]
    assert enc["input_ids"][0] == untouched


def assert_scores_pairs_alone(model, tok, batch, features, max_length):
    """The batch's group scores equal every pair scored alone, in group order (the reference)."""
    with torch.no_grad():
        scores = RerankTrainer.score_groups(model, batch)
        ref = torch.tensor([[model(**tok(f["query"], d, return_tensors="pt", truncation=True, max_length=max_length))
                             .logits.item() for d in f["docs"]] for f in features])
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)


def test_collator_shapes_and_restore_order(tiny_ce_path):
    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path, num_labels=1).eval()
    records, _ = load_records(tiny_records(6, n_neg=3))
    ds = GroupDataset(records, group_size=4)
    features = [ds[i] for i in range(3)]
    batch = RerankCollator(tok, max_length=24, micro_batch_tokens=40)(features)
    assert batch["labels"].shape == (3, 4) and batch["labels"][:, 0].eq(1).all()
    assert len(batch["chunks"]) > 1 and int(batch["num_pairs"]) == 12
    assert sum(c["input_ids"].shape[0] for c in batch["chunks"]) == 12
    for chunk in batch["chunks"]:
        assert chunk["input_ids"].numel() <= 40 or chunk["input_ids"].shape[0] == 1
    assert_scores_pairs_alone(model, tok, batch, features, max_length=24)


def test_prompt_is_prepended_to_the_query(tiny_ce_path):
    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    feat = {"query": "what is a lambda", "docs": ["a lambda"], "labels": [1], "prompt": "tuples "}
    batch = RerankCollator(tok, max_length=64)([feat])
    ids = batch["chunks"][0]["input_ids"][0].tolist()
    assert ids == tok("tuples what is a lambda", "a lambda")["input_ids"]


def test_uneven_groups_are_rejected(tiny_ce_path):
    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    with pytest.raises(ValueError, match="same size"):
        RerankCollator(tok)([{"query": "a", "docs": ["b", "c"], "labels": [1, 0]},
                             {"query": "a", "docs": ["b"], "labels": [1]}])


def test_padding_to_a_multiple_keeps_the_scores(tiny_ce_path):
    """pad_to_multiple_of rounds every micro-batch's width up (bounding the GEMM shapes bf16 CPU
    kernels are compiled for); the padding is masked, so each pair scores as it does alone."""
    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path, num_labels=1).eval()
    records, _ = load_records(tiny_records(6, n_neg=3))
    ds = GroupDataset(records, group_size=4)
    features = [ds[i] for i in range(3)]
    batch = RerankCollator(tok, max_length=24, micro_batch_tokens=40, pad_to_multiple_of=16)(features)
    widths = [c["input_ids"].shape[1] for c in batch["chunks"]]
    assert all(w % 16 == 0 for w in widths)
    assert any(w > int(c["attention_mask"].sum(1).max()) for w, c in zip(widths, batch["chunks"]))  # padding added
    assert_scores_pairs_alone(model, tok, batch, features, max_length=24)


def test_recipe_collator_batching_defaults(monkeypatch):
    """The recipes' collators: 2048-token micro-batches and widths rounded to 64 for bf16 on CPU;
    one pass and no rounding on a GPU or in fp32; 0 switches either off, a number sets it."""
    from hf_ragtrain.hardware import collator_batching

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert collator_batching(None, None, bf16=True) == {"micro_batch_tokens": 2048, "pad_to_multiple_of": 64}
    assert collator_batching(None, None, bf16=False)["pad_to_multiple_of"] is None
    assert collator_batching(0, 0, bf16=True) == {"micro_batch_tokens": None, "pad_to_multiple_of": None}
    assert collator_batching(512, 8, bf16=False) == {"micro_batch_tokens": 512, "pad_to_multiple_of": 8}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert collator_batching(None, None, bf16=True) == {"micro_batch_tokens": None, "pad_to_multiple_of": None}


def test_score_pairs_rounds_widths_for_bf16_on_cpu_and_keeps_the_scores(tiny_ce_path, monkeypatch):
    """score_pairs pads batches to 64 tokens when the model computes in bf16 on CPU (autocast or bf16
    weights) and not in fp32; a forced multiple leaves fp32 scores as they are."""
    import numpy as np

    import hf_ragtrain.modeling.cross_encoder as ce
    from hf_ragtrain import score_pairs

    tok = AutoTokenizer.from_pretrained(tiny_ce_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path, num_labels=1).eval()
    records, _ = load_records(tiny_records(4, n_neg=3))
    queries = [r.query for r in records for _ in range(4)]
    docs = [d for r in records for d in [*r.pos, *r.neg]]
    widths = []
    real = ce.pad_micro_batches

    def spy(tokenizer, enc, batches, multiple=None):
        chunks = real(tokenizer, enc, batches, multiple)
        widths.extend((c["input_ids"].shape[1], multiple) for c in chunks)
        return chunks

    monkeypatch.setattr(ce, "pad_micro_batches", spy)
    plain = score_pairs(model, tok, queries, docs, max_length=24, batch_size=5)
    assert {m for _, m in widths} == {None} and any(w % 16 for w, _ in widths)
    widths.clear()
    forced = score_pairs(model, tok, queries, docs, max_length=24, batch_size=5, pad_to_multiple_of=16)
    assert all(w % 16 == 0 for w, _ in widths)
    np.testing.assert_allclose(forced, plain, rtol=1e-5, atol=1e-5)
    widths.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        score_pairs(model, tok, queries, docs, max_length=24, batch_size=5)
    assert widths and all(w == 64 and m == 64 for w, m in widths)
    widths.clear()
    score_pairs(model.to(torch.bfloat16), tok, queries, docs, max_length=24, batch_size=5)
    assert widths and all(w == 64 and m == 64 for w, m in widths)
