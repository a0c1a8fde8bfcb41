"""The mteb step of each model family: evaluate the *saved* folder (what users load) on a run's
tasks, with results written in mteb's layout under ``OUTPUT_DIR/mteb``.

- :func:`reranker_mteb`: a reranker (cross-encoder or LLM) the way it is used: reranking tasks
  as they are, retrieval tasks two-stage (a first stage retrieves ``--rerank_top_k``, the reranker
  reorders them), next to the first stage's own scores.
- :func:`embedder_mteb`: a bi-encoder's retrieval, and every ``--matryoshka_dims`` dimension on
  the same vectors.
- :func:`sparse_mteb`: a SPLADE model's inverted-index retrieval, alone and fused with a dense retriever.
- :func:`colbert_mteb`: brute-force MaxSim retrieval over the corpus, or MaxSim reranking.
"""

from __future__ import annotations

import os
from typing import Any

from ..evaluation import mteb_eval
from .recipe import MtebOutcome


def _precision(recipe: Any) -> dict[str, str]:
    return {"precision": "bf16 autocast" if recipe.training_args.bf16 else "fp32"}


#: how each kind of mteb task is scored, said in the console table (a dev set is a reranking task: its own
#: candidates, where the in-training dev figures retrieve from all the dev documents)
HOW = {"Retrieval": "retrieval over the whole corpus", "Reranking": "reranking each query's candidates"}


def summary_table(*rows: tuple[str, dict[str, Any]]) -> list[str]:
    """The console table of the mteb step, the same for every family: for each task and split of ``rows``
    (``(label, {task: TaskScores})``; label ``""`` is the model itself) a heading that says how it was scored,
    then one line per label with nDCG@10, MRR@10 and Recall@100."""
    tasks: dict[tuple[str, str, str], list[tuple[str, dict[str, float]]]] = {}
    for label, results in rows:
        for task, scores in results.items():
            for split, m in scores.metrics.items():
                how = HOW.get(scores.task_type, scores.task_type)
                tasks.setdefault((task, split, how), []).append((label or "this model", m))
    lines = []
    for (task, split, how), entries in tasks.items():
        lines += ["", f"mteb {task} ({split}): {how}", f"  {'':<24} {'nDCG@10':>8} {'MRR@10':>8} {'R@100':>8}"]
        lines += [f"  {label:<24} {m['ndcg_at_10']:>8.4f} {m['mrr_at_10']:>8.4f} "
                  f"{m.get('recall_at_100', float('nan')):>8.4f}" for label, m in entries]
    return lines


def reranker_mteb(recipe: Any, tasks: list[Any]) -> MtebOutcome:
    """Two-stage evaluation of the saved reranker beside its first stage (on reranking tasks: the first
    stage ranking the same candidates); the first stage is the one the BEIR data was mined with, else
    ``--first_stage_model`` (``none``: reranking tasks only, with nothing to compare)."""
    from ..data.mining import load_encoder
    from ..offline import resolve_model_path

    data_args, max_length = recipe.data_args, recipe.model_args.max_length
    first_stage = recipe.data.first_stage
    if first_stage is None and data_args.first_stage_model.lower() != "none":
        first_stage = load_encoder(resolve_model_path(data_args.first_stage_model))
    out = mteb_eval.evaluate_saved_reranker(
        recipe.output_dir, tasks, first_stage=first_stage, top_k=data_args.rerank_top_k,
        output_folder=os.path.join(recipe.output_dir, "mteb"), name=recipe.mteb_model_name, max_length=max_length,
        bf16=recipe.training_args.bf16, first_stage_name=f"local/{os.path.basename(data_args.first_stage_model)}")
    settings: dict[str, Any] = {"max_length": max_length}
    if out["first_stage"]:  # say which retriever supplied the candidates, or ranked them to compare
        settings["first_stage_model"] = data_args.first_stage_model
    if any(t.metadata.type != "Reranking" for t in tasks):
        settings["top_k"] = data_args.rerank_top_k
    return MtebOutcome(
        results=out["reranked"], first_stage=out["first_stage"], settings=settings,
        json={"mteb": mteb_eval.scores_as_dict(out["reranked"]),
              "mteb_first_stage": mteb_eval.scores_as_dict(out["first_stage"]),
              "mteb_settings": {**settings, "pairs": out["pairs"], "pairs_truncated": out["pairs_truncated"]}},
        notes=[f"mteb evaluation: {out['pairs_truncated']} of {out['pairs']} scored pairs were longer than "
               f"{max_length} tokens and were truncated."],
        summary=summary_table(("first stage", out["first_stage"]), ("reranked", out["reranked"])))


