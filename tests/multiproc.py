"""Helpers for the tests that launch torchrun with 2 CPU processes."""

import json
import os
import subprocess
import sys


def run(cmd, cwd):
    """Run ``cmd`` offline with one thread per process; fail the test with its output if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions"))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def losses(out):
    """The training losses rank 0 wrote to ``out/log_history.json``."""
    with open(os.path.join(out, "log_history.json")) as fh:
        return [h["loss"] for h in json.load(fh) if "loss" in h]


def torchrun(script, *args, port_base=29500):
    """``torchrun --nproc_per_node 2 script args`` on a port that differs between test modules and runs."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(port_base + os.getpid() % 1000), script, *args]
