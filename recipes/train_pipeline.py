#!/usr/bin/env python
"""Train a retriever and a reranker behind it on a BEIR folder, and evaluate both through mteb.

    python recipes/train_pipeline.py --beir_dir ../shared/data/scifact --output_dir runs/scifact-2stage
    python recipes/train_pipeline.py --beir_dir DIR --output_dir OUT --retriever_args "--num_train_epochs 1"
    python recipes/train_pipeline.py --beir_dir DIR --output_dir OUT --redo reranker   # retrain from that stage on

Stages (each skipped when a rerun finds it finished; an interrupted one resumes): hold out dev
queries and mine hard negatives; fine-tune the retriever (recipes/train_embedding.py); with
cross-fitting (--folds 2), one retriever per fold, trained on the other folds; score the reranker's
training candidates with the retriever that did not see each query, plus BM25, and fit the first
stage's weights; train the cross-encoder reranker, whose score is its logit plus that first-stage
score (recipes/train_reranker.py); evaluate BM25, the retriever, the hybrid first stage and the
reranker on the --eval_split through mteb. OUTPUT_DIR holds retriever/ and reranker/ (each with its
model card), report.json and REPORT.md. A time estimate is printed before anything runs.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from hf_ragtrain import PipelineArguments, TwoStagePipeline  # noqa: E402
from hf_ragtrain.runner.stages import pipeline_main  # noqa: E402


def main(argv=None) -> int:
    return pipeline_main(PipelineArguments, __doc__,
                         lambda args: TwoStagePipeline(args, os.path.join(REPO, "recipes")).run(), argv)


if __name__ == "__main__":
    sys.exit(main())
