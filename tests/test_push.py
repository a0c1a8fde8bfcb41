"""--push_to_hub on the recipe, against the local Hub server: push, pull back, compare; failed pushes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard

from conftest import tiny_records
from hub_server import LocalHub, hub_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "train_reranker.py")


def run_recipe_against(hub_url, *args, cwd, recipe=RECIPE):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub_url, HF_TOKEN="hf_test_token", TOKENIZERS_PARALLELISM="false",
               HF_HOME=str(cwd / "hf_home"), NO_PROXY="127.0.0.1")
    return subprocess.run([sys.executable, recipe, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def recipe_args(tiny_ce_path, tmp_path, out):
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in tiny_records(8)))
    dev.write_text("".join(json.dumps(r) + "\n" for r in tiny_records(4)))
    return ["--output_dir", str(out), "--model_name_or_path", tiny_ce_path, "--train_data", str(train),
            "--eval_data", str(dev), "--train_group_size", "4", "--max_length", "32", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--bf16", "False"]


def scores(model, tokenizer):
    batch = tokenizer(["how do i sort a dictionary by value"] * 2,
                      ["use sorted with a key function on the items", "tuples are immutable sequences"],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1)


def test_recipe_pushes_the_final_folder_and_it_pulls_back_identical(tiny_ce_path, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "out"
    with LocalHub() as hub:
        proc = run_recipe_against(hub.url, *recipe_args(tiny_ce_path, tmp_path, out), "--push_to_hub",
                                  "--hub_model_id", "user/tiny-reranker", "--save_strategy", "steps",
                                  "--save_steps", "1", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summaries = [summary for repo, summary in hub.commits if repo == "user/tiny-reranker"]
        # the Trainer's own checkpoint pushes still happen during training; ours comes last
        assert any("Training in progress" in s for s in summaries[:-1]), summaries
        assert summaries[-1] == "Upload model trained with hf_ragtrain"
        pushed = hub.files("user/tiny-reranker")
        for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "eval_results.json"):
            assert pushed[name] == (out / name).read_bytes(), name
        assert any(p.startswith("mteb/results/user__tiny-reranker/") for p in pushed)
        assert not hub.unhandled

        with hub_env(hub, cache_dir=tmp_path / "pull_cache"):
            remote = AutoModelForSequenceClassification.from_pretrained("user/tiny-reranker").eval()
            remote_tok = AutoTokenizer.from_pretrained("user/tiny-reranker")
            remote_card = ModelCard.load("user/tiny-reranker")
    local = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    local_tok = AutoTokenizer.from_pretrained(str(out))
    assert torch.equal(scores(remote, remote_tok), scores(local, local_tok))

    local_card = ModelCard.load(out / "README.md")
    assert remote_card.data.to_dict() == local_card.data.to_dict()
    assert remote_card.data.eval_results and remote_card.data.eval_results == local_card.data.eval_results
    ndcg = next(r for r in remote_card.data.eval_results if r.metric_type == "ndcg_at_10")
    results = json.loads((out / "eval_results.json").read_text())
    task = ndcg.dataset_name.removeprefix("MTEB ")
    assert ndcg.metric_value == pytest.approx(results["mteb"][task]["dev"]["ndcg_at_10"], abs=1e-5)


def test_failed_push_reports_and_keeps_the_local_output(tiny_ce_path, tmp_path):
    out = tmp_path / "out"
    with LocalHub() as hub:
        hub.fail_status, hub.fail_commits = 507, 1  # a status the client does not retry
        proc = run_recipe_against(hub.url, *recipe_args(tiny_ce_path, tmp_path, out), "--push_to_hub",
                                  "--hub_model_id", "user/tiny-reranker", cwd=tmp_path)
        assert "model.safetensors" not in hub.files("user/tiny-reranker")
    assert proc.returncode == 3
    assert "pushing" in proc.stderr and "user/tiny-reranker failed" in proc.stderr and "507" in proc.stderr
    assert f"still in {out}" in proc.stderr
    for name in ("model.safetensors", "README.md", "eval_results.json"):
        assert (out / name).exists(), name


def test_unreachable_hub_stops_before_training(tiny_ce_path, tmp_path):
    hub = LocalHub().start()
    url = hub.url
    hub.stop()  # nothing listens there now
    out = tmp_path / "out"
    proc = run_recipe_against(url, *recipe_args(tiny_ce_path, tmp_path, out), "--push_to_hub", "--hub_model_id",
                              "user/tiny-reranker", cwd=tmp_path)
    assert proc.returncode == 3
    assert "cannot create the Hub repo user/tiny-reranker before training" in proc.stderr
    assert "ConnectError" in proc.stderr
    assert not (out / "model.safetensors").exists()


def test_push_folder_to_a_stopped_server_raises_a_clear_error(tmp_path):
    from hf_ragtrain.hub import HubPushError, push_folder

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with LocalHub() as hub, hub_env(hub):
        hub.stop()
        with pytest.raises(HubPushError, match=r"pushing .*model to http://127\.0\.0\.1:\d+/user/m failed: "):
            push_folder(str(tmp_path / "model"), "user/m")
    assert (tmp_path / "model" / "config.json").read_text() == "{}"


def test_embedding_recipe_pushes_a_sentence_transformers_folder(tiny_encoder_path, tmp_path):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from conftest import TEXTS

    out = tmp_path / "out"
    args = recipe_args(tiny_encoder_path, tmp_path, out)
    args[args.index("--max_length"):args.index("--max_length") + 2] = ["--passage_max_length", "32"]
    with LocalHub() as hub:
        proc = run_recipe_against(hub.url, *args, "--push_to_hub", "--hub_model_id", "user/tiny-embedder", cwd=tmp_path,
                                  recipe=os.path.join(REPO, "recipes", "train_embedding.py"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.files("user/tiny-embedder")
        for name in ("model.safetensors", "modules.json", "1_Pooling/config.json", "config_sentence_transformers.json",
                     "README.md", "eval_results.json"):
            assert pushed[name] == (out / name).read_bytes(), name
        with hub_env(hub, cache_dir=tmp_path / "pull_cache"):
            remote = SentenceTransformer("user/tiny-embedder", device="cpu").encode(TEXTS)
    np.testing.assert_array_equal(remote, SentenceTransformer(str(out), device="cpu").encode(TEXTS))


def test_colbert_recipe_pushes_a_multi_vector_encoder_folder(tiny_encoder_path, tmp_path):
    from sentence_transformers import MultiVectorEncoder

    from conftest import TEXTS

    out = tmp_path / "out"
    args = recipe_args(tiny_encoder_path, tmp_path, out)
    args[args.index("--max_length"):args.index("--max_length") + 2] = ["--document_max_length", "32",
                                                                       "--colbert_dim", "16"]
    with LocalHub() as hub:
        proc = run_recipe_against(hub.url, *args, "--push_to_hub", "--hub_model_id", "user/tiny-colbert", cwd=tmp_path,
                                  recipe=os.path.join(REPO, "recipes", "train_colbert.py"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.files("user/tiny-colbert")
        for name in ("model.safetensors", "modules.json", "1_Dense/model.safetensors", "sentence_bert_config.json",
                     "README.md", "eval_results.json"):
            assert pushed[name] == (out / name).read_bytes(), name
        with hub_env(hub, cache_dir=tmp_path / "pull_cache"):
            remote = MultiVectorEncoder("user/tiny-colbert", device="cpu").encode_document(TEXTS)
    local = MultiVectorEncoder(str(out), device="cpu").encode_document(TEXTS)
    for a, b in zip(remote, local):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), atol=0, rtol=0)


def test_distill_recipe_pushes_the_student(tiny_ce_path, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = tiny_records(8)
    for r in rows:
        r["pos_scores"], r["neg_scores"] = [2.0], [0.5 * j for j in range(len(r["neg"]))]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with LocalHub() as hub:
        proc = run_recipe_against(hub.url, "--output_dir", str(out), "--model_name_or_path", tiny_ce_path,
                                  "--train_data", str(tmp_path / "train.jsonl"), "--train_group_size", "4",
                                  "--max_length", "32", "--max_steps", "2", "--per_device_train_batch_size", "4",
                                  "--bf16", "False", "--push_to_hub", "--hub_model_id", "user/tiny-student",
                                  cwd=tmp_path, recipe=os.path.join(REPO, "recipes", "distill_reranker.py"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.files("user/tiny-student")
        for name in ("model.safetensors", "config.json", "README.md", "eval_results.json"):
            assert pushed[name] == (out / name).read_bytes(), name
        with hub_env(hub, cache_dir=tmp_path / "pull_cache"):
            remote = AutoModelForSequenceClassification.from_pretrained("user/tiny-student").eval()
            tok = AutoTokenizer.from_pretrained("user/tiny-student")
    local = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    torch.testing.assert_close(scores(remote, tok), scores(local, tok), atol=0, rtol=0)
