"""Checkpoints and saved models that appear whole or not at all, and resuming from them.

Everything is written into a folder whose name starts with ``.partial-`` beside its destination and
renamed into place once complete (a rename within one file system is atomic), so a run killed while
saving never leaves a ``checkpoint-N`` that cannot be resumed, and a save that fails (a full disk)
leaves the last complete checkpoint and any earlier final model as they were. ``.partial-`` folders
that a killed run left behind are removed at the next start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Any, Callable

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


class SaveFailed(RuntimeError):
    """Writing a checkpoint or the final model failed; nothing complete was replaced. ``kept`` names
    what is still complete (the last complete checkpoint), ``None`` when there is none."""

    def __init__(self, message: str, kept: str | None):
        super().__init__(message)
        self.kept = kept


class ResumeError(ValueError):
    """The checkpoint asked to resume from cannot be used (missing, or not a complete checkpoint)."""


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a checkpoint a run can resume from: the Trainer writes its state last."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, TRAINER_STATE))


def complete_checkpoints(output_dir: str) -> list[str]:
    """The complete ``checkpoint-N`` folders in ``output_dir``, by step."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), os.path.join(output_dir, name)) for name in os.listdir(output_dir)
             if (m := CHECKPOINT_RE.match(name))]
    return [path for _, path in sorted(found) if is_complete_checkpoint(path)]


def last_complete_checkpoint(output_dir: str) -> str | None:
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


LATEST = ("true", "latest", "last")


def resolve_resume(value: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint folder ``--resume_from_checkpoint`` means: ``True``/``"latest"`` is the last
    complete checkpoint in ``output_dir``; a path must be a complete checkpoint. Otherwise
    :class:`ResumeError`, naming the last complete checkpoint there is."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false", "none")):
        return None
    latest = last_complete_checkpoint(output_dir)
    if value is True or str(value).strip().lower() in LATEST:
        if latest is None:
            raise ResumeError(f"--resume_from_checkpoint {value}: {output_dir} holds no complete checkpoint-N folder "
                              "to resume from (checkpoints are written with --save_strategy steps or epoch)")
        return latest
    path = str(value)
    if is_complete_checkpoint(path):
        return path
    why = "does not exist" if not os.path.exists(path) else f"is not a complete checkpoint (no {TRAINER_STATE})"
    hint = f"the last complete checkpoint in {output_dir} is {latest}" if latest else \
        f"{output_dir} holds no complete checkpoint"
    raise ResumeError(f"--resume_from_checkpoint {path} {why}; {hint} (--resume_from_checkpoint latest picks it)")


def remove_partial(folder: str) -> list[str]:
    """Delete the ``.partial-*`` folders an interrupted save left in ``folder``; returns their names."""
    if not os.path.isdir(folder):
        return []
    left = sorted(name for name in os.listdir(folder) if name.startswith(PARTIAL_PREFIX))
    for name in left:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    if left:
        logger.warning("removed %d folder(s) an interrupted save left in %s: %s", len(left), folder, ", ".join(left))
    return left


def publish_folder(staging: str, final: str) -> None:
    """Rename a completely written ``staging`` folder to ``final`` (replacing an older ``final``)."""
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(staging, final)


def publish_contents(staging: str, target: str) -> None:
    """Move every entry of a completely written ``staging`` folder into ``target`` (each one renamed
    over its older version), then remove ``staging``. For the final model, which shares its folder
    with the checkpoints, the card and the results."""
    for name in sorted(os.listdir(staging)):
        dest = os.path.join(target, name)
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        os.replace(os.path.join(staging, name), dest)
    os.rmdir(staging)


def write_then_publish(target: str, write: Callable[[str], Any], name: str = "model") -> None:
    """Run ``write(folder)`` into ``target/.partial-<name>`` and, when it returns, move what it wrote
    into ``target``. If it fails, the partial folder is removed and ``target`` is unchanged."""
    staging = os.path.join(target, PARTIAL_PREFIX + name)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_contents(staging, target)


