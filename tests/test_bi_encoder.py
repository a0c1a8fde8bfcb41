"""BiEncoder: embeddings equal to sentence-transformers' for the same model, and saved folders that
``SentenceTransformer(path)`` loads unchanged (pooling, normalisation, prompts, truncate_dim, LoRA)."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TEXTS
from hf_ragtrain import BiEncoder, LoraSettings
from hf_ragtrain.modeling.bi_encoder import ENCODER_CONFIG

LONG = " ".join(TEXTS * 8)  # longer than any max length used here


def st_model(path, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", **kwargs)


def unit(x):
    return F.normalize(torch.as_tensor(np.asarray(x)), dim=-1).numpy()


def test_minilm_embeddings_equal_sentence_transformers():
    from hf_ragtrain.offline import minilm_path

    model = BiEncoder.from_pretrained("minilm")
    assert (model.settings.pooling, model.settings.normalize, model.settings.passage_max_length) == ("mean", True, 256)
    texts = TEXTS[:5] + [LONG]
    ref = st_model(minilm_path()).encode(texts)
    np.testing.assert_allclose(model.encode(texts, batch_size=4), ref, atol=2e-5)


def test_saved_folder_loads_in_sentence_transformers_with_prompts_and_truncate_dim(tmp_path):
    model = BiEncoder.from_pretrained("minilm", query_prompt="query: ", passage_prompt="passage: ",
                                      passage_max_length=48)
    model.save_pretrained(str(tmp_path), truncate_dim=128)
    st = st_model(str(tmp_path))
    assert st.max_seq_length == 48 and st.truncate_dim == 128
    assert st.prompts["query"] == "query: " and st.prompts["document"] == "passage: "
    texts = TEXTS[:4] + [LONG]  # LONG is cut at 48 tokens as a passage
    # queries: sentence-transformers has one max length (the passages'), so compare queries within it
    q_st, d_st = st.encode(texts[:4], prompt_name="query"), st.encode(texts, prompt_name="document")
    assert q_st.shape == (4, 128) and d_st.shape == (5, 128)
    # sentence-transformers cuts the normalised vector; cosine similarity re-normalises the prefix
    np.testing.assert_allclose(unit(q_st), model.encode(texts[:4], kind="query", truncate_dim=128), atol=2e-5)
    np.testing.assert_allclose(unit(d_st), model.encode(texts, kind="passage", truncate_dim=128), atol=2e-5)
    # full dimension without truncate_dim; encode_query/encode_document apply each kind's prompt and max
    # length (64 for queries, 48 for passages), so even the long text gives our vectors
    full = st_model(str(tmp_path))
    full.truncate_dim = None  # the saved default is 128
    np.testing.assert_allclose(full.encode_query(texts), model.encode(texts, kind="query"), atol=2e-5)
    np.testing.assert_allclose(full.encode_document(texts), model.encode(texts, kind="passage"), atol=2e-5)
    assert np.abs(full.encode(texts, prompt_name="query")[-1] - model.encode(texts, kind="query")[-1]).max() > 1e-3
    reloaded = BiEncoder.from_pretrained(str(tmp_path))
    assert reloaded.settings == model.settings
    with open(tmp_path / ENCODER_CONFIG) as fh:
        assert json.load(fh)["truncate_dim"] == 128


def test_truncation_is_counted(tiny_encoder_path):
    model = BiEncoder.from_pretrained(tiny_encoder_path, query_max_length=6)
    enc, cut = model.tokenize([TEXTS[0], "tuples", LONG], "query")
    assert cut == 2 and [len(ids) for ids in enc["input_ids"]] == [6, 3, 6]


def test_llm_embedder_appends_eos_and_pools_the_last_token(tiny_llm_path):
    model = BiEncoder.from_pretrained(tiny_llm_path, pooling="last_token", append_eos=True, query_max_length=5)
    eos = model.tokenizer.eos_token_id
    enc, cut = model.tokenize([TEXTS[0], "tuples"], "query")
    assert [ids[-1] for ids in enc["input_ids"]] == [eos, eos]
    assert len(enc["input_ids"][0]) == 5 and cut == 1  # truncation keeps the EOS
    # the last token is the EOS whatever the padding side
    right = model.encode(TEXTS[:6], batch_size=6)
    model.tokenizer.padding_side = "left"
    np.testing.assert_allclose(model.encode(TEXTS[:6], batch_size=6), right, atol=1e-5)
    one_by_one = np.stack([model.encode([t])[0] for t in TEXTS[:6]])
    np.testing.assert_allclose(one_by_one, right, atol=1e-5)


def test_lora_adapter_and_merged_model_load_in_sentence_transformers(tiny_llm_path, tmp_path):
    model = BiEncoder.from_pretrained(tiny_llm_path, pooling="last_token", append_eos=True, query_prompt="query: ",
                                      lora=LoraSettings(r=4, target_modules=["q_proj", "v_proj"]))
    assert model.is_peft
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # a non-zero adapter, so loading without it would give other vectors
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ours = model.encode(TEXTS[:6], kind="query")
    adapter_dir, merged_dir = str(tmp_path / "adapter"), str(tmp_path / "merged")
    model.save_pretrained(adapter_dir)
    model.save_pretrained(merged_dir, merge_lora=True)
    assert os.path.isfile(os.path.join(adapter_dir, "adapter_model.safetensors"))
    assert not os.path.isfile(os.path.join(adapter_dir, "model.safetensors"))
    assert os.path.isfile(os.path.join(merged_dir, "model.safetensors"))
    base = BiEncoder.from_pretrained(tiny_llm_path, pooling="last_token", append_eos=True, query_prompt="query: ")
    assert np.abs(base.encode(TEXTS[:6], kind="query") - ours).max() > 1e-3
    for folder in (adapter_dir, merged_dir):
        np.testing.assert_allclose(st_model(folder).encode(TEXTS[:6], prompt_name="query"), ours, atol=1e-5)
        np.testing.assert_allclose(BiEncoder.from_pretrained(folder).encode(TEXTS[:6], kind="query"), ours, atol=1e-5)
    assert model.is_peft  # merging for the save left the training model as it was


def test_unsupported_sentence_transformers_modules_are_refused(tmp_path, tiny_encoder_path):
    model = BiEncoder.from_pretrained(tiny_encoder_path)
    model.save_pretrained(str(tmp_path))
    os.remove(tmp_path / ENCODER_CONFIG)
    with open(tmp_path / "modules.json") as fh:
        modules = json.load(fh)
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    with open(tmp_path / "modules.json", "w") as fh:
        json.dump(modules, fh)
    with pytest.raises(ValueError, match="Dense is not supported"):
        BiEncoder.from_pretrained(str(tmp_path))
