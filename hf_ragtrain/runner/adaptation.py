"""Adapt an embedder and a reranker to a domain from its documents alone (``recipes/adapt.py``).

Stages, each in its own part of ``--output_dir`` and resumable (:mod:`hf_ragtrain.runner.stages`):

1. ``queries`` (``data/``, ``queries/``): the corpus as passages (``data/corpus.jsonl``); inverse-cloze
   queries (:mod:`hf_ragtrain.data.inverse_cloze`) and questions written by a chat model
   (:mod:`hf_ragtrain.modeling.question_writer`), few-shot from the user's queries or the corpus's titles;
2. ``filter`` (``filter/``): the base hybrid first stage (the base embedder's cosine plus BM25, weights
   fitted on the generated queries), the round-trip consistency filter
   (:mod:`hf_ragtrain.data.consistency`), and the held-out queries (half to fit the adapted first
   stage, half to evaluate);
3. ``negatives`` (``negatives/``): hard negatives from the base hybrid first stage, likely false
   negatives skipped (:mod:`hf_ragtrain.data.generated_records`); the user's queries and labelled
   records join here;
4. ``teacher`` (``teacher/``): every (query, passage) pair scored by the teacher (the base hybrid; the
   base hybrid plus a chat model's query likelihood, :mod:`hf_ragtrain.modeling.query_likelihood`; or
   the user's reranker), resumable pair by pair (:func:`hf_ragtrain.scoring.score_records`);
5. ``embedder`` (``embedder_trained/``, ``embedder/``): the embedder trained by score distillation
   (per-query KL) plus InfoNCE on the generated positives (``recipes/train_embedding.py``), then its
   weights averaged with the base embedder's (:mod:`hf_ragtrain.modeling.merge`);
6. ``reranker``: a cross-encoder whose score is its logit plus the adapted hybrid first stage's
   score, trained on the same records (``recipes/train_reranker.py``; ``recipes/distill_reranker.py``
   on the scores of the query-likelihood teacher or a user's);
7. ``evaluate``: the held-out generated queries always, ``--eval_beir`` through mteb when given
   (:mod:`hf_ragtrain.runner.adapt_report`).
"""

from __future__ import annotations

import os
import random
import shutil
from typing import Any, Callable, Sequence

import numpy as np

from ..arguments import AdaptArguments
from ..data.consistency import round_trip_filter, source_ranks
from ..data.documents import Corpus, load_corpus
from ..data.generated import GeneratedQuery, count_by, load_queries_file, read_generated, write_generated
from ..data.generated_records import mine_generated
from ..data.hybrid import HybridIndex
from ..data.inverse_cloze import inverse_cloze_queries
from ..data.records import load_records, write_jsonl_atomically, write_records
from ..modeling.fusion import fit_fusion_weights
from ..modeling.merge import MergeError, merge_with_base
from ..offline import resolve_model_path
from .recipe import RecipeError
from .stages import Stage, StageRunner, read_json, run_training_recipe, write_json

#: The embedder's training settings (chosen on SciFact train queries used as dev, BENCHMARKS.md).
EMBEDDER_FLAGS = ["--train_group_size", "4", "--per_device_train_batch_size", "32", "--num_train_epochs", "1",
                  "--learning_rate", "5e-5", "--no_mteb_eval", "--logging_steps", "10"]
#: The reranker's training settings.
RERANKER_FLAGS = ["--num_train_epochs", "1", "--train_group_size", "4", "--no_mteb_eval", "--logging_steps", "10"]
#: Where the embedder stage's training writes; ``embedder/`` is these weights averaged with the base model's.
TRAINED_EMBEDDER = "embedder_trained"
#: ``--teacher`` value of the base hybrid plus a chat model's query likelihood.
QL_TEACHER = "hybrid+ql"
#: Pairs the teacher scores between two writes of its cache (an interrupted stage resumes from there).
TEACHER_CHUNK_PAIRS = 1024


