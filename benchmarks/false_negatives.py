"""How many mined hard negatives are really positives, for each false-negative filter setting.

Labels are sparse in real data: a query's other relevant passages are usually unjudged. This measures
what that does to mining on a BEIR split where some queries have several judged positives: each such
query is mined knowing only its first positive (by corpus id), and every other judged positive that
lands among the mined candidates is a false negative we can count. The whole rank window is kept
(no sampling), so a row says what the filter leaves for the sampler to draw from.

    python benchmarks/false_negatives.py --beir_dir ../shared/data/scifact --split train --bf16 \\
        --teacher mpnet=/path/to/all-mpnet-base-v2 --teacher adapted=runs/sf-adapt/reranker

Columns: candidates kept per query; hidden positives kept (the false negatives) and their share of the
kept candidates; the share of all hidden positives that reach the candidates; candidates removed by the
filters. Teachers are label-free models (one trained on the split's labels would know the hidden positives).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_ragtrain.data.beir import load_beir  # noqa: E402
from hf_ragtrain.data.beir_pipeline import CachingEncoder  # noqa: E402
from hf_ragtrain.data.mining import load_encoder, mine_hard_negatives  # noqa: E402
from hf_ragtrain.data.negative_filters import NegativeFilters  # noqa: E402
from hf_ragtrain.offline import resolve_model_path  # noqa: E402


@dataclass
class Setting:
    """One row: a rank window, the filters, and which teacher (a ``--teacher`` name) scores them."""

    name: str
    start: int = 0
    filters: NegativeFilters = NegativeFilters()
    teacher: str | None = None


class CachedTeacher:
    """A teacher whose scores are kept by (query, document), so the rows that share it score each pair once."""

    def __init__(self, teacher):
        self.teacher, self.name, self.cache = teacher, teacher.name, {}

    def score(self, queries, docs):
        todo = list(dict.fromkeys((q, d) for q, d in zip(queries, docs) if (q, d) not in self.cache))
        if todo:
            fresh = self.teacher.score([q for q, _ in todo], [d for _, d in todo])
            self.cache.update(zip(todo, (float(x) for x in fresh)))
        return [self.cache[(q, d)] for q, d in zip(queries, docs)]


def settings(teachers: list[str]) -> list[Setting]:
    """The rows: the window alone, each encoder-cosine filter, and each teacher with margins in its scale."""
    rows = [Setting("ranks 0-100, no filter"), Setting("ranks 10-100 (the default window)", start=10),
            Setting("absolute margin 0.05", filters=NegativeFilters(absolute_margin=0.05)),
            Setting("relative margin 0.05", filters=NegativeFilters(relative_margin=0.05)),
            Setting("relative margin 0.10", filters=NegativeFilters(relative_margin=0.10)),
            Setting("max score 0.70", filters=NegativeFilters(max_score=0.70)),
            Setting("ranks 10-100 + relative margin 0.05", start=10, filters=NegativeFilters(relative_margin=0.05))]
    for name in teachers:
        rows.append(Setting(f"teacher {name}, absolute margin 0", filters=NegativeFilters(absolute_margin=0.0),
                            teacher=name))
        rows.append(Setting(f"teacher {name}, relative margin 0.05", filters=NegativeFilters(relative_margin=0.05),
                            teacher=name))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir_dir", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--encoder", default="minilm", help="the miner's encoder (dense retrieval and its cosine)")
    parser.add_argument("--teacher", action="append", default=[], metavar="NAME=DIR",
                        help="a label-free scorer for the filters (any folder hf_ragtrain.scoring.load_teacher loads)")
    parser.add_argument("--bf16", action="store_true", help="teachers score in bf16 (fast on CPUs with bf16 units)")
    parser.add_argument("--rank_end", type=int, default=100)
    parser.add_argument("--output", help="write the rows as JSON here too")
    args = parser.parse_args()

    data = load_beir(args.beir_dir, split=args.split)
    multi = {q: sorted(d for d, s in judged.items() if s > 0) for q, judged in data.qrels.items()}
    multi = {q: docs for q, docs in multi.items() if len(docs) >= 2}
    visible = {q: {docs[0]: 1} for q, docs in multi.items()}
    hidden = {q: set(docs[1:]) for q, docs in multi.items()}
    queries = {q: data.queries[q] for q in multi}
    n_hidden = sum(len(h) for h in hidden.values())
    print(f"{args.beir_dir} [{args.split}]: {len(multi)} queries with 2+ judged positives; each mined knowing its "
          f"first, {n_hidden} hidden positives in all")

    from hf_ragtrain.scoring import load_teacher

    teachers = dict(item.split("=", 1) for item in args.teacher)
    loaded = {name: CachedTeacher(load_teacher(path, bf16=args.bf16)) for name, path in teachers.items()}
    encoder = CachingEncoder(load_encoder(resolve_model_path(args.encoder)))
    corpus = data.doc_texts()
    rows = []
    for setting in settings(list(teachers)):
        started = time.perf_counter()
        negatives, stats = mine_hard_negatives(
            queries, corpus, visible, method="dense", encoder=encoder, rank_range=(setting.start, args.rank_end),
            num_negatives=args.rank_end, strategy="top", show_progress=False, filters=setting.filters,
            teacher=loaded.get(setting.teacher) if setting.teacher else None)
        kept = sum(len(v) for v in negatives.values())
        false = sum(len(hidden[q] & set(v)) for q, v in negatives.items())
        rows.append({"setting": setting.name, "kept_per_query": kept / len(multi), "false_negatives": false,
                     "false_share": false / max(kept, 1), "hidden_reached": false / max(n_hidden, 1),
                     "removed_by_filters": stats.dropped_by_filters, "seconds": time.perf_counter() - started})
        print(json.dumps(rows[-1]), flush=True)

    print(f"\n| setting ({args.encoder} dense mining, {len(multi)} queries) | candidates kept / query | "
          f"hidden positives kept | share of kept | share of hidden positives kept | removed by filters |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['kept_per_query']:.1f} | {r['false_negatives']} | {r['false_share']:.2%} | "
              f"{r['hidden_reached']:.1%} | {r['removed_by_filters']} |")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({"command": " ".join(sys.argv), "teachers": teachers, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