def fix_best_checkpoint_path(checkpoint: str, best: str | None) -> None:
    """Rewrite the ``best_model_checkpoint`` a checkpoint's trainer state recorded while it was staged."""
    path = os.path.join(checkpoint, TRAINER_STATE)
    with open(path) as fh:
        state = json.load(fh)
    if state.get("best_model_checkpoint") != best:
        state["best_model_checkpoint"] = best
        with open(path, "w") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
            fh.write("\n")


class CheckpointSaving:
    """The Trainer's saving and resuming, made safe (a mixin before ``transformers.Trainer``):

    - a checkpoint is written into ``.partial-checkpoint-N/`` and renamed to ``checkpoint-N`` once
      every process has finished writing it; the best-model path and the checkpoint rotation then
      refer to the published folder, and a checkpoint push (``hub_strategy``) uploads that one;
    - ``save_model`` writes the final model into ``.partial-model/`` and moves it into place, and
      never pushes (the recipes push the finished folder once, card and results included);
    - a save that fails on any process raises :class:`SaveFailed` on every process, naming the last
      complete checkpoint, with nothing complete replaced;
    - ``train(resume_from_checkpoint=...)`` takes ``True`` or ``"latest"`` for the last complete
      checkpoint and refuses an incomplete one (:func:`resolve_resume`); ``.partial-*`` folders left
      by a killed run are removed first. ``on_resume(path)`` and ``before_checkpoint()`` are hooks.
    """

    _staging_root: str | None = None
    _pending_push: str | None = None

    def on_resume(self, checkpoint: str) -> None:
        """Called with the checkpoint a run resumes from, before training starts."""

    def before_checkpoint(self) -> None:
        """Called on every process before a checkpoint is written."""

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if self.args.should_save:
            remove_partial(self.args.output_dir)
        resume = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        if resume is not None:
            self.on_resume(resume)
        return super().train(resume, *args, **kwargs)

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging_root or super()._get_output_dir(trial)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._staging_root is not None:  # pushed once published, from its final place
            self._pending_push = checkpoint_folder
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def _all_ok(self, ok: bool) -> bool:
        from ..distributed import all_processes_ok

        return all_processes_ok(ok, self.args.device)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        self.before_checkpoint()
        run_dir = super()._get_output_dir(trial)
        name = f"checkpoint-{self.state.global_step}"
        final, staging_root = os.path.join(run_dir, name), os.path.join(run_dir, PARTIAL_PREFIX + name)
        error: BaseException | None = None
        self._staging_root, self._pending_push = staging_root, None
        try:
            super()._save_checkpoint(model, trial)
        except OSError as err:
            error = err
        finally:
            self._staging_root = None
        if not self._all_ok(error is None):
            if self.args.should_save:
                shutil.rmtree(staging_root, ignore_errors=True)
            raise SaveFailed(f"writing {final} failed ({error or 'on another process'})",
                             kept=last_complete_checkpoint(run_dir))
        if self.args.should_save:
            publish_folder(os.path.join(staging_root, name), final)
            os.rmdir(staging_root)
            best = self.state.best_global_step
            best_dir = os.path.join(run_dir, f"checkpoint-{best}") if best else None
            self.state.best_model_checkpoint = best_dir if best_dir and os.path.isdir(best_dir) else None
            fix_best_checkpoint_path(final, self.state.best_model_checkpoint)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()
        if self._pending_push is not None:
            self._pending_push = None
            super()._push_from_checkpoint(final)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as the stock Trainer does (a checkpoint's model: in place), but the final model is
        written aside and moved into ``output_dir`` when complete, and nothing is pushed from here."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call=True)
        target = output_dir or self.args.output_dir
        staging = os.path.join(target, PARTIAL_PREFIX + "model")
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        error: BaseException | None = None
        try:
            super().save_model(staging, _internal_call=True)
        except OSError as err:
            error = err
        if not self._all_ok(error is None):
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            raise SaveFailed(f"writing the trained model to {target} failed ({error or 'on another process'}); "
                             f"{target} was left as it was", kept=last_complete_checkpoint(self.args.output_dir))
        if self.args.should_save:
            publish_contents(staging, target)
        self.accelerator.wait_for_everyone()
