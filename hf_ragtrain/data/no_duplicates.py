"""Batches without a repeated text, so no in-batch negative is another copy of a query's positive.

With in-batch negatives every passage of a batch is a negative for every other query. When two
records share a passage (two questions with one answer, a positive of one query mined as another's
negative), that passage is a false negative. :class:`NoDuplicatesSampler` orders a
:class:`~hf_ragtrain.data.GroupDataset` so that each run of ``batch_size`` consecutive records (one
optimizer step's batch over all processes) holds every text at most once: queries and the documents
of each record's group for the current epoch. Trainers use it with ``--batch_sampler no_duplicates``.
"""

from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


class NoDuplicatesSampler(Sampler[int]):
    """Indices of ``dataset`` in a seeded random order where every run of ``batch_size`` consecutive
    indices (from the first) shares no text.

    Records are taken in a random order (``seed`` and the epoch) and each joins the batch being
    filled unless one of its texts is already there, in which case it waits for a later batch. Records
    that cannot fill a batch of their own at the end close the epoch (``tail`` of them) in batches that may
    repeat a text; ``clashing`` counts those that do, and a warning says so. ``batch_size`` is
    the global batch (per-device batch x processes): the Trainer's loader cuts the order into per-device
    batches in turn, so each process's slice comes from one duplicate-free global batch. Every record
    is yielded once per epoch.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 42):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not hasattr(dataset, "set_epoch"):
            raise TypeError("NoDuplicatesSampler reads each record's group for the epoch, which needs a GroupDataset "
                            f"(a dataset with set_epoch); got {type(dataset).__name__}")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.epoch = 0
        self.tail = 0  # records of the last epoch yielded after its duplicate-free batches
        self.clashing = 0  # of those, the records that share a text with another

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def texts(self, index: int) -> set[str]:
        """The texts record ``index`` brings to a batch this epoch: its query and its group's documents."""
        item = self.dataset[index]
        return {item["query"], *item["docs"]}

    def __iter__(self) -> Iterator[int]:
        self.dataset.set_epoch(self.epoch)  # the groups this epoch's batches will hold
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        texts = {i: self.texts(i) for i in order.tolist()}
        waiting, batches = list(texts), []
        while len(waiting) >= self.batch_size:
            batch, seen, later = [], set(), []
            for pos, i in enumerate(waiting):
                if texts[i] & seen:
                    later.append(i)
                    continue
                batch.append(i)
                seen |= texts[i]
                if len(batch) == self.batch_size:
                    later += waiting[pos + 1:]
                    break
            if len(batch) < self.batch_size:  # what waits clashes too much to fill another batch
                break
            batches.append(batch)
            waiting = later
        self.tail, self.clashing = len(waiting), _clashing(waiting, texts)
        if self.clashing:
            logger.warning("no-duplicates batches: %d of %d records share a text with every batch they could join; "
                           "they close the epoch in batches that repeat a text", self.clashing, len(texts))
        for batch in batches:
            yield from batch
        yield from waiting


def _clashing(indices: list[int], texts: dict[int, set[str]]) -> int:
    """How many of ``indices`` share a text with another of them."""
    count: dict[str, int] = {}
    for i in indices:
        for text in texts[i]:
            count[text] = count.get(text, 0) + 1
    return sum(any(count[t] > 1 for t in texts[i]) for i in indices)
