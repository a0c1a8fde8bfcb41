#!/usr/bin/env bash
# The environment the reference side of bench_rerank_inference.py --backends openvino runs in:
# sentence-transformers 6.3 with its OpenVINO backend. That backend needs optimum-intel, which pins
# transformers<5.6, while hf_ragtrain's own environment has a newer transformers; so it gets its own venv.
#   bash benchmarks/reference_env.sh            # makes .venv-reference
#   python benchmarks/bench_rerank_inference.py ... --backends torch openvino --reference_python .venv-reference/bin/python
# (sentence-transformers' ONNX backend needs optimum-onnx, whose only release pins transformers<4.58,
# below the >=5.0 sentence-transformers 6 requires: it cannot be installed beside it.)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-reference}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install "${TORCH_SPEC:-torch==2.13.0}"
$PIP install -c <(echo "${TORCH_SPEC:-torch==2.13.0}") "transformers==5.5.4" "sentence-transformers==6.3.0" \
    "optimum-intel[openvino]==2.2.0"
# optimum-intel pulls a torchvision built for another torch, whose import breaks transformers' model
# imports ("operator torchvision::nms does not exist"); nothing here needs it
$PIP uninstall -y torchvision
