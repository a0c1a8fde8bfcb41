"""Give every training record more BM25 negatives, mined from the training records' own passages.

A step of the distillation chain in BENCHMARKS.md: a teacher can label as many candidates as it is
given, so the student sees each training query with a group as large as the dev set's (1 answer +
29 candidates) instead of the 7 negatives the labels came with. Only the training file's passages
are used (no dev passage can leak in); a record's own positives are never its negatives.

    python benchmarks/more_negatives.py --input data/python_faq/train.jsonl --output /tmp/train29.jsonl --negatives 29
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--negatives", type=int, default=29)
    args = parser.parse_args()

    from hf_ragtrain.data import load_records
    from hf_ragtrain.data.mining import mine_hard_negatives

    records, _ = load_records(args.input)
    passages = list(dict.fromkeys(p for r in records for p in [*r.pos, *r.neg]))
    corpus = {str(i): p for i, p in enumerate(passages)}
    pid = {p: str(i) for i, p in enumerate(passages)}
    queries = {str(n): r.query for n, r in enumerate(records)}
    qrels = {str(n): {pid[p]: 1 for p in r.pos} for n, r in enumerate(records)}
    negatives, stats = mine_hard_negatives(queries, corpus, qrels, method="bm25", rank_range=(0, args.negatives + 5),
                                           num_negatives=args.negatives, strategy="top", show_progress=False)
    with open(args.output, "w") as fh:
        for n, r in enumerate(records):
            fh.write(json.dumps({"query": r.query, "pos": list(r.pos),
                                 "neg": [corpus[d] for d in negatives[str(n)]]}, ensure_ascii=False) + "\n")
    counts = [len(negatives[str(n)]) for n in range(len(records))]
    print(f"{args.output}: {len(records)} records, {min(counts)}-{max(counts)} negatives each "
          f"from {len(passages)} training passages")


if __name__ == "__main__":
    main()
