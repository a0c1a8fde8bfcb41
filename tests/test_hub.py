from huggingface_hub import ModelCard
from transformers import TrainingArguments

from hf_ragtrain.hub import CardInfo, card_hyperparameters, log_table, render_reranker_card


def test_card_lists_key_and_non_default_hyperparameters(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=5e-5, warmup_steps=0.1, report_to="none")
    hp = card_hyperparameters(args)
    assert hp["learning_rate"] == 5e-5  # the default, still listed
    assert hp["warmup_steps"] == 0.1 and "output_dir" not in hp and "report_to" not in hp
    assert "adam_beta1" not in hp  # defaults outside the key list are left out


def test_log_table_merges_loss_and_eval_rows_by_step():
    table = log_table([{"loss": 2.0, "step": 5, "epoch": 0.5}, {"loss": 1.5, "step": 10, "epoch": 1.0},
                       {"eval_ndcg@10": 0.7, "eval_mrr@10": 0.6, "step": 10, "epoch": 1.0}])
    assert "| 10 | 1.0000 | 1.5000 | 0.7000 | 0.6000 |" in table and "| 5 | 0.5000 | 2.0000 | - | - |" in table


def test_rendered_card_metadata_parses(tmp_path):
    info = CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", loss="listwise",
                    metrics_before={"before_ndcg@10": 0.1}, metrics_after={"after_ndcg@10": 0.5},
                    datasets=[{"name": "data/python_faq/train.jsonl", "split": "train", "size": 140}])
    card = render_reranker_card(info, TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert loaded.data.pipeline_tag == "text-ranking" and "reranker" in loaded.data.tags
    assert "| ndcg@10 | 0.1000 | 0.5000 |" in loaded.text