def default_recipes_dir() -> str:
    """The ``recipes/`` folder of the checkout the package runs from."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "recipes")


class DomainAdaptation:
    """The stages of the module docstring over ``args``; ``recipes_dir`` holds the training recipes."""

    def __init__(self, args: AdaptArguments, recipes_dir: str | None = None, echo: Callable[[str], None] = print):
        self.args, self.echo = args, echo
        self.recipes_dir = recipes_dir or default_recipes_dir()
        self.out = args.output_dir
        self._corpus: Corpus | None = None
        self._index: HybridIndex | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    @property
    def language(self) -> str | None:
        return None if self.args.bm25_language.lower() == "none" else self.args.bm25_language

    # ------------------------------------------------------------------ the plan
    def stages(self) -> list[Stage]:
        a = self.args
        generation = {"corpus": os.path.abspath(a.corpus), "max_words": a.max_words, "ict_queries": a.ict_queries,
                      "llm_queries": a.llm_queries, "generator_model": a.generator_model, "few_shot": a.few_shot,
                      "queries": a.queries and os.path.abspath(a.queries), "seed": a.seed}
        stages = [
            Stage("queries", "cut passages and generate queries from them", self.generate, generation,
                  ["data", "queries"]),
            Stage("filter", "fit the base hybrid first stage and filter queries by round trip", self.filter,
                  {"embedder_model": a.embedder_model, "filter_top_k": a.filter_top_k, "top_k": a.top_k,
                   "heldout_queries": a.heldout_queries, "bm25_language": a.bm25_language}, ["filter"]),
            Stage("negatives", "mine hard negatives, skipping likely false negatives", self.mine,
                  {"num_negatives": a.num_negatives, "train_data": a.train_data and os.path.abspath(a.train_data)},
                  ["negatives"]),
            Stage("teacher", "score every pair with the teacher", self.label,
                  {"teacher": a.teacher, **({"ql_model": a.ql_model, "ql_weight": a.ql_weight}
                                            if a.teacher == QL_TEACHER else {})}, ["teacher"]),
            Stage("embedder", "train the embedder (score distillation), average it with the base one",
                  self.train_embedder, {"embedder_args": a.embedder_args, "embedder_base_share": a.embedder_base_share},
                  [TRAINED_EMBEDDER, "embedder"]),
            Stage("reranker", "train the reranker behind the adapted first stage", self.train_reranker,
                  {"reranker_model": a.reranker_model, "reranker_args": a.reranker_args}, ["reranker"]),
            Stage("evaluate", "evaluate on held-out generated queries" + (" and --eval_beir" if a.eval_beir else ""),
                  self.evaluate, {"eval_beir": a.eval_beir and os.path.abspath(a.eval_beir),
                                  "eval_split": a.eval_split, "rerank_top_k": a.rerank_top_k},
                  ["evaluation", "report.json", "REPORT.md"]),
        ]
        return stages

    def run(self, until: str | None = None) -> dict[str, Any]:
        """Run the stages that have not finished (up to and including ``until``); returns the timings and
        the report when the last stage ran."""
        names = [s.name for s in self.stages()]
        unknown = sorted(set(self.args.redo) - set(names)) + ([until] if until and until not in names else [])
        if unknown:
            raise RecipeError(f"no such stage: {', '.join(unknown)}; the stages are {', '.join(names)}")
        self.check_inputs()
        os.makedirs(self.out, exist_ok=True)
        stages = self.stages()
        if until:
            stages = stages[:names.index(until) + 1]
        timings = StageRunner(self.out, redo=self.args.redo, echo=self.echo).run(stages)
        report = None
        if os.path.isfile(self.path("report.json")):
            from .adapt_report import markdown, write_report

            report = write_report(self.out, read_json(self.path("report.json")))
            self.echo("\n" + markdown(report))
        return {"stages": timings, "report": report}

    def check_inputs(self) -> None:
        """Refuse, before any work, inputs that are not there."""
        a = self.args
        for flag, value in (("--corpus", a.corpus), ("--queries", a.queries), ("--train_data", a.train_data),
                            ("--eval_beir", a.eval_beir)):
            if value and not os.path.exists(value):
                raise RecipeError(f"{flag} {value}: no such file or folder")
        from ..data.errors import DataFormatError

        try:
            self.documents = load_corpus(a.corpus, max_words=a.max_words)
            self.user_queries = load_queries_file(a.queries) if a.queries else []
            if a.train_data:
                load_records(a.train_data)
            if a.eval_beir:
                from ..data.beir import load_beir

                load_beir(a.eval_beir, split=a.eval_split)
        except (DataFormatError, FileNotFoundError, ValueError) as err:
            raise RecipeError(str(err)) from None
        models = [("--embedder_model", a.embedder_model), ("--reranker_model", a.reranker_model)]
        if a.llm_queries and a.generator_model.lower() != "none":
            models.append(("--generator_model", a.generator_model))
        if a.teacher == QL_TEACHER:
            models.append(("--ql_model", a.ql_model))
        elif a.teacher != "hybrid":
            models.append(("--teacher", a.teacher))
        for flag, model in models:
            try:
                resolve_model_path(model)
            except (FileNotFoundError, OSError) as err:
                raise RecipeError(f"{flag}: {err}") from None

    # ------------------------------------------------------------------ shared state
    def corpus(self) -> Corpus:
        """The passages the ``queries`` stage wrote."""
        if self._corpus is None:
            self._corpus = load_corpus(self.path("data", "corpus.jsonl"))
        return self._corpus

    def base_index(self) -> HybridIndex:
        """The base embedder and BM25 over the corpus (vectors saved by the ``filter`` stage)."""
        if self._index is None:
            cache = self.path("filter", "base_vectors.npy")
            vectors = np.load(cache) if os.path.isfile(cache) else None
            self._index = HybridIndex(resolve_model_path(self.args.embedder_model), self.corpus().full_texts(),
                                      vectors=vectors, bm25_language=self.language)
            if vectors is None:
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                np.save(cache, self._index.vectors)
        return self._index

    def base_weights(self) -> dict[str, Any]:
        return read_json(self.path("filter", "first_stage.json"))

    # ------------------------------------------------------------------ 1. queries
    def generate(self) -> None:
        from .adapt_queries import make_queries

        a = self.args
        corpus = self.documents
        self.echo(corpus.describe())
        write_jsonl_atomically(self.path("data", "corpus.jsonl"),
                               ({"_id": i, "title": t, "text": x} for i, t, x in zip(corpus.ids, corpus.titles,
                                                                                     corpus.texts)))
        user = self.user_queries
        queries, counts = make_queries(corpus, a, user, self.echo)
        write_generated(queries, self.path("queries", "generated.jsonl"))
        write_jsonl_atomically(self.path("queries", "user.jsonl"), ({"text": q} for q in user))
        counts["passages"], counts["skipped_files"] = len(corpus), corpus.skipped
        write_json(self.path("queries", "counts.json"), counts)
        self.echo(f"{len(queries)} generated queries: " + ", ".join(f"{g} {n}" for g, n in count_by(queries).items()))

    # ------------------------------------------------------------------ 2. filter
    def filter(self) -> None:
        a = self.args
        queries = read_generated(self.path("queries", "generated.jsonl"))
        if not queries:
            raise RecipeError(f"{self.path('queries', 'generated.jsonl')}: no query was generated; see the counts in "
                              f"{self.path('queries', 'counts.json')}")
        index, corpus = self.base_index(), self.corpus()
        weights = fit_generated_weights(index, queries, corpus.ids, a.top_k)
        write_json(self.path("filter", "first_stage.json"), weights)
        self.echo(f"base first stage: {weights['formula']} (fitted on {weights['queries']} generated queries)")
        position = {d: i for i, d in enumerate(corpus.ids)}
        ranks = source_ranks(index, queries, position, weights["dense_weight"], weights["bm25_weight"])
        kept, counts = round_trip_filter(queries, ranks, a.filter_top_k)
        self.echo(f"round-trip filter (source passage in the top {a.filter_top_k}): {counts.describe()}")
        train, dev, test = split_heldout(kept, a.heldout_queries, a.seed)
        if not train:
            raise RecipeError(f"no training query left: {len(kept)} queries passed the filter and "
                              f"{a.heldout_queries} are held out; lower --heldout_queries or raise --filter_top_k")
        for name, part in (("train", train), ("dev", dev), ("eval", test)):
            write_generated(part, self.path("filter", f"{name}.jsonl"))
        index.bm25.stats().save(self.path("filter", "bm25.json"))
        write_json(self.path("filter", "counts.json"), {
            "filter_top_k": a.filter_top_k, "by_generator": counts.as_dict(),
            "source_rank_at_most": {str(k): int((ranks <= k).sum()) for k in (1, 5, 10, 20, 50)},
            "queries": len(queries), "train": len(train), "dev": len(dev), "eval": len(test)})
        self.echo(f"{len(train)} training queries, {len(dev)} dev (fit the adapted first stage), {len(test)} eval")

    # ------------------------------------------------------------------ 3. negatives
    def mine(self) -> None:
        from .adapt_queries import labelled_records, user_query_records

        a = self.args
        index, corpus, w = self.base_index(), self.corpus(), self.base_weights()
        texts = corpus.full_texts()
        counts = {}
        for name in ("train", "dev"):
            queries = read_generated(self.path("filter", f"{name}.jsonl"))
            rows, mined = mine_generated(index, queries, corpus.ids, texts, w["dense_weight"], w["bm25_weight"],
                                         a.top_k, a.num_negatives, skip_false_negatives=name == "train")
            if name == "train":
                rows += user_query_records(self, counts)
                rows += labelled_records(self, counts)
            write_records(rows, self.path("negatives", f"{name}.jsonl"))
            counts[name] = mined.as_dict()
            self.echo(f"{name}: {mined.describe()}")
        write_json(self.path("negatives", "counts.json"), counts)

    # ------------------------------------------------------------------ 4. teacher
    def label(self) -> None:
        from ..scoring import HybridTeacher, PlusQueryLikelihood, RerankerTeacher, score_records
        from .adapt_queries import drop_teacher_false_negatives

        a = self.args
        if a.teacher in ("hybrid", QL_TEACHER):
            w = self.base_weights()
            records, _ = load_records(self.path("negatives", "train.jsonl"))
            self.base_index().encode_texts([r.query for r in records], [d for r in records for d in [*r.pos, *r.neg]])
            teacher = HybridTeacher(self.base_index(), w["dense_weight"], w["bm25_weight"],
                                    name=f"hybrid:{a.embedder_model}:{w['formula']}")
            if a.teacher == QL_TEACHER:
                from ..modeling.query_likelihood import QueryLikelihood

                teacher = PlusQueryLikelihood(teacher, QueryLikelihood(a.ql_model), a.ql_weight)
        else:
            teacher = RerankerTeacher(resolve_model_path(a.teacher))
        os.makedirs(self.path("teacher"), exist_ok=True)
        stats = score_records(self.path("negatives", "train.jsonl"), self.path("teacher", "scored.jsonl"), teacher,
                              cache_path=self.path("teacher", "cache.jsonl"), chunk_pairs=TEACHER_CHUNK_PAIRS)
        self.echo(f"teacher {teacher.name}: {stats.summary()}")
        dropped = drop_teacher_false_negatives(self.path("teacher", "scored.jsonl"), self.path("teacher", "train.jsonl"))
        write_json(self.path("teacher", "counts.json"), {"teacher": teacher.name, **stats.__dict__, **dropped})
        self.echo(f"negatives the teacher scores above the query's positive (dropped): {dropped['dropped_negatives']}; "
                  f"records left without a negative (dropped): {dropped['dropped_records']}")

    # ------------------------------------------------------------------ 5-6. training
    def train_embedder(self) -> None:
        """Train into ``embedder_trained/``, then write ``embedder/``: those weights averaged with the base
        embedder's (``--embedder_base_share``; a plain copy at 0)."""
        a = self.args
        flags = ["--model_name_or_path", a.embedder_model, "--train_data", self.path("teacher", "train.jsonl"),
                 "--eval_data", self.path("negatives", "dev.jsonl"), *EMBEDDER_FLAGS]
        run_training_recipe(os.path.join(self.recipes_dir, "train_embedding.py"), self.path(TRAINED_EMBEDDER),
                            a.seed, flags, a.embedder_args, self.echo)
        if a.embedder_base_share == 0:
            shutil.rmtree(self.path("embedder"), ignore_errors=True)
            shutil.copytree(self.path(TRAINED_EMBEDDER), self.path("embedder"))
            return
        try:
            merged = merge_with_base(self.path(TRAINED_EMBEDDER), resolve_model_path(a.embedder_model),
                                     self.path("embedder"), a.embedder_base_share)
        except MergeError as err:
            raise RecipeError(f"{err}; or run again with --embedder_base_share 0 --redo embedder") from None
        write_json(self.path("embedder", "averaging.json"), {**merged, "trained": TRAINED_EMBEDDER,
                                                             "base": a.embedder_model})
        self.echo(f"embedder/: the trained weights ({TRAINED_EMBEDDER}/) averaged with {a.embedder_model}'s, base "
                  f"share {a.embedder_base_share:g} ({merged['parameters']:,} parameters in {merged['tensors']} "
                  "tensors)")

    def train_reranker(self) -> None:
        """The reranker behind the adapted first stage, whose weights are fitted on the dev queries."""
        a = self.args
        dev = read_generated(self.path("filter", "dev.jsonl"))
        index = HybridIndex(self.path("embedder"), self.corpus().full_texts(), bm25=self.base_index().bm25)
        try:
            weights = fit_generated_weights(index, dev, self.corpus().ids, a.top_k)
            self.echo(f"adapted first stage: {weights['formula']} (fitted on {len(dev)} held-out generated queries)")
        except RecipeError as err:
            weights = {**self.base_weights(), "fallback": str(err)}
            self.echo(f"warning: {err}; the adapted first stage takes the base one's weights, {weights['formula']}")
        write_json(self.path("embedder", "first_stage.json"), weights)
        script = "train_reranker.py" if a.teacher == "hybrid" else "distill_reranker.py"
        flags = ["--model_name_or_path", a.reranker_model, "--train_data", self.path("teacher", "train.jsonl"),
                 "--eval_data", self.path("negatives", "dev.jsonl"), "--first_stage_model", self.path("embedder"),
                 "--first_stage_weight", repr(weights["dense_weight"]), *RERANKER_FLAGS]
        if weights["bm25_weight"]:
            flags += ["--first_stage_bm25", self.path("filter", "bm25.json"),
                      "--first_stage_bm25_weight", repr(weights["bm25_weight"])]
        run_training_recipe(os.path.join(self.recipes_dir, script), self.path("reranker"), a.seed, flags,
                            a.reranker_args, self.echo)

    # ------------------------------------------------------------------ 7. evaluation
    def evaluate(self) -> None:
        from .adapt_report import evaluate_adaptation

        evaluate_adaptation(self)