def embedder_mteb(recipe: Any, tasks: list[Any]) -> MtebOutcome:
    """The saved bi-encoder on ``tasks``, and at each Matryoshka dimension (same vectors, cut)."""
    out = mteb_eval.evaluate_saved_embedder(recipe.output_dir, tasks, dims=list(recipe.training_args.matryoshka_dims
                                                                                  or []),
                                            output_folder=os.path.join(recipe.output_dir, "mteb"),
                                            name=recipe.mteb_model_name, bf16=recipe.training_args.bf16)
    notes = []
    for dim, results in out["dims"].items():
        for task, scores in results.items():
            for split, metrics in scores.metrics.items():
                full = out["full"][task].metrics[split]["ndcg_at_10"]
                notes.append(f"mteb {task} ({split}) at {dim} dimensions: nDCG@10 {metrics['ndcg_at_10']:.4f} "
                             f"({metrics['ndcg_at_10'] / full:.1%} of the full dimension's {full:.4f}).")
    return MtebOutcome(results=out["full"], settings=_precision(recipe), notes=notes,
                       json={"mteb": mteb_eval.scores_as_dict(out["full"]),
                             "mteb_matryoshka": {str(d): mteb_eval.scores_as_dict(r) for d, r in out["dims"].items()}},
                       summary=[*summary_table(("", out["full"])), *notes])


def colbert_mteb(recipe: Any, tasks: list[Any]) -> MtebOutcome:
    """The saved ColBERT model on ``tasks``: MaxSim over the whole corpus for retrieval tasks, over
    each query's candidates for reranking tasks."""
    results = mteb_eval.evaluate_saved_colbert(recipe.output_dir, tasks,
                                               output_folder=os.path.join(recipe.output_dir, "mteb"),
                                               name=recipe.mteb_model_name, bf16=recipe.training_args.bf16,
                                               show_progress=True)
    how = {"Retrieval": "brute-force MaxSim over the whole corpus",
           "Reranking": "MaxSim reranking of each query's candidates"}
    notes = [f"mteb {task} ({split}), {how.get(scores.task_type, scores.task_type)}: nDCG@10 "
             f"{m['ndcg_at_10']:.4f}, MRR@10 {m['mrr_at_10']:.4f}, Recall@100 {m['recall_at_100']:.4f}."
             for task, scores in results.items() for split, m in scores.metrics.items()]
    return MtebOutcome(results=results, settings=_precision(recipe), notes=notes,
                       json={"mteb": mteb_eval.scores_as_dict(results)}, summary=summary_table(("", results)))


def sparse_mteb(recipe: Any, tasks: list[Any]) -> MtebOutcome:
    """The saved SPLADE model on ``tasks`` (inverted-index retrieval, or dot-product reranking), and with
    ``--hybrid_dense_model`` fused with that dense retriever at each ``--hybrid_sparse_weights``."""
    from ..data.mining import load_encoder
    from ..evaluation.mteb_sparse import evaluate_saved_sparse

    hybrid = recipe.hybrid
    dense = load_encoder(hybrid.hybrid_dense_model) if hybrid.hybrid_dense_model else None
    out = evaluate_saved_sparse(recipe.output_dir, tasks, output_folder=os.path.join(recipe.output_dir, "mteb"),
                                name=recipe.mteb_model_name, bf16=recipe.training_args.bf16, dense=dense,
                                sparse_weights=hybrid.hybrid_sparse_weights)
    notes = [f"mteb {task}: {a.get('query', 0):.1f} active dimensions per query and {a.get('document', 0):.1f} per "
             f"document on average (of {recipe.model.vocab_size})." for task, a in out["active_dims"].items()]
    for weight, results in out["hybrid"].items():
        for task, scores in results.items():
            for split, m in scores.metrics.items():
                alone = out["sparse"][task].metrics[split]["ndcg_at_10"]
                notes.append(f"mteb {task} ({split}) hybrid, {weight:g} x SPLADE + {1 - weight:g} x "
                             f"{hybrid.hybrid_dense_model} (min-max normalised): nDCG@10 {m['ndcg_at_10']:.4f} "
                             f"(SPLADE alone {alone:.4f}).")
    return MtebOutcome(results=out["sparse"], settings=_precision(recipe), notes=notes,
                       json={"mteb": mteb_eval.scores_as_dict(out["sparse"]), "mteb_active_dims": out["active_dims"],
                             "mteb_hybrid": {f"{w:g}": mteb_eval.scores_as_dict(r) for w, r in out["hybrid"].items()}},
                       summary=[*summary_table(("", out["sparse"])), *notes])
