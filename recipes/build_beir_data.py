"""Build hf_ragtrain jsonl records from a BEIR folder, with mined hard negatives.

Example (BM25 negatives from ranks 10..99, 15 per query)::

    python recipes/build_beir_data.py --beir_dir data/scifact --split train \
        --output /tmp/scifact_train.jsonl --method bm25

False-negative filters (``--absolute_margin``, ``--relative_margin``, ``--max_score``; scored by the
encoder's cosine, or by ``--filter_teacher DIR``) drop candidates that score too close to the positive.

Each output line is ``{"query", "pos", "neg", ["pos_labels"], "query_id", "pos_ids", "neg_ids"}``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

try:
    import hf_ragtrain  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_ragtrain.data.beir import beir_to_records_with_stats, load_beir
from hf_ragtrain.data.errors import DataFormatError
from hf_ragtrain.data.beir_pipeline import (CachingEncoder, dev_records_from_run, first_stage_run, split_dev_queries,
                                            subset_queries)
from hf_ragtrain.data.mining import load_encoder, mine_hard_negatives
from hf_ragtrain.data.negative_filters import NegativeFilters
from hf_ragtrain.data.records import write_records
from hf_ragtrain.offline import resolve_model_path
from hf_ragtrain.scoring import load_teacher
from hf_ragtrain.runner import EXIT_BAD_INPUT, EXIT_SAVE_FAILED, one_line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir_dir", required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--split", default="train", help="qrels/<split>.tsv to read (default: train)")
    parser.add_argument("--output", required=True, help="jsonl file to write")
    parser.add_argument("--method", choices=["bm25", "dense", "hybrid"], default="bm25",
                        help="retriever used to mine negatives (hybrid = reciprocal-rank fusion)")
    parser.add_argument("--encoder", default="minilm",
                        help="sentence-transformers model folder for dense/hybrid "
                             "(default 'minilm' = the offline all-MiniLM-L6-v2 package)")
    parser.add_argument("--rank_start", type=int, default=10,
                        help="first retrieval rank (0-based, positives counted) usable as a negative")
    parser.add_argument("--rank_end", type=int, default=100, help="rank window end (exclusive)")
    parser.add_argument("--num_negatives", type=int, default=15, help="negatives per query (0: none)")
    parser.add_argument("--strategy", choices=["random", "top"], default="random",
                        help="sample negatives in the window with --seed, or take the best-ranked")
    parser.add_argument("--seed", type=int, default=42, help="seed of the negatives' sampling (default: 42)")
    filters = parser.add_argument_group(
        "false-negative filters", "drop candidates scored too close to the query's weakest judged positive; scored "
                                  "by --filter_teacher when given, else by --encoder's cosine")
    filters.add_argument("--absolute_margin", type=float,
                         help="drop a candidate scoring above (positive's score - this), e.g. 0.05 for cosines")
    filters.add_argument("--relative_margin", type=float,
                         help="drop a candidate scoring above (positive's score - this x |positive's score|), "
                              "in [0, 1), e.g. 0.05")
    filters.add_argument("--max_score", type=float, help="drop a candidate scoring above this")
    filters.add_argument("--filter_teacher",
                         help="score the candidates with this folder (a cross-encoder, LLM reranker or embedder "
                              "that Reranker.from_pretrained loads) instead of the encoder")
    filters.add_argument("--filter_teacher_max_length", type=int, default=512,
                         help="tokens per (query, document) pair for a cross-encoder --filter_teacher")
    parser.add_argument("--batch_size", type=int, default=64, help="encoding batch size (dense/hybrid)")
    parser.add_argument("--dev_queries", type=int, default=0,
                        help="hold out this many judged queries, chosen with --seed as the recipes' "
                             "--beir_dev_queries chooses them; they are left out of --output")
    parser.add_argument("--dev_output", help="jsonl for the held-out queries: their judged positives, and the "
                                             "--encoder's top --dev_top_k other documents as negatives")
    parser.add_argument("--dev_top_k", type=int, default=30, help="candidates per dev query (default: 30)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Load, mine, convert and write; prints counts and timings. Bad data is a one-line error (exit 2)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return build(args)
    except DataFormatError as err:
        print(f"error: bad BEIR data: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"error: writing the records failed ({one_line(err)}); {args.output} was not written or changed",
              file=sys.stderr)
        return EXIT_SAVE_FAILED


def build(args: argparse.Namespace) -> int:
    """What :func:`main` does, errors raised."""
    started = time.perf_counter()

    data = load_beir(args.beir_dir, split=args.split)
    print(f"loaded {args.beir_dir} [{args.split}]: {len(data.corpus)} docs, "
          f"{len(data.queries)} judged queries, {sum(len(j) for j in data.qrels.values())} qrels "
          f"({time.perf_counter() - started:.1f}s)")

    encoder = args.encoder
    if args.dev_queries:
        if not args.dev_output:
            print("error: --dev_queries needs --dev_output", file=sys.stderr)
            return EXIT_BAD_INPUT
        train_ids, dev_ids = split_dev_queries(list(data.qrels), args.dev_queries, args.seed)
        data, dev_data = subset_queries(data, train_ids), subset_queries(data, dev_ids)
        encoder = CachingEncoder(load_encoder(resolve_model_path(args.encoder)))  # the corpus is encoded once
        dev = dev_records_from_run(dev_data, first_stage_run(encoder, dev_data, top_k=args.dev_top_k))
        write_records(dev, args.dev_output)
        print(f"held out {len(dev_ids)} queries: {len(dev)} dev records (judged positives + the {args.encoder} "
              f"top {args.dev_top_k}) written to {args.dev_output}; {len(train_ids)} queries left")

    negatives = None
    if args.num_negatives > 0:
        mined_at = time.perf_counter()
        filters = NegativeFilters(args.absolute_margin, args.relative_margin, args.max_score)
        if args.filter_teacher and not filters.active:
            print("error: --filter_teacher scores candidates for the filters; give --absolute_margin, "
                  "--relative_margin or --max_score too", file=sys.stderr)
            return EXIT_BAD_INPUT
        negatives, mining = mine_hard_negatives(
            data.queries, data.corpus, data.qrels,
            method=args.method, encoder=encoder,
            rank_range=(args.rank_start, args.rank_end), num_negatives=args.num_negatives,
            seed=args.seed, strategy=args.strategy, batch_size=args.batch_size,
            filters=filters,
            teacher=load_teacher(args.filter_teacher, max_length=args.filter_teacher_max_length)
            if args.filter_teacher else None,
        )
        print(f"mined {mining.negatives} negatives with {args.method} for {mining.queries} queries "
              f"({mining.short} got fewer than {args.num_negatives}, {mining.empty} got none; "
              f"removed {mining.dropped_positive} relevant and {mining.dropped_duplicate} duplicate "
              f"docs from the rank window) in {time.perf_counter() - mined_at:.1f}s")
        if filters.active:
            print(f"false-negative filters ({mining.scored_pairs} pairs scored by "
                  f"{args.filter_teacher or args.encoder}): {mining.dropped_max_score} candidates above "
                  f"--max_score, {mining.dropped_absolute_margin} within --absolute_margin and "
                  f"{mining.dropped_relative_margin} within --relative_margin of the weakest positive removed")

    records, stats = beir_to_records_with_stats(data, negatives)
    output = Path(args.output)
    write_records(records, output)  # atomic: an interrupted run never leaves a half file
    print(f"wrote {stats['records']} records ({stats['negatives']} negatives, "
          f"{stats['skipped_no_positive']} queries skipped without a positive, {stats['empty_documents_dropped']} "
          f"documents with no title or text left out, {stats['skipped_empty_positives']} queries skipped because "
          f"every positive was such a document) to {output} in {time.perf_counter() - started:.1f}s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
