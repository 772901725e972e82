#!/usr/bin/env bash
# Set up .venv for shenjing: a CPU build of torch where no NVIDIA GPU is present (never the
# several-GB CUDA wheels), then shenjing itself (editable) with the extras asked for.
#   scripts/setup.sh          runtime only (for `shenjing demo`)
#   scripts/setup.sh --dev    + test tools and the headless browser for the report test
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY="${PYTHON:-python3}"
TORCH_VERSION="${SHENJING_TORCH_VERSION:-2.13.0}"

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 || [[ "$(uname -s)" != "Linux" ]]; then
    "${PIP[@]}" "torch>=2.2"                      # CUDA (Linux+GPU) or macOS/Windows wheels
  elif .venv/bin/python -m pip download -q --no-index --no-deps "torch==${TORCH_VERSION}" \
         -d "$(mktemp -d)" >/dev/null 2>&1; then
    "${PIP[@]}" "torch==${TORCH_VERSION}"        # a local CPU wheel (pip's find-links) exists
  else
    "${PIP[@]}" "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

if [[ $DEV == 1 ]]; then
  "${PIP[@]}" -e ".[dev]"
  # vit-pytorch (a third-party ViT for the tests) declares torchvision, which would replace
  # the CPU torch; its ViT needs only torch and einops, so it is installed without deps.
  "${PIP[@]}" --no-deps "vit-pytorch==1.26.14" "einops>=0.8.2"
  # The report's end-to-end test drives a real headless Chromium (Debian's package).
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
     && [[ "$(id -u)" == 0 ]]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the browser test will be skipped" >&2
  fi
else
  "${PIP[@]}" -e .
fi