def fit_generated_weights(index: HybridIndex, queries: Sequence[GeneratedQuery], doc_ids: Sequence[str],
                          top_k: int) -> dict[str, Any]:
    """``dense_weight * cosine + bm25_weight * BM25`` fitted (listwise, :func:`fit_fusion_weights`) so that
    each generated query's positive text ranks first among its candidates (its source passage left out)."""
    position = {d: i for i, d in enumerate(doc_ids)}
    candidates = index.features([q.text for q in queries], top_k)
    dense, lexical = index.pair_features([q.text for q in queries], [q.positive for q in queries])
    features, relevant = [], []
    for query, c, d, b in zip(queries, candidates, dense, lexical):
        others = c.index != position[query.doc_id]
        features.append(np.concatenate([np.stack([c.dense[others], c.bm25[others]], 1), [[d, b]]]))
        relevant.append(np.r_[np.zeros(int(others.sum()), dtype=bool), True])
    fitted = fit_fusion_weights(features, relevant)
    dense_weight, bm25_weight = float(fitted[0]), max(float(fitted[1]), 0.0)
    if dense_weight <= 0:
        raise RecipeError(f"the embedder's cosine got weight {dense_weight:.4g} in the fit on {len(queries)} generated "
                          "queries: it does not rank them; check the generated queries in queries/generated.jsonl")
    formula = f"{dense_weight:.4g} * cosine" + (f" + {bm25_weight:.4g} * BM25" if bm25_weight else "")
    return {"dense_weight": dense_weight, "bm25_weight": bm25_weight, "formula": formula, "queries": len(queries)}


