#!/usr/bin/env bash
# Set up the Python environment d2ext runs in; idempotent and quick when done.
#   default: a virtual environment in ./.venv
#   PYTHON=/path/to/python: use that interpreter's environment instead (e.g. one
#   with a CUDA detectron2 built from source); an importable torchvision and
#   detectron2 are then kept as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${PYTHON:-}" ]; then
  py="$PYTHON"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  py=.venv/bin/python
fi

stamp_dir=$("$py" -c 'import sys; print(sys.prefix)')
stamp="$stamp_dir/.d2ext-setup-$(cat tools/requirements.txt tools/setup_env.sh tools/install_detectron2.py setup.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi

echo "[setup] installing into $("$py" -c 'import sys; print(sys.prefix)') (first run: a few minutes, ~6 GB with torch's CUDA libraries)"
"$py" -m pip install -q --upgrade pip
if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
  "$py" -m pip install -q -r <(grep -E '^(torch|torchvision)==' tools/requirements.txt)
fi
"$py" -m pip install -q -r <(grep -vE '^(torch|torchvision)==' tools/requirements.txt)
"$py" -m pip install -q --no-deps "$(grep -oE 'panopticapi-lite==[0-9.]+' tools/requirements.txt)"
"$py" tools/install_detectron2.py
"$py" -m pip install -q --no-deps --no-build-isolation -e .
"$py" -c "import d2ext, d2ext_projects; print('[setup] d2ext ready; compat:', ', '.join(d2ext.compat.APPLIED) or 'nothing needed')"
touch "$stamp"
