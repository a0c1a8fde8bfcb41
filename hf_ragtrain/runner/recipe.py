"""The recipe runner: the one template every training recipe follows.

    parse -> load data -> build model, collator, evaluator, trainer -> evaluate (before) -> train
    -> evaluate (after) -> save -> mteb on the saved folder -> eval_results.json -> model card
    -> print a summary -> push -> exit status

:class:`Recipe` owns that order. A model family (:class:`~hf_ragtrain.runner.RerankerRecipe`,
:class:`~hf_ragtrain.runner.EncoderRecipe`) fills in what its recipes share (collator, evaluator,
card, counts, mteb step); a recipe (``recipes/*.py``) fills in only what is its own, usually its
arguments, its defaults and how it builds the model. A run that cannot go on raises
:class:`RecipeError` with the exit status; :meth:`Recipe.run` prints it as one line and returns it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..arguments import DataArguments, ModelArguments
from ..data.groups import GroupDataset
from ..data.sources import TrainingData, display_path, load_training_data
from ..distributed import end_distributed, start_process_group
from ..memory import describe_peak, peak_memory
from ..offline import hub_name
from ..trainers.checkpoints import ResumeError, SaveFailed, resolve_resume

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2  # the data or the arguments are wrong; nothing was trained
EXIT_HUB = 3  # the Hub refused; the local output folder is complete
EXIT_SAVE_FAILED = 4  # writing a checkpoint or the model failed; the message says what is complete and where

#: Where the stock TrainingArguments defaults do not suit a small retrieval job (any flag overrides them).
RECIPE_DEFAULTS: dict[str, Any] = dict(
    learning_rate=5e-5, num_train_epochs=1, per_device_train_batch_size=8, warmup_steps=0.1, logging_steps=5,
    eval_strategy="epoch", save_strategy="no", report_to="none", seed=42)


class RecipeError(Exception):
    """A run that cannot go on; ``status`` is the process exit status (:data:`EXIT_BAD_INPUT`, :data:`EXIT_HUB`)."""

    def __init__(self, message: str, status: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.status = status


@dataclass
class MtebOutcome:
    """What the mteb step of a run found (see :mod:`hf_ragtrain.runner.mteb_steps`).

    ``results``/``first_stage``: the model's and its first stage's scores per task, for the card;
    ``settings``: how it was evaluated; ``json``: the ``eval_results.json`` entries; ``notes``: lines
    for the card; ``summary``: lines for the console.
    """

    results: dict[str, Any] = field(default_factory=dict)
    first_stage: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


def minutes(seconds: float | None) -> str:
    """A duration for people: ``"12 min"``, ``"45 s"``."""
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def one_line(err: BaseException) -> str:
    """An exception as one line: its message's first line (libraries' messages can run to many)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def parse_arguments(dataclass_types: Sequence[type], defaults: dict[str, Any], argv: Sequence[str] | None = None,
                    description: str | None = None):
    """:class:`~hf_ragtrain.runner.parser.RecipeParser` over ``dataclass_types`` with recipe ``defaults``
    (``description`` heads ``--help``); bf16 where the hardware runs it natively unless the command line
    picks a precision; ``use_cpu`` without a GPU (bf16 on CPU needs it, and without it torchrun's
    processes would train independently)."""
    from ..hardware import bf16_is_fast, has_gpu
    from .parser import RecipeParser

    parser = RecipeParser(dataclass_types, description=description)
    args = list(sys.argv[1:] if argv is None else argv)
    auto_bf16 = bf16_is_fast() and not any(a.split("=")[0] in ("--bf16", "--fp16") for a in args)
    parser.set_defaults(**defaults, use_cpu=not has_gpu(), **({"bf16": True} if auto_bf16 else {}))
    return parser.parse_args_into_dataclasses(args=args)


def check_output_dir(path: str) -> None:
    """Refuse an output folder that cannot be created or written, before any model is loaded."""
    import tempfile

    if os.path.exists(path) and not os.path.isdir(path):
        raise RecipeError(f"--output_dir {path} is a file; give a folder (it is created when missing)")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".partial-probe-"):
            pass
    except OSError as err:
        raise RecipeError(f"cannot write to --output_dir {path} ({one_line(err)}); give a folder you can write "
                          "to") from None


