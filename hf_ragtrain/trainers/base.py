"""The base every hf_ragtrain Trainer shares: the family's arguments, what the data says about itself,
saving our model wrappers, the CPU dropout kernel, evaluators, epoch-seeded groups, truncation counts."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState

from ..data.groups import DataFacts
from .checkpoints import TRAINER_STATE, CheckpointSaving
from .family_args import family_arguments

logger = logging.getLogger(__name__)

TRAINING_ARGS_NAME = "training_args.bin"


class _EpochToDataset(TrainerCallback):
    """Tell a dataset with ``set_epoch`` which epoch starts, so its draws vary per epoch."""

    def __init__(self, trainer: "RetrievalTrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        dataset = self.trainer.train_dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(int(state.epoch or 0))


COUNT_NAMES = ("pairs_seen", "pairs_truncated", "texts_seen", "texts_truncated")


class TrainingCounts(TrainerCallback, ExportableState):
    """The pairs and texts seen and cut so far, summed over processes; the trainer state of every
    checkpoint carries them, so a resumed run reports the whole run's counts."""

    def __init__(self, **totals: int):
        self.totals = {name: int(totals.get(name, 0)) for name in COUNT_NAMES}

    def state(self) -> dict[str, Any]:
        return {"args": dict(self.totals), "attributes": {}}


