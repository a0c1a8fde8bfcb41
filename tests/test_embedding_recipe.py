"""recipes/train_embedding.py end to end on tiny models: a sentence-transformers folder, dev and mteb metrics,
Matryoshka dims, the card, LoRA with a merged save, and bad data refused before training."""

import json
import os

import numpy as np
import pytest

from conftest import TEXTS, run_script, tiny_records, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "train_embedding.py")


def run_recipe(*args, cwd):
    return run_script(RECIPE, *args, cwd=cwd)


COMMON = ["--train_group_size", "3", "--num_train_epochs", "3", "--learning_rate", "3e-3",
          "--per_device_train_batch_size", "4", "--logging_steps", "1", "--bf16", "False",
          "--query_max_length", "16", "--passage_max_length", "24"]


def test_recipe_trains_evaluates_and_saves_a_sentence_transformers_model(tiny_encoder_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from hf_ragtrain import BiEncoder
    from hf_ragtrain.evaluation.retrieval import RetrievalEvaluator
    from hf_ragtrain.data import load_records

    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    dev = write_jsonl(tmp_path / "dev.jsonl", tiny_records(4))
    out = tmp_path / "out"
    proc = run_recipe("--output_dir", str(out), "--model_name_or_path", tiny_encoder_path, "--train_data", train,
                      "--eval_data", dev, "--matryoshka_dims", "32", "16", "--query_prompt", "q: ", *COMMON,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["train_texts"] == 3 * 8 * (1 + 3)
    # the after-training dev metrics are those of the saved model, computed again here
    saved = BiEncoder.from_pretrained(str(out))
    assert saved.settings.query_prompt == "q: " and saved.settings.query_max_length == 16
    again = RetrievalEvaluator(load_records(dev)[0])(saved)
    assert results["after"]["after_ndcg@10"] == pytest.approx(again["ndcg@10"], abs=1e-6)
    # mteb's reranking of the dev records, at full and at 16 dimensions
    task = next(iter(results["mteb"]))
    assert results["mteb"][task]["dev"]["ndcg_at_10"] > 0
    assert "16" in results["mteb_matryoshka"] and "32" not in results["mteb_matryoshka"]  # 32 is the full dim
    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS, prompt_name="query"), saved.encode(TEXTS, kind="query"), atol=1e-5)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: sentence-similarity" in card and "model-index" in card
    assert "at 16 dimensions: nDCG@10" in card and "InfoNCE with in-batch negatives under Matryoshka" in card


def test_recipe_lora_llm_embedder_with_merged_save(tiny_llm_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from hf_ragtrain import BiEncoder

    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    out = tmp_path / "out"
    proc = run_recipe("--output_dir", str(out), "--model_name_or_path", tiny_llm_path, "--train_data", train,
                      "--pooling", "last_token", "--append_eos", "True", "--lora", "True", "--lora_r", "4",
                      "--lora_target_modules", "q_proj", "v_proj", "--merge_lora", "True", *COMMON, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    saved = BiEncoder.from_pretrained(str(out))
    assert saved.settings.pooling == "last_token" and saved.settings.append_eos and not saved.is_peft
    base = BiEncoder.from_pretrained(tiny_llm_path, pooling="last_token", append_eos=True)
    assert np.abs(base.encode(TEXTS) - saved.encode(TEXTS)).max() > 1e-4  # the adapter was trained and merged
    np.testing.assert_allclose(SentenceTransformer(str(out), device="cpu").encode(TEXTS), saved.encode(TEXTS),
                               atol=1e-5)


def test_recipe_rejects_bad_data_before_training(tiny_encoder_path, tmp_path):
    rows = tiny_records(3)
    rows[1] = {"query": "q", "pos": []}
    train = write_jsonl(tmp_path / "bad.jsonl", rows)
    proc = run_recipe("--output_dir", str(tmp_path / "out"), "--model_name_or_path", tiny_encoder_path,
                      "--train_data", train, cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.jsonl" in proc.stderr and "line 2" in proc.stderr and "pos" in proc.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()
