"""The query side of domain adaptation (:mod:`hf_ragtrain.runner.adaptation`): which passages each generator
gets, the question writer's few-shot examples, the user's queries and labelled records as training
records, and the teacher's check for false negatives."""

from __future__ import annotations

import json
import random
from typing import Any, Callable, Sequence

import numpy as np

from ..data.documents import Corpus
from ..data.generated import GeneratedQuery
from ..data.inverse_cloze import inverse_cloze_queries
from ..data.mining import BM25
from ..data.records import load_records, write_jsonl_atomically
from .recipe import RecipeError

#: Ranks 2..SKIP_USER_RANKS of a user query's first stage are neither its positive nor its negatives.
SKIP_USER_RANKS = 3


def make_queries(corpus: Corpus, args: Any, user: Sequence[str], echo: Callable[[str], None] = print
                 ) -> tuple[list[GeneratedQuery], dict[str, Any]]:
    """Inverse-cloze queries and written questions for ``corpus`` as ``args`` (:class:`AdaptArguments`)
    asks; returns them and the counts of what each generator made and rejected."""
    ict, eligible = inverse_cloze_queries(corpus.ids, corpus.titles, corpus.texts, args.ict_queries, seed=args.seed)
    counts: dict[str, Any] = {"inverse-cloze": {"asked": args.ict_queries, "made": len(ict),
                                                "passages_with_a_fitting_sentence": eligible}}
    if len(ict) < args.ict_queries:
        echo(f"inverse cloze: {len(ict)} queries of the {args.ict_queries} asked for: only {eligible} passages have 3 "
             "or more sentences with one of 6-30 words after the first")
    if not args.llm_queries or args.generator_model.lower() == "none":
        return ict, counts
    from ..modeling.question_writer import QuestionWriter

    examples, source, example_ids = few_shot_examples(corpus, user, args.few_shot, args.seed, args.bm25_language)
    chosen = pick_passages(corpus, args.llm_queries, {q.doc_id for q in ict} | example_ids, args.seed)
    echo(f"question writer {args.generator_model}: {len(chosen)} passages, {len(examples)} examples from {source}")
    writer = QuestionWriter(args.generator_model, examples, seed=args.seed)
    written = writer.write([corpus.texts[i] for i in chosen])
    texts = corpus.full_texts()
    llm = [GeneratedQuery(f"llm-{corpus.ids[i]}", q, corpus.ids[i], texts[i], "llm") for i, q in zip(chosen, written)
           if q is not None]
    counts["llm"] = {"model": args.generator_model, "asked": len(chosen), **writer.stats.as_dict(),
                     "examples_from": source, "examples": [q for _, q in examples]}
    echo(f"question writer: kept {writer.stats.kept} of {len(chosen)}; rejected "
         + (", ".join(f"{n} {why}" for why, n in writer.stats.rejected.items()) or "none"))
    return ict + llm, counts


def few_shot_examples(corpus: Corpus, user: Sequence[str], k: int, seed: int, language: str
                      ) -> tuple[list[tuple[str, str]], str, set[str]]:
    """Up to ``k`` ``(passage, query)`` examples, where they came from, and their passages' ids: the user's
    queries with the passage BM25 ranks first for each, else passages whose title reads like a query
    (3-20 words, over a text of 30 words or more) with that title, else none."""
    rng = random.Random(seed)
    if k and user:
        picked = rng.sample(list(user), min(k, len(user)))
        bm25 = BM25(corpus.full_texts(), language=None if language.lower() == "none" else language)
        tops = [int(np.argmax(bm25.get_scores(q))) for q in picked]
        return ([(corpus.texts[j], q) for j, q in zip(tops, picked)], "your queries (--queries)",
                {corpus.ids[j] for j in tops})
    titled = [i for i, (t, x) in enumerate(zip(corpus.titles, corpus.texts))
              if 3 <= len(t.split()) <= 20 and len(x.split()) >= 30]
    if k and titled:
        picked = rng.sample(titled, min(k, len(titled)))
        return [(corpus.texts[i], corpus.titles[i]) for i in picked], "the corpus's titles", {corpus.ids[i] for i in picked}
    return [], "nowhere (the instruction alone)", set()


