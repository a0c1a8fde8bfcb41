"""Which mined candidates are likely false negatives: score filters relative to the query's positive.

A mined "negative" that a scorer rates about as high as the query's judged positive is often an
unjudged relevant document. :class:`NegativeFilters` drops a candidate when its score ``s`` is

* above ``max_score`` (``s > max_score``),
* within ``absolute_margin`` of the positive's score ``p`` (``s > p - absolute_margin``),
* within ``relative_margin`` of it, as a share of its size (``s > p - relative_margin * |p|``; for the
  positive scores of cosines this is ``s > p * (1 - relative_margin)``).

``p`` is the score of the query's weakest judged positive, so a candidate that outscores any
positive is suspect. Scores are whatever the miner scores with: its encoder's cosine, or a teacher's
scores (a cross-encoder's logits have no fixed range, so its ``max_score`` is in logits).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["NegativeFilters", "FILTER_REASONS"]

#: the filters in the order they are checked; a candidate is counted under the first that drops it
FILTER_REASONS = ("max_score", "absolute_margin", "relative_margin")


@dataclass(frozen=True)
class NegativeFilters:
    """Score filters for mined negatives (``None``: that filter is off). See the module docstring."""

    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None

    def __post_init__(self):
        if self.absolute_margin is not None and self.absolute_margin < 0:
            raise ValueError(f"absolute_margin must be >= 0 (how far below the positive a negative must score), "
                             f"got {self.absolute_margin}")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise ValueError(f"relative_margin must be in [0, 1) (a share of the positive's score), "
                             f"got {self.relative_margin}")

    @property
    def active(self) -> bool:
        """Whether any filter is on (only then are candidates scored)."""
        return any(getattr(self, f.name) is not None for f in fields(self))

    def reasons(self, positive: float, candidates: np.ndarray) -> list[str | None]:
        """For each candidate score, the first filter of :data:`FILTER_REASONS` that drops it, or ``None``
        to keep it; ``positive`` is the weakest judged positive's score."""
        scores = np.asarray(candidates, dtype=np.float64)
        dropped = {
            "max_score": scores > self.max_score if self.max_score is not None else None,
            "absolute_margin": scores > positive - self.absolute_margin if self.absolute_margin is not None else None,
            "relative_margin": (scores > positive - self.relative_margin * abs(positive)
                                if self.relative_margin is not None else None),
        }
        out: list[str | None] = [None] * len(scores)
        for reason in FILTER_REASONS:
            mask = dropped[reason]
            if mask is None:
                continue
            for i in np.flatnonzero(mask):
                if out[i] is None:
                    out[i] = reason
        return out
