#!/usr/bin/env bash
# Create the reference (PyTorch) environment used as the parity oracle by the tests.
# Usage: bash scripts/setup_reference_env.sh [VENV_DIR]   (default: .venv-ref at the repo root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-ref}"
req="$root/scripts/reference_requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "reference env up to date: $venv"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$req"
echo "$want" > "$stamp"
echo "reference env ready: $venv"
