"""Unlabelled training queries for distillation, cut from a BEIR corpus's own abstracts.

A step of the SciFact distillation run in BENCHMARKS.md. A teacher can label any (query, passage)
pair, so the student's training set need not stop at the queries someone judged. SciFact's claims
each restate one finding of an abstract, so a pseudo query here is one sentence of a sampled
document, taken from after its first sentence (the findings, not the background), in the manner of
the inverse cloze task: the sentence is removed from its document, and what is left is the query's
positive, so the match is by topic and not by a copied string. No query or qrels file of any split
is read; only corpus.jsonl. The sentence splitting and picking are the package's
(:mod:`hf_ragtrain.data.inverse_cloze`, which ``recipes/adapt.py`` uses for its inverse-cloze queries).

    python benchmarks/pseudo_queries.py make --beir_dir ../shared/data/scifact --output_dir /tmp/sf_pseudo \\
        --num_queries 2000
    python recipes/build_beir_data.py --beir_dir /tmp/sf_pseudo --split pseudo --output /tmp/sf_pseudo/mined.jsonl \\
        --method dense --rank_start 1 --rank_end 100 --num_negatives 30
    python benchmarks/pseudo_queries.py finish --output_dir /tmp/sf_pseudo --input /tmp/sf_pseudo/mined.jsonl \\
        --output /tmp/sf_pseudo/train.jsonl

For records that are not a BEIR folder (the bundled Python FAQ set), ``corpus`` first writes their
distinct passages as one: ``python benchmarks/pseudo_queries.py corpus --records data/python_faq/train.jsonl
--output_dir /tmp/faqp/base``, then ``make --beir_dir /tmp/faqp/base ...`` as above.

``make`` writes a BEIR folder (the corpus linked, the sentences as queries, each judged relevant to
its own document) and ``positives.jsonl``; mining then keeps each source document out of its
query's negatives, and ``finish`` puts the shortened source document in as the positive.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hf_ragtrain.data.inverse_cloze import pick_sentence, split_sentences  # noqa: E402


def corpus(args: argparse.Namespace) -> None:
    """Write the distinct passages (pos and neg) of training records as a BEIR corpus.jsonl, ids d0, d1, ...
    in order of first appearance, so ``make`` can cut queries from a data set that is not a BEIR folder."""
    from hf_ragtrain.data import load_records

    records, _ = load_records(args.records)
    ids: dict[str, str] = {}
    for record in records:
        for text in [*record.pos, *record.neg]:
            ids.setdefault(text, f"d{len(ids)}")
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "corpus.jsonl"), "w") as fh:
        for text, doc_id in ids.items():
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    print(f"{args.output_dir}/corpus.jsonl: {len(ids)} distinct passages of {len(records)} records")


def make(args: argparse.Namespace) -> None:
    """Write the BEIR folder of sentence queries and the shortened positives."""
    from hf_ragtrain.data.beir import doc_text, load_beir_corpus

    corpus = load_beir_corpus(os.path.join(args.beir_dir, "corpus.jsonl"))
    rng = random.Random(args.seed)
    picks = {}
    for doc_id in sorted(corpus):
        i = pick_sentence(corpus[doc_id]["text"], rng)
        if i is not None:
            picks[doc_id] = i
    if args.num_queries > len(picks):
        raise SystemExit(f"--num_queries {args.num_queries}: only {len(picks)} of {len(corpus)} documents have "
                         "3 or more sentences with one of 6-30 words after the first")
    chosen = sorted(rng.sample(sorted(picks), args.num_queries))
    os.makedirs(os.path.join(args.output_dir, "qrels"), exist_ok=True)
    link = os.path.join(args.output_dir, "corpus.jsonl")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(args.beir_dir, "corpus.jsonl")), link)
    with open(os.path.join(args.output_dir, "queries.jsonl"), "w") as queries, \
            open(os.path.join(args.output_dir, "positives.jsonl"), "w") as positives, \
            open(os.path.join(args.output_dir, "qrels", "pseudo.tsv"), "w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for doc_id in chosen:
            sentences = split_sentences(corpus[doc_id]["text"])
            query = sentences.pop(picks[doc_id])
            rest = {"title": corpus[doc_id]["title"], "text": " ".join(sentences)}
            queries.write(json.dumps({"_id": f"s{doc_id}", "text": query}) + "\n")
            positives.write(json.dumps({"query_id": f"s{doc_id}", "doc_id": doc_id, "pos": doc_text(rest)}) + "\n")
            qrels.write(f"s{doc_id}\t{doc_id}\t1\n")
    print(f"{args.output_dir}: {len(chosen)} sentence queries from {len(picks)} eligible of {len(corpus)} documents "
          f"(seed {args.seed})")


def finish(args: argparse.Namespace) -> None:
    """Replace each mined record's positive (the whole source document) by the shortened one."""
    from hf_ragtrain.data.records import write_records

    with open(os.path.join(args.output_dir, "positives.jsonl")) as fh:
        shortened = {row["query_id"]: row for row in map(json.loads, fh)}
    out = []
    with open(args.input) as fh:
        for line_no, line in enumerate(fh, 1):
            row = json.loads(line)
            source = shortened.get(row.get("query_id"))
            if source is None or row.get("pos_ids") != [source["doc_id"]]:
                raise SystemExit(f"{args.input}:{line_no}: query_id {row.get('query_id')!r} with pos_ids "
                                 f"{row.get('pos_ids')!r} is not a query made by `make` in {args.output_dir}")
            row["pos"] = [source["pos"]]
            out.append(row)
    write_records(out, args.output)
    print(f"{args.output}: {len(out)} records, each positive its source document without the query sentence")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_corpus = sub.add_parser("corpus", help="a corpus.jsonl of the passages of training records")
    p_corpus.add_argument("--records", required=True, help="training records (.jsonl)")
    p_corpus.add_argument("--output_dir", required=True)
    p_make = sub.add_parser("make", help="BEIR folder of sentence queries")
    p_make.add_argument("--beir_dir", required=True)
    p_make.add_argument("--output_dir", required=True)
    p_make.add_argument("--num_queries", type=int, default=2000)
    p_make.add_argument("--seed", type=int, default=0)
    p_finish = sub.add_parser("finish", help="put the shortened source documents in as positives")
    p_finish.add_argument("--output_dir", required=True, help="the folder `make` wrote")
    p_finish.add_argument("--input", required=True, help="records mined from that folder by build_beir_data.py")
    p_finish.add_argument("--output", required=True)
    args = parser.parse_args()
    {"corpus": corpus, "make": make, "finish": finish}[args.command](args)


if __name__ == "__main__":
    main()
