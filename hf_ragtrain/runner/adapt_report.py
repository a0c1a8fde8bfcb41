"""Domain adaptation's evaluation and report (:mod:`hf_ragtrain.runner.adaptation`).

Always on the held-out generated queries (``filter/eval.jsonl``, never trained on, their passages
fitting nothing): where each query's source passage ranks, scored as its positive text, for BM25,
the base embedder, the base hybrid, the adapted embedder (and, when it was averaged with the base one,
the embedder as trained), the adapted hybrid first stage and the
reranker over that first stage's top ``--rerank_top_k``. With ``--eval_beir``, the same systems on
real labelled queries through mteb. ``report.json`` / ``REPORT.md`` hold both tables, what each stage
made and kept, and the stage times; the two model cards get the tables.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..data.consistency import source_ranks
from ..data.generated import GeneratedQuery, read_generated
from ..data.hybrid import HybridIndex
from ..evaluation.metrics import query_metrics
from .stages import read_json
from .two_stage_report import REPORT_METRICS, plain, stage_time_lines
from .two_stage_report import write_report as write_files

#: Metrics of the held-out generated queries (one relevant passage each).
HELDOUT_METRICS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "hit_rate@1": "hit@1", "hit_rate@10": "hit@10"}


def metrics_of_ranks(ranks: Sequence[int]) -> dict[str, float]:
    """Mean metrics of queries with one relevant passage at each rank (1 = first)."""
    rows = [query_metrics([f"other-{j}" for j in range(min(int(r), 11) - 1)] + ["source"], {"source": 1}, (1, 10))
            for r in ranks]
    return {k: float(np.mean([row[k] for row in rows])) for k in HELDOUT_METRICS}


def reranked_ranks(index: HybridIndex, reranker: Any, queries: Sequence[GeneratedQuery], position: dict[str, int],
                   dense_weight: float, bm25_weight: float, top_k: int) -> np.ndarray:
    """The source passage's rank after ``reranker`` reorders the first stage's top ``top_k`` (the source
    as its positive text); a source the first stage leaves out keeps its first-stage rank."""
    first = source_ranks(index, queries, position, dense_weight, bm25_weight)
    _, top = index.search([q.text for q in queries], top_k + 1, dense_weight, bm25_weight)
    texts = index.texts
    groups: list[tuple[int, list[str]]] = []
    for i, query in enumerate(queries):
        if first[i] <= top_k:
            others = [int(j) for j in top[i] if j != position[query.doc_id]][:top_k - 1]
            groups.append((i, [query.positive] + [texts[j] for j in others]))
    pairs = [(queries[i].text, d) for i, docs in groups for d in docs]
    scores = np.asarray(reranker.compute_score(pairs) if pairs else [], dtype=np.float64)
    out, start = first.copy(), 0
    for i, docs in groups:
        s = scores[start:start + len(docs)]
        start += len(docs)
        out[i] = 1 + int((s[1:] >= s[0]).sum())
    return out


#: The row of the embedder as trained, before its weights were averaged with the base embedder's.
TRAINED_ROW = "adapted embedder before averaging (embedder_trained/)"


def heldout_rows(pipeline: Any, adapted: HybridIndex, reranker: Any,
                 trained: HybridIndex | None = None) -> dict[str, dict[str, float]]:
    """The held-out generated queries' table: system -> metrics (``trained``: the embedder before averaging)."""
    queries = read_generated(pipeline.path("filter", "eval.jsonl"))
    position = {d: i for i, d in enumerate(pipeline.corpus().ids)}
    base, w = pipeline.base_index(), pipeline.base_weights()
    aw = read_json(pipeline.path("embedder", "first_stage.json"))
    k = pipeline.args.rerank_top_k
    systems = {"BM25": (base, 0.0, 1.0), "base embedder": (base, 1.0, 0.0),
               "base hybrid": (base, w["dense_weight"], w["bm25_weight"]),
               **({TRAINED_ROW: (trained, 1.0, 0.0)} if trained is not None else {}),
               "adapted embedder": (adapted, 1.0, 0.0),
               "adapted hybrid (first stage)": (adapted, aw["dense_weight"], aw["bm25_weight"])}
    rows = {name: metrics_of_ranks(source_ranks(index, queries, position, dw, bw))
            for name, (index, dw, bw) in systems.items()}
    rows[f"reranked (first stage top {k})"] = metrics_of_ranks(
        reranked_ranks(adapted, reranker, queries, position, aw["dense_weight"], aw["bm25_weight"], k))
    return rows