def pick_passages(corpus: Corpus, n: int, avoid: set[str], seed: int) -> list[int]:
    """``n`` passage positions of 20 words or more, drawn with ``seed``, those not in ``avoid`` first."""
    rng = random.Random(seed + 1)
    long_enough = [i for i, x in enumerate(corpus.texts) if len(x.split()) >= 20]
    fresh = [i for i in long_enough if corpus.ids[i] not in avoid]
    rest = [i for i in long_enough if corpus.ids[i] in avoid]
    rng.shuffle(fresh)
    rng.shuffle(rest)
    return sorted((fresh + rest)[:n])


def user_query_records(pipeline: Any, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Records for the user's unlabelled queries: the base first stage's top passage as the positive (a
    pseudo label the teacher then scores), its candidates after rank ``SKIP_USER_RANKS`` as negatives."""
    with open(pipeline.path("queries", "user.jsonl"), encoding="utf-8") as fh:
        user = [json.loads(line)["text"] for line in fh if line.strip()]
    if not user:
        return []
    a, w, corpus = pipeline.args, pipeline.base_weights(), pipeline.corpus()
    texts = corpus.full_texts()
    rows = []
    for i, c in enumerate(pipeline.base_index().features(user, a.top_k)):
        fused = c.fused(w["dense_weight"], w["bm25_weight"])
        order = np.argsort(-fused, kind="stable")
        negatives = order[SKIP_USER_RANKS:SKIP_USER_RANKS + a.num_negatives]
        rows.append({"query": user[i], "pos": [texts[c.index[order[0]]]], "neg": [texts[c.index[k]] for k in negatives],
                     "query_id": f"user-{i}", "pos_ids": [corpus.ids[c.index[order[0]]]],
                     "neg_ids": [corpus.ids[c.index[k]] for k in negatives],
                     "pos_first_stage_scores": [float(fused[order[0]])],
                     "neg_first_stage_scores": [float(fused[k]) for k in negatives]})
    counts["user"] = {"records": len(rows), "positive": "the base first stage's top passage (a pseudo label)"}
    return rows


def labelled_records(pipeline: Any, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """The user's labelled records (``--train_data``) with the base first stage's score of each document,
    and the first stage's best non-positive candidates as negatives where a record has none."""
    a = pipeline.args
    if not a.train_data:
        return []
    records, _ = load_records(a.train_data)
    w, index, texts = pipeline.base_weights(), pipeline.base_index(), pipeline.corpus().full_texts()
    rows, mined = [], 0
    for record, c in zip(records, index.features([r.query for r in records], a.top_k)):
        negatives = list(record.neg)
        if not negatives:
            fused = c.fused(w["dense_weight"], w["bm25_weight"])
            negatives = [texts[c.index[k]] for k in np.argsort(-fused, kind="stable")
                         if texts[c.index[k]] not in record.pos][:a.num_negatives]
            mined += 1
        docs = [*record.pos, *negatives]
        dense, lexical = index.pair_features([record.query] * len(docs), docs)
        scores = (w["dense_weight"] * dense + w["bm25_weight"] * lexical).tolist()
        row = {"query": record.query, "pos": record.pos, "neg": negatives,
               "pos_first_stage_scores": scores[:len(record.pos)], "neg_first_stage_scores": scores[len(record.pos):]}
        if record.pos_labels is not None:
            row["pos_labels"] = record.pos_labels
        rows.append(row)
    counts["labelled"] = {"records": len(rows), "negatives_mined_for": mined, "file": a.train_data}
    return rows


def drop_teacher_false_negatives(scored_path: str, out_path: str) -> dict[str, int]:
    """Copy scored records, leaving out each negative the teacher scores at or above the record's best
    positive (with its id and first-stage score) and records left without a negative; returns the counts."""
    dropped_negatives = dropped_records = kept = 0
    rows = []
    with open(scored_path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            best = max(row["pos_scores"])
            keep = [i for i, s in enumerate(row["neg_scores"]) if s < best]
            dropped_negatives += len(row["neg_scores"]) - len(keep)
            if not keep:
                dropped_records += 1
                continue
            for name in ("neg", "neg_scores", "neg_ids", "neg_first_stage_scores"):
                if name in row:
                    row[name] = [row[name][i] for i in keep]
            rows.append(row)
            kept += 1
    if not rows:
        raise RecipeError(f"{scored_path}: the teacher scores a negative above the positive in every record; no "
                          "training record is left")
    write_jsonl_atomically(out_path, rows)
    return {"records": kept, "dropped_negatives": dropped_negatives, "dropped_records": dropped_records}
