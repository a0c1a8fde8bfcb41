#!/usr/bin/env python
"""Adapt an embedder and a reranker to your documents, with no labelled queries.

    python recipes/adapt.py --corpus DOCS --output_dir runs/adapted
    python recipes/adapt.py --corpus ../shared/data/scifact --output_dir runs/sf-adapt \\
        --eval_beir ../shared/data/scifact --split test        # labelled queries read only to evaluate
    python recipes/adapt.py --corpus docs/ --output_dir runs/adapted --queries my_queries.txt
    python recipes/adapt.py --corpus DOCS --output_dir OUT --redo embedder   # retrain from that stage on

DOCS is a BEIR folder (only corpus.jsonl is read), a jsonl of {"_id", "title", "text"}, or a folder
of .txt/.md/.rst files cut into passages. Stages (each skipped when a rerun finds it finished; an
interrupted one resumes): generate queries from the passages (inverse-cloze sentences and questions
written by a local chat model, SmolLM2-135M-Instruct by default); fit the base hybrid first stage
(embedder cosine + BM25) on them and keep the queries whose source passage it finds (round trip);
mine hard negatives, skipping likely false negatives; score every pair with the teacher; train the
embedder by score distillation; train the reranker behind the adapted first stage; evaluate on
held-out generated queries (and on --eval_beir through mteb). OUTPUT_DIR holds embedder/ and
reranker/ (each with its model card), report.json and REPORT.md.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import AdaptArguments, adapt  # noqa: E402
from hf_ragtrain.runner.stages import pipeline_main  # noqa: E402


def main(argv=None) -> int:
    # --split: the name mteb and evaluate_mteb.py give the evaluation split
    return pipeline_main(AdaptArguments, __doc__,
                         lambda args: adapt(args, os.path.join(REPO, "recipes")), argv, aliases={"--split": "--eval_split"})


if __name__ == "__main__":
    sys.exit(main())
