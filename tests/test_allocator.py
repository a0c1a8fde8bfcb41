"""While training on CPU, glibc keeps freed blocks in the process; afterwards it hands them back."""

import contextlib

import pytest
from transformers import TrainerCallback

from hf_ragtrain import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only (Linux)")


PROBE = """
import json, torch
from hf_ragtrain import allocator

def resident_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2 ** 20

def kept_after_free(mb=256):
    before = resident_mb()
    block = torch.ones(mb * 2 ** 18)  # float32: mb MiB, every page touched
    del block
    return resident_mb() - before

start = resident_mb()
glibc_default = kept_after_free()
with allocator.keep_freed_memory() as kept:
    inside = kept_after_free()
print(json.dumps({"kept": kept, "glibc_default": glibc_default, "inside": inside, "after": resident_mb() - start}))
"""


def test_freed_blocks_stay_inside_and_go_back_after():
    """In a fresh process (a heap that earlier tests did not shape): glibc alone unmaps a freed 256 MiB
    block at once; inside ``keep_freed_memory`` it stays resident for reuse; on exit it is handed back."""
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=repo)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["kept"] is True
    assert probe["glibc_default"] < 20
    assert probe["inside"] > 200
    assert probe["after"] < 50


@pytest.mark.parametrize("keep", [True, False])
def test_a_cpu_trainer_trains_inside_it_unless_told_not_to(tmp_path, monkeypatch, keep):
    from test_rerank_memory import cross_encoder_trainer

    calls = []

    @contextlib.contextmanager
    def recording():
        calls.append("enter")
        yield True
        calls.append("exit")

    monkeypatch.setattr(allocator, "keep_freed_memory", recording)
    trainer = cross_encoder_trainer(tmp_path, max_steps=2, save_strategy="no", keep_freed_memory=keep)
    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            seen.append(list(calls))

    trainer.add_callback(Record())
    trainer.train()
    if keep:
        assert seen == [["enter"], ["enter"]] and calls == ["enter", "exit"]
    else:
        assert seen == [[], []] and calls == []