def split_heldout(queries: Sequence[GeneratedQuery], heldout: int, seed: int
                  ) -> tuple[list[GeneratedQuery], list[GeneratedQuery], list[GeneratedQuery]]:
    """``(train, dev, eval)``: ``heldout`` queries drawn with ``seed``, half dev and half eval; no source
    passage is in two parts (the held-out queries' passages stay in the corpus as everyone's)."""
    rng = random.Random(seed)
    sources = sorted({q.doc_id for q in queries})
    rng.shuffle(sources)
    by_source: dict[str, list[GeneratedQuery]] = {}
    for q in queries:
        by_source.setdefault(q.doc_id, []).append(q)
    held: list[GeneratedQuery] = []
    while sources and len(held) < heldout:
        held += by_source[sources.pop()]
    held_ids = {q.query_id for q in held}
    half = len(held) // 2
    return [q for q in queries if q.query_id not in held_ids], held[:half], held[half:]


# ---------------------------------------------------------------------- the Python API
def _stage(name: str) -> Callable[..., dict[str, Any]]:
    def run(args: AdaptArguments, recipes_dir: str | None = None, echo: Callable[[str], None] = print
            ) -> dict[str, Any]:
        return DomainAdaptation(args, recipes_dir, echo).run(until=name)

    run.__name__ = name
    run.__doc__ = (f"Run the adaptation in ``args.output_dir`` up to and including its ``{name}`` stage (finished "
                   "stages are skipped); returns the timings.")
    return run


generate_queries = _stage("queries")
filter_queries = _stage("filter")
mine_negatives = _stage("negatives")
label_pairs = _stage("teacher")
train_adapted_embedder = _stage("embedder")
train_adapted_reranker = _stage("reranker")


def adapt(args: AdaptArguments, recipes_dir: str | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Every stage (finished ones skipped): the adapted embedder in ``embedder/``, the reranker in
    ``reranker/``, the report in ``report.json`` / ``REPORT.md``; returns the timings and the report."""
    return DomainAdaptation(args, recipes_dir, echo).run()