def final_step_evaluation(trainer: Any) -> dict[str, float] | None:
    """The metrics of the evaluation the Trainer ran at its last step (``--eval_strategy epoch`` ends
    with one), renamed ``after_*``, so a run does not score the dev set twice with the same
    weights; ``None`` when there was none, or when ``load_best_model_at_end`` swapped the weights."""
    if trainer.args.load_best_model_at_end:
        return None
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if entry.get("step") == step and any(k.startswith("eval_") and k.endswith("_runtime") for k in entry):
            return {("after_" + k[len("eval_"):] if k.startswith("eval_") else k): v
                    for k, v in entry.items() if k != "step"}
    return None


def metrics_lines(title: str, keys: Sequence[str], before: dict[str, float], after: dict[str, float],
                  first_stage: dict[str, float] | None = None) -> list[str]:
    """A console table of dev metrics before and after training, with a ``first stage`` column when
    ``first_stage`` (plain metric names) is given."""
    rows = [(k, before.get(f"before_{k}"), after.get(f"after_{k}")) for k in keys]
    rows = [(k, b, a) for k, b, a in rows if b is not None and a is not None]
    if not rows:
        return []
    if first_stage is None:
        return [f"\n{title:<26} before     after", *(f"  {k:<22} {b:>9.4f} {a:>9.4f}" for k, b, a in rows)]
    return [f"\n{title:<26} before     after   first stage",
            *(f"  {k:<22} {b:>9.4f} {a:>9.4f} {first_stage.get(k, float('nan')):>13.4f}" for k, b, a in rows)]