def beir_rows(pipeline: Any, adapted: HybridIndex, reranker: Any,
              trained: HybridIndex | None = None) -> tuple[dict[str, dict[str, float]], dict]:
    """The ``--eval_beir`` table through mteb (system -> metrics), and the reranked run's raw results. A
    task corpus that is the adapted corpus reuses its indexes (``adapted`` and the pipeline's base one)."""
    from ..evaluation.mteb_eval import MtebHybrid, MtebReranker, beir_task, run_mteb, two_stage

    a = pipeline.args
    folder, language = pipeline.path("evaluation"), pipeline.language
    w, aw = pipeline.base_weights(), read_json(pipeline.path("embedder", "first_stage.json"))
    base, ids = pipeline.base_index(), pipeline.corpus().ids
    base_shared: dict = {}
    adapted_shared: dict = {}

    def task():
        return beir_task(a.eval_beir, split=a.eval_split)

    def hybrid(index, dw, bw, name, shared):
        return MtebHybrid(index.encoder, dw, bw, name=name, shared=shared, bm25_language=language,
                          prebuilt=(ids, index))

    rows = {"BM25": run_mteb(hybrid(base, 0.0, 1.0, "local/bm25", base_shared), [task()], folder),
            "base embedder": run_mteb(hybrid(base, 1.0, 0.0, "local/base", base_shared), [task()], folder),
            "base hybrid": run_mteb(hybrid(base, w["dense_weight"], w["bm25_weight"], "local/base-hybrid", base_shared),
                                    [task()], folder)}
    if trained is not None:
        rows[TRAINED_ROW] = run_mteb(hybrid(trained, 1.0, 0.0, "local/trained", {}), [task()], folder)
    rows["adapted embedder"] = run_mteb(hybrid(adapted, 1.0, 0.0, "local/adapted", adapted_shared), [task()], folder)
    first = hybrid(adapted, aw["dense_weight"], aw["bm25_weight"], "local/adapted-hybrid", adapted_shared)
    both = two_stage(MtebReranker(reranker, name="local/reranker"), first, [task()], top_k=a.rerank_top_k,
                     output_folder=folder)
    rows["adapted hybrid (first stage)"] = both["first_stage"]
    rows[f"reranked (first stage top {a.rerank_top_k})"] = both["reranked"]
    return {name: plain(r) for name, r in rows.items()}, {"reranked": both["reranked"], "embedder": rows["adapted embedder"]}


def evaluate_adaptation(pipeline: Any) -> dict[str, Any]:
    """Evaluate a finished adaptation, write its report and card sections; returns the report."""
    from ..data.mining import load_encoder
    from ..hardware import bf16_is_fast
    from ..reranker import Reranker

    texts, bm25 = pipeline.corpus().full_texts(), pipeline.base_index().bm25
    adapted = HybridIndex(load_encoder(pipeline.path("embedder")), texts, bm25=bm25)
    averaging_file = pipeline.path("embedder", "averaging.json")
    averaging = read_json(averaging_file) if os.path.isfile(averaging_file) else None
    trained = (HybridIndex(load_encoder(pipeline.path(averaging["trained"])), texts, bm25=bm25)
               if averaging else None)
    reranker = Reranker.from_pretrained(pipeline.path("reranker"), dtype="bf16" if bf16_is_fast() else "fp32",
                                        batch_tokens=16384)
    report: dict[str, Any] = {"corpus": pipeline.args.corpus,
                              "heldout": heldout_rows(pipeline, adapted, reranker, trained)}
    raw = None
    if pipeline.args.eval_beir:
        report["beir"], raw = beir_rows(pipeline, adapted, reranker, trained)
        report["beir_task"] = {"folder": pipeline.args.eval_beir, "split": pipeline.args.eval_split}
    report["counts"] = {name: read_json(pipeline.path(folder, "counts.json"))
                        for name, folder in (("queries", "queries"), ("filter", "filter"), ("negatives", "negatives"),
                                             ("teacher", "teacher"))}
    report["averaging"] = averaging
    report["first_stage"] = {"base": pipeline.base_weights(),
                             "adapted": read_json(pipeline.path("embedder", "first_stage.json"))}
    report["warnings"] = warnings_of(report)
    report = write_report(pipeline.out, report)
    add_to_cards(pipeline, report, raw)
    return report


#: (an adapted system, the base system it has to beat, what the reader should do when it does not)
_CHECKS = (("adapted embedder", "base embedder", ""),
           ("adapted hybrid (first stage)", "base hybrid", "; the base hybrid is the better first stage"),
           ("reranked", "adapted hybrid (first stage)", "; ship the first stage alone"))


