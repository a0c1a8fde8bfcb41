"""The two-stage pipeline's final evaluation and its report (:mod:`hf_ragtrain.runner.two_stage`).

Everything is measured through mteb on the evaluation split of the BEIR folder, on the whole
corpus: BM25 alone, the fine-tuned retriever alone, the hybrid first stage (when BM25 is on), and
the reranker reordering the first stage's top k. The report (``report.json``, ``REPORT.md``, the
console, a section of both model cards) puts them side by side with the gain of the reranker over
its first stage and over the retriever alone, and a warning when the reranker loses to its first
stage.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

#: The report's columns: mteb metric names and how the table heads them.
REPORT_METRICS = {"ndcg_at_10": "nDCG@10", "mrr_at_10": "MRR@10", "recall_at_10": "Recall@10",
                  "recall_at_100": "Recall@100", "hit_rate_at_1": "hit@1", "hit_rate_at_3": "hit@3",
                  "hit_rate_at_5": "hit@5", "hit_rate_at_10": "hit@10"}
#: The k of the hit rate / MRR table, first stage against reranked.
HIT_K = (1, 3, 5, 10)
KEPT_METRICS = (*REPORT_METRICS, *(f"mrr_at_{k}" for k in HIT_K))


def evaluate_two_stage(pipeline: Any, weights: dict[str, Any]) -> dict[str, Any]:
    """Run the mteb evaluations of a finished pipeline and write its report; returns it."""
    from ..data.mining import load_encoder
    from ..evaluation.mteb_eval import MtebHybrid, MtebReranker, beir_task, run_mteb, two_stage
    from ..hardware import bf16_is_fast
    from ..reranker import Reranker

    a = pipeline.args
    folder = pipeline.path("evaluation")
    retriever = load_encoder(pipeline.path("retriever"))
    shared: dict = {}

    def task():  # a fresh task each time: two_stage turns its task into a reranking one
        return beir_task(a.beir_dir, split=a.eval_split)

    language = pipeline.language
    rows = {"BM25": run_mteb(MtebHybrid(None, 0.0, 1.0, name="local/bm25", shared=shared, bm25_language=language),
                             [task()], folder)}
    rows["retriever alone"] = run_mteb(MtebHybrid(retriever, 1.0, 0.0, name="local/retriever", shared=shared,
                                                  bm25_language=language), [task()], folder)
    first = MtebHybrid(retriever, weights["dense_weight"], weights["bm25_weight"], name="local/first-stage",
                       shared=shared, bm25_language=language)
    reranker = Reranker.from_pretrained(pipeline.path("reranker"), dtype="bf16" if bf16_is_fast() else "fp32",
                                        batch_tokens=16384)
    both = two_stage(MtebReranker(reranker, name="local/reranker"), first, [task()], top_k=a.top_k,
                     output_folder=folder)
    if weights["bm25_weight"]:
        rows["first stage (hybrid)"] = both["first_stage"]
    rows[f"reranked (first stage top {a.top_k})"] = both["reranked"]
    report = build_report(pipeline, weights, {name: plain(results) for name, results in rows.items()})
    write_report(pipeline.out, report)
    add_to_cards(pipeline, report, both["reranked"], rows["retriever alone"])
    return report


def plain(results: dict[str, Any]) -> dict[str, float]:
    """The report's metrics of the one task and split of an mteb result."""
    (scores,) = results.values()
    (metrics,) = scores.metrics.values()
    return {k: float(metrics[k]) for k in KEPT_METRICS if k in metrics}


