"""FSDP's wrap policy on every model hf_ragtrain trains: the layer classes are read from the model and
accelerate's transformer wrap policy then picks exactly the repeated blocks. (FSDP itself only runs on GPUs;
accelerate leaves it off on CPU.)"""

import json
import os

import pytest
from torch import nn

from hf_ragtrain.distributed import fsdp_layer_classes, prepare_for_fsdp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wrapped_by_accelerate(model, version):
    """Names of the modules accelerate's transformer-based auto wrap policy would shard on their own."""
    from accelerate import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=version, auto_wrap_policy="transformer_based_wrap")
    if version == 2:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        return [name for name, module in model.named_modules() if policy(module)]
    plugin.set_auto_wrap_policy(model)
    return [name for name, module in model.named_modules()
            if name and plugin.auto_wrap_policy(module=module, recurse=False, nonwrapped_numel=0)]


def block_names(model, cls_name):
    return [name for name, module in model.named_modules() if type(module).__name__ == cls_name]


@pytest.mark.parametrize("version", [1, 2])
def test_our_wrappers_get_their_backbones_layer_classes(tiny_encoder_path, tiny_llm_path, version):
    from hf_ragtrain import BiEncoder, ColbertEncoder, LlmReranker

    models = {"bi-encoder": BiEncoder.from_pretrained(tiny_encoder_path),
              "colbert": ColbertEncoder.from_pretrained(tiny_encoder_path, colbert_dim=8),
              "llm": LlmReranker.from_pretrained(tiny_llm_path, template="{query} . {document} ?", yes_token="Yes")}
    for kind, model in models.items():
        assert getattr(model, "_no_split_modules", None) is None  # nothing for accelerate to read before
        names = prepare_for_fsdp(model)
        layer = "LlamaDecoderLayer" if kind == "llm" else "BertLayer"
        assert layer in names, (kind, names)
        wrapped = wrapped_by_accelerate(model, version)
        assert set(block_names(model, layer)) <= set(wrapped) and len(block_names(model, layer)) == 2
        assert all(type(dict(model.named_modules())[n]).__name__ in names for n in wrapped)


def test_without_declarations_the_longest_run_of_one_block_class_is_found():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleList([nn.Linear(4, 1), nn.Linear(4, 1)])
            self.blocks = nn.ModuleList([Block() for _ in range(3)])

    model = Model()
    assert fsdp_layer_classes(model) == ["Block"]
    prepare_for_fsdp(model)
    assert wrapped_by_accelerate(model, 1) == ["blocks.0", "blocks.1", "blocks.2"]
    assert fsdp_layer_classes(nn.Linear(2, 2)) == []


def test_the_shipped_fsdp_config_parses_into_a_transformer_wrap_with_full_state_dict():
    from transformers import HfArgumentParser

    from hf_ragtrain import RerankerTrainingArguments

    path = os.path.join(REPO, "recipes", "configs", "fsdp.json")
    with open(path) as fh:
        assert "transformer_layer_cls_to_wrap" not in json.load(fh)  # found from the model instead
    args, = HfArgumentParser(RerankerTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "unused", "--fsdp", "full_shard", "--fsdp_config", path])
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT" and "transformer_cls_names_to_wrap" not in plugin
