"""Weight averaging of a trained model with its base (hf_ragtrain.modeling.merge)."""

import os

import pytest
import torch
from conftest import build_tiny_encoder
from safetensors.torch import load_file

from hf_ragtrain.modeling.merge import MergeError, merge_with_base, weight_files


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A base BERT folder and a "trained" one: the same architecture, other weights, saved the way the
    embedding recipe saves (sentence-transformers layout, weights at the root)."""
    from hf_ragtrain.modeling.bi_encoder import BiEncoder

    tmp = tmp_path_factory.mktemp("merge")
    base = build_tiny_encoder(tmp / "base", seed=0)
    other = build_tiny_encoder(tmp / "other", seed=1)
    trained = str(tmp / "trained")
    BiEncoder.from_pretrained(other).save_pretrained(trained)
    return base, other, trained


def bert_state(folder):
    """The folder's weights read through transformers (another reader than the merge's own)."""
    from transformers import BertModel

    return {k: v.detach().double() for k, v in BertModel.from_pretrained(folder).state_dict().items()}


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_merged_weights_are_the_weighted_mean(folders, tmp_path, share):
    base, other, trained = folders
    out = str(tmp_path / "merged")
    info = merge_with_base(trained, base, out, share)
    want_a, want_b, got = bert_state(other), bert_state(base), bert_state(out)
    assert set(got) == set(want_a)
    for name, tensor in got.items():
        expected = (1 - share) * want_a[name] + share * want_b[name]
        assert torch.allclose(tensor, expected, atol=1e-6), name
    if share == 0.0:  # nothing changes at all
        assert all(torch.equal(load_file(os.path.join(out, "model.safetensors"))[k], v)
                   for k, v in load_file(os.path.join(trained, "model.safetensors")).items())
    assert info["files"] == ["model.safetensors"] and info["base_share"] == share
    assert info["parameters"] == sum(v.numel() for v in load_file(os.path.join(out, "model.safetensors")).values()
                                     if v.is_floating_point())
    # everything else of the trained folder is there, so it loads as the trained one does
    assert sorted(os.listdir(out)) == sorted(os.listdir(trained))


def test_merged_folder_loads_in_sentence_transformers(folders, tmp_path):
    from sentence_transformers import SentenceTransformer

    base, _, trained = folders
    out = str(tmp_path / "merged")
    merge_with_base(trained, base, out, 0.5)
    half = SentenceTransformer(out).encode(["alpha beta"], convert_to_tensor=True)
    ends = [SentenceTransformer(trained).encode(["alpha beta"], convert_to_tensor=True)]
    assert half.shape == ends[0].shape and not torch.allclose(half, ends[0])


def test_a_base_saved_as_pytorch_model_bin_is_read(folders, tmp_path):
    base, _, trained = folders
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(load_file(os.path.join(base, "model.safetensors")), legacy / "pytorch_model.bin")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    merge_with_base(trained, base, a, 0.4)
    merge_with_base(trained, str(legacy), b, 0.4)
    left, right = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert all(torch.equal(left[k], right[k]) for k in left)


def test_mismatched_models_are_refused_with_the_tensor_and_file(folders, tmp_path):
    base, _, trained = folders
    wider = build_tiny_encoder(tmp_path / "wider", hidden=48)
    with pytest.raises(MergeError, match=r"trained/model.safetensors: tensor \S+ is \((\d+, )?32,?\) in the trained "
                                         r"model but \((\d+, )?48,?\) in the base model"):
        merge_with_base(trained, wider, str(tmp_path / "out"), 0.5)
    with pytest.raises(MergeError, match="not found; the trained model has model.safetensors"):
        merge_with_base(trained, str(tmp_path / "empty"), str(tmp_path / "out"), 0.5)
    with pytest.raises(MergeError, match="between 0 and 1, got 1.5"):
        merge_with_base(trained, base, str(tmp_path / "out"), 1.5)
    assert not (tmp_path / "out").exists()  # nothing is written when the check fails


def test_every_weight_file_of_a_module_folder_is_averaged(folders, tmp_path):
    from safetensors.torch import save_file

    base, _, trained = folders
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, value in ((a, 1.0), (b, 3.0)):
        (folder / "2_Dense").mkdir(parents=True)
        save_file({"linear.weight": torch.full((2, 2), value)}, str(folder / "2_Dense" / "model.safetensors"))
        save_file({"w": torch.full((3,), value), "ids": torch.arange(3)}, str(folder / "model.safetensors"))
    assert weight_files(str(a)) == [os.path.join("2_Dense", "model.safetensors"), "model.safetensors"]
    merge_with_base(str(a), str(b), str(tmp_path / "m"), 0.25)
    dense = load_file(str(tmp_path / "m" / "2_Dense" / "model.safetensors"))["linear.weight"]
    root = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert torch.equal(dense, torch.full((2, 2), 1.5)) and torch.equal(root["w"], torch.full((3,), 1.5))
    assert torch.equal(root["ids"], torch.arange(3))  # integer buffers are the trained model's
