"""The base every hf_ragtrain Trainer shares: loss ownership, evaluators, epoch-seeded groups."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

logger = logging.getLogger(__name__)


class _EpochToDataset(TrainerCallback):
    """Tell a dataset with ``set_epoch`` which epoch starts, so its draws vary per epoch."""

    def __init__(self, trainer: "RetrievalTrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        dataset = self.trainer.train_dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(int(state.epoch or 0))


def end_distributed() -> None:
    """Destroy the default process group, if any, so torchrun workers exit cleanly.

    Without it gloo's threads are still alive at interpreter exit and the process aborts
    ("terminate called without an active exception"), failing the torchrun job after training.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class RetrievalTrainer(Trainer):
    """A ``transformers.Trainer`` whose subclasses compute their own loss from scores.

    - The loss is a per-batch mean computed in ``compute_loss``; the Trainer's world-size loss
      scaling (transformers 5 applies it when a model "accepts loss kwargs") is switched off, so
      the loss is the same with 1 and N processes.
    - ``eval_dataset`` may be an *evaluator*: an object with ``evaluate(trainer) -> dict`` (see
      :class:`~hf_ragtrain.evaluation.reranking.RerankingEvaluator`), or a dict of them.
      ``trainer.evaluate()`` then logs ``eval_<metric>``, which ``metric_for_best_model`` and
      ``load_best_model_at_end`` use as usual.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.add_callback(_EpochToDataset(self))
        self.pairs_seen = 0
        self.pairs_truncated = 0
        self.texts_seen = 0
        self.texts_truncated = 0
        if getattr(self.args, "fsdp", None) and self.model is not None:
            from ..distributed import prepare_for_fsdp

            logger.info("FSDP wraps each %s", " / ".join(prepare_for_fsdp(self.model)) or "(no layer class found)")

    # ------------------------------------------------------------------ saving and the Hub
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as the stock Trainer does, but never push from here.

        The stock ``save_model`` pushes when ``push_to_hub`` is set, before a recipe has evaluated
        the model and written its card; hf_ragtrain recipes push the finished folder once, at the
        end (:func:`hf_ragtrain.hub.push_folder`). Checkpoint pushes during training
        (``hub_strategy``) are unchanged.
        """
        super().save_model(output_dir, _internal_call=True)

    def create_model_card(self, *args, **kwargs) -> None:
        """Keep a card hf_ragtrain wrote (it has the scores); otherwise write the Trainer's own."""
        import os

        from ..hub import is_hf_ragtrain_card

        if is_hf_ragtrain_card(os.path.join(self.args.output_dir, "README.md")):
            logger.info("keeping the hf_ragtrain model card in %s", self.args.output_dir)
            return
        super().create_model_card(*args, **kwargs)

    def wait_for_pushes(self) -> None:
        """Block until the Trainer's asynchronous checkpoint pushes have finished."""
        job = getattr(self, "push_in_progress", None)
        if job is not None and not job.is_done():
            logger.info("waiting for the last checkpoint push to finish")
            job.wait_until_done()

    # ------------------------------------------------------------------ resuming and the best model
    def _own_weights_loader(self, model=None):
        """The model's ``load_weights`` when it is one of our wrappers (BiEncoder, ColbertEncoder,
        LlmReranker) outside DeepSpeed; the stock Trainer expects a ``PreTrainedModel`` there.
        Under DeepSpeed the engine's own checkpoint is loaded by the stock code."""
        from transformers import PreTrainedModel

        unwrapped = self.accelerator.unwrap_model(model or self.model)
        if isinstance(unwrapped, PreTrainedModel) or self.is_deepspeed_enabled:
            return None
        return getattr(unwrapped, "load_weights", None)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load = self._own_weights_loader(model)
        if load is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load(resume_from_checkpoint)

    def _load_best_model(self):
        load = self._own_weights_loader()
        if load is None:
            return super()._load_best_model()
        load(self.state.best_model_checkpoint)

    # Our collators read raw text fields (query, docs, ...) that the model's forward does not take;
    # the stock Trainer would strip them as "unused columns".
    def _remove_unused_columns(self, dataset, description=None):
        return dataset

    def _get_collator_with_removed_columns(self, data_collator, description=None):
        return data_collator

    # ------------------------------------------------------------------ evaluation
    @staticmethod
    def _is_evaluator(obj: Any) -> bool:
        return hasattr(obj, "evaluate_with") and callable(obj.evaluate_with)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict) and dataset and all(self._is_evaluator(v) for v in dataset.values()):
            metrics: dict[str, float] = {}
            for name, evaluator in dataset.items():
                metrics.update(self.evaluate(evaluator, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        if not self._is_evaluator(dataset):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        start = time.time()
        results = dataset.evaluate_with(self)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in results.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------ score distillation settings
    def distillation_settings(self) -> tuple[float, float, float]:
        """``(contrastive_weight, distill_weight, teacher_temperature)`` from the arguments.

        ``distill_weight`` defaults to 1 when every training record carries teacher scores, else 0;
        asking for distillation without teacher scores is an error.
        """
        from ..data.groups import GroupDataset

        a = self.args
        distill = getattr(a, "distill_weight", None)
        has_scores = isinstance(self.train_dataset, GroupDataset) and self.train_dataset.has_scores
        weight = float(distill if distill is not None else (1.0 if has_scores else 0.0))
        if weight and isinstance(self.train_dataset, GroupDataset) and not has_scores:
            raise ValueError("distill_weight > 0 needs teacher scores (pos_scores and neg_scores) in every record")
        return float(getattr(a, "contrastive_weight", 1.0)), weight, float(getattr(a, "teacher_temperature", 1.0))

    # ------------------------------------------------------------------ micro-batches across processes
    def deepspeed_zero_stage(self) -> int | None:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        return int(plugin.zero_stage) if plugin is not None else None

    def padded_chunk_count(self, n: int, every_pass_communicates: bool = False) -> int:
        """How many micro-batches this process must run so that all processes run the same number.

        Processes sort and split their own batches, so their micro-batch counts can differ. That is
        harmless where a forward/backward pass makes no collective call (DDP's reduction happens
        once per step), but under DeepSpeed ZeRO-3 every forward and backward gathers parameters,
        and with ``every_pass_communicates`` (GradCache's one backward per micro-batch, which ZeRO
        reduces each time) every pass is a collective: then the counts must match, and the process
        with fewer micro-batches runs extra zero-weight ones.
        """
        import torch.distributed as dist

        stage = self.deepspeed_zero_stage()
        if stage is None or not (stage == 3 or every_pass_communicates):
            return n
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return n
        count = torch.tensor([n], dtype=torch.long, device=self.args.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return int(count.item())

    def padding_chunks(self, chunks: list[dict[str, Any]], every_pass_communicates: bool = False) -> list[dict[str, Any]]:
        """The extra micro-batches this process must run (copies of its shortest), see :meth:`padded_chunk_count`.

        Their outputs enter the loss with weight 0, so they change no gradient, only the pass count.
        """
        extra = self.padded_chunk_count(len(chunks), every_pass_communicates) - len(chunks)
        return [min(chunks, key=lambda c: c["input_ids"].numel())] * extra

    # ------------------------------------------------------------------ logging
    def count_pairs(self, inputs: dict[str, Any]) -> None:
        if "num_pairs" in inputs:
            self.pairs_seen += int(inputs["num_pairs"])
            self.pairs_truncated += int(inputs["num_truncated"])

    def total_counts(self) -> dict[str, int]:
        """Pairs/texts seen and truncated, summed over all processes (every process must call it)."""
        import torch.distributed as dist

        names = ["pairs_seen", "pairs_truncated", "texts_seen", "texts_truncated"]
        counts = torch.tensor([getattr(self, n) for n in names], dtype=torch.long, device=self.args.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)
        return dict(zip(names, counts.tolist()))

    def count_texts(self, inputs: dict[str, Any]) -> None:
        if "num_texts" in inputs:
            self.texts_seen += int(inputs["num_texts"])
            self.texts_truncated += int(inputs["num_truncated_texts"])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.pairs_seen:
            logs["truncated_pairs"] = self.pairs_truncated
        if "loss" in logs and self.texts_seen:
            logs["truncated_texts"] = self.texts_truncated
        super().log(logs, start_time)