def build_report(pipeline: Any, weights: dict[str, Any], rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The report's content: rows, gains, the first stage's weights and a warning when the reranker is behind."""
    a = pipeline.args
    names = list(rows)
    reranked, first = rows[names[-1]], rows[names[-2]]
    retriever = rows["retriever alone"]
    gains = {"over its first stage": reranked["ndcg_at_10"] - first["ndcg_at_10"],
             "over the retriever alone": reranked["ndcg_at_10"] - retriever["ndcg_at_10"]}
    warnings = []
    if gains["over its first stage"] < 0:
        warnings.append(f"the reranker ranks the {a.eval_split} queries worse than its first stage: nDCG@10 "
                        f"{reranked['ndcg_at_10']:.4f} against {first['ndcg_at_10']:.4f}. Ship the first stage alone, "
                        "or see 'Rerankers that beat their first stage' in hf_ragtrain's README.")
    return {"task": os.path.basename(os.path.normpath(a.beir_dir)), "split": a.eval_split, "rows": rows,
            "gains_ndcg@10": gains, "first_stage": weights, "warnings": warnings,
            "models": {"retriever": pipeline.path("retriever"), "reranker": pipeline.path("reranker")}}


def stage_times(folder: str) -> dict[str, float]:
    """Seconds each finished stage took, from its marker, in the order the stages finished."""
    markers = []
    for path in glob.glob(os.path.join(folder, ".stages", "*.json")):
        with open(path, encoding="utf-8") as fh:
            markers.append(json.load(fh))
    return {m["stage"]: m.get("seconds") for m in sorted(markers, key=lambda m: m.get("finished", ""))}


def markdown(report: dict[str, Any], heading: str = "#") -> str:
    """The report as markdown: the table, the gains, the first stage's formula, warnings, stage times."""
    lines = [f"{heading} Two-stage evaluation: {report['task']} ({report['split']}, through mteb)\n",
             "| | " + " | ".join(REPORT_METRICS.values()) + " |", "|---|" + "---|" * len(REPORT_METRICS)]
    for name, metrics in report["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.4f}" if k in metrics else "-" for k in REPORT_METRICS)
                     + " |")
    names = list(report["rows"])
    first, reranked = report["rows"][names[-2]], report["rows"][names[-1]]
    if all(f"{m}_at_{k}" in r for m in ("hit_rate", "mrr") for k in HIT_K for r in (first, reranked)):
        lines += ["", f"What a RAG pipeline reads: hit rate at k (a relevant passage in the top k) and MRR at k, "
                      f"{names[-2]} against reranked.", "",
                  "| k | hit rate, first stage | hit rate, reranked | MRR, first stage | MRR, reranked |",
                  "|---|---|---|---|---|",
                  *(f"| {k} | {first[f'hit_rate_at_{k}']:.4f} | {reranked[f'hit_rate_at_{k}']:.4f} | "
                    f"{first[f'mrr_at_{k}']:.4f} | {reranked[f'mrr_at_{k}']:.4f} |" for k in HIT_K)]
    gains = report["gains_ndcg@10"]
    w = report["first_stage"]
    lines += ["", "Reranker gain in nDCG@10: " + ", ".join(f"{v:+.4f} {k}" for k, v in gains.items()) + ".",
              "", f"First stage score: {w['formula']} (weights fitted on the {w['queries']} training queries' "
              + ("cross-fitted" if w.get("cross_fitted") else "") + " candidates; the reranker adds its logit to it).",
              *(f"\n> **Warning:** {x}" for x in report["warnings"])]
    return "\n".join(lines + stage_time_lines(report)) + "\n"


def stage_time_lines(report: dict[str, Any]) -> list[str]:
    """The markdown table of the minutes each stage took (none when the report has no times)."""
    times = report.get("stages") or {}
    if not times:
        return []
    return ["", "| stage | minutes |", "|---|---|",
            *(f"| {k} | {v / 60:.1f} |" for k, v in times.items() if v is not None),
            f"| total | {sum(v for v in times.values() if v) / 60:.1f} |"]


def write_report(folder: str, report: dict[str, Any], render=None) -> dict[str, Any]:
    """``report.json`` and ``REPORT.md`` (``render(report)``, this module's :func:`markdown` by default) in
    ``folder``, with the stage times so far; returns what it wrote."""
    report = {**report, "stages": stage_times(folder)}
    with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(folder, "REPORT.md"), "w", encoding="utf-8") as fh:
        fh.write((render or markdown)(report))
    return report


def add_to_cards(pipeline: Any, report: dict[str, Any], reranked: dict[str, Any], retriever: dict[str, Any]) -> None:
    """Both model cards get the report's table; their model-index gets the figures of their own row."""
    from ..hub import add_card_section, mteb_eval_results

    section = markdown(report, heading="##")
    add_card_section(pipeline.path("reranker"), section, mteb_eval_results(reranked), report["warnings"])
    add_card_section(pipeline.path("retriever"), section,
                     mteb_eval_results(retriever, task_type="retrieval", task_name="Retrieval"))
