"""The offline model aliases (``minilm``, ``smollm2``) and the variables that point them elsewhere."""

import pytest

from hf_ragtrain.offline import minilm_path, resolve_model_path, smollm2_path


def test_the_aliases_follow_their_environment_variables(tiny_encoder_path, tiny_llm_path, monkeypatch):
    packaged = minilm_path()
    monkeypatch.setenv("HF_RAGTRAIN_MINILM", tiny_encoder_path)
    monkeypatch.setenv("HF_RAGTRAIN_SMOLLM2", tiny_llm_path)
    assert minilm_path() == resolve_model_path("minilm") == resolve_model_path("all-MiniLM-L6-v2") == tiny_encoder_path
    assert smollm2_path() == resolve_model_path("smollm2") == tiny_llm_path
    monkeypatch.delenv("HF_RAGTRAIN_MINILM")
    assert minilm_path() == packaged != tiny_encoder_path


def test_a_variable_naming_a_folder_without_a_model_is_an_error_that_says_which(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_RAGTRAIN_MINILM", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"\$HF_RAGTRAIN_MINILM is .*holds no model \(no config.json\)"):
        resolve_model_path("minilm")
