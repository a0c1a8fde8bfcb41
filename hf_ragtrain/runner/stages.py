"""Pipelines of stages that resume: a rerun skips the stages that finished and redoes the rest.

A stage writes into the pipeline's folder and, when it has finished, a marker
``<folder>/.stages/<name>.json`` with the settings it ran with and how long it took. A rerun skips a
stage whose marker is there with the same settings; a stage that was interrupted has no marker and
runs again and keeps what it wrote (training stages pick up their last checkpoint, see
:func:`run_training_recipe`). Every stage after one that runs runs too, from empty outputs
(its inputs may have changed). A finished stage whose settings changed is refused, naming the
setting, so that outputs made with different settings are never mixed; ``redo`` names stages to run
again from empty outputs (with the ones after them).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .recipe import RecipeError, minutes

MARKERS = ".stages"
#: Checkpoints of the training stages, so that an interrupted stage resumes.
CHECKPOINT_FLAGS = ["--save_strategy", "steps", "--save_steps", "50", "--save_total_limit", "1"]


@dataclass
class Stage:
    """One step of a pipeline: ``run()`` does the work; ``settings`` are what its outputs depend on
    (JSON values); ``outputs`` are the paths (relative to the pipeline folder) it writes, removed
    before it runs again; ``estimate_s`` is the expected time, for the plan printed up front."""

    name: str
    title: str
    run: Callable[[], None]
    settings: dict[str, Any] = field(default_factory=dict)
    outputs: Sequence[str] = ()
    estimate_s: float | None = None


def read_json(path: str) -> Any:
    """A stage's JSON output."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_json(path: str, obj: Any) -> None:
    """Write a stage's JSON output atomically (a crash never leaves half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
    os.replace(path + ".tmp", path)


class StageRunner:
    """Run :class:`Stage` s in order in ``folder``, skipping finished ones (see the module docstring)."""

    def __init__(self, folder: str, redo: Sequence[str] = (), echo: Callable[[str], None] = print):
        self.folder, self.redo, self.echo = folder, set(redo), echo
        self.timings: dict[str, dict[str, Any]] = {}
        self.fresh: set[str] = set(redo)

    def marker_path(self, name: str) -> str:
        return os.path.join(self.folder, MARKERS, f"{name}.json")

    def finished(self, stage: Stage) -> dict[str, Any] | None:
        """The marker of a finished stage, ``None`` when it must run; a finished stage with other
        settings is a :class:`RecipeError` unless it is to be redone."""
        path = self.marker_path(stage.name)
        if stage.name in self.redo or not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as fh:
            marker = json.load(fh)
        old = marker.get("settings", {})
        changed = sorted(k for k in {*old, *stage.settings} if old.get(k) != stage.settings.get(k))
        if changed:
            key = changed[0]
            raise RecipeError(f"stage '{stage.name}' finished in {self.folder} with {key} = {old.get(key)!r}, and this "
                              f"run asks for {stage.settings.get(key)!r}; use another --output_dir, or add --redo "
                              f"{stage.name} to run it (and the stages after it) again with the new settings")
        return marker

    def plan(self, stages: Sequence[Stage]) -> list[Stage]:
        """Print what will run and what is done; returns the stages to run. Once a stage must run,
        every later stage runs too (its inputs may change) and starts from empty outputs."""
        todo, rerun = [], False
        self.fresh = set(self.redo)
        total = 0.0
        self.echo(f"pipeline in {self.folder}:")
        for i, stage in enumerate(stages, 1):
            marker = None if rerun else self.finished(stage)
            if marker is None:
                if rerun:
                    self.fresh.add(stage.name)
                rerun = True
                todo.append(stage)
                total += stage.estimate_s or 0.0
                self.echo(f"  {i}. {stage.title}: to run (estimated {minutes(stage.estimate_s)})")
            else:
                self.echo(f"  {i}. {stage.title}: done ({minutes(marker.get('seconds'))}), skipped")
        if todo and any(s.estimate_s is not None for s in todo):
            self.echo(f"estimated time for the stages to run: {minutes(total)} (from this machine's measured speed; "
                      "a rough guide)")
        return todo

    def run(self, stages: Sequence[Stage]) -> dict[str, dict[str, Any]]:
        """Run what :meth:`plan` says; returns ``{stage: {"seconds", "estimate_s", "skipped"}}``."""
        todo = {s.name for s in self.plan(stages)}
        for i, stage in enumerate(stages, 1):
            if stage.name not in todo:
                marker = self.finished(stage) or {}
                self.timings[stage.name] = {"seconds": marker.get("seconds"), "estimate_s": stage.estimate_s,
                                            "skipped": True}
                continue
            self.echo(f"\n[{i}/{len(stages)}] {stage.title} (estimated {minutes(stage.estimate_s)})")
            self.clear(stage)
            start = time.time()
            stage.run()
            seconds = time.time() - start
            self.write_marker(stage, seconds)
            self.timings[stage.name] = {"seconds": seconds, "estimate_s": stage.estimate_s, "skipped": False}
            self.echo(f"[{i}/{len(stages)}] {stage.title}: done in {minutes(seconds)}")
        return self.timings

    def clear(self, stage: Stage) -> None:
        """Remove a stage's marker, and its outputs unless it is the interrupted stage a run resumes."""
        path = self.marker_path(stage.name)
        if os.path.exists(path):
            os.remove(path)
        if stage.name in self.fresh:
            for rel in stage.outputs:
                full = os.path.join(self.folder, rel)
                if os.path.isdir(full):
                    shutil.rmtree(full)
                elif os.path.exists(full):
                    os.remove(full)

    def write_marker(self, stage: Stage, seconds: float) -> None:
        os.makedirs(os.path.join(self.folder, MARKERS), exist_ok=True)
        path = self.marker_path(stage.name)
        with open(path + ".partial", "w", encoding="utf-8") as fh:
            json.dump({"stage": stage.name, "settings": stage.settings, "seconds": round(seconds, 1),
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, fh, indent=2)
        os.replace(path + ".partial", path)


def run_training_recipe(script: str, out: str, seed: int, flags: Sequence[str], extra: str = "",
                        echo: Callable[[str], None] = print) -> None:
    """Run the training recipe ``script`` into ``out`` as a subprocess (its own memory and progress bars),
    the command printed; it saves checkpoints, resumes from the last one when a previous run was
    interrupted, and they are deleted once it has finished. ``extra`` is the user's flags, quoted."""
    from ..trainers.checkpoints import last_complete_checkpoint

    command = [sys.executable, script, "--output_dir", out, "--seed", str(seed), *flags, *CHECKPOINT_FLAGS,
               *shlex.split(extra)]
    if last_complete_checkpoint(out):
        command += ["--resume_from_checkpoint", "latest"]
        echo(f"resuming from {last_complete_checkpoint(out)}")
    echo("$ " + shlex.join(command))
    status = subprocess.call(command)
    if status:
        raise RecipeError(f"{os.path.basename(script)} exited with status {status} (its message is above); fix the "
                          "cause and run the same command again: finished stages are skipped", status)
    remove_checkpoints(out)


def remove_checkpoints(folder: str) -> None:
    """Delete a finished training stage's ``checkpoint-N`` folders (the final model is beside them)."""
    from ..trainers.checkpoints import complete_checkpoints

    for checkpoint in complete_checkpoints(folder):
        shutil.rmtree(checkpoint, ignore_errors=True)


def pipeline_main(arguments_class: type, description: str, run: Callable[[Any], Any], argv: Sequence[str] | None = None,
                  aliases: dict[str, str] | None = None) -> int:
    """The ``main()`` of a pipeline recipe: parse ``arguments_class`` from ``argv`` (flags in ``aliases``
    renamed first), ``run(args)``, and turn a :class:`RecipeError` into its message and exit status."""
    import logging

    from .parser import RecipeParser

    parser = RecipeParser([arguments_class], description=description)
    argv = [(aliases or {}).get(a, a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:
        print(f"error: bad arguments: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        run(args)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    return 0
