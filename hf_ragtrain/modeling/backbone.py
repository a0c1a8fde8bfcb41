"""The plumbing every model wrapper shares: loading a transformers backbone (with a LoRA adapter,
new or saved), the pad-token fallback, saving it (adapter, or merged), loading trained weights
back, and reading the JSON settings files saved beside it."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from transformers import AutoConfig, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class LoraSettings:
    """A LoRA adapter on the backbone (peft). ``target_modules=None`` lets peft pick per architecture."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | None = field(default=None)


def read_json(path: str) -> Any:
    """The content of a JSON file, or ``None`` when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Pad with the EOS token when the tokenizer has no pad token (decoders); padding is masked out
    by the attention mask, so the choice does not change any score."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token


def adapter_base(path: str) -> str | None:
    """The base model a saved LoRA adapter folder names, or ``None`` when ``path`` holds no adapter."""
    config = read_json(os.path.join(path, ADAPTER_CONFIG))
    return config["base_model_name_or_path"] if config else None


def load_backbone(path: str, auto_class: Any, peft_task: str, lora: LoraSettings | None = None,
                  attn_implementation: str | None = None, torch_dtype: Any = None, **model_kwargs: Any) -> nn.Module:
    """``auto_class.from_pretrained`` of ``path``, with its saved LoRA adapter attached (trainable)
    when ``path`` is an adapter folder, or a new adapter from ``lora`` (peft ``TaskType`` ``peft_task``).

    ``attn_implementation=None`` picks :func:`hf_ragtrain.modeling.attention.default_attn_implementation`
    for the base model's architecture.
    """
    from .attention import default_attn_implementation

    saved_adapter = adapter_base(path)
    base_path = saved_adapter or path
    kwargs = dict(model_kwargs)
    kwargs["attn_implementation"] = attn_implementation or default_attn_implementation(
        AutoConfig.from_pretrained(base_path))
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    model = load_reporting_new_weights(auto_class, base_path, **kwargs)
    if saved_adapter:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, path, is_trainable=True)
    if lora is not None:
        from peft import LoraConfig, TaskType, get_peft_model

        return get_peft_model(model, LoraConfig(task_type=getattr(TaskType, peft_task), r=lora.r, lora_alpha=lora.alpha,
                                                lora_dropout=lora.dropout, target_modules=lora.target_modules))
    return model


class _LoadReportFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "LOAD REPORT" not in message and "seem corrupted" not in message


@contextlib.contextmanager
def silent_load_report():
    """Hold back transformers' load report (its table of MISSING and UNEXPECTED weights, and its note on
    untied head weights) while a wrapper loads a model whose missing weights it expects and reports
    itself in one line (a new head); errors (size mismatches) still raise."""
    report = logging.getLogger("transformers.modeling_utils")
    quiet = _LoadReportFilter()
    report.addFilter(quiet)
    try:
        yield
    finally:
        report.removeFilter(quiet)


def load_reporting_new_weights(auto_class: Any, path: str, **kwargs: Any) -> nn.Module:
    """``auto_class.from_pretrained(path, **kwargs)`` with transformers' load report table replaced by one
    line of ours (:func:`report_new_weights`)."""
    with silent_load_report():
        model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    report_new_weights(model, info, path)
    return model


def _names(keys: list[str], most: int = 4) -> str:
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def report_new_weights(model: nn.Module, info: dict[str, Any], source: str) -> None:
    """Say what a load left at random, in one line each: a new head (missing weights outside the base
    model, such as ``classifier.*`` of a cross-encoder trained from an embedder) is expected and logged
    at info level; any other missing weight, and checkpoint weights left unused, are warnings naming them."""
    base_is_model = getattr(model, "base_model", model) is model
    prefix = getattr(model, "base_model_prefix", "") + "."
    missing = sorted(info.get("missing_keys") or [])
    head = [] if base_is_model else [k for k in missing if not k.startswith(prefix)]
    other = [k for k in missing if k not in head]
    if head:
        logger.info("%s has no %s head: a new one starts from random (%s), as expected when training from a "
                    "checkpoint without it", source, type(model).__name__, _names(head))
    if other:
        logger.warning("%s: %d weights of the model are missing from the checkpoint and start from random: %s",
                       source, len(other), _names(other))
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:
        logger.warning("%s: %d weights of the checkpoint are not used by %s: %s", source, len(unused),
                       type(model).__name__, _names(unused))


def whole_parameters(module: nn.Module):
    """A context in which ``module``'s parameters are whole, so code outside a DeepSpeed engine may read and
    set them: under ZeRO-3 (built sharded inside ``zero.Init``) they are gathered, and what the first
    process sets is given to every process on exit; otherwise nothing to do."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def is_peft(model: nn.Module) -> bool:
    """Whether ``model`` is a peft wrapper (a LoRA adapter on a base model)."""
    return hasattr(model, "peft_config")


def sub_state_dict(state_dict: dict[str, Tensor] | None, prefix: str) -> dict[str, Tensor] | None:
    """The entries of ``state_dict`` under ``prefix`` (``"backbone."``), with the prefix taken off."""
    if state_dict is None:
        return None
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def save_backbone(model: nn.Module, path: str, state_dict: dict[str, Tensor] | None = None,
                  merge_lora: bool = False, safe_serialization: bool = True) -> None:
    """Write ``model`` to ``path``: the weights and ``config.json``, or for a peft model its adapter,
    unless ``merge_lora`` (then a copy with the adapter merged in, the live model left as it is).
    ``state_dict`` (keys as in ``model``, e.g. gathered under DeepSpeed) replaces the live weights."""
    if is_peft(model) and merge_lora:
        merged = copy.deepcopy(model)
        if state_dict is not None:
            merged.load_state_dict(state_dict)
        merged.merge_and_unload().save_pretrained(path, safe_serialization=safe_serialization)
    else:
        model.save_pretrained(path, state_dict=state_dict, safe_serialization=safe_serialization)


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load a transformers model's weights saved in ``path`` (one file or shards) into ``backbone``;
    anything missing (but tied) or unexpected is an error naming the folder."""
    from safetensors.torch import load_file

    state = {}
    index = read_json(os.path.join(path, "model.safetensors.index.json"))
    for name in sorted(set(index["weight_map"].values())) if index else ["model.safetensors"]:
        state.update(load_file(os.path.join(path, name)))
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m not in getattr(backbone, "_tied_weights_keys", None) or []]:
        raise ValueError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def load_trained_weights(model: nn.Module, path: str) -> None:
    """Load what :func:`save_backbone` wrote to ``path`` (a Trainer checkpoint) into ``model``: the
    adapter's weights for a peft model, else the full weights."""
    if is_peft(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(os.path.join(path, ADAPTER_WEIGHTS)))
        return
    load_backbone_weights(model, path)


def freeze_unused_pooler(backbone: nn.Module) -> None:
    """Freeze a backbone's pooler head (e.g. BERT's): its output is never used, so no gradient reaches it
    and DDP must not wait for one."""
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


def enable_gradient_checkpointing(model: nn.Module, gradient_checkpointing_kwargs: dict | None = None) -> None:
    """Gradient checkpointing on a transformers model; with LoRA the inputs must require grad for the
    checkpointed adapter layers to get gradients."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)
    if is_peft(model):
        model.enable_input_require_grads()
