"""Every notebook in notebooks/ runs top to bottom (nbclient, a fresh kernel each) and ends with its model card;
the committed notebooks carry no outputs."""

import glob
import os

import nbformat
import pytest

pytestmark = pytest.mark.long  # several processes or whole recipes: `pytest -m long` (CI runs it)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def test_there_is_a_notebook_per_trainer_and_none_has_outputs():
    names = " ".join(os.path.basename(p) for p in NOTEBOOKS)
    for trainer in ("rerank_trainer", "contrastive_trainer", "colbert_trainer", "llm_reranker", "distill_trainer"):
        assert trainer in names
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path} has committed outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs_and_writes_a_model_card(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("NOTEBOOK_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    cards = glob.glob(os.path.join(str(tmp_path), "*", "README.md"))
    assert len(cards) == 1
    card = open(cards[0]).read()
    assert "ndcg@10" in card.lower() and "after training" in card.lower()
    if "rerank" in path or "distill" in path:  # a reranker's card shows its first stage on the same candidates
        assert "first stage" in card.lower() and "all-MiniLM-L6-v2 (cosine)" in card
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert card[:200] in printed  # the notebook shows its card
