"""The recipes' command-line parser: ``HfArgumentParser`` with a ``--help`` that reads top-down.

What the recipe does and an example come first (the recipe module's docstring), then the flags in
groups: the training family's own (its loss), data, model and the recipe's options, the Trainer flags
people set most, and last every other ``transformers.TrainingArguments`` flag.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Sequence, get_type_hints

from transformers import HfArgumentParser, TrainingArguments

#: ``TrainingArguments`` flags a recipe user sets most; shown in their own group before the rest
COMMON_TRAINER_FLAGS = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "learning_rate", "warmup_steps", "weight_decay", "lr_scheduler_type", "seed", "bf16", "fp16", "eval_strategy",
    "save_strategy", "logging_steps", "resume_from_checkpoint", "deepspeed", "push_to_hub", "hub_model_id",
    "report_to")
TRAINER_COMMON = "common Trainer flags (transformers.TrainingArguments)"
TRAINER_REST = "every other transformers.TrainingArguments flag (see the transformers documentation)"
_TRAINER_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description kept as written (it holds example commands); each flag under its first name only
    (not its ``--dashed-alias``), its default after its help when it has one."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        if action.nargs == 0:
            return ", ".join(s for s in action.option_strings if "-" not in s.lstrip("-"))
        return f"{action.option_strings[0]} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action: argparse.Action) -> str:
        no_twin = any(s.startswith("--no_") for s in action.option_strings[:1])  # its default is said at the flag
        if action.default is None or action.default is argparse.SUPPRESS or no_twin:
            return action.help or ""
        return super()._get_help_string(action)


def group_title(dtype: type) -> str:
    """A dataclass's group in ``--help``: its ``_argument_group_name``, else its name less ``Arguments``."""
    return getattr(dtype, "_argument_group_name", None) or dtype.__name__.removesuffix("Arguments")


class RecipeParser(HfArgumentParser):
    """``HfArgumentParser`` over a recipe's argument dataclasses whose ``--help`` puts this project's
    flags first, in groups, and the Trainer's after them; parsing is unchanged."""

    def __init__(self, dataclass_types: Sequence[type], description: str | None = None):
        self._groups: dict[str, Any] = {}
        super().__init__(tuple(dataclass_types), description=(description or "").replace("``", "") or None, formatter_class=HelpFormatter,
                         usage="%(prog)s [--flag value ...]   (the flags are listed below, in groups)",
                         epilog="Every transformers.TrainingArguments flag works; boolean flags take True or False "
                                "(--flag alone means True).")
        self._order_groups()
        for action in self._actions:  # a --no_X twin repeats --X's help: say what it does instead
            if action.option_strings and action.option_strings[0] == f"--no_{action.dest}":
                action.help = f"the same as --{action.dest} False"

    def _group(self, title: str) -> Any:
        if title not in self._groups:
            self._groups[title] = self.add_argument_group(title)
        return self._groups[title]

    def _add_dataclass_arguments(self, dtype: type) -> None:
        hints = get_type_hints(dtype)
        trainer = issubclass(dtype, TrainingArguments)
        for field in dataclasses.fields(dtype):
            if not field.init:
                continue
            if trainer and field.name in _TRAINER_FIELDS:
                title = TRAINER_COMMON if field.name in COMMON_TRAINER_FLAGS else TRAINER_REST
            else:
                title = group_title(dtype)
            field.type = hints[field.name]
            self._parse_dataclass_field(self._group(title), field)

    def _order_groups(self) -> None:
        """This project's groups first (the training family's own group leading), then the Trainer's two."""
        family = [group_title(d) for d in self.dataclass_types if issubclass(d, TrainingArguments)]

        def rank(group: argparse._ArgumentGroup) -> int:
            if group.title in family:
                return 1
            if group.title == TRAINER_COMMON:
                return 3
            if group.title == TRAINER_REST:
                return 4
            return 2 if group.title in self._groups else 0  # 0: argparse's own (-h)

        self._action_groups.sort(key=rank)
