"""The distillation chain through the recipes, on tiny models: train an LLM reranker (LoRA), score the
records with it, distil into a cross-encoder from the scores and from the online teacher."""

import json
import os

import numpy as np
import pytest

from conftest import build_tiny_llm, run_script, tiny_records, write_jsonl
from hf_ragtrain import LlmReranker, RerankingEvaluator, load_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = "query : {query} . document : {document} . relevant ?"


def recipe(name):
    return os.path.join(REPO, "recipes", name)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    llm = build_tiny_llm(root / "base_llm", initializer_range=0.2)
    train = write_jsonl(root / "train.jsonl", tiny_records(8))
    dev = write_jsonl(root / "dev.jsonl", tiny_records(4))
    teacher = root / "teacher"
    proc = run_script(recipe("train_reranker.py"), "--output_dir", str(teacher), "--model_name_or_path", llm,
                      "--llm_head", "yes_token", "--template", TEMPLATE, "--yes_token", "Yes", "--lora",
                      "--lora_r", "8", "--lora_target_modules", "q_proj", "v_proj", "up_proj", "down_proj",
                      "--train_data", train, "--eval_data", dev, "--train_group_size", "4", "--max_length", "48",
                      "--num_train_epochs", "6", "--learning_rate", "3e-2", "--per_device_train_batch_size", "4",
                      "--bf16", "False", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("train", "dev"):
        proc = run_script(recipe("score_with_teacher.py"), "--teacher", str(teacher), "--input", str(root / f"{name}.jsonl"),
                          "--output", str(root / f"{name}.scored.jsonl"), cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root, teacher, dev


def test_llm_reranker_recipe_saves_an_adapter_with_its_prompt_and_mteb_agrees(chain):
    root, teacher, dev = chain
    results = json.loads((teacher / "eval_results.json").read_text())
    assert (teacher / "adapter_config.json").is_file() and (teacher / "hf_ragtrain_reranker.json").is_file()
    model = LlmReranker.from_pretrained(str(teacher)).eval()
    assert model.settings.template == TEMPLATE and model.is_peft
    again = RerankingEvaluator(load_records(dev)[0])(lambda q, d: model.score(q, d))
    assert results["after"]["after_ndcg@10"] == pytest.approx(again["ndcg@10"], abs=1e-6)
    (task, by_split), = results["mteb"].items()  # the saved adapter folder, through mteb's reranking path
    assert by_split["dev"]["ndcg_at_10"] == pytest.approx(again["ndcg@10"], abs=1e-5)
    card = (teacher / "README.md").read_text()
    assert "LlmReranker.from_pretrained" in card and "trained as a LoRA adapter" in card


def test_scored_records_hold_the_teachers_scores(chain):
    root, teacher, _ = chain
    model = LlmReranker.from_pretrained(str(teacher)).eval()
    for row in map(json.loads, (root / "train.scored.jsonl").read_text().splitlines()):
        np.testing.assert_allclose(row["pos_scores"] + row["neg_scores"],
                                   model.score([row["query"]] * 4, row["pos"] + row["neg"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("source", ["records", "online", "records+teacher"])
def test_distil_recipe_reports_teacher_and_student(chain, tiny_ce_path, tmp_path, source):
    root, teacher, dev = chain
    data = {"records": ["--train_data", str(root / "train.scored.jsonl"), "--eval_data", str(root / "dev.scored.jsonl")],
            "online": ["--teacher", str(teacher), "--train_data", str(root / "train.jsonl"), "--eval_data", dev],
            # scores from the records; the teacher model is only evaluated and timed
            "records+teacher": ["--teacher", str(teacher), "--train_data", str(root / "train.scored.jsonl"),
                                "--eval_data", dev]}[source]
    out = tmp_path / "student"
    proc = run_script(recipe("distill_reranker.py"), "--output_dir", str(out), "--model_name_or_path", tiny_ce_path,
                      *data, "--train_group_size", "4", "--max_length", "32", "--num_train_epochs", "4",
                      "--learning_rate", "3e-3", "--per_device_train_batch_size", "4", "--distill_loss", "soft_ce",
                      "--bf16", "False", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    model = LlmReranker.from_pretrained(str(teacher)).eval()
    expected_teacher = RerankingEvaluator(load_records(dev)[0])(lambda q, d: model.score(q, d))
    assert results["teacher"] == pytest.approx(expected_teacher, abs=1e-6)
    assert results["student"]["ndcg@10"] == pytest.approx(results["after"]["after_ndcg@10"], abs=1e-6)
    distinct = {(r.query, d) for r in load_records(str(root / "train.jsonl"))[0] for d in r.pos + r.neg}
    assert results["teacher_pairs_scored"] == (len(distinct) if source == "online" else 0)  # each pair once
    assert ("teacher_pairs_per_s" in results) == (source != "records")
    card = (out / "README.md").read_text()
    assert "DistillTrainer" in card and "% of the teacher" in card


def test_distil_recipe_refuses_unscored_records_without_a_teacher(tiny_ce_path, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(4))
    proc = run_script(recipe("distill_reranker.py"), "--output_dir", str(tmp_path / "o"), "--model_name_or_path",
                      tiny_ce_path, "--train_data", train, cwd=tmp_path)
    assert proc.returncode == 2 and "4 of 4 training records have no teacher scores" in proc.stderr
