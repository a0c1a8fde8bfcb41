#!/usr/bin/env python
"""Add a teacher's scores to training records (for distillation): ``pos_scores``/``neg_scores``.

    python recipes/score_with_teacher.py --teacher runs/llm-reranker --input data/python_faq/train.jsonl \\
        --output runs/train.scored.jsonl
    python recipes/score_with_teacher.py --teacher minilm --teacher_kind bi-encoder --input ... --output ...

The teacher is any folder the package loads: an LLM reranker (``hf_ragtrain_reranker.json``), a
bi-encoder (sentence-transformers layout; score = cosine) or a cross-encoder (raw logit); the kind
is detected, or given with --teacher_kind. Scores are cached in OUTPUT.cache.jsonl as they are made;
run the same command again after an interruption and it continues where it stopped. OUTPUT is
replaced only once it is complete.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain.data.errors import DataFormatError  # noqa: E402
from hf_ragtrain.reranker import RERANKER_KINDS  # noqa: E402
from hf_ragtrain.runner import EXIT_BAD_INPUT, EXIT_SAVE_FAILED, one_line  # noqa: E402
from hf_ragtrain.scoring import check_records_to_score, load_teacher, score_records  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher folder (or minilm / smollm2)")
    p.add_argument("--teacher_kind", choices=RERANKER_KINDS, help="default: detected from the folder")
    p.add_argument("--input", required=True, help="records (jsonl)")
    p.add_argument("--output", required=True, help="records with teacher scores (jsonl)")
    p.add_argument("--cache", help="score cache (default: OUTPUT.cache.jsonl)")
    p.add_argument("--max_length", type=int, default=512, help="cross-encoder: max tokens per pair")
    p.add_argument("--batch_tokens", type=int, default=16384, help="padded tokens per forward pass")
    p.add_argument("--chunk_pairs", type=int, default=1024, help="pairs scored between cache writes")
    p.add_argument("--bf16", action="store_true", help="score under bf16 autocast")
    p.add_argument("--overwrite_scores", action="store_true", help="replace scores the records already have")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:  # the records are checked before the teacher loads, so a bad file costs nothing
        check_records_to_score(args.input, args.overwrite_scores)
        teacher = load_teacher(args.teacher, kind=args.teacher_kind, max_length=args.max_length,
                               batch_tokens=args.batch_tokens, bf16=args.bf16)
    except DataFormatError as err:
        print(f"error: bad records: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as err:
        print(f"error: cannot load the teacher {args.teacher}: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        stats = score_records(args.input, args.output, teacher, cache_path=args.cache, chunk_pairs=args.chunk_pairs,
                              overwrite_scores=args.overwrite_scores)
    except OSError as err:
        cache = args.cache or args.output + ".cache.jsonl"
        print(f"error: writing the scores failed ({one_line(err)}); {args.output} was not written or changed. The "
              f"pairs scored so far are kept in {cache}: fix the cause and run the same command again to go on "
              "from there", file=sys.stderr)
        return EXIT_SAVE_FAILED
    print(f"{stats.summary()}; written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
