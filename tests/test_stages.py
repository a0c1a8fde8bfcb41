"""Resumable stages (hf_ragtrain.runner.stages): a rerun skips finished stages, an interrupted one runs
again from what it wrote, changed settings are refused, --redo starts a stage and those after it afresh."""

import os

import pytest

from hf_ragtrain import RecipeError, Stage, StageRunner


class Work:
    """Stages that append a line to their own file, so a test can see which ran and how often."""

    def __init__(self, folder):
        self.folder, self.runs = folder, []
        self.fail_in: str | None = None

    def stage(self, name, **settings):
        def run():
            self.runs.append(name)
            with open(os.path.join(self.folder, f"{name}.txt"), "a") as fh:
                fh.write(f"{name} ran\n")
            if self.fail_in == name:
                raise KeyboardInterrupt  # the machine stopped mid-stage: no marker is written
        return Stage(name, f"the {name} stage", run, settings, [f"{name}.txt"], estimate_s=1.0)


def pipeline(work, a=1, b=2):
    return [work.stage("first", a=a), work.stage("second", b=b), work.stage("third")]


def test_a_rerun_skips_finished_stages_and_leaves_their_outputs_as_they_were(tmp_path):
    work = Work(str(tmp_path))
    StageRunner(str(tmp_path), echo=lambda _: None).run(pipeline(work))
    before = {n: (tmp_path / f"{n}.txt").read_bytes() for n in ("first", "second", "third")}
    work.runs.clear()
    lines = []
    timings = StageRunner(str(tmp_path), echo=lines.append).run(pipeline(work))
    assert work.runs == []
    assert all(t["skipped"] for t in timings.values())
    assert {n: (tmp_path / f"{n}.txt").read_bytes() for n in before} == before
    assert any("done" in line and "skipped" in line for line in lines)


def test_an_interrupted_stage_runs_again_keeping_its_outputs_and_the_ones_after_start_fresh(tmp_path):
    work = Work(str(tmp_path))
    work.fail_in = "second"
    with pytest.raises(KeyboardInterrupt):
        StageRunner(str(tmp_path), echo=lambda _: None).run(pipeline(work))
    (tmp_path / "third.txt").write_text("left over from another run\n")
    work.fail_in, work.runs = None, []
    StageRunner(str(tmp_path), echo=lambda _: None).run(pipeline(work))
    assert work.runs == ["second", "third"]
    assert (tmp_path / "second.txt").read_text() == "second ran\nsecond ran\n"  # resumed: its partial output kept
    assert (tmp_path / "third.txt").read_text() == "third ran\n"  # a later stage starts from empty outputs


def test_changed_settings_are_refused_and_redo_runs_that_stage_and_the_later_ones(tmp_path):
    work = Work(str(tmp_path))
    StageRunner(str(tmp_path), echo=lambda _: None).run(pipeline(work))
    with pytest.raises(RecipeError, match="stage 'second' finished .* with b = 2, and this run asks for 5.*--redo second"):
        StageRunner(str(tmp_path), echo=lambda _: None).run(pipeline(work, b=5))
    work.runs = []
    StageRunner(str(tmp_path), redo=["second"], echo=lambda _: None).run(pipeline(work, b=5))
    assert work.runs == ["second", "third"]
    assert (tmp_path / "second.txt").read_text() == "second ran\n"  # redone from empty outputs
    assert (tmp_path / "first.txt").read_text() == "first ran\n"


def test_the_plan_says_what_runs_with_an_estimate(tmp_path):
    work = Work(str(tmp_path))
    lines = []
    StageRunner(str(tmp_path), echo=lines.append).plan(pipeline(work))
    assert lines[1:4] == [f"  {i}. the {n} stage: to run (estimated 1 s)" for i, n in
                          enumerate(("first", "second", "third"), 1)]
    assert "estimated time for the stages to run: 3 s" in lines[4]