def warnings_of(report: dict[str, Any]) -> list[str]:
    """A warning for each table where an adapted system trails what it replaces (the adapted embedder the
    base one, the adapted hybrid the base hybrid, the reranker its first stage), and one naming the best
    system whenever that is not the pipeline's output (the reranker)."""
    out = []
    for table, key in (("heldout", "ndcg@10"), ("beir", "ndcg_at_10")):
        rows = report.get(table)
        if not rows:
            continue
        score = {name.split(" (first stage top")[0]: metrics[key] for name, metrics in rows.items()}
        where = "held-out generated queries" if table == "heldout" else "the --eval_beir queries"
        behind = [(system, base, advice) for system, base, advice in _CHECKS if score[system] < score[base]]
        for system, base, advice in behind:
            name = "the reranker" if system == "reranked" else f"the {system}"
            out.append(f"on {where} {name} is behind the {base}: nDCG@10 {score[system]:.4f} against "
                       f"{score[base]:.4f}{advice}")
        best = max(score, key=score.get)
        if best != "reranked":  # also when every stage beats what it replaces but an earlier one is better still
            out.append(f"on {where} the best system is the {best} (nDCG@10 {score[best]:.4f}), not the pipeline's "
                       f"output, the reranker ({score['reranked']:.4f}): ship the {best}")
    return out


def _table(rows: dict[str, dict[str, float]], columns: dict[str, str]) -> list[str]:
    lines = ["| | " + " | ".join(columns.values()) + " |", "|---|" + "---|" * len(columns)]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.4f}" if k in metrics else "-" for k in columns) + " |")
    return lines


def markdown(report: dict[str, Any], heading: str = "#") -> str:
    """The report as markdown: both tables, what each stage kept, the first stages, warnings, stage times."""
    c = report["counts"]
    lines = [f"{heading} Domain adaptation: {os.path.basename(os.path.normpath(report['corpus']))}\n",
             f"Held-out generated queries ({c['filter']['eval']}; each one's source passage is the one relevant):", "",
             *_table(report["heldout"], HELDOUT_METRICS)]
    if report.get("beir"):
        t = report["beir_task"]
        lines += ["", f"Labelled queries: {os.path.basename(os.path.normpath(t['folder']))} ({t['split']}, through "
                      "mteb, whole corpus):", "", *_table(report["beir"], REPORT_METRICS)]
    generated = c["queries"]
    made = ", ".join(f"{g} {v['made'] if 'made' in v else v.get('kept', 0)}" for g, v in generated.items()
                     if isinstance(v, dict) and g in ("inverse-cloze", "llm"))
    kept = "; ".join(f"{g}: {v['kept']} of {v['made']}" for g, v in c["filter"]["by_generator"].items())
    lines += ["", f"Queries generated from {generated['passages']} passages: {made}. Round-trip filter (source in the "
                  f"base hybrid's top {c['filter']['filter_top_k']}) kept {kept}. Training queries "
                  f"{c['filter']['train']}; {c['negatives']['train']['skipped']} likely false negatives skipped in "
                  f"mining; teacher {c['teacher']['teacher']} dropped {c['teacher']['dropped_negatives']} more.",
              "", *_averaging_line(report.get("averaging")),
              f"Base first stage: {report['first_stage']['base']['formula']}; adapted first stage: "
                  f"{report['first_stage']['adapted']['formula']} "
                  + ("(the base one's weights: the fit on the held-out dev queries failed)."
                     if "fallback" in report["first_stage"]["adapted"] else "(fitted on held-out generated queries)."),
              *(f"\n> **Warning:** {x}" for x in report["warnings"])]
    return "\n".join(lines + stage_time_lines(report)) + "\n"


def _averaging_line(averaging: dict[str, Any] | None) -> list[str]:
    """The report's sentence on how the adapted embedder's weights were averaged with the base's."""
    if not averaging:
        return []
    share = averaging["base_share"]
    return [f"Adapted embedder: the trained weights ({averaging['trained']}/) x {1 - share:g} + the base embedder's "
            f"({averaging['base']}) x {share:g}, tensor by tensor.", ""]


def write_report(folder: str, report: dict[str, Any]) -> dict[str, Any]:
    """``report.json`` and ``REPORT.md`` in ``folder``, with the stage times so far; returns what it wrote."""
    return write_files(folder, report, markdown)


def add_to_cards(pipeline: Any, report: dict[str, Any], raw: dict | None) -> None:
    """Both model cards get the report; with ``--eval_beir``, their model-index gets their own row."""
    from ..hub import add_card_section, mteb_eval_results

    section = markdown(report, heading="##")
    add_card_section(pipeline.path("reranker"), section, mteb_eval_results(raw["reranked"]) if raw else (),
                     report["warnings"])
    add_card_section(pipeline.path("embedder"), section,
                     mteb_eval_results(raw["embedder"], task_type="retrieval", task_name="Retrieval") if raw else ())
