"""Several training sets in one run, each batch drawn from one of them.

In-batch negatives should come from the query's own domain, and datasets differ in what suits them:
a prompt, a loss weight, a group size. :class:`MultiDataset` puts several
:class:`~hf_ragtrain.data.GroupDataset` s behind one index, each with its own prompt, weight and group
size; :class:`MultiDatasetSampler` orders the indices so that every run of ``batch_size`` consecutive
indices (one step's batch over all processes) comes from one dataset:

* ``proportional``: every record of every dataset once per epoch, the batches of all datasets in a
  seeded random order, so each dataset's share of steps is its share of the records;
* ``round_robin``: one batch of each dataset in turn, until the dataset with the fewest batches runs
  out (the others' remaining records wait for another epoch's draw; counted as ``unused``).

A dataset's last batch is completed with records drawn again from the same dataset (counted as
``repeated``), so no record is left out and no batch mixes datasets. Trainers pick the sampler
themselves when their training set is a :class:`MultiDataset` and multiply each batch's loss by its
dataset's weight.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from .groups import DataFacts, GroupDataset

logger = logging.getLogger(__name__)

SAMPLING = ("proportional", "round_robin")


@dataclass
class DatasetPart:
    """One training set of a :class:`MultiDataset`: its records as groups (with their group size), the
    prompt put before its queries (a record's own prompt wins) and its loss weight."""

    name: str
    groups: GroupDataset
    prompt: str | None = None
    weight: float = 1.0

    def __post_init__(self):
        if self.weight <= 0:
            raise ValueError(f"dataset {self.name!r}: the loss weight must be above 0, got {self.weight}")
        if not len(self.groups):
            raise ValueError(f"dataset {self.name!r} has no records")


@dataclass
class MultiStats:
    """How the datasets fit their groups (each part's :class:`~hf_ragtrain.data.groups.GroupStats`)."""

    parts: dict[str, dict[str, int]] = field(default_factory=dict)
    summaries: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.summaries)


class MultiDataset(Dataset):
    """The records of several :class:`DatasetPart` s behind one index (part 0's first, then part 1's, ...).
    An item is the part's group item with ``dataset`` (the part's position) and the part's prompt
    where the record has none. ``sampling`` says how :class:`MultiDatasetSampler` orders it."""

    def __init__(self, parts: Sequence[DatasetPart], sampling: str = "proportional"):
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
        names = [p.name for p in parts]
        if not parts or len(set(names)) != len(names):
            raise ValueError(f"a MultiDataset needs one or more datasets with distinct names, got {names}")
        self.parts, self.sampling = list(parts), sampling
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + len(part.groups))
        self.stats = MultiStats({p.name: vars(p.groups.stats) for p in self.parts},
                                [f"{p.name}: {p.groups.stats.summary()}" for p in self.parts])

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(part, index within the part)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        part = bisect.bisect_right(self.starts, index) - 1
        return part, index - self.starts[part]

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, local = self.locate(index)
        part = self.parts[k]
        item = dict(part.groups[local], dataset=k)
        if part.prompt and not item.get("prompt"):
            item["prompt"] = part.prompt
        return item

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.groups.set_epoch(epoch)

    @property
    def weights(self) -> list[float]:
        """Each part's loss weight, by position."""
        return [p.weight for p in self.parts]

    @property
    def facts(self) -> DataFacts:
        """The parts' facts together: teacher and first-stage scores where every part has them, the highest
        grade, the smallest group size (the checks against a group of one look at it), summed counts."""
        facts = [p.groups.facts for p in self.parts]
        return DataFacts(teacher_scores=all(f.teacher_scores for f in facts),
                         max_label=max((f.max_label for f in facts if f.max_label is not None), default=None),
                         group_size=min(f.group_size for f in facts), records=sum(f.records for f in facts),
                         scored_records=sum(f.scored_records for f in facts),
                         first_stage_scores=all(f.first_stage_scores for f in facts),
                         first_stage_records=sum(f.first_stage_records for f in facts))


def plan_steps(sizes: Sequence[int], batch_size: int, sampling: str) -> tuple[list[int], list[int], list[int]]:
    """Per dataset of ``sizes`` records: the steps of one epoch, the records drawn twice to complete its
    last batch, and the records left for another epoch (round robin), at ``batch_size`` (global)."""
    batches = [-(-n // batch_size) for n in sizes]
    steps = [min(batches)] * len(sizes) if sampling == "round_robin" else batches
    repeated = [max(s * batch_size - n, 0) for s, n in zip(steps, sizes)]
    unused = [max(n - s * batch_size, 0) for s, n in zip(steps, sizes)]
    return steps, repeated, unused


class MultiDatasetSampler(Sampler[int]):
    """Indices of a :class:`MultiDataset` where every run of ``batch_size`` consecutive indices (from the
    first) belongs to one dataset, ordered by ``dataset.sampling`` (see the module docstring), seeded by
    ``seed`` and the epoch. ``batch_size`` is the global batch (per-device batch x processes): the
    Trainer's loader cuts the order into per-device batches in turn, so the processes of one step share
    a dataset. Counts for the last epoch ordered: ``steps``, ``repeated`` and ``unused``, by dataset."""

    def __init__(self, dataset: MultiDataset, batch_size: int, seed: int = 42):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.epoch = 0
        sizes = [len(p.groups) for p in dataset.parts]
        self.steps, self.repeated, self.unused = plan_steps(sizes, batch_size, dataset.sampling)
        if any(self.unused):
            logger.info("round-robin sampling: %s records wait for another epoch (the smallest dataset has %d "
                        "batches)", dict(zip([p.name for p in dataset.parts], self.unused)), min(self.steps))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return sum(self.steps) * self.batch_size

    def _part_batches(self, k: int, generator: torch.Generator) -> list[list[int]]:
        """Part ``k``'s records in a random order, cut into batches; the last one completed by records drawn
        again from the start of the same order (cycling when the part is smaller than one batch)."""
        n, start = len(self.dataset.parts[k].groups), self.dataset.starts[k]
        order = (torch.randperm(n, generator=generator) + start).tolist()
        need = -(-n // self.batch_size) * self.batch_size  # whole batches (round robin uses the first steps[k])
        order = (order * (-(-need // n)))[:need]
        return [order[i:i + self.batch_size] for i in range(0, need, self.batch_size)]

    def batches(self) -> list[tuple[int, list[int]]]:
        """This epoch's ``(dataset, indices)`` batches in training order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        per_part = [self._part_batches(k, generator) for k in range(len(self.dataset.parts))]
        if self.dataset.sampling == "round_robin":
            order = [k for _ in range(min(self.steps)) for k in range(len(per_part))]
        else:
            owners = [k for k, batches in enumerate(per_part) for _ in batches]
            order = [owners[i] for i in torch.randperm(len(owners), generator=generator).tolist()]
        taken = [0] * len(per_part)
        out = []
        for k in order:
            out.append((k, per_part[k][taken[k]]))
            taken[k] += 1
        return out

    def __iter__(self) -> Iterator[int]:
        self.dataset.set_epoch(self.epoch)
        for _, indices in self.batches():
            yield from indices
