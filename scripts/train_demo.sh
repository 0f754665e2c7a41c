#!/usr/bin/env bash
# Train the demo model (every component, on synthetic shapes) and copy it to $1 (default outputs/demo/model).
# Rerun the same command to resume: finished stages are skipped, a killed stage resumes from its checkpoint.
#   scripts/train_demo.sh [OUT] [extra train-demo flags, e.g. --work-dir DIR --config FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/demo/model}"
shift || true
exec mindglm-image train-demo --config configs/jobs/train_demo.json --out "$out" "$@"
