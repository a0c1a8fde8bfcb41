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
    assert loaded.data.datasets is None  # local files have no Hub id; the card's table names them
    assert "| data/python_faq/train.jsonl | train | 140 |" in loaded.text
    assert loaded.text.lstrip().startswith("# Cross-encoder reranker from all-MiniLM-L6-v2, fine-tuned on python_faq\n")
    assert "| ndcg@10 | 0.1000 | 0.5000 |" in loaded.text
    assert "pypi.org" not in loaded.text and "Demo model" not in loaded.text and "## Training run" not in loaded.text


def test_card_title_demo_note_training_run_and_hub_dataset_ids(tmp_path):
    info = CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", model_name="me/faq-reranker",
                    datasets=[{"name": "BeIR/scifact", "hub_id": "BeIR/scifact", "split": "train", "size": 9},
                              {"name": "data/python_faq/dev.jsonl", "split": "dev", "size": 3}],
                    demo="Trained on 140 questions to show the recipe.", training_run="18 optimizer steps in 88 s.")
    card = render_reranker_card(info)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.datasets == ["BeIR/scifact"]  # Hub ids only
    lines = loaded.text.strip().splitlines()
    assert lines[0] == "# me/faq-reranker"  # a model with a Hub id is titled by it
    demo = lines.index("> **Demo model.** Trained on 140 questions to show the recipe.")
    assert demo < lines.index("## Usage")  # said before anything else a visitor reads
    assert lines[lines.index("## Training run") + 2] == "18 optimizer steps in 88 s."


def _task_scores():
    from hf_ragtrain.evaluation.mteb_eval import TaskScores

    return {"scifact": TaskScores(name="scifact", task_type="Retrieval", dataset="/data/beir/scifact",
                                  dataset_revision="abc123", metrics={"test": {
                                      "ndcg_at_10": 0.6451, "map_at_10": 0.5959, "mrr_at_10": 0.6047,
                                      "recall_at_10": 0.7833, "recall_at_100": 0.925, "main_score": 0.6451}})}


def test_card_model_index_round_trips_through_huggingface_hub(tmp_path):
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    from hf_ragtrain.hub import mteb_eval_results

    results = _task_scores()
    info = CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", loss="listwise", model_name="my-reranker",
                    mteb_results=results, mteb_first_stage=results, mteb_settings={"top_k": 100})
    card = render_reranker_card(info, TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    raw = loaded.data.to_dict()
    for key in ("library_name", "base_model", "tags", "pipeline_tag", "license", "model-index"):
        assert key in raw, key
    name, parsed = model_index_to_eval_results(raw["model-index"])
    assert name == "my-reranker"
    assert parsed == mteb_eval_results(results) == loaded.data.eval_results
    assert {(r.metric_type, r.metric_value) for r in parsed} == {
        ("ndcg_at_10", 0.6451), ("map_at_10", 0.5959), ("mrr_at_10", 0.6047), ("recall_at_10", 0.7833),
        ("recall_at_100", 0.925)}
    first = parsed[0]
    assert (first.task_type, first.dataset_type, first.dataset_split, first.dataset_revision) == (
        "text-ranking", "scifact", "test", "abc123")  # a local folder is named by its base name, not its path
    assert eval_results_to_model_index(name, parsed) == raw["model-index"]
    assert "| scifact | test | this model | 0.6451 |" in loaded.text
    assert "| scifact | test | first stage alone | 0.6451 |" in loaded.text
    assert "## License" in loaded.text and "## Framework versions" in loaded.text


def test_trainer_keeps_an_hf_ragtrain_card(tmp_path, tiny_ce_path):
    from hf_ragtrain import RerankTrainer, load_cross_encoder
    from hf_ragtrain.hub import is_hf_ragtrain_card

    model, tok = load_cross_encoder(tiny_ce_path)
    trainer = RerankTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
                            processing_class=tok)
    trainer.create_model_card(model_name="x")  # no card yet: the Trainer's own is written
    assert not is_hf_ragtrain_card(str(tmp_path / "README.md"))
    info = CardInfo(base_model="m", model_name="x")
    render_reranker_card(info).save(tmp_path / "README.md")
    ours = (tmp_path / "README.md").read_text()
    trainer.create_model_card(model_name="x")
    assert (tmp_path / "README.md").read_text() == ours and is_hf_ragtrain_card(str(tmp_path / "README.md"))


def test_model_index_names_local_and_hub_datasets():
    from hf_ragtrain.evaluation.mteb_eval import TaskScores
    from hf_ragtrain.hub import mteb_eval_results

    metrics = {"dev": {"ndcg_at_10": 0.5}}
    local = TaskScores("python_faq_dev", "Reranking", "data/python_faq/dev.jsonl", "local", metrics, local=True)
    hub = TaskScores("SciFact", "Retrieval", "mteb/scifact", "0123abcd", metrics)
    (a,), (b,) = mteb_eval_results({"x": local}), mteb_eval_results({"y": hub})
    assert a.dataset_type == "python_faq" and b.dataset_type == "mteb/scifact"


def test_embedding_card_puts_each_task_under_its_own_type(tmp_path):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from hf_ragtrain.evaluation.mteb_eval import TaskScores
    from hf_ragtrain.hub import render_embedding_card

    metrics = {"test": {"ndcg_at_10": 0.7, "mrr_at_10": 0.6}}
    results = {"scifact": TaskScores("scifact", "Retrieval", "/data/scifact", "local", metrics, local=True),
               "faq_dev": TaskScores("faq_dev", "Reranking", "data/python_faq/dev.jsonl", "local", metrics, local=True)}
    card = render_embedding_card(CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", task="retrieval",
                                          mteb_results=results))
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.pipeline_tag == "sentence-similarity" and loaded.data.library_name == "sentence-transformers"
    _, evals = model_index_to_eval_results(loaded.data.to_dict()["model-index"])
    types = {(e.dataset_name, e.task_type) for e in evals}
    assert types == {("scifact", "retrieval"), ("faq_dev", "text-ranking")}  # local data: not named as mteb tasks
    assert {e.metric_value for e in evals if e.metric_type == "ndcg_at_10"} == {0.7}
    assert "SentenceTransformer(\"PATH_OR_REPO_ID\")" in card.content


def test_a_card_section_added_again_replaces_the_first(tmp_path):
    from hf_ragtrain.hub import add_card_section, mteb_eval_results

    results = _task_scores()
    info = CardInfo(base_model="sentence-transformers/all-MiniLM-L6-v2", loss="listwise", mteb_results=results)
    render_reranker_card(info, TrainingArguments(output_dir=str(tmp_path), report_to="none")).save(tmp_path / "README.md")
    indexed = len(ModelCard.load(tmp_path / "README.md").data.eval_results)
    for figure in ("0.70", "0.71"):  # a pipeline's evaluation stage run twice (--redo evaluate)
        section = f"## Two-stage evaluation\n\n| reranked | {figure} |\n"
        add_card_section(str(tmp_path), section, mteb_eval_results(results), ["behind its first stage"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.text.count("## Two-stage evaluation") == 1 and "| reranked | 0.71 |" in card.text
    assert "0.70" not in card.text
    assert card.text.count("> **Warning:** behind its first stage") == 1
    assert card.text.index("## Two-stage evaluation") < card.text.index("## Framework versions")
    assert card.text.count("## License") == 1  # the sections after it are kept
    assert len(card.data.eval_results) == indexed  # same task, split and metric: replaced, not added
