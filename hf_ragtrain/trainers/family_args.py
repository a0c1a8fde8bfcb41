"""Each trainer reads its settings from one arguments class, the family's, whose defaults are the
only ones; :func:`family_arguments` turns whatever ``TrainingArguments`` a user passes into it."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from transformers import TrainingArguments

logger = logging.getLogger(__name__)

_UNSET = object()


def _defaults(cls: type) -> dict[str, Any]:
    """The default of every ``__init__`` field of a dataclass (fields without one are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def family_arguments(args: TrainingArguments | None, family: type[TrainingArguments],
                     trainer: str) -> TrainingArguments:
    """``args`` as an instance of ``family``, the arguments class of the trainer named ``trainer``.

    - An instance of ``family`` (or of a subclass) is used as it is; ``None`` gives ``family``'s
      defaults (in ``tmp_trainer``, as the stock Trainer does).
    - Any other ``TrainingArguments`` (the plain class, or another family's) is converted, with one
      warning that names what changed: its values are kept, except that a field left at its own
      class's default takes ``family``'s default (``ColbertTrainingArguments``' temperature 1.0, not
      ``EmbeddingTrainingArguments``' 0.02), and fields it lacks take ``family``'s defaults.
    - A field ``family`` does not have, set away from its default, is refused: the trainer would
      ignore it (``matryoshka_dims`` given to ``ColbertTrainer``).
    """
    if isinstance(args, family):
        return args
    if args is None:
        return family(output_dir="tmp_trainer")
    if not isinstance(args, TrainingArguments):
        raise TypeError(f"{trainer}: args must be a {family.__name__} (a TrainingArguments), got {type(args).__name__}")
    source = type(args)
    theirs, ours = _defaults(source), _defaults(family)
    own = {f.name for f in dataclasses.fields(family) if f.init}
    ignored = {name: getattr(args, name) for name in theirs if name not in own
               and getattr(args, name) != theirs[name]}
    if ignored:
        listed = ", ".join(f"{k}={v!r}" for k, v in ignored.items())
        raise ValueError(f"{trainer} does not use {listed} (fields of {source.__name__}); leave them unset, or "
                         f"pass a {family.__name__}")
    values, filled = {}, {}
    for name in own:
        value = getattr(args, name, _UNSET)
        at_their_default = name in theirs and value == theirs[name]
        if value is _UNSET or (at_their_default and name in ours and ours[name] != theirs[name]):
            if name in ours:
                filled[name] = ours[name]
            continue
        values[name] = value
    if filled:
        listed = ", ".join(f"{k}={v!r}" for k, v in filled.items())
        logger.warning("%s reads its settings from %s; %s has no value of its own for %s, so the %s defaults "
                       "apply: %s", trainer, family.__name__, source.__name__, ", ".join(filled), family.__name__,
                       listed)
    return family(**values)
