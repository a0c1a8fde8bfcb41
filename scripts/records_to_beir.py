#!/usr/bin/env python
"""Write training records as a BEIR folder: their distinct passages as corpus.jsonl, their queries as
queries.jsonl, and each records file's judgements as qrels/<name>.tsv (train.jsonl -> qrels/train.tsv).

    python scripts/records_to_beir.py --records data/python_faq/train.jsonl data/python_faq/dev.jsonl \\
        --output_dir runs/python_faq_beir

The bundled Python FAQ set then serves as documents for recipes/adapt.py (--corpus) and as labelled
queries to evaluate the adapted models on (--eval_beir ... --split dev).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_ragtrain.data import load_records  # noqa: E402
from hf_ragtrain.data.beir import write_beir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", nargs="+", required=True, help="records files; each file's name is its split")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()
    passages: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for path in args.records:
        split = os.path.basename(path).split(".")[0]
        records, _ = load_records(path)
        for record in records:
            qid = queries.setdefault(record.query, f"q{len(queries)}")
            for text in [*record.pos, *record.neg]:
                passages.setdefault(text, f"p{len(passages)}")
            for text, grade in zip(record.pos, record.labels_of_pos()):
                qrels.setdefault(split, {}).setdefault(qid, {})[passages[text]] = grade
    write_beir(args.output_dir, {i: {"title": "", "text": t} for t, i in passages.items()},
               {i: q for q, i in queries.items()}, qrels)
    print(f"{args.output_dir}: {len(passages)} passages, {len(queries)} queries, qrels "
          + ", ".join(f"{s} {sum(map(len, r.values()))}" for s, r in qrels.items()))


if __name__ == "__main__":
    main()