class RetrievalTrainer(CheckpointSaving, Trainer):
    """A ``transformers.Trainer`` whose subclasses compute their own loss from scores.

    - The loss is a per-batch mean computed in ``compute_loss``; the Trainer's world-size loss
      scaling (transformers 5 applies it when a model "accepts loss kwargs") is switched off, so
      the loss is the same with 1 and N processes.
    - ``eval_dataset`` may be an *evaluator*: an object with ``evaluate(trainer) -> dict`` (see
      :class:`~hf_ragtrain.evaluation.reranking.RerankingEvaluator`), or a dict of them.
      ``trainer.evaluate()`` then logs ``eval_<metric>``, which ``metric_for_best_model`` and
      ``load_best_model_at_end`` use as usual.
    - Settings come from the family's arguments class, ``args_class`` (see
      :func:`~hf_ragtrain.trainers.family_args.family_arguments`: other ``TrainingArguments`` are
      converted with the family's defaults, or refused where they set what the family lacks).
    - What the trainer must know about the training data (teacher scores present, the highest
      grade) is ``data_facts``, by default what the dataset states (:meth:`DataFacts.of`).
    - Our model wrappers (BiEncoder, ColbertEncoder, LlmReranker) save with their own
      ``save_pretrained`` (:meth:`save_options` adds arguments); transformers models as usual.
    - Models loaded with hf_ragtrain's CPU attention kernel get its dropout for the hidden states too.
    """

    args_class: type[TrainingArguments] = TrainingArguments

    def __init__(self, model=None, args=None, *positional, data_facts: DataFacts | None = None, **kwargs):
        args = family_arguments(args, self.args_class, type(self).__name__)
        super().__init__(model, args, *positional, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.data_facts = data_facts if data_facts is not None else DataFacts.of(self.train_dataset)
        self.add_callback(_EpochToDataset(self))
        self.pairs_seen = 0
        self.pairs_truncated = 0
        self.texts_seen = 0
        self.texts_truncated = 0
        self.saved_counts = TrainingCounts()
        self.add_callback(self.saved_counts)
        if self.model is not None:
            self._use_cpu_dropout()
        if self.args.fsdp and self.model is not None:
            from ..distributed import prepare_for_fsdp

            logger.info("FSDP wraps each %s", " / ".join(prepare_for_fsdp(self.model)) or "(no layer class found)")

    def train(self, *args: Any, **kwargs: Any):
        """The stock ``train``; on CPU, unless ``--keep_freed_memory False``, glibc keeps freed blocks for reuse
        meanwhile (:func:`~hf_ragtrain.allocator.keep_freed_memory`: no page faults for each new tensor)."""
        from ..allocator import keep_freed_memory

        keep = self.args.device.type == "cpu" and getattr(self.args, "keep_freed_memory", True)
        with keep_freed_memory() if keep else contextlib.nullcontext():
            return super().train(*args, **kwargs)

    def _use_cpu_dropout(self) -> None:
        """A model loaded with hf_ragtrain's CPU attention kernel draws its other dropout masks the
        same cheap way (:func:`~hf_ragtrain.modeling.attention.use_fast_dropout`)."""
        from ..modeling.attention import NAME, use_fast_dropout

        unwrapped = self.accelerator.unwrap_model(self.model)
        if getattr(getattr(unwrapped, "config", None), "_attn_implementation", None) == NAME:
            use_fast_dropout(unwrapped)

    # ------------------------------------------------------------------ checkpoints
    def before_checkpoint(self) -> None:
        self.saved_counts.totals = self.total_counts()

    def on_resume(self, checkpoint: str) -> None:
        """Take up the counts where the checkpoint left them (on the first process; the others add theirs)."""
        import json

        with open(os.path.join(checkpoint, TRAINER_STATE)) as fh:
            saved = json.load(fh).get("stateful_callbacks", {}).get(type(self.saved_counts).__name__)
        if saved is None:
            logger.warning("%s carries no training counts (an older checkpoint): the truncation counts start "
                           "from 0 at the resume", checkpoint)
            return
        totals = saved["args"] if self.args.process_index == 0 else {}
        for name in COUNT_NAMES:
            setattr(self, name, int(totals.get(name, 0)))

    # ------------------------------------------------------------------ saving and the Hub
    def save_options(self) -> dict[str, Any]:
        """Extra arguments of our model wrappers' ``save_pretrained`` (a subclass adds its own)."""
        return {}

    def _save(self, output_dir: str | None = None, state_dict=None):
        """A transformers model saves as the stock Trainer does; one of our wrappers writes its own
        folder (checkpoints and the final model alike), with the training arguments beside it."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if isinstance(unwrapped, PreTrainedModel) or not hasattr(unwrapped, "save_pretrained"):
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:  # the stock save_model calls this on every process; one writes
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        unwrapped.save_pretrained(output_dir, state_dict=state_dict, **self.save_options())
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def create_model_card(self, *args, **kwargs) -> None:
        """Keep a card hf_ragtrain wrote (it has the scores); otherwise write the Trainer's own."""
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

    # ------------------------------------------------------------------ several datasets
    def _get_train_sampler(self, train_dataset=None):
        """A :class:`~hf_ragtrain.data.multi_dataset.MultiDatasetSampler` over the global batch (per-device
        batch x processes) for a :class:`~hf_ragtrain.data.multi_dataset.MultiDataset`, seeded as the run;
        the Trainer's own sampler otherwise."""
        from ..data.multi_dataset import MultiDataset, MultiDatasetSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not isinstance(dataset, MultiDataset):
            return super()._get_train_sampler(train_dataset)
        return MultiDatasetSampler(dataset, self.args.per_device_train_batch_size * self.args.world_size,
                                   seed=self.args.seed)

    def loss_weight(self, inputs: dict[str, Any]) -> float:
        """The weight of a training batch's loss: its dataset's (:class:`~hf_ragtrain.data.multi_dataset.
        MultiDataset`), 1 for a single training set and for evaluation batches."""
        part = inputs.get("dataset")
        weights = getattr(self.train_dataset, "weights", None)
        return 1.0 if part is None or weights is None else float(weights[int(part)])

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
        with self._whole_weights():
            results = dataset.evaluate_with(self)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in results.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _whole_weights(self):
        """Under DeepSpeed ZeRO-3 before training, the model was built sharded (``zero.Init``) and no
        engine gathers its weights for a forward pass yet: gather them for the evaluation (every
        process holds the whole model meanwhile, as inference needs). Otherwise nothing."""
        import contextlib

        from transformers.integrations import is_deepspeed_zero3_enabled

        if not (self.is_deepspeed_enabled and self.deepspeed is None and is_deepspeed_zero3_enabled()):
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)

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
        stage = self.deepspeed_zero_stage()
        if stage is None or not (stage == 3 or every_pass_communicates):
            return n
        return self.max_over_processes(n)

    def max_over_processes(self, n: int) -> int:
        """The largest ``n`` of all processes (a collective: every process must call it), for choices
        that all processes must make alike; ``n`` itself in a single process."""
        import torch.distributed as dist

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
    def loss_description(self) -> tuple[str, dict[str, Any]]:
        """The loss's name and the parameters that shape it, for the model card (each family says its own)."""
        return type(self).__name__, {}

    def count_pairs(self, inputs: dict[str, Any]) -> None:
        if "num_pairs" in inputs:
            self.pairs_seen += int(inputs["num_pairs"])
            self.pairs_truncated += int(inputs["num_truncated"])

    def total_counts(self) -> dict[str, int]:
        """Pairs/texts seen and truncated, summed over all processes (every process must call it)."""
        import torch.distributed as dist

        names = COUNT_NAMES
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
