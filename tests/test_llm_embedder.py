"""The real SmolLM2-135M as an embedder: LoRA training with last-token pooling and EOS, then the saved
adapter loads in sentence-transformers with the in-memory model's embeddings."""

import numpy as np

from conftest import TEXTS, tiny_records
from hf_ragtrain import (BiEncoder, ContrastiveTrainer, EmbeddingCollator, EmbeddingTrainingArguments, GroupDataset,
                         LoraSettings, load_records)


def test_smollm2_lora_embedder_trains_and_loads_in_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = BiEncoder.from_pretrained("smollm2", pooling="last_token", append_eos=True, query_prompt="Query: ",
                                      query_max_length=32, passage_max_length=48, lora=LoraSettings(r=8))
    assert model.tokenizer.pad_token_id == model.tokenizer.eos_token_id  # SmolLM2 pads with its EOS: masks matter
    before = model.encode(TEXTS, kind="query")
    records, _ = load_records(tiny_records(8))
    args = EmbeddingTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                                      learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no",
                                      use_cpu=True, disable_tqdm=True, matryoshka_dims=[576, 128])
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=GroupDataset(records, group_size=2),
                                 data_collator=EmbeddingCollator(model))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(np.isfinite(losses))
    after = model.encode(TEXTS, kind="query")
    assert np.abs(after - before).max() > 1e-4  # the adapter changed the embeddings
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()
    st = SentenceTransformer(str(tmp_path / "final"), device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS, prompt_name="query"), after, atol=1e-4)
