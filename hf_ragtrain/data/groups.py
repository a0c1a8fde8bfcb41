"""Group sampling: each training example is a query with 1 positive and ``group_size - 1`` negatives.

The draw for an example depends only on ``(seed, epoch, index)``, never on global random state, so
the same example gets the same group whatever the number of processes or dataloader workers. That
makes a 2-process run comparable step by step with a 1-process run over the same global batch.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Sequence

from torch.utils.data import Dataset

from .records import RetrievalRecord

logger = logging.getLogger(__name__)


@dataclass
class GroupStats:
    """How the data fit the requested group size (computed once, before training)."""

    records: int
    group_size: int
    short_records: int  # records with fewer than group_size - 1 candidate negatives
    no_negative_records: int  # records with none: filled from other records' documents

    def summary(self) -> str:
        need = self.group_size - 1
        text = f"{self.records} training records, groups of 1 positive + {need} negatives"
        if self.short_records:
            text += (f"; {self.short_records} records have fewer than {need} negatives, "
                     f"their groups are completed by sampling their negatives with replacement")
        if self.no_negative_records:
            text += (f"; {self.no_negative_records} records have no negative at all, their negatives are "
                     f"drawn at random from other records' documents")
        return text


@dataclass(frozen=True)
class DataFacts:
    """What a trainer must know about its training records before the first step. ``None`` is "not
    known" (a dataset that does not say). Trainers take it as ``data_facts``; by default they ask the
    dataset (:meth:`of`).

    - ``teacher_scores``: every record carries teacher scores (``pos_scores``/``neg_scores``);
      ``scored_records`` of ``records`` do (so a partly scored set is told apart from an unscored one);
    - ``max_label``: the highest relevance grade of any positive;
    - ``group_size``: documents per query in a training group;
    - ``first_stage_scores``: every record carries its first stage's scores
      (``pos_first_stage_scores``/``neg_first_stage_scores``), ``first_stage_records`` of ``records`` do.
    """

    teacher_scores: bool | None = None
    max_label: int | None = None
    group_size: int | None = None
    records: int | None = None
    scored_records: int | None = None
    first_stage_scores: bool | None = None
    first_stage_records: int | None = None

    @classmethod
    def of(cls, dataset: Any) -> "DataFacts":
        """The facts a dataset states about itself (``dataset.facts``, as :class:`GroupDataset` has), else unknown."""
        facts = getattr(dataset, "facts", None)
        return facts if isinstance(facts, DataFacts) else cls()

    @property
    def partly_scored(self) -> bool:
        """Some records carry teacher scores and others do not."""
        return bool(self.scored_records) and self.teacher_scores is False


class GroupDataset(Dataset):
    """A map-style dataset of query groups for rerankers (and, later, bi-encoders).

    Each item is ``{"query", "docs", "labels", "prompt"[, "scores"][, "first_stage_scores"]}`` where ``docs[0]`` is a positive
    drawn from ``record.pos`` and ``docs[1:]`` are ``group_size - 1`` documents of a lower grade: the
    record's negatives (label 0) and, for graded data, its positives of a lower label than the one
    drawn. ``labels`` are the documents' grades, so ``labels[0]`` is always the strict maximum.
    """

    def __init__(self, records: Sequence[RetrievalRecord], group_size: int = 8, seed: int = 42):
        if group_size < 1:
            raise ValueError(f"train_group_size must be >= 1, got {group_size}")
        self.records = list(records)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self.has_scores = all(r.pos_scores is not None for r in self.records)
        self.has_first_stage = bool(self.records) and all(r.pos_first_stage_scores is not None for r in self.records)
        self._all_docs: list[str] | None = None
        self.stats = self._compute_stats()
        logger.info(self.stats.summary())

    def _negative_pool(self, rec: RetrievalRecord, anchor_label: int) -> list[tuple[str, int, float | None, float | None]]:
        """``(document, grade, teacher score, first-stage score)`` of every document that may join a group
        whose positive has grade ``anchor_label``."""
        def number(values: list[float] | None, i: int) -> float | None:
            return values[i] if values else None

        pool = [(d, 0, number(rec.neg_scores, i), number(rec.neg_first_stage_scores, i)) for i, d in enumerate(rec.neg)]
        for i, (doc, lab) in enumerate(zip(rec.pos, rec.labels_of_pos())):
            if lab < anchor_label:
                pool.append((doc, lab, number(rec.pos_scores, i), number(rec.pos_first_stage_scores, i)))
        return pool

    def _compute_stats(self) -> GroupStats:
        need = self.group_size - 1
        short = empty = 0
        for rec in self.records:
            n = len(self._negative_pool(rec, min(rec.labels_of_pos())))
            short += 0 < n < need
            empty += n == 0 and need > 0
        return GroupStats(len(self.records), self.group_size, short, empty)

    @property
    def facts(self) -> DataFacts:
        """Teacher scores (in every record, in how many), the highest grade of any positive, the group size."""
        grade = max((max(r.labels_of_pos()) for r in self.records), default=None)
        scored = sum(r.pos_scores is not None for r in self.records)
        first = sum(r.pos_first_stage_scores is not None for r in self.records)
        return DataFacts(teacher_scores=self.has_scores, max_label=grade, group_size=self.group_size,
                         records=len(self.records), scored_records=scored, first_stage_scores=self.has_first_stage,
                         first_stage_records=first)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _random_docs(self, rng: random.Random, rec: RetrievalRecord, k: int) -> list[str]:
        if self._all_docs is None:
            self._all_docs = sorted({d for r in self.records for d in (*r.pos, *r.neg)})
        own = set(rec.pos)
        if len(own) >= len(self._all_docs):
            raise ValueError("cannot build negatives: every document in the data is a positive of this query; "
                             "add 'neg' documents or use train_group_size=1")
        picked = []
        while len(picked) < k:  # rejection sampling: uniform over the documents that are not own positives
            doc = self._all_docs[rng.randrange(len(self._all_docs))]
            if doc not in own:
                picked.append(doc)
        return picked

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        rng = random.Random(f"{self.seed}-{self.epoch}-{index}")
        labels_of_pos = rec.labels_of_pos()
        a = rng.randrange(len(rec.pos))
        docs, labels = [rec.pos[a]], [labels_of_pos[a]]
        scores = [rec.pos_scores[a]] if self.has_scores else None
        first_stage = [rec.pos_first_stage_scores[a]] if self.has_first_stage else None
        need = self.group_size - 1
        if need > 0:
            pool = self._negative_pool(rec, labels_of_pos[a])
            if not pool:
                if first_stage is not None:
                    raise ValueError(f"record {index} has no negative, and documents drawn from other records have "
                                     "no first-stage score for its query: give every record negatives")
                picked = [(d, 0, None, None) for d in self._random_docs(rng, rec, need)]
            elif len(pool) >= need:
                picked = rng.sample(pool, need)
            else:
                picked = [rng.choice(pool) for _ in range(need)]
            docs += [p[0] for p in picked]
            labels += [p[1] for p in picked]
            if scores is not None:
                if any(p[2] is None for p in picked):
                    raise ValueError(f"record {index}: teacher scores are missing for some negatives")
                scores += [p[2] for p in picked]
            if first_stage is not None:
                first_stage += [p[3] for p in picked]
        item = {"query": rec.query, "docs": docs, "labels": labels, "prompt": rec.prompt}
        if scores is not None:
            item["scores"] = scores
        if first_stage is not None:
            item["first_stage_scores"] = first_stage
        return item