class Recipe:
    """A training recipe: :meth:`run` is the template; subclasses fill in the hooks below it.

    A recipe declares ``options`` (attribute name -> argument dataclass, parsed after
    :class:`~hf_ragtrain.ModelArguments` and before :class:`~hf_ragtrain.DataArguments`; the instance
    gets them as attributes), ``training_arguments`` (the family's ``TrainingArguments`` class),
    ``trainer_class`` and ``defaults`` (over :data:`RECIPE_DEFAULTS`). ``repo`` is the checkout the
    bundled data is read from.
    """

    options: dict[str, type] = {}
    training_arguments: type = None  # type: ignore[assignment]
    trainer_class: type = None  # type: ignore[assignment]
    defaults: dict[str, Any] = {}

    def __init__(self, repo: str):
        self.repo = repo
        self.model: Any = None
        self.tokenizer: Any = None

    # ------------------------------------------------------------------ the template
    def run(self, argv: Sequence[str] | None = None) -> int:
        """Run the recipe on ``argv`` (default: the command line); returns the exit status."""
        try:
            self.parse(argv)
            self.data = self.load_data()
            self.trainer = self.make_trainer()
            self.before, self.after = self.train_and_evaluate()
            self.peak = peak_memory()  # before the mteb step: the training's own peak
            self.finish_saving()
            counts = self.trainer.total_counts()  # a collective: every process takes part
            if self.trainer.is_world_process_zero():
                self.report(counts)
        except RecipeError as err:
            print(f"error: {err}", file=sys.stderr)
            end_distributed(getattr(self, "trainer", None))
            return err.status
        end_distributed(self.trainer)
        return 0

    def parse(self, argv: Sequence[str] | None) -> None:
        """Parse the arguments into attributes, start logging and seed everything."""
        from transformers import set_seed

        classes = (ModelArguments, *self.options.values(), DataArguments, self.training_arguments)
        try:
            parsed = parse_arguments(classes, {**RECIPE_DEFAULTS, **self.defaults}, argv,
                                     description=getattr(sys.modules.get(type(self).__module__), "__doc__", None))
        except ValueError as err:  # an argument class's own check
            raise RecipeError(f"bad arguments: {one_line(err)}") from None
        self.model_args, *values, self.data_args, self.training_args = parsed
        for name, value in zip(self.options, values):
            setattr(self, name, value)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            level=logging.INFO if self.training_args.should_log else logging.WARNING)
        check_output_dir(self.output_dir)
        try:
            self.resume = resolve_resume(self.training_args.resume_from_checkpoint, self.output_dir)
        except ResumeError as err:
            raise RecipeError(str(err)) from None
        start_process_group(self.training_args)
        set_seed(self.training_args.seed)

    def load_data(self) -> TrainingData:
        """The training and dev records (:func:`~hf_ragtrain.data.sources.load_training_data`), checked."""
        from ..data.errors import DataFormatError

        try:
            data = load_training_data(self.data_args, self.training_args.seed, self.repo, self.filter_teacher())
        except (DataFormatError, FileNotFoundError) as err:
            raise RecipeError(f"bad training data: {err}") from None
        if self.data_args.mteb_tasks and self.data_args.mteb_eval:  # a typo must not cost a training run
            from ..evaluation.mteb_eval import get_tasks

            try:
                get_tasks(self.data_args.mteb_tasks.split(","))
            except ValueError as err:
                raise RecipeError(f"--mteb_tasks: {one_line(err)}") from None
        self.check_data(data)
        return data

    def filter_teacher(self) -> Any:
        """The teacher that scores mined candidates for the false-negative filters (``--negatives_filter_teacher``)."""
        if not self.data_args.negatives_filter_teacher:
            return None
        from ..scoring import load_teacher

        try:
            return load_teacher(self.data_args.negatives_filter_teacher)
        except (OSError, ValueError) as err:
            raise RecipeError(f"--negatives_filter_teacher: cannot load {self.data_args.negatives_filter_teacher} "
                              f"({one_line(err)})") from None

    def make_trainer(self) -> Any:
        """Model, collator, group dataset, evaluator, and the trainer over them. With ``--push_to_hub``
        the Trainer creates the Hub repo here, so a Hub that refuses stops the run before any work."""
        try:
            self.model = self.build_model()
            collator = self.build_collator()
        except (FileNotFoundError, ValueError) as err:  # a folder that is not there, bad model options
            raise RecipeError(one_line(err)) from None
        except OSError as err:  # a folder that holds no model, a Hub id that cannot be reached
            raise RecipeError(f"cannot load the model {self.model_args.model_name_or_path}: {one_line(err)}") from None
        try:
            self.train_dataset = self.build_train_dataset()
        except ValueError as err:
            raise RecipeError(one_line(err)) from None
        evaluator = self.build_dev_evaluator()
        if evaluator is None:
            self.training_args.eval_strategy = "no"
        try:
            return self.trainer_class(model=self.model, args=self.training_args, train_dataset=self.train_dataset,
                                      eval_dataset=evaluator, data_collator=collator, processing_class=self.tokenizer,
                                      **self.trainer_options())
        except ValueError as err:
            raise RecipeError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - with --push_to_hub any failure here is the Hub's
            if not self.training_args.push_to_hub:
                raise
            raise RecipeError(f"cannot create the Hub repo {self.training_args.hub_model_id or self.output_dir} "
                              f"before training ({type(err).__name__}: {err}); nothing was trained", EXIT_HUB) from None

    def build_train_dataset(self) -> Any:
        """The groups of the training records: one :class:`~hf_ragtrain.data.GroupDataset`, or a
        :class:`~hf_ragtrain.data.multi_dataset.MultiDataset` of the files kept apart (their card rows then
        say their sampling, share of steps, prompt, weight and group size)."""
        seed, group_size, sampling = (self.training_args.seed, self.data_args.train_group_size,
                                      self.data_args.dataset_sampling)
        if not self.data.parts:
            return GroupDataset(self.data.train, group_size=group_size, seed=seed)
        from ..data.multi_dataset import DatasetPart, MultiDataset, plan_steps

        parts = [DatasetPart(p.name, GroupDataset(p.records, group_size=p.group_size or group_size, seed=seed),
                             prompt=p.prompt, weight=p.weight) for p in self.data.parts]
        global_batch = self.training_args.per_device_train_batch_size * self.training_args.world_size
        steps, _, unused = plan_steps([len(p.records) for p in self.data.parts], global_batch, sampling)
        rows = iter(row for row in self.data.datasets if row["split"] == "train")
        for part, n_steps, left, row in zip(parts, steps, unused, rows):
            row["source"] = (f"{row['source']}; {sampling} sampling, {n_steps / sum(steps):.0%} of steps, "
                             f"group size {part.groups.group_size}, loss weight {part.weight:g}"
                             + (f", prompt {part.prompt!r}" if part.prompt else "")
                             + (f", {left} records left out of each epoch (drawn anew the next)" if left else ""))
        return MultiDataset(parts, sampling=sampling)

    def build_dev_evaluator(self) -> Any:
        """The in-training evaluator: the dev records (all of them), and with dev files per training file
        each one's too, as ``<name>_<metric>`` (:class:`~hf_ragtrain.evaluation.per_dataset.PerDatasetEvaluator`)."""
        if not self.data.dev:
            return None
        own = {p.name: self.build_evaluator(p.dev) for p in self.data.parts if p.dev}
        pooled = self.build_evaluator(self.data.dev)  # last: a recipe may keep the evaluator it built
        if not own:
            return pooled
        from ..evaluation.per_dataset import PerDatasetEvaluator

        return PerDatasetEvaluator(pooled, own)

    def train_and_evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Evaluate (``before_*``), train, evaluate (``after_*``: the last step's evaluation when
        there is one) and save the model to ``output_dir``."""
        trainer, evaluate = self.trainer, self.trainer.eval_dataset is not None
        before = trainer.evaluate(metric_key_prefix="before") if evaluate else {}
        try:
            trainer.train(resume_from_checkpoint=self.resume)
        except SaveFailed as err:
            raise RecipeError(f"{err}; training stopped at step {trainer.state.global_step}. "
                              f"{self.resume_hint(err.kept)}", EXIT_SAVE_FAILED) from None
        after = (final_step_evaluation(trainer) or trainer.evaluate(metric_key_prefix="after")) if evaluate else {}
        try:
            trainer.save_model(self.output_dir)
        except SaveFailed as err:
            raise RecipeError(f"{err}. {self.rescue_model()} {self.resume_hint(err.kept)}", EXIT_SAVE_FAILED) from None
        return before, after

    def resume_hint(self, checkpoint: str | None) -> str:
        """What to run once the cause of a failed save is fixed."""
        if checkpoint is None:
            return ("No complete checkpoint exists (--save_strategy steps or epoch writes them); fix the cause and "
                    "run the same command again.")
        return (f"The last complete checkpoint is {checkpoint}: fix the cause and run the same command with "
                "--resume_from_checkpoint latest.")

    def rescue_model(self) -> str:
        """After a failed final save, try to keep the trained weights in the system's temporary folder
        (often another disk); every process takes part, as in the save itself."""
        import hashlib
        import tempfile

        tag = hashlib.sha1(os.path.abspath(self.output_dir).encode()).hexdigest()[:8]
        rescue = os.path.join(tempfile.gettempdir(), f"hf_ragtrain-rescued-{tag}-step{self.trainer.state.global_step}")
        try:
            os.makedirs(rescue, exist_ok=True)
            self.trainer.save_model(rescue)
        except (OSError, SaveFailed):
            return "Saving it to the temporary folder failed too; the trained weights are lost with this run."
        return f"The trained model was saved to {rescue} instead: move it where it belongs."

    def report(self, counts: dict[str, int]) -> None:
        """On the main process: mteb, ``eval_results.json``, the card, the console summary, the push."""
        from ..hub import write_model_card

        tasks = self.mteb_tasks() if self.data_args.mteb_eval else []
        self.mteb = self.evaluate_saved(tasks) if tasks else MtebOutcome()
        log = [{"step": e["step"], "loss": e["loss"]} for e in self.trainer.state.log_history if "loss" in e]
        results = {"before": self.before, "after": self.after, **self.mteb.json, "train_losses": log,
                   "train_group_stats": vars(self.train_dataset.stats), **self.count_entries(counts),
                   "train_data": self.data.report, "peak_memory": self.peak, **self.extra_results()}
        with open(os.path.join(self.output_dir, "eval_results.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        write_model_card(self.output_dir, self.render_card(self.card_info(counts)))
        print("\n".join([*self.summary_lines(), "", describe_peak(self.peak),
                         f"model, eval_results.json and model card written to {self.output_dir}"]))
        if self.training_args.push_to_hub:
            self.push()

    def push(self) -> None:
        """Upload the finished output folder once; on failure say so, keep everything local (exit 3)."""
        from ..hub import HubPushError, push_folder

        args = self.training_args
        self.trainer.wait_for_pushes()
        repo_id = getattr(self.trainer, "hub_model_id", None) or args.hub_model_id
        try:
            url = push_folder(self.output_dir, repo_id, token=args.hub_token, private=args.hub_private_repo,
                              revision=args.hub_revision)
        except HubPushError as err:
            raise RecipeError(f"{err}\nThe model, eval_results.json and README.md are still in {self.output_dir}; "
                              f"push them later with: hf upload {repo_id} {self.output_dir}", EXIT_HUB) from None
        print(f"pushed {self.output_dir} to {repo_id}: {url}")

    # ------------------------------------------------------------------ shared by the hooks
    @property
    def output_dir(self) -> str:
        return self.training_args.output_dir

    @property
    def mteb_model_name(self) -> str:
        """The name mteb files the results under: the Hub id, else ``local/<output folder>``."""
        return self.training_args.hub_model_id or f"local/{os.path.basename(os.path.abspath(self.output_dir))}"

    def mteb_tasks(self) -> list[Any]:
        """mteb tasks for the saved model: the BEIR eval split, else the dev records as a reranking
        task; plus ``--mteb_tasks``."""
        from ..evaluation import mteb_eval

        tasks = []
        if self.data_args.beir_dir:
            tasks.append(mteb_eval.beir_task(self.data_args.beir_dir, split=self.data_args.beir_eval_split))
        elif self.data.dev:
            source = self.data.dev_source
            name = "_".join(os.path.splitext(p)[0] for p in os.path.normpath(source).split(os.sep)[-2:])
            tasks.append(mteb_eval.records_task(self.data.dev, name=name, split="dev",
                                                source=display_path(source, self.repo)))
        if self.data_args.mteb_tasks:
            tasks += mteb_eval.get_tasks(self.data_args.mteb_tasks.split(","))
        return tasks

    def batching(self) -> dict[str, Any]:
        """A collator's ``micro_batch_tokens`` and ``pad_to_multiple_of``: the flags, else the hardware's
        defaults (:func:`hf_ragtrain.hardware.collator_batching`; 0 turns either off)."""
        from ..hardware import collator_batching

        return collator_batching(self.data_args.micro_batch_tokens, self.data_args.pad_to_multiple_of,
                                 self.training_args.bf16)

    def merge_lora_adapter(self, **save_options: Any) -> None:
        """Replace the saved LoRA adapter in ``output_dir`` by the merged model (``--merge_lora``)."""
        if not (self.model.is_peft and self.trainer.is_world_process_zero()):
            return
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            os.remove(os.path.join(self.output_dir, name))
        self.trainer.accelerator.unwrap_model(self.trainer.model).save_pretrained(self.output_dir, merge_lora=True,
                                                                                 **save_options)

    def card_info(self, counts: dict[str, int]) -> Any:
        """What the model card says about this run."""
        from ..hub import CardInfo

        loss_name, loss_params = self.trainer.loss_description()
        trainer = type(self.trainer).__name__
        return CardInfo(
            base_model=hub_name(self.model_args.model_name_or_path), task=self.card_task, trainer=trainer,
            loss=f"{loss_name} ({trainer})",
            loss_params={"train_group_size": self.data_args.train_group_size, **self.card_loss_params(),
                         **loss_params},
            datasets=self.data.datasets, metrics_before=self.before, metrics_after=self.after,
            mteb_results=self.mteb.results, mteb_first_stage=self.mteb.first_stage, mteb_settings=self.mteb.settings,
            notes=[*self.model_notes(), self.truncation_note(counts), self.train_dataset.stats.summary(),
                   *self.data.notes, *self.mteb.notes, describe_peak(self.peak) + "."],
            model_name=self.training_args.hub_model_id or os.path.basename(os.path.abspath(self.output_dir)),
            training_run=self.training_run(), demo=self.demo_note())

    def training_run(self) -> str:
        """One sentence for the card: how many steps and epochs, how long, on what, in what precision."""
        from ..hardware import machine_description

        state, args = self.trainer.state, self.training_args
        seconds = next((e["train_runtime"] for e in reversed(state.log_history) if "train_runtime" in e), None)
        took = f" in {minutes(seconds)}" if seconds is not None else ""
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        processes = f", {args.world_size} processes" if args.world_size > 1 else ""
        epochs, batch = state.epoch or 0, args.per_device_train_batch_size * args.world_size
        return (f"{state.global_step} optimizer steps ({epochs:g} epoch{'' if epochs == 1 else 's'}){took} on "
                f"{machine_description()}{processes}, {precision}; batch {batch} queries x "
                f"{self.data_args.train_group_size} documents.")

    def demo_note(self) -> str | None:
        """Said under the card's title when the model was trained on the bundled data only."""
        from ..data.sources import BUNDLED_SOURCE

        if not self.data.datasets or any(d.get("source") != BUNDLED_SOURCE for d in self.data.datasets
                                         if d.get("split") == "train"):
            return None
        return (f"Trained by the recipe's default job on the {len(self.data.train)} questions of the bundled Python FAQ "
                "set, to show the recipe end to end; it is not meant for real use. Train on your own data "
                "(--train_data, --beir_dir) for that.")

    def summary_lines(self) -> list[str]:
        """The console summary: the dev metrics before and after, then the mteb step's lines."""
        return [*metrics_lines(self.metrics_title, self.summary_metrics, self.before, self.after),
                *self.mteb.summary]

    # ------------------------------------------------------------------ hooks: a family or a recipe fills them in
    card_task = "reranking"
    metrics_title = "Dev metrics"
    summary_metrics: tuple[str, ...] = ("ndcg@10", "mrr@10", "map@10", "recall@10")

    def check_data(self, data: TrainingData) -> None:
        """Refuse data this recipe cannot train on (raise :class:`RecipeError`)."""

    def build_model(self) -> Any:
        """The model to train (set ``self.tokenizer`` where the trainer needs one)."""
        raise NotImplementedError

    def build_collator(self) -> Any:
        raise NotImplementedError

    def build_evaluator(self, dev: list) -> Any:
        raise NotImplementedError

    def evaluate_saved(self, tasks: list[Any]) -> MtebOutcome:
        """The mteb step: evaluate the saved folder on ``tasks`` (:mod:`hf_ragtrain.runner.mteb_steps`)."""
        raise NotImplementedError

    def trainer_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the trainer (a teacher, ...)."""
        return {}

    def finish_saving(self) -> None:
        """Anything to do to the saved folder after ``save_model`` (e.g. merge a LoRA adapter)."""

    def count_entries(self, counts: dict[str, int]) -> dict[str, int]:
        """The ``eval_results.json`` entries of the training counts (pairs or texts)."""
        raise NotImplementedError

    def truncation_note(self, counts: dict[str, int]) -> str:
        raise NotImplementedError

    def extra_results(self) -> dict[str, Any]:
        """More ``eval_results.json`` entries of this recipe's own."""
        return {}

    def card_loss_params(self) -> dict[str, Any]:
        """Settings the card lists next to the loss's own parameters."""
        return {}

    def model_notes(self) -> list[str]:
        """Card notes that describe the model, first in the card's notes."""
        return []

    def render_card(self, info: Any) -> Any:
        raise NotImplementedError
