"""What the training benchmarks share: the query groups, a step timer, and running each side in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's package
from hf_ragtrain.hardware import cpu_description  # noqa: E402,F401 - the benchmarks' tables name the CPU


def build_groups(beir_dir: str, group_size: int, n: int, cycle: bool = False) -> list[dict]:
    """``n`` query groups (1 positive + ``group_size - 1`` BM25 negatives) from a BEIR folder's train split;
    with ``cycle``, more groups than queries by starting over (each query's group is the same again)."""
    from hf_ragtrain.data import GroupDataset, load_records
    from hf_ragtrain.data.beir import beir_to_records, load_beir
    from hf_ragtrain.data.mining import mine_hard_negatives

    data = load_beir(beir_dir, split="train")
    negatives, _ = mine_hard_negatives(data.queries, data.doc_texts(), data.qrels, method="bm25",
                                       rank_range=(0, 50), num_negatives=group_size - 1, seed=0,
                                       show_progress=False)
    records, _ = load_records(beir_to_records(data, negatives))
    dataset = GroupDataset(records, group_size=group_size, seed=0)
    if n > len(dataset) and not cycle:
        raise SystemExit(f"need {n} groups, the data has {len(dataset)} queries")
    return [dataset[i % len(dataset)] for i in range(n)]


class StepTimer:
    """Trainer callback: wall time of the steps after the first ``warmup`` ones."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == warmup:
                    timer.start = time.perf_counter()
                timer.end = time.perf_counter()

        self.callback = _CB()
        self.start = self.end = None


def report(timer: StepTimer, history: list[dict], samples_per_step: int, steps: int) -> None:
    """Print this worker's result line (read by :func:`run_workers`)."""
    from hf_ragtrain.memory import peak_memory  # this program's peak, not its parent's at the fork

    seconds = timer.end - timer.start
    losses = [h["loss"] for h in history if "loss" in h]
    print("RESULT " + json.dumps({
        "samples_per_s": samples_per_step * steps / seconds, "seconds": seconds,
        "peak_rss_mb": peak_memory()["resident_mb"],
        "first_loss": losses[0] if losses else None, "mean_loss": sum(losses) / len(losses) if losses else None,
    }))


def run_workers(script: str, argv: list[str], groups: list[dict], names: list[str],
                python: dict[str, str] | None = None) -> dict[str, dict]:
    """Run ``script --worker NAME --groups FILE`` for each name, one after the other, with this Python or
    the one ``python`` gives for that name; collect their results."""
    argv = strip_options(argv, ("--write", "--json"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "groups.json")
        with open(path, "w") as fh:
            json.dump(groups, fh)
        for name in names:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            proc = subprocess.run([(python or {}).get(name, sys.executable), script, *argv, "--worker", name, "--groups", path],
                                  capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
            results[name] = json.loads(lines[-1][len("RESULT "):])
    return results


def strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values (the parent's output options)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not a.startswith(tuple(n + "=" for n in names)):
            out.append(a)
    return out


def command_line(script_name: str) -> str:
    return f"python benchmarks/{script_name} " + " ".join(strip_options(sys.argv[1:], ("--write", "--json")))


def add_padding_option(parser) -> None:
    parser.add_argument("--pad_to_multiple_of", type=int, default=None,
                        help="round micro-batch widths up to a multiple (0: no rounding; default: the recipes' "
                             "choice, 64 for bf16 on CPU)")


def pad_to_multiple_of(args) -> int | None:
    """The collator's ``pad_to_multiple_of`` for ``--pad_to_multiple_of`` (see add_padding_option)."""
    from hf_ragtrain.hardware import default_pad_to_multiple_of

    return default_pad_to_multiple_of(args.bf16) if args.pad_to_multiple_of is None else args.pad_to_multiple_of or None


def padding_text(args) -> str:
    multiple = pad_to_multiple_of(args)
    return f"padded to a multiple of {multiple}" if multiple else "padded to their longest pair"


def add_output_options(parser) -> None:
    parser.add_argument("--write", default=None, help="append the result table to this markdown file")
    parser.add_argument("--json", default=None, help="write the results, the table and the summary rows here "
                                                     "(read by benchmarks/suite.py)")


def finish(args, table: str, summary: list[dict], results: dict) -> None:
    """Print the table, append it to ``--write`` and save everything to ``--json``.

    Each summary row is one line of the suite's table: ``name``, ``unit``, ``ours``, ``theirs`` (speeds)
    and ``ours_mb``, ``theirs_mb`` (peak memory), any of them ``None`` where it does not apply.
    """
    print(table)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write("\n" + table + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"table": table, "summary": summary, "results": results,
                       "command": command_line(os.path.basename(sys.argv[0]))}, fh, indent=2)


def summary_row(name: str, unit: str, ours: dict, theirs: dict | None, key: str = "samples_per_s") -> dict:
    return {"name": name, "unit": unit, "ours": ours[key], "theirs": theirs[key] if theirs else None,
            "ours_mb": ours.get("peak_rss_mb"), "theirs_mb": theirs.get("peak_rss_mb") if theirs else None}


class ListDataset:
    """A map-style dataset over a list of groups (the same items for every trainer)."""

    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def run_worker(groups_path: str, train, samples_per_step: int, steps: int) -> None:
    """Load the groups, call ``train(groups, out_dir) -> (timer, log_history)`` and print the result line."""
    import torch

    torch.manual_seed(0)
    with open(groups_path) as fh:
        groups = json.load(fh)
    with tempfile.TemporaryDirectory() as out:
        timer, history = train(groups, out)
    report(timer, history, samples_per_step, steps)
