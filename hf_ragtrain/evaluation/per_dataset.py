"""In-training evaluation over several dev sets at once: all of them together, and each on its own."""

from __future__ import annotations

from typing import Any


class PerDatasetEvaluator:
    """Wraps evaluators (anything with ``evaluate_with(trainer) -> metrics``): ``pooled``'s metrics keep their
    names (``ndcg@10``), so the recipes' summaries and cards read them as for one dev set, and each of
    ``parts`` adds its own as ``<name>_<metric>``."""

    def __init__(self, pooled: Any, parts: dict[str, Any]):
        self.pooled, self.parts = pooled, dict(parts)

    def evaluate_with(self, trainer: Any) -> dict[str, float]:
        metrics = dict(self.pooled.evaluate_with(trainer))
        for name, evaluator in self.parts.items():
            metrics.update({f"{name}_{key}": value for key, value in evaluator.evaluate_with(trainer).items()})
        return metrics
