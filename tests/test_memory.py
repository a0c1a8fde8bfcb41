"""The peak memory a recipe reports: this process's resident high-water mark."""

import json
import os
import resource
import subprocess
import sys

import pytest

from conftest import run_script, tiny_records, write_jsonl

PROBE = """
import json, torch
from hf_ragtrain.memory import peak_memory

def status(key):  # MB, from the kernel's own account of this process
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":")) / 1024

before = status("VmRSS")
block = torch.ones(300 * 2**20 // 4)  # 300 MB, every page written
now = status("VmRSS")
peak = peak_memory()["resident_mb"]
print(json.dumps({"before": before, "now": now, "peak": peak}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_sees_a_new_block_and_not_the_parent_process():
    ballast = b"\x01" * (1500 * 2**20)  # this (parent) process 1.5 GB larger (written: resident) at the fork
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                    check=True).stdout)
    del ballast
    assert out["now"] - out["before"] >= 280, out  # the block is resident
    # the peak is this program's: about its current size (the block was its largest moment), not the size
    # of the process it was forked from (pytest's, often GBs, which getrusage's ru_maxrss would report)
    assert out["now"] - 8 <= out["peak"] <= out["now"] + 50, out


def test_the_recipe_reports_its_peak_in_results_card_and_summary(tiny_ce_path, tmp_path):
    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "train_reranker.py")
    out = tmp_path / "out"
    proc = run_script(recipe, "--output_dir", str(out), "--model_name_or_path", tiny_ce_path,
                      "--train_data", write_jsonl(tmp_path / "train.jsonl", tiny_records(4)),
                      "--train_group_size", "2", "--max_length", "32", "--max_steps", "1", "--bf16", "False",
                      "--no_mteb_eval", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = json.loads((out / "eval_results.json").read_text())["peak_memory"]["resident_mb"]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    assert 100 < peak <= children
    line = f"Peak memory (training, this process): {peak / 1024:.2f} GB resident"
    assert line in proc.stdout and line in (out / "README.md").read_text()
