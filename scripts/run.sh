#!/usr/bin/env bash
# One command: set up libtorch if needed, build, and run the example.
#   scripts/run.sh [ARGS...]   (e.g. scripts/run.sh --json --seed 3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ce_root"
exec cargo run --release --quiet -- "$@"
