"""The two-stage pipeline on a BEIR folder: fine-tune a retriever, train a reranker behind it,
evaluate both through mteb, in one command that resumes by stage (``recipes/train_pipeline.py``).

Stages, each in its own part of ``--output_dir``:

1. ``data``: the training queries minus ``--dev_queries`` held-out ones, with hard negatives mined by
   the base retriever (``data/``);
2. ``retriever``: the retriever fine-tuned on them (``retriever/``, ``recipes/train_embedding.py``);
3. ``fold-1`` .. ``fold-K``: with cross-fitting, a retriever for each fold, trained on the others
   (``folds/``; see :mod:`hf_ragtrain.data.cross_fit`);
4. ``candidates``: each training query's candidates scored by the retriever of the fold it is not in,
   and BM25; the first stage's weights fitted on them; the reranker's training records (with those
   first-stage scores) and dev records (``candidates/``);
5. ``reranker``: a cross-encoder whose score is its logit plus the first stage's score, head started
   at zero (``reranker/``, ``recipes/train_reranker.py``);
6. ``evaluate``: through mteb on ``--eval_split``: BM25, the retriever alone, the hybrid first
   stage, and the reranker over the first stage's top ``--top_k`` (``evaluation/``, ``report.json``,
   ``REPORT.md``, a section in both model cards).

The training stages run the recipes as subprocesses (their own memory, their own progress bars);
each command is printed so it can be run by hand. Each training stage writes checkpoints, and a
rerun after an interruption resumes from the last one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import numpy as np

from ..arguments import DataArguments, PipelineArguments
from ..data.beir import load_beir
from ..data.beir_pipeline import dev_records_from_run, split_dev_queries, subset_queries
from ..data.cross_fit import assign_folds, first_stage_records
from ..data.hybrid import HybridIndex
from ..data.mining import BM25
from ..data.records import load_records, write_jsonl_atomically, write_records
from ..data.sources import prepare_beir_rerank_data
from ..modeling.fusion import fit_fusion_weights
from ..offline import resolve_model_path
from .estimate import PipelineEstimate
from .recipe import RecipeError
from .stages import Stage, StageRunner, run_training_recipe
from .two_stage_report import evaluate_two_stage

#: The retriever's training settings (SciFact, BENCHMARKS.md); --retriever_args add to or override them.
RETRIEVER_FLAGS = ["--train_group_size", "4", "--per_device_train_batch_size", "32", "--num_train_epochs", "3",
                   "--learning_rate", "5e-5", "--no_mteb_eval", "--logging_steps", "4"]
#: The reranker's training settings; --reranker_args add to or override them.
RERANKER_FLAGS = ["--num_train_epochs", "2", "--no_mteb_eval", "--logging_steps", "10"]


class TwoStagePipeline:
    """The stages of the module docstring, over ``args``; ``recipes_dir`` holds the training recipes."""

    def __init__(self, args: PipelineArguments, recipes_dir: str, echo=print):
        self.args, self.recipes_dir, self.echo = args, recipes_dir, echo
        self.out = args.output_dir
        self.estimate: PipelineEstimate | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    # ------------------------------------------------------------------ the plan
    def stages(self) -> list[Stage]:
        a = self.args
        common = {"beir_dir": os.path.abspath(a.beir_dir), "train_split": a.train_split, "seed": a.seed}
        est = self.estimate or PipelineEstimate.unknown()
        stages = [
            Stage("data", "hold out dev queries and mine the retriever's hard negatives", self.make_data,
                  {**common, "dev_queries": a.dev_queries, "retriever_model": a.retriever_model}, ["data"],
                  est.data),
            Stage("retriever", "fine-tune the retriever", lambda: self.train_retriever("retriever", "train.jsonl"),
                  {"retriever_args": a.retriever_args}, ["retriever"], est.retriever),
        ]
        for k in range(1, a.folds + 1):
            stages.append(Stage(f"fold-{k}", f"fine-tune the retriever of fold {k}/{a.folds} (cross-fitting)",
                                lambda k=k: self.train_retriever(os.path.join("folds", f"fold-{k}"), f"fold-{k}.jsonl"),
                                {"retriever_args": a.retriever_args, "folds": a.folds}, [os.path.join("folds", f"fold-{k}")],
                                est.fold))
        stages += [
            Stage("candidates", "score the reranker's candidates with the first stage and fit its weights",
                  self.make_candidates, {"folds": a.folds, "top_k": a.top_k, "num_negatives": a.num_negatives,
                                         "bm25": a.bm25, "bm25_language": a.bm25_language}, ["candidates"],
                  est.candidates),
            Stage("reranker", "train the reranker behind the first stage", self.train_reranker,
                  {"reranker_model": a.reranker_model, "reranker_args": a.reranker_args}, ["reranker"], est.reranker),
        ]
        if a.eval_split.lower() != "none":
            stages.append(Stage("evaluate", f"evaluate on {a.eval_split} through mteb", self.evaluate,
                                {"eval_split": a.eval_split, "top_k": a.top_k}, ["evaluation", "report.json",
                                                                                 "REPORT.md"], est.evaluate))
        return stages

    def run(self) -> dict[str, Any]:
        """Run the stages that have not finished; returns the timings (and the report when evaluated)."""
        names = {s.name for s in self.stages()}
        unknown = sorted(set(self.args.redo) - names)
        if unknown:
            raise RecipeError(f"--redo {' '.join(unknown)}: no such stage; the stages are {', '.join(sorted(names))}")
        self.check_inputs()
        os.makedirs(self.out, exist_ok=True)
        self.estimate = PipelineEstimate.measure(self.args)
        runner = StageRunner(self.out, redo=self.args.redo, echo=self.echo)
        start = time.time()
        timings = runner.run(self.stages())
        report = self.final_report()
        self.echo(f"\npipeline finished in {(time.time() - start) / 60:.1f} min; outputs in {self.out}")
        return {"stages": timings, "report": report}

    def final_report(self) -> dict[str, Any] | None:
        """The report of the evaluation stage with every stage's time, printed; ``None`` without one."""
        from .two_stage_report import markdown, write_report

        path = self.path("report.json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as fh:
            report = write_report(self.out, json.load(fh))
        self.echo("\n" + markdown(report))
        return report

    def check_inputs(self) -> None:
        """Refuse, before any work, a BEIR folder that lacks what a stage will read, and models that are not there."""
        from ..data.errors import DataFormatError

        a = self.args
        splits = [a.train_split] + ([a.eval_split] if a.eval_split.lower() != "none" else [])
        for split in splits:
            try:
                load_beir(a.beir_dir, split=split)
            except (DataFormatError, FileNotFoundError, ValueError) as err:
                raise RecipeError(f"--beir_dir {a.beir_dir} (split {split}): {err}") from None
        for flag, model in (("--retriever_model", a.retriever_model), ("--reranker_model", a.reranker_model)):
            try:
                resolve_model_path(model)
            except (FileNotFoundError, OSError) as err:
                raise RecipeError(f"{flag}: {err}") from None

    # ------------------------------------------------------------------ stages
    def make_data(self) -> None:
        """Training records (mined by the base retriever), dev records and the query split."""
        a = self.args
        data_args = DataArguments(beir_dir=a.beir_dir, beir_train_split=a.train_split, beir_dev_queries=a.dev_queries,
                                  first_stage_model=a.retriever_model)
        data = prepare_beir_rerank_data(data_args, seed=a.seed)
        if not data.dev:
            raise RecipeError(f"{a.beir_dir}: no dev query left after holding out {a.dev_queries}; lower --dev_queries")
        write_records(data.dev, self.path("data", "dev.jsonl"))
        folds = assign_folds([r.query_id for r in data.train], a.folds, a.seed) if a.folds else {}
        for k in range(1, a.folds + 1):  # fold k's retriever trains on the other folds
            write_records([r for r in data.train if folds[r.query_id] != k - 1], self.path("data", f"fold-{k}.jsonl"))
        write_records(data.train, self.path("data", "train.jsonl"))
        split = {"dev": sorted(r.query_id for r in data.dev), "folds": folds, "mining": data.mining}
        write_jsonl_atomically(self.path("data", "split.jsonl"), [split])
        self.echo(f"{len(data.train)} training queries, {len(data.dev)} dev queries"
                  + (f", dealt into {a.folds} folds" if a.folds else ""))

    def train_retriever(self, folder: str, records: str) -> None:
        """``recipes/train_embedding.py`` on ``data/<records>``, saved to ``<folder>``."""
        self.run_recipe("train_embedding.py", folder, [
            "--model_name_or_path", self.args.retriever_model, "--train_data", self.path("data", records),
            "--eval_data", self.path("data", "dev.jsonl"), *RETRIEVER_FLAGS], self.args.retriever_args)

    def train_reranker(self) -> None:
        weights = self.first_stage_weights()
        flags = ["--model_name_or_path", self.args.reranker_model, "--train_data", self.path("candidates", "train.jsonl"),
                 "--eval_data", self.path("candidates", "dev.jsonl"), "--first_stage_model", self.path("retriever"),
                 "--first_stage_weight", repr(weights["dense_weight"]), *RERANKER_FLAGS]
        if weights["bm25_weight"]:
            flags += ["--first_stage_bm25", self.path("candidates", "bm25.json"),
                      "--first_stage_bm25_weight", repr(weights["bm25_weight"])]
        self.run_recipe("train_reranker.py", "reranker", flags, self.args.reranker_args)

    def run_recipe(self, script: str, folder: str, flags: list[str], extra: str) -> None:
        """Run a training recipe into ``folder``, resuming from its last checkpoint when there is one."""
        run_training_recipe(os.path.join(self.recipes_dir, script), self.path(folder), self.args.seed, flags, extra,
                            self.echo)

    # ------------------------------------------------------------------ candidates
    def make_candidates(self) -> None:
        """Cross-fitted candidates and features of the training queries, the fitted first-stage weights,
        the reranker's training and dev records, and the corpus's BM25 statistics."""
        a = self.args
        data = load_beir(a.beir_dir, split=a.train_split)
        doc_ids, texts = list(data.corpus), list(data.doc_texts().values())
        train, _ = load_records(self.path("data", "train.jsonl"))
        with open(self.path("data", "split.jsonl"), encoding="utf-8") as fh:
            split = json.loads(fh.readline())
        dev_ids, folds = split["dev"], split["folds"]
        position = {d: i for i, d in enumerate(doc_ids)}
        bm25 = BM25(texts, language=self.language)  # the same for every retriever: built once
        features = {}
        for k, model in self.fold_models():
            qids = [r.query_id for r in train if not folds or folds[r.query_id] == k]
            index = HybridIndex(model, texts, bm25=bm25)
            judged = [[position[d] for d, g in data.qrels[q].items() if g > 0 and d in position] for q in qids]
            features.update(zip(qids, index.features([data.queries[q] for q in qids], a.top_k, judged)))
        weights = self.fit_weights(features, data.qrels, doc_ids)
        rows, counts = first_stage_records(data.queries, data.qrels, features, doc_ids, texts,
                                           weights["dense_weight"], weights["bm25_weight"], a.num_negatives, a.top_k)
        write_records(rows, self.path("candidates", "train.jsonl"))
        full = HybridIndex(resolve_model_path(self.path("retriever")), texts, bm25=bm25)
        bm25.stats().save(self.path("candidates", "bm25.json"))
        dev = subset_queries(data, dev_ids)
        scores, idx = full.search([dev.queries[q] for q in dev_ids], a.top_k, weights["dense_weight"],
                                  weights["bm25_weight"])
        run = {q: {doc_ids[j]: float(s) for s, j in zip(scores[i], idx[i])} for i, q in enumerate(dev_ids)}
        write_records(dev_records_from_run(dev, run), self.path("candidates", "dev.jsonl"))
        weights["records"] = counts.as_dict()
        write_jsonl_atomically(self.path("candidates", "first_stage.jsonl"), [weights])
        self.echo(f"first stage: {weights['formula']}; on the training queries (cross-fitted) nDCG@10 "
                  + ", ".join(f"{k} {v:.4f}" for k, v in weights["train_ndcg@10"].items()))

    @property
    def language(self) -> str | None:
        """BM25's stemming language, ``None`` for none."""
        return None if self.args.bm25_language.lower() == "none" else self.args.bm25_language

    def fold_models(self) -> list[tuple[int, str]]:
        """``(fold, retriever folder)``: each fold's own retriever, or the final one for every query."""
        if not self.args.folds:
            return [(0, self.path("retriever"))]
        return [(k - 1, self.path("folds", f"fold-{k}")) for k in range(1, self.args.folds + 1)]

    def fit_weights(self, features: dict, qrels: dict, doc_ids: Sequence[str]) -> dict[str, Any]:
        """The first stage's weights, fitted on the training queries' cross-fitted candidates (dense
        only without ``--bm25``), and the nDCG@10 of each signal on those queries."""
        from ..evaluation.metrics import ranking_metrics

        qids = list(features)
        relevant = [np.array([qrels[q].get(doc_ids[j], 0) > 0 for j in features[q].index]) for q in qids]
        columns = (lambda c: np.stack([c.dense, c.bm25], 1)) if self.args.bm25 else (lambda c: c.dense[:, None])
        fitted = fit_fusion_weights([columns(features[q]) for q in qids], relevant)
        dense_weight, bm25_weight = float(fitted[0]), float(fitted[1]) if self.args.bm25 else 0.0
        if dense_weight <= 0:
            raise RecipeError(f"the retriever's cosine got weight {dense_weight:.4g} in the fit on the training queries: "
                              "it does not rank them; check the retriever stage's dev figures")
        bm25_weight = max(bm25_weight, 0.0)  # a negative fit means BM25 does not help: leave it out
        judged = {q: qrels[q] for q in qids}

        def ndcg(score) -> float:
            run = {q: {doc_ids[j]: float(s) for j, s in zip(features[q].index, score(features[q]))} for q in qids}
            return ranking_metrics(run, judged, k_values=(10,))["ndcg@10"]

        signals = {"retriever": ndcg(lambda c: c.dense), "bm25": ndcg(lambda c: c.bm25),
                   "first stage": ndcg(lambda c: c.fused(dense_weight, bm25_weight))}
        formula = f"{dense_weight:.4g} * cosine" + (f" + {bm25_weight:.4g} * BM25" if bm25_weight else "")
        return {"dense_weight": dense_weight, "bm25_weight": bm25_weight, "formula": formula,
                "train_ndcg@10": signals, "queries": len(qids), "cross_fitted": bool(self.args.folds)}

    def first_stage_weights(self) -> dict[str, Any]:
        with open(self.path("candidates", "first_stage.jsonl"), encoding="utf-8") as fh:
            return json.loads(fh.readline())

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> None:
        evaluate_two_stage(self, self.first_stage_weights())
